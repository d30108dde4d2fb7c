//! Object detection by plain image analysis: palette classification of
//! pixels, connected components per colour and shape classification from
//! component geometry.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::world::{Color, Shape};

/// Minimum share of a palette colour's chroma that a pixel needs to count as
/// that colour. Anti-aliased edge pixels mix the colour with white, which
/// keeps the hue and scales the chroma by the coverage, so this is the
/// coverage at which an edge pixel joins the object. Invented value.
const MIN_COVERAGE: f32 = 0.5;
/// Maximum hue distance, in degrees, between a pixel and its nearest palette
/// colour. Invented value, about the gap between the closest palette hues.
const MAX_HUE_DISTANCE: f32 = 30.0;
/// Coverage below this share of a colour's chroma is treated as background
/// noise when measuring geometry. Invented value: Gaussian noise with sigma 8
/// on white gives chromas up to about 25, under a fifth of the weakest
/// palette chroma (green, 130).
const NOISE_FLOOR: f32 = 0.15;
/// Components smaller than this share of the canvas area are noise. Invented
/// value: 12 px on a 64x64 canvas, a quarter of the smallest triangle.
const MIN_AREA_FRACTION: f32 = 12.0 / 4096.0;
/// Maximum ratio between the longer and the shorter side of a component's
/// bounding box for it to be one of the shapes. Invented value.
const MAX_ASPECT_RATIO: f32 = 1.5;
/// Maximum distance in (fill ratio, vertical skewness) feature space between a
/// component and the nearest shape prototype. Invented value.
const MAX_PROTOTYPE_DISTANCE: f32 = 0.2;

/// An object found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectedObject {
    /// The recognised shape, or `None` for a blob that matches no shape.
    pub shape: Option<Shape>,
    pub color: Color,
    /// Centre of the bounding box in pixels, with pixel x covering x..x+1.
    pub center: (f32, f32),
    /// Bounding-box width and height in pixels.
    pub width: u32,
    pub height: u32,
    /// Number of pixels in the component.
    pub area: u32,
    /// Soft area (summed coverage) divided by the product of the widest row
    /// and the tallest column, both also in summed coverage: about 1.0 for
    /// squares, 0.785 for circles and 0.5 for triangles. Sums are used in
    /// place of the bounding box because noise makes the box ragged.
    pub fill_ratio: f32,
    /// Skewness of the coverage along y (down is positive): about 0 for
    /// circles and squares, -0.57 for triangles with the apex up.
    pub vertical_skew: f32,
}

