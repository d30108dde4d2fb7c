//! Tiny random-weight CLIP folders in the Hugging Face layout, for tests and
//! demos on machines without model downloads.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::clip::ClipModel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Normal;
use redraft_common::tokenizer::{SCENE_WORDS, build_word_level};

use crate::error::CriticError;
use crate::model::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, parse_clip_config};

/// Hidden size of both tiny encoders.
const HIDDEN: usize = 32;
/// MLP size of both tiny encoders.
const INTERMEDIATE: usize = 64;
/// Transformer layers of both tiny encoders.
const LAYERS: usize = 2;
/// Attention heads of both tiny encoders.
const HEADS: usize = 2;
/// Maximum token sequence length of the tiny text encoder.
const MAX_POSITIONS: usize = 32;
/// Side length in pixels of the tiny vision encoder's input.
const IMAGE_SIZE: usize = 32;
/// Patch side length of the tiny vision encoder, giving 4 x 4 patches.
const PATCH_SIZE: usize = 8;
/// Output size of both projections.
const PROJECTION_DIM: usize = 32;
/// Initial logit scale written to config.json: ln(1 / 0.07), the default of
/// transformers' `CLIPConfig`.
const LOGIT_SCALE_INIT: f32 = 2.6592;
/// `logit_scale` written to the weights: ln(100), the ceiling open_clip's
/// training loop clamps it to, so softmaxes over captions are as sharp as a
/// trained model's. It differs from `LOGIT_SCALE_INIT` so tests can tell
/// which one was read.
const LOGIT_SCALE: f32 = 4.605_17;
/// Standard deviation of the random weights, as transformers' CLIP
/// `initializer_range`.
const INIT_STD: f32 = 0.02;

/// Writes a random-weight tiny CLIP folder to `dir` (created if missing):
/// `config.json`, `model.safetensors` and `tokenizer.json`, in the layout of
/// Hugging Face CLIP folders.
///
/// The weights are F32 and depend only on `seed`. The tokenizer is word level
/// over [`SCENE_WORDS`] plus `extra_words`.
pub fn write_tiny_clip(dir: &Path, seed: u64, extra_words: &[&str]) -> Result<(), CriticError> {
    std::fs::create_dir_all(dir).map_err(|error| write_error(dir, &error))?;

    let mut words = SCENE_WORDS.to_vec();
    words.extend_from_slice(extra_words);
    let tokenizer = build_word_level(&words);
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    tokenizer
        .save(&tokenizer_path, false)
        .map_err(|error| write_error(&tokenizer_path, &error))?;

    let config_json = tiny_config_json(tokenizer.get_vocab_size(true));
    let config_text = serde_json::to_string_pretty(&config_json)
        .map_err(|error| write_error(&dir.join(CONFIG_FILE), &error))?;
    write_random_weights(dir, &config_text, seed)
}

/// Writes `config_text` as the config.json of `dir` and random weights for
/// it, drawn as for the tiny models: ones for layer-norm weights, zeros for
/// biases, normal(0, 0.02) for the rest from a ChaCha8 stream seeded with
/// `seed`, and `logit_scale` ln(100). The folder needs a tokenizer.json of
/// its own to load.
pub fn write_random_weights(dir: &Path, config_text: &str, seed: u64) -> Result<(), CriticError> {
    std::fs::create_dir_all(dir).map_err(|error| write_error(dir, &error))?;
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, config_text).map_err(|error| write_error(&config_path, &error))?;
    let config = parse_clip_config(config_text, &config_path)?;
    let tensors = random_weights(&config, seed)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights_path)
        .map_err(|error| write_error(&weights_path, &error))?;
    Ok(())
}

/// Builds the config.json of a tiny model, with the fields transformers
/// writes for `CLIPModel` that the critic reads.
fn tiny_config_json(vocab_size: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": PROJECTION_DIM,
        "logit_scale_init_value": LOGIT_SCALE_INIT,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": vocab_size,
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "max_position_embeddings": MAX_POSITIONS,
            "hidden_act": "quick_gelu",
            "projection_dim": PROJECTION_DIM,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "projection_dim": PROJECTION_DIM,
        },
    })
}

/// Draws every tensor `ClipModel` reads for `config` from a ChaCha8 stream
/// seeded with `seed`: ones for layer-norm weights, zeros for biases and
/// normal(0, 0.02) for everything else, plus `logit_scale`.
fn random_weights(
    config: &candle_transformers::models::clip::ClipConfig,
    seed: u64,
) -> Result<HashMap<String, Tensor>, CriticError> {
    let shapes = tensor_shapes(config)?;
    let device = Device::Cpu;
    let normal = Normal::new(0.0f32, INIT_STD).expect("0.02 is a valid standard deviation");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = HashMap::with_capacity(shapes.len() + 1);
    for (name, dims) in shapes {
        let count = dims.iter().product::<usize>();
        let values: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; count]
        } else if is_layer_norm_weight(&name) {
            vec![1.0; count]
        } else {
            (0..count).map(|_| rng.sample(normal)).collect()
        };
        tensors.insert(name, Tensor::from_vec(values, dims, &device)?);
    }
    // A scalar, as transformers stores this `nn.Parameter`.
    tensors.insert(
        "logit_scale".to_string(),
        Tensor::new(LOGIT_SCALE, &device)?,
    );
    Ok(tensors)
}

