//! The Stable Diffusion pipeline: text encoder, UNet, VAE and scheduler on
//! candle, for text-to-image and image-to-image.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer as QuickGeluTextTransformer,
};
use candle_transformers::models::stable_diffusion::{
    clip as sd_clip, unet_2d::UNet2DConditionModel, vae::AutoEncoderKL,
};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use redraft_common::images::{rgb_to_tensor, tensor_to_rgb};
use redraft_common::tokenizer::PromptTokenizer;

use crate::GeneratorError;
use crate::folder::{ModelFolder, TextEncoderConfig, unsupported};
use crate::scheduler::{SchedulerKind, seeded_normal};

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

/// The two CLIP text encoder variants: candle's generic CLIP text model
/// (QuickGELU, any size) and its Stable Diffusion one, which has GELU but
/// only fixed presets.
enum TextEncoder {
    QuickGelu(QuickGeluTextTransformer),
    Gelu(sd_clip::ClipTextTransformer),
}

impl TextEncoder {
    fn load(config: &TextEncoderConfig, vb: VarBuilder) -> Result<Self, GeneratorError> {
        // Hub folders name tensors `text_model.embeddings...`; transformers 5
        // writes a bare CLIPTextModel without the prefix.
        let prefixed = vb.contains_tensor("text_model.embeddings.token_embedding.weight");
        if config.hidden_act == "quick_gelu" {
            let candle_config = ClipTextConfig {
                vocab_size: config.vocab_size,
                embed_dim: config.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: config.intermediate_size,
                max_position_embeddings: config.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: config.num_hidden_layers,
                num_attention_heads: config.num_attention_heads,
                projection_dim: config.projection_dim.unwrap_or(config.hidden_size),
            };
            let vb = if prefixed { vb.pp("text_model") } else { vb };
            return Ok(Self::QuickGelu(QuickGeluTextTransformer::new(
                vb,
                &candle_config,
            )?));
        }
        // NOTE: candle's GELU text encoder config has private fields, so only
        // the SD 2.x preset (OpenCLIP ViT-H/14 text tower, 23 layers) loads.
        let preset = sd_clip::Config::v2_1();
        let matches_preset = config.hidden_size == 1024
            && config.num_hidden_layers == 23
            && config.num_attention_heads == 16
            && config.intermediate_size == 4096
            && config.vocab_size == 49408
            && config.max_position_embeddings == 77;
        if !matches_preset || !prefixed {
            return Err(unsupported(
                "text_encoder/config.json",
                "hidden_act",
                "gelu",
                "quick_gelu, or gelu with the SD 2.x text encoder shape (1024 wide, 23 layers, 16 heads) and text_model.* tensor names",
            ));
        }
        // candle's SD text model adds the `text_model.` prefix itself.
        Ok(Self::Gelu(sd_clip::ClipTextTransformer::new(vb, &preset)?))
    }

    /// Returns the last hidden states, `(batch, tokens, hidden)`.
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::QuickGelu(model) => model.forward_with_mask(ids, usize::MAX),
            Self::Gelu(model) => model.forward(ids),
        }
    }
}

/// A loaded pipeline. It is not `Sync`-shared: one model thread owns it.
pub struct Pipeline {
    folder: ModelFolder,
    device: Device,
    dtype: DType,
    tokenizer: PromptTokenizer,
    text_encoder: TextEncoder,
    unet: UNet2DConditionModel,
    vae: AutoEncoderKL,
}

/// Log-variance given to the VAE posterior at load time. exp(-60 / 2) is
/// about 1e-13, so sampling the posterior returns its mean to f32 precision
/// and image-to-image stays reproducible even though candle's VAE draws
/// that sample from an unseeded RNG.
const POSTERIOR_LOGVAR: f64 = -60.0;

