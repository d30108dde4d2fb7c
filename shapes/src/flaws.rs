//! Flawed objects: shapes drawn the way an undertrained generator draws
//! them, which the oracle does not count as objects.
//!
//! A flawed object has a colour between two palette colours, a dull colour,
//! two colours at once, or a colour that fades into another. The critic's CLIP learns from
//! scenes with such objects that they are not the palette objects they
//! resemble: their captions call them "blobs", and a hard negative counts one
//! as the object it resembles. A scene keeps a flawed object only when the
//! oracle's detector finds no shape where it lies and the scene still
//! matches its prompt, so the captions agree with the oracle's verdicts.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::captions::caption;
use crate::detect::detect;
use crate::grammar::NUMBER_WORDS;
use crate::oracle::judge_spec;
use crate::render::{LayoutRules, POSITION_ATTEMPTS, PlacedObject, paint};
use crate::world::{Color, MAX_COUNT, ObjectGroup, Shape, Spec};

/// The noun the captions use for one flawed object.
pub const FLAW_NOUN: &str = "blob";
/// The noun the captions use for several flawed objects.
pub const FLAW_PLURAL: &str = "blobs";

/// Flawed objects sampled for one place in a scene before giving up on it.
const FLAW_ATTEMPTS: u32 = 20;
/// Grey that dull colours are mixed towards.
const DULL_GREY: [f32; 3] = [90.0, 90.0, 90.0];

/// Kind of difference between a flawed object and a palette object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlawKind {
    /// A colour 40 to 60% of the way from a palette colour to the next one
    /// in hue, such as red-orange.
    BetweenColors,
    /// A palette colour mixed with grey so that it keeps 20 to 40% of its
    /// chroma, below the half the oracle needs.
    Dull,
    /// Two palette colours, one on each side of a line through the centre.
    /// The oracle reads most of these as one object of the larger colour,
    /// so few are kept: 767 in a 50,000-image dataset with a flawed share of
    /// 0.3, against about 5,500 of each other kind.
    TwoTone,
    /// One palette colour fading into another along a line across the
    /// object, through the hues between them.
    Gradient,
}

impl FlawKind {
    pub const ALL: [FlawKind; 4] = [
        FlawKind::BetweenColors,
        FlawKind::Dull,
        FlawKind::TwoTone,
        FlawKind::Gradient,
    ];
}

/// One flawed object of a scene. `size` is the side of its square bounding
/// box, which is centred on `center`, both in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlawedObject {
    pub kind: FlawKind,
    /// The shape it resembles.
    pub shape: Shape,
    /// The palette colour it resembles: the one it starts from.
    pub color: Color,
    pub center: (f32, f32),
    pub size: f32,
    /// Colour on the first side of the split or at the start of the fade,
    /// and the whole colour of one-colour flaws.
    pub rgb: [u8; 3],
    /// Colour on the second side of the split or at the end of the fade.
    pub second_rgb: [u8; 3],
    /// Direction, in radians, across which two colours split or fade.
    pub split_angle: f32,
}

impl FlawedObject {
    /// Returns the palette object with the same outline and place.
    fn outline(&self) -> PlacedObject {
        PlacedObject {
            shape: self.shape,
            color: self.color,
            rgb: self.rgb,
            center: self.center,
            size: self.size,
            group: usize::MAX,
        }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        self.outline().contains(x, y)
    }

    fn color_at(&self, x: f32, y: f32) -> [u8; 3] {
        let along = (x - self.center.0) * self.split_angle.cos()
            + (y - self.center.1) * self.split_angle.sin();
        match self.kind {
            FlawKind::Gradient => {
                let share = (0.5 + along / self.size).clamp(0.0, 1.0);
                mix(
                    self.rgb.map(f32::from),
                    self.second_rgb.map(f32::from),
                    share,
                )
            }
            _ if along < 0.0 => self.rgb,
            _ => self.second_rgb,
        }
    }

    /// Returns whether a point lies in the bounding box grown by one pixel.
    fn near(&self, point: (f32, f32)) -> bool {
        let reach = self.size / 2.0 + 1.0;
        (point.0 - self.center.0).abs() <= reach && (point.1 - self.center.1).abs() <= reach
    }
}

/// Writes the caption of `count` flawed objects: "a blob", "two blobs".
///
/// # Panics
///
/// When `count` is 0 or above [`MAX_COUNT`].
pub fn flaw_caption(count: usize) -> String {
    assert!(
        (1..=usize::from(MAX_COUNT)).contains(&count),
        "flaw count {count} is outside 1..={MAX_COUNT}"
    );
    if count == 1 {
        format!("a {FLAW_NOUN}")
    } else {
        format!("{} {FLAW_PLURAL}", NUMBER_WORDS[count - 1])
    }
}

