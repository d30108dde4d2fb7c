//! Loop strategies: given a job's history, choose the next action and the
//! candidates to draw.

use redraft_proto::{Action, Job};

/// Settings of one candidate of the next iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidatePlan {
    /// Seed of the initial noise.
    pub seed: u64,
    /// The prompt sent to the generator.
    pub prompt: String,
    /// The negative prompt sent to the generator.
    pub negative_prompt: String,
}

/// The next iteration.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The action.
    pub action: Action,
    /// Why, in one sentence.
    pub reason: String,
    /// One plan per candidate.
    pub candidates: Vec<CandidatePlan>,
}

/// Chooses the next iteration from a job's history.
pub trait Strategy: Send + Sync {
    /// Plans iteration `job.iterations.len()` of `job`.
    fn decide(&self, job: &Job) -> Decision;
}

/// Best-of-N reseeding: every iteration draws N new seeds with the same
/// prompt, and the critic only ranks them.
pub struct BestOfN;

impl Strategy for BestOfN {
    fn decide(&self, job: &Job) -> Decision {
        let spec = job.spec.clone().unwrap_or_default();
        let params = spec.params.unwrap_or_default();
        let policy = spec.policy.unwrap_or_default();
        let per_iteration = policy.candidates_per_iteration.unwrap_or(1).max(1) as u64;
        let iteration = job.iterations.len() as u64;
        let reason = if iteration == 0 {
            format!("first iteration: draw {per_iteration} candidates from new seeds")
        } else {
            format!(
                "best score {:.3} is below the threshold {:.3}: draw {per_iteration} more candidates from new seeds",
                job.best_score,
                policy.threshold.unwrap_or_default()
            )
        };
        let candidates = (0..per_iteration)
            .map(|index| CandidatePlan {
                seed: job
                    .base_seed
                    .wrapping_add(iteration * per_iteration + index),
                prompt: spec.prompt.clone(),
                negative_prompt: params.negative_prompt.clone(),
            })
            .collect();
        Decision {
            action: Action::Reseed,
            reason,
            candidates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redraft_proto::{JobSpec, LoopPolicy};

    #[test]
    fn best_of_n_uses_fresh_seeds() {
        let mut job = Job {
            base_seed: 100,
            spec: Some(JobSpec {
                prompt: "a red circle".to_string(),
                params: None,
                policy: Some(LoopPolicy {
                    candidates_per_iteration: Some(3),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let first = BestOfN.decide(&job);
        let seeds: Vec<u64> = first.candidates.iter().map(|plan| plan.seed).collect();
        assert_eq!(seeds, vec![100, 101, 102]);
        assert_eq!(first.action, Action::Reseed);

        job.iterations.push(Default::default());
        let second = BestOfN.decide(&job);
        let seeds: Vec<u64> = second.candidates.iter().map(|plan| plan.seed).collect();
        assert_eq!(seeds, vec![103, 104, 105]);
        assert!(
            second
                .candidates
                .iter()
                .all(|plan| plan.prompt == "a red circle")
        );
    }
}
