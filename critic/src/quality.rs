//! Image-quality checks that need no model: blank, uniform, clipped-noise and
//! oversaturated-noise images, and non-finite raw values.
//!
//! Every threshold here is a chosen value, not a measured or published one.
//! They aim to flag only broken generator output, because quality checks are
//! hard: a drawing in flat pure colours, such as a red circle on white, must
//! pass all of them.

use image::RgbImage;
use redraft_proto::{Check, CheckKind};

use crate::score::QUALITY_WEIGHT;

/// Largest channel value of a near-black pixel.
const NEAR_BLACK_MAX: u8 = 16;
/// Smallest channel value of a near-white pixel.
const NEAR_WHITE_MIN: u8 = 239;
/// Share of near-black or of near-white pixels at or above which an image is blank.
/// At 64 x 64 pixels, a drawing needs 21 other pixels to pass.
const BLANK_FRACTION: f64 = 0.995;
/// Pixel standard deviation, of 255, below which an image is uniform. It is
/// the largest of the three per-channel standard deviations.
const UNIFORM_STD_MAX: f64 = 2.0;
/// Share of channel values at exactly 0 or 255 at or above which an image is clipped.
const CLIPPED_FRACTION: f64 = 0.98;
/// HSV saturation at or above which a pixel counts as saturated.
const SATURATED_LEVEL: f64 = 0.9;
/// Smallest HSV value (largest channel, of 255) of a pixel counted as
/// saturated, because the saturation of near-black pixels is mostly noise.
const SATURATED_MIN_VALUE: u8 = 51;
/// Share of saturated pixels at or above which an image is oversaturated.
const SATURATED_FRACTION: f64 = 0.95;
/// Channel difference at or above which two neighbouring pixels differ sharply.
const SHARP_STEP: u8 = 128;
/// Share of sharply differing neighbour pairs at or above which an image is
/// noise. Flat-colour drawings differ sharply only along outlines (under 5%
/// of pairs for the three shapes of the 64 x 64 test drawing), while noise of
/// random 0 or 255 channel values reaches about 1 - 1/8 = 88%.
const NOISE_FRACTION: f64 = 0.2;

/// Runs every QUALITY check on `image`. All of them are hard, weigh
/// [`QUALITY_WEIGHT`] and score 1 when passed and 0 when failed. An image
/// without pixels gets one failed check.
pub fn quality_checks(image: &RgbImage) -> Vec<Check> {
    let Some(stats) = PixelStats::measure(image) else {
        return vec![quality_check(
            "an image with pixels",
            format!("an image of {}x{} pixels", image.width(), image.height()),
            Some("The image is empty, so generate it again at a non-zero size."),
        )];
    };
    vec![
        blank_check(&stats),
        uniform_check(&stats),
        clipped_check(&stats),
        saturated_check(&stats),
    ]
}

/// Returns a failed hard QUALITY check when any of `values` (for example a
/// raw generator output) is NaN or infinite, and `None` when all are finite.
pub fn non_finite_check(values: &[f32]) -> Option<Check> {
    let non_finite = values.iter().filter(|value| !value.is_finite()).count();
    if non_finite == 0 {
        return None;
    }
    Some(quality_check(
        "only finite values",
        format!(
            "{non_finite} of {} values are NaN or infinite",
            values.len()
        ),
        Some(
            "The generator produced NaN or infinite values, so generate again with another \
             seed, and check the generator's dtype if it repeats.",
        ),
    ))
}

/// Statistics of an RGB image, gathered in one pass over its pixels.
struct PixelStats {
    pixels: f64,
    near_black: f64,
    near_white: f64,
    channel_std: [f64; 3],
    clipped_values: f64,
    saturated: f64,
    mean_saturation: f64,
    sharp_fraction: f64,
}