/// Adds up to `count` flawed objects to an `image` of `spec` whose palette
/// objects are `placed`, and returns the ones it added.
///
/// Each flawed object keeps the layout's gap to every other object. Its kind
/// is drawn uniformly, so that every kind is as common. It is drawn only
/// when, with it, the oracle finds no shape within a pixel of its bounding
/// box and still judges the image correct for `spec`. Otherwise another of
/// the same kind is sampled, up to 20 times per object.
pub fn add_flaws<R: Rng + ?Sized>(
    image: &mut RgbImage,
    spec: &Spec,
    placed: &[PlacedObject],
    count: usize,
    rng: &mut R,
) -> Vec<FlawedObject> {
    let canvas_size = image.width();
    let rules = LayoutRules::for_canvas(canvas_size);
    let mut outlines: Vec<PlacedObject> = placed.to_vec();
    let mut added = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = FlawKind::ALL[rng.random_range(0..FlawKind::ALL.len())];
        for _ in 0..FLAW_ATTEMPTS {
            let Some(flaw) = place_flaw(kind, &outlines, &rules, canvas_size, rng) else {
                return added;
            };
            let mut candidate = image.clone();
            draw_flaw(&mut candidate, &flaw);
            let unrecognised = detect(&candidate)
                .iter()
                .all(|object| object.shape.is_none() || !flaw.near(object.center));
            let still_correct = judge_spec(&candidate, spec).is_ok_and(|verdict| verdict.correct);
            if unrecognised && still_correct {
                *image = candidate;
                outlines.push(flaw.outline());
                added.push(flaw);
                break;
            }
        }
    }
    added
}

/// Samples a flawed object at a free position, or returns `None` when none
/// of the tried positions keeps the gap to every object.
fn place_flaw<R: Rng + ?Sized>(
    kind: FlawKind,
    placed: &[PlacedObject],
    rules: &LayoutRules,
    canvas_size: u32,
    rng: &mut R,
) -> Option<FlawedObject> {
    let mut flaw = sample_flaw(kind, rng);
    let canvas = canvas_size as f32;
    for _ in 0..POSITION_ATTEMPTS {
        let size = rng.random_range(rules.min_size..=rules.max_size);
        let low = rules.border + size / 2.0;
        let high = canvas - low;
        flaw.size = size;
        flaw.center = (rng.random_range(low..=high), rng.random_range(low..=high));
        let outline = flaw.outline();
        if placed.iter().all(|other| !outline.crowds(other, rules.gap)) {
            return Some(flaw);
        }
    }
    None
}

/// Samples the shape and colours of a flawed object of `kind`, which the
/// caller places.
fn sample_flaw<R: Rng + ?Sized>(kind: FlawKind, rng: &mut R) -> FlawedObject {
    let color_index = rng.random_range(0..Color::ALL.len());
    let color = Color::ALL[color_index];
    let base = color.rgb().map(f32::from);
    let shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
    let (rgb, second_rgb) = match kind {
        FlawKind::BetweenColors => {
            // Color::ALL runs in hue order, and purple wraps round to red.
            let next = Color::ALL[(color_index + 1) % Color::ALL.len()].rgb();
            let share = rng.random_range(0.4..=0.6);
            let mixed = mix(base, next.map(f32::from), share);
            (mixed, mixed)
        }
        FlawKind::Dull => {
            let chroma_share = rng.random_range(0.2..=0.4);
            let dull = mix(DULL_GREY, base, chroma_share);
            (dull, dull)
        }
        FlawKind::TwoTone | FlawKind::Gradient => {
            let other = (color_index + rng.random_range(1..Color::ALL.len())) % Color::ALL.len();
            (color.rgb(), Color::ALL[other].rgb())
        }
    };
    FlawedObject {
        kind,
        shape,
        color,
        center: (0.0, 0.0),
        size: 0.0,
        rgb,
        second_rgb,
        split_angle: rng.random_range(0.0..std::f32::consts::TAU),
    }
}

