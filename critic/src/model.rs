//! CLIP model folders in the Hugging Face layout: config parsing, loading,
//! image preprocessing and text and image embeddings.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use candle_transformers::models::clip::{ClipConfig, ClipModel, div_l2_norm};
use image::RgbImage;
use image::imageops::FilterType;
use redraft_common::InvalidArgument;
use redraft_common::tokenizer::PromptTokenizer;
use serde::Deserialize;

use crate::error::CriticError;
use crate::vocabulary::Vocabulary;

/// Model configuration file of a CLIP folder.
pub const CONFIG_FILE: &str = "config.json";
/// Weights file of a CLIP folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Tokenizer file of a CLIP folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Per-channel RGB mean of OpenAI CLIP's image preprocessing (`_transform`
/// in `clip/clip.py` of github.com/openai/CLIP).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// Per-channel RGB standard deviation of OpenAI CLIP's image preprocessing.
#[expect(
    clippy::excessive_precision,
    reason = "the digits as OpenAI CLIP publishes them"
)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The only activation candle 0.11.1's CLIP module implements.
const QUICK_GELU: &str = "quick_gelu";

/// Weight that candle's `ClipModel::new` replaces with random values when the
/// file lacks it, so a folder without it would score differently on every load.
const CLASS_EMBEDDING: &str = "vision_model.embeddings.class_embedding";
/// Log of the factor CLIP multiplies cosine similarities by before a softmax.
const LOGIT_SCALE: &str = "logit_scale";

/// Top level of a Hugging Face `CLIPModel` config.json. The sub-configs are
/// parsed one at a time so that errors name `text_config` or `vision_config`.
#[derive(Deserialize)]
struct HfClipConfig {
    #[serde(default)]
    text_config: Option<serde_json::Value>,
    #[serde(default)]
    vision_config: Option<serde_json::Value>,
    /// Fields of older configs that transformers lays over `text_config`.
    #[serde(default)]
    text_config_dict: Option<serde_json::Value>,
    /// Fields of older configs that transformers lays over `vision_config`.
    #[serde(default)]
    vision_config_dict: Option<serde_json::Value>,
    /// Output size of both projections. `CLIPModel` uses this top-level value
    /// and ignores the sub-configs' `projection_dim`.
    projection_dim: usize,
    #[serde(default = "default_logit_scale_init_value")]
    logit_scale_init_value: f32,
}

/// The `text_config` fields candle's text transformer needs.
#[derive(Deserialize)]
struct HfTextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
}

/// The `vision_config` fields candle's vision transformer needs.
#[derive(Deserialize)]
struct HfVisionConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    image_size: usize,
    patch_size: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_num_channels")]
    num_channels: usize,
}

// Defaults of transformers' `CLIPConfig`, `CLIPTextConfig` and
// `CLIPVisionConfig`, applied when config.json leaves the field out.
fn default_logit_scale_init_value() -> f32 {
    2.6592
}

fn default_hidden_act() -> String {
    QUICK_GELU.to_string()
}

fn default_num_channels() -> usize {
    3
}

