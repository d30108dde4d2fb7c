//! Loop strategies: given a job's history and what is left of its budget,
//! choose the candidates of the next iteration and how to draw each one.

mod adaptive;
pub mod feedback;

use redraft_proto::{Action, Candidate, CandidateRef, Job, JobSpec, Strategy as StrategyKind};

pub use adaptive::Adaptive;
use feedback::{Findings, rewrite};

/// Lowest image-to-image strength a refinement uses: below it the
/// denoiser has too few steps to change a count or a colour.
pub const MIN_STRENGTH: f32 = 0.35;
/// Highest image-to-image strength a refinement uses: above it little of the
/// init image survives and a reseed is as good.
pub const MAX_STRENGTH: f32 = 0.8;

/// An image-to-image start for a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct InitPlan {
    /// The candidate whose image is the init image.
    pub from: CandidateRef,
    /// How much of it is re-noised, in (0, 1].
    pub strength: f32,
}

/// Settings of one candidate of the next iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidatePlan {
    /// Action that draws this candidate.
    pub action: Action,
    /// Seed of the initial noise.
    pub seed: u64,
    /// The prompt sent to the generator.
    pub prompt: String,
    /// The negative prompt sent to the generator.
    pub negative_prompt: String,
    /// Image-to-image start, or `None` for text-to-image.
    pub init: Option<InitPlan>,
}

/// The next iteration.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The action of most candidates.
    pub action: Action,
    /// Why, in one or two sentences.
    pub reason: String,
    /// One plan per candidate, at most the calls left in the budget.
    pub candidates: Vec<CandidatePlan>,
}

/// Generator calls of a job's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Calls charged so far; candidate `k` of the job uses seed `base_seed + k`.
    pub spent: u32,
    /// Calls left.
    pub left: u32,
}

/// Chooses the next iteration from a job's history.
pub trait Strategy: Send + Sync {
    /// Plans iteration `job.iterations.len()` of `job` with at most
    /// `budget.left` candidates.
    fn decide(&self, job: &Job, budget: Budget) -> Decision;
}

/// Returns the strategy of a resolved job spec.
pub fn for_spec(spec: &JobSpec) -> Box<dyn Strategy> {
    let kind = spec
        .policy
        .as_ref()
        .and_then(|policy| StrategyKind::try_from(policy.strategy).ok())
        .unwrap_or(StrategyKind::Unspecified);
    match kind {
        StrategyKind::BestOfN => Box::new(BestOfN),
        StrategyKind::Reprompt => Box::new(Reprompt),
        StrategyKind::Refine => Box::new(Refine),
        StrategyKind::Adaptive | StrategyKind::Unspecified => Box::new(Adaptive),
    }
}

/// A job as the strategies read it while they plan.
pub(crate) struct JobView<'a> {
    pub spec: JobSpec,
    pub job: &'a Job,
    pub budget: Budget,
    /// Candidates this iteration draws: the per-iteration count, cut to the budget.
    pub count: u32,
}

impl<'a> JobView<'a> {
    pub fn new(job: &'a Job, budget: Budget) -> Self {
        let spec = job.spec.clone().unwrap_or_default();
        let per_iteration = spec
            .policy
            .as_ref()
            .and_then(|policy| policy.candidates_per_iteration)
            .unwrap_or(1)
            .max(1);
        Self {
            spec,
            job,
            budget,
            count: per_iteration.min(budget.left),
        }
    }

    /// Seed of candidate `index` of the iteration being planned.
    pub fn seed(&self, index: u32) -> u64 {
        self.job
            .base_seed
            .wrapping_add(u64::from(self.budget.spent) + u64::from(index))
    }

    pub fn negative_prompt(&self) -> &str {
        self.spec
            .params
            .as_ref()
            .map(|params| params.negative_prompt.as_str())
            .unwrap_or_default()
    }

    pub fn threshold(&self) -> f32 {
        self.spec
            .policy
            .as_ref()
            .and_then(|policy| policy.threshold)
            .unwrap_or_default()
    }

