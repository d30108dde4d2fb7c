//! Object detection by plain image analysis: palette classification of
//! pixels and connected components per colour. The `features` module
//! measures and classifies the shape of each component.

use std::sync::LazyLock;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::features::{Footprint, classify_shape, measure};
use crate::world::{Color, Shape};

/// Minimum share of a palette colour's chroma that a pixel needs to count as
/// that colour. Anti-aliased edge pixels mix the colour with white, which
/// keeps the hue and scales the chroma by the coverage, so this is the
/// coverage at which an edge pixel joins the object. Invented value.
const MIN_COVERAGE: f32 = 0.5;
/// Maximum hue distance, in degrees, between a pixel and a palette colour it
/// may belong to. Invented value, just under the 31.5 degrees between the
/// closest palette hues (orange and yellow).
pub(crate) const MAX_HUE_DISTANCE: f32 = 30.0;
/// Components smaller than this share of the canvas area are noise. Invented
/// value: 12 px on a 64x64 canvas, a quarter of the smallest triangle.
const MIN_AREA_FRACTION: f32 = 12.0 / 4096.0;

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
    /// Soft area divided by the product of the widest row and the tallest
    /// column: about 1.0 for squares, 0.785 for circles and 0.5 for
    /// triangles. Unlike the box of thresholded pixels, these sums stay put
    /// when noise flips single edge pixels.
    pub fill_ratio: f32,
    /// Skewness of the coverage along y, with y growing downwards: about 0
    /// for circles and squares and -0.57 for triangles with the apex up.
    pub vertical_skew: f32,
    /// Four-fold moment of the coverage with both axes scaled to unit
    /// variance: about 1 for squares, 0 for circles and -1 for squares
    /// turned by 45 degrees.
    pub squareness: f32,
}

/// Finds every coloured object in `image`.
///
/// A pixel belongs to a palette colour when its HSV hue is within 30 degrees
/// of that colour's hue and its chroma (max minus min channel) is at least
/// half of the colour's chroma. White and grey have no chroma, so the
/// background may be any light neutral tone. Each 8-connected component of
/// one colour is an object unless it covers less than 12/4096 of the image.
/// Objects are sorted by centre, top to bottom and then left to right.
pub fn detect(image: &RgbImage) -> Vec<DetectedObject> {
    let (width, height) = image.dimensions();
    let labels: Vec<Option<Color>> = image
        .pixels()
        .map(|pixel| classify_pixel(pixel.0))
        .collect();
    let min_area = (MIN_AREA_FRACTION * (width * height) as f32).max(1.0);
    let background = estimate_background(image);

    let mut visited = vec![false; labels.len()];
    let mut objects = Vec::new();
    let mut stack = Vec::new();
    let mut members: Vec<(u32, u32)> = Vec::new();
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
            let x = (index % width as usize) as u32;
            let y = (index / width as usize) as u32;
            members.push((x, y));
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
            objects.push(describe_component(image, background, &members, color));
        }
    }
    objects.sort_by(|a, b| {
        (a.center.1, a.center.0)
            .partial_cmp(&(b.center.1, b.center.0))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    objects
}

fn describe_component(
    image: &RgbImage,
    background: [f32; 3],
    members: &[(u32, u32)],
    color: Color,
) -> DetectedObject {
    let footprint = Footprint::new(members, image.dimensions());
    let (min_x, min_y, max_x, max_y) = footprint.bounds();
    let box_width = max_x - min_x + 1;
    let box_height = max_y - min_y + 1;
    let features = measure(image, background, &footprint, color);
    let aspect = box_width.max(box_height) as f32 / box_width.min(box_height) as f32;
    DetectedObject {
        shape: classify_shape(&features, aspect),
        color,
        center: (
            (min_x + max_x + 1) as f32 / 2.0,
            (min_y + max_y + 1) as f32 / 2.0,
        ),
        width: box_width,
        height: box_height,
        area: members.len() as u32,
        fill_ratio: features.fill_ratio,
        vertical_skew: features.vertical_skew,
        squareness: features.squareness,
    }
}

/// Hue and chroma of a palette colour, as returned by [`hue_and_chroma`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct PaletteEntry {
    pub color: Color,
    pub hue: f32,
    pub chroma: f32,
}

