//! Shape features of a detected component, measured on soft coverage so that
//! anti-aliasing, blur and noise move them little.
//!
//! The fill ratio is the soft area divided by the product of the widest row
//! and the tallest column, all in summed coverage. For the shapes of this
//! world the widest row and the tallest column equal the bounding-box sides,
//! so the ratio is the bounding-box fill (square 1, circle pi/4, triangle
//! 1/2). Unlike the box of thresholded pixels, the sums do not grow when
//! noise flips single edge pixels. The vertical skewness of the coverage
//! separates apex-up triangles from the symmetric circles and squares, and
//! the four-fold moment of the coverage (squareness) separates squares, whose
//! mass reaches into the corners, from circles.

use image::RgbImage;

use crate::detect::{MAX_HUE_DISTANCE, hue_and_chroma, hue_distance, palette_entry};
use crate::world::{Color, Shape};

/// Coverage below this share of a colour's chroma is treated as background
/// noise. Invented value: Gaussian noise with sigma 8 on white gives chromas
/// up to about 25, under a fifth of the weakest palette chroma (green, 130).
const NOISE_FLOOR: f32 = 0.15;
/// Maximum ratio between the longer and the shorter side of a component's
/// bounding box for it to be one of the shapes. Invented value.
const MAX_ASPECT_RATIO: f32 = 1.5;
/// Skewness below which a component is a triangle: half of the ideal
/// triangle's -2 * sqrt(2) / 5, which is the skewness of a triangular
/// distribution with its mode at the maximum.
const TRIANGLE_SKEW: f32 = -0.283;
/// Skewness above which a component matches no shape (an apex-down triangle
/// or a blob): the mirror of [`TRIANGLE_SKEW`].
const MAX_SKEW: f32 = 0.283;
/// Squareness at or above which a symmetric component is a square. The ideal
/// values are 0 for circles and 1 for squares. On 1500 corrupted renders per
/// shape and canvas size (48, 64 and 128 px), the ignored test
/// `shape_feature_ranges` in tests/accuracy.rs measured circles up to 0.21
/// and squares down to 0.50. Generated squares often have bowed sides and
/// soft corners, which lower their fill ratio into the circles' range (0.72
/// to 0.86 on the hand-labelled images in `eval/generated/`) but keep
/// their corners, so their squareness mostly stays above 0.4.
const SQUARE_THRESHOLD: f32 = 0.4;
/// Fill ratio below which a component matches no shape. Invented value,
/// under the triangle's 0.5 with room for noise.
const MIN_FILL: f32 = 0.4;

/// The measured features of one component.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ShapeFeatures {
    pub fill_ratio: f32,
    pub vertical_skew: f32,
    pub squareness: f32,
}

/// The pixels of one component, as a mask over its bounding box grown by one
/// pixel on every side (clipped to the image).
pub(crate) struct Footprint {
    left: u32,
    top: u32,
    width: u32,
    height: u32,
    mask: Vec<bool>,
}

impl Footprint {
    /// Builds the footprint of `members`, which must not be empty, in an image
    /// of `dimensions` (width, height).
    pub fn new(members: &[(u32, u32)], dimensions: (u32, u32)) -> Self {
        let (image_width, image_height) = dimensions;
        let min_x = members.iter().map(|&(x, _)| x).min().unwrap_or(0);
        let max_x = members.iter().map(|&(x, _)| x).max().unwrap_or(0);
        let min_y = members.iter().map(|&(_, y)| y).min().unwrap_or(0);
        let max_y = members.iter().map(|&(_, y)| y).max().unwrap_or(0);
        let left = min_x.saturating_sub(1);
        let top = min_y.saturating_sub(1);
        let width = (max_x + 1).min(image_width - 1) - left + 1;
        let height = (max_y + 1).min(image_height - 1) - top + 1;
        let mut mask = vec![false; (width * height) as usize];
        for &(x, y) in members {
            mask[((y - top) * width + (x - left)) as usize] = true;
        }
        Footprint {
            left,
            top,
            width,
            height,
            mask,
        }
    }

    /// Returns (min x, min y, max x, max y) of the members in image
    /// coordinates.
    pub fn bounds(&self) -> (u32, u32, u32, u32) {
        let mut bounds = (u32::MAX, u32::MAX, 0, 0);
        for (local_x, local_y) in self.local_members() {
            let (x, y) = (self.left + local_x, self.top + local_y);
            bounds = (
                bounds.0.min(x),
                bounds.1.min(y),
                bounds.2.max(x),
                bounds.3.max(y),
            );
        }
        bounds
    }

