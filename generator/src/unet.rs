//! The conditional UNet, built from candle's public Stable Diffusion blocks,
//! with SDXL's added `text_time` embedding.
//!
//! candle 0.11.1's `UNet2DConditionModel` has no added embedding, so it would
//! load an SDXL UNet and silently ignore the pooled text embedding and the
//! size conditioning. This module assembles the same blocks in diffusers'
//! order and weight names and, when the config sets `addition_embed_type` to
//! `text_time`, adds
//! `add_time_proj` (a sinusoidal projection of the six size numbers) and
//! `add_embedding` (`linear_1`, SiLU, `linear_2`) to the timestep embedding,
//! as diffusers' `UNet2DConditionModel` does.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModelConfig;
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    CrossAttnDownBlock2D, CrossAttnDownBlock2DConfig, CrossAttnUpBlock2D, CrossAttnUpBlock2DConfig,
    DownBlock2D, DownBlock2DConfig, UNetMidBlock2DCrossAttn, UNetMidBlock2DCrossAttnConfig,
    UpBlock2D, UpBlock2DConfig,
};

/// Sizes of SDXL's added embedding (`addition_embed_type: "text_time"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextTimeConfig {
    /// Channels of the sinusoidal projection of each size number
    /// (`addition_time_embed_dim`, 256 in SDXL).
    pub time_embed_dim: usize,
    /// Width of the pooled text embedding plus the six projected size
    /// numbers (`projection_class_embeddings_input_dim`, 2816 in SDXL).
    pub input_dim: usize,
}

/// The number of size numbers SDXL conditions on: original height and width,
/// crop top and left, target height and width.
pub const TIME_IDS: usize = 6;

/// SDXL's extra conditioning for one UNet call, one row per batch item.
#[derive(Debug, Clone)]
pub struct TextTimeInput {
    /// Pooled, projected output of the second text encoder, `(batch, projection)`.
    pub text_embeds: Tensor,
    /// Original size, crop top-left and target size, `(batch, 6)`, in pixels.
    pub time_ids: Tensor,
}

enum DownBlock {
    Basic(DownBlock2D),
    CrossAttn(CrossAttnDownBlock2D),
}

enum UpBlock {
    Basic(UpBlock2D),
    CrossAttn(CrossAttnUpBlock2D),
}

impl UpBlock {
    fn resnets(&self) -> usize {
        match self {
            Self::Basic(block) => block.resnets.len(),
            Self::CrossAttn(block) => block.upblock.resnets.len(),
        }
    }
}

/// The added `text_time` embedding.
struct TextTimeEmbedding {
    add_time_proj: Timesteps,
    add_embedding: TimestepEmbedding,
    time_embed_dim: usize,
}

