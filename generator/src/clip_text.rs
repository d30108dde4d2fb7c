//! A CLIP text transformer of any size, in the Hugging Face `CLIPTextModel`
//! and `CLIPTextModelWithProjection` weight layouts, with QuickGELU or GELU.
//!
//! candle 0.11.1 has two CLIP text models, and neither fits every Stable
//! Diffusion family. `models::clip::text_model` only has QuickGELU and hides
//! the hidden states before its final layer norm. `models::stable_diffusion::clip`
//! has GELU, but its config fields are private, so only its fixed presets
//! load. SDXL needs the penultimate hidden
//! states of both its encoders and the projected pooled output of the second,
//! and fine-tunes and tiny test models need any size, so this module builds
//! the model from `config.json` itself.

use candle_core::{D, DType, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::folder::TextEncoderConfig;

/// The hidden states a Stable Diffusion pipeline reads from one encoding.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// Output of the final layer norm, `(batch, tokens, hidden)`: what SD 1.x
    /// and 2.x condition on.
    pub last_hidden_state: Tensor,
    /// Output of the second-to-last encoder layer, without the final layer
    /// norm, `(batch, tokens, hidden)`: what SDXL conditions on. With one
    /// layer it is the embedding output, as in Hugging Face's `hidden_states[-2]`.
    pub penultimate_hidden_state: Tensor,
    /// The final-layer-norm state at the end-of-text token, passed through
    /// `text_projection` when the model has one, `(batch, projection)`.
    pub pooled: Tensor,
}

/// The activation of the encoder MLPs (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    /// `x * sigmoid(1.702 x)`, used by OpenAI's CLIP (SD 1.x, SDXL's first encoder).
    QuickGelu,
    /// The exact, erf-based GELU, used by OpenCLIP towers (SD 2.x, SDXL's second encoder).
    Gelu,
}

impl Activation {
    fn forward(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Gelu => xs.gelu_erf(),
        }
    }
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, hidden: usize, heads: usize) -> candle_core::Result<Self> {
        Ok(Self {
            q_proj: candle_nn::linear(hidden, hidden, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(hidden, hidden, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(hidden, hidden, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(hidden, hidden, vb.pp("out_proj"))?,
            heads,
            head_dim: hidden / heads,
        })
    }

    /// Splits `(batch, tokens, hidden)` into `(batch, heads, tokens, head_dim)` in f32.
    fn split_heads(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens, _) = xs.dims3()?;
        xs.reshape((batch, tokens, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .to_dtype(DType::F32)
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens, hidden) = xs.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let query = self.split_heads(&(self.q_proj.forward(xs)? * scale)?)?;
        let key = self.split_heads(&self.k_proj.forward(xs)?)?;
        let value = self.split_heads(&self.v_proj.forward(xs)?)?;

        // Softmax in f32 keeps F16 weights from overflowing the scores.
        let scores = query
            .matmul(&key.t()?.contiguous()?)?
            .broadcast_add(causal_mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let attended = weights
            .matmul(&value)?
            .to_dtype(xs.dtype())?
            .transpose(1, 2)?
            .reshape((batch, tokens, hidden))?;
        self.out_proj.forward(&attended)
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, config: &TextEncoderConfig) -> candle_core::Result<Self> {
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let activation = if config.hidden_act == "gelu" {
            Activation::Gelu
        } else {
            Activation::QuickGelu
        };
        Ok(Self {
            layer_norm1: candle_nn::layer_norm(hidden, eps, vb.pp("layer_norm1"))?,
            self_attn: Attention::new(vb.pp("self_attn"), hidden, config.num_attention_heads)?,
            layer_norm2: candle_nn::layer_norm(hidden, eps, vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(hidden, config.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(config.intermediate_size, hidden, vb.pp("mlp.fc2"))?,
            activation,
        })
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> candle_core::Result<Tensor> {
        let attended = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, causal_mask)?;
        let xs = (xs + attended)?;
        let hidden = self.fc1.forward(&self.layer_norm2.forward(&xs)?)?;
        let hidden = self.fc2.forward(&self.activation.forward(&hidden)?)?;
        xs + hidden
    }
}

/// A CLIP text encoder built from its `config.json`.
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
}

impl ClipTextModel {
    /// Builds the model from `vb`, whose tensors may carry the `text_model.`
    /// prefix (Hugging Face hub folders) or not (a bare `CLIPTextModel` saved
    /// by transformers 5). With `with_projection` the root must also contain
    /// `text_projection.weight`, as `CLIPTextModelWithProjection` saves it.
    pub fn new(
        vb: VarBuilder,
        config: &TextEncoderConfig,
        with_projection: bool,
    ) -> candle_core::Result<Self> {
        let text_projection = if with_projection {
            let projection = config.projection_dim.unwrap_or(config.hidden_size);
            Some(candle_nn::linear_no_bias(
                config.hidden_size,
                projection,
                vb.pp("text_projection"),
            )?)
        } else {
            None
        };
        let prefixed = vb.contains_tensor("text_model.embeddings.token_embedding.weight");
        let vb = if prefixed { vb.pp("text_model") } else { vb };

        let hidden = config.hidden_size;
        let embeddings = vb.pp("embeddings");
        let token_embedding =
            candle_nn::embedding(config.vocab_size, hidden, embeddings.pp("token_embedding"))?;
        let position_embedding = candle_nn::embedding(
            config.max_position_embeddings,
            hidden,
            embeddings.pp("position_embedding"),
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| EncoderLayer::new(vb.pp(format!("encoder.layers.{index}")), config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_layer_norm =
            candle_nn::layer_norm(hidden, config.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            text_projection,
        })
    }

    /// Encodes token ids `(batch, tokens)`. The pooled state is read at the
    /// largest id of each row, which is the end-of-text token in OpenAI's
    /// CLIP vocabulary and in redraft's word-level ones.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<ClipTextOutput> {
        let (_, tokens) = ids.dims2()?;
        let device = ids.device();
        let positions = Tensor::arange(0u32, tokens as u32, device)?.unsqueeze(0)?;
        let mut xs = self
            .token_embedding
            .forward(ids)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;

        let causal_mask = causal_mask(tokens, device)?;
        let mut penultimate = xs.clone();
        for (index, layer) in self.layers.iter().enumerate() {
            if index + 1 == self.layers.len() {
                penultimate = xs.clone();
            }
            xs = layer.forward(&xs, &causal_mask)?;
        }
        let last_hidden_state = self.final_layer_norm.forward(&xs)?;

        let end_positions = ids.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let pooled_rows = end_positions
            .iter()
            .enumerate()
            .map(|(row, &position)| last_hidden_state.i((row, position as usize)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooled = Tensor::stack(&pooled_rows, 0)?;
        let pooled = match &self.text_projection {
            Some(projection) => projection.forward(&pooled)?,
            None => pooled,
        };
        Ok(ClipTextOutput {
            last_hidden_state,
            penultimate_hidden_state: penultimate,
            pooled,
        })
    }
}

/// Builds the additive causal mask `(1, 1, tokens, tokens)` in f32: 0 on and
/// below the diagonal, minus infinity above it.
fn causal_mask(tokens: usize, device: &candle_core::Device) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = (0..tokens)
        .flat_map(|row| {
            (0..tokens).map(
                move |column| {
                    if column > row { f32::NEG_INFINITY } else { 0.0 }
                },
            )
        })
        .collect();
    Tensor::from_vec(values, (1, 1, tokens, tokens), device)
}
