//! Tiled VAE decoding: the latents are cut into overlapping tiles, each tile
//! is decoded on its own, and the decoded tiles are cross-faded linearly over
//! their overlaps. Peak memory then follows the tile size, not the image
//! size, because the decoder's largest activations (the last up-blocks at
//! full image resolution) exist for one tile at a time.
//!
//! Each tile is decoded from its own latents only, so the decoder's group
//! norms and mid-block attention use statistics of that tile instead of the
//! whole image. Colours can therefore drift slightly between distant tiles. The
//! cross-fade hides the borders, and the overlap gives every pixel near a
//! border the context of both neighbours.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;

/// Default tile side in latent pixels; 32 latents are 256 pixels with the 8x
/// VAEs of Stable Diffusion, so 512x512 images decode as 3x3 tiles.
pub const DEFAULT_VAE_TILE_SIZE: usize = 32;

/// Smallest accepted tile side, so that the overlap is at least one latent pixel.
pub const MIN_VAE_TILE_SIZE: usize = 4;

/// Tiles overlap by a quarter of their side (rounded down), in latent pixels.
pub fn tile_overlap(tile_size: usize) -> usize {
    tile_size / 4
}

/// Returns where each tile starts along one axis of `length` latent pixels,
/// for tiles of `tile` pixels that overlap their neighbour by at least
/// `overlap`. The tiles cover the axis exactly: the first starts at 0, the
/// last ends at `length`, and the starts are spread evenly between them.
/// An axis no longer than one tile gets the single start 0.
pub fn tile_starts(length: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if length <= tile {
        return vec![0];
    }
    assert!(
        overlap < tile,
        "overlap {overlap} must be smaller than the tile {tile}"
    );
    let stride = tile - overlap;
    // The minimum count with (count - 1) * stride + tile >= length.
    let count = (length - tile).div_ceil(stride) + 1;
    let last = length - tile;
    (0..count)
        .map(|index| (index * last + (count - 1) / 2) / (count - 1))
        .collect()
}

/// Returns the blending weight of each pixel along one axis of a decoded
/// tile of `length` pixels. The weight ramps linearly from near 0 to 1 over
/// `ramp` pixels at each side that borders another tile, and is 1 elsewhere,
/// so two overlapping tiles cross-fade instead of meeting at a hard edge.
pub fn blend_weights(length: usize, ramp: usize, ramp_start: bool, ramp_end: bool) -> Vec<f32> {
    (0..length)
        .map(|index| {
            let mut weight = 1.0f32;
            if ramp > 0 && ramp_start {
                weight = weight.min((index as f32 + 0.5) / ramp as f32);
            }
            if ramp > 0 && ramp_end {
                weight = weight.min(((length - index) as f32 - 0.5) / ramp as f32);
            }
            weight.min(1.0)
        })
        .collect()
}

/// Decodes `latents`, `(1, channels, height, width)` and already divided by
/// the VAE scaling factor, into a `(3, height * scale, width * scale)` F32
/// image tensor. Latents with a side above `tile_size` decode in tiles;
/// `tile_size` 0 always decodes in one piece. `scale` is the VAE's
/// down-sampling factor.
pub fn decode_latents(
    vae: &AutoEncoderKL,
    latents: &Tensor,
    tile_size: usize,
    scale: usize,
) -> candle_core::Result<Tensor> {
    decode_tiled_with(&|tile: &Tensor| vae.decode(tile), latents, tile_size, scale)
}