    /// Returns the job's best candidate with its reference, if one was judged.
    pub fn best(&self) -> Option<(CandidateRef, &'a Candidate)> {
        let best = self.job.best?;
        let candidate = self
            .job
            .iterations
            .get(best.iteration as usize)?
            .candidates
            .iter()
            .find(|candidate| candidate.index == best.candidate)?;
        Some((best, candidate))
    }

    /// Reads the failed checks of the best candidate's critique.
    pub fn best_findings(&self) -> Option<(CandidateRef, Findings)> {
        let (reference, candidate) = self.best()?;
        let findings = Findings::from_critique(candidate.critique.as_ref()?);
        Some((reference, findings))
    }

    /// Plans candidate `index` as a reseed with the job's own prompt.
    pub fn reseed(&self, index: u32) -> CandidatePlan {
        CandidatePlan {
            action: Action::Reseed,
            seed: self.seed(index),
            prompt: self.spec.prompt.clone(),
            negative_prompt: self.negative_prompt().to_string(),
            init: None,
        }
    }

    /// Plans candidate `index` as new seeds with the prompt rewritten from
    /// `findings`.
    pub fn reprompt(&self, index: u32, findings: &Findings) -> CandidatePlan {
        let rewrite = rewrite(&self.spec.prompt, self.negative_prompt(), findings);
        CandidatePlan {
            action: Action::Reprompt,
            seed: self.seed(index),
            prompt: rewrite.prompt,
            negative_prompt: rewrite.negative_prompt,
            init: None,
        }
    }

    /// Plans candidate `index` as a refinement of `from` with the rewritten
    /// prompt, at a strength that grows with the share of failed checks.
    pub fn refine(&self, index: u32, from: CandidateRef, findings: &Findings) -> CandidatePlan {
        let rewrite = rewrite(&self.spec.prompt, self.negative_prompt(), findings);
        CandidatePlan {
            action: Action::Refine,
            seed: self.seed(index),
            prompt: rewrite.prompt,
            negative_prompt: rewrite.negative_prompt,
            init: Some(InitPlan {
                from,
                strength: refine_strength(findings),
            }),
        }
    }

    /// Decides to reseed every candidate.
    pub fn reseed_all(&self, reason: String) -> Decision {
        Decision {
            action: Action::Reseed,
            reason,
            candidates: (0..self.count).map(|index| self.reseed(index)).collect(),
        }
    }

    /// Returns the reason of a first iteration.
    pub fn first_reason(&self) -> String {
        format!(
            "first iteration: draw {} candidates from new seeds",
            self.count
        )
    }
}

/// Image-to-image strength for a draft with these findings: from
/// `MIN_STRENGTH` when nothing failed to `MAX_STRENGTH` when every part did.
pub fn refine_strength(findings: &Findings) -> f32 {
    MIN_STRENGTH + (MAX_STRENGTH - MIN_STRENGTH) * findings.failed_fraction().clamp(0.0, 1.0)
}

/// Best-of-N reseeding: every iteration draws new seeds with the same
/// prompt, and the critic only ranks them.
pub struct BestOfN;

impl Strategy for BestOfN {
    fn decide(&self, job: &Job, budget: Budget) -> Decision {
        let view = JobView::new(job, budget);
        if job.iterations.is_empty() {
            return view.reseed_all(view.first_reason());
        }
        let reason = format!(
            "best score {:.3} is below the threshold {:.3}: draw {} more candidates from new seeds",
            job.best_score,
            view.threshold(),
            view.count
        );
        view.reseed_all(reason)
    }
}

/// Reprompting: after the first iteration, new seeds with a prompt
/// rewritten from the best candidate's failed checks.
pub struct Reprompt;

impl Strategy for Reprompt {
    fn decide(&self, job: &Job, budget: Budget) -> Decision {
        let view = JobView::new(job, budget);
        if job.iterations.is_empty() {
            return view.reseed_all(view.first_reason());
        }
        let Some((_, findings)) = view
            .best_findings()
            .filter(|(_, findings)| !findings.failed.is_empty())
        else {
            return view.reseed_all(
                "the best candidate fails no prompt-part check to rewrite from: draw new seeds"
                    .to_string(),
            );
        };
        Decision {
            action: Action::Reprompt,
            reason: format!(
                "the best candidate fails {}: draw {} candidates with a rewritten prompt",
                findings.describe(),
                view.count
            ),
            candidates: (0..view.count)
                .map(|index| view.reprompt(index, &findings))
                .collect(),
        }
    }
}

