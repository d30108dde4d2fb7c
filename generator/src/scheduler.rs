//! Noise schedulers: the folder's `scheduler_config.json`, DDIM from candle,
//! and Euler-ancestral and DDPM schedulers whose noise comes from the
//! request's seeded RNG, so that the same seed always gives the same image.
//!
//! A batch of images carries one RNG per image, seeded with that image's
//! seed. Every draw of noise takes row `i` of the batch from RNG `i`, so an
//! image in a batch gets the same noise as the same seed run alone.

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
    /// Denoising diffusion probabilistic models: ancestral sampling with the
    /// "fixed_small" variance, with noise from the seeded RNG.
    Ddpm,
}

impl SchedulerKind {
    /// Every kind, in the order `Info` lists them.
    pub const ALL: [SchedulerKind; 3] = [
        SchedulerKind::Ddim,
        SchedulerKind::EulerAncestral,
        SchedulerKind::Ddpm,
    ];

    /// Name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::EulerAncestral => "euler_ancestral",
            Self::Ddpm => "ddpm",
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
            "DDPMScheduler" => SchedulerKind::Ddpm,
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
            SchedulerKind::Ddpm => Ok(ActiveScheduler::Ddpm(Ddpm::new(self, steps))),
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
    /// DDPM with seeded noise.
    Ddpm(Ddpm),
}

impl ActiveScheduler {
    /// Inference timesteps, highest first.
    pub fn timesteps(&self) -> Vec<usize> {
        match self {
            Self::Ddim(scheduler) => scheduler.timesteps().to_vec(),
            Self::EulerAncestral(scheduler) => scheduler.timesteps.clone(),
            Self::Ddpm(scheduler) => scheduler.timesteps.clone(),
        }
    }

    /// Standard deviation of the initial noise.
    pub fn init_noise_sigma(&self) -> f64 {
        match self {
            Self::Ddim(scheduler) => scheduler.init_noise_sigma(),
            Self::EulerAncestral(scheduler) => scheduler.init_noise_sigma,
            Self::Ddpm(_) => 1.0,
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
            Self::Ddpm(_) => Ok(latents),
        }
    }

    /// Runs step `index` of the schedule. Any noise for row `i` of the
    /// batch comes from `rngs[i]`, so `rngs` has one RNG per image.
    pub fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        latents: &Tensor,
        rngs: &mut [ChaCha8Rng],
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::Ddim(scheduler) => {
                let timestep = scheduler.timesteps()[index];
                scheduler.step(model_output, timestep, latents)
            }
            Self::EulerAncestral(scheduler) => scheduler.step(model_output, index, latents, rngs),
            Self::Ddpm(scheduler) => scheduler.step(model_output, index, latents, rngs),
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
            Self::Ddpm(scheduler) => {
                let alpha_prod = scheduler.alphas_cumprod[scheduler.timesteps[index]];
                (latents * alpha_prod.sqrt())? + (noise * (1.0 - alpha_prod).sqrt())?
            }
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
        rngs: &mut [ChaCha8Rng],
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
        let noise =
            seeded_normal_batch(rngs, sample.dims(), sample.device())?.to_dtype(sample.dtype())?;
        previous + (noise * sigma_up)?
    }
}

/// DDPM ancestral sampling (Ho et al. 2020), as diffusers' `DDPMScheduler`
/// computes it with `variance_type` "fixed_small": each step moves to the
/// mean of the posterior q(x_prev | x_t, x_0) and adds noise with variance
/// beta~_t = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t.
///
/// NOTE: the predicted x_0 is not clipped, which matches the
/// `clip_sample: false` that Stable Diffusion scheduler configs set; a
/// config with `clip_sample: true` still runs unclipped.
pub struct Ddpm {
    timesteps: Vec<usize>,
    alphas_cumprod: Vec<f64>,
    prediction_type: PredictionType,
}

