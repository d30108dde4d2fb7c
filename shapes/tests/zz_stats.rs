use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use redraft_shapes::*;

#[test]
fn stats() {
    for canvas in [32u32, 48, 64, 128] {
    for corrupt in [false, true] {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for shape in Shape::ALL {
            let mut fills = vec![]; let mut tops = vec![]; let mut miss = 0;
            for _ in 0..1500 {
                let spec = Spec { groups: vec![ObjectGroup::new(1, None, shape)], relation: None };
                let objs = layout(&spec, canvas, &mut rng).unwrap();
                let mut img = draw(&objs, canvas);
                if corrupt { img = Corruption::default().apply(&img, &mut rng).unwrap(); }
                let d = detect(&img);
                if d.len() != 1 { miss += 1; continue; }
                fills.push(d[0].fill_ratio); tops.push(d[0].vertical_skew);
            }
            let q = |v: &mut Vec<f32>| { v.sort_by(f32::total_cmp); let n=v.len(); format!("{:.3} {:.3} {:.3} {:.3} {:.3}", v[0], v[n/100], v[n/2], v[n*99/100], v[n-1]) };
            eprintln!("canvas {canvas} corrupt {corrupt} {shape:?}: miss {miss} fill [{}] top [{}]", q(&mut fills), q(&mut tops));
        }
    }
    }
}
