use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use redraft_shapes::*;

#[test]
fn debug() {
    for (name, c) in [("blur", Corruption{noise_sigma:0.0, blur:true, max_color_shift:0}), ("noise", Corruption{noise_sigma:8.0, blur:false, max_color_shift:0}), ("shift", Corruption{noise_sigma:0.0, blur:false, max_color_shift:4}), ("all", Corruption::default())] {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for shape in [Shape::Circle, Shape::Square] {
            let mut fills = vec![];
            for _ in 0..1000 {
                let spec = Spec { groups: vec![ObjectGroup::new(1, None, shape)], relation: None };
                let objs = layout(&spec, 64, &mut rng).unwrap();
                let img = c.apply(&draw(&objs, 64), &mut rng).unwrap();
                let d = detect(&img);
                fills.push((d[0].fill_ratio, objs[0].size, objs[0].color));
            }
            fills.sort_by(|a,b| a.0.total_cmp(&b.0));
            let n = fills.len();
            eprintln!("{name} {shape:?}: {:?} {:?} {:?} {:?}", fills[0], fills[n/100], fills[n/2], fills[n-1]);
        }
    }
}