/// The scalar coefficients of one DDPM step.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DdpmCoefficients {
    /// Weight of the predicted x_0 in the posterior mean.
    original: f64,
    /// Weight of the current sample x_t in the posterior mean.
    current: f64,
    /// Standard deviation of the added noise; 0 at the last step.
    noise_std: f64,
}

impl Ddpm {
    fn new(spec: &SchedulerSpec, steps: usize) -> Self {
        Self {
            timesteps: spec.timesteps(steps),
            alphas_cumprod: spec.alphas_cumprod(),
            prediction_type: spec.prediction_type,
        }
    }

    /// Cumulative alpha at the step after `index`. Like diffusers, the step
    /// after the last one is the clean image, with cumulative alpha 1.
    fn alpha_prod_previous(&self, index: usize) -> f64 {
        match self.timesteps.get(index + 1) {
            Some(&previous) => self.alphas_cumprod[previous],
            None => 1.0,
        }
    }

    fn coefficients(&self, index: usize) -> DdpmCoefficients {
        let alpha_prod = self.alphas_cumprod[self.timesteps[index]];
        let alpha_prod_previous = self.alpha_prod_previous(index);
        let beta_prod = 1.0 - alpha_prod;
        let beta_prod_previous = 1.0 - alpha_prod_previous;
        // alpha and beta of the jump from this timestep to the previous one,
        // which spans several training timesteps when steps < train_timesteps.
        let current_alpha = alpha_prod / alpha_prod_previous;
        let current_beta = 1.0 - current_alpha;
        // diffusers clamps the variance at 1e-20 before its square root.
        let variance = (beta_prod_previous / beta_prod * current_beta).max(1e-20);
        DdpmCoefficients {
            original: alpha_prod_previous.sqrt() * current_beta / beta_prod,
            current: current_alpha.sqrt() * beta_prod_previous / beta_prod,
            noise_std: if self.timesteps[index] > 0 {
                variance.sqrt()
            } else {
                0.0
            },
        }
    }

    fn step(
        &self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        rngs: &mut [ChaCha8Rng],
    ) -> candle_core::Result<Tensor> {
        let alpha_prod = self.alphas_cumprod[self.timesteps[index]];
        let beta_prod = 1.0 - alpha_prod;
        let predicted_original = match self.prediction_type {
            PredictionType::Epsilon => {
                ((sample - (model_output * beta_prod.sqrt())?)? / alpha_prod.sqrt())?
            }
            PredictionType::VPrediction => {
                ((sample * alpha_prod.sqrt())? - (model_output * beta_prod.sqrt())?)?
            }
            PredictionType::Sample => model_output.clone(),
        };
        let coefficients = self.coefficients(index);
        let mean =
            ((predicted_original * coefficients.original)? + (sample * coefficients.current)?)?;
        if coefficients.noise_std == 0.0 {
            return Ok(mean);
        }
        let noise =
            seeded_normal_batch(rngs, sample.dims(), sample.device())?.to_dtype(sample.dtype())?;
        mean + (noise * coefficients.noise_std)?
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

/// Draws a standard-normal F32 tensor of `shape` whose row `i` (along the
/// first dimension) comes from `rngs[i]`. With one RNG this draws what
/// [`seeded_normal`] draws.
pub fn seeded_normal_batch(
    rngs: &mut [ChaCha8Rng],
    shape: &[usize],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let Some((&rows, row_shape)) = shape.split_first() else {
        candle_core::bail!("seeded noise needs a batch dimension, got shape {shape:?}");
    };
    if rows != rngs.len() {
        candle_core::bail!(
            "seeded noise for a batch of {rows} needs {rows} RNGs, got {}",
            rngs.len()
        );
    }
    let mut row_shape_with_batch = vec![1];
    row_shape_with_batch.extend_from_slice(row_shape);
    let rows = rngs
        .iter_mut()
        .map(|rng| seeded_normal(rng, &row_shape_with_batch, device))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)
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
            let mut rngs = [ChaCha8Rng::seed_from_u64(seed)];
            scheduler
                .step(&output, 0, &sample, &mut rngs)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    /// Four training timesteps with linear betas 0.1, 0.2, 0.3, 0.4, so the
    /// cumulative alphas are 0.9, 0.72, 0.504 and 0.3024. Two leading-spaced
    /// steps run timesteps 2 and 0.
    fn small_spec(prediction_type: PredictionType) -> SchedulerSpec {
        SchedulerSpec {
            kind: SchedulerKind::Ddpm,
            beta_start: 0.1,
            beta_end: 0.4,
            beta_schedule: BetaSchedule::Linear,
            train_timesteps: 4,
            prediction_type,
            steps_offset: 0,
            timestep_spacing: TimestepSpacing::Leading,
        }
    }

    fn values(tensor: &Tensor) -> Vec<f32> {
        tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "{actual} differs from {expected}"
        );
    }