/// Returns `from` moved `share` of the way to `to`, per channel.
pub(crate) fn mix(from: [f32; 3], to: [f32; 3], share: f32) -> [u8; 3] {
    std::array::from_fn(|channel| {
        (from[channel] + (to[channel] - from[channel]) * share)
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

/// Draws `flaw` over `image` with the renderer's 4x4 supersampling.
fn draw_flaw(image: &mut RgbImage, flaw: &FlawedObject) {
    paint(
        image,
        flaw.center,
        flaw.size,
        |x, y| flaw.contains(x, y),
        |x, y| flaw.color_at(x, y),
    );
}

/// Writes a caption that counts `flaw` as the palette object it resembles:
/// one more of the group of its shape, or that object on its own. Returns
/// `None` when the oracle would call the caption true of `image`, or when no
/// such caption is valid (the group is already at [`MAX_COUNT`]).
pub fn counted_flaw_caption(image: &RgbImage, spec: &Spec, flaw: &FlawedObject) -> Option<String> {
    let resembled = ObjectGroup::new(1, Some(flaw.color), flaw.shape);
    let negative = match spec
        .groups
        .iter()
        .position(|group| group.shape == flaw.shape)
    {
        Some(index) => {
            let group = spec.groups[index];
            if group.color.is_some_and(|color| color != flaw.color) {
                lone(resembled)
            } else {
                let mut counted = spec.clone();
                counted.groups[index].count = group.count.checked_add(1)?;
                counted
            }
        }
        None if spec.relation.is_none() => {
            let mut counted = spec.clone();
            let any_colour = spec.groups.iter().any(|group| group.color.is_some());
            counted.groups.push(ObjectGroup::new(
                1,
                any_colour.then_some(flaw.color),
                flaw.shape,
            ));
            counted
        }
        None => lone(resembled),
    };
    negative.validate().ok()?;
    let judged_true = judge_spec(image, &negative).is_ok_and(|verdict| verdict.correct);
    (!judged_true).then(|| caption(&negative))
}

fn lone(group: ObjectGroup) -> Spec {
    Spec {
        groups: vec![group],
        relation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::sample_prompt;
    use crate::oracle::judge;
    use crate::render::{draw, layout};
    use crate::world::Category;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn flawed_scenes_keep_verdicts() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let mut kinds = Vec::new();
        let mut negatives = 0;
        for category in Category::ALL {
            for _ in 0..20 {
                let (prompt, spec) = sample_prompt(category, &mut rng);
                let objects = layout(&spec, 64, &mut rng).expect("layout fits");
                let mut image = draw(&objects, 64);
                let clean = image.clone();
                let flaws = add_flaws(&mut image, &spec, &objects, 2, &mut rng);
                let verdict = judge(&image, &prompt).expect("prompt parses");
                assert!(verdict.correct, "{prompt}: {}", verdict.reason);
                if flaws.is_empty() {
                    assert_eq!(image, clean);
                    continue;
                }
                assert_ne!(image, clean, "{prompt}: flaws were not drawn");
                for flaw in &flaws {
                    kinds.push(flaw.kind);
                    let found = verdict
                        .detected
                        .iter()
                        .filter(|object| object.shape.is_some() && flaw.near(object.center));
                    assert_eq!(found.count(), 0, "{prompt}: the oracle saw {flaw:?}");
                }
                if let Some(negative) = counted_flaw_caption(&image, &spec, &flaws[0]) {
                    negatives += 1;
                    let verdict = judge(&image, &negative).expect("negative parses");
                    assert!(!verdict.correct, "{prompt}: {negative} holds");
                }
            }
        }
        for kind in FlawKind::ALL {
            let share = kinds.iter().filter(|found| **found == kind).count();
            assert!(
                share >= 5,
                "only {share} flaws of kind {kind:?} in {kinds:?}"
            );
        }
        assert!(negatives >= 60, "only {negatives} counted-flaw negatives");
    }

    #[test]
    fn flaws_drawn_as_sampled() {
        let mut image = RgbImage::from_pixel(64, 64, image::Rgb([255, 255, 255]));
        let two_tone = FlawedObject {
            kind: FlawKind::TwoTone,
            shape: Shape::Square,
            color: Color::Red,
            center: (32.0, 32.0),
            size: 16.0,
            rgb: Color::Red.rgb(),
            second_rgb: Color::Blue.rgb(),
            split_angle: 0.0,
        };
        draw_flaw(&mut image, &two_tone);
        assert_eq!(image.get_pixel(27, 32).0, Color::Red.rgb());
        assert_eq!(image.get_pixel(37, 32).0, Color::Blue.rgb());
        assert_eq!(image.get_pixel(5, 5).0, [255, 255, 255]);

        let gradient = FlawedObject {
            kind: FlawKind::Gradient,
            ..two_tone
        };
        let mut image = RgbImage::from_pixel(64, 64, image::Rgb([255, 255, 255]));
        draw_flaw(&mut image, &gradient);
        let [red, _, blue] = Color::Red.rgb();
        let middle = image.get_pixel(32, 32).0;
        assert!(middle[0] < red, "{middle:?} has less red than red");
        assert!(middle[2] > blue, "{middle:?} has more blue than red");
        let left = image.get_pixel(25, 32).0;
        let right = image.get_pixel(38, 32).0;
        assert!(
            left[0] > middle[0] && middle[0] > right[0],
            "{left:?} {middle:?} {right:?}"
        );
    }

    #[test]
    fn captions_count_flaws() {
        assert_eq!(flaw_caption(1), "a blob");
        assert_eq!(flaw_caption(3), "three blobs");
    }

    #[test]
    #[should_panic(expected = "flaw count 0 is outside 1..=4")]
    fn caption_of_zero_panics() {
        flaw_caption(0);
    }
}
