//! Writes random-weight tiny model folders in the diffusers layout, for
//! tests and for running redraft before trained models exist.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::GeneratorError;
use crate::clip_text::ClipTextModel;
use crate::folder::{DEFAULTS_FILE, ModelFolder};
use crate::unet::Unet;

/// The model family layouts [`write_tiny`] can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyFamily {
    /// SD 1.x: one QuickGELU text encoder, DDIM with leading spacing.
    Sd1,
    /// SD 2.x: one GELU text encoder, linear attention projections,
    /// v-prediction.
    Sd2,
    /// SD-Turbo: the SD 2.x layout with trailing-spaced Euler-ancestral,
    /// epsilon prediction, and defaults of one step without guidance.
    SdTurbo,
    /// SDXL: a QuickGELU text encoder, a GELU one with a projection, and a
    /// UNet with the `text_time` added embedding.
    Sdxl,
    /// SDXL-Turbo: the SDXL layout with trailing-spaced Euler-ancestral and
    /// defaults of one step without guidance.
    SdxlTurbo,
}

impl TinyFamily {
    /// Every layout, for tests that cover them all.
    pub const ALL: [TinyFamily; 5] = [
        Self::Sd1,
        Self::Sd2,
        Self::SdTurbo,
        Self::Sdxl,
        Self::SdxlTurbo,
    ];

    fn is_sdxl(self) -> bool {
        matches!(self, Self::Sdxl | Self::SdxlTurbo)
    }

    fn is_sd2(self) -> bool {
        matches!(self, Self::Sd2 | Self::SdTurbo)
    }

    fn is_turbo(self) -> bool {
        matches!(self, Self::SdTurbo | Self::SdxlTurbo)
    }
}

/// Width of every tiny text encoder.
const TEXT_WIDTH: usize = 32;
/// Channels of each size number in the tiny SDXL UNet's added embedding.
const TIME_EMBED_DIM: usize = 8;

/// Writes a tiny random-weight SD 1.x folder to `dir`, as [`write_tiny`] describes.
pub fn write_tiny_generator(dir: &Path, seed: u64, words: &[&str]) -> Result<(), GeneratorError> {
    write_tiny(dir, seed, words, TinyFamily::Sd1)
}