    #[test]
    fn small_schedule_alphas_cumprod() {
        let alphas = small_spec(PredictionType::Epsilon).alphas_cumprod();
        for (actual, expected) in alphas.iter().zip([0.9, 0.72, 0.504, 0.3024]) {
            assert_close(*actual, expected);
        }
    }

    #[test]
    fn ddpm_first_step_coefficients() {
        let ddpm = Ddpm::new(&small_spec(PredictionType::Epsilon), 2);
        assert_eq!(ddpm.timesteps, vec![2, 0]);
        // Timestep 2 to 0: alpha_bar 0.504 to 0.9, so the jump has alpha
        // 0.504 / 0.9 = 0.56 and beta 0.44.
        let first = ddpm.coefficients(0);
        assert_close(first.original, 0.9f64.sqrt() * 0.44 / 0.496);
        assert_close(first.current, 0.56f64.sqrt() * 0.1 / 0.496);
        assert_close(first.noise_std, (0.1 / 0.496 * 0.44f64).sqrt());
        // The last step lands on the clean image: x_0 itself, no noise.
        let last = ddpm.coefficients(1);
        assert_close(last.original, 1.0);
        assert_close(last.current, 0.0);
        assert_eq!(last.noise_std, 0.0);
    }

    #[test]
    fn ddpm_first_step_mean_plus_seeded_noise() {
        let device = Device::Cpu;
        let sample = Tensor::ones((1, 4, 2, 2), candle_core::DType::F32, &device).unwrap();
        let epsilon = (sample.clone() * 0.5).unwrap();
        let mut scheduler = small_spec(PredictionType::Epsilon)
            .build(SchedulerKind::Ddpm, 2)
            .unwrap();
        let mut rngs = [ChaCha8Rng::seed_from_u64(3)];
        let stepped = values(&scheduler.step(&epsilon, 0, &sample, &mut rngs).unwrap());

        // x_0 = (x_t - sqrt(1 - 0.504) * eps) / sqrt(0.504), then the posterior
        // mean, then the same seed's noise times the fixed_small deviation.
        let original = (1.0 - 0.496f64.sqrt() * 0.5) / 0.504f64.sqrt();
        let mean = 0.9f64.sqrt() * 0.44 / 0.496 * original + 0.56f64.sqrt() * 0.1 / 0.496;
        let std = (0.1 / 0.496 * 0.44f64).sqrt();
        let noise = values(
            &seeded_normal(&mut ChaCha8Rng::seed_from_u64(3), &[1, 4, 2, 2], &device).unwrap(),
        );
        for (actual, noise) in stepped.iter().zip(noise) {
            let expected = mean + std * noise as f64;
            assert!(
                (*actual as f64 - expected).abs() < 1e-5,
                "{actual} differs from {expected}"
            );
        }
    }

