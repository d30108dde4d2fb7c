//! Prompt encoding for every family: tokenizing (with prompt weighting),
//! running the one or two CLIP text encoders, and picking the hidden states
//! and pooled output the UNet conditions on.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use redraft_common::tokenizer::PromptTokenizer;

use crate::GeneratorError;
use crate::clip_text::ClipTextModel;
use crate::folder::{ModelFamily, ModelFolder, TextEncoderConfig};
use crate::weighting::{WeightedSegment, apply_token_weights, parse_weighted, weighted_token_ids};

/// The text conditioning of one prompt.
#[derive(Debug, Clone)]
pub struct TextEmbeddings {
    /// Per-token hidden states, `(rows, tokens, cross_attention_dim)`.
    pub hidden: Tensor,
    /// Pooled, projected output of SDXL's second encoder, `(rows, projection)`;
    /// None for SD 1.x and 2.x.
    pub pooled: Option<Tensor>,
}

impl TextEmbeddings {
    /// Stacks the rows of `first` above those of `second`.
    pub fn cat(first: &Self, second: &Self) -> candle_core::Result<Self> {
        let hidden = Tensor::cat(&[&first.hidden, &second.hidden], 0)?;
        let pooled = match (&first.pooled, &second.pooled) {
            (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0)?),
            _ => None,
        };
        Ok(Self { hidden, pooled })
    }

    /// Embeddings of the same shape with every value zero.
    pub fn zeros_like(&self) -> candle_core::Result<Self> {
        Ok(Self {
            hidden: self.hidden.zeros_like()?,
            pooled: self.pooled.as_ref().map(Tensor::zeros_like).transpose()?,
        })
    }
}

/// One tokenizer with its CLIP text model.
struct Branch {
    tokenizer: PromptTokenizer,
    model: ClipTextModel,
}

/// The text encoders of a model folder: one for SD 1.x and 2.x, two for SDXL.
pub struct TextEncoder {
    family: ModelFamily,
    first: Branch,
    second: Option<Branch>,
    device: Device,
    dtype: DType,
}

impl TextEncoder {
    /// Loads the tokenizers and text encoders of `folder`.
    pub fn load(
        folder: &ModelFolder,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, GeneratorError> {
        let first = load_branch(
            folder,
            "tokenizer/tokenizer.json",
            "text_encoder/model.safetensors",
            &folder.text_encoder,
            false,
            device,
            dtype,
        )?;
        let second = match &folder.text_encoder_2 {
            // SDXL's second encoder is a CLIPTextModelWithProjection, so its
            // pooled output goes through `text_projection`.
            Some(config) => Some(load_branch(
                folder,
                "tokenizer_2/tokenizer.json",
                "text_encoder_2/model.safetensors",
                config,
                true,
                device,
                dtype,
            )?),
            None => None,
        };
        Ok(Self {
            family: folder.family,
            first,
            second,
            device: device.clone(),
            dtype,
        })
    }

    /// Encodes `prompt`, parsing its weighting syntax. `field` names the
    /// request field in errors (`prompt` or `negative_prompt`).
    pub fn encode(&self, field: &str, prompt: &str) -> Result<TextEmbeddings, GeneratorError> {
        let segments = parse_weighted(field, prompt)?;
        let (first_hidden, _) = self.encode_branch(&self.first, &segments)?;
        let Some(second) = &self.second else {
            return Ok(TextEmbeddings {
                hidden: first_hidden.to_dtype(self.dtype)?,
                pooled: None,
            });
        };

        // SDXL: both encoders' states side by side, and the second one's pooled output.
        let (second_hidden, pooled) = self.encode_branch(second, &segments)?;
        let hidden = Tensor::cat(&[&first_hidden, &second_hidden], 2)?;
        Ok(TextEmbeddings {
            hidden: hidden.to_dtype(self.dtype)?,
            pooled: Some(pooled.to_dtype(self.dtype)?),
        })
    }

    /// Runs one branch and returns its weighted conditioning states (the
    /// last hidden state for SD 1.x and 2.x, the penultimate one for SDXL)
    /// and its pooled output. The pooled output is never weighted.
    fn encode_branch(
        &self,
        branch: &Branch,
        segments: &[WeightedSegment],
    ) -> Result<(Tensor, Tensor), GeneratorError> {
        let (ids, weights) = weighted_token_ids(&branch.tokenizer, segments)?;
        let ids = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let output = branch.model.forward(&ids)?;
        let states = match self.family {
            ModelFamily::Sd1 | ModelFamily::Sd2 => &output.last_hidden_state,
            ModelFamily::Sdxl => &output.penultimate_hidden_state,
        };
        let weighted = apply_token_weights(states, &weights)?;
        Ok((weighted, output.pooled))
    }
}

fn load_branch(
    folder: &ModelFolder,
    tokenizer_file: &str,
    weights_file: &str,
    config: &TextEncoderConfig,
    with_projection: bool,
    device: &Device,
    dtype: DType,
) -> Result<Branch, GeneratorError> {
    // Prompts are padded with the folder's configured pad token ("!" for the
    // SD 2.x tokenizer and SDXL's tokenizer_2), else `<|pad|>`, else `<|endoftext|>`.
    let tokenizer = PromptTokenizer::from_file_or_bpe(
        &folder.file(tokenizer_file),
        config.max_position_embeddings,
    )?;
    let path = folder.file(weights_file);
    // SAFETY: the weights file is only read, and redraft never writes a model
    // folder while an actor has it loaded.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], dtype, device) }.map_err(
        |error| {
            GeneratorError::folder(
                &folder.root,
                format!("failed to read {weights_file}: {error}"),
            )
        },
    )?;
    let model = ClipTextModel::new(vb, config, with_projection).map_err(|error| {
        GeneratorError::folder(
            &folder.root,
            format!("{weights_file} does not match its config.json: {error}"),
        )
    })?;
    Ok(Branch { tokenizer, model })
}
