//! Noise schedulers: the folder's `scheduler_config.json`, DDIM from candle,
//! and an Euler-ancestral scheduler whose noise comes from the request's
//! seeded RNG, so that the same seed always gives the same image.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_transformers::models::stable_diffusion::ddim::DDIMSchedulerConfig;
use candle_transformers::models::stable_diffusion::schedulers::{
    BetaSchedule, PredictionType, Scheduler, SchedulerConfig, TimestepSpacing,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::GeneratorError;
use crate::folder::{read_json, unsupported};

/// Scheduler algorithms a request can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// Denoising diffusion implicit models, deterministic (eta 0).
    Ddim,
    /// Euler-ancestral sampling, with noise from the seeded RNG.
    EulerAncestral,
}

impl SchedulerKind {
    /// Every kind, in the order `Info` lists them.
    pub const ALL: [SchedulerKind; 2] = [SchedulerKind::Ddim, SchedulerKind::EulerAncestral];

    /// Name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::EulerAncestral => "euler_ancestral",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Scheduler settings shared by every algorithm (diffusers `scheduler_config.json`).
#[derive(Debug, Clone, Copy)]
pub struct SchedulerSpec {
    /// The folder's own algorithm.
    pub kind: SchedulerKind,
    /// Beta at the first training timestep.
    pub beta_start: f64,
    /// Beta at the last training timestep.
    pub beta_end: f64,
    /// Growth of beta over the training timesteps.
    pub beta_schedule: BetaSchedule,
    /// Training timesteps.
    pub train_timesteps: usize,
    /// Quantity the UNet predicts (noise, velocity or sample).
    pub prediction_type: PredictionType,
    /// Offset added to leading-spaced timesteps.
    pub steps_offset: usize,
    /// Spacing of the inference timesteps over the training ones.
    pub timestep_spacing: TimestepSpacing,
}

#[derive(Debug, Deserialize)]
struct SchedulerJson {
    #[serde(rename = "_class_name", default)]
    class_name: String,
    // Defaults are diffusers' SD 1.x values.
    #[serde(default = "beta_start")]
    beta_start: f64,
    #[serde(default = "beta_end")]
    beta_end: f64,
    #[serde(default = "beta_schedule")]
    beta_schedule: String,
    #[serde(default = "train_timesteps")]
    num_train_timesteps: usize,
    #[serde(default = "prediction_type")]
    prediction_type: String,
    #[serde(default)]
    steps_offset: usize,
    #[serde(default = "timestep_spacing")]
    timestep_spacing: String,
}

fn beta_start() -> f64 {
    0.00085
}
fn beta_end() -> f64 {
    0.012
}
fn beta_schedule() -> String {
    "scaled_linear".to_string()
}
fn train_timesteps() -> usize {
    1000
}
fn prediction_type() -> String {
    "epsilon".to_string()
}
fn timestep_spacing() -> String {
    "leading".to_string()
}

impl SchedulerSpec {
    /// Reads `file` of the model folder at `root`.
    pub fn from_file(root: &Path, file: &str) -> Result<Self, GeneratorError> {
        let json: SchedulerJson = read_json(root, file)?;
        let kind = match json.class_name.as_str() {
            "EulerAncestralDiscreteScheduler" => SchedulerKind::EulerAncestral,
            // PNDM, LMS and the other multistep schedulers that SD folders ship
            // share DDIM's beta schedule, so DDIM replaces them.
            _ => SchedulerKind::Ddim,
        };
        let beta_schedule = match json.beta_schedule.as_str() {
            "scaled_linear" => BetaSchedule::ScaledLinear,
            "linear" => BetaSchedule::Linear,
            "squaredcos_cap_v2" => BetaSchedule::SquaredcosCapV2,
            other => {
                return Err(unsupported(
                    file,
                    "beta_schedule",
                    other,
                    "scaled_linear, linear or squaredcos_cap_v2",
                ));
            }
        };
        let prediction_type = match json.prediction_type.as_str() {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            other => {
                return Err(unsupported(
                    file,
                    "prediction_type",
                    other,
                    "epsilon or v_prediction",
                ));
            }
        };
        let timestep_spacing = match json.timestep_spacing.as_str() {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            other => {
                return Err(unsupported(
                    file,
                    "timestep_spacing",
                    other,
                    "leading, trailing or linspace",
                ));
            }
        };
        if json.num_train_timesteps < 2 {
            return Err(unsupported(
                file,
                "num_train_timesteps",
                json.num_train_timesteps,
                "at least 2",
            ));
        }
        Ok(Self {
            kind,
            beta_start: json.beta_start,
            beta_end: json.beta_end,
            beta_schedule,
            train_timesteps: json.num_train_timesteps,
            prediction_type,
            steps_offset: json.steps_offset,
            timestep_spacing,
        })
    }

