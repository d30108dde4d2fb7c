//! Styled objects: palette objects drawn with the variations a trained
//! generator shows, which the oracle still reads as the same objects.
//!
//! A generator trained on 8x8 latents draws squares with rounded corners and
//! lets colours fade part of the way towards the next palette hue. The
//! oracle counts such objects as what they are meant to be, so the critic
//! must too. Restyling redraws some of a scene's objects in these styles and
//! keeps a restyled object only when the oracle reads the same objects as
//! before and still judges the scene correct, so every caption stays true.

use image::{Rgb, RgbImage};
use rand::Rng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::detect::detect;
use crate::flaws::mix;
use crate::oracle::judge_spec;
use crate::render::{BACKGROUND, PlacedObject, paint, pixel_box};
use crate::world::{Color, Shape, Spec};

/// Styles sampled for one object before it keeps its plain drawing.
const STYLE_ATTEMPTS: u32 = 5;

/// Kind of variation of a styled object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StyleKind {
    /// A square with its corners rounded by 20 to 60% of its half-side.
    RoundedCorners,
    /// The colour fades across the object, reaching 30 to 70% of the way to
    /// the next or previous palette colour at the far edge.
    PartialFade,
}

/// Parameters of one object's style.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Style {
    kind: StyleKind,
    /// Corner radius over the half-side; 0 keeps sharp corners.
    corner_share: f32,
    /// Colour reached at the far edge of a fade; the object's own colour
    /// when it does not fade.
    fade_rgb: [u8; 3],
    /// Direction of the fade in radians.
    fade_angle: f32,
}

/// Redraws up to `count` of the objects `placed` in `image` of `spec` in a
/// style, chosen at random, and returns the kinds it kept.
///
/// Squares take either style and circles and triangles fade. A restyled
/// object is kept only when, with it, the oracle detects the same shapes and
/// colours as before and still judges the image correct for `spec`.
/// Otherwise another style is sampled, up to 5 times per object. Objects
/// must keep the layout's gap, because restyling clears each object's box.
pub fn restyle<R: Rng + ?Sized>(
    image: &mut RgbImage,
    spec: &Spec,
    placed: &[PlacedObject],
    count: usize,
    rng: &mut R,
) -> Vec<StyleKind> {
    let before = readings(image);
    let chosen = sample(rng, placed.len(), count.min(placed.len()));
    let mut kinds_kept = Vec::new();
    for index in chosen {
        let object = &placed[index];
        for _ in 0..STYLE_ATTEMPTS {
            let style = sample_style(object, rng);
            let mut candidate = image.clone();
            draw_styled(&mut candidate, object, &style);
            let same_objects = readings(&candidate) == before;
            let still_correct = judge_spec(&candidate, spec).is_ok_and(|verdict| verdict.correct);
            if same_objects && still_correct {
                *image = candidate;
                kinds_kept.push(style.kind);
                break;
            }
        }
    }
    kinds_kept
}

/// Returns the shapes and colours the oracle detects, in a fixed order.
fn readings(image: &RgbImage) -> Vec<(Option<Shape>, Color)> {
    let mut found: Vec<(Option<Shape>, Color)> = detect(image)
        .iter()
        .map(|object| (object.shape, object.color))
        .collect();
    found.sort();
    found
}

fn sample_style<R: Rng + ?Sized>(object: &PlacedObject, rng: &mut R) -> Style {
    let kind = if object.shape == Shape::Square && rng.random_bool(0.5) {
        StyleKind::RoundedCorners
    } else {
        StyleKind::PartialFade
    };
    let mut style = Style {
        kind,
        corner_share: 0.0,
        fade_rgb: object.rgb,
        fade_angle: rng.random_range(0.0..std::f32::consts::TAU),
    };
    match kind {
        StyleKind::RoundedCorners => style.corner_share = rng.random_range(0.2..=0.6),
        StyleKind::PartialFade => {
            // Color::ALL runs in hue order, and purple wraps round to red.
            let index = Color::ALL
                .iter()
                .position(|color| *color == object.color)
                .unwrap_or(0);
            let step = if rng.random_bool(0.5) {
                1
            } else {
                Color::ALL.len() - 1
            };
            let neighbour = Color::ALL[(index + step) % Color::ALL.len()].rgb();
            let share = rng.random_range(0.3..=0.7);
            style.fade_rgb = mix(object.rgb.map(f32::from), neighbour.map(f32::from), share);
        }
    }
    style
}