/// diffusers' `UNet2DConditionModel` with the blocks Stable Diffusion 1.x,
/// 2.x and SDXL use.
pub struct Unet {
    config: UNet2DConditionModelConfig,
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    text_time: Option<TextTimeEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: UNetMidBlock2DCrossAttn,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Unet {
    /// Builds the UNet from `vb` with diffusers' tensor names. `text_time`
    /// adds SDXL's `add_time_proj` and `add_embedding`.
    pub fn new(
        vb: VarBuilder,
        channels: (usize, usize),
        config: UNet2DConditionModelConfig,
        text_time: Option<TextTimeConfig>,
    ) -> candle_core::Result<Self> {
        let blocks = &config.blocks;
        let levels = blocks.len();
        let first_channels = blocks[0].out_channels;
        let last = blocks[levels - 1];
        // diffusers: time_embed_dim = block_out_channels[0] * 4.
        let time_embed_dim = first_channels * 4;
        let padded = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = candle_nn::conv2d(channels.0, first_channels, 3, padded, vb.pp("conv_in"))?;
        let time_proj = Timesteps::new(first_channels, config.flip_sin_to_cos, config.freq_shift);
        let time_embedding =
            TimestepEmbedding::new(vb.pp("time_embedding"), first_channels, time_embed_dim)?;
        let text_time = text_time
            .map(|sizes| -> candle_core::Result<TextTimeEmbedding> {
                Ok(TextTimeEmbedding {
                    add_time_proj: Timesteps::new(
                        sizes.time_embed_dim,
                        config.flip_sin_to_cos,
                        config.freq_shift,
                    ),
                    add_embedding: TimestepEmbedding::new(
                        vb.pp("add_embedding"),
                        sizes.input_dim,
                        time_embed_dim,
                    )?,
                    time_embed_dim: sizes.time_embed_dim,
                })
            })
            .transpose()?;

        // Down path: block i reads block i - 1's channels.
        let mut down_blocks = Vec::with_capacity(levels);
        for (index, block) in blocks.iter().enumerate() {
            let in_channels = if index == 0 {
                first_channels
            } else {
                blocks[index - 1].out_channels
            };
            let down = DownBlock2DConfig {
                num_layers: config.layers_per_block,
                resnet_eps: config.norm_eps,
                resnet_groups: config.norm_num_groups,
                add_downsample: index + 1 < levels,
                downsample_padding: config.downsample_padding,
                ..Default::default()
            };
            let vb = vb.pp(format!("down_blocks.{index}"));
            down_blocks.push(match block.use_cross_attn {
                Some(transformer_layers) => DownBlock::CrossAttn(CrossAttnDownBlock2D::new(
                    vb,
                    in_channels,
                    block.out_channels,
                    Some(time_embed_dim),
                    false,
                    CrossAttnDownBlock2DConfig {
                        downblock: down,
                        attn_num_head_channels: block.attention_head_dim,
                        cross_attention_dim: config.cross_attention_dim,
                        sliced_attention_size: config.sliced_attention_size,
                        use_linear_projection: config.use_linear_projection,
                        transformer_layers_per_block: transformer_layers,
                    },
                )?),
                None => DownBlock::Basic(DownBlock2D::new(
                    vb,
                    in_channels,
                    block.out_channels,
                    Some(time_embed_dim),
                    down,
                )?),
            });
        }

        // Middle: diffusers gives it the last block's heads and transformer layers.
        let mid_block = UNetMidBlock2DCrossAttn::new(
            vb.pp("mid_block"),
            last.out_channels,
            Some(time_embed_dim),
            false,
            UNetMidBlock2DCrossAttnConfig {
                resnet_eps: config.norm_eps,
                output_scale_factor: config.mid_block_scale_factor,
                cross_attn_dim: config.cross_attention_dim,
                attn_num_head_channels: last.attention_head_dim,
                resnet_groups: Some(config.norm_num_groups),
                use_linear_projection: config.use_linear_projection,
                transformer_layers_per_block: last.use_cross_attn.unwrap_or(1),
                sliced_attention_size: config.sliced_attention_size,
                ..Default::default()
            },
        )?;

        // Up path: the down blocks in reverse, each with one extra resnet
        // that reads the skip connection of the level below.
        let mut up_blocks = Vec::with_capacity(levels);
        for index in 0..levels {
            let block = blocks[levels - 1 - index];
            let previous_channels = if index == 0 {
                last.out_channels
            } else {
                blocks[levels - index].out_channels
            };
            let skip_channels = blocks[(levels - 1 - index).saturating_sub(1)].out_channels;
            let up = UpBlock2DConfig {
                num_layers: config.layers_per_block + 1,
                resnet_eps: config.norm_eps,
                resnet_groups: config.norm_num_groups,
                add_upsample: index + 1 < levels,
                ..Default::default()
            };
            let vb = vb.pp(format!("up_blocks.{index}"));
            up_blocks.push(match block.use_cross_attn {
                Some(transformer_layers) => UpBlock::CrossAttn(CrossAttnUpBlock2D::new(
                    vb,
                    skip_channels,
                    previous_channels,
                    block.out_channels,
                    Some(time_embed_dim),
                    false,
                    CrossAttnUpBlock2DConfig {
                        upblock: up,
                        attn_num_head_channels: block.attention_head_dim,
                        cross_attention_dim: config.cross_attention_dim,
                        sliced_attention_size: config.sliced_attention_size,
                        use_linear_projection: config.use_linear_projection,
                        transformer_layers_per_block: transformer_layers,
                    },
                )?),
                None => UpBlock::Basic(UpBlock2D::new(
                    vb,
                    skip_channels,
                    previous_channels,
                    block.out_channels,
                    Some(time_embed_dim),
                    up,
                )?),
            });
        }

        let conv_norm_out = candle_nn::group_norm(
            config.norm_num_groups,
            first_channels,
            config.norm_eps,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = candle_nn::conv2d(first_channels, channels.1, 3, padded, vb.pp("conv_out"))?;
        Ok(Self {
            config,
            conv_in,
            time_proj,
            time_embedding,
            text_time,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// Returns true when the UNet needs [`TextTimeInput`] on every call (SDXL).
    pub fn needs_text_time(&self) -> bool {
        self.text_time.is_some()
    }

    /// Predicts the model output for `latents` `(batch, channels, height,
    /// width)` at `timestep`, conditioned on `encoder_hidden_states` `(batch,
    /// tokens, cross_attention_dim)` and, for SDXL, on `text_time`.
    pub fn forward(
        &self,
        latents: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        text_time: Option<&TextTimeInput>,
    ) -> candle_core::Result<Tensor> {
        let (batch, _, height, width) = latents.dims4()?;
        let device = latents.device();
        let dtype = latents.dtype();

        // Timestep embedding, plus SDXL's pooled-text and size embedding.
        let timesteps = (Tensor::ones(batch, dtype, device)? * timestep)?;
        let mut embedding = self
            .time_embedding
            .forward(&self.time_proj.forward(&timesteps)?)?;
        match (&self.text_time, text_time) {
            (Some(added), Some(input)) => {
                embedding = (embedding + added.forward(input, batch, dtype)?)?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(candle_core::Error::Msg(
                    "this UNet has a text_time embedding (SDXL) and needs pooled text embeddings and size ids".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(candle_core::Error::Msg(
                    "this UNet has no text_time embedding, so it cannot take pooled text embeddings and size ids".into(),
                ));
            }
        }

        let xs = if self.config.center_input_sample {
            ((latents * 2.0)? - 1.0)?
        } else {
            latents.clone()
        };
        let xs = self.conv_in.forward(&xs)?;

        // Down path, keeping every resnet output as a skip connection.
        let mut skips = vec![xs.clone()];
        let mut xs = xs;
        for block in &self.down_blocks {
            let (next, block_skips) = match block {
                DownBlock::Basic(block) => block.forward(&xs, Some(&embedding))?,
                DownBlock::CrossAttn(block) => {
                    block.forward(&xs, Some(&embedding), Some(encoder_hidden_states))?
                }
            };
            skips.extend(block_skips);
            xs = next;
        }

        let mut xs = self
            .mid_block
            .forward(&xs, Some(&embedding), Some(encoder_hidden_states))?;

        // Up path. When the down-sampling does not divide the latent sides
        // evenly, each up-sampler gets the size of the skip connection it meets.
        let total_factor = 1 << (self.up_blocks.len() - 1);
        let uneven = !height.is_multiple_of(total_factor) || !width.is_multiple_of(total_factor);
        for (index, block) in self.up_blocks.iter().enumerate() {
            let block_skips = skips.split_off(skips.len() - block.resnets());
            let upsample_size = match skips.last() {
                Some(next_skip) if uneven && index + 1 < self.up_blocks.len() => {
                    let (_, _, skip_height, skip_width) = next_skip.dims4()?;
                    Some((skip_height, skip_width))
                }
                _ => None,
            };
            xs = match block {
                UpBlock::Basic(block) => {
                    block.forward(&xs, &block_skips, Some(&embedding), upsample_size)?
                }
                UpBlock::CrossAttn(block) => block.forward(
                    &xs,
                    &block_skips,
                    Some(&embedding),
                    upsample_size,
                    Some(encoder_hidden_states),
                )?,
            };
        }

        let xs = candle_nn::ops::silu(&self.conv_norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}

impl TextTimeEmbedding {
    /// diffusers: `add_embedding(cat(text_embeds, add_time_proj(time_ids).reshape(batch, -1)))`.
    fn forward(
        &self,
        input: &TextTimeInput,
        batch: usize,
        dtype: DType,
    ) -> candle_core::Result<Tensor> {
        let time_ids = input.time_ids.to_dtype(dtype)?.flatten_all()?;
        let projected = self
            .add_time_proj
            .forward(&time_ids)?
            .reshape((batch, TIME_IDS * self.time_embed_dim))?;
        let text_embeds = input.text_embeds.to_dtype(dtype)?;
        let joined = Tensor::cat(&[&text_embeds, &projected], 1)?;
        self.add_embedding.forward(&joined)
    }
}