    /// Builds a scheduler of `kind` for `steps` inference steps.
    pub fn build(&self, kind: SchedulerKind, steps: usize) -> candle_core::Result<ActiveScheduler> {
        match kind {
            SchedulerKind::Ddim => {
                let config = DDIMSchedulerConfig {
                    beta_start: self.beta_start,
                    beta_end: self.beta_end,
                    beta_schedule: self.beta_schedule,
                    eta: 0.0,
                    steps_offset: self.steps_offset,
                    prediction_type: self.prediction_type,
                    train_timesteps: self.train_timesteps,
                    timestep_spacing: self.timestep_spacing,
                };
                Ok(ActiveScheduler::Ddim(config.build(steps)?))
            }
            SchedulerKind::EulerAncestral => Ok(ActiveScheduler::EulerAncestral(
                EulerAncestral::new(self, steps)?,
            )),
        }
    }

    /// Cumulative products of alpha over the training timesteps.
    fn alphas_cumprod(&self) -> Vec<f64> {
        let n = self.train_timesteps;
        let betas: Vec<f64> = match self.beta_schedule {
            BetaSchedule::Linear => (0..n)
                .map(|i| lerp(self.beta_start, self.beta_end, i, n))
                .collect(),
            BetaSchedule::ScaledLinear => (0..n)
                .map(|i| lerp(self.beta_start.sqrt(), self.beta_end.sqrt(), i, n).powi(2))
                .collect(),
            // The cosine schedule of Nichol and Dhariwal (2021), betas capped at 0.999.
            BetaSchedule::SquaredcosCapV2 => {
                let alpha_bar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                    })
                    .collect()
            }
        };
        let mut product = 1.0;
        betas
            .into_iter()
            .map(|beta| {
                product *= 1.0 - beta;
                product
            })
            .collect()
    }

    /// Inference timesteps, highest first, as diffusers spaces them.
    fn timesteps(&self, steps: usize) -> Vec<usize> {
        let train = self.train_timesteps;
        match self.timestep_spacing {
            TimestepSpacing::Leading => {
                let ratio = train / steps;
                (0..steps)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset).min(train - 1))
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = train as f64 / steps as f64;
                (0..steps)
                    .map(|i| ((train as f64 - i as f64 * ratio).round() as usize).saturating_sub(1))
                    .collect()
            }
            TimestepSpacing::Linspace => (0..steps)
                .rev()
                .map(|i| {
                    if steps == 1 {
                        train - 1
                    } else {
                        (i as f64 * (train - 1) as f64 / (steps - 1) as f64).round() as usize
                    }
                })
                .collect(),
        }
    }
}

fn lerp(start: f64, end: f64, index: usize, count: usize) -> f64 {
    if count <= 1 {
        return start;
    }
    start + (end - start) * index as f64 / (count - 1) as f64
}

/// A scheduler built for one request.
pub enum ActiveScheduler {
    /// candle's DDIM with eta 0, which draws no noise.
    Ddim(Box<dyn Scheduler>),
    /// Euler-ancestral with seeded noise.
    EulerAncestral(EulerAncestral),
}

impl ActiveScheduler {
    /// Inference timesteps, highest first.
    pub fn timesteps(&self) -> Vec<usize> {
        match self {
            Self::Ddim(scheduler) => scheduler.timesteps().to_vec(),
            Self::EulerAncestral(scheduler) => scheduler.timesteps.clone(),
        }
    }

    /// Standard deviation of the initial noise.
    pub fn init_noise_sigma(&self) -> f64 {
        match self {
            Self::Ddim(scheduler) => scheduler.init_noise_sigma(),
            Self::EulerAncestral(scheduler) => scheduler.init_noise_sigma,
        }
    }

    /// Scales the UNet input at step `index` of the schedule.
    pub fn scale_model_input(&self, latents: Tensor, index: usize) -> candle_core::Result<Tensor> {
        match self {
            Self::Ddim(scheduler) => {
                let timestep = scheduler.timesteps()[index];
                scheduler.scale_model_input(latents, timestep)
            }
            Self::EulerAncestral(scheduler) => {
                let sigma = scheduler.sigmas[index];
                latents / (sigma * sigma + 1.0).sqrt()
            }
        }
    }