/// Lists the name and shape of every tensor `ClipModel` reads for `config`,
/// sorted by name.
pub(crate) fn tensor_shapes(
    config: &candle_transformers::models::clip::ClipConfig,
) -> Result<Vec<(String, Vec<usize>)>, CriticError> {
    // Collect names and shapes by building the model on a VarMap. Candle
    // creates `class_embedding` only when the builder already contains it,
    // so it is registered first.
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    vb.pp("vision_model.embeddings")
        .get(config.vision_config.embed_dim, "class_embedding")?;
    ClipModel::new(vb, config)?;

    let mut shapes: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    // Sorting fixes the order in which the names draw from a random stream.
    shapes.sort();
    Ok(shapes)
}

/// Returns whether `name` is the scale of a layer norm. Candle's CLIP names them
/// `layer_norm1`, `layer_norm2`, `final_layer_norm`, `pre_layrnorm` (sic, as
/// in transformers) and `post_layernorm`.
pub(crate) fn is_layer_norm_weight(name: &str) -> bool {
    let Some(module) = name.strip_suffix(".weight") else {
        return false;
    };
    let last = module.rsplit('.').next().unwrap_or(module);
    last.contains("layer_norm") || last.contains("layernorm") || last.contains("layrnorm")
}

pub(crate) fn write_error(path: &Path, error: &dyn std::fmt::Display) -> CriticError {
    CriticError::folder(path, format!("failed to write {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use redraft_common::tokenizer::PromptTokenizer;

    use super::*;

    fn read_weights(dir: &Path) -> HashMap<String, Tensor> {
        candle_core::safetensors::load(dir.join(WEIGHTS_FILE), &Device::Cpu).unwrap()
    }

    fn values(tensor: &Tensor) -> Vec<f32> {
        tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn config_in_hf_layout() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_clip(dir.path(), 0, &["zebra"]).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["architectures"][0], "CLIPModel");
        assert_eq!(json["text_config"]["hidden_act"], "quick_gelu");
        assert_eq!(json["vision_config"]["patch_size"], 8);

        let vocab_size = tokenizer_vocab_size(dir.path());
        assert_eq!(json["text_config"]["vocab_size"], vocab_size);
        let config = parse_clip_config(&text, Path::new("config.json")).unwrap();
        assert_eq!(config.text_config.embed_dim, 32);
        assert_eq!(config.text_config.max_position_embeddings, 32);
        assert_eq!(config.vision_config.image_size, 32);
    }

    /// Number of entries in the `model.vocab` map of the written tokenizer.json.
    fn tokenizer_vocab_size(dir: &Path) -> usize {
        let text = std::fs::read_to_string(dir.join(TOKENIZER_FILE)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["model"]["vocab"].as_object().unwrap().len()
    }

    #[test]
    fn extra_words_in_vocabulary() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_clip(dir.path(), 0, &["zebra"]).unwrap();
        let tokenizer = PromptTokenizer::from_file(&dir.path().join(TOKENIZER_FILE), 8).unwrap();
        let ids = tokenizer
            .encode("A zebra left of three red circles")
            .unwrap();
        let unknown_id = 1;
        assert!(!ids.contains(&unknown_id), "{ids:?}");
    }

    #[test]
    fn weights_follow_init_rules() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_clip(dir.path(), 0, &[]).unwrap();
        let weights = read_weights(dir.path());
        assert_eq!(values(&weights["logit_scale"]), vec![LOGIT_SCALE]);
        assert_eq!(weights["logit_scale"].dims(), &[] as &[usize]);
        assert_eq!(
            weights["vision_model.embeddings.class_embedding"].dims(),
            &[32]
        );

        let norm = &weights["vision_model.pre_layrnorm.weight"];
        assert!(values(norm).iter().all(|&value| value == 1.0));
        let bias = &weights["text_model.encoder.layers.1.mlp.fc1.bias"];
        assert_eq!(bias.dims(), &[64]);
        assert!(values(bias).iter().all(|&value| value == 0.0));

        let embedding = values(&weights["text_model.embeddings.token_embedding.weight"]);
        let mean = embedding.iter().sum::<f32>() / embedding.len() as f32;
        let std = (embedding.iter().map(|v| (v - mean).powi(2)).sum::<f32>()
            / embedding.len() as f32)
            .sqrt();
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((std - INIT_STD).abs() < 0.002, "std {std}");
    }

    #[test]
    fn same_seed_same_files() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let third = tempfile::tempdir().unwrap();
        write_tiny_clip(first.path(), 9, &[]).unwrap();
        write_tiny_clip(second.path(), 9, &[]).unwrap();
        write_tiny_clip(third.path(), 10, &[]).unwrap();
        for file in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE] {
            let a = std::fs::read(first.path().join(file)).unwrap();
            let b = std::fs::read(second.path().join(file)).unwrap();
            assert!(a == b, "{file} differs between two writes with seed 9");
        }
        let a = std::fs::read(first.path().join(WEIGHTS_FILE)).unwrap();
        let c = std::fs::read(third.path().join(WEIGHTS_FILE)).unwrap();
        assert!(a != c, "seeds 9 and 10 wrote the same weights");
    }

    #[test]
    fn layer_norm_names_recognised() {
        assert!(is_layer_norm_weight("text_model.final_layer_norm.weight"));
        assert!(is_layer_norm_weight("vision_model.pre_layrnorm.weight"));
        assert!(is_layer_norm_weight("vision_model.post_layernorm.weight"));
        assert!(is_layer_norm_weight(
            "text_model.encoder.layers.0.layer_norm2.weight"
        ));
        assert!(!is_layer_norm_weight(
            "text_model.encoder.layers.0.self_attn.q_proj.weight"
        ));
        assert!(!is_layer_norm_weight("vision_model.post_layernorm.bias"));
    }
}