impl PixelStats {
    /// Measures `image`, or returns `None` when it has no pixels.
    fn measure(image: &RgbImage) -> Option<Self> {
        let pixel_count = image.pixels().len();
        if pixel_count == 0 {
            return None;
        }
        let mut near_black = 0usize;
        let mut near_white = 0usize;
        let mut clipped_values = 0usize;
        let mut saturated = 0usize;
        let mut saturation_sum = 0.0f64;
        let mut sums = [0.0f64; 3];
        let mut squares = [0.0f64; 3];
        for pixel in image.pixels() {
            let channels = pixel.0;
            let max = channels.into_iter().max().unwrap_or(0);
            let min = channels.into_iter().min().unwrap_or(0);
            near_black += usize::from(max <= NEAR_BLACK_MAX);
            near_white += usize::from(min >= NEAR_WHITE_MIN);
            clipped_values += channels
                .iter()
                .filter(|&&value| value == 0 || value == 255)
                .count();
            let saturation = if max == 0 {
                0.0
            } else {
                f64::from(max - min) / f64::from(max)
            };
            saturation_sum += saturation;
            saturated += usize::from(saturation >= SATURATED_LEVEL && max >= SATURATED_MIN_VALUE);
            for (channel, value) in channels.into_iter().enumerate() {
                let value = f64::from(value);
                sums[channel] += value;
                squares[channel] += value * value;
            }
        }

        let pixels = pixel_count as f64;
        let channel_std = std::array::from_fn(|channel| {
            let mean = sums[channel] / pixels;
            (squares[channel] / pixels - mean * mean).max(0.0).sqrt()
        });
        Some(Self {
            pixels,
            near_black: near_black as f64,
            near_white: near_white as f64,
            channel_std,
            clipped_values: clipped_values as f64,
            saturated: saturated as f64,
            mean_saturation: saturation_sum / pixels,
            sharp_fraction: sharp_neighbour_fraction(image),
        })
    }
}

/// Share of horizontally or vertically neighbouring pixel pairs whose largest
/// channel difference is at least [`SHARP_STEP`]. It is 0 for a one-pixel image.
fn sharp_neighbour_fraction(image: &RgbImage) -> f64 {
    let (width, height) = image.dimensions();
    let sharp = |a: &image::Rgb<u8>, b: &image::Rgb<u8>| {
        a.0.iter()
            .zip(b.0)
            .any(|(&x, y)| x.abs_diff(y) >= SHARP_STEP)
    };
    let mut pairs = 0usize;
    let mut sharp_pairs = 0usize;
    for y in 0..height {
        for x in 0..width {
            let pixel = image.get_pixel(x, y);
            if x + 1 < width {
                pairs += 1;
                sharp_pairs += usize::from(sharp(pixel, image.get_pixel(x + 1, y)));
            }
            if y + 1 < height {
                pairs += 1;
                sharp_pairs += usize::from(sharp(pixel, image.get_pixel(x, y + 1)));
            }
        }
    }
    if pairs == 0 {
        0.0
    } else {
        sharp_pairs as f64 / pairs as f64
    }
}

fn blank_check(stats: &PixelStats) -> Check {
    let (share, shade) = if stats.near_black >= stats.near_white {
        (stats.near_black / stats.pixels, "black")
    } else {
        (stats.near_white / stats.pixels, "white")
    };
    let percent = 100.0 * share;
    if share < BLANK_FRACTION {
        return quality_check(
            "an image that is not blank",
            format!("{percent:.1}% of pixels are near {shade}, so the image is not blank"),
            None,
        );
    }
    quality_check(
        "an image that is not blank",
        format!("the image is blank ({percent:.1}% of pixels are near {shade})"),
        Some("The image is blank, so generate it again with another seed."),
    )
}

fn uniform_check(stats: &PixelStats) -> Check {
    let std = stats.channel_std.into_iter().fold(0.0f64, f64::max);
    if std >= UNIFORM_STD_MAX {
        return quality_check(
            "an image with varied pixel values",
            format!("pixel std {std:.1} of 255, so the image is not a single colour"),
            None,
        );
    }
    quality_check(
        "an image with varied pixel values",
        format!("the image is a single colour (pixel std {std:.1} of 255)"),
        Some("The image is a single colour, so generate it again with another seed."),
    )
}

