//! Command-line and environment configuration of the generator.

use std::net::SocketAddr;
use std::path::PathBuf;

use candle_core::{DType, Device};
use redraft_common::telemetry::TelemetryArgs;

/// Weight dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// F32 on CPU, F16 on GPUs.
    Auto,
    /// 32-bit floats.
    F32,
    /// 16-bit floats; half the memory.
    F16,
}

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

    /// Model folder in the diffusers layout.
    #[arg(long, env = "REDRAFT_GENERATOR_MODEL")]
    pub model: PathBuf,

    /// Compute device. CUDA needs a build with the `cuda` feature.
    #[arg(long, env = "REDRAFT_GENERATOR_DEVICE", value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,

    /// Weight dtype.
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

    /// The weight dtype for `device`.
    pub fn dtype_for(&self, device: &Device) -> DType {
        match self.dtype {
            DtypeArg::F32 => DType::F32,
            DtypeArg::F16 => DType::F16,
            DtypeArg::Auto if device.is_cpu() => DType::F32,
            DtypeArg::Auto => DType::F16,
        }
    }
}