/// Writes a tiny random-weight folder of `family`'s layout to `dir`: 2-layer
/// CLIP text encoders 32 wide, a two-level UNet (32 and 64 channels), and a
/// VAE with an 8x down-sampling factor, so 64x64 images use 8x8 latents.
/// `words` is the tokenizer's vocabulary. The same seed writes the same
/// weights.
pub fn write_tiny(
    dir: &Path,
    seed: u64,
    words: &[&str],
    family: TinyFamily,
) -> Result<(), GeneratorError> {
    let io =
        |error: std::io::Error| GeneratorError::folder(dir, format!("failed to write: {error}"));
    let mut subfolders = vec!["text_encoder", "tokenizer", "unet", "vae", "scheduler"];
    if family.is_sdxl() {
        subfolders.extend(["text_encoder_2", "tokenizer_2"]);
    }
    for sub in &subfolders {
        std::fs::create_dir_all(dir.join(sub)).map_err(io)?;
    }

    // Tokenizers: SDXL's two share one vocabulary, as the real ones do.
    let tokenizer = redraft_common::tokenizer::build_word_level(words);
    let vocab_size = tokenizer.get_vocab_size(true);
    let tokenizer_files: &[&str] = if family.is_sdxl() {
        &["tokenizer/tokenizer.json", "tokenizer_2/tokenizer.json"]
    } else {
        &["tokenizer/tokenizer.json"]
    };
    for file in tokenizer_files {
        tokenizer.save(dir.join(file), true).map_err(|error| {
            GeneratorError::folder(dir, format!("failed to write {file}: {error}"))
        })?;
    }

    // Configs, in diffusers' and transformers' own field names.
    let text_act = if family.is_sd2() {
        "gelu"
    } else {
        "quick_gelu"
    };
    let text_config = text_encoder_json(vocab_size, text_act, "CLIPTextModel");
    let text_config_2 = text_encoder_json(vocab_size, "gelu", "CLIPTextModelWithProjection");
    let unet_config = unet_json(family);
    let vae_config = json!({
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": [32, 32, 32, 32],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 64,
        // The SDXL VAE's factor differs from SD 1.x and 2.x (diffusers' configs).
        "scaling_factor": if family.is_sdxl() { 0.13025 } else { 0.18215 },
    });
    let scheduler_config = scheduler_json(family);
    let model_index = model_index_json(family, &scheduler_config);
    // Few steps and mild guidance keep tiny-model runs fast, and Turbo models
    // run one step without guidance.
    let defaults = if family.is_turbo() {
        json!({ "steps": 1, "guidance_scale": 0.0 })
    } else {
        json!({ "steps": 4, "guidance_scale": 2.0 })
    };
    let mut files = vec![
        ("model_index.json", &model_index),
        ("text_encoder/config.json", &text_config),
        ("unet/config.json", &unet_config),
        ("vae/config.json", &vae_config),
        ("scheduler/scheduler_config.json", &scheduler_config),
        (DEFAULTS_FILE, &defaults),
    ];
    if family.is_sdxl() {
        files.push(("text_encoder_2/config.json", &text_config_2));
    }
    for (file, value) in files {
        let text = serde_json::to_string_pretty(value).expect("json values serialise");
        std::fs::write(dir.join(file), text).map_err(io)?;
    }

    // Weights: build each model on a VarMap so every tensor name is the one
    // candle reads, then overwrite the values from the seeded RNG.
    let folder_configs = ModelFolder::parse_configs(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let device = Device::Cpu;

    let text = VarMap::new();
    ClipTextModel::new(
        VarBuilder::from_varmap(&text, DType::F32, &device).pp("text_model"),
        &folder_configs.text_encoder,
        false,
    )?;
    save_seeded(&text, &mut rng, &dir.join("text_encoder/model.safetensors"))?;

    let unet = VarMap::new();
    Unet::new(
        VarBuilder::from_varmap(&unet, DType::F32, &device),
        folder_configs.unet_channels,
        folder_configs.unet.clone(),
        folder_configs.unet_text_time,
    )?;
    save_seeded(
        &unet,
        &mut rng,
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
    )?;

    let vae = VarMap::new();
    AutoEncoderKL::new(
        VarBuilder::from_varmap(&vae, DType::F32, &device),
        3,
        3,
        folder_configs.vae.clone(),
    )?;
    save_seeded(
        &vae,
        &mut rng,
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
    )?;

    // SDXL's second text encoder.
    if let Some(config) = &folder_configs.text_encoder_2 {
        let text_2 = VarMap::new();
        let vb = VarBuilder::from_varmap(&text_2, DType::F32, &device);
        // Hub folders keep the encoder under `text_model.` next to the root
        // `text_projection`; creating one tensor there first makes the model
        // pick that prefix.
        vb.pp("text_model")
            .pp("embeddings")
            .pp("token_embedding")
            .get_with_hints((vocab_size, TEXT_WIDTH), "weight", candle_nn::init::ZERO)?;
        ClipTextModel::new(vb, config, true)?;
        save_seeded(
            &text_2,
            &mut rng,
            &dir.join("text_encoder_2/model.safetensors"),
        )?;
    }
    Ok(())
}

/// Builds a transformers `CLIPTextConfig` for a 2-layer encoder [`TEXT_WIDTH`] wide.
fn text_encoder_json(vocab_size: usize, hidden_act: &str, architecture: &str) -> Value {
    json!({
        "architectures": [architecture],
        "model_type": "clip_text_model",
        "vocab_size": vocab_size,
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 2 * TEXT_WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "hidden_act": hidden_act,
        "layer_norm_eps": 1e-5,
        "projection_dim": TEXT_WIDTH,
    })
}

/// Builds a diffusers `UNet2DConditionModel` config with two levels (32 and 64
/// channels). SDXL's mirrors the real one's shape: the attention-free block
/// first, two transformer layers at the deeper level, linear projections,
/// both encoders' widths as the cross-attention width, and `text_time`.
fn unet_json(family: TinyFamily) -> Value {
    let mut config = json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "attention_head_dim": 2,
        "cross_attention_dim": TEXT_WIDTH,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "use_linear_projection": false,
    });
    if family.is_sd2() {
        config["attention_head_dim"] = json!([2, 4]);
        config["use_linear_projection"] = json!(true);
    }
    if family.is_sdxl() {
        config["down_block_types"] = json!(["DownBlock2D", "CrossAttnDownBlock2D"]);
        config["up_block_types"] = json!(["CrossAttnUpBlock2D", "UpBlock2D"]);
        config["attention_head_dim"] = json!([2, 4]);
        config["transformer_layers_per_block"] = json!([1, 2]);
        config["use_linear_projection"] = json!(true);
        config["cross_attention_dim"] = json!(2 * TEXT_WIDTH);
        config["addition_embed_type"] = json!("text_time");
        config["addition_time_embed_dim"] = json!(TIME_EMBED_DIM);
        config["projection_class_embeddings_input_dim"] = json!(6 * TIME_EMBED_DIM + TEXT_WIDTH);
    }
    config
}

/// Builds the scheduler config of each family, after the real models' folders:
/// DDIM for SD 1.x, v-prediction for SD 2.x, and trailing-spaced
/// Euler-ancestral for the Turbo models.
fn scheduler_json(family: TinyFamily) -> Value {
    let mut config = json!({
        "_class_name": "DDIMScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "clip_sample": false,
        "set_alpha_to_one": false,
    });
    if family == TinyFamily::Sd2 {
        config["prediction_type"] = json!("v_prediction");
    }
    if family.is_turbo() {
        config["_class_name"] = json!("EulerAncestralDiscreteScheduler");
        config["timestep_spacing"] = json!("trailing");
        config["steps_offset"] = json!(0);
    }
    config
}

fn model_index_json(family: TinyFamily, scheduler: &Value) -> Value {
    let scheduler_class = scheduler["_class_name"].clone();
    let mut index = json!({
        "_class_name": "StableDiffusionPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", scheduler_class],
    });
    if family.is_sdxl() {
        index["_class_name"] = json!("StableDiffusionXLPipeline");
        index["text_encoder_2"] = json!(["transformers", "CLIPTextModelWithProjection"]);
        index["tokenizer_2"] = json!(["transformers", "CLIPTokenizer"]);
        index["force_zeros_for_empty_prompt"] = json!(true);
    }
    index
}

/// Overwrites every variable with seeded values, in name order, and saves
/// them: norm scales 1, biases 0, other weights normal with standard
/// deviation 1 / sqrt(fan-in) so activations keep their scale.
fn save_seeded(vars: &VarMap, rng: &mut ChaCha8Rng, path: &Path) -> Result<(), GeneratorError> {
    let data = vars.data().lock().expect("the VarMap lock is not poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let count: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("bias") {
            vec![0.0; count]
        } else if dims.len() == 1 {
            vec![1.0; count]
        } else {
            let fan_in: usize = dims[1..].iter().product();
            let std = 1.0 / (fan_in.max(1) as f32).sqrt();
            (0..count)
                .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal) * std)
                .collect()
        };
        var.set(&Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?)?;
    }
    drop(data);
    vars.save(path)?;
    Ok(())
}