impl Pipeline {
    /// Loads every component of `folder` onto `device` in `dtype`.
    pub fn load(folder: ModelFolder, device: Device, dtype: DType) -> Result<Self, GeneratorError> {
        let tokenizer = PromptTokenizer::from_file(
            &folder.file("tokenizer/tokenizer.json"),
            folder.text_encoder.max_position_embeddings,
        )?;

        let text_vb = mmap(&folder, "text_encoder/model.safetensors", dtype, &device)?;
        let text_encoder = TextEncoder::load(&folder.text_encoder, text_vb)?;

        let unet_vb = mmap(
            &folder,
            "unet/diffusion_pytorch_model.safetensors",
            dtype,
            &device,
        )?;
        let (in_channels, out_channels) = folder.unet_channels;
        let unet = UNet2DConditionModel::new(
            unet_vb,
            in_channels,
            out_channels,
            false,
            folder.unet.clone(),
        )?;

        let vae_vb = vae_with_mean_posterior(&folder, dtype, &device)?;
        let vae = AutoEncoderKL::new(vae_vb, 3, 3, folder.vae.clone())?;

        Ok(Self {
            folder,
            device,
            dtype,
            tokenizer,
            text_encoder,
            unet,
            vae,
        })
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
        let mut timings = StageTimings::default();
        let use_guidance = input.guidance_scale > 1.0;

        // Encode the prompts; the unconditional row comes first.
        let started = Instant::now();
        let conditional = self.encode_text(&input.prompt)?;
        let text_embeddings = if use_guidance {
            let unconditional = self.encode_text(&input.negative_prompt)?;
            Tensor::cat(&[unconditional, conditional], 0)?
        } else {
            conditional
        };
        timings.text_encode = started.elapsed();

        // Prepare the initial latents.
        let started = Instant::now();
        let mut scheduler = self.folder.scheduler.build(input.scheduler, input.steps)?;
        let timesteps = scheduler.timesteps();
        let factor = self.folder.vae_scale_factor();
        let latent_shape = [
            1,
            self.folder.unet_channels.0,
            input.height / factor,
            input.width / factor,
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(input.seed);
        let noise = seeded_normal(&mut rng, &latent_shape, &self.device)?.to_dtype(self.dtype)?;
        let (mut latents, first_step) = match &input.init {
            None => ((noise * scheduler.init_noise_sigma())?, 0),
            Some((image, strength)) => {
                // diffusers' img2img: run the last `steps * strength` steps from the noised init latents.
                let run_steps = ((input.steps as f64 * strength) as usize).min(input.steps);
                let first_step = input.steps - run_steps;
                let init_latents = self.encode_image(image)?;
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
            let noise_pred = self
                .unet
                .forward(&model_input, timestep as f64, &text_embeddings)?;
            let noise_pred = if use_guidance {
                let halves = noise_pred.chunk(2, 0)?;
                let (unconditional, conditional) = (&halves[0], &halves[1]);
                (unconditional + ((conditional - unconditional)? * input.guidance_scale)?)?
            } else {
                noise_pred
            };
            latents = scheduler.step(&noise_pred, index, &latents, &mut rng)?;
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
        let image = self
            .vae
            .decode(&(latents / self.folder.vae_scaling_factor)?)?
            .i(0)?;
        let image = tensor_to_rgb(&image)?;
        timings.decode = started.elapsed();
        Ok((image, timings))
    }

    fn encode_text(&self, text: &str) -> Result<Tensor, GeneratorError> {
        let ids = self.tokenizer.encode(text)?;
        let ids = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        Ok(self.text_encoder.forward(&ids)?.to_dtype(self.dtype)?)
    }

    fn encode_image(&self, image: &RgbImage) -> Result<Tensor, GeneratorError> {
        let pixels = rgb_to_tensor(image, &self.device)?
            .unsqueeze(0)?
            .to_dtype(self.dtype)?;
        let latents = self.vae.encode(&pixels)?.sample()?;
        Ok((latents * self.folder.vae_scaling_factor)?)
    }
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