fn clipped_check(stats: &PixelStats) -> Check {
    let clipped = 100.0 * stats.clipped_values / (3.0 * stats.pixels);
    let sharp = 100.0 * stats.sharp_fraction;
    let failed = clipped >= 100.0 * CLIPPED_FRACTION && stats.sharp_fraction >= NOISE_FRACTION;
    if !failed {
        return quality_check(
            "an image that is not clipped noise",
            format!(
                "{clipped:.0}% of channel values are 0 or 255 and {sharp:.0}% of neighbouring pixels differ sharply"
            ),
            None,
        );
    }
    quality_check(
        "an image that is not clipped noise",
        format!(
            "the image is clipped noise ({clipped:.0}% of channel values are 0 or 255 \
             and {sharp:.0}% of neighbouring pixels differ sharply)"
        ),
        Some(
            "The image is extreme-contrast noise, so generate it again with another seed or \
             a lower guidance scale.",
        ),
    )
}

fn saturated_check(stats: &PixelStats) -> Check {
    let saturated = 100.0 * stats.saturated / stats.pixels;
    let mean = stats.mean_saturation;
    let sharp = 100.0 * stats.sharp_fraction;
    let failed = saturated >= 100.0 * SATURATED_FRACTION && stats.sharp_fraction >= NOISE_FRACTION;
    if !failed {
        return quality_check(
            "an image that is not oversaturated noise",
            format!("mean HSV saturation {mean:.2}, {saturated:.0}% of pixels saturated"),
            None,
        );
    }
    quality_check(
        "an image that is not oversaturated noise",
        format!(
            "the image is oversaturated noise (mean HSV saturation {mean:.2}, {saturated:.0}% of \
             pixels saturated, {sharp:.0}% of neighbouring pixels differ sharply)"
        ),
        Some(
            "The image is oversaturated noise, so generate it again with another seed or a \
             lower guidance scale.",
        ),
    )
}

/// Builds a hard QUALITY check on the whole image, which passed when
/// `feedback` is `None`.
fn quality_check(expected: &str, observed: String, feedback: Option<&str>) -> Check {
    let passed = feedback.is_none();
    Check {
        kind: CheckKind::Quality.into(),
        subject: "image".to_string(),
        expected: expected.to_string(),
        observed,
        score: if passed { 1.0 } else { 0.0 },
        passed,
        feedback: feedback.unwrap_or_default().to_string(),
        hard: true,
        variants: Vec::new(),
        weight: QUALITY_WEIGHT,
    }
}

#[cfg(test)]
mod tests {
    use image::Rgb;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Expected text of each check, in the order `quality_checks` returns them.
    const BLANK: &str = "an image that is not blank";
    const UNIFORM: &str = "an image with varied pixel values";
    const CLIPPED: &str = "an image that is not clipped noise";
    const SATURATED: &str = "an image that is not oversaturated noise";

    fn failed_checks(image: &RgbImage) -> Vec<String> {
        quality_checks(image)
            .into_iter()
            .filter(|check| !check.passed)
            .map(|check| check.expected)
            .collect()
    }

    /// Draws a gradient with a dark square and a light disc on it.
    fn varied_image() -> RgbImage {
        RgbImage::from_fn(64, 64, |x, y| {
            let in_square = (8..24).contains(&x) && (8..24).contains(&y);
            let in_disc = (x as i32 - 44).pow(2) + (y as i32 - 40).pow(2) < 100;
            if in_square {
                Rgb([30, 40, 90])
            } else if in_disc {
                Rgb([240, 200, 60])
            } else {
                Rgb([(x * 3) as u8 + 40, (y * 2) as u8 + 60, 128])
            }
        })
    }

    /// Draws a red disc, a blue square and a green bar in flat pure colours on white.
    fn flat_drawing() -> RgbImage {
        RgbImage::from_fn(64, 64, |x, y| {
            if (x as i32 - 16).pow(2) + (y as i32 - 16).pow(2) < 64 {
                Rgb([255, 0, 0])
            } else if (36..52).contains(&x) && (36..52).contains(&y) {
                Rgb([0, 0, 255])
            } else if (8..24).contains(&x) && (44..50).contains(&y) {
                Rgb([0, 255, 0])
            } else {
                Rgb([255, 255, 255])
            }
        })
    }

    #[test]
    fn varied_image_passes() {
        let checks = quality_checks(&varied_image());
        assert_eq!(checks.len(), 4);
        for check in &checks {
            assert!(check.passed, "{}: {}", check.expected, check.observed);
            assert!(check.hard);
            assert_eq!(check.score, 1.0);
            assert_eq!(check.weight, QUALITY_WEIGHT);
            assert!(check.feedback.is_empty());
        }
    }