    fn local_members(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..self.height).flat_map(move |y| {
            (0..self.width)
                .filter(move |&x| self.is_member(x, y))
                .map(move |x| (x, y))
        })
    }

    fn is_member(&self, x: u32, y: u32) -> bool {
        self.mask[(y * self.width + x) as usize]
    }

    /// Returns whether any pixel of the 3x3 neighbourhood of a local
    /// position, clipped to the footprint, is a member.
    fn is_near_member(&self, x: u32, y: u32) -> bool {
        self.neighbourhood(x, y)
            .any(|(nx, ny)| self.is_member(nx, ny))
    }

    /// Returns whether a member's full 3x3 neighbourhood lies inside the
    /// footprint and consists of members.
    fn is_interior(&self, x: u32, y: u32) -> bool {
        x > 0
            && y > 0
            && x + 1 < self.width
            && y + 1 < self.height
            && self
                .neighbourhood(x, y)
                .all(|(nx, ny)| self.is_member(nx, ny))
    }

    fn neighbourhood(&self, x: u32, y: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let columns = x.saturating_sub(1)..=(x + 1).min(self.width - 1);
        (y.saturating_sub(1)..=(y + 1).min(self.height - 1))
            .flat_map(move |ny| columns.clone().map(move |nx| (nx, ny)))
    }
}

/// Returns how much of `color` a pixel shows, modelling it as a mix of the
/// background and the palette colour: 0 is pure background and 1 is the
/// palette colour. Pixels with too little chroma, or with a hue outside the
/// colour's window, count as 0.
fn coverage(rgb: [u8; 3], color: Color, background: [f32; 3]) -> f32 {
    let (hue, chroma) = hue_and_chroma(rgb);
    let palette = palette_entry(color);
    if chroma < NOISE_FLOOR * palette.chroma || hue_distance(hue, palette.hue) > MAX_HUE_DISTANCE {
        return 0.0;
    }
    // Projecting onto the background-to-colour line uses all three channels,
    // which averages noise better than the chroma (max minus min) does.
    let mut along = 0.0;
    let mut length_squared = 0.0;
    for ((pixel, palette), base) in rgb.into_iter().zip(color.rgb()).zip(background) {
        let toward_pixel = base - f32::from(pixel);
        let toward_palette = base - f32::from(palette);
        along += toward_pixel * toward_palette;
        length_squared += toward_palette * toward_palette;
    }
    (along / length_squared.max(1.0)).max(0.0)
}

/// Measures the fill ratio and vertical skewness of the component in
/// `footprint`, using coverage of `color` on its members and on the pixels
/// next to them.
pub(crate) fn measure(
    image: &RgbImage,
    background: [f32; 3],
    footprint: &Footprint,
    color: Color,
) -> ShapeFeatures {
    measure_with(image, footprint, |pixel| coverage(pixel, color, background))
}

/// Measures a component whose colour crosses palette boundaries, taking a
/// pixel's coverage as its chroma over the chroma of `color`, whatever its
/// hue.
pub(crate) fn measure_any_hue(
    image: &RgbImage,
    footprint: &Footprint,
    color: Color,
) -> ShapeFeatures {
    let full = palette_entry(color).chroma;
    measure_with(image, footprint, |pixel| {
        let (_, chroma) = hue_and_chroma(pixel);
        if chroma < NOISE_FLOOR * full {
            0.0
        } else {
            (chroma / full).min(1.0)
        }
    })
}

/// Measures the features of the component in `footprint`, with
/// `coverage_of` giving each pixel's coverage from 0 to 1.
fn measure_with(
    image: &RgbImage,
    footprint: &Footprint,
    coverage_of: impl Fn([u8; 3]) -> f32,
) -> ShapeFeatures {
    let (width, height) = (footprint.width, footprint.height);
    let mut weights = vec![0.0f32; (width * height) as usize];
    for y in 0..height {
        for x in 0..width {
            if footprint.is_near_member(x, y) {
                let pixel = image.get_pixel(footprint.left + x, footprint.top + y).0;
                weights[(y * width + x) as usize] = coverage_of(pixel);
            }
        }
    }
    let weight = |x: u32, y: u32| weights[(y * width + x) as usize];

    // Jitter, colour shifts and blur move an object's full-coverage level a
    // few percent away from 1. The mean coverage of interior members
    // estimates that level and corrects the fill ratio for it.
    let interior: Vec<f32> = footprint
        .local_members()
        .filter(|&(x, y)| footprint.is_interior(x, y))
        .map(|(x, y)| weight(x, y))
        .collect();
    let full_level = if interior.is_empty() {
        1.0
    } else {
        interior.iter().sum::<f32>() / interior.len() as f32
    };

    let row_sums: Vec<f32> = (0..height)
        .map(|y| (0..width).map(|x| weight(x, y)).sum())
        .collect();
    let column_sums: Vec<f32> = (0..width)
        .map(|x| (0..height).map(|y| weight(x, y)).sum())
        .collect();
    let area: f32 = row_sums.iter().sum();
    let widest_row = row_sums.iter().copied().fold(0.0, f32::max);
    let tallest_column = column_sums.iter().copied().fold(0.0, f32::max);
    let fill_ratio = full_level * area / (widest_row * tallest_column).max(f32::EPSILON);

    ShapeFeatures {
        fill_ratio,
        vertical_skew: skewness(&row_sums),
        squareness: squareness(&weights, width),
    }
}