    #[test]
    fn ddpm_last_step_returns_predicted_original() {
        let device = Device::Cpu;
        let sample = Tensor::full(2f32, (1, 4, 2, 2), &device).unwrap();
        let output = Tensor::full(0.5f32, (1, 4, 2, 2), &device).unwrap();
        let cases = [
            // Epsilon at alpha_bar 0.9: (2 - sqrt(0.1) * 0.5) / sqrt(0.9).
            (
                PredictionType::Epsilon,
                (2.0 - 0.1f64.sqrt() * 0.5) / 0.9f64.sqrt(),
            ),
            // v-prediction: sqrt(0.9) * 2 - sqrt(0.1) * 0.5.
            (
                PredictionType::VPrediction,
                0.9f64.sqrt() * 2.0 - 0.1f64.sqrt() * 0.5,
            ),
        ];
        for (prediction_type, expected) in cases {
            let mut scheduler = small_spec(prediction_type)
                .build(SchedulerKind::Ddpm, 2)
                .unwrap();
            let mut rngs = [ChaCha8Rng::seed_from_u64(0)];
            let stepped = values(&scheduler.step(&output, 1, &sample, &mut rngs).unwrap());
            for actual in stepped {
                assert!(
                    (actual as f64 - expected).abs() < 1e-5,
                    "{prediction_type:?}: {actual} differs from {expected}"
                );
            }
        }
    }

    #[test]
    fn ddpm_add_noise_uses_alpha_bar() {
        let device = Device::Cpu;
        let scheduler = small_spec(PredictionType::Epsilon)
            .build(SchedulerKind::Ddpm, 2)
            .unwrap();
        let clean = Tensor::ones((1, 1, 1, 1), candle_core::DType::F32, &device).unwrap();
        let noise = Tensor::full(2f32, (1, 1, 1, 1), &device).unwrap();
        let noised = values(&scheduler.add_noise(&clean, noise, 0).unwrap())[0];
        let expected = 0.504f64.sqrt() + 2.0 * 0.496f64.sqrt();
        assert!((noised as f64 - expected).abs() < 1e-6);
    }

    #[test]
    fn ddpm_honours_trailing_spacing() {
        let spec = SchedulerSpec {
            timestep_spacing: TimestepSpacing::Trailing,
            ..small_spec(PredictionType::Epsilon)
        };
        let scheduler = spec.build(SchedulerKind::Ddpm, 2).unwrap();
        assert_eq!(scheduler.timesteps(), vec![3, 1]);
    }

    #[test]
    fn batch_noise_rows_match_single_seeds() {
        let device = Device::Cpu;
        let mut rngs = [ChaCha8Rng::seed_from_u64(10), ChaCha8Rng::seed_from_u64(11)];
        let batch = seeded_normal_batch(&mut rngs, &[2, 4, 3, 3], &device).unwrap();
        for (row, seed) in [10u64, 11].into_iter().enumerate() {
            let single =
                seeded_normal(&mut ChaCha8Rng::seed_from_u64(seed), &[1, 4, 3, 3], &device)
                    .unwrap();
            assert_eq!(
                values(&batch.narrow(0, row, 1).unwrap()),
                values(&single),
                "row {row}"
            );
        }
        let error = seeded_normal_batch(&mut rngs, &[3, 4], &device).unwrap_err();
        assert!(error.to_string().contains("needs 3 RNGs"), "{error}");
    }

    #[test]
    fn ddpm_class_name_read_from_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scheduler")).unwrap();
        std::fs::write(
            dir.path().join("scheduler/scheduler_config.json"),
            r#"{"_class_name": "DDPMScheduler", "timestep_spacing": "trailing", "prediction_type": "v_prediction"}"#,
        )
        .unwrap();
        let spec = SchedulerSpec::from_file(dir.path(), "scheduler/scheduler_config.json").unwrap();
        assert_eq!(spec.kind, SchedulerKind::Ddpm);
        assert!(matches!(spec.timestep_spacing, TimestepSpacing::Trailing));
        assert!(matches!(spec.prediction_type, PredictionType::VPrediction));
    }

    #[test]
    fn scheduler_names_round_trip() {
        for kind in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(SchedulerKind::from_name("pndm"), None);
    }
}
