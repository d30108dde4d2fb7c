//! Reading a model folder in the diffusers layout: which files must exist and
//! how each json config maps onto candle's model configs.
//!
//! ```text
//! model_index.json
//! text_encoder/config.json, text_encoder/model.safetensors
//! tokenizer/tokenizer.json
//! unet/config.json, unet/diffusion_pytorch_model.safetensors
//! vae/config.json, vae/diffusion_pytorch_model.safetensors
//! scheduler/scheduler_config.json
//! redraft_generator.json (optional defaults)
//! ```
//!
//! SDXL and SDXL-Turbo folders also contain a second text encoder and its
//! tokenizer, and their UNet config has `addition_embed_type: "text_time"`:
//!
//! ```text
//! text_encoder_2/config.json, text_encoder_2/model.safetensors
//! tokenizer_2/tokenizer.json
//! ```

use std::path::{Path, PathBuf};

use candle_transformers::models::stable_diffusion::{unet_2d, vae};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::GeneratorError;
use crate::scheduler::SchedulerSpec;
use crate::unet::{TIME_IDS, TextTimeConfig};

/// Files a model folder must contain, relative to its root.
pub const REQUIRED_FILES: [&str; 9] = [
    "model_index.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
];

/// Files an SDXL folder contains besides [`REQUIRED_FILES`].
pub const SDXL_REQUIRED_FILES: [&str; 3] = [
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer_2/tokenizer.json",
];

/// True when `file` is a tokenizer's `tokenizer.json` that is absent but has
/// `vocab.json` and `merges.txt` beside it, as diffusers folders ship CLIP's
/// tokenizer; the text encoder builds the tokenizer from those.
fn has_bpe_files(root: &Path, file: &str) -> bool {
    let Some(dir) = file.strip_suffix("/tokenizer.json") else {
        return false;
    };
    let dir = root.join(dir);
    dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file()
}

fn missing_message(file: &str) -> String {
    match file.strip_suffix("/tokenizer.json") {
        Some(dir) => format!("missing {file} (or {dir}/vocab.json with {dir}/merges.txt)"),
        None => format!("missing {file}"),
    }
}

/// The architecture family of a model folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// Stable Diffusion 1.x: one QuickGELU CLIP text encoder, conditioning
    /// on its last hidden state.
    Sd1,
    /// Stable Diffusion 2.x and SD-Turbo: one GELU (OpenCLIP) text encoder.
    Sd2,
    /// SDXL and SDXL-Turbo: two text encoders whose penultimate hidden
    /// states are concatenated, plus the second one's pooled output and the
    /// image size as an added UNet embedding.
    Sdxl,
}

impl ModelFamily {
    /// Name reported in `GeneratorInfo.family`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sd1 => "sd1",
            Self::Sd2 => "sd2",
            Self::Sdxl => "sdxl",
        }
    }
}

/// Optional file with redraft's defaults for a model folder.
pub const DEFAULTS_FILE: &str = "redraft_generator.json";

/// A checked model folder with its parsed configs.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    /// Root of the folder.
    pub root: PathBuf,
    /// Architecture family, read from the configs.
    pub family: ModelFamily,
    /// Text encoder architecture.
    pub text_encoder: TextEncoderConfig,
    /// Second text encoder architecture (SDXL only).
    pub text_encoder_2: Option<TextEncoderConfig>,
    /// Whether an empty negative prompt is encoded as zeros rather than as
    /// the empty string (`model_index.json` `force_zeros_for_empty_prompt`).
    /// diffusers' SDXL pipelines default it to true, and the SD 1.x and 2.x
    /// pipelines have no such option, so it is false for them.
    pub force_zeros_for_empty_prompt: bool,
    /// UNet architecture, in candle's terms.
    pub unet: unet_2d::UNet2DConditionModelConfig,
    /// SDXL's added embedding of pooled text and image size, when the UNet
    /// config has `addition_embed_type: "text_time"`.
    pub unet_text_time: Option<TextTimeConfig>,
    /// Latent channels the UNet reads and writes.
    pub unet_channels: (usize, usize),
    /// Latent side length the UNet was trained on.
    pub unet_sample_size: usize,
    /// VAE architecture, in candle's terms.
    pub vae: vae::AutoEncoderKLConfig,
    /// Factor that scales latents to unit variance (`vae/config.json` `scaling_factor`).
    pub vae_scaling_factor: f64,
    /// Scheduler settings from `scheduler/scheduler_config.json`.
    pub scheduler: SchedulerSpec,
    /// Defaults from `redraft_generator.json`, or the built-in ones.
    pub defaults: GeneratorDefaults,
}

