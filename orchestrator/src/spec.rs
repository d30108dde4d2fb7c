//! Validation of submitted jobs, with the defaults of a loop policy.

use redraft_common::InvalidArgument;
use redraft_common::invalid::check_prompt;
use redraft_proto::{GenerationParams, JobSpec, LoopPolicy, Strategy};

/// Threshold used when a job leaves it unset.
pub const DEFAULT_THRESHOLD: f32 = 0.8;
/// Iteration limit used when a job leaves it unset.
pub const DEFAULT_MAX_ITERATIONS: u32 = 4;
/// Candidates per iteration used when a job leaves it unset.
pub const DEFAULT_CANDIDATES: u32 = 2;
/// Strategy used when a job leaves it unset.
pub const DEFAULT_STRATEGY: Strategy = Strategy::Adaptive;
/// Image sides must be a multiple of this (the VAE's 8x down-sampling);
/// generators may require a larger multiple and reject the request.
pub const SIDE_MULTIPLE: u32 = 8;

/// Server-side limits on jobs.
#[derive(Debug, Clone)]
pub struct SpecLimits {
    /// Maximum prompt length in characters.
    pub max_prompt_chars: usize,
    /// Largest image width or height.
    pub max_side: u32,
    /// Largest number of denoising steps.
    pub max_steps: u32,
    /// Largest iteration limit.
    pub max_iterations: u32,
    /// Largest number of candidates per iteration.
    pub max_candidates: u32,
    /// Largest budget in generator calls.
    pub max_generator_calls: u32,
    /// Largest deadline in seconds.
    pub max_deadline_seconds: f64,
}

impl SpecLimits {
    /// The orchestrator's default limits, as its flags set them.
    pub fn defaults() -> Self {
        Self {
            max_prompt_chars: 1000,
            max_side: 1024,
            max_steps: 150,
            max_iterations: 32,
            max_candidates: 16,
            max_generator_calls: 256,
            max_deadline_seconds: 3600.0,
        }
    }
}

/// Checks a submitted spec and fills in the policy defaults.
pub fn resolve(spec: Option<JobSpec>, limits: &SpecLimits) -> Result<JobSpec, InvalidArgument> {
    let spec =
        spec.ok_or_else(|| InvalidArgument::new("spec", "unset", "a job spec with a prompt"))?;
    check_prompt("spec.prompt", &spec.prompt, limits.max_prompt_chars)?;
    let params = resolve_params(spec.params.unwrap_or_default(), limits)?;
    let policy = resolve_policy(spec.policy.unwrap_or_default(), limits)?;
    Ok(JobSpec {
        prompt: spec.prompt,
        params: Some(params),
        policy: Some(policy),
    })
}

fn resolve_params(
    params: GenerationParams,
    limits: &SpecLimits,
) -> Result<GenerationParams, InvalidArgument> {
    let negative_chars = params.negative_prompt.chars().count();
    if negative_chars > limits.max_prompt_chars {
        return Err(InvalidArgument::new(
            "spec.params.negative_prompt",
            format!("text of {negative_chars} characters"),
            format!("at most {} characters", limits.max_prompt_chars),
        ));
    }
    for (field, value) in [
        ("spec.params.width", params.width),
        ("spec.params.height", params.height),
    ] {
        if value != 0 && (value % SIDE_MULTIPLE != 0 || value > limits.max_side) {
            return Err(InvalidArgument::new(
                field,
                value,
                format!(
                    "0 (model default) or a multiple of {SIDE_MULTIPLE} up to {}",
                    limits.max_side
                ),
            ));
        }
    }
    if let Some(steps) = params.steps
        && (steps == 0 || steps > limits.max_steps)
    {
        return Err(InvalidArgument::new(
            "spec.params.steps",
            steps,
            format!("from 1 to {}", limits.max_steps),
        ));
    }
    if let Some(scale) = params.guidance_scale
        && !(0.0..=50.0).contains(&scale)
    {
        return Err(InvalidArgument::new(
            "spec.params.guidance_scale",
            scale,
            "from 0 to 50",
        ));
    }
    Ok(params)
}