/// [`decode_latents`] with any decoder that maps `(1, channels, h, w)`
/// latents to `(1, 3, h * scale, w * scale)` pixels.
pub fn decode_tiled_with(
    decode: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    latents: &Tensor,
    tile_size: usize,
    scale: usize,
) -> candle_core::Result<Tensor> {
    let (batch, _, height, width) = latents.dims4()?;
    if batch != 1 {
        candle_core::bail!("decode_latents decodes one image at a time, got a batch of {batch}");
    }
    if tile_size == 0 || (height <= tile_size && width <= tile_size) {
        return decode(latents)?.squeeze(0)?.to_dtype(DType::F32);
    }
    if tile_size < MIN_VAE_TILE_SIZE {
        candle_core::bail!(
            "VAE tile size {tile_size} is too small; it must be 0 or at least {MIN_VAE_TILE_SIZE}"
        );
    }

    let overlap = tile_overlap(tile_size);
    let tile_height = tile_size.min(height);
    let tile_width = tile_size.min(width);
    let rows = tile_starts(height, tile_height, overlap);
    let columns = tile_starts(width, tile_width, overlap);
    let (out_height, out_width) = (height * scale, width * scale);
    let ramp = overlap * scale;

    // Weighted sums of the decoded tiles and of their weights, per pixel.
    let mut sums = vec![0f32; 3 * out_height * out_width];
    let mut weight_sums = vec![0f32; out_height * out_width];
    for &row in &rows {
        let weights_y = blend_weights(
            tile_height * scale,
            ramp,
            row > 0,
            row + tile_height < height,
        );
        for &column in &columns {
            let weights_x = blend_weights(
                tile_width * scale,
                ramp,
                column > 0,
                column + tile_width < width,
            );
            let tile = latents
                .narrow(2, row, tile_height)?
                .narrow(3, column, tile_width)?;
            let decoded = decode(&tile)?
                .squeeze(0)?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?;
            let (channels, decoded_height, decoded_width) = decoded.dims3()?;
            if (channels, decoded_height, decoded_width)
                != (3, tile_height * scale, tile_width * scale)
            {
                candle_core::bail!(
                    "a {tile_height}x{tile_width} latent tile decoded to {decoded_height}x{decoded_width} with {channels} channels; expected {}x{} with 3 channels",
                    tile_height * scale,
                    tile_width * scale
                );
            }
            let pixels = decoded.flatten_all()?.to_vec1::<f32>()?;
            accumulate_tile(
                &mut sums,
                &mut weight_sums,
                &pixels,
                (row * scale, column * scale),
                (out_height, out_width),
                (&weights_y, &weights_x),
            );
        }
    }

    let plane = out_height * out_width;
    for (index, value) in sums.iter_mut().enumerate() {
        *value /= weight_sums[index % plane];
    }
    Tensor::from_vec(sums, (3, out_height, out_width), &Device::Cpu)?.to_device(latents.device())
}