/// Returns the four-fold (cos 4 theta) moment of a coverage map given row by
/// row, `width` weights per row, after scaling both axes to unit variance.
///
/// The result is scaled so that a uniform square scores 1, a disc 0 and a
/// square turned by 45 degrees -1. With x and y scaled to unit variance the
/// moment is (E[x^4] + E[y^4] - 6 E[x^2 y^2]) / 4: a disc has E[x^4] = 2
/// and E[x^2 y^2] = 2/3, so the sum vanishes, and a square has E[x^4] = 1.8
/// and E[x^2 y^2] = 1, which gives -0.6. Scaling the axes first removes a
/// box's elongation, so only the corners count.
fn squareness(weights: &[f32], width: u32) -> f32 {
    const SQUARE_MOMENT: f64 = -0.6;
    let points = || {
        weights.iter().enumerate().map(|(index, &weight)| {
            let index = index as u32;
            (
                f64::from(index % width),
                f64::from(index / width),
                f64::from(weight),
            )
        })
    };
    let total: f64 = points().map(|(_, _, w)| w).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let mean_x = points().map(|(x, _, w)| w * x).sum::<f64>() / total;
    let mean_y = points().map(|(_, y, w)| w * y).sum::<f64>() / total;
    let variance_x = points()
        .map(|(x, _, w)| w * (x - mean_x).powi(2))
        .sum::<f64>()
        / total;
    let variance_y = points()
        .map(|(_, y, w)| w * (y - mean_y).powi(2))
        .sum::<f64>()
        / total;
    if variance_x <= 0.0 || variance_y <= 0.0 {
        return 0.0;
    }
    let moment = points()
        .map(|(x, y, w)| {
            let u2 = (x - mean_x).powi(2) / variance_x;
            let v2 = (y - mean_y).powi(2) / variance_y;
            w * (u2 * u2 + v2 * v2 - 6.0 * u2 * v2)
        })
        .sum::<f64>()
        / total
        / 4.0;
    (moment / SQUARE_MOMENT) as f32
}

/// Returns the skewness of a distribution given as weights per position.
fn skewness(weights: &[f32]) -> f32 {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let positions = || {
        weights
            .iter()
            .enumerate()
            .map(|(index, &w)| (index as f64, f64::from(w)))
    };
    let mean = positions().map(|(p, w)| p * w).sum::<f64>() / total;
    let central_moment = |power: i32| {
        positions()
            .map(|(p, w)| w * (p - mean).powi(power))
            .sum::<f64>()
            / total
    };
    let variance = central_moment(2);
    if variance <= 0.0 {
        return 0.0;
    }
    (central_moment(3) / variance.powf(1.5)) as f32
}