fn resolve_policy(policy: LoopPolicy, limits: &SpecLimits) -> Result<LoopPolicy, InvalidArgument> {
    let threshold = policy.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(InvalidArgument::new(
            "spec.policy.threshold",
            threshold,
            "in [0, 1]",
        ));
    }
    let max_iterations = policy.max_iterations.unwrap_or(DEFAULT_MAX_ITERATIONS);
    if max_iterations == 0 || max_iterations > limits.max_iterations {
        return Err(InvalidArgument::new(
            "spec.policy.max_iterations",
            max_iterations,
            format!("from 1 to {}", limits.max_iterations),
        ));
    }
    let candidates = policy
        .candidates_per_iteration
        .unwrap_or(DEFAULT_CANDIDATES);
    if candidates == 0 || candidates > limits.max_candidates {
        return Err(InvalidArgument::new(
            "spec.policy.candidates_per_iteration",
            candidates,
            format!("from 1 to {}", limits.max_candidates),
        ));
    }
    let deadline = policy
        .deadline_seconds
        .unwrap_or(limits.max_deadline_seconds);
    if !(deadline > 0.0 && deadline <= limits.max_deadline_seconds) {
        return Err(InvalidArgument::new(
            "spec.policy.deadline_seconds",
            deadline,
            format!("above 0 and at most {}", limits.max_deadline_seconds),
        ));
    }
    let strategy = match Strategy::try_from(policy.strategy) {
        Ok(Strategy::Unspecified) => DEFAULT_STRATEGY,
        Ok(strategy) => strategy,
        Err(_) => {
            return Err(InvalidArgument::new(
                "spec.policy.strategy",
                policy.strategy,
                "a known Strategy value (BEST_OF_N, REPROMPT, REFINE or ADAPTIVE)",
            ));
        }
    };
    let max_generator_calls = policy.max_generator_calls.unwrap_or_else(|| {
        max_iterations
            .saturating_mul(candidates)
            .min(limits.max_generator_calls)
    });
    if max_generator_calls == 0 || max_generator_calls > limits.max_generator_calls {
        return Err(InvalidArgument::new(
            "spec.policy.max_generator_calls",
            max_generator_calls,
            format!("from 1 to {}", limits.max_generator_calls),
        ));
    }
    Ok(LoopPolicy {
        threshold: Some(threshold),
        max_iterations: Some(max_iterations),
        candidates_per_iteration: Some(candidates),
        deadline_seconds: Some(deadline),
        strategy: strategy as i32,
        max_generator_calls: Some(max_generator_calls),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SpecLimits {
        SpecLimits {
            max_prompt_chars: 100,
            max_side: 1024,
            max_steps: 150,
            max_iterations: 16,
            max_candidates: 8,
            max_generator_calls: 64,
            max_deadline_seconds: 600.0,
        }
    }

    fn spec() -> JobSpec {
        JobSpec {
            prompt: "a red circle".to_string(),
            params: None,
            policy: None,
        }
    }

    #[test]
    fn defaults_filled_in() {
        let policy = resolve(Some(spec()), &limits()).unwrap().policy.unwrap();
        assert_eq!(policy.threshold, Some(DEFAULT_THRESHOLD));
        assert_eq!(policy.max_iterations, Some(DEFAULT_MAX_ITERATIONS));
        assert_eq!(policy.candidates_per_iteration, Some(DEFAULT_CANDIDATES));
        assert_eq!(policy.deadline_seconds, Some(600.0));
        assert_eq!(policy.strategy, Strategy::Adaptive as i32);
        assert_eq!(
            policy.max_generator_calls,
            Some(DEFAULT_MAX_ITERATIONS * DEFAULT_CANDIDATES)
        );
    }

    #[test]
    fn bad_fields_named() {
        let with_params = |params: GenerationParams| JobSpec {
            params: Some(params),
            ..spec()
        };
        let with_policy = |policy: LoopPolicy| JobSpec {
            policy: Some(policy),
            ..spec()
        };
        let cases = vec![
            (
                JobSpec {
                    prompt: String::new(),
                    ..spec()
                },
                "spec.prompt",
            ),
            (
                JobSpec {
                    prompt: "x".repeat(101),
                    ..spec()
                },
                "spec.prompt",
            ),
            (
                with_params(GenerationParams {
                    width: 100,
                    ..Default::default()
                }),
                "spec.params.width",
            ),
            (
                with_params(GenerationParams {
                    height: 2048,
                    ..Default::default()
                }),
                "spec.params.height",
            ),
            (
                with_params(GenerationParams {
                    steps: Some(0),
                    ..Default::default()
                }),
                "spec.params.steps",
            ),
            (
                with_params(GenerationParams {
                    steps: Some(151),
                    ..Default::default()
                }),
                "spec.params.steps",
            ),
            (
                with_params(GenerationParams {
                    guidance_scale: Some(f32::NAN),
                    ..Default::default()
                }),
                "spec.params.guidance_scale",
            ),
            (
                with_policy(LoopPolicy {
                    threshold: Some(1.5),
                    ..Default::default()
                }),
                "spec.policy.threshold",
            ),
            (
                with_policy(LoopPolicy {
                    threshold: Some(-0.1),
                    ..Default::default()
                }),
                "spec.policy.threshold",
            ),
            (
                with_policy(LoopPolicy {
                    max_iterations: Some(0),
                    ..Default::default()
                }),
                "spec.policy.max_iterations",
            ),
            (
                with_policy(LoopPolicy {
                    max_iterations: Some(17),
                    ..Default::default()
                }),
                "spec.policy.max_iterations",
            ),
            (
                with_policy(LoopPolicy {
                    candidates_per_iteration: Some(0),
                    ..Default::default()
                }),
                "spec.policy.candidates_per_iteration",
            ),
            (
                with_policy(LoopPolicy {
                    candidates_per_iteration: Some(9),
                    ..Default::default()
                }),
                "spec.policy.candidates_per_iteration",
            ),
            (
                with_policy(LoopPolicy {
                    max_generator_calls: Some(0),
                    ..Default::default()
                }),
                "spec.policy.max_generator_calls",
            ),
            (
                with_policy(LoopPolicy {
                    max_generator_calls: Some(65),
                    ..Default::default()
                }),
                "spec.policy.max_generator_calls",
            ),
            (
                with_policy(LoopPolicy {
                    deadline_seconds: Some(0.0),
                    ..Default::default()
                }),
                "spec.policy.deadline_seconds",
            ),
            (
                with_policy(LoopPolicy {
                    deadline_seconds: Some(601.0),
                    ..Default::default()
                }),
                "spec.policy.deadline_seconds",
            ),
            (
                with_policy(LoopPolicy {
                    strategy: 99,
                    ..Default::default()
                }),
                "spec.policy.strategy",
            ),
        ];
        for (spec, field) in cases {
            let error = resolve(Some(spec), &limits()).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
        assert_eq!(resolve(None, &limits()).unwrap_err().field, "spec");
    }
}
