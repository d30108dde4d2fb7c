//! `redraft generate`: one self-review job, from prompt to files on disk.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use redraft_proto::{
    CancelJobRequest, GenerationParams, Job, JobSpec, JobStatus, LoopPolicy, SubmitJobRequest,
    job_event,
};

use redraft_common::serving::ShutdownSignals;

use crate::stack::{self, StackConfig};
use crate::{LogArgs, StrategyArg};

/// Exit code of a job that ended FAILED (clap uses 2 for usage errors).
pub const EXIT_FAILED: u8 = 3;
/// Exit code of a job that ended CANCELLED.
pub const EXIT_CANCELLED: u8 = 4;

/// Flags of `redraft generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The text prompt.
    pub prompt: String,

    /// Output folder for final.png, candidates/ and report.json. Those three are
    /// replaced if they exist; other files in the folder are left alone.
    #[arg(long, short)]
    pub out: PathBuf,

    /// Orchestrator address, for example http://127.0.0.1:50050 or 127.0.0.1:50050. Without
    /// it, redraft starts its own actors on free loopback ports for this command.
    #[arg(long, env = "REDRAFT_ORCHESTRATOR")]
    pub orchestrator: Option<String>,

    /// Negative prompt: content the image should not show.
    #[arg(long, default_value = "")]
    pub negative_prompt: String,

    /// Seed of the first candidate; later candidates use the following seeds. Default: random.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Image width in pixels, a multiple of 8 up to 1024. Default: the model's.
    #[arg(long)]
    pub width: Option<u32>,

    /// Image height in pixels, a multiple of 8 up to 1024. Default: the model's.
    #[arg(long)]
    pub height: Option<u32>,

    /// Denoising steps, 1 to 150. Default: the model's.
    #[arg(long)]
    pub steps: Option<u32>,

    /// Classifier-free guidance scale, 0 to 50. Default: the model's.
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f32>,

    /// Critic score in [0, 1] at which the job is satisfied.
    #[arg(long, default_value_t = redraft_orchestrator::spec::DEFAULT_THRESHOLD)]
    pub threshold: f32,

    /// Iteration limit, 1 to 32.
    #[arg(long, default_value_t = redraft_orchestrator::spec::DEFAULT_MAX_ITERATIONS)]
    pub max_iterations: u32,

    /// Candidates drawn per iteration, 1 to 16.
    #[arg(long, default_value_t = redraft_orchestrator::spec::DEFAULT_CANDIDATES)]
    pub candidates: u32,

    /// Strategy the loop spends its budget with.
    #[arg(long, value_enum, default_value_t = StrategyArg::Adaptive)]
    pub strategy: StrategyArg,

    /// Budget in generator calls (one per candidate), 1 to 256. Default: max
    /// iterations times candidates.
    #[arg(long)]
    pub budget: Option<u32>,

    /// Wall-clock budget in seconds, above 0 and at most 3600. Default: the maximum.
    #[arg(long, allow_negative_numbers = true)]
    pub deadline: Option<f64>,

    /// Generator model folder for the local actors. Default: models/shapes-v1/generator, else tiny models.
    #[arg(long, env = "REDRAFT_GENERATOR_MODEL")]
    pub generator_model: Option<PathBuf>,

    /// Critic model folder for the local actors. Default: models/shapes-v1/critic, else tiny models.
    #[arg(long, env = "REDRAFT_CRITIC_MODEL")]
    pub critic_model: Option<PathBuf>,

    /// Log filter of the local actors.
    #[arg(long, default_value = "warn")]
    pub actor_log_level: String,

    #[command(flatten)]
    pub log: LogArgs,
}

impl GenerateArgs {
    fn spec(&self) -> JobSpec {
        JobSpec {
            prompt: self.prompt.clone(),
            params: Some(GenerationParams {
                negative_prompt: self.negative_prompt.clone(),
                width: self.width.unwrap_or(0),
                height: self.height.unwrap_or(0),
                steps: self.steps,
                guidance_scale: self.guidance,
                seed: self.seed,
                scheduler: String::new(),
            }),
            policy: Some(LoopPolicy {
                threshold: Some(self.threshold),
                max_iterations: Some(self.max_iterations),
                candidates_per_iteration: Some(self.candidates),
                deadline_seconds: self.deadline,
                strategy: self.strategy.to_proto() as i32,
                max_generator_calls: self.budget,
            }),
        }
    }
}

/// Runs `redraft generate`.
pub async fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let mut signals = ShutdownSignals::install()?;
    prepare_out(&args.out)?;
    if let Some(url) = args.orchestrator.clone() {
        return run_job(&url, &args, &mut signals).await;
    }

    // Check the flags before any actor starts.
    let limits = redraft_orchestrator::spec::SpecLimits::defaults();
    redraft_orchestrator::spec::resolve(Some(args.spec()), &limits)
        .map_err(|error| anyhow::anyhow!(flag_names(&error.to_string())))?;

    // Start private actors for the duration of the command.
    let launcher = crate::up::launcher(600.0, 5.0, &args.log, &args.actor_log_level)?;
    let models = crate::models::resolve(args.generator_model.clone(), args.critic_model.clone())?;
    let config = StackConfig {
        models,
        generators: 1,
        critics: 1,
        orchestrator_listen: "127.0.0.1:0".parse().expect("a valid socket address"),
        orchestrator_args: Vec::new(),
    };
    tracing::info!("starting local actors");
    let mut stack = tokio::select! {
        stack = stack::start(&launcher, &config) => stack?,
        signal = signals.recv() => anyhow::bail!("received {signal} while starting; stopped the actors"),
    };
    let outcome = tokio::select! {
        outcome = run_job(&stack.orchestrator_url, &args, &mut signals) => outcome,
        (name, status) = stack::first_exit(&mut stack.actors) => {
            Err(anyhow::anyhow!("local {name} exited unexpectedly ({status})"))
        }
    };
    launcher.stop_all(&mut stack.actors).await;
    outcome
}

