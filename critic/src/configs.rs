//! Hugging Face config.json texts of full-size OpenAI CLIP models, for
//! tests and benchmarks that load them with random weights.

use std::path::Path;

use redraft_common::tokenizer::{SCENE_WORDS, build_word_level};

use crate::error::CriticError;
use crate::model::TOKENIZER_FILE;
use crate::tiny::{write_error, write_random_weights};

/// The fields of openai/clip-vit-base-patch32's config.json on the
/// Hugging Face hub that matter here, with some of the others. Its
/// vision_config has no num_channels, so the default 3 applies.
pub const VIT_B_32: &str = r#"{
  "_name_or_path": "openai/clip-vit-base-patch32",
  "architectures": ["CLIPModel"],
  "initializer_factor": 1.0,
  "logit_scale_init_value": 2.6592,
  "model_type": "clip",
  "projection_dim": 512,
  "text_config": {
    "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
    "hidden_act": "quick_gelu", "hidden_size": 512, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "model_type": "clip_text_model",
    "num_attention_heads": 8, "num_hidden_layers": 12, "pad_token_id": 1,
    "projection_dim": 512, "vocab_size": 49408
  },
  "text_config_dict": null,
  "torch_dtype": "float32",
  "vision_config": {
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu",
    "hidden_size": 768, "image_size": 224, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model", "num_attention_heads": 12,
    "num_hidden_layers": 12, "patch_size": 32, "projection_dim": 512
  },
  "vision_config_dict": null
}"#;

/// The fields of openai/clip-vit-large-patch14's config.json that matter here.
pub const VIT_L_14: &str = r#"{
  "architectures": ["CLIPModel"],
  "logit_scale_init_value": 2.6592,
  "model_type": "clip",
  "projection_dim": 768,
  "text_config": {
    "hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072,
    "max_position_embeddings": 77, "model_type": "clip_text_model",
    "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768,
    "vocab_size": 49408
  },
  "vision_config": {
    "hidden_act": "quick_gelu", "hidden_size": 1024, "image_size": 224,
    "intermediate_size": 4096, "model_type": "clip_vision_model",
    "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 24,
    "patch_size": 14, "projection_dim": 768
  }
}"#;

/// Writes a CLIP folder with `config_text` as its config.json, random
/// weights drawn from `seed`, and a word-level tokenizer over
/// [`SCENE_WORDS`] in place of OpenAI's byte-level BPE, which cannot be
/// downloaded here. The word-level ids fit any vocabulary of at least 100.
pub fn write_random_full_size(dir: &Path, config_text: &str, seed: u64) -> Result<(), CriticError> {
    std::fs::create_dir_all(dir).map_err(|error| write_error(dir, &error))?;
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    build_word_level(SCENE_WORDS)
        .save(&tokenizer_path, false)
        .map_err(|error| write_error(&tokenizer_path, &error))?;
    write_random_weights(dir, config_text, seed)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::handset::paint_words;
    use crate::judge::Judge;
    use crate::model::ClipScorer;
    use crate::score::Calibration;

    /// Loads `config` with random weights and judges a 224 x 224 image with a
    /// prompt that has every probe kind.
    fn load_and_score(config: &str, projection_dim: usize) {
        let dir = tempfile::tempdir().unwrap();
        write_random_full_size(dir.path(), config, 3).unwrap();
        let scorer = ClipScorer::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(scorer.image_size(), 224);
        let embedding = scorer
            .text_embeddings(&["a red circle".to_string()])
            .unwrap();
        assert_eq!(embedding.dims(), &[1, projection_dim]);

        let judge = Judge::new(scorer, Calibration::clip_score());
        let image = image::imageops::resize(
            &paint_words(&["two", "red", "circles"]).unwrap(),
            224,
            224,
            image::imageops::FilterType::Nearest,
        );
        let critiques = judge
            .critique_batch(
                "a photo of two red circles left of a blue square",
                &[image.clone(), image],
            )
            .unwrap();
        assert_eq!(critiques.len(), 2);
        let critique = &critiques[0];
        assert!((0.0..=1.0).contains(&critique.score), "{}", critique.score);
        let kinds: Vec<i32> = critique.checks.iter().map(|check| check.kind).collect();
        for kind in [
            redraft_proto::CheckKind::Alignment,
            redraft_proto::CheckKind::Presence,
            redraft_proto::CheckKind::Count,
            redraft_proto::CheckKind::Color,
            redraft_proto::CheckKind::Relation,
        ] {
            assert!(
                kinds.contains(&i32::from(kind)),
                "no {kind:?} check: {kinds:?}"
            );
        }
        for check in &critique.checks {
            assert!(check.score.is_finite(), "{check:?}");
        }
        assert!((critiques[0].score - critiques[1].score).abs() < 1e-4);
    }

    #[test]
    fn vit_b_32_loads_and_scores() {
        load_and_score(VIT_B_32, 512);
    }

    #[test]
    #[ignore = "writes and loads 1.7 GB of random weights (428M parameters); run with --ignored"]
    fn vit_l_14_loads_and_scores() {
        load_and_score(VIT_L_14, 768);
    }
}
