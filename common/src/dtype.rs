//! The `--dtype` flag shared by the actors that load weights.

use candle_core::{DType, Device};

/// Weight dtype, as chosen by `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// F32 on the CPU, F16 on a GPU. On the CPU, candle 0.11.1 runs F16 matrix
    /// multiplies and convolutions no faster than F32 ones.
    Auto,
    /// 32-bit floats.
    F32,
    /// 16-bit floats: half the memory of F32.
    F16,
    /// bfloat16, on GPUs only: candle 0.11.1 has no CPU BF16 kernel for the
    /// matrix multiply inside convolutions.
    Bf16,
}

impl DtypeArg {
    /// Returns the dtype to load weights in on `device`. The error names
    /// `--dtype` when `device` does not support the chosen dtype.
    pub fn resolve(self, device: &Device) -> anyhow::Result<DType> {
        match self {
            Self::Auto if device.is_cpu() => Ok(DType::F32),
            Self::Auto => Ok(DType::F16),
            Self::F32 => Ok(DType::F32),
            Self::F16 => Ok(DType::F16),
            Self::Bf16 if device.supports_bf16() => Ok(DType::BF16),
            Self::Bf16 => anyhow::bail!(
                "--dtype bf16 is not supported on the {} device, which candle does not run BF16 models on; pass --dtype f32 or --dtype f16, or use a CUDA GPU",
                device_name(device)
            ),
        }
    }
}

fn device_name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_f32_on_cpu() {
        assert_eq!(DtypeArg::Auto.resolve(&Device::Cpu).unwrap(), DType::F32);
    }

    #[test]
    fn explicit_dtypes_kept_on_cpu() {
        assert_eq!(DtypeArg::F32.resolve(&Device::Cpu).unwrap(), DType::F32);
        assert_eq!(DtypeArg::F16.resolve(&Device::Cpu).unwrap(), DType::F16);
    }

    #[test]
    fn bf16_on_cpu_names_flag() {
        let error = DtypeArg::Bf16
            .resolve(&Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--dtype bf16"), "{error}");
        assert!(error.contains("cpu"), "{error}");
    }
}