    #[test]
    fn flat_drawings_pass() {
        let drawing = flat_drawing();
        assert_eq!(failed_checks(&drawing), Vec::<String>::new());
        let sharp = sharp_neighbour_fraction(&drawing);
        assert!(
            sharp < 0.05,
            "the NOISE_FRACTION comment states under 5%, got {sharp}"
        );
        let red_on_blue = RgbImage::from_fn(64, 64, |x, y| {
            if (20..44).contains(&x) && (20..44).contains(&y) {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        assert_eq!(failed_checks(&red_on_blue), Vec::<String>::new());
    }

    #[test]
    fn black_image_blank() {
        let black = RgbImage::new(64, 64);
        assert_eq!(failed_checks(&black), vec![BLANK, UNIFORM]);
        let check = &quality_checks(&black)[0];
        assert_eq!(
            check.observed,
            "the image is blank (100.0% of pixels are near black)"
        );
        assert_eq!(check.score, 0.0);
        assert!(!check.feedback.is_empty());
    }

    #[test]
    fn white_image_with_dot_blank() {
        let mut white = RgbImage::from_pixel(64, 64, Rgb([250, 250, 250]));
        for (x, y) in [(10, 10), (10, 11), (11, 10), (11, 11)] {
            white.put_pixel(x, y, Rgb([200, 0, 0]));
        }
        let failed = failed_checks(&white);
        assert!(failed.contains(&BLANK.to_string()), "{failed:?}");
    }

    #[test]
    fn grey_image_uniform() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let grey = RgbImage::from_fn(64, 64, |_, _| {
            let value = 128 + rng.random_range(0..=1u8);
            Rgb([value, value, value])
        });
        assert_eq!(failed_checks(&grey), vec![UNIFORM]);
        let check = &quality_checks(&grey)[1];
        assert!(
            check
                .observed
                .starts_with("the image is a single colour (pixel std 0.5 of 255)"),
            "{}",
            check.observed
        );
    }

    #[test]
    fn clipped_noise_fails() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let noise = RgbImage::from_fn(64, 64, |_, _| {
            Rgb(std::array::from_fn(|_| {
                if rng.random_bool(0.5) { 255 } else { 0 }
            }))
        });
        let failed = failed_checks(&noise);
        assert!(failed.contains(&CLIPPED.to_string()), "{failed:?}");
        assert!(!failed.contains(&BLANK.to_string()), "{failed:?}");
        assert!(!failed.contains(&UNIFORM.to_string()), "{failed:?}");
    }

    #[test]
    fn saturated_noise_fails() {
        // Fully saturated pixels of random hue: one channel 255, one 0, one random.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noise = RgbImage::from_fn(64, 64, |_, _| {
            let mut channels = [255, 0, rng.random_range(1..255u8)];
            let rotation = rng.random_range(0..3);
            channels.rotate_left(rotation);
            if rng.random_bool(0.5) {
                channels.swap(0, 1);
            }
            Rgb(channels)
        });
        assert_eq!(failed_checks(&noise), vec![SATURATED]);
        let check = &quality_checks(&noise)[3];
        assert!(
            check.observed.contains("mean HSV saturation 1.00"),
            "{}",
            check.observed
        );
    }

    #[test]
    fn empty_image_fails() {
        let checks = quality_checks(&RgbImage::new(0, 0));
        assert_eq!(checks.len(), 1);
        assert!(!checks[0].passed);
        assert_eq!(checks[0].observed, "an image of 0x0 pixels");
    }

    #[test]
    fn one_pixel_image_measured() {
        let checks = quality_checks(&RgbImage::from_pixel(1, 1, Rgb([10, 200, 30])));
        assert_eq!(checks.len(), 4);
    }

    #[test]
    fn non_finite_values_fail() {
        assert!(non_finite_check(&[0.0, 1.5, -3.0]).is_none());
        let check = non_finite_check(&[0.0, f32::NAN, f32::INFINITY, 2.0]).unwrap();
        assert!(!check.passed);
        assert!(check.hard);
        assert_eq!(check.kind, i32::from(CheckKind::Quality));
        assert_eq!(check.observed, "2 of 4 values are NaN or infinite");
    }
}
