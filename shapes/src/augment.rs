//! Image corruptions that imitate an imperfect generator: Gaussian noise, a
//! light blur and a global colour shift. The oracle must stay accurate under
//! them, and training data reuses them as augmentation.

use image::RgbImage;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use thiserror::Error;

/// Reasons why a corruption setting is unusable.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AugmentError {
    #[error("noise sigma {sigma} is invalid; it must be a finite number of at least 0")]
    InvalidSigma { sigma: f32 },
    #[error("maximum colour shift {shift} is invalid; it must be between 0 and 255")]
    InvalidShift { shift: i16 },
}

/// A combination of corruptions, applied by [`Corruption::apply`] in the order
/// blur, colour shift, noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Corruption {
    /// Standard deviation of per-channel Gaussian noise, in 8-bit units.
    pub noise_sigma: f32,
    /// Apply a 3x3 box blur.
    pub blur: bool,
    /// Largest absolute shift per channel, in 8-bit units. Each channel draws
    /// its shift uniformly from `-max_color_shift..=max_color_shift`.
    pub max_color_shift: i16,
}

impl Default for Corruption {
    /// Returns the corruption that the oracle's accuracy is tested against: noise with
    /// sigma 8 (about 8/255 of the range), a 3x3 box blur and shifts of up to
    /// 4 units per channel.
    fn default() -> Self {
        Corruption {
            noise_sigma: 8.0,
            blur: true,
            max_color_shift: 4,
        }
    }
}

impl Corruption {
    /// Corruption that leaves images unchanged.
    pub const NONE: Corruption = Corruption {
        noise_sigma: 0.0,
        blur: false,
        max_color_shift: 0,
    };

    /// Returns a corrupted copy of `image`.
    pub fn apply<R: Rng + ?Sized>(
        &self,
        image: &RgbImage,
        rng: &mut R,
    ) -> Result<RgbImage, AugmentError> {
        let mut corrupted = if self.blur {
            box_blur3(image)
        } else {
            image.clone()
        };
        let shift = random_color_shift(self.max_color_shift, rng)?;
        shift_colors(&mut corrupted, shift);
        add_gaussian_noise(&mut corrupted, self.noise_sigma, rng)?;
        Ok(corrupted)
    }
}

/// Adds independent Gaussian noise with standard deviation `sigma` (8-bit
/// units) to every channel, clamping to 0..=255.
pub fn add_gaussian_noise<R: Rng + ?Sized>(
    image: &mut RgbImage,
    sigma: f32,
    rng: &mut R,
) -> Result<(), AugmentError> {
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(AugmentError::InvalidSigma { sigma });
    }
    if sigma == 0.0 {
        return Ok(());
    }
    let normal = Normal::new(0.0, sigma).map_err(|_| AugmentError::InvalidSigma { sigma })?;
    for channel in image.iter_mut() {
        let noisy = f32::from(*channel) + normal.sample(rng);
        *channel = noisy.round().clamp(0.0, 255.0) as u8;
    }
    Ok(())
}

/// Returns `image` blurred with a 3x3 box filter. Border pixels average only
/// the neighbours inside the image.
pub fn box_blur3(image: &RgbImage) -> RgbImage {
    let (width, height) = image.dimensions();
    let mut blurred = RgbImage::new(width, height);
    for (x, y, pixel) in blurred.enumerate_pixels_mut() {
        let mut sums = [0u32; 3];
        let mut neighbours = 0u32;
        for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
            for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                let source = image.get_pixel(nx, ny);
                for (sum, value) in sums.iter_mut().zip(source.0) {
                    *sum += u32::from(value);
                }
                neighbours += 1;
            }
        }
        pixel.0 = sums.map(|sum| ((sum + neighbours / 2) / neighbours) as u8);
    }
    blurred
}

/// Draws a per-channel shift uniformly from `-max_shift..=max_shift`.
pub fn random_color_shift<R: Rng + ?Sized>(
    max_shift: i16,
    rng: &mut R,
) -> Result<[i16; 3], AugmentError> {
    if !(0..=255).contains(&max_shift) {
        return Err(AugmentError::InvalidShift { shift: max_shift });
    }
    Ok(std::array::from_fn(|_| {
        rng.random_range(-max_shift..=max_shift)
    }))
}

/// Adds `shift` to the red, green and blue channels of every pixel, clamping
/// to 0..=255.
pub fn shift_colors(image: &mut RgbImage, shift: [i16; 3]) {
    for pixel in image.pixels_mut() {
        for (channel, delta) in pixel.0.iter_mut().zip(shift) {
            *channel = (i16::from(*channel) + delta).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn checkerboard() -> RgbImage {
        RgbImage::from_fn(8, 8, |x, y| {
            if (x + y) % 2 == 0 {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 0])
            }
        })
    }

    #[test]
    fn noise_has_expected_spread() {
        let mut image = RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]));
        add_gaussian_noise(&mut image, 8.0, &mut ChaCha8Rng::seed_from_u64(1))
            .expect("sigma is valid");
        let values: Vec<f32> = image.iter().map(|&value| f32::from(value)).collect();
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        let variance = values
            .iter()
            .map(|value| (value - mean).powi(2))
            .sum::<f32>()
            / values.len() as f32;
        assert!((mean - 128.0).abs() < 0.5, "mean {mean}");
        assert!(
            (variance.sqrt() - 8.0).abs() < 0.5,
            "std {}",
            variance.sqrt()
        );
    }

    #[test]
    fn noise_rejects_negative_sigma() {
        let mut image = checkerboard();
        let result = add_gaussian_noise(&mut image, -1.0, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(result, Err(AugmentError::InvalidSigma { sigma: -1.0 }));
    }

    #[test]
    fn blur_averages_neighbours() {
        let blurred = box_blur3(&checkerboard());
        // An inner white pixel has 5 white and 4 black neighbours, itself
        // included: 5 * 255 / 9 = 141.7.
        assert_eq!(blurred.get_pixel(2, 2).0, [142, 142, 142]);
        // The top-left corner averages 2 white and 2 black pixels.
        assert_eq!(blurred.get_pixel(0, 0).0, [128, 128, 128]);
    }

    #[test]
    fn blur_keeps_flat_image() {
        let flat = RgbImage::from_pixel(5, 5, Rgb([10, 200, 30]));
        assert_eq!(box_blur3(&flat), flat);
    }

    #[test]
    fn shift_clamps() {
        let mut image = RgbImage::from_pixel(2, 2, Rgb([250, 3, 100]));
        shift_colors(&mut image, [10, -10, 4]);
        assert_eq!(image.get_pixel(1, 1).0, [255, 0, 104]);
    }

    #[test]
    fn shift_range_checked() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        assert_eq!(
            random_color_shift(300, &mut rng),
            Err(AugmentError::InvalidShift { shift: 300 })
        );
        for _ in 0..100 {
            let shift = random_color_shift(4, &mut rng).expect("shift is valid");
            assert!(shift.iter().all(|delta| delta.abs() <= 4));
        }
    }

    #[test]
    fn none_leaves_image_unchanged() {
        let image = checkerboard();
        let unchanged = Corruption::NONE
            .apply(&image, &mut ChaCha8Rng::seed_from_u64(3))
            .expect("settings are valid");
        assert_eq!(unchanged, image);
    }
}