async fn run_job(
    url: &str,
    args: &GenerateArgs,
    signals: &mut ShutdownSignals,
) -> anyhow::Result<ExitCode> {
    let mut client = crate::connect_orchestrator(url).await?;
    let mut stream = client
        .generate(SubmitJobRequest {
            spec: Some(args.spec()),
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "the orchestrator rejected the job: {}",
                flag_names(status.message())
            )
        })?
        .into_inner();

    let progress = ProgressBar::new(args.max_iterations as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} iteration {pos}/{len} [{bar:30}] {msg} ({elapsed})",
        )
        .expect("the progress template is valid")
        .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(120));
    progress.set_message("best score -");

    let mut job_id = String::new();
    let mut cancel_sent = false;
    let finished: Job = loop {
        let message = tokio::select! {
            message = stream.message() => message,
            signal = signals.recv(), if !cancel_sent && !job_id.is_empty() => {
                progress.println(format!("received {signal}; cancelling the job"));
                cancel_sent = true;
                client.cancel_job(CancelJobRequest { job_id: job_id.clone() }).await?;
                continue;
            }
        };
        let Some(event) =
            message.map_err(|status| anyhow::anyhow!("job stream failed: {}", status.message()))?
        else {
            anyhow::bail!("the orchestrator closed the job stream before the job finished");
        };
        job_id = event.job_id.clone();
        match event.event {
            Some(job_event::Event::Snapshot(job)) => {
                progress.set_position(job.iterations.len() as u64);
            }
            Some(job_event::Event::IterationStarted(started)) => {
                progress.set_position(started.iteration as u64);
            }
            Some(job_event::Event::Progress(step)) => {
                progress.set_message(format!(
                    "candidate {} step {}/{}",
                    step.candidate + 1,
                    step.step,
                    step.total_steps
                ));
            }
            Some(job_event::Event::Candidate(done)) => {
                progress.set_message(format!("best score {:.3}", done.best_score));
            }
            Some(job_event::Event::IterationFinished(iteration)) => {
                progress.set_position(iteration.index as u64 + 1);
                progress.set_message(format!("best score {:.3}", iteration.best_score));
            }
            Some(job_event::Event::Finished(job)) => break job,
            None => {}
        }
    };
    progress.finish_and_clear();

    let written = crate::report::write(&args.out, &finished)
        .with_context(|| format!("failed to write the results to {}", args.out.display()))?;
    let status = JobStatus::try_from(finished.status).unwrap_or(JobStatus::Unspecified);
    let iterations = finished.iterations.len();
    match status {
        JobStatus::Satisfied | JobStatus::Exhausted => {
            let verdict = if status == JobStatus::Satisfied {
                "satisfied"
            } else {
                "exhausted"
            };
            println!(
                "{verdict} after {iterations} iteration(s): best score {:.3}",
                finished.best_score
            );
            if let Some(path) = &written.final_image {
                println!("final image: {}", path.display());
            }
            println!("report: {}", written.report.display());
            Ok(ExitCode::SUCCESS)
        }
        JobStatus::Cancelled => {
            eprintln!("job {} was cancelled: {}", finished.id, finished.error);
            eprintln!("report: {}", written.report.display());
            Ok(ExitCode::from(EXIT_CANCELLED))
        }
        _ => {
            eprintln!("job {} failed: {}", finished.id, finished.error);
            eprintln!("report: {}", written.report.display());
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

/// Rewrites the job spec's field names in a message into the flags that set them.
fn flag_names(message: &str) -> String {
    const FLAGS: [(&str, &str); 12] = [
        ("spec.params.negative_prompt", "--negative-prompt"),
        ("spec.params.width", "--width"),
        ("spec.params.height", "--height"),
        ("spec.params.steps", "--steps"),
        ("spec.params.guidance_scale", "--guidance"),
        ("spec.policy.threshold", "--threshold"),
        ("spec.policy.max_iterations", "--max-iterations"),
        ("spec.policy.candidates_per_iteration", "--candidates"),
        ("spec.policy.deadline_seconds", "--deadline"),
        ("spec.policy.max_generator_calls", "--budget"),
        ("spec.policy.strategy", "--strategy"),
        ("spec.prompt", "PROMPT"),
    ];
    FLAGS
        .iter()
        .fold(message.to_string(), |message, (field, flag)| {
            message.replace(field, flag)
        })
}

/// Creates the output folder, or fails before any work when it cannot be
/// used, and removes the results of an earlier run in it.
fn prepare_out(out: &std::path::Path) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        anyhow::bail!("--out {}: exists and is not a folder", out.display());
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: failed to create the folder", out.display()))?;
    for stale in ["final.png", "report.json"] {
        let path = out.join(stale);
        if path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("failed to remove the old {}", path.display()))?;
        }
    }
    let candidates = out.join("candidates");
    if candidates.is_dir() {
        std::fs::remove_dir_all(&candidates)
            .with_context(|| format!("failed to remove the old {}", candidates.display()))?;
    }
    Ok(())
}