/// Refinement: after the first iteration, image-to-image from the best
/// candidate with the rewritten prompt.
pub struct Refine;

impl Strategy for Refine {
    fn decide(&self, job: &Job, budget: Budget) -> Decision {
        let view = JobView::new(job, budget);
        if job.iterations.is_empty() {
            return view.reseed_all(view.first_reason());
        }
        let Some((from, findings)) = view
            .best_findings()
            .filter(|(_, findings)| !findings.quality_failed)
        else {
            return view.reseed_all(
                "the best candidate failed an image quality check, so it is no start for a refinement: draw new seeds"
                    .to_string(),
            );
        };
        let strength = refine_strength(&findings);
        let what = if findings.failed.is_empty() {
            "no prompt-part check".to_string()
        } else {
            findings.describe()
        };
        Decision {
            action: Action::Refine,
            reason: format!(
                "the best candidate fails {what}: refine it at strength {strength:.2} with {} seeds",
                view.count
            ),
            candidates: (0..view.count)
                .map(|index| view.refine(index, from, &findings))
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use redraft_proto::{
        Check, CheckKind, Critique, GenerationParams, Iteration, LoopPolicy, ProbeVariant,
    };

    pub fn job(prompt: &str, per_iteration: u32) -> Job {
        Job {
            base_seed: 100,
            spec: Some(JobSpec {
                prompt: prompt.to_string(),
                params: Some(GenerationParams {
                    negative_prompt: "blurry".to_string(),
                    ..Default::default()
                }),
                policy: Some(LoopPolicy {
                    candidates_per_iteration: Some(per_iteration),
                    threshold: Some(0.8),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// A failed count check: the image shows three, the prompt requests two.
    pub fn count_failure() -> Check {
        Check {
            kind: CheckKind::Count as i32,
            subject: "two red circles".to_string(),
            expected: "two".to_string(),
            observed: "three".to_string(),
            score: 0.2,
            passed: false,
            variants: vec![ProbeVariant {
                text: "three red circles".to_string(),
                probability: 0.8,
                value: "three".to_string(),
            }],
            ..Default::default()
        }
    }

    /// Appends an iteration of `action` whose candidates have `scores` and
    /// the given checks, and updates the job's best.
    pub fn push_iteration(job: &mut Job, action: Action, scores: &[f32], checks: &[Check]) {
        let index = job.iterations.len() as u32;
        let candidates: Vec<Candidate> = scores
            .iter()
            .enumerate()
            .map(|(candidate, score)| Candidate {
                index: candidate as u32,
                action: action as i32,
                critique: Some(Critique {
                    score: *score,
                    checks: checks.to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        for candidate in &candidates {
            let score = candidate.critique.as_ref().unwrap().score;
            if job.best.is_none() || score > job.best_score {
                job.best = Some(CandidateRef {
                    iteration: index,
                    candidate: candidate.index,
                });
                job.best_score = score;
            }
        }
        job.iterations.push(Iteration {
            index,
            action: action as i32,
            candidates,
            best_score: job.best_score,
            ..Default::default()
        });
    }

    #[test]
    fn best_of_n_uses_fresh_seeds() {
        let mut job = job("a red circle", 3);
        let first = BestOfN.decide(&job, Budget { spent: 0, left: 8 });
        let seeds: Vec<u64> = first.candidates.iter().map(|plan| plan.seed).collect();
        assert_eq!(seeds, vec![100, 101, 102]);
        assert_eq!(first.action, Action::Reseed);

        push_iteration(&mut job, Action::Reseed, &[0.1, 0.2, 0.3], &[]);
        let second = BestOfN.decide(&job, Budget { spent: 3, left: 5 });
        let seeds: Vec<u64> = second.candidates.iter().map(|plan| plan.seed).collect();
        assert_eq!(seeds, vec![103, 104, 105]);
        assert!(
            second
                .candidates
                .iter()
                .all(|plan| plan.prompt == "a red circle" && plan.init.is_none())
        );
    }

    #[test]
    fn plans_never_exceed_budget_left() {
        let mut job = job("two red circles", 3);
        push_iteration(
            &mut job,
            Action::Reseed,
            &[0.1, 0.2, 0.3],
            &[count_failure()],
        );
        let budget = Budget { spent: 3, left: 2 };
        let strategies: [Box<dyn Strategy>; 4] = [
            Box::new(BestOfN),
            Box::new(Reprompt),
            Box::new(Refine),
            Box::new(Adaptive),
        ];
        for strategy in strategies {
            assert_eq!(strategy.decide(&job, budget).candidates.len(), 2);
        }
    }

    #[test]
    fn reprompt_rewrites_from_best_candidate() {
        let mut job = job("a photo of two red circles", 2);
        push_iteration(&mut job, Action::Reseed, &[0.3, 0.5], &[count_failure()]);
        let decision = Reprompt.decide(&job, Budget { spent: 2, left: 6 });
        assert_eq!(decision.action, Action::Reprompt);
        assert_eq!(decision.candidates.len(), 2);
        let plan = &decision.candidates[0];
        assert_eq!(plan.prompt, "a photo of (two red circles:1.3)");
        assert_eq!(plan.negative_prompt, "blurry, three red circles");
        assert_eq!(plan.seed, 102);
        assert!(
            decision.reason.contains("shows three, asks two"),
            "{}",
            decision.reason
        );
    }

    #[test]
    fn reprompt_without_findings_reseeds() {
        let mut job = job("a red circle", 2);
        push_iteration(&mut job, Action::Reseed, &[0.3, 0.5], &[]);
        let decision = Reprompt.decide(&job, Budget { spent: 2, left: 6 });
        assert_eq!(decision.action, Action::Reseed);
        assert!(
            decision
                .candidates
                .iter()
                .all(|plan| plan.prompt == "a red circle")
        );
    }

    #[test]
    fn refine_starts_from_best_candidate() {
        let mut job = job("a photo of two red circles", 2);
        let passed = Check {
            kind: CheckKind::Presence as i32,
            passed: true,
            score: 0.9,
            ..Default::default()
        };
        push_iteration(
            &mut job,
            Action::Reseed,
            &[0.3, 0.5],
            &[count_failure(), passed],
        );
        let decision = Refine.decide(&job, Budget { spent: 2, left: 6 });
        assert_eq!(decision.action, Action::Refine);
        let init = decision.candidates[1].init.clone().unwrap();
        assert_eq!(
            init.from,
            CandidateRef {
                iteration: 0,
                candidate: 1
            }
        );
        // One of two prompt-part checks failed: halfway between the bounds.
        let halfway = (MIN_STRENGTH + MAX_STRENGTH) / 2.0;
        assert!((init.strength - halfway).abs() < 1e-6, "{}", init.strength);
    }

    #[test]
    fn refine_skips_unusable_start() {
        let mut job = job("a red circle", 2);
        let broken = Check {
            kind: CheckKind::Quality as i32,
            passed: false,
            ..Default::default()
        };
        push_iteration(&mut job, Action::Reseed, &[0.0, 0.0], &[broken]);
        let decision = Refine.decide(&job, Budget { spent: 2, left: 6 });
        assert_eq!(decision.action, Action::Reseed);
        assert!(decision.candidates.iter().all(|plan| plan.init.is_none()));
    }

    #[test]
    fn strategy_chosen_from_spec() {
        let mut job = job("a photo of two red circles", 1);
        push_iteration(&mut job, Action::Reseed, &[0.3], &[count_failure()]);
        for (kind, action) in [
            (StrategyKind::BestOfN, Action::Reseed),
            (StrategyKind::Reprompt, Action::Reprompt),
            (StrategyKind::Refine, Action::Refine),
            (StrategyKind::Adaptive, Action::Reprompt),
            (StrategyKind::Unspecified, Action::Reprompt),
        ] {
            job.spec.as_mut().unwrap().policy.as_mut().unwrap().strategy = kind as i32;
            let strategy = for_spec(job.spec.as_ref().unwrap());
            let decision = strategy.decide(&job, Budget { spent: 1, left: 1 });
            assert_eq!(decision.action, action, "{kind:?}");
        }
    }
}
