//! The Stable Diffusion pipeline: text encoder, UNet, VAE and scheduler on
//! candle, for text-to-image and image-to-image.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use redraft_common::InvalidArgument;
use redraft_common::images::{rgb_to_tensor, tensor_to_rgb};

use crate::GeneratorError;
use crate::folder::ModelFolder;
use crate::scheduler::{SchedulerKind, seeded_normal_batch};
use crate::text_encoder::{TextEmbeddings, TextEncoder};
use crate::tiling::{DEFAULT_VAE_TILE_SIZE, decode_latents};
use crate::unet::{TIME_IDS, TextTimeInput, Unet};

/// Everything one image needs, validated and with defaults filled in.
#[derive(Debug, Clone)]
pub struct GenerationInput {
    /// Text prompt.
    pub prompt: String,
    /// Negative prompt; empty for the unconditional embedding.
    pub negative_prompt: String,
    /// Seed of the initial noise and of any scheduler noise.
    pub seed: u64,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Denoising steps of the full schedule.
    pub steps: usize,
    /// Classifier-free guidance scale; guidance is skipped at 1 or below.
    pub guidance_scale: f64,
    /// Scheduler algorithm.
    pub scheduler: SchedulerKind,
    /// Init image and strength for image-to-image.
    pub init: Option<(RgbImage, f64)>,
}

/// Seconds spent in each stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    /// Encoding the prompts.
    pub text_encode: Duration,
    /// The denoising loop (and the init image's encoding for image-to-image).
    pub denoise: Duration,
    /// VAE decoding.
    pub decode: Duration,
}

/// Progress report of the denoising loop after each step.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress {
    /// Steps done.
    pub step: usize,
    /// Steps this request runs.
    pub total: usize,
}

/// A loaded pipeline. It is not `Sync`-shared: one model thread owns it.
pub struct Pipeline {
    folder: ModelFolder,
    device: Device,
    dtype: DType,
    text_encoder: TextEncoder,
    unet: Unet,
    vae: AutoEncoderKL,
    /// Latent side above which the VAE decodes in tiles; 0 never tiles.
    vae_tile_size: usize,
    /// Largest number of images denoised in one UNet batch.
    max_batch: usize,
}

/// Default largest number of images denoised in one UNet batch, until
/// [`Pipeline::set_max_batch`] changes it.
pub const DEFAULT_MAX_BATCH: usize = 4;

/// Log-variance given to the VAE posterior at load time. exp(-60 / 2) is
/// about 1e-13, so sampling the posterior returns its mean to f32 precision
/// and image-to-image stays reproducible even though candle's VAE draws
/// that sample from an unseeded RNG.
const POSTERIOR_LOGVAR: f64 = -60.0;

impl Pipeline {
    /// Loads every component of `folder` onto `device` in `dtype`.
    pub fn load(folder: ModelFolder, device: Device, dtype: DType) -> Result<Self, GeneratorError> {
        let text_encoder = TextEncoder::load(&folder, &device, dtype)?;

        let unet_vb = mmap(
            &folder,
            "unet/diffusion_pytorch_model.safetensors",
            dtype,
            &device,
        )?;
        let unet = Unet::new(
            unet_vb,
            folder.unet_channels,
            folder.unet.clone(),
            folder.unet_text_time,
        )
        .map_err(|error| {
            GeneratorError::folder(
                &folder.root,
                format!("unet/diffusion_pytorch_model.safetensors does not match unet/config.json: {error}"),
            )
        })?;

        let vae_vb = vae_with_mean_posterior(&folder, dtype, &device)?;
        let vae = AutoEncoderKL::new(vae_vb, 3, 3, folder.vae.clone())?;

        Ok(Self {
            folder,
            device,
            dtype,
            text_encoder,
            unet,
            vae,
            vae_tile_size: DEFAULT_VAE_TILE_SIZE,
            max_batch: DEFAULT_MAX_BATCH,
        })
    }

    /// Sets the latent side above which the VAE decodes in overlapping
    /// tiles (see [`crate::tiling`]); 0 decodes every image in one piece.
    pub fn set_vae_tile_size(&mut self, tile_size: usize) {
        self.vae_tile_size = tile_size;
    }

    /// Sets the largest number of images [`Pipeline::generate_batch`] takes
    /// at once, at least 1.
    pub fn set_max_batch(&mut self, max_batch: usize) {
        self.max_batch = max_batch.max(1);
    }

    /// Largest number of images [`Pipeline::generate_batch`] takes at once.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The folder this pipeline was loaded from.
    pub fn folder(&self) -> &ModelFolder {
        &self.folder
    }

