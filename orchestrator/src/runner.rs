//! Runs jobs: takes them from the queue, loops through iterations of
//! generate-then-critique on the replica pools, and records every step in
//! the job store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redraft_proto::{
    Candidate, CandidateDone, CandidateProgress, CandidateRef, CandidateTimings, CheckKind,
    CritiqueRequest, GenerateRequest, GenerateTimingsSummary, GenerationParams, Image, Iteration,
    IterationStarted, Job, JobStatus, JobTotals, job_event,
};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::OrchestratorError;
use crate::calls;
use crate::metrics as orch_metrics;
use crate::pool::Pool;
use crate::store::JobStore;
use crate::strategy::{self, Budget, CandidatePlan};

/// Runs queued jobs on the replica pools.
pub struct Runner {
    store: Arc<JobStore>,
    generators: Arc<Pool>,
    critics: Arc<Pool>,
}

/// The reason a job's loop ended.
enum Ending {
    Satisfied,
    Exhausted(String),
    Failed(OrchestratorError),
    Cancelled,
    DeadlinePassed(f64),
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or_default()
}

impl Runner {
    /// Creates a runner over the store and pools.
    pub fn new(store: Arc<JobStore>, generators: Arc<Pool>, critics: Arc<Pool>) -> Arc<Self> {
        Arc::new(Self {
            store,
            generators,
            critics,
        })
    }

