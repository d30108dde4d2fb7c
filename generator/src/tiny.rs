//! Writes random-weight tiny model folders in the diffusers layout, for
//! tests and for running redraft before trained models exist.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use candle_transformers::models::stable_diffusion::{
    unet_2d::UNet2DConditionModel, vae::AutoEncoderKL,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::GeneratorError;
use crate::folder::{DEFAULTS_FILE, ModelFolder};

/// Writes a tiny random-weight Stable Diffusion folder to `dir`: a 2-layer
/// QuickGELU CLIP text encoder 32 wide, a two-level UNet (32 and 64
/// channels), and a VAE with an 8x down-sampling factor, so 64x64 images use
/// 8x8 latents. `words` is the tokenizer's vocabulary. The same seed writes
/// the same weights.
pub fn write_tiny_generator(dir: &Path, seed: u64, words: &[&str]) -> Result<(), GeneratorError> {
    let io =
        |error: std::io::Error| GeneratorError::folder(dir, format!("failed to write: {error}"));
    for sub in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io)?;
    }

    // Tokenizer.
    let tokenizer = redraft_common::tokenizer::build_word_level(words);
    let vocab_size = tokenizer.get_vocab_size(true);
    tokenizer
        .save(dir.join("tokenizer/tokenizer.json"), true)
        .map_err(|error| {
            GeneratorError::folder(dir, format!("failed to write tokenizer.json: {error}"))
        })?;

    // Configs, in diffusers' and transformers' own field names.
    let text_config = json!({
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "hidden_act": "quick_gelu",
        "projection_dim": 32,
    });
    let unet_config = json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "attention_head_dim": 2,
        "cross_attention_dim": 32,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "use_linear_projection": false,
    });
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
        "scaling_factor": 0.18215,
    });
    let scheduler_config = json!({
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
    let model_index = json!({
        "_class_name": "StableDiffusionPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    });
    // Few steps and mild guidance keep tiny-model runs fast.
    let defaults = json!({ "steps": 4, "guidance_scale": 2.0 });
    for (file, value) in [
        ("model_index.json", &model_index),
        ("text_encoder/config.json", &text_config),
        ("unet/config.json", &unet_config),
        ("vae/config.json", &vae_config),
        ("scheduler/scheduler_config.json", &scheduler_config),
        (DEFAULTS_FILE, &defaults),
    ] {
        let text = serde_json::to_string_pretty(value).expect("json values serialise");
        std::fs::write(dir.join(file), text).map_err(io)?;
    }

    // Weights: build each model on a VarMap so every tensor name is the one
    // candle reads, then overwrite the values from the seeded RNG.
    let folder_configs = ModelFolder::parse_configs(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let device = Device::Cpu;

    let text = VarMap::new();
    let candle_text = ClipTextConfig {
        vocab_size,
        embed_dim: 32,
        activation: Activation::QuickGelu,
        intermediate_size: 64,
        max_position_embeddings: 32,
        pad_with: None,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        projection_dim: 32,
    };
    ClipTextTransformer::new(
        VarBuilder::from_varmap(&text, DType::F32, &device).pp("text_model"),
        &candle_text,
    )?;
    save_seeded(&text, &mut rng, &dir.join("text_encoder/model.safetensors"))?;

    let unet = VarMap::new();
    UNet2DConditionModel::new(
        VarBuilder::from_varmap(&unet, DType::F32, &device),
        4,
        4,
        false,
        folder_configs.unet.clone(),
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
    Ok(())
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