    /// Draws one image. `on_step` runs after every denoising step and stops
    /// the work with [`GeneratorError::Cancelled`] when it returns false.
    pub fn generate(
        &self,
        input: &GenerationInput,
        on_step: &mut dyn FnMut(StepProgress) -> bool,
    ) -> Result<(RgbImage, StageTimings), GeneratorError> {
        let (mut images, timings) = self.generate_batch(input, 1, on_step)?;
        Ok((images.remove(0), timings))
    }

    /// Draws `count` images of `input` as one UNet batch; image `i` uses
    /// seed `input.seed + i` (wrapping) for its initial and scheduler noise,
    /// so it matches a single image with that seed up to float rounding.
    /// `count` must be from 1 to [`Pipeline::max_batch`]. `on_step` runs
    /// after every denoising step and stops the work with
    /// [`GeneratorError::Cancelled`] when it returns false.
    pub fn generate_batch(
        &self,
        input: &GenerationInput,
        count: usize,
        on_step: &mut dyn FnMut(StepProgress) -> bool,
    ) -> Result<(Vec<RgbImage>, StageTimings), GeneratorError> {
        if count == 0 || count > self.max_batch {
            return Err(InvalidArgument::new(
                "count",
                count,
                format!("from 1 to the max batch {}", self.max_batch),
            )
            .into());
        }
        let mut timings = StageTimings::default();
        let use_guidance = input.guidance_scale > 1.0;

        // Encode the prompts; the unconditional row comes first.
        let started = Instant::now();
        let conditional = self.encode_text("prompt", &input.prompt)?;
        let embeddings = if use_guidance {
            let unconditional =
                if input.negative_prompt.is_empty() && self.folder.force_zeros_for_empty_prompt {
                    conditional.zeros_like()?
                } else {
                    self.encode_text("negative_prompt", &input.negative_prompt)?
                };
            TextEmbeddings::cat(&unconditional, &conditional)?
        } else {
            conditional
        };
        let text_embeddings = repeat_per_image(&embeddings.hidden, count, use_guidance)?;
        let text_time = self.text_time_input(&embeddings, count, use_guidance, input)?;
        timings.text_encode = started.elapsed();

        // Prepare the initial latents.
        let started = Instant::now();
        let mut scheduler = self.folder.scheduler.build(input.scheduler, input.steps)?;
        let timesteps = scheduler.timesteps();
        let factor = self.folder.vae_scale_factor();
        let latent_shape = [
            count,
            self.folder.unet_channels.0,
            input.height / factor,
            input.width / factor,
        ];
        let mut rngs: Vec<ChaCha8Rng> = (0..count as u64)
            .map(|index| ChaCha8Rng::seed_from_u64(input.seed.wrapping_add(index)))
            .collect();
        let noise =
            seeded_normal_batch(&mut rngs, &latent_shape, &self.device)?.to_dtype(self.dtype)?;
        let (mut latents, first_step) = match &input.init {
            None => ((noise * scheduler.init_noise_sigma())?, 0),
            Some((image, strength)) => {
                // diffusers' img2img: run the last `steps * strength` steps from the noised init latents.
                let run_steps = ((input.steps as f64 * strength) as usize).min(input.steps);
                let first_step = input.steps - run_steps;
                let init_latents = self.encode_image(image)?.repeat((count, 1, 1, 1))?;
                if first_step == input.steps {
                    (init_latents, first_step)
                } else {
                    (
                        scheduler.add_noise(&init_latents, noise, first_step)?,
                        first_step,
                    )
                }
            }
        };

        // Denoise.
        let total = timesteps.len() - first_step;
        for (done, index) in (first_step..timesteps.len()).enumerate() {
            let timestep = timesteps[index];
            let model_input = if use_guidance {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let model_input = scheduler.scale_model_input(model_input, index)?;
            let noise_pred = self.unet.forward(
                &model_input,
                timestep as f64,
                &text_embeddings,
                text_time.as_ref(),
            )?;
            let noise_pred = if use_guidance {
                let halves = noise_pred.chunk(2, 0)?;
                let (unconditional, conditional) = (&halves[0], &halves[1]);
                (unconditional + ((conditional - unconditional)? * input.guidance_scale)?)?
            } else {
                noise_pred
            };
            latents = scheduler.step(&noise_pred, index, &latents, &mut rngs)?;
            if !on_step(StepProgress {
                step: done + 1,
                total,
            }) {
                return Err(GeneratorError::Cancelled {
                    step: done + 1,
                    total,
                });
            }
        }
        timings.denoise = started.elapsed();

        // Decode.
        let started = Instant::now();
        let latents = (latents / self.folder.vae_scaling_factor)?;
        let mut images = Vec::with_capacity(count);
        for row in 0..count {
            let image = decode_latents(
                &self.vae,
                &latents.narrow(0, row, 1)?,
                self.vae_tile_size,
                self.folder.vae_scale_factor(),
            )?;
            images.push(tensor_to_rgb(&image)?);
        }
        timings.decode = started.elapsed();
        Ok((images, timings))
    }

    /// Encodes one prompt. `field` names it in weighting syntax errors.
    fn encode_text(&self, field: &str, text: &str) -> Result<TextEmbeddings, GeneratorError> {
        self.text_encoder.encode(field, text)
    }

    /// Builds SDXL's added conditioning for a batch laid out like the UNet
    /// input: the pooled embeddings, and diffusers' default size ids, which
    /// take the original and target size to be the requested one and the
    /// crop to start at the top-left corner. None for SD 1.x and 2.x.
    fn text_time_input(
        &self,
        embeddings: &TextEmbeddings,
        count: usize,
        use_guidance: bool,
        input: &GenerationInput,
    ) -> Result<Option<TextTimeInput>, GeneratorError> {
        let Some(pooled) = &embeddings.pooled else {
            return Ok(None);
        };
        let text_embeds =
            repeat_per_image(&pooled.unsqueeze(1)?, count, use_guidance)?.squeeze(1)?;
        let rows = text_embeds.dim(0)?;
        let (height, width) = (input.height as f32, input.width as f32);
        let sizes: [f32; TIME_IDS] = [height, width, 0.0, 0.0, height, width];
        let time_ids = Tensor::new(&sizes, &self.device)?
            .unsqueeze(0)?
            .repeat((rows, 1))?
            .to_dtype(self.dtype)?;
        Ok(Some(TextTimeInput {
            text_embeds,
            time_ids,
        }))
    }

    fn encode_image(&self, image: &RgbImage) -> Result<Tensor, GeneratorError> {
        let pixels = rgb_to_tensor(image, &self.device)?
            .unsqueeze(0)?
            .to_dtype(self.dtype)?;
        let latents = self.vae.encode(&pixels)?.sample()?;
        Ok((latents * self.folder.vae_scaling_factor)?)
    }
}

/// Repeats the text embeddings for a batch of `count` images. With guidance
/// the input is `[unconditional, conditional]` and the output is `count`
/// unconditional rows followed by `count` conditional rows, matching the
/// UNet input `[latents, latents]`.
fn repeat_per_image(
    embeddings: &Tensor,
    count: usize,
    use_guidance: bool,
) -> candle_core::Result<Tensor> {
    if count == 1 {
        return Ok(embeddings.clone());
    }
    let halves = if use_guidance {
        embeddings.chunk(2, 0)?
    } else {
        vec![embeddings.clone()]
    };
    let repeated = halves
        .iter()
        .map(|half| half.repeat((count, 1, 1)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&repeated, 0)
}

fn mmap(
    folder: &ModelFolder,
    file: &str,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, GeneratorError> {
    let path = folder.file(file);
    // SAFETY: the weights file is only read, and redraft never writes a model
    // folder while an actor has it loaded.
    unsafe { VarBuilder::from_mmaped_safetensors(&[&path], dtype, device) }.map_err(|error| {
        GeneratorError::folder(&folder.root, format!("failed to read {file}: {error}"))
    })
}

/// Loads the VAE weights with the posterior's log-variance channels set to
/// [`POSTERIOR_LOGVAR`], so encoding returns the posterior mean.
fn vae_with_mean_posterior(
    folder: &ModelFolder,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, GeneratorError> {
    const FILE: &str = "vae/diffusion_pytorch_model.safetensors";
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(folder.file(FILE), device).map_err(|error| {
            GeneratorError::folder(&folder.root, format!("failed to read {FILE}: {error}"))
        })?;
    let latent = folder.vae.latent_channels;
    let prefix = if folder.vae.use_quant_conv {
        "quant_conv"
    } else {
        "encoder.conv_out"
    };
    for suffix in ["weight", "bias"] {
        let name = format!("{prefix}.{suffix}");
        let tensor = tensors.get(&name).ok_or_else(|| {
            GeneratorError::folder(&folder.root, format!("{FILE} has no tensor {name}"))
        })?;
        let mean_rows = tensor.narrow(0, 0, latent)?;
        let logvar_rows = if suffix == "bias" {
            (Tensor::ones_like(&mean_rows)? * POSTERIOR_LOGVAR)?
        } else {
            Tensor::zeros_like(&mean_rows)?
        };
        let replaced = Tensor::cat(&[&mean_rows, &logvar_rows], 0)?;
        tensors.insert(name, replaced);
    }
    Ok(VarBuilder::from_tensors(tensors, dtype, device))
}