/// Parses the text of a Hugging Face CLIP `config.json` into candle's
/// `ClipConfig`. `path` names the file in error messages.
///
/// Fails with `ModelFolder` when a field is missing or malformed, and with
/// `UnsupportedConfig` for an activation other than `quick_gelu`, a channel
/// count other than 3, or sizes that do not divide.
pub fn parse_clip_config(json: &str, path: &Path) -> Result<ClipConfig, CriticError> {
    let malformed = |section: &str, error: serde_json::Error| {
        CriticError::folder(
            path,
            format!("invalid {}{section}: {error}", path.display()),
        )
    };
    let top: HfClipConfig = serde_json::from_str(json).map_err(|error| malformed("", error))?;
    let text_json = overlay(top.text_config, top.text_config_dict);
    let text: HfTextConfig =
        serde_json::from_value(text_json).map_err(|error| malformed(" text_config", error))?;
    let vision_json = overlay(top.vision_config, top.vision_config_dict);
    let vision: HfVisionConfig =
        serde_json::from_value(vision_json).map_err(|error| malformed(" vision_config", error))?;

    check_activation(path, "text_config.hidden_act", &text.hidden_act)?;
    check_activation(path, "vision_config.hidden_act", &vision.hidden_act)?;
    check_heads(
        path,
        "text_config",
        text.hidden_size,
        text.num_attention_heads,
    )?;
    check_heads(
        path,
        "vision_config",
        vision.hidden_size,
        vision.num_attention_heads,
    )?;
    if vision.num_channels != 3 {
        return Err(CriticError::unsupported(
            path,
            "vision_config.num_channels",
            vision.num_channels,
            "3, because the critic feeds RGB images",
        ));
    }
    if vision.patch_size == 0 || !vision.image_size.is_multiple_of(vision.patch_size) {
        return Err(CriticError::unsupported(
            path,
            "vision_config.patch_size",
            vision.patch_size,
            format!(
                "a divisor of vision_config.image_size ({})",
                vision.image_size
            ),
        ));
    }
    let positive = [
        ("text_config.vocab_size", text.vocab_size),
        ("text_config.intermediate_size", text.intermediate_size),
        (
            "text_config.max_position_embeddings",
            text.max_position_embeddings,
        ),
        ("vision_config.intermediate_size", vision.intermediate_size),
        ("projection_dim", top.projection_dim),
    ];
    if let Some((field, value)) = positive.into_iter().find(|(_, value)| *value == 0) {
        return Err(CriticError::unsupported(path, field, value, "at least 1"));
    }

    let text_config = ClipTextConfig {
        vocab_size: text.vocab_size,
        embed_dim: text.hidden_size,
        activation: Activation::QuickGelu,
        intermediate_size: text.intermediate_size,
        max_position_embeddings: text.max_position_embeddings,
        pad_with: None,
        num_hidden_layers: text.num_hidden_layers,
        num_attention_heads: text.num_attention_heads,
        projection_dim: top.projection_dim,
    };
    let vision_config = ClipVisionConfig {
        embed_dim: vision.hidden_size,
        activation: Activation::QuickGelu,
        intermediate_size: vision.intermediate_size,
        num_hidden_layers: vision.num_hidden_layers,
        num_attention_heads: vision.num_attention_heads,
        projection_dim: top.projection_dim,
        num_channels: vision.num_channels,
        image_size: vision.image_size,
        patch_size: vision.patch_size,
    };
    Ok(ClipConfig {
        text_config,
        vision_config,
        logit_scale_init_value: top.logit_scale_init_value,
        image_size: vision.image_size,
    })
}

/// Lays the fields of `overrides` over `base`, as transformers' `CLIPConfig`
/// does with `text_config_dict` and `vision_config_dict`. A missing or null
/// `base` counts as an empty object.
fn overlay(
    base: Option<serde_json::Value>,
    overrides: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut merged = match base {
        Some(serde_json::Value::Object(fields)) => fields,
        Some(serde_json::Value::Null) | None => serde_json::Map::new(),
        Some(other) => return other,
    };
    if let Some(serde_json::Value::Object(fields)) = overrides {
        merged.extend(fields);
    }
    serde_json::Value::Object(merged)
}

fn check_activation(path: &Path, field: &str, value: &str) -> Result<(), CriticError> {
    if value == QUICK_GELU {
        return Ok(());
    }
    Err(CriticError::unsupported(
        path,
        field,
        value,
        "quick_gelu, the only activation of candle's CLIP module",
    ))
}

fn check_heads(path: &Path, section: &str, hidden: usize, heads: usize) -> Result<(), CriticError> {
    if hidden > 0 && heads > 0 && hidden.is_multiple_of(heads) {
        return Ok(());
    }
    Err(CriticError::unsupported(
        path,
        format!("{section}.num_attention_heads"),
        heads,
        format!("a divisor of {section}.hidden_size ({hidden})"),
    ))
}

/// A CLIP model with its tokenizer, loaded from a Hugging Face CLIP folder
/// (`config.json`, `model.safetensors`, `tokenizer.json`).
pub struct ClipScorer {
    model: ClipModel,
    tokenizer: PromptTokenizer,
    vocabulary: Vocabulary,
    config: ClipConfig,
    logit_scale: f32,
    model_id: String,
    device: Device,
    dtype: DType,
}