    /// Starts `workers` tasks that run jobs from `queue` one at a time each.
    pub fn start_workers(self: &Arc<Self>, workers: usize, queue: mpsc::Receiver<String>) {
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..workers {
            let runner = self.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().await.recv().await;
                    let Some(job_id) = next else { break };
                    orch_metrics::queue_depth(
                        runner
                            .store
                            .count_status(JobStatus::Queued)
                            .saturating_sub(1),
                    );
                    runner.run_job(&job_id).await;
                }
            });
        }
    }

    /// Runs one job to its end. A job cancelled while queued is skipped.
    pub async fn run_job(&self, job_id: &str) {
        let span = tracing::info_span!("job", job_id = %job_id);
        self.run_job_in_span(job_id).instrument(span).await;
    }

    async fn run_job_in_span(&self, job_id: &str) {
        let Ok(cancel) = self.store.cancel_token(job_id) else {
            return;
        };
        let started = self.store.update(job_id, |job| {
            if job.status != JobStatus::Queued as i32 {
                return None;
            }
            job.status = JobStatus::Running as i32;
            job.started_at = now_unix();
            Some(job_event::Event::Snapshot(job.clone()))
        });
        let Ok(job) = started else { return };
        if job.status != JobStatus::Running as i32 {
            return;
        }
        let policy = job
            .spec
            .clone()
            .unwrap_or_default()
            .policy
            .unwrap_or_default();
        let deadline = policy.deadline_seconds.unwrap_or(f64::MAX);
        let clock = Instant::now();
        let prompt = job
            .spec
            .as_ref()
            .map(|spec| spec.prompt.as_str())
            .unwrap_or_default();
        tracing::info!(%prompt, "job started");

        let ending = tokio::select! {
            ending = self.iterate(job_id, clock) => ending,
            _ = cancel.cancelled() => Ending::Cancelled,
            _ = tokio::time::sleep(Duration::from_secs_f64(deadline.min(1e9))) => Ending::DeadlinePassed(deadline),
        };
        self.finish(job_id, ending, clock);
    }

    async fn iterate(&self, job_id: &str, clock: Instant) -> Ending {
        let job = match self.store.get(job_id) {
            Ok(job) => job,
            Err(error) => return Ending::Failed(error),
        };
        let spec = job.spec.clone().unwrap_or_default();
        let strategy = strategy::for_spec(&spec);
        let policy = spec.policy.unwrap_or_default();
        let threshold = policy.threshold.unwrap_or_default();
        let max_iterations = policy.max_iterations.unwrap_or(1);
        let max_calls = policy.max_generator_calls.unwrap_or(1);
        let mut spent = 0;

        for index in 0..max_iterations {
            if spent >= max_calls {
                return Ending::Exhausted(format!(
                    "spent the budget of {max_calls} generator calls"
                ));
            }
            let job = match self.store.get(job_id) {
                Ok(job) => job,
                Err(error) => return Ending::Failed(error),
            };
            let budget = Budget {
                spent,
                left: max_calls - spent,
            };
            let decision = strategy.decide(&job, budget);
            spent += decision.candidates.len() as u32;

            // Look up the init images before anything is recorded.
            let mut plans = Vec::with_capacity(decision.candidates.len());
            for plan in decision.candidates {
                match init_image(&job, &plan) {
                    Ok(image) => plans.push((plan, image)),
                    Err(error) => return Ending::Failed(error),
                }
            }

            let iteration_started = Instant::now();
            let started = self.store.update(job_id, |job| {
                job.totals
                    .get_or_insert_with(JobTotals::default)
                    .budget_spent = spent;
                job.iterations.push(Iteration {
                    index,
                    action: decision.action as i32,
                    reason: decision.reason.clone(),
                    candidates: Vec::new(),
                    best_score: job.best_score,
                    seconds: 0.0,
                });
                Some(job_event::Event::IterationStarted(IterationStarted {
                    iteration: index,
                    action: decision.action as i32,
                    reason: decision.reason.clone(),
                    candidates: plans.len() as u32,
                }))
            });
            if let Err(error) = started {
                return Ending::Failed(error);
            }
            tracing::info!(iteration = index, action = ?decision.action, reason = %decision.reason, "iteration started");

            // Fan the candidates out; dropping the set aborts them all.
            let mut tasks = JoinSet::new();
            for (candidate_index, (plan, init)) in plans.into_iter().enumerate() {
                let context = CandidateContext {
                    store: self.store.clone(),
                    generators: self.generators.clone(),
                    critics: self.critics.clone(),
                    job_id: job_id.to_string(),
                    iteration: index,
                    index: candidate_index as u32,
                    prompt: spec.prompt.clone(),
                    params: spec.params.clone().unwrap_or_default(),
                };
                tasks.spawn(async move { context.run(plan, init).await }.in_current_span());
            }
            while let Some(joined) = tasks.join_next().await {
                let outcome = match joined {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        return Ending::Failed(OrchestratorError::BadResponse {
                            pool: "orchestrator",
                            address: "candidate task".to_string(),
                            message: error.to_string(),
                        });
                    }
                };
                if let Err(error) = outcome {
                    return Ending::Failed(error);
                }
            }

            let finished = self.store.update(job_id, |job| {
                let best_score = job.best_score;
                let iteration = job.iterations.last_mut()?;
                iteration
                    .candidates
                    .sort_by_key(|candidate| candidate.index);
                iteration.best_score = best_score;
                iteration.seconds = iteration_started.elapsed().as_secs_f64();
                job.totals
                    .get_or_insert_with(JobTotals::default)
                    .wall_seconds = clock.elapsed().as_secs_f64();
                Some(job_event::Event::IterationFinished(iteration.clone()))
            });
            let job = match finished {
                Ok(job) => job,
                Err(error) => return Ending::Failed(error),
            };
            tracing::info!(
                iteration = index,
                best_score = job.best_score,
                "iteration finished"
            );
            // Threshold 0 accepts any judged candidate, failed checks or not.
            let clean = best_candidate(&job).is_some_and(passes_every_check);
            if job.best.is_some() && job.best_score >= threshold && (clean || threshold <= 0.0) {
                return Ending::Satisfied;
            }
        }
        if spent >= max_calls {
            return Ending::Exhausted(format!("spent the budget of {max_calls} generator calls"));
        }
        Ending::Exhausted(format!("reached the iteration limit of {max_iterations}"))
    }

    fn finish(&self, job_id: &str, ending: Ending, clock: Instant) {
        let outcome = self.store.update(job_id, |job| {
            let (status, error) = match ending {
                Ending::Satisfied => (JobStatus::Satisfied, String::new()),
                Ending::Exhausted(reason) => {
                    tracing::info!(%reason, "job exhausted its budget");
                    (JobStatus::Exhausted, String::new())
                }
                Ending::Cancelled => (JobStatus::Cancelled, "cancelled by a client".to_string()),
                Ending::Failed(error) => (JobStatus::Failed, error.to_string()),
                Ending::DeadlinePassed(seconds) if job.best.is_some() => (
                    JobStatus::Exhausted,
                    format!("the deadline of {seconds} s passed"),
                ),
                Ending::DeadlinePassed(seconds) => (
                    JobStatus::Failed,
                    format!("the deadline of {seconds} s passed before any candidate was judged"),
                ),
            };
            // Candidates of an interrupted iteration stay recorded, in index order.
            if let Some(iteration) = job.iterations.last_mut() {
                iteration
                    .candidates
                    .sort_by_key(|candidate| candidate.index);
            }
            job.status = status as i32;
            job.error = error;
            job.finished_at = now_unix();
            job.totals
                .get_or_insert_with(JobTotals::default)
                .wall_seconds = clock.elapsed().as_secs_f64();
            Some(job_event::Event::Finished(job.clone()))
        });
        if let Ok(job) = outcome {
            let status = JobStatus::try_from(job.status).unwrap_or(JobStatus::Unspecified);
            orch_metrics::job_finished(status, job.iterations.len());
            if job.error.is_empty() {
                tracing::info!(
                    status = status.as_str_name(),
                    best_score = job.best_score,
                    iterations = job.iterations.len(),
                    "job finished"
                );
            } else {
                tracing::warn!(status = status.as_str_name(), error = %job.error, iterations = job.iterations.len(), "job finished");
            }
        }
    }
}