/// The text encoder's `config.json` fields that candle needs (Hugging Face `CLIPTextConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct TextEncoderConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Maximum token sequence length, and the length prompts are padded to.
    pub max_position_embeddings: usize,
    /// `quick_gelu` (v1.x, tiny models) or `gelu` (v2.x).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Size of the pooled projection.
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// Epsilon of every layer norm.
    #[serde(default = "norm_eps")]
    pub layer_norm_eps: f64,
}

fn default_hidden_act() -> String {
    "quick_gelu".to_string()
}

/// Defaults redraft uses for a model when a request leaves a field unset.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct GeneratorDefaults {
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub guidance_scale: f64,
}

impl Default for GeneratorDefaults {
    // diffusers' StableDiffusionPipeline uses 50 steps and guidance 7.5; DDIM
    // gives usable images in fewer steps, so 30 is chosen here.
    // NOTE: Turbo folders from the hub have no redraft_generator.json, so they
    // get these defaults too, although they are meant to run one step without
    // guidance. Add the file or set steps and guidance in each request.
    fn default() -> Self {
        Self {
            steps: 30,
            guidance_scale: 7.5,
        }
    }
}

/// `unet/config.json` fields (diffusers `UNet2DConditionModel`).
#[derive(Debug, Deserialize)]
struct UnetJson {
    #[serde(default = "four")]
    in_channels: usize,
    #[serde(default = "four")]
    out_channels: usize,
    #[serde(default)]
    sample_size: Option<usize>,
    block_out_channels: Vec<usize>,
    down_block_types: Vec<String>,
    up_block_types: Vec<String>,
    #[serde(default = "two")]
    layers_per_block: usize,
    #[serde(default)]
    attention_head_dim: Option<PerBlock>,
    #[serde(default)]
    num_attention_heads: Option<PerBlock>,
    cross_attention_dim: usize,
    #[serde(default = "thirty_two")]
    norm_num_groups: usize,
    #[serde(default = "norm_eps")]
    norm_eps: f64,
    #[serde(default)]
    center_input_sample: bool,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    #[serde(default = "one")]
    downsample_padding: usize,
    #[serde(default = "one_f64")]
    mid_block_scale_factor: f64,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default)]
    transformer_layers_per_block: Option<PerBlock>,
    #[serde(default)]
    addition_embed_type: Option<String>,
    #[serde(default)]
    addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    class_embed_type: Option<String>,
    #[serde(default)]
    time_cond_proj_dim: Option<usize>,
}

/// The `model_index.json` fields redraft reads.
#[derive(Debug, Deserialize)]
struct ModelIndexJson {
    #[serde(default)]
    force_zeros_for_empty_prompt: Option<bool>,
}

/// A value given once for all blocks or once per block.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    fn get(&self, index: usize) -> Option<usize> {
        match self {
            Self::One(value) => Some(*value),
            Self::Each(values) => values.get(index).copied(),
        }
    }
}

/// `vae/config.json` fields (diffusers `AutoencoderKL`).
#[derive(Debug, Deserialize)]
struct VaeJson {
    #[serde(default = "three")]
    in_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    layers_per_block: usize,
    #[serde(default = "four")]
    latent_channels: usize,
    #[serde(default = "thirty_two")]
    norm_num_groups: usize,
    #[serde(default = "scaling_factor")]
    scaling_factor: f64,
    #[serde(default = "yes")]
    use_quant_conv: bool,
    #[serde(default = "yes")]
    use_post_quant_conv: bool,
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn yes() -> bool {
    true
}
fn one_f64() -> f64 {
    1.0
}
// diffusers' UNet2DConditionModel and transformers' CLIPTextConfig default.
fn norm_eps() -> f64 {
    1e-5
}
// SD 1.x and 2.x VAE `scaling_factor` (diffusers AutoencoderKL default).
fn scaling_factor() -> f64 {
    0.18215
}

impl ModelFolder {
    /// Checks that every required file exists and parses every config.
    pub fn open(root: &Path) -> Result<Self, GeneratorError> {
        if !root.is_dir() {
            return Err(GeneratorError::folder(
                root,
                "not found or not a directory; pass a folder in the diffusers layout",
            ));
        }
        for file in REQUIRED_FILES {
            if !root.join(file).is_file() && !has_bpe_files(root, file) {
                return Err(GeneratorError::folder(root, missing_message(file)));
            }
        }
        let folder = Self::parse_configs(root)?;
        if folder.family == ModelFamily::Sdxl {
            for file in SDXL_REQUIRED_FILES {
                if !root.join(file).is_file() && !has_bpe_files(root, file) {
                    return Err(GeneratorError::folder(
                        root,
                        format!(
                            "{}, which an SDXL folder (unet/config.json addition_embed_type \"text_time\") needs",
                            missing_message(file)
                        ),
                    ));
                }
            }
        }
        Ok(folder)
    }