impl ClipScorer {
    /// Loads the CLIP folder `dir` onto `device` with weights in `dtype`.
    ///
    /// Errors name the missing or malformed file. The weights must contain
    /// `vision_model.embeddings.class_embedding`, because candle would
    /// otherwise draw it at random and every load would score differently.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, CriticError> {
        let config_path = required_file(dir, CONFIG_FILE)?;
        let weights_path = required_file(dir, WEIGHTS_FILE)?;
        let tokenizer_path = required_file(dir, TOKENIZER_FILE)?;

        let config_text = std::fs::read_to_string(&config_path).map_err(|error| {
            CriticError::folder(
                &config_path,
                format!("failed to read {}: {error}", config_path.display()),
            )
        })?;
        let config = parse_clip_config(&config_text, &config_path)?;
        let tokenizer = PromptTokenizer::from_file(
            &tokenizer_path,
            config.text_config.max_position_embeddings,
        )?;
        let vocabulary = Vocabulary::from_file(&tokenizer_path)?;

        let weights_error = |error: candle_core::Error| {
            CriticError::folder(
                &weights_path,
                format!(
                    "{} does not fit {CONFIG_FILE}: {error}",
                    weights_path.display()
                ),
            )
        };
        // SAFETY: memmap2 requires that the file does not change while it is
        // mapped. The map lives only in `vb`, which is dropped when `load`
        // returns, after the weights were copied into tensors, and the critic
        // never writes to its model folder.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights_path], dtype, device) }
            .map_err(weights_error)?;
        if !vb.contains_tensor(CLASS_EMBEDDING) {
            return Err(CriticError::folder(
                &weights_path,
                format!("{} has no tensor {CLASS_EMBEDDING}", weights_path.display()),
            ));
        }
        let model = ClipModel::new(vb.clone(), &config).map_err(weights_error)?;
        let logit_scale =
            read_logit_scale(&vb, config.logit_scale_init_value).map_err(weights_error)?;

