//! A tiny CLIP folder with hand-set weights whose embeddings are bags of
//! words, so tests know which caption an image matches before running it.
//!
//! Each content word (a colour, a count, a shape or a relation word) owns a
//! feature direction `e[2k] - e[2k+1]`. Plurals share the singular's
//! feature, and "a", "an" and "one" share the feature of one.
//!
//! - Text: the token embeddings are the feature vectors (zero for other
//!   words). One encoder layer with zero query and key weights attends
//!   uniformly to every earlier token, and identity value and output
//!   weights add their mean to the end-of-text token, which CLIP pools. So
//!   the text embedding is the normalised sum of the caption's features.
//! - Image: [`paint_words`] draws a grey 48 x 48 image with one word per
//!   8 x 8 patch, as a black pixel at a position that encodes the word. The
//!   patch convolution subtracts that pixel's red channel from the
//!   patch's top-left pixel, so each patch embeds as its word's feature,
//!   and the same attention sums them into the class token. So the image
//!   embedding is the normalised sum of the painted words' features.
//!
//! The cosine of a caption and an image is therefore the overlap of their
//! words: an image painted "three red squares" matches "three red squares"
//! best, then "two red squares", and "a blue circle" least.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};
use redraft_common::InvalidArgument;
use redraft_common::tokenizer::{SCENE_WORDS, build_word_level};

use crate::error::CriticError;
use crate::model::{TOKENIZER_FILE, WEIGHTS_FILE, parse_clip_config};
use crate::score::{CALIBRATION_FILE, Calibration};
use crate::tiny::{is_layer_norm_weight, tensor_shapes, write_error};

/// Words with a feature, grouped by feature. The first word of a group is
/// the one [`paint_words`] paints for any word of the group.
const FEATURES: &[&[&str]] = &[
    &["one", "a", "an"],
    &["two"],
    &["three"],
    &["four"],
    &["red"],
    &["green"],
    &["blue"],
    &["yellow"],
    &["orange"],
    &["purple"],
    &["circle", "circles"],
    &["square", "squares"],
    &["triangle", "triangles"],
    &["blob", "blobs"],
    &["left"],
    &["right"],
    &["above"],
    &["below"],
];

/// Hidden and projection size: two dimensions per feature, rounded up.
const HIDDEN: usize = 40;
/// Side of the input image in pixels.
pub const IMAGE_SIZE: u32 = 48;
/// Side of a patch in pixels; an image has (48 / 8)^2 = 36 patches.
const PATCH: usize = 8;
/// Grey level of the background of painted images.
const BACKGROUND: u8 = 160;
/// ln(100), so softmaxes over captions are as sharp as a trained CLIP's.
const LOGIT_SCALE: f32 = 4.605_17;

fn feature_of(word: &str) -> Option<usize> {
    FEATURES.iter().position(|group| group.contains(&word))
}

/// Writes the hand-set CLIP folder to `dir`: config.json, model.safetensors,
/// a word-level tokenizer.json over [`SCENE_WORDS`], and a
/// redraft_critic.json whose probes use the bare phrase as caption and the
/// six colours and three shapes of [`FEATURES`].
pub fn write_handset_clip(dir: &Path) -> Result<(), CriticError> {
    std::fs::create_dir_all(dir).map_err(|error| write_error(dir, &error))?;
    let tokenizer = build_word_level(SCENE_WORDS);
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    tokenizer
        .save(&tokenizer_path, false)
        .map_err(|error| write_error(&tokenizer_path, &error))?;
    let vocab = tokenizer.get_vocab(true);

    let config_path = dir.join(crate::model::CONFIG_FILE);
    let config_text = config_json(vocab.len()).to_string();
    std::fs::write(&config_path, &config_text)
        .map_err(|error| write_error(&config_path, &error))?;
    let config = parse_clip_config(&config_text, &config_path)?;

    let mut tensors = HashMap::new();
    let device = Device::Cpu;
    for (name, dims) in tensor_shapes(&config)? {
        let values = weight_values(&name, &dims, &vocab);
        tensors.insert(name, Tensor::from_vec(values, dims, &device)?);
    }
    tensors.insert(
        "logit_scale".to_string(),
        Tensor::new(LOGIT_SCALE, &device)?,
    );
    let weights_path = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights_path)
        .map_err(|error| write_error(&weights_path, &error))?;

    let mut calibration = Calibration::clip_score();
    calibration.caption_template = "{}".to_string();
    calibration.probe_words.colors = ["red", "green", "blue", "yellow", "orange", "purple"]
        .map(String::from)
        .to_vec();
    calibration.probe_words.presence_nouns =
        ["circle", "square", "triangle"].map(String::from).to_vec();
    calibration.probe_words.max_count = 4;
    let calibration_path = dir.join(CALIBRATION_FILE);
    std::fs::write(&calibration_path, calibration.to_json())
        .map_err(|error| write_error(&calibration_path, &error))?;
    Ok(())
}

fn config_json(vocab_size: usize) -> serde_json::Value {
    let encoder = serde_json::json!({
        "hidden_size": HIDDEN,
        "intermediate_size": 4,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "hidden_act": "quick_gelu",
    });
    let mut text = encoder.clone();
    text["vocab_size"] = vocab_size.into();
    text["max_position_embeddings"] = 32.into();
    let mut vision = encoder;
    vision["image_size"] = IMAGE_SIZE.into();
    vision["patch_size"] = PATCH.into();
    serde_json::json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": HIDDEN,
        "text_config": text,
        "vision_config": vision,
    })
}