    /// Parses every json config without checking that the weights exist.
    pub(crate) fn parse_configs(root: &Path) -> Result<Self, GeneratorError> {
        let model_index: ModelIndexJson = read_json(root, "model_index.json")?;
        let text_encoder: TextEncoderConfig = read_json(root, "text_encoder/config.json")?;
        let unet_json: UnetJson = read_json(root, "unet/config.json")?;
        let vae_json: VaeJson = read_json(root, "vae/config.json")?;
        let scheduler = SchedulerSpec::from_file(root, "scheduler/scheduler_config.json")?;
        let defaults = if root.join(DEFAULTS_FILE).is_file() {
            read_json(root, DEFAULTS_FILE)?
        } else {
            GeneratorDefaults::default()
        };

        check_text_encoder("text_encoder/config.json", &text_encoder)?;
        let unet = unet_config(&unet_json)?;
        let unet_text_time = text_time_config(&unet_json)?;
        let text_encoder_2 = match unet_text_time {
            Some(text_time) => Some(second_text_encoder(
                root,
                &text_encoder,
                &unet_json,
                text_time,
            )?),
            None => {
                check_cross_attention_dim(
                    &unet_json,
                    text_encoder.hidden_size,
                    "text_encoder/config.json hidden_size",
                )?;
                None
            }
        };
        let family = if text_encoder_2.is_some() {
            ModelFamily::Sdxl
        } else if text_encoder.hidden_act == "gelu" {
            ModelFamily::Sd2
        } else {
            ModelFamily::Sd1
        };
        let force_zeros_for_empty_prompt =
            family == ModelFamily::Sdxl && model_index.force_zeros_for_empty_prompt.unwrap_or(true);
        let vae = vae_config(&vae_json)?;
        if vae_json.latent_channels != unet_json.in_channels {
            return Err(unsupported(
                "vae/config.json",
                "latent_channels",
                vae_json.latent_channels,
                format!(
                    "equal to unet/config.json in_channels ({})",
                    unet_json.in_channels
                ),
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
            family,
            text_encoder,
            text_encoder_2,
            force_zeros_for_empty_prompt,
            unet,
            unet_text_time,
            unet_channels: (unet_json.in_channels, unet_json.out_channels),
            unet_sample_size: unet_json.sample_size.unwrap_or(64),
            vae_scaling_factor: vae_json.scaling_factor,
            vae,
            scheduler,
            defaults,
        })
    }

    /// Ratio of image side to latent side: 2 to the number of VAE down blocks minus one.
    pub fn vae_scale_factor(&self) -> usize {
        1 << (self.vae.block_out_channels.len() - 1)
    }

    /// Default image side in pixels: the UNet's sample size times the VAE factor.
    pub fn default_side(&self) -> usize {
        self.unet_sample_size * self.vae_scale_factor()
    }

    /// Image sides must be a multiple of this: the VAE factor times the UNet's
    /// total down-sampling, so every UNet level gets whole latents.
    pub fn side_multiple(&self) -> usize {
        self.vae_scale_factor() * (1 << (self.unet.blocks.len() - 1))
    }

    /// Name of the model: the folder's last path component.
    pub fn model_id(&self) -> String {
        self.root
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.root.display().to_string())
    }