/// Classifies a component from its features and bounding-box aspect ratio
/// (longer side over shorter side).
///
/// Strongly negative skewness means an apex-up triangle. Otherwise the
/// squareness separates squares from circles. Components that are elongated,
/// sparse or skewed the other way match no shape.
pub(crate) fn classify_shape(features: &ShapeFeatures, aspect: f32) -> Option<Shape> {
    let ShapeFeatures {
        fill_ratio,
        vertical_skew,
        squareness,
    } = *features;
    if aspect > MAX_ASPECT_RATIO || fill_ratio < MIN_FILL || vertical_skew > MAX_SKEW {
        return None;
    }
    Some(if vertical_skew < TRIANGLE_SKEW {
        Shape::Triangle
    } else if squareness >= SQUARE_THRESHOLD {
        Shape::Square
    } else {
        Shape::Circle
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewness_of_ramp_is_negative() {
        // Weights growing linearly with position, like the row sums of an
        // apex-up triangle.
        let ramp: Vec<f32> = (0..200).map(|index| index as f32).collect();
        let skew = skewness(&ramp);
        assert!((skew + 0.566).abs() < 0.01, "{skew}");
        assert_eq!(skewness(&[1.0, 1.0, 1.0, 1.0]), 0.0);
        assert_eq!(skewness(&[0.0, 0.0]), 0.0);
    }

    #[test]
    fn classify_shape_rules() {
        let features = |fill_ratio, vertical_skew, squareness| ShapeFeatures {
            fill_ratio,
            vertical_skew,
            squareness,
        };
        assert_eq!(
            classify_shape(&features(0.98, 0.0, 0.95), 1.0),
            Some(Shape::Square)
        );
        // A generated square with bowed sides: circle-like fill, square corners.
        assert_eq!(
            classify_shape(&features(0.80, 0.0, 0.7), 1.0),
            Some(Shape::Square)
        );
        assert_eq!(
            classify_shape(&features(0.79, 0.02, 0.05), 1.1),
            Some(Shape::Circle)
        );
        assert_eq!(
            classify_shape(&features(0.55, -0.55, 0.0), 1.0),
            Some(Shape::Triangle)
        );
        assert_eq!(classify_shape(&features(0.98, 0.0, 0.95), 2.0), None);
        assert_eq!(classify_shape(&features(0.55, 0.55, 0.0), 1.0), None);
        assert_eq!(classify_shape(&features(0.2, 0.0, 0.0), 1.0), None);
    }

    /// Rasterises `inside` on a `size` x `size` grid, one weight per pixel.
    fn mask(size: u32, inside: impl Fn(f32, f32) -> bool) -> Vec<f32> {
        let half = size as f32 / 2.0;
        (0..size * size)
            .map(|index| {
                let x = (index % size) as f32 + 0.5 - half;
                let y = (index / size) as f32 + 0.5 - half;
                if inside(x / half, y / half) { 1.0 } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn squareness_of_ideal_shapes() {
        let square = squareness(&mask(40, |_, _| true), 40);
        let disc = squareness(&mask(40, |x, y| x * x + y * y <= 1.0), 40);
        let diamond = squareness(&mask(40, |x, y| x.abs() + y.abs() <= 1.0), 40);
        assert!((square - 1.0).abs() < 0.02, "square {square}");
        assert!(disc.abs() < 0.05, "disc {disc}");
        assert!((diamond + 1.0).abs() < 0.05, "diamond {diamond}");
        // Stretching a disc into an ellipse adds no corners.
        let ellipse: Vec<f32> = mask(40, |x, y| x * x + y * y <= 1.0)
            .chunks(40)
            .flat_map(|row| row.iter().flat_map(|&weight| [weight, weight]))
            .collect();
        let stretched = squareness(&ellipse, 80);
        assert!(stretched.abs() < 0.05, "ellipse {stretched}");
    }

    #[test]
    fn bowed_square_keeps_its_squareness() {
        // Sides pulled in by a fifth of the half-side at their middles, like
        // many generated squares: the fill ratio falls to a circle's, the
        // corners stay.
        let bowed = mask(40, |x, y| {
            let limit = |t: f32| 1.0 - 0.2 * (1.0 - t * t);
            x.abs() <= limit(y) && y.abs() <= limit(x)
        });
        let area: f32 = bowed.iter().sum();
        assert!(area / 1600.0 < 0.87, "fill {}", area / 1600.0);
        let value = squareness(&bowed, 40);
        assert!(value >= SQUARE_THRESHOLD, "bowed square {value}");
    }

    #[test]
    fn coverage_of_mixed_pixel() {
        let background = [255.0; 3];
        let half_blue = Color::Blue
            .rgb()
            .map(|channel| ((u16::from(channel) + 255) / 2) as u8);
        let share = coverage(half_blue, Color::Blue, background);
        assert!((share - 0.5).abs() < 0.01, "{share}");
        assert_eq!(coverage(Color::Blue.rgb(), Color::Green, background), 0.0);
        assert_eq!(coverage([250, 250, 250], Color::Red, background), 0.0);
    }

    #[test]
    fn footprint_bounds_and_interior() {
        let members: Vec<(u32, u32)> = (5..8).flat_map(|y| (10..13).map(move |x| (x, y))).collect();
        let footprint = Footprint::new(&members, (64, 64));
        assert_eq!(footprint.bounds(), (10, 5, 12, 7));
        assert_eq!((footprint.width, footprint.height), (5, 5));
        assert!(footprint.is_interior(2, 2));
        assert!(!footprint.is_interior(1, 1));
        assert!(footprint.is_near_member(0, 0));
    }
}