/// Inputs of one candidate task.
struct CandidateContext {
    store: Arc<JobStore>,
    generators: Arc<Pool>,
    critics: Arc<Pool>,
    job_id: String,
    iteration: u32,
    index: u32,
    /// The job's own prompt: every candidate is judged against it, whatever
    /// prompt the strategy sent to the generator.
    prompt: String,
    params: GenerationParams,
}

impl CandidateContext {
    /// Draws and judges one candidate, and records it in the job.
    async fn run(self, plan: CandidatePlan, init: Option<Image>) -> Result<(), OrchestratorError> {
        let request_id = format!("{}/{}/{}", self.job_id, self.iteration, self.index);
        let request = GenerateRequest {
            prompt: plan.prompt.clone(),
            negative_prompt: plan.negative_prompt.clone(),
            seed: Some(plan.seed),
            width: self.params.width,
            height: self.params.height,
            steps: self.params.steps,
            guidance_scale: self.params.guidance_scale,
            scheduler: self.params.scheduler.clone(),
            strength: plan.init.as_ref().map_or(0.0, |init| init.strength),
            init_image: init,
            request_id: request_id.clone(),
            ..Default::default()
        };
        let on_progress = |step: u32, total: u32| {
            // A progress event changes nothing in the job.
            let _ = self.store.update(&self.job_id, |_| {
                Some(job_event::Event::Progress(CandidateProgress {
                    iteration: self.iteration,
                    candidate: self.index,
                    step,
                    total_steps: total,
                }))
            });
        };
        let attempts = AtomicU32::new(0);
        let generated = calls::generate(&self.generators, request, &on_progress, &attempts).await;
        self.count_calls(&attempts, |totals, calls| totals.generator_calls += calls);
        let generated = generated?;
        let image =
            generated
                .result
                .image
                .clone()
                .ok_or_else(|| OrchestratorError::BadResponse {
                    pool: "generator",
                    address: generated.address.clone(),
                    message: "the result has no image".to_string(),
                })?;

        let attempts = AtomicU32::new(0);
        let request = CritiqueRequest {
            prompt: self.prompt.clone(),
            image: Some(image.clone()),
            request_id,
        };
        let judged = calls::critique(&self.critics, request, &attempts).await;
        self.count_calls(&attempts, |totals, calls| totals.critic_calls += calls);
        let judged = judged?;

        let resolved = generated.result.resolved.clone().unwrap_or_default();
        let stage = generated.result.timings.unwrap_or_default();
        let candidate = Candidate {
            index: self.index,
            seed: generated.result.seed,
            prompt: plan.prompt,
            params: Some(GenerationParams {
                negative_prompt: plan.negative_prompt,
                width: resolved.width,
                height: resolved.height,
                steps: resolved.steps,
                guidance_scale: resolved.guidance_scale,
                seed: Some(generated.result.seed),
                scheduler: resolved.scheduler,
            }),
            image: Some(image),
            critique: Some(judged.critique.clone()),
            timings: Some(CandidateTimings {
                generate_seconds: generated.seconds,
                critique_seconds: judged.seconds,
                generator: Some(GenerateTimingsSummary {
                    text_encode_seconds: stage.text_encode_seconds,
                    denoise_seconds: stage.denoise_seconds,
                    decode_seconds: stage.decode_seconds,
                }),
            }),
            generator: generated.address,
            critic: judged.address,
            init_from: plan.init.as_ref().map(|init| init.from),
            strength: plan.init.as_ref().map_or(0.0, |init| init.strength),
            action: plan.action as i32,
        };
        let score = judged.critique.score;
        tracing::info!(job_id = %self.job_id, iteration = self.iteration, candidate = self.index, seed = candidate.seed, score, "candidate judged");
        orch_metrics::candidate_done();

        self.store.update(&self.job_id, |job| {
            let iteration = job.iterations.get_mut(self.iteration as usize)?;
            iteration.candidates.push(candidate.clone());
            let rank = (passes_every_check(&candidate), score);
            let best_rank = best_candidate(job).map(|best| {
                let score = best
                    .critique
                    .as_ref()
                    .map_or(0.0, |critique| critique.score);
                (passes_every_check(best), score)
            });
            if best_rank.is_none_or(|best_rank| rank > best_rank) {
                job.best = Some(CandidateRef {
                    iteration: self.iteration,
                    candidate: self.index,
                });
                job.best_score = score;
            }
            Some(job_event::Event::Candidate(CandidateDone {
                iteration: self.iteration,
                candidate: Some(candidate),
                best_score: job.best_score,
            }))
        })?;
        Ok(())
    }