/// Finds every coloured object in `image`.
///
/// A pixel belongs to a palette colour when its HSV hue is within 30 degrees
/// of that colour's hue and its chroma (max minus min channel) is at least
/// half of the colour's chroma. Background white and greys have no chroma,
/// so the background may be any light neutral tone. Each 8-connected
/// component of one colour is an object unless it is tiny noise. Objects are
/// sorted by centre, top to bottom and left to right.
pub fn detect(image: &RgbImage) -> Vec<DetectedObject> {
    let (width, height) = image.dimensions();
    let labels: Vec<Option<Color>> = image.pixels().map(|pixel| classify_pixel(pixel.0)).collect();
    let min_area = (MIN_AREA_FRACTION * (width * height) as f32).max(1.0);

    let mut visited = vec![false; labels.len()];
    let mut objects = Vec::new();
    let mut stack = Vec::new();
    let mut members = Vec::new();
    for start in 0..labels.len() {
        let Some(color) = labels[start] else {
            continue;
        };
        if visited[start] {
            continue;
        }
        visited[start] = true;
        stack.push(start);
        members.clear();
        while let Some(index) = stack.pop() {
            members.push(index);
            let x = (index % width as usize) as u32;
            let y = (index / width as usize) as u32;
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let neighbour = (ny * width + nx) as usize;
                    if !visited[neighbour] && labels[neighbour] == Some(color) {
                        visited[neighbour] = true;
                        stack.push(neighbour);
                    }
                }
            }
        }
        if members.len() as f32 >= min_area {
            objects.push(describe_component(image, &members, color));
        }
    }
    objects.sort_by(|a, b| {
        (a.center.1, a.center.0)
            .partial_cmp(&(b.center.1, b.center.0))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    objects
}

/// Returns the palette colour of a pixel, or `None` for background and for
/// colours outside the palette.
pub fn classify_pixel(rgb: [u8; 3]) -> Option<Color> {
    let (hue, chroma) = hue_and_chroma(rgb);
    if chroma == 0.0 {
        return None;
    }
    let (color, distance) = Color::ALL
        .into_iter()
        .map(|color| (color, hue_distance(hue, hue_and_chroma(color.rgb()).0)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    let palette_chroma = hue_and_chroma(color.rgb()).1;
    (distance <= MAX_HUE_DISTANCE && chroma >= MIN_COVERAGE * palette_chroma).then_some(color)
}

/// Returns how much of `color` a pixel shows: its chroma as a share of the
/// palette chroma, about 1 inside an object and less on anti-aliased edges.
/// Pixels whose hue is outside the colour's hue window, and
/// pixels below the noise floor, count as 0.
fn coverage(rgb: [u8; 3], color: Color) -> f32 {
    let (hue, chroma) = hue_and_chroma(rgb);
    let (palette_hue, palette_chroma) = hue_and_chroma(color.rgb());
    if hue_distance(hue, palette_hue) > MAX_HUE_DISTANCE {
        return 0.0;
    }
    let share = chroma / palette_chroma;
    if share < NOISE_FLOOR { 0.0 } else { share }
}

/// Returns the HSV hue in degrees (0..360) and the chroma (0..=255).
fn hue_and_chroma(rgb: [u8; 3]) -> (f32, f32) {
    let [red, green, blue] = rgb.map(f32::from);
    let max = red.max(green).max(blue);
    let min = red.min(green).min(blue);
    let chroma = max - min;
    if chroma == 0.0 {
        return (0.0, 0.0);
    }
    let sector = if max == red {
        (green - blue) / chroma
    } else if max == green {
        (blue - red) / chroma + 2.0
    } else {
        (red - green) / chroma + 4.0
    };
    ((sector * 60.0).rem_euclid(360.0), chroma)
}

fn hue_distance(a: f32, b: f32) -> f32 {
    let difference = (a - b).abs() % 360.0;
    difference.min(360.0 - difference)
}

fn describe_component(image: &RgbImage, members: &[usize], color: Color) -> DetectedObject {
    let (width, height) = image.dimensions();
    let coordinates = || {
        members
            .iter()
            .map(move |&index| ((index % width as usize) as u32, (index / width as usize) as u32))
    };
    let min_x = coordinates().map(|(x, _)| x).min().unwrap_or(0);
    let max_x = coordinates().map(|(x, _)| x).max().unwrap_or(0);
    let min_y = coordinates().map(|(_, y)| y).min().unwrap_or(0);
    let max_y = coordinates().map(|(_, y)| y).max().unwrap_or(0);
    let box_width = max_x - min_x + 1;
    let box_height = max_y - min_y + 1;

    // The geometry is measured on soft coverage over the component grown by
    // one pixel, so that anti-aliased and blurred edge pixels below the
    // membership threshold still count with their partial weight.
    let left = min_x.saturating_sub(1);
    let top = min_y.saturating_sub(1);
    let window_width = (max_x + 1).min(width - 1) - left + 1;
    let window_height = (max_y + 1).min(height - 1) - top + 1;
    let mut member_mask = vec![false; (window_width * window_height) as usize];
    for (x, y) in coordinates() {
        member_mask[((y - top) * window_width + (x - left)) as usize] = true;
    }
    let near_component = |x: u32, y: u32| {
        (y.saturating_sub(1)..=(y + 1).min(window_height - 1)).any(|ny| {
            (x.saturating_sub(1)..=(x + 1).min(window_width - 1))
                .any(|nx| member_mask[(ny * window_width + nx) as usize])
        })
    };

    // Coverage is relative to the palette chroma, but jitter, shifts and
    // blur move an object's own full-coverage level a few percent away from
    // 1. The mean coverage of interior members (all eight neighbours are
    // members) estimates that level, and the fill ratio is corrected by it.
    let is_member = |x: u32, y: u32| member_mask[(y * window_width + x) as usize];
    let mut interior_sum = 0.0f32;
    let mut interior_count = 0u32;
    for (x, y) in coordinates() {
        let (local_x, local_y) = (x - left, y - top);
        let interior = local_x > 0
            && local_y > 0
            && local_x + 1 < window_width
            && local_y + 1 < window_height
            && (local_y - 1..=local_y + 1)
                .all(|ny| (local_x - 1..=local_x + 1).all(|nx| is_member(nx, ny)));
        if interior {
            interior_sum += coverage(image.get_pixel(x, y).0, color);
            interior_count += 1;
        }
    }
    let full_level = if interior_count > 0 {
        interior_sum / interior_count as f32
    } else {
        1.0
    };

    let mut column_sums = vec![0.0f32; window_width as usize];
    let mut row_sums = vec![0.0f32; window_height as usize];
    let mut moments = [0.0f64; 3];
    for local_y in 0..window_height {
        for local_x in 0..window_width {
            if !near_component(local_x, local_y) {
                continue;
            }
            let pixel = image.get_pixel(left + local_x, top + local_y).0;
            let weight = coverage(pixel, color);
            column_sums[local_x as usize] += weight;
            row_sums[local_y as usize] += weight;
            let weight = f64::from(weight);
            let y = f64::from(local_y);
            moments[0] += weight;
            moments[1] += weight * y;
            moments[2] += weight * y * y;
        }
    }
    let soft_area = moments[0].max(f64::EPSILON);
    let mean_y = moments[1] / soft_area;
    let variance_y = (moments[2] / soft_area - mean_y * mean_y).max(f64::EPSILON);
    let mut third_moment = 0.0f64;
    for local_y in 0..window_height {
        for local_x in 0..window_width {
            if near_component(local_x, local_y) {
                let pixel = image.get_pixel(left + local_x, top + local_y).0;
                let weight = f64::from(coverage(pixel, color));
                third_moment += weight * (f64::from(local_y) - mean_y).powi(3);
            }
        }
    }
    let vertical_skew = (third_moment / soft_area / variance_y.powf(1.5)) as f32;

    let widest_row = row_sums.iter().copied().fold(0.0f32, f32::max);
    let tallest_column = column_sums.iter().copied().fold(0.0f32, f32::max);
    let fill_ratio =
        full_level * soft_area as f32 / (widest_row * tallest_column).max(f32::EPSILON);
    let aspect = box_width.max(box_height) as f32 / box_width.min(box_height) as f32;
    DetectedObject {
        shape: classify_shape(fill_ratio, vertical_skew, aspect),
        color,
        center: (
            (min_x + max_x + 1) as f32 / 2.0,
            (min_y + max_y + 1) as f32 / 2.0,
        ),
        width: box_width,
        height: box_height,
        area: members.len() as u32,
        fill_ratio,
        vertical_skew,
    }
}

/// Classifies a component by its nearest shape prototype in (fill ratio,
/// vertical skewness) space. The prototypes are the ideal values of each
/// shape: a circle fills pi/4 of its box and a square all of it, both
/// symmetric, while an apex-up triangle fills half of its box and has the
/// skewness of a triangular distribution with the mode at its maximum,
/// -2 * sqrt(2) / 5.
fn classify_shape(fill_ratio: f32, vertical_skew: f32, aspect: f32) -> Option<Shape> {
    const PROTOTYPES: [(Shape, f32, f32); 3] = [
        (Shape::Circle, std::f32::consts::FRAC_PI_4, 0.0),
        (Shape::Square, 1.0, 0.0),
        (Shape::Triangle, 0.5, -0.565_685_4),
    ];
    if aspect > MAX_ASPECT_RATIO {
        return None;
    }
    let (shape, distance) = PROTOTYPES
        .into_iter()
        .map(|(shape, fill, skew)| (shape, (fill_ratio - fill).hypot(vertical_skew - skew)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    (distance <= MAX_PROTOTYPE_DISTANCE).then_some(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{BACKGROUND, PlacedObject, draw};

    fn single(shape: Shape, color: Color, size: f32, center: (f32, f32)) -> Vec<DetectedObject> {
        let object = PlacedObject {
            shape,
            color,
            rgb: color.rgb(),
            center,
            size,
            group: 0,
        };
        detect(&draw(&[object], 64))
    }

    #[test]
    fn palette_pixels_classify_as_themselves() {
        for color in Color::ALL {
            assert_eq!(classify_pixel(color.rgb()), Some(color), "{color}");
        }
        assert_eq!(classify_pixel(BACKGROUND), None);
        assert_eq!(classify_pixel([200, 200, 200]), None);
        assert_eq!(classify_pixel([0, 0, 0]), None);
    }

    #[test]
    fn faint_edge_pixels_are_background() {
        for color in Color::ALL {
            let faint = color.rgb().map(|channel| ((u16::from(channel) + 3 * 255) / 4) as u8);
            assert_eq!(classify_pixel(faint), None, "{color}");
        }
    }

    #[test]
    fn palette_hues_are_separated() {
        for (index, color) in Color::ALL.iter().enumerate() {
            for other in &Color::ALL[index + 1..] {
                let distance = hue_distance(
                    hue_and_chroma(color.rgb()).0,
                    hue_and_chroma(other.rgb()).0,
                );
                assert!(distance > 30.0, "{color} and {other}: {distance}");
            }
        }
    }

    #[test]
    fn detects_each_shape_at_each_size() {
        for shape in Shape::ALL {
            for size in [10.0, 13.3, 18.0, 36.0] {
                for offset in [0.0, 0.25, 0.5, 0.75] {
                    let found = single(shape, Color::Green, size, (30.0 + offset, 31.0 + offset));
                    assert_eq!(found.len(), 1, "{shape} size {size}");
                    assert_eq!(found[0].shape, Some(shape), "{shape} size {size}: {found:?}");
                    assert_eq!(found[0].color, Color::Green);
                    assert!((found[0].center.0 - 30.0 - offset).abs() <= 1.0);
                }
            }
        }
    }

    #[test]
    fn blank_canvas_has_no_objects() {
        let blank = RgbImage::from_pixel(64, 64, image::Rgb(BACKGROUND));
        assert!(detect(&blank).is_empty());
    }

    #[test]
    fn tiny_specks_are_ignored() {
        let mut image = RgbImage::from_pixel(64, 64, image::Rgb(BACKGROUND));
        for (x, y) in [(3, 3), (4, 3), (40, 50)] {
            image.put_pixel(x, y, image::Rgb(Color::Red.rgb()));
        }
        assert!(detect(&image).is_empty());
    }

    #[test]
    fn elongated_blob_has_no_shape() {
        let mut image = RgbImage::from_pixel(64, 64, image::Rgb(BACKGROUND));
        for x in 10..40 {
            for y in 20..26 {
                image.put_pixel(x, y, image::Rgb(Color::Blue.rgb()));
            }
        }
        let found = detect(&image);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].shape, None);
    }
}
