//! Flags that bound the generator's memory per request: VAE tiling, the
//! UNet batch size, and the number of images one request may ask for.

use crate::pipeline::DEFAULT_MAX_BATCH;
use crate::tiling::{DEFAULT_VAE_TILE_SIZE, MIN_VAE_TILE_SIZE};

/// Default largest number of images one request may ask for.
pub const DEFAULT_MAX_IMAGES: u32 = 8;

/// Memory flags of the generator.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    /// VAE decoding tile side, in latent pixels (8 image pixels each for
    /// Stable Diffusion). Latents with a larger side decode in overlapping
    /// tiles that are blended, which bounds the decoder's peak memory. 0
    /// decodes every image in one piece.
    #[arg(
        long,
        env = "REDRAFT_GENERATOR_VAE_TILE_SIZE",
        default_value_t = DEFAULT_VAE_TILE_SIZE as u32,
        value_parser = parse_vae_tile_size
    )]
    pub vae_tile_size: u32,

    /// Largest number of images denoised together in one UNet batch. A
    /// request for more images runs in several batches. With classifier-free
    /// guidance the UNet batch is twice this.
    #[arg(
        long,
        env = "REDRAFT_GENERATOR_MAX_BATCH",
        default_value_t = DEFAULT_MAX_BATCH as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_batch: u32,

    /// Largest number of images one request may ask for (`num_images`).
    #[arg(
        long,
        env = "REDRAFT_GENERATOR_MAX_IMAGES",
        default_value_t = DEFAULT_MAX_IMAGES,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_images: u32,
}

impl Default for MemoryArgs {
    fn default() -> Self {
        Self {
            vae_tile_size: DEFAULT_VAE_TILE_SIZE as u32,
            max_batch: DEFAULT_MAX_BATCH as u32,
            max_images: DEFAULT_MAX_IMAGES,
        }
    }
}

/// Parses `--vae-tile-size`: 0, or at least [`MIN_VAE_TILE_SIZE`].
pub fn parse_vae_tile_size(text: &str) -> Result<u32, String> {
    let value: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of latent pixels"))?;
    if value != 0 && (value as usize) < MIN_VAE_TILE_SIZE {
        return Err(format!(
            "{value} is too small; it must be 0 (no tiling) or at least {MIN_VAE_TILE_SIZE}"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        memory: MemoryArgs,
    }

    #[test]
    fn defaults_parse() {
        let command = Command::try_parse_from(["generator"]).unwrap();
        assert_eq!(command.memory.vae_tile_size, DEFAULT_VAE_TILE_SIZE as u32);
        assert_eq!(command.memory.max_batch, DEFAULT_MAX_BATCH as u32);
        assert_eq!(command.memory.max_images, DEFAULT_MAX_IMAGES);
    }

    #[test]
    fn vae_tile_size_zero_or_large_enough() {
        assert_eq!(parse_vae_tile_size("0"), Ok(0));
        assert_eq!(parse_vae_tile_size("4"), Ok(4));
        let error = parse_vae_tile_size("3").unwrap_err();
        assert!(error.contains("at least 4"), "{error}");
        let error = parse_vae_tile_size("big").unwrap_err();
        assert!(error.contains("not a whole number"), "{error}");
    }

    #[test]
    fn zero_batch_and_images_rejected() {
        for flag in ["--max-batch", "--max-images"] {
            let error = Command::try_parse_from(["generator", flag, "0"]).unwrap_err();
            assert!(error.to_string().contains(flag), "{flag}: {error}");
        }
    }
}
