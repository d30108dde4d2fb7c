//! Object detection by plain image analysis: palette classification of
//! pixels, connected components per colour, and grouping of nearby components
//! that draw one shape in several colours. The `features` module measures
//! and classifies the shape of each object.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::features::{Footprint, ShapeFeatures, classify_shape, measure, measure_any_hue};
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
/// Parts this many pixels apart or closer form one group. Blur and a fade
/// through hues between two palette colours leave gaps of a pixel or two
/// between the parts of one object. Invented value.
const GROUP_DISTANCE: u32 = 2;

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
/// half of the colour's chroma. Pixels with that much chroma but a hue
/// outside every colour's window are coloured but unnamed. White and grey
/// have no chroma, so the background may be any light neutral tone.
///
/// Each 8-connected component of one label is a part. A part of a palette
/// colour is an object unless it covers less than 12/4096 of the image.
/// Parts within two pixels of each other form a group, and a group becomes
/// one object instead when it is one shape whose colour crosses palette
/// boundaries (see [`merge_group`]). Objects are sorted by centre, top to
/// bottom and then left to right.
pub fn detect(image: &RgbImage) -> Vec<DetectedObject> {
    let (width, height) = image.dimensions();
    let min_area = (MIN_AREA_FRACTION * (width * height) as f32).ceil() as usize;
    let background = estimate_background(image);
    let parts = segment(image);

    let mut objects = Vec::new();
    for group in group_parts(&parts, image.dimensions()) {
        let separate: Vec<DetectedObject> = group
            .iter()
            .filter_map(|part| match part.label {
                PixelLabel::Palette(color) if part.members.len() >= min_area => {
                    Some(describe_component(image, background, &part.members, color))
                }
                _ => None,
            })
            .collect();
        match merge_group(image, &group, &separate, min_area) {
            Some(merged) => objects.push(merged),
            None => objects.extend(separate),
        }
    }
    objects.sort_by(|a, b| {
        (a.center.1, a.center.0)
            .partial_cmp(&(b.center.1, b.center.0))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    objects
}

/// Segmentation label of a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PixelLabel {
    Background,
    Palette(Color),
    /// Coloured, but outside every palette colour's window.
    Unnamed,
}

/// An 8-connected component of pixels with one label.
struct Part {
    label: PixelLabel,
    members: Vec<(u32, u32)>,
}

fn label_pixel(rgb: [u8; 3]) -> PixelLabel {
    if let Some(color) = classify_pixel(rgb) {
        return PixelLabel::Palette(color);
    }
    let (_, chroma) = hue_and_chroma(rgb);
    if chroma >= MIN_COVERAGE * weakest_chroma() {
        PixelLabel::Unnamed
    } else {
        PixelLabel::Background
    }
}

/// Returns the chroma of the palette's least saturated colour.
fn weakest_chroma() -> f32 {
    static WEAKEST: LazyLock<f32> = LazyLock::new(|| {
        PALETTE
            .iter()
            .map(|entry| entry.chroma)
            .fold(f32::INFINITY, f32::min)
    });
    *WEAKEST
}

/// Splits the image's non-background pixels into parts.
fn segment(image: &RgbImage) -> Vec<Part> {
    let (width, height) = image.dimensions();
    let labels: Vec<PixelLabel> = image.pixels().map(|pixel| label_pixel(pixel.0)).collect();
    let mut visited = vec![false; labels.len()];
    let mut parts = Vec::new();
    let mut stack = Vec::new();
    for start in 0..labels.len() {
        let label = labels[start];
        if label == PixelLabel::Background || visited[start] {
            continue;
        }
        visited[start] = true;
        stack.push(start);
        let mut members = Vec::new();
        while let Some(index) = stack.pop() {
            let x = (index % width as usize) as u32;
            let y = (index / width as usize) as u32;
            members.push((x, y));
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let neighbour = (ny * width + nx) as usize;
                    if !visited[neighbour] && labels[neighbour] == label {
                        visited[neighbour] = true;
                        stack.push(neighbour);
                    }
                }
            }
        }
        parts.push(Part { label, members });
    }
    parts
}