    /// Path of a file inside the folder.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

/// Reads and parses one json file of the folder; errors name the file.
pub(crate) fn read_json<T: DeserializeOwned>(root: &Path, file: &str) -> Result<T, GeneratorError> {
    let text = std::fs::read_to_string(root.join(file))
        .map_err(|error| GeneratorError::folder(root, format!("failed to read {file}: {error}")))?;
    serde_json::from_str(&text)
        .map_err(|error| GeneratorError::folder(root, format!("invalid {file}: {error}")))
}

pub(crate) fn unsupported(
    file: &str,
    field: &str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> GeneratorError {
    GeneratorError::UnsupportedConfig {
        file: file.to_string(),
        field: field.to_string(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn check_text_encoder(file: &str, config: &TextEncoderConfig) -> Result<(), GeneratorError> {
    if !matches!(config.hidden_act.as_str(), "quick_gelu" | "gelu") {
        return Err(unsupported(
            file,
            "hidden_act",
            &config.hidden_act,
            "quick_gelu or gelu",
        ));
    }
    if config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Err(unsupported(
            file,
            "num_attention_heads",
            config.num_attention_heads,
            format!("a divisor of hidden_size ({})", config.hidden_size),
        ));
    }
    if config.num_hidden_layers == 0 {
        return Err(unsupported(file, "num_hidden_layers", 0, "at least 1"));
    }
    if config.max_position_embeddings < 3 {
        return Err(unsupported(
            file,
            "max_position_embeddings",
            config.max_position_embeddings,
            "at least 3 (start, one word, end)",
        ));
    }
    Ok(())
}

fn unet_config(json: &UnetJson) -> Result<unet_2d::UNet2DConditionModelConfig, GeneratorError> {
    const FILE: &str = "unet/config.json";
    let blocks = json.block_out_channels.len();
    if blocks == 0 {
        return Err(unsupported(
            FILE,
            "block_out_channels",
            "[]",
            "at least one block",
        ));
    }
    if json.down_block_types.len() != blocks || json.up_block_types.len() != blocks {
        return Err(unsupported(
            FILE,
            "down_block_types/up_block_types",
            format!(
                "{} and {} entries",
                json.down_block_types.len(),
                json.up_block_types.len()
            ),
            format!("{blocks} entries each, one per block_out_channels entry"),
        ));
    }
    if let Some(kind) = &json.class_embed_type {
        return Err(unsupported(
            FILE,
            "class_embed_type",
            kind,
            "null, because class-conditioned UNets are not supported",
        ));
    }
    if let Some(dim) = json.time_cond_proj_dim {
        return Err(unsupported(
            FILE,
            "time_cond_proj_dim",
            dim,
            "null, because guidance-distilled (LCM) UNets are not supported",
        ));
    }
    if json.in_channels != json.out_channels {
        return Err(unsupported(
            FILE,
            "in_channels",
            json.in_channels,
            format!(
                "equal to out_channels ({}); inpainting UNets are not supported",
                json.out_channels
            ),
        ));
    }

    let heads = json
        .num_attention_heads
        .as_ref()
        .or(json.attention_head_dim.as_ref())
        .cloned()
        .unwrap_or(PerBlock::One(8));
    let mut configs = Vec::with_capacity(blocks);
    for (index, down) in json.down_block_types.iter().enumerate() {
        let cross = match down.as_str() {
            "CrossAttnDownBlock2D" => true,
            "DownBlock2D" => false,
            other => {
                return Err(unsupported(
                    FILE,
                    &format!("down_block_types[{index}]"),
                    other,
                    "CrossAttnDownBlock2D or DownBlock2D",
                ));
            }
        };
        // candle mirrors the down blocks for the up path, so the types must mirror too.
        let up_index = blocks - 1 - index;
        let expected_up = if cross {
            "CrossAttnUpBlock2D"
        } else {
            "UpBlock2D"
        };
        if json.up_block_types[up_index] != expected_up {
            return Err(unsupported(
                FILE,
                &format!("up_block_types[{up_index}]"),
                &json.up_block_types[up_index],
                format!("{expected_up}, mirroring down_block_types[{index}]"),
            ));
        }
        let out_channels = json.block_out_channels[index];
        if !out_channels.is_multiple_of(json.norm_num_groups) {
            return Err(unsupported(
                FILE,
                &format!("block_out_channels[{index}]"),
                out_channels,
                format!("a multiple of norm_num_groups ({})", json.norm_num_groups),
            ));
        }
        let attention_heads = heads.get(index).ok_or_else(|| {
            unsupported(
                FILE,
                "attention_head_dim",
                "too few entries",
                format!("{blocks} entries"),
            )
        })?;
        let transformer_layers = json
            .transformer_layers_per_block
            .as_ref()
            .and_then(|layers| layers.get(index))
            .unwrap_or(1);
        configs.push(unet_2d::BlockConfig {
            out_channels,
            use_cross_attn: cross.then_some(transformer_layers),
            attention_head_dim: attention_heads,
        });
    }

    Ok(unet_2d::UNet2DConditionModelConfig {
        center_input_sample: json.center_input_sample,
        flip_sin_to_cos: json.flip_sin_to_cos,
        freq_shift: json.freq_shift,
        blocks: configs,
        layers_per_block: json.layers_per_block,
        downsample_padding: json.downsample_padding,
        mid_block_scale_factor: json.mid_block_scale_factor,
        norm_num_groups: json.norm_num_groups,
        norm_eps: json.norm_eps,
        cross_attention_dim: json.cross_attention_dim,
        sliced_attention_size: None,
        use_linear_projection: json.use_linear_projection,
    })
}

/// Reads SDXL's added embedding from the UNet config: absent, or
/// `text_time` with both of its sizes.
fn text_time_config(json: &UnetJson) -> Result<Option<TextTimeConfig>, GeneratorError> {
    const FILE: &str = "unet/config.json";
    match json.addition_embed_type.as_deref() {
        None => Ok(None),
        Some("text_time") => {
            let missing = |field: &str| {
                unsupported(
                    FILE,
                    field,
                    "null",
                    "a positive number when addition_embed_type is \"text_time\"",
                )
            };
            let time_embed_dim = json
                .addition_time_embed_dim
                .filter(|dim| *dim > 0)
                .ok_or_else(|| missing("addition_time_embed_dim"))?;
            let input_dim = json
                .projection_class_embeddings_input_dim
                .filter(|dim| *dim > 0)
                .ok_or_else(|| missing("projection_class_embeddings_input_dim"))?;
            Ok(Some(TextTimeConfig {
                time_embed_dim,
                input_dim,
            }))
        }
        Some(other) => Err(unsupported(
            FILE,
            "addition_embed_type",
            other,
            "null (SD 1.x, 2.x) or \"text_time\" (SDXL)",
        )),
    }
}

fn check_cross_attention_dim(
    unet: &UnetJson,
    expected: usize,
    source: &str,
) -> Result<(), GeneratorError> {
    if unet.cross_attention_dim != expected {
        return Err(unsupported(
            "unet/config.json",
            "cross_attention_dim",
            unet.cross_attention_dim,
            format!("equal to {source} ({expected})"),
        ));
    }
    Ok(())
}

/// Reads and checks SDXL's second text encoder against the first one and the
/// UNet: the hidden states of both are concatenated along the feature axis,
/// and the pooled output of the second feeds the added embedding.
fn second_text_encoder(
    root: &Path,
    first: &TextEncoderConfig,
    unet: &UnetJson,
    text_time: TextTimeConfig,
) -> Result<TextEncoderConfig, GeneratorError> {
    const FILE: &str = "text_encoder_2/config.json";
    if !root.join(FILE).is_file() {
        return Err(GeneratorError::folder(
            root,
            format!(
                "missing {FILE}, which unet/config.json addition_embed_type \"text_time\" (SDXL) needs for the second text encoder"
            ),
        ));
    }
    let second: TextEncoderConfig = read_json(root, FILE)?;
    check_text_encoder(FILE, &second)?;
    if second.max_position_embeddings != first.max_position_embeddings {
        return Err(unsupported(
            FILE,
            "max_position_embeddings",
            second.max_position_embeddings,
            format!(
                "equal to text_encoder/config.json max_position_embeddings ({}), because both encodings are joined token by token",
                first.max_position_embeddings
            ),
        ));
    }
    check_cross_attention_dim(
        unet,
        first.hidden_size + second.hidden_size,
        "the sum of both text encoders' hidden_size",
    )?;
    let pooled = second.projection_dim.unwrap_or(second.hidden_size);
    let expected = TIME_IDS * text_time.time_embed_dim + pooled;
    if text_time.input_dim != expected {
        return Err(unsupported(
            "unet/config.json",
            "projection_class_embeddings_input_dim",
            text_time.input_dim,
            format!(
                "{TIME_IDS} x addition_time_embed_dim ({}) + text_encoder_2/config.json projection_dim ({pooled}) = {expected}",
                text_time.time_embed_dim
            ),
        ));
    }
    Ok(second)
}

fn vae_config(json: &VaeJson) -> Result<vae::AutoEncoderKLConfig, GeneratorError> {
    const FILE: &str = "vae/config.json";
    if json.block_out_channels.is_empty() {
        return Err(unsupported(
            FILE,
            "block_out_channels",
            "[]",
            "at least one block",
        ));
    }
    if json.in_channels != 3 || json.out_channels != 3 {
        return Err(unsupported(
            FILE,
            "in_channels/out_channels",
            format!("{}/{}", json.in_channels, json.out_channels),
            "3/3 (RGB)",
        ));
    }
    if let Some(channels) = json
        .block_out_channels
        .iter()
        .find(|channels| *channels % json.norm_num_groups != 0)
    {
        return Err(unsupported(
            FILE,
            "block_out_channels",
            channels,
            format!("multiples of norm_num_groups ({})", json.norm_num_groups),
        ));
    }
    Ok(vae::AutoEncoderKLConfig {
        block_out_channels: json.block_out_channels.clone(),
        layers_per_block: json.layers_per_block,
        latent_channels: json.latent_channels,
        norm_num_groups: json.norm_num_groups,
        use_quant_conv: json.use_quant_conv,
        use_post_quant_conv: json.use_post_quant_conv,
    })
}
