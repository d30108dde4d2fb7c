//! Conversions between PNG bytes, RGB images and candle tensors.

use candle_core::{DType, Device, Tensor};
use image::{ImageFormat, RgbImage};

use crate::InvalidArgument;

/// Encodes an RGB image as PNG bytes.
pub fn encode_png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, ImageFormat::Png)
        .expect("PNG encoding into memory cannot fail for an RGB8 image");
    bytes.into_inner()
}

/// Decodes the PNG bytes of the request field `field` into an RGB image,
/// checking its size against the declared `width` x `height` and `max_side`.
pub fn decode_png(
    field: &str,
    png: &[u8],
    width: u32,
    height: u32,
    max_side: u32,
) -> Result<RgbImage, InvalidArgument> {
    if png.is_empty() {
        return Err(InvalidArgument::new(
            format!("{field}.png"),
            "0 bytes",
            "a PNG-encoded image",
        ));
    }
    let decoded = image::load_from_memory_with_format(png, ImageFormat::Png).map_err(|error| {
        InvalidArgument::new(
            format!("{field}.png"),
            format!("{} bytes that do not decode ({error})", png.len()),
            "a PNG-encoded image",
        )
    })?;
    let (actual_width, actual_height) = (decoded.width(), decoded.height());
    if actual_width > max_side || actual_height > max_side {
        return Err(InvalidArgument::new(
            format!("{field}.png"),
            format!("an image of {actual_width}x{actual_height}"),
            format!("at most {max_side} pixels on each side"),
        ));
    }
    if (width, height) != (actual_width, actual_height) {
        return Err(InvalidArgument::new(
            format!("{field}.width/height"),
            format!("{width}x{height}"),
            format!("the decoded PNG size {actual_width}x{actual_height}"),
        ));
    }
    Ok(decoded.to_rgb8())
}

/// Converts a `(3, height, width)` tensor with values in [-1, 1] into an RGB
/// image. Non-finite values become 0.
pub fn tensor_to_rgb(tensor: &Tensor) -> candle_core::Result<RgbImage> {
    let (channels, height, width) = tensor.dims3()?;
    if channels != 3 {
        candle_core::bail!("expected 3 channels, got {channels}");
    }
    let pixels = ((tensor.to_dtype(DType::F32)?.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes = pixels
        .into_iter()
        .map(|value| {
            if value.is_finite() {
                value.round() as u8
            } else {
                0
            }
        })
        .collect();
    Ok(RgbImage::from_raw(width as u32, height as u32, bytes)
        .expect("buffer length is 3 * width * height by construction"))
}

/// Converts an RGB image into a `(3, height, width)` F32 tensor with values in [-1, 1].
pub fn rgb_to_tensor(image: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let data: Vec<f32> = image
        .as_raw()
        .iter()
        .map(|&value| value as f32 / 127.5 - 1.0)
        .collect();
    Tensor::from_vec(data, (height, width, 3), device)?.permute((2, 0, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_keeps_pixels() {
        let image = RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let png = encode_png(&image);
        let decoded = decode_png("image", &png, 16, 8, 64).unwrap();
        assert_eq!(decoded, image);
    }

    #[test]
    fn undecodable_png_names_field() {
        let error = decode_png("image", b"not a png", 8, 8, 64).unwrap_err();
        assert_eq!(error.field, "image.png");
        assert!(error.value.contains("9 bytes"), "{error}");
    }

    #[test]
    fn declared_size_must_match() {
        let png = encode_png(&RgbImage::new(8, 8));
        let error = decode_png("image", &png, 16, 8, 64).unwrap_err();
        assert_eq!(error.value, "16x8");
    }

    #[test]
    fn tensor_round_trip_keeps_pixels() {
        let image = RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8 * 60, y as u8 * 200, 255]));
        let tensor = rgb_to_tensor(&image, &Device::Cpu).unwrap();
        assert_eq!(tensor.dims(), &[3, 2, 4]);
        assert_eq!(tensor_to_rgb(&tensor).unwrap(), image);
    }
}