/// Clears the box of `object` to the background and draws it in `style`.
fn draw_styled(image: &mut RgbImage, object: &PlacedObject, style: &Style) {
    let (columns, rows) = pixel_box(object.center, object.size, image.dimensions());
    for y in rows {
        for x in columns.clone() {
            image.put_pixel(x, y, Rgb(BACKGROUND));
        }
    }
    let half = object.size / 2.0;
    let radius = style.corner_share * half;
    let contains = |x: f32, y: f32| {
        if !object.contains(x, y) {
            return false;
        }
        // Past the corner square of side `radius`, keep only the quarter disc.
        let over_x = (x - object.center.0).abs() - (half - radius);
        let over_y = (y - object.center.1).abs() - (half - radius);
        over_x <= 0.0 || over_y <= 0.0 || over_x * over_x + over_y * over_y <= radius * radius
    };
    let (cos, sin) = (style.fade_angle.cos(), style.fade_angle.sin());
    let color_at = |x: f32, y: f32| {
        let along = (x - object.center.0) * cos + (y - object.center.1) * sin;
        let share = (0.5 + along / object.size).clamp(0.0, 1.0);
        mix(
            object.rgb.map(f32::from),
            style.fade_rgb.map(f32::from),
            share,
        )
    };
    paint(image, object.center, object.size, contains, color_at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::{hard_negatives, partial_captions};
    use crate::grammar::sample_spec;
    use crate::oracle::judge;
    use crate::render::{draw, layout};
    use crate::world::Category;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn styled_scenes_keep_their_verdicts() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut kinds = Vec::new();
        for round in 0..60 {
            let category = Category::ALL[round % Category::ALL.len()];
            let spec = sample_spec(category, &mut rng);
            let placed = layout(&spec, 64, &mut rng).expect("spec lays out");
            let mut image = draw(&placed, 64);
            let plain = image.clone();
            let kept = restyle(&mut image, &spec, &placed, 2, &mut rng);
            assert_eq!(kept.is_empty(), image == plain, "{spec:?}");
            for text in partial_captions(&spec) {
                assert!(judge(&image, &text).expect("parses").correct, "{text}");
            }
            for (text, _) in hard_negatives(&spec, &mut rng) {
                assert!(!judge(&image, &text).expect("parses").correct, "{text}");
            }
            kinds.extend(kept);
        }
        assert!(kinds.contains(&StyleKind::RoundedCorners), "{kinds:?}");
        assert!(kinds.contains(&StyleKind::PartialFade), "{kinds:?}");
        assert!(kinds.len() >= 40, "only {} objects restyled", kinds.len());
    }

    #[test]
    fn rounded_square_stays_a_square() {
        let object = PlacedObject {
            shape: Shape::Square,
            color: Color::Green,
            rgb: Color::Green.rgb(),
            center: (32.0, 32.0),
            size: 16.0,
            group: 0,
        };
        let style = Style {
            kind: StyleKind::RoundedCorners,
            corner_share: 0.4,
            fade_rgb: object.rgb,
            fade_angle: 0.0,
        };
        let mut image = draw(&[object], 64);
        draw_styled(&mut image, &object, &style);
        assert_ne!(image, draw(&[object], 64));
        let found = detect(&image);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].shape, Some(Shape::Square));
        assert_eq!(found[0].color, Color::Green);
    }
}