/// The palette in the order of [`Color::ALL`], with hues and chromas
/// computed once.
pub(crate) static PALETTE: LazyLock<[PaletteEntry; 6]> = LazyLock::new(|| {
    Color::ALL.map(|color| {
        let (hue, chroma) = hue_and_chroma(color.rgb());
        PaletteEntry { color, hue, chroma }
    })
});

/// Returns the palette entry of `color`.
pub(crate) fn palette_entry(color: Color) -> PaletteEntry {
    PALETTE
        .iter()
        .copied()
        .find(|entry| entry.color == color)
        .unwrap_or(PaletteEntry {
            color,
            hue: 0.0,
            chroma: 0.0,
        })
}

/// Returns the palette colour of a pixel, or `None` for background and for
/// colours outside the palette.
pub fn classify_pixel(rgb: [u8; 3]) -> Option<Color> {
    let (hue, chroma) = hue_and_chroma(rgb);
    let weakest_chroma = PALETTE
        .iter()
        .map(|entry| entry.chroma)
        .fold(f32::INFINITY, f32::min);
    // Most pixels are background, which no colour can claim.
    if chroma < MIN_COVERAGE * weakest_chroma {
        return None;
    }
    let (entry, distance) = PALETTE
        .iter()
        .map(|entry| (entry, hue_distance(hue, entry.hue)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    (distance <= MAX_HUE_DISTANCE && chroma >= MIN_COVERAGE * entry.chroma).then_some(entry.color)
}

/// Returns the per-channel median of the image's outermost pixels. The
/// renderer keeps shapes off the edge, so this is the background colour.
fn estimate_background(image: &RgbImage) -> [f32; 3] {
    let (width, height) = image.dimensions();
    let border = image
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x + 1 == width || *y + 1 == height)
        .map(|(_, _, pixel)| pixel.0);
    let mut channels: [Vec<u8>; 3] = Default::default();
    for rgb in border {
        for (channel, value) in channels.iter_mut().zip(rgb) {
            channel.push(value);
        }
    }
    channels.map(|mut values| {
        values.sort_unstable();
        values
            .get(values.len() / 2)
            .copied()
            .map_or(255.0, f32::from)
    })
}

/// Returns the HSV hue in degrees (0..360) and the chroma (0..=255).
pub(crate) fn hue_and_chroma(rgb: [u8; 3]) -> (f32, f32) {
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

/// Returns the distance between two hues in degrees, at most 180.
pub(crate) fn hue_distance(a: f32, b: f32) -> f32 {
    let difference = (a - b).abs() % 360.0;
    difference.min(360.0 - difference)
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
            let faint = color
                .rgb()
                .map(|channel| ((u16::from(channel) + 3 * 255) / 4) as u8);
            assert_eq!(classify_pixel(faint), None, "{color}");
        }
    }

    #[test]
    fn background_is_border_median() {
        let mut image = RgbImage::from_pixel(16, 16, image::Rgb([250, 248, 252]));
        image.put_pixel(0, 5, image::Rgb(Color::Red.rgb()));
        assert_eq!(estimate_background(&image), [250.0, 248.0, 252.0]);
    }

    #[test]
    fn palette_hues_are_separated() {
        for (index, color) in Color::ALL.iter().enumerate() {
            for other in &Color::ALL[index + 1..] {
                let distance =
                    hue_distance(hue_and_chroma(color.rgb()).0, hue_and_chroma(other.rgb()).0);
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
                    assert_eq!(
                        found[0].shape,
                        Some(shape),
                        "{shape} size {size}: {found:?}"
                    );
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
