//! Writing a finished job to disk: `final.png`, every candidate under
//! `candidates/`, and `report.json` (schema in docs/report.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use redraft_proto::{Action, Candidate, CheckKind, Job, JobStatus, Strategy};
use serde_json::{Value, json};

/// Version of the report.json schema.
pub const REPORT_VERSION: u32 = 1;

/// Paths written for a job.
#[derive(Debug)]
pub struct Written {
    /// `final.png`, when the job has a best candidate.
    pub final_image: Option<PathBuf>,
    /// `report.json`.
    pub report: PathBuf,
}

/// File name of a candidate's image under `candidates/`.
pub fn candidate_file(iteration: u32, candidate: &Candidate) -> String {
    format!(
        "iter{iteration:02}-cand{:02}-seed{}.png",
        candidate.index, candidate.seed
    )
}

/// Writes the job's images and report into `out`, creating it.
pub fn write(out: &Path, job: &Job) -> anyhow::Result<Written> {
    let candidates_dir = out.join("candidates");
    std::fs::create_dir_all(&candidates_dir)
        .with_context(|| format!("failed to create {}", candidates_dir.display()))?;

    for iteration in &job.iterations {
        for candidate in &iteration.candidates {
            if let Some(image) = &candidate.image {
                let path = candidates_dir.join(candidate_file(iteration.index, candidate));
                std::fs::write(&path, &image.png)
                    .with_context(|| format!("failed to write {}", path.display()))?;
            }
        }
    }

    let final_image = match best_candidate(job) {
        Some((_, candidate)) => {
            let image = candidate
                .image
                .as_ref()
                .context("the best candidate has no image")?;
            let path = out.join("final.png");
            std::fs::write(&path, &image.png)
                .with_context(|| format!("failed to write {}", path.display()))?;
            Some(path)
        }
        None => None,
    };

    let report = out.join("report.json");
    let text = serde_json::to_string_pretty(&report_json(job)).expect("json values serialise");
    std::fs::write(&report, text + "\n")
        .with_context(|| format!("failed to write {}", report.display()))?;
    Ok(Written {
        final_image,
        report,
    })
}

/// The best candidate and its iteration index.
pub fn best_candidate(job: &Job) -> Option<(u32, &Candidate)> {
    let best = job.best.as_ref()?;
    let iteration = job.iterations.get(best.iteration as usize)?;
    let candidate = iteration
        .candidates
        .iter()
        .find(|candidate| candidate.index == best.candidate)?;
    Some((best.iteration, candidate))
}

fn status_name(status: i32) -> String {
    JobStatus::try_from(status)
        .map(|status| {
            status
                .as_str_name()
                .trim_start_matches("JOB_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({status})"))
}

/// A float as JSON with its shortest decimal form, so 0.8 stays 0.8
/// instead of becoming 0.800000011920929.
fn short(value: f32) -> Value {
    value
        .to_string()
        .parse::<f64>()
        .map(Value::from)
        .unwrap_or(Value::Null)
}

/// The report.json document for `job`.
pub fn report_json(job: &Job) -> Value {
    let spec = job.spec.clone().unwrap_or_default();
    let params = spec.params.unwrap_or_default();
    let policy = spec.policy.unwrap_or_default();
    let totals = job.totals.unwrap_or_default();
    let iterations: Vec<Value> = job
        .iterations
        .iter()
        .map(|iteration| {
            json!({
                "index": iteration.index,
                "action": action_name(iteration.action),
                "reason": iteration.reason,
                "best_score": short(iteration.best_score),
                "seconds": iteration.seconds,
                "candidates": iteration.candidates.iter().map(|candidate| candidate_json(iteration.index, candidate)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let best = best_candidate(job).map(|(iteration, candidate)| {
        json!({
            "iteration": iteration,
            "candidate": candidate.index,
            "seed": candidate.seed,
            "score": short(job.best_score),
            "image": format!("candidates/{}", candidate_file(iteration, candidate)),
        })
    });
    json!({
        "report_version": REPORT_VERSION,
        "job_id": job.id,
        "status": status_name(job.status),
        "error": if job.error.is_empty() { Value::Null } else { Value::from(job.error.clone()) },
        "prompt": spec.prompt,
        "params": {
            "negative_prompt": params.negative_prompt,
            "width": params.width,
            "height": params.height,
            "steps": params.steps,
            "guidance_scale": params.guidance_scale.map(short),
            "base_seed": job.base_seed,
            "scheduler": params.scheduler,
        },
        "policy": {
            "strategy": Strategy::try_from(policy.strategy)
                .map(|strategy| strategy.as_str_name().trim_start_matches("STRATEGY_").to_lowercase())
                .unwrap_or_default(),
            "threshold": policy.threshold.map(short),
            "max_iterations": policy.max_iterations,
            "candidates_per_iteration": policy.candidates_per_iteration,
            "deadline_seconds": policy.deadline_seconds,
            "max_generator_calls": policy.max_generator_calls,
        },
        "iterations": iterations,
        "best": best,
        "best_score": short(job.best_score),
        "totals": {
            "generator_calls": totals.generator_calls,
            "critic_calls": totals.critic_calls,
            "budget_spent": totals.budget_spent,
            "wall_seconds": totals.wall_seconds,
        },
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    })
}

/// Returns the report's name of an `Action` value, such as "reseed".
pub fn action_name(action: i32) -> String {
    Action::try_from(action)
        .map(|action| {
            action
                .as_str_name()
                .trim_start_matches("ACTION_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

fn candidate_json(iteration: u32, candidate: &Candidate) -> Value {
    let params = candidate.params.clone().unwrap_or_default();
    let critique = candidate.critique.clone().unwrap_or_default();
    let timings = candidate.timings.unwrap_or_default();
    let stages = timings.generator.unwrap_or_default();
    let init_from = candidate.init_from.map(|from| {
        json!({
            "iteration": from.iteration,
            "candidate": from.candidate,
        })
    });
    json!({
        "index": candidate.index,
        "action": action_name(candidate.action),
        "init_from": init_from,
        "strength": short(candidate.strength),
        "seed": candidate.seed,
        "prompt": candidate.prompt,
        "negative_prompt": params.negative_prompt,
        "width": params.width,
        "height": params.height,
        "steps": params.steps,
        "guidance_scale": params.guidance_scale.map(short),
        "scheduler": params.scheduler,
        "score": short(critique.score),
        "summary": critique.summary,
        "hard_checks_passed": critique.hard_checks_passed,
        "checks": critique.checks.iter().map(|check| json!({
            "kind": CheckKind::try_from(check.kind)
                .map(|kind| kind.as_str_name().trim_start_matches("CHECK_KIND_").to_lowercase())
                .unwrap_or_default(),
            "subject": check.subject,
            "expected": check.expected,
            "observed": check.observed,
            "score": short(check.score),
            "passed": check.passed,
            "hard": check.hard,
            "weight": short(check.weight),
            "feedback": check.feedback,
        })).collect::<Vec<_>>(),
        "image": format!("candidates/{}", candidate_file(iteration, candidate)),
        "generator": candidate.generator,
        "critic": candidate.critic,
        "timings": {
            "generate_seconds": timings.generate_seconds,
            "critique_seconds": timings.critique_seconds,
            "text_encode_seconds": stages.text_encode_seconds,
            "denoise_seconds": stages.denoise_seconds,
            "decode_seconds": stages.decode_seconds,
        },
    })
}
