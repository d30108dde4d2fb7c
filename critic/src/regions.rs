//! Relation probes from where each object is seen. The image is split
//! along one axis, and each side is shown alone with the other side painted
//! over in the background colour. CLIP's cosines then show on which side
//! each object's caption matches better.
//!
//! CLIP-style models score captions close to a bag of words, so "a cat
//! left of a dog" and "a cat right of a dog" embed almost alike. On relation
//! tests many models score at chance (Yuksekgonul et al., "When and why
//! vision-language models behave like bags-of-words, and what to do about
//! it", ICLR 2023, arXiv:2210.01936). The default shapes critic is an
//! example: its caption probe for relations measured 0.55 balanced
//! accuracy. Presence, which these models do learn, is enough to place an
//! object: "a red circle" matches the view of the left half better than the
//! view of the right half when the circle is on the left.

use image::{Rgb, RgbImage};

/// The axis a relation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Axis {
    /// Left to right.
    Horizontal,
    /// Top to bottom.
    Vertical,
}

impl Axis {
    /// Both axes, in a fixed order.
    pub const ALL: [Axis; 2] = [Axis::Horizontal, Axis::Vertical];
}

/// Split positions, as fractions of the image's width or height. There are
/// several, because one object may lie across any one of them.
pub const SPLITS: [f32; 3] = [0.375, 0.5, 0.625];

/// Number of views along one axis: the part before and the part after each split.
pub const VIEWS_PER_AXIS: usize = 2 * SPLITS.len();

/// A relation checked by regions: along `axis`, the object of caption
/// `first` comes before (left of, or above) the object of caption `second`
/// when the prompt's own relation holds. The caption indices point into
/// [`crate::probe::ProbePlan::captions`] and name one object each, such as
/// "a red circle".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionRelation {
    pub axis: Axis,
    pub first: usize,
    pub second: usize,
}

/// Cosines of one image with every caption of a probe plan: of the whole
/// image, and of its views along each axis that the plan's region
/// relations need ([`views`] order, empty for an axis no probe needs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageCosines {
    pub whole: Vec<f32>,
    pub horizontal: Vec<Vec<f32>>,
    pub vertical: Vec<Vec<f32>>,
}

impl ImageCosines {
    /// Returns the view cosines along `axis`.
    pub fn views(&self, axis: Axis) -> &[Vec<f32>] {
        match axis {
            Axis::Horizontal => &self.horizontal,
            Axis::Vertical => &self.vertical,
        }
    }
}

/// Returns the views of `image` along `axis`: for each of [`SPLITS`], the
/// part before the split and then the part after it, each with the rest of
/// the image painted in its [`background`] colour.
pub fn views(image: &RgbImage, axis: Axis) -> Vec<RgbImage> {
    let fill = background(image);
    let length = match axis {
        Axis::Horizontal => image.width(),
        Axis::Vertical => image.height(),
    };
    let mut views = Vec::with_capacity(VIEWS_PER_AXIS);
    for split in SPLITS {
        let at = (split * length as f32).round() as u32;
        for keep_before in [true, false] {
            let mut view = image.clone();
            for (x, y, pixel) in view.enumerate_pixels_mut() {
                let position = match axis {
                    Axis::Horizontal => x,
                    Axis::Vertical => y,
                };
                if (position < at) != keep_before {
                    *pixel = fill;
                }
            }
            views.push(view);
        }
    }
    views
}

/// Estimates the background colour of `image`: the median of each channel
/// over the pixels of its outermost rows and columns, where subjects are
/// least likely to be.
pub fn background(image: &RgbImage) -> Rgb<u8> {
    let (width, height) = image.dimensions();
    let mut channels: [Vec<u8>; 3] = Default::default();
    for (x, y, pixel) in image.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == width || y + 1 == height {
            for (channel, value) in channels.iter_mut().zip(pixel.0) {
                channel.push(value);
            }
        }
    }
    Rgb(channels.map(|mut values| {
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or(0)
    }))
}

/// Computes the evidence that the object of caption `first` comes before
/// the object of caption `second`, from `views` (cosine rows in [`views`]
/// order). Per split, it adds how much better `first` matches the part
/// before than the part after and how much better `second` matches the part
/// after than the part before, and it returns the mean over the splits. The
/// value is positive when `first` comes first, and swapping the captions
/// negates it.
pub fn evidence(views: &[Vec<f32>], first: usize, second: usize) -> f32 {
    let pairs = views.chunks_exact(2);
    let count = pairs.len();
    if count == 0 {
        return f32::NAN;
    }
    let sum: f32 = pairs
        .map(|pair| {
            let (before, after) = (&pair[0], &pair[1]);
            (before[first] - after[first]) + (after[second] - before[second])
        })
        .sum();
    sum / count as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canvas() -> RgbImage {
        let mut image = RgbImage::from_pixel(64, 64, Rgb([250, 250, 250]));
        // A red block on the left third, a blue one at the bottom right.
        for y in 10..20 {
            for x in 4..14 {
                image.put_pixel(x, y, Rgb([200, 0, 0]));
            }
        }
        for y in 50..60 {
            for x in 50..60 {
                image.put_pixel(x, y, Rgb([0, 0, 200]));
            }
        }
        image
    }

    fn count(image: &RgbImage, colour: [u8; 3]) -> usize {
        image.pixels().filter(|pixel| pixel.0 == colour).count()
    }

    #[test]
    fn background_is_border_median() {
        let mut image = canvas();
        // A few border pixels of another colour do not move the median.
        for x in 0..5 {
            image.put_pixel(x, 0, Rgb([0, 0, 0]));
        }
        assert_eq!(background(&image), Rgb([250, 250, 250]));
    }

    #[test]
    fn views_keep_one_side_each() {
        let image = canvas();
        let horizontal = views(&image, Axis::Horizontal);
        assert_eq!(horizontal.len(), VIEWS_PER_AXIS);
        for pair in horizontal.chunks_exact(2) {
            // Every split (24, 32 and 40 px) has the red block before it and
            // the blue block after it.
            assert_eq!(count(&pair[0], [200, 0, 0]), 100);
            assert_eq!(count(&pair[0], [0, 0, 200]), 0);
            assert_eq!(count(&pair[1], [200, 0, 0]), 0);
            assert_eq!(count(&pair[1], [0, 0, 200]), 100);
        }
        let vertical = views(&image, Axis::Vertical);
        assert_eq!(count(&vertical[0], [200, 0, 0]), 100);
        assert_eq!(count(&vertical[1], [0, 0, 200]), 100);
        // The split at half the height: rows 0..32 and 32..64.
        let (top, bottom) = (&vertical[2], &vertical[3]);
        assert_eq!(top.get_pixel(5, 31), &Rgb([250, 250, 250]));
        assert_eq!(bottom.get_pixel(55, 55), &Rgb([0, 0, 200]));
        assert_eq!(bottom.get_pixel(5, 15), &Rgb([250, 250, 250]));
    }

    #[test]
    fn evidence_sign_follows_order() {
        // Captions 0 and 1; caption 0 matches the parts before the splits.
        let views = vec![
            vec![0.9, 0.2],
            vec![0.3, 0.8],
            vec![0.8, 0.3],
            vec![0.4, 0.7],
        ];
        let forward = evidence(&views, 0, 1);
        assert!((forward - 1.0).abs() < 1e-6, "{forward}");
        assert!((evidence(&views, 1, 0) + forward).abs() < 1e-6);
        assert!(evidence(&[], 0, 1).is_nan());
    }
}