        Ok(Self {
            model,
            tokenizer,
            vocabulary,
            config,
            logit_scale,
            model_id: folder_name(dir),
            device: device.clone(),
            dtype,
        })
    }

    /// Returns the side length in pixels of the square input of the vision model.
    pub fn image_size(&self) -> usize {
        self.config.image_size
    }

    /// Returns the model identifier: the name of the folder it was loaded from.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Returns the data type of the weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Returns the factor CLIP multiplies cosine similarities by before a
    /// softmax over captions: `exp(logit_scale)`. Training usually clamps it at 100
    /// (open_clip's training loop clamps `logit_scale` at ln(100)).
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// Returns the vocabulary of the model's tokenizer.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    /// Embeds `texts` into an L2-normalised F32 tensor of shape (n, d).
    pub fn text_embeddings(&self, texts: &[String]) -> Result<Tensor, CriticError> {
        if texts.is_empty() {
            return self.empty_embeddings();
        }
        let mut rows = Vec::with_capacity(texts.len());
        for text in texts {
            rows.push(self.tokenizer.encode(text)?);
        }
        let length = pooled_length(&rows);
        let ids: Vec<u32> = rows
            .iter()
            .flat_map(|row| row[..length].iter().copied())
            .collect();
        let ids = Tensor::from_vec(ids, (texts.len(), length), &self.device)?;
        let features = self.model.get_text_features(&ids)?.to_dtype(DType::F32)?;
        Ok(div_l2_norm(&features)?)
    }

    /// Embeds `images` in one batch into an L2-normalised F32 tensor of shape (n, d).
    pub fn image_embeddings(&self, images: &[RgbImage]) -> Result<Tensor, CriticError> {
        if images.is_empty() {
            return self.empty_embeddings();
        }
        let size = self.image_size();
        let mut pixels = Vec::with_capacity(images.len() * 3 * size * size);
        for (index, image) in images.iter().enumerate() {
            if image.width() == 0 || image.height() == 0 {
                return Err(InvalidArgument::new(
                    format!("images[{index}]"),
                    format!("an image of {}x{}", image.width(), image.height()),
                    "at least 1x1 pixels",
                )
                .into());
            }
            pixels.extend(preprocess(image, size));
        }
        let pixels = Tensor::from_vec(pixels, (images.len(), 3, size, size), &self.device)?
            .to_dtype(self.dtype)?;
        let features = self
            .model
            .get_image_features(&pixels)?
            .to_dtype(DType::F32)?;
        Ok(div_l2_norm(&features)?)
    }

    /// Computes the cosine similarity of the embeddings of `prompt` and `image`, in [-1, 1].
    pub fn cosine(&self, prompt: &str, image: &RgbImage) -> Result<f32, CriticError> {
        let cosines = self.cosines(&[prompt.to_string()], image)?;
        Ok(cosines[0])
    }

    /// Computes the cosine similarity of `image` with each of `texts`, in the
    /// order of `texts`, embedding the image once.
    pub fn cosines(&self, texts: &[String], image: &RgbImage) -> Result<Vec<f32>, CriticError> {
        let text = self.text_embeddings(texts)?;
        let image = self.image_embeddings(std::slice::from_ref(image))?;
        Ok(text.matmul(&image.t()?)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Computes the cosine similarity of each row of `text_embeddings` (n, d)
    /// with each image of `images`, embedding the images as one batch.
    /// Returns one row per image with n values each.
    pub fn cosine_rows(
        &self,
        text_embeddings: &Tensor,
        images: &[RgbImage],
    ) -> Result<Vec<Vec<f32>>, CriticError> {
        let images = self.image_embeddings(images)?;
        Ok(images.matmul(&text_embeddings.t()?)?.to_vec2::<f32>()?)
    }

    fn empty_embeddings(&self) -> Result<Tensor, CriticError> {
        let dim = self.config.text_config.projection_dim;
        Ok(Tensor::zeros((0, dim), DType::F32, &self.device)?)
    }
}

/// Returns how many leading token ids of each of `rows` the text model
/// needs: up to the last row's pooled position, the position of its largest
/// id (the end-of-text token), where CLIP pools.
///
/// The causal mask keeps later positions out of that hidden state, so
/// leaving them out changes no embedding, and a caption of 10 tokens costs
/// about a seventh of the full 77 positions of OpenAI CLIP. When a row's
/// largest id repeats within the kept length, as when the padding is the
/// end-of-text token itself, the pooled position could move, so the rows
/// keep their full length.
fn pooled_length(rows: &[Vec<u32>]) -> usize {
    let full = rows.first().map_or(0, Vec::len);
    let pooled: Vec<usize> = rows
        .iter()
        .map(|row| {
            let max = row.iter().copied().max().unwrap_or(0);
            row.iter().position(|id| *id == max).unwrap_or(0)
        })
        .collect();
    let length = pooled
        .iter()
        .map(|position| position + 1)
        .max()
        .unwrap_or(full);
    let unique = rows.iter().all(|row| {
        let max = row.iter().copied().max().unwrap_or(0);
        row[..length].iter().filter(|id| **id == max).count() == 1
    });
    if unique { length } else { full }
}

/// Resizes `image` to `size` x `size` and returns its pixels in
/// channel-major order, normalised with CLIP's mean and standard deviation.
///
/// NOTE: OpenAI's preprocessing resizes the short side and crops the centre.
/// Here the whole image is resized, so square images (the generator's
/// default) match it and other shapes are stretched rather than cropped.
fn preprocess(image: &RgbImage, size: usize) -> Vec<f32> {
    let side = size as u32;
    let resized;
    let image = if image.dimensions() == (side, side) {
        image
    } else {
        resized = image::imageops::resize(image, side, side, FilterType::CatmullRom);
        &resized
    };
    let mut pixels = Vec::with_capacity(3 * size * size);
    for channel in 0..3 {
        let (mean, std) = (CLIP_MEAN[channel], CLIP_STD[channel]);
        pixels.extend(
            image
                .pixels()
                .map(|pixel| (f32::from(pixel.0[channel]) / 255.0 - mean) / std),
        );
    }
    pixels
}

/// Reads `exp(logit_scale)` from the weights, or from the config's initial
/// value when the file has no `logit_scale`, as candle's `ClipModel` does.
fn read_logit_scale(vb: &VarBuilder, init_value: f32) -> candle_core::Result<f32> {
    if !vb.contains_tensor(LOGIT_SCALE) {
        return Ok(init_value.exp());
    }
    let values = vb
        .get_unchecked(LOGIT_SCALE)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    match values.as_slice() {
        [value] => Ok(value.exp()),
        _ => candle_core::bail!("{LOGIT_SCALE} has {} values, expected 1", values.len()),
    }
}

fn required_file(dir: &Path, name: &str) -> Result<PathBuf, CriticError> {
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    Err(CriticError::folder(
        &path,
        format!("model folder {} is missing {name}", dir.display()),
    ))
}

fn folder_name(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canonical
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| canonical.display().to_string())
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;
    use crate::configs::{VIT_B_32, VIT_L_14};
    use crate::tiny::write_tiny_clip;

    fn tiny_folder(seed: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_clip(dir.path(), seed, &[]).unwrap();
        dir
    }

    fn load(dir: &Path) -> ClipScorer {
        ClipScorer::load(dir, &Device::Cpu, DType::F32).unwrap()
    }

    fn drawing(colour: [u8; 3]) -> RgbImage {
        RgbImage::from_fn(48, 48, |x, y| {
            if (x as i32 - 24).pow(2) + (y as i32 - 24).pow(2) < 144 {
                Rgb(colour)
            } else {
                Rgb([255, 255, 255])
            }
        })
    }

    #[test]
    fn vit_b_32_config_parses() {
        let config = parse_clip_config(VIT_B_32, Path::new("config.json")).unwrap();
        let text = &config.text_config;
        assert_eq!(text.vocab_size, 49408);
        assert_eq!(text.embed_dim, 512);
        assert_eq!(text.intermediate_size, 2048);
        assert_eq!(text.max_position_embeddings, 77);
        assert_eq!(text.num_hidden_layers, 12);
        assert_eq!(text.num_attention_heads, 8);
        assert_eq!(text.projection_dim, 512);
        let vision = &config.vision_config;
        assert_eq!(vision.embed_dim, 768);
        assert_eq!(vision.intermediate_size, 3072);
        assert_eq!(vision.num_hidden_layers, 12);
        assert_eq!(vision.num_attention_heads, 12);
        assert_eq!(vision.projection_dim, 512);
        assert_eq!(vision.num_channels, 3);
        assert_eq!((vision.image_size, vision.patch_size), (224, 32));
        assert_eq!(config.image_size, 224);
        assert_eq!(config.logit_scale_init_value, 2.6592);
    }

    #[test]
    fn vit_l_14_config_parses() {
        let config = parse_clip_config(VIT_L_14, Path::new("config.json")).unwrap();
        assert_eq!(config.text_config.embed_dim, 768);
        assert_eq!(config.text_config.num_attention_heads, 12);
        assert_eq!(config.text_config.projection_dim, 768);
        let vision = &config.vision_config;
        assert_eq!(vision.embed_dim, 1024);
        assert_eq!(vision.intermediate_size, 4096);
        assert_eq!(vision.num_hidden_layers, 24);
        assert_eq!(vision.num_attention_heads, 16);
        assert_eq!((vision.image_size, vision.patch_size), (224, 14));
        assert_eq!(vision.projection_dim, 768);
    }

    #[test]
    fn config_dict_overrides_sub_config() {
        let mut json: serde_json::Value = serde_json::from_str(VIT_L_14).unwrap();
        json["text_config"]["hidden_size"] = 512.into();
        json["text_config_dict"] = serde_json::json!({"hidden_size": 768});
        json["vision_config_dict"] = serde_json::Value::Null;
        let config = parse_clip_config(&json.to_string(), Path::new("config.json")).unwrap();
        assert_eq!(config.text_config.embed_dim, 768);
        assert_eq!(config.vision_config.embed_dim, 1024);
    }

    #[test]
    fn missing_sub_config_named() {
        let mut json: serde_json::Value = serde_json::from_str(VIT_L_14).unwrap();
        json.as_object_mut().unwrap().remove("text_config");
        let error = parse_clip_config(&json.to_string(), Path::new("config.json")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("config.json text_config: missing field"),
            "{error}"
        );
    }

    #[test]
    fn gelu_activation_unsupported() {
        for section in ["text_config", "vision_config"] {
            let mut json: serde_json::Value = serde_json::from_str(VIT_B_32).unwrap();
            json[section]["hidden_act"] = "gelu".into();
            let error =
                parse_clip_config(&json.to_string(), Path::new("/m/config.json")).unwrap_err();
            match &error {
                CriticError::UnsupportedConfig {
                    path, field, value, ..
                } => {
                    assert_eq!(path, "/m/config.json");
                    assert_eq!(field, &format!("{section}.hidden_act"));
                    assert_eq!(value, "gelu");
                }
                other => panic!("expected UnsupportedConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_field_names_section() {
        let mut json: serde_json::Value = serde_json::from_str(VIT_B_32).unwrap();
        json["vision_config"]
            .as_object_mut()
            .unwrap()
            .remove("patch_size");
        let error = parse_clip_config(&json.to_string(), Path::new("/m/config.json")).unwrap_err();
        let message = error.to_string();
        assert_eq!(error.error_type(), "model_folder");
        assert!(
            message.contains("/m/config.json vision_config"),
            "{message}"
        );
        assert!(message.contains("patch_size"), "{message}");
    }

    #[test]
    fn indivisible_sizes_unsupported() {
        let mut json: serde_json::Value = serde_json::from_str(VIT_B_32).unwrap();
        json["vision_config"]["patch_size"] = 30.into();
        let error = parse_clip_config(&json.to_string(), Path::new("config.json")).unwrap_err();
        assert!(
            error.to_string().contains("vision_config.patch_size = 30"),
            "{error}"
        );

        let mut json: serde_json::Value = serde_json::from_str(VIT_B_32).unwrap();
        json["text_config"]["num_attention_heads"] = 7.into();
        let error = parse_clip_config(&json.to_string(), Path::new("config.json")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("text_config.num_attention_heads = 7"),
            "{error}"
        );
    }

    #[test]
    fn missing_files_named() {
        for file in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE] {
            let dir = tiny_folder(1);
            std::fs::remove_file(dir.path().join(file)).unwrap();
            let error = ClipScorer::load(dir.path(), &Device::Cpu, DType::F32)
                .err()
                .unwrap();
            let expected = format!("model folder {} is missing {file}", dir.path().display());
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn missing_class_embedding_rejected() {
        let dir = tiny_folder(1);
        let weights = dir.path().join(WEIGHTS_FILE);
        let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
        tensors.remove(CLASS_EMBEDDING).unwrap();
        candle_core::safetensors::save(&tensors, &weights).unwrap();
        let error = ClipScorer::load(dir.path(), &Device::Cpu, DType::F32)
            .err()
            .unwrap();
        assert!(error.to_string().contains(CLASS_EMBEDDING), "{error}");
    }

    #[test]
    fn tiny_folder_loads() {
        let dir = tiny_folder(7);
        let scorer = load(dir.path());
        assert_eq!(scorer.image_size(), 32);
        let expected_id = dir.path().file_name().unwrap().to_string_lossy();
        assert_eq!(scorer.model_id(), expected_id);
        // The file's logit_scale is ln(100), while config.json's initial value would give 14.3.
        assert!(
            (scorer.logit_scale() - 100.0).abs() < 1e-3,
            "{}",
            scorer.logit_scale()
        );
    }

    #[test]
    fn reload_scores_identically() {
        let dir = tiny_folder(7);
        let image = drawing([255, 0, 0]);
        let first = load(dir.path()).cosine("a red circle", &image).unwrap();
        let second = load(dir.path()).cosine("a red circle", &image).unwrap();
        assert_eq!(first.to_bits(), second.to_bits());

        let copy = tempfile::tempdir().unwrap();
        for file in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE] {
            std::fs::copy(dir.path().join(file), copy.path().join(file)).unwrap();
        }
        let copied = load(copy.path()).cosine("a red circle", &image).unwrap();
        assert_eq!(first.to_bits(), copied.to_bits());
    }

    #[test]
    fn seed_changes_scores() {
        let image = drawing([0, 0, 255]);
        let first = load(tiny_folder(1).path())
            .cosine("a blue circle", &image)
            .unwrap();
        let second = load(tiny_folder(2).path())
            .cosine("a blue circle", &image)
            .unwrap();
        assert_ne!(first, second);
        assert!((-1.0..=1.0).contains(&first), "{first}");
    }

    #[test]
    fn embeddings_normalised() {
        let scorer = load(tiny_folder(3).path());
        let texts = ["a red circle".to_string(), "two blue squares".to_string()];
        let text = scorer.text_embeddings(&texts).unwrap();
        assert_eq!(text.dims(), &[2, 32]);
        let images = [
            drawing([255, 0, 0]),
            drawing([0, 255, 0]),
            drawing([0, 0, 255]),
        ];
        let image = scorer.image_embeddings(&images).unwrap();
        assert_eq!(image.dims(), &[3, 32]);
        for embeddings in [&text, &image] {
            let norms = embeddings
                .sqr()
                .unwrap()
                .sum(1)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for norm in norms {
                assert!((norm - 1.0).abs() < 1e-5, "squared norm {norm}");
            }
        }
        assert_eq!(scorer.text_embeddings(&[]).unwrap().dims(), &[0, 32]);
        assert_eq!(scorer.image_embeddings(&[]).unwrap().dims(), &[0, 32]);
    }

    #[test]
    fn batch_matches_single() {
        let scorer = load(tiny_folder(4).path());
        let images = [drawing([255, 0, 0]), drawing([0, 0, 255])];
        let batch = scorer
            .image_embeddings(&images)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (index, image) in images.iter().enumerate() {
            let single = scorer
                .image_embeddings(std::slice::from_ref(image))
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (a, b) in batch[index].iter().zip(&single[0]) {
                assert!((a - b).abs() < 1e-5, "image {index}: batch {a}, single {b}");
            }
        }
        let texts = ["a red circle".to_string(), "a blue circle".to_string()];
        let cosines = scorer.cosines(&texts, &images[0]).unwrap();
        let single = scorer.cosine("a blue circle", &images[0]).unwrap();
        assert!(
            (cosines[1] - single).abs() < 1e-5,
            "{} vs {single}",
            cosines[1]
        );
    }

    #[test]
    fn short_rows_keep_embeddings() {
        let scorer = load(tiny_folder(6).path());
        let short = "a red circle".to_string();
        let long = "a photo of two red circles left of three blue squares".to_string();
        let alone = scorer
            .text_embeddings(std::slice::from_ref(&short))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let together = scorer
            .text_embeddings(&[short, long])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (a, b) in alone[0].iter().zip(&together[0]) {
            assert!((a - b).abs() < 1e-5, "alone {a}, in a batch {b}");
        }
    }

    #[test]
    fn pooled_length_of_rows() {
        // Word-level rows: bos 2, words, eos 9, padding 0.
        assert_eq!(
            pooled_length(&[vec![2, 3, 9, 0, 0], vec![2, 3, 4, 9, 0]]),
            4
        );
        // Padding with the end-of-text token keeps the full length.
        assert_eq!(
            pooled_length(&[vec![2, 3, 9, 9, 9], vec![2, 3, 4, 9, 9]]),
            5
        );
        assert_eq!(pooled_length(&[]), 0);
    }

    #[test]
    fn empty_image_rejected() {
        let scorer = load(tiny_folder(5).path());
        let error = scorer
            .cosine("a red circle", &RgbImage::new(0, 4))
            .unwrap_err();
        assert_eq!(error.error_type(), "invalid_argument");
        assert!(error.to_string().contains("images[0]"), "{error}");
    }

    #[test]
    fn preprocess_normalises_white() {
        let pixels = preprocess(&RgbImage::from_pixel(8, 8, Rgb([255, 255, 255])), 4);
        assert_eq!(pixels.len(), 3 * 4 * 4);
        for channel in 0..3 {
            let expected = (1.0 - CLIP_MEAN[channel]) / CLIP_STD[channel];
            assert!((pixels[channel * 16] - expected).abs() < 1e-5);
        }
    }

    #[test]
    fn scorer_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<ClipScorer>();
    }
}