/// Returns the values of the tensor `name` of shape `dims` (row-major).
fn weight_values(name: &str, dims: &[usize], vocab: &HashMap<String, u32>) -> Vec<f32> {
    let count = dims.iter().product::<usize>();
    let identity = || {
        let mut values = vec![0.0; count];
        for index in 0..dims[0].min(dims[1]) {
            values[index * dims[1] + index] = 1.0;
        }
        values
    };
    if name.ends_with(".bias") {
        return vec![0.0; count];
    }
    if is_layer_norm_weight(name) {
        return vec![1.0; count];
    }
    if name.ends_with("v_proj.weight")
        || name.ends_with("out_proj.weight")
        || name.ends_with("projection.weight")
    {
        return identity();
    }
    if name == "text_model.embeddings.token_embedding.weight" {
        let mut values = vec![0.0; count];
        for (word, id) in vocab {
            if let Some(feature) = feature_of(word) {
                let row = *id as usize * HIDDEN;
                values[row + 2 * feature] = 1.0;
                values[row + 2 * feature + 1] = -1.0;
            }
        }
        return values;
    }
    if name == "vision_model.embeddings.patch_embedding.weight" {
        // dims: (HIDDEN, 3, PATCH, PATCH). Only the red channel is read.
        let mut values = vec![0.0; count];
        let channel_stride = PATCH * PATCH;
        let output_stride = 3 * channel_stride;
        for feature in 0..FEATURES.len() {
            let marker = feature + 1;
            for (output, sign) in [(2 * feature, 1.0), (2 * feature + 1, -1.0)] {
                values[output * output_stride] = sign;
                values[output * output_stride + marker] = -sign;
            }
        }
        return values;
    }
    // Query and key weights, the MLP, position and class embeddings.
    vec![0.0; count]
}

/// Paints `words` on a grey image, one word per patch in reading order, for
/// the model of [`write_handset_clip`]. Every word must have a feature, and
/// at least one and at most 36 words fit.
pub fn paint_words(words: &[&str]) -> Result<RgbImage, InvalidArgument> {
    let patches_per_row = IMAGE_SIZE as usize / PATCH;
    let max_words = patches_per_row * patches_per_row;
    if words.is_empty() || words.len() > max_words {
        return Err(InvalidArgument::new(
            "words",
            format!("{} words", words.len()),
            format!("from 1 to {max_words} words"),
        ));
    }
    let placed: Vec<(&str, usize, usize)> = words
        .iter()
        .enumerate()
        .map(|(patch, word)| (*word, patch % patches_per_row, patch / patches_per_row))
        .collect();
    paint_words_at(&placed)
}

/// Paints each word of `placed` (word, column, row) in its patch of the
/// 6 x 6 grid, for the model of [`write_handset_clip`]. So tests can place
/// objects: words in the left columns are seen only in the left part of the
/// image. Every word must have a feature and every patch must be in the grid.
pub fn paint_words_at(placed: &[(&str, usize, usize)]) -> Result<RgbImage, InvalidArgument> {
    let patches_per_row = IMAGE_SIZE as usize / PATCH;
    let mut image = RgbImage::from_pixel(IMAGE_SIZE, IMAGE_SIZE, Rgb([BACKGROUND; 3]));
    for (index, (word, column, row)) in placed.iter().enumerate() {
        let feature = feature_of(word).ok_or_else(|| {
            InvalidArgument::new(
                format!("words[{index}]"),
                *word,
                "a colour, a count up to four, a shape or a relation word",
            )
        })?;
        if *column >= patches_per_row || *row >= patches_per_row {
            return Err(InvalidArgument::new(
                format!("words[{index}]"),
                format!("patch ({column}, {row})"),
                format!("a column and a row below {patches_per_row}"),
            ));
        }
        let marker = feature + 1;
        let x = column * PATCH + marker % PATCH;
        let y = row * PATCH + marker / PATCH;
        image.put_pixel(x as u32, y as u32, Rgb([0, 0, 0]));
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::model::ClipScorer;

    #[test]
    fn cosines_count_shared_words() {
        let dir = tempfile::tempdir().unwrap();
        write_handset_clip(dir.path()).unwrap();
        let scorer = ClipScorer::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
        let image = paint_words(&["three", "red", "squares"]).unwrap();
        let texts = [
            "three red squares",
            "two red squares",
            "a blue circle",
            "three red squares above",
        ]
        .map(String::from);
        let cosines = scorer.cosines(&texts, &image).unwrap();
        // Shared features over the product of the norms: 3/3, 2/3, 0, and
        // 3/(sqrt(3) * 2) for a caption of four features, three of them shared.
        let expected = [1.0, 2.0 / 3.0, 0.0, 3.0 / (3f32.sqrt() * 2.0)];
        for (cosine, expected) in cosines.iter().zip(expected) {
            assert!((cosine - expected).abs() < 1e-3, "{cosines:?}");
        }
    }

    #[test]
    fn paint_rejects_unknown_words() {
        let error = paint_words(&["red", "zebra"]).unwrap_err();
        assert_eq!(error.field, "words[1]");
        assert_eq!(error.value, "zebra");
        assert_eq!(paint_words(&[]).unwrap_err().field, "words");
    }
}
