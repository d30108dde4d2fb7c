//! Command-line and environment configuration of the generator.

use std::net::SocketAddr;

use candle_core::{DType, Device};
pub use redraft_common::dtype::DtypeArg;
use redraft_common::hub::{HubArgs, ModelSource};
use redraft_common::telemetry::TelemetryArgs;

/// Compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// The first CUDA GPU when this build has CUDA support and a GPU is present, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU; fails at start-up without one or without CUDA support in the build.
    Cuda,
}

/// Serves a Stable Diffusion model folder over gRPC.
#[derive(Debug, Clone, clap::Args)]
pub struct GeneratorArgs {
    /// gRPC listen address. Port 0 picks a free port; the bound one is printed on stdout.
    #[arg(
        long,
        env = "REDRAFT_GENERATOR_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    /// Model: a folder in the diffusers layout, or a Hugging Face repo id
    /// owner/name[@revision] that is downloaded into the hub cache (see --hf-endpoint,
    /// --hf-home and --hf-hub-offline). An existing path is always taken as a folder.
    #[arg(long, env = "REDRAFT_GENERATOR_MODEL", value_parser = ModelSource::parse)]
    pub model: ModelSource,

    /// Compute device. CUDA needs a build with the `cuda` feature.
    #[arg(long, env = "REDRAFT_GENERATOR_DEVICE", value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,

    /// Weight dtype. auto is F32 on the CPU, where candle 0.11.1 runs F16 no faster,
    /// and F16 on a GPU. bf16 needs a GPU.
    #[arg(long, env = "REDRAFT_GENERATOR_DTYPE", value_enum, default_value_t = DtypeArg::Auto)]
    pub dtype: DtypeArg,

    /// Largest accepted image width or height, in pixels.
    #[arg(long, env = "REDRAFT_GENERATOR_MAX_IMAGE_SIDE", default_value_t = 1024)]
    pub max_image_side: u32,

    /// Largest accepted number of denoising steps.
    #[arg(long, env = "REDRAFT_GENERATOR_MAX_STEPS", default_value_t = 150)]
    pub max_steps: u32,

    /// Longest accepted prompt or negative prompt, in characters.
    #[arg(
        long,
        env = "REDRAFT_GENERATOR_MAX_PROMPT_CHARS",
        default_value_t = 1000
    )]
    pub max_prompt_chars: u32,

    /// Requests that may wait for the model thread before new ones get RESOURCE_EXHAUSTED.
    #[arg(long, env = "REDRAFT_GENERATOR_QUEUE_CAPACITY", default_value_t = 32)]
    pub queue_capacity: usize,

    #[command(flatten)]
    pub memory: crate::memory::MemoryArgs,

    #[command(flatten)]
    pub hub: HubArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl GeneratorArgs {
    /// Checks rules that span flags.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_image_side < 8 {
            anyhow::bail!(
                "--max-image-side {} is too small; it must be at least 8",
                self.max_image_side
            );
        }
        if self.max_steps == 0 {
            anyhow::bail!("--max-steps 0 is invalid; it must be at least 1");
        }
        if self.queue_capacity == 0 {
            anyhow::bail!("--queue-capacity 0 is invalid; it must be at least 1");
        }
        Ok(())
    }

    /// Opens the compute device.
    pub fn open_device(&self) -> anyhow::Result<Device> {
        match self.device {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Auto => Ok(Device::cuda_if_available(0)?),
            DeviceArg::Cuda => Device::new_cuda(0).map_err(|error| {
                anyhow::anyhow!(
                    "--device cuda failed: {error}; build with `--features redraft-generator/cuda` on a machine with a CUDA GPU, or pass --device cpu"
                )
            }),
        }
    }

    /// Returns the weight dtype for `device`; the error names `--dtype` when
    /// the device does not support the chosen one.
    pub fn dtype_for(&self, device: &Device) -> anyhow::Result<DType> {
        self.dtype.resolve(device)
    }
}