    /// Runs step `index` of the schedule, drawing any noise from `rng`.
    pub fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        latents: &Tensor,
        rng: &mut ChaCha8Rng,
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::Ddim(scheduler) => {
                let timestep = scheduler.timesteps()[index];
                scheduler.step(model_output, timestep, latents)
            }
            Self::EulerAncestral(scheduler) => scheduler.step(model_output, index, latents, rng),
        }
    }

    /// Noises clean latents to the level of step `index`, for image-to-image.
    pub fn add_noise(
        &self,
        latents: &Tensor,
        noise: Tensor,
        index: usize,
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::Ddim(scheduler) => {
                let timestep = scheduler.timesteps()[index];
                scheduler.add_noise(latents, noise, timestep)
            }
            Self::EulerAncestral(scheduler) => latents + (noise * scheduler.sigmas[index])?,
        }
    }
}

/// Euler-ancestral sampling (Karras et al. 2022, as in diffusers'
/// `EulerAncestralDiscreteScheduler`), with noise from the caller's RNG.
pub struct EulerAncestral {
    timesteps: Vec<usize>,
    /// Noise level at each inference step, plus a final 0.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction_type: PredictionType,
}

impl EulerAncestral {
    fn new(spec: &SchedulerSpec, steps: usize) -> candle_core::Result<Self> {
        if matches!(spec.prediction_type, PredictionType::Sample) {
            candle_core::bail!("Euler-ancestral does not support prediction_type sample");
        }
        let alphas_cumprod = spec.alphas_cumprod();
        let timesteps = spec.timesteps(steps);
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| ((1.0 - alphas_cumprod[t]) / alphas_cumprod[t]).sqrt())
            .collect();
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().copied().fold(0.0, f64::max);
        // diffusers: the largest sigma for linspace and trailing spacing, else sqrt(sigma^2 + 1).
        let init_noise_sigma = match spec.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction_type: spec.prediction_type,
        })
    }

    fn step(
        &self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        rng: &mut ChaCha8Rng,
    ) -> candle_core::Result<Tensor> {
        let sigma_from = self.sigmas[index];
        let sigma_to = self.sigmas[index + 1];
        let predicted_original = match self.prediction_type {
            PredictionType::VPrediction => {
                let scale = sigma_from * sigma_from + 1.0;
                ((model_output * (-sigma_from / scale.sqrt()))? + (sample / scale)?)?
            }
            _ => (sample - (model_output * sigma_from)?)?,
        };
        let sigma_up = (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).sqrt();
        let derivative = ((sample - predicted_original)? / sigma_from)?;
        let previous = (sample + (derivative * (sigma_down - sigma_from))?)?;
        if sigma_up == 0.0 {
            return Ok(previous);
        }
        let noise = seeded_normal(rng, sample.dims(), sample.device())?.to_dtype(sample.dtype())?;
        previous + (noise * sigma_up)?
    }
}

/// Draws a standard-normal F32 tensor of `shape` from `rng`.
pub fn seeded_normal(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    Tensor::from_vec(values, shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn spec(spacing: TimestepSpacing) -> SchedulerSpec {
        SchedulerSpec {
            kind: SchedulerKind::Ddim,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            train_timesteps: 1000,
            prediction_type: PredictionType::Epsilon,
            steps_offset: 1,
            timestep_spacing: spacing,
        }
    }

    #[test]
    fn leading_spacing_matches_diffusers() {
        // diffusers, 1000 train steps, 4 steps, steps_offset 1: [751, 501, 251, 1].
        assert_eq!(
            spec(TimestepSpacing::Leading).timesteps(4),
            vec![751, 501, 251, 1]
        );
    }

    #[test]
    fn trailing_spacing_matches_diffusers() {
        // diffusers, 1000 train steps: 1 step gives [999], 4 steps [999, 749, 499, 249].
        assert_eq!(spec(TimestepSpacing::Trailing).timesteps(1), vec![999]);
        assert_eq!(
            spec(TimestepSpacing::Trailing).timesteps(4),
            vec![999, 749, 499, 249]
        );
    }

    #[test]
    fn linspace_spacing_covers_range() {
        assert_eq!(
            spec(TimestepSpacing::Linspace).timesteps(3),
            vec![999, 500, 0]
        );
    }

    #[test]
    fn euler_ancestral_same_seed_same_output() {
        let spec = spec(TimestepSpacing::Leading);
        let device = Device::Cpu;
        let sample = Tensor::ones((1, 4, 2, 2), candle_core::DType::F32, &device).unwrap();
        let output = (sample.clone() * 0.5).unwrap();
        let run = |seed| {
            let mut scheduler = spec.build(SchedulerKind::EulerAncestral, 4).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            scheduler
                .step(&output, 0, &sample, &mut rng)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn scheduler_names_round_trip() {
        for kind in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(SchedulerKind::from_name("pndm"), None);
    }
}