/// Returns the groups of parts that lie within [`GROUP_DISTANCE`] pixels of
/// each other (8-connected at that distance), each group in part order.
fn group_parts(parts: &[Part], dimensions: (u32, u32)) -> Vec<Vec<&Part>> {
    let (width, height) = dimensions;
    let mut part_at = vec![usize::MAX; (width * height) as usize];
    for (index, part) in parts.iter().enumerate() {
        for &(x, y) in &part.members {
            part_at[(y * width + x) as usize] = index;
        }
    }
    // Union-find over part indices, with path halving.
    let mut parent: Vec<usize> = (0..parts.len()).collect();
    let find = |parent: &mut Vec<usize>, mut index: usize| {
        while parent[index] != index {
            parent[index] = parent[parent[index]];
            index = parent[index];
        }
        index
    };
    for (index, part) in parts.iter().enumerate() {
        for &(x, y) in &part.members {
            for ny in y.saturating_sub(GROUP_DISTANCE)..=(y + GROUP_DISTANCE).min(height - 1) {
                for nx in x.saturating_sub(GROUP_DISTANCE)..=(x + GROUP_DISTANCE).min(width - 1) {
                    let other = part_at[(ny * width + nx) as usize];
                    if other != usize::MAX && other != index {
                        let (a, b) = (find(&mut parent, index), find(&mut parent, other));
                        parent[a] = b;
                    }
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<&Part>> = BTreeMap::new();
    for (index, part) in parts.iter().enumerate() {
        groups
            .entry(find(&mut parent, index))
            .or_default()
            .push(part);
    }
    groups.into_values().collect()
}

/// Returns one object for a group of parts that together draw one shape
/// whose colour crosses palette boundaries, such as a square fading from
/// green to blue, or `None` to keep the group's objects apart.
///
/// The group stays apart in four cases. It has one part. Less than half of
/// its pixels have a palette colour. Two or more of its parts are shapes of
/// their own with boxes that do not overlap, which are objects that touch.
/// Or the whole group matches no shape. A merged object takes the palette
/// colour with the most pixels, and its shape is measured on chroma alone,
/// so the pixels between two palette hues count too.
fn merge_group(
    image: &RgbImage,
    group: &[&Part],
    separate: &[DetectedObject],
    min_area: usize,
) -> Option<DetectedObject> {
    if group.len() < 2 {
        return None;
    }
    let mut pixels_per_color: BTreeMap<Color, usize> = BTreeMap::new();
    for part in group {
        if let PixelLabel::Palette(color) = part.label {
            *pixels_per_color.entry(color).or_default() += part.members.len();
        }
    }
    let total: usize = group.iter().map(|part| part.members.len()).sum();
    let named: usize = pixels_per_color.values().sum();
    if named * 2 < total || total < min_area {
        return None;
    }

    let touching_objects = separate.len() >= 2
        && separate.iter().all(|object| object.shape.is_some())
        && separate
            .iter()
            .enumerate()
            .all(|(index, a)| separate[index + 1..].iter().all(|b| !boxes_overlap(a, b)));
    if touching_objects {
        return None;
    }

    let (&color, _) = pixels_per_color.iter().max_by_key(|(_, count)| **count)?;
    let members: Vec<(u32, u32)> = group
        .iter()
        .flat_map(|part| part.members.iter().copied())
        .collect();
    let footprint = Footprint::new(&members, image.dimensions());
    let features = measure_any_hue(image, &footprint, color);
    let merged = object_from(&footprint, &members, features, color);
    merged.shape.is_some().then_some(merged)
}

/// Returns whether the bounding boxes of two objects share any area.
fn boxes_overlap(a: &DetectedObject, b: &DetectedObject) -> bool {
    (a.center.0 - b.center.0).abs() * 2.0 < (a.width + b.width) as f32
        && (a.center.1 - b.center.1).abs() * 2.0 < (a.height + b.height) as f32
}

fn describe_component(
    image: &RgbImage,
    background: [f32; 3],
    members: &[(u32, u32)],
    color: Color,
) -> DetectedObject {
    let footprint = Footprint::new(members, image.dimensions());
    let features = measure(image, background, &footprint, color);
    object_from(&footprint, members, features, color)
}

/// Builds the object of one component or group from its footprint, pixels
/// and measured features.
fn object_from(
    footprint: &Footprint,
    members: &[(u32, u32)],
    features: ShapeFeatures,
    color: Color,
) -> DetectedObject {
    let (min_x, min_y, max_x, max_y) = footprint.bounds();
    let box_width = max_x - min_x + 1;
    let box_height = max_y - min_y + 1;
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
    // Most pixels are background, which no colour can claim.
    if chroma < MIN_COVERAGE * weakest_chroma() {
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

    /// Draws a 20 px square at the canvas centre whose colour goes from
    /// `left` to `right` across it: `share(t)` of `right` at relative
    /// position `t` (0 at the left edge, 1 at the right).
    fn blended_square(left: Color, right: Color, share: impl Fn(f32) -> f32) -> RgbImage {
        let square = |color: Color| {
            let object = PlacedObject {
                shape: Shape::Square,
                color,
                rgb: color.rgb(),
                center: (32.0, 32.0),
                size: 20.0,
                group: 0,
            };
            draw(&[object], 64)
        };
        let (first, second) = (square(left), square(right));
        RgbImage::from_fn(64, 64, |x, y| {
            let t = share(((x as f32 + 0.5) - 22.0) / 20.0);
            let (a, b) = (first.get_pixel(x, y).0, second.get_pixel(x, y).0);
            image::Rgb([0, 1, 2].map(|channel| {
                (f32::from(a[channel]) * (1.0 - t) + f32::from(b[channel]) * t).round() as u8
            }))
        })
    }

    #[test]
    fn two_colour_square_is_one_square() {
        // Red on the left 60%, orange on the right 40%.
        let image = blended_square(
            Color::Red,
            Color::Orange,
            |t| if t < 0.6 { 0.0 } else { 1.0 },
        );
        let found = detect(&image);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].shape, Some(Shape::Square));
        assert_eq!(found[0].color, Color::Red);
    }

    #[test]
    fn fading_square_is_one_square() {
        // Green fading into blue through teal, which no palette colour claims.
        let image = blended_square(Color::Green, Color::Blue, |t| t.clamp(0.0, 1.0));
        let found = detect(&image);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].shape, Some(Shape::Square));
    }

    #[test]
    fn touching_objects_stay_apart() {
        let square = |color: Color, x: f32| PlacedObject {
            shape: Shape::Square,
            color,
            rgb: color.rgb(),
            center: (x, 32.0),
            size: 16.0,
            group: 0,
        };
        let image = draw(&[square(Color::Red, 20.0), square(Color::Orange, 37.0)], 64);
        let found = detect(&image);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found
                .iter()
                .all(|object| object.shape == Some(Shape::Square))
        );
        assert_eq!(found[0].color, Color::Red);
        assert_eq!(found[1].color, Color::Orange);
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
