//! Command-line and environment configuration of the critic.

use std::net::SocketAddr;

use redraft_common::dtype::DtypeArg;
use redraft_common::hub::{HubArgs, ModelSource};
use redraft_common::telemetry::TelemetryArgs;

/// Serves a CLIP model folder as an image critic over gRPC.
#[derive(Debug, Clone, clap::Args)]
pub struct CriticArgs {
    /// gRPC listen address. Port 0 picks a free port; the bound one is printed on stdout.
    #[arg(long, env = "REDRAFT_CRITIC_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// Model: a folder in the Hugging Face CLIP layout (config.json, model.safetensors,
    /// tokenizer.json), or a Hugging Face repo id owner/name[@revision] that is downloaded
    /// into the hub cache (see --hf-endpoint, --hf-home and --hf-hub-offline). An existing
    /// path is always taken as a folder.
    #[arg(long, env = "REDRAFT_CRITIC_MODEL", value_parser = ModelSource::parse)]
    pub model: ModelSource,

    /// Weight dtype. The critic runs on the CPU, where auto is F32 because candle 0.11.1
    /// runs F16 no faster; bf16 is rejected there.
    #[arg(long, env = "REDRAFT_CRITIC_DTYPE", value_enum, default_value_t = DtypeArg::Auto)]
    pub dtype: DtypeArg,

    /// Longest accepted prompt, in characters.
    #[arg(long, env = "REDRAFT_CRITIC_MAX_PROMPT_CHARS", default_value_t = 1000)]
    pub max_prompt_chars: u32,

    /// Largest accepted image width or height, in pixels.
    #[arg(long, env = "REDRAFT_CRITIC_MAX_IMAGE_SIDE", default_value_t = 2048)]
    pub max_image_side: u32,

    /// Most images one CritiqueBatch request may carry.
    #[arg(long, env = "REDRAFT_CRITIC_MAX_BATCH_IMAGES", default_value_t = 16)]
    pub max_batch_images: u32,

    /// Requests that may wait for the model thread before new ones get RESOURCE_EXHAUSTED.
    #[arg(long, env = "REDRAFT_CRITIC_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,

    #[command(flatten)]
    pub hub: HubArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl CriticArgs {
    /// Checks rules that span flags.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_prompt_chars == 0 {
            anyhow::bail!("--max-prompt-chars 0 is invalid; it must be at least 1");
        }
        if self.max_image_side == 0 {
            anyhow::bail!("--max-image-side 0 is invalid; it must be at least 1");
        }
        if self.max_batch_images == 0 {
            anyhow::bail!("--max-batch-images 0 is invalid; it must be at least 1");
        }
        if self.queue_capacity == 0 {
            anyhow::bail!("--queue-capacity 0 is invalid; it must be at least 1");
        }
        Ok(())
    }
}