    /// Adds the attempts of a finished call to the job totals.
    fn count_calls(&self, attempts: &AtomicU32, add: impl FnOnce(&mut JobTotals, u32)) {
        let calls = attempts.load(Ordering::Relaxed);
        let _ = self.store.update(&self.job_id, |job| {
            add(job.totals.get_or_insert_with(JobTotals::default), calls);
            None
        });
    }
}

/// True when a candidate's critique failed no check: neither an image
/// quality check nor a check of a prompt part. A job is satisfied only by
/// such a candidate, and such candidates rank above any that failed a check,
/// because the score alone averages a failed count or relation away.
fn passes_every_check(candidate: &Candidate) -> bool {
    candidate.critique.as_ref().is_some_and(|critique| {
        critique.hard_checks_passed
            && critique
                .checks
                .iter()
                .all(|check| check.passed || check.kind == CheckKind::Alignment as i32)
    })
}

/// Returns the job's best candidate.
fn best_candidate(job: &Job) -> Option<&Candidate> {
    let best = job.best?;
    job.iterations
        .get(best.iteration as usize)?
        .candidates
        .iter()
        .find(|candidate| candidate.index == best.candidate)
}

/// Returns the image a plan refines, or `None` for text-to-image.
fn init_image(job: &Job, plan: &CandidatePlan) -> Result<Option<Image>, OrchestratorError> {
    let Some(init) = &plan.init else {
        return Ok(None);
    };
    job.iterations
        .get(init.from.iteration as usize)
        .and_then(|iteration| {
            iteration
                .candidates
                .iter()
                .find(|candidate| candidate.index == init.from.candidate)
        })
        .and_then(|candidate| candidate.image.clone())
        .map(Some)
        .ok_or_else(|| OrchestratorError::BadResponse {
            pool: "orchestrator",
            address: "strategy".to_string(),
            message: format!(
                "the strategy refines candidate {} of iteration {}, which has no image",
                init.from.candidate, init.from.iteration
            ),
        })
}

/// Creates a job record for a resolved spec.
pub fn new_job(spec: redraft_proto::JobSpec) -> Job {
    let base_seed = spec
        .params
        .as_ref()
        .and_then(|params| params.seed)
        .unwrap_or_else(rand::random);
    Job {
        id: uuid::Uuid::new_v4().to_string(),
        spec: Some(spec),
        status: JobStatus::Queued as i32,
        iterations: Vec::new(),
        best: None,
        best_score: 0.0,
        error: String::new(),
        totals: Some(JobTotals::default()),
        created_at: now_unix(),
        started_at: 0.0,
        finished_at: 0.0,
        base_seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redraft_proto::{Check, Critique};

    fn candidate(hard_checks_passed: bool, checks: Vec<(CheckKind, bool)>) -> Candidate {
        Candidate {
            critique: Some(Critique {
                hard_checks_passed,
                checks: checks
                    .into_iter()
                    .map(|(kind, passed)| Check {
                        kind: kind as i32,
                        passed,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_check_but_alignment_counts() {
        let all_pass = candidate(
            true,
            vec![(CheckKind::Presence, true), (CheckKind::Relation, true)],
        );
        assert!(passes_every_check(&all_pass));

        let weak_alignment = candidate(
            true,
            vec![(CheckKind::Alignment, false), (CheckKind::Count, true)],
        );
        assert!(passes_every_check(&weak_alignment));

        let wrong_relation = candidate(
            true,
            vec![(CheckKind::Presence, true), (CheckKind::Relation, false)],
        );
        assert!(!passes_every_check(&wrong_relation));

        let broken = candidate(false, vec![(CheckKind::Quality, false)]);
        assert!(!passes_every_check(&broken));

        assert!(!passes_every_check(&Candidate::default()));
    }
}