/// Adds one decoded tile, `(3, tile height, tile width)` flattened, times its
/// weights into the running sums at pixel offset `origin`.
fn accumulate_tile(
    sums: &mut [f32],
    weight_sums: &mut [f32],
    pixels: &[f32],
    origin: (usize, usize),
    image_size: (usize, usize),
    weights: (&[f32], &[f32]),
) {
    let (weights_y, weights_x) = weights;
    let (tile_height, tile_width) = (weights_y.len(), weights_x.len());
    let (out_height, out_width) = image_size;
    let plane = out_height * out_width;
    for (y, weight_y) in weights_y.iter().enumerate() {
        for (x, weight_x) in weights_x.iter().enumerate() {
            let weight = weight_y * weight_x;
            let target = (origin.0 + y) * out_width + origin.1 + x;
            weight_sums[target] += weight;
            for channel in 0..3 {
                let source = (channel * tile_height + y) * tile_width + x;
                sums[channel * plane + target] += weight * pixels[source];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_cover(length: usize, tile: usize, overlap: usize) {
        let starts = tile_starts(length, tile, overlap);
        let context = format!("length {length}, tile {tile}, overlap {overlap}: {starts:?}");
        assert_eq!(starts[0], 0, "{context}");
        if length <= tile {
            assert_eq!(starts, vec![0], "{context}");
            return;
        }
        assert_eq!(starts.last().unwrap() + tile, length, "{context}");
        for pair in starts.windows(2) {
            assert!(pair[0] < pair[1], "starts not increasing: {context}");
            let shared = pair[0] + tile - pair[1];
            assert!(shared >= overlap, "overlap {shared} too small: {context}");
        }
        // Every tile is needed: skipping any one leaves a gap or a too-small overlap.
        let stride = tile - overlap;
        assert_eq!(
            starts.len(),
            (length - tile).div_ceil(stride) + 1,
            "{context}"
        );
    }

    #[test]
    fn tile_starts_cover_axis() {
        for length in [1, 4, 8, 31, 32, 33, 40, 64, 65, 96, 128] {
            for tile in [4, 8, 16, 32] {
                check_cover(length, tile, tile_overlap(tile));
            }
        }
    }

    #[test]
    fn tile_starts_known_layouts() {
        assert_eq!(tile_starts(64, 32, 8), vec![0, 16, 32]);
        assert_eq!(tile_starts(32, 32, 8), vec![0]);
        assert_eq!(tile_starts(56, 32, 8), vec![0, 24]);
        assert_eq!(tile_starts(8, 4, 1), vec![0, 2, 4]);
    }

    #[test]
    fn blend_weights_ramp_only_inner_sides() {
        let weights = blend_weights(8, 4, true, false);
        assert_eq!(weights[..4], [0.125, 0.375, 0.625, 0.875]);
        assert!(weights[4..].iter().all(|&weight| weight == 1.0));
        let weights = blend_weights(8, 4, false, true);
        assert_eq!(weights[4..], [0.875, 0.625, 0.375, 0.125]);
        assert!(blend_weights(8, 4, false, false).iter().all(|&w| w == 1.0));
    }

    /// Decodes by nearest up-sampling of `tanh` of the first three
    /// channels, so each output pixel depends only on the latent pixel under
    /// it and tiling cannot change the output.
    fn local_decoder(latents: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, height, width) = latents.dims4()?;
        latents
            .narrow(1, 0, 3)?
            .tanh()?
            .upsample_nearest2d(height * 8, width * 8)
    }

    #[test]
    fn tiled_local_decoder_matches_whole() {
        let device = Device::Cpu;
        let latents = Tensor::randn(0f32, 1.0, (1, 4, 20, 27), &device).unwrap();
        let whole = decode_tiled_with(&local_decoder, &latents, 0, 8).unwrap();
        for tile in [4, 8, 16] {
            let tiled = decode_tiled_with(&local_decoder, &latents, tile, 8).unwrap();
            assert_eq!(tiled.dims(), &[3, 160, 216]);
            let max_difference = (tiled - &whole)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(max_difference < 1e-5, "tile {tile}: {max_difference}");
        }
    }

    #[test]
    fn tiled_decode_rejects_batches_and_tiny_tiles() {
        let device = Device::Cpu;
        let pair = Tensor::zeros((2, 4, 8, 8), DType::F32, &device).unwrap();
        let error = decode_tiled_with(&local_decoder, &pair, 4, 8).unwrap_err();
        assert!(error.to_string().contains("batch of 2"), "{error}");
        let one = Tensor::zeros((1, 4, 8, 8), DType::F32, &device).unwrap();
        let error = decode_tiled_with(&local_decoder, &one, 3, 8).unwrap_err();
        assert!(error.to_string().contains("at least 4"), "{error}");
    }

    #[test]
    fn blend_weights_cross_fade_sums_to_one() {
        // Two tiles of 8 pixels that overlap by 4: over the overlap the
        // falling end of the first and the rising start of the second add to 1.
        let first = blend_weights(8, 4, false, true);
        let second = blend_weights(8, 4, true, false);
        for offset in 0..4 {
            let sum = first[4 + offset] + second[offset];
            assert!((sum - 1.0).abs() < 1e-6, "offset {offset}: {sum}");
        }
    }
}
