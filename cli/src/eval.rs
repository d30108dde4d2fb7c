//! `redraft eval`: runs prompts through real actors with a strategy and a
//! budget of generator calls, judges each final image with the shapes
//! oracle, and reports accuracy per category, calls and seconds; or sweeps
//! several strategies and budgets and plots accuracy against budget.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use redraft_proto::orchestrator_client::OrchestratorClient;
use redraft_proto::{
    GenerationParams, Job, JobSpec, JobStatus, LoopPolicy, SubmitJobRequest, job_event,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::eval_report::{self, RunSummary};
use crate::stack::{self, StackConfig};
use crate::{LogArgs, StrategyArg};

/// A strategy as `redraft eval` names it: the loop strategies plus
/// single-shot, which is best-of-N with a budget of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalStrategy {
    /// One generator call, no review: the baseline.
    SingleShot,
    /// New seeds each iteration; the critic only ranks.
    BestOfN,
    /// New seeds with a prompt rewritten from the failed checks.
    Reprompt,
    /// Image-to-image from the best candidate with the rewritten prompt.
    Refine,
    /// Reseed, reprompt or refine, chosen from the checks and earlier gains.
    Adaptive,
}

impl EvalStrategy {
    /// Returns the name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleShot => "single-shot",
            Self::BestOfN => "best-of-n",
            Self::Reprompt => "reprompt",
            Self::Refine => "refine",
            Self::Adaptive => "adaptive",
        }
    }

    fn loop_strategy(self) -> StrategyArg {
        match self {
            Self::SingleShot | Self::BestOfN => StrategyArg::BestOfN,
            Self::Reprompt => StrategyArg::Reprompt,
            Self::Refine => StrategyArg::Refine,
            Self::Adaptive => StrategyArg::Adaptive,
        }
    }
}

/// Flags of `redraft eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Prompt file: JSON lines with `prompt` and an optional `category`.
    #[arg(long, default_value = "eval/shapes.jsonl")]
    pub prompts: PathBuf,

    /// Strategy of a single run.
    #[arg(long, value_enum, default_value_t = EvalStrategy::Adaptive, conflicts_with = "strategies")]
    pub strategy: EvalStrategy,

    /// Budget of a single run, in generator calls per prompt (1 to 256).
    #[arg(long, default_value_t = 8, conflicts_with = "budgets")]
    pub budget: u32,

    /// Sweep: strategies to run, comma-separated. Single-shot runs once, at budget 1.
    #[arg(long, value_enum, value_delimiter = ',', requires = "budgets")]
    pub strategies: Vec<EvalStrategy>,

    /// Sweep: budgets to run each strategy at, comma-separated.
    #[arg(long, value_delimiter = ',', requires = "strategies")]
    pub budgets: Vec<u32>,

    /// Candidates drawn per iteration (cut to the budget).
    #[arg(long, default_value_t = 2)]
    pub candidates: u32,

    /// Critic score in [0, 1] at which a job stops early.
    #[arg(long, default_value_t = redraft_orchestrator::spec::DEFAULT_THRESHOLD)]
    pub threshold: f32,

    /// Use only the first N prompts of the file.
    #[arg(long)]
    pub limit: Option<usize>,

    /// Use only the first N prompts of each category (after --limit).
    #[arg(long)]
    pub per_category: Option<usize>,

    /// Base seed: prompt i of the file uses seeds from `seed + 1000 * i`, the
    /// same for every strategy, so runs differ only in what they do after
    /// the first candidates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Denoising steps. Default: the model's.
    #[arg(long)]
    pub steps: Option<u32>,

    /// Guidance scale. Default: the model's.
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f32>,

    /// Jobs in flight at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,

    /// Orchestrator address. Without it, redraft starts its own actors on
    /// free loopback ports for this command.
    #[arg(long, env = "REDRAFT_ORCHESTRATOR")]
    pub orchestrator: Option<String>,

    /// Generator model folder for the local actors. Default: models/shapes-v1/generator, else tiny models.
    #[arg(long, env = "REDRAFT_GENERATOR_MODEL")]
    pub generator_model: Option<PathBuf>,

    /// Critic model folder for the local actors. Default: models/shapes-v1/critic, else tiny models.
    #[arg(long, env = "REDRAFT_CRITIC_MODEL")]
    pub critic_model: Option<PathBuf>,

    /// Generator replicas of the local actors.
    #[arg(long, default_value_t = 1)]
    pub generators: usize,

    /// Critic replicas of the local actors.
    #[arg(long, default_value_t = 1)]
    pub critics: usize,

    /// Also write the results, prompt by prompt, as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Sweep: also plot accuracy against budget to this PNG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Log filter of the local actors.
    #[arg(long, default_value = "warn")]
    pub actor_log_level: String,

    #[command(flatten)]
    pub log: LogArgs,
}

/// One line of the prompt file.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalPrompt {
    /// The prompt text; the oracle parses it too.
    pub prompt: String,
    /// Category for the per-category table. Default: "uncategorized".
    #[serde(default)]
    pub category: Option<String>,
}

/// One strategy at one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPlan {
    /// The strategy.
    pub strategy: EvalStrategy,
    /// Generator calls per prompt.
    pub budget: u32,
}

/// The outcome of one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct PromptResult {
    /// The prompt.
    pub prompt: String,
    /// Its category.
    pub category: String,
    /// True when the oracle judged the final image correct.
    pub correct: bool,
    /// The oracle's reason.
    pub reason: String,
    /// The job's final status name.
    pub status: String,
    /// Critic score of the final image.
    pub best_score: f32,
    /// Generator calls made, retries included.
    pub generator_calls: u32,
    /// Critic calls made, retries included.
    pub critic_calls: u32,
    /// Seconds from submission to the end of the job.
    pub seconds: f64,
    /// Actions of each iteration, in order.
    pub actions: Vec<String>,
}

/// Reads a prompt file of JSON lines. Blank lines are skipped; a bad line
/// is an error naming the file and the line.
pub fn read_prompts(path: &Path) -> anyhow::Result<Vec<EvalPrompt>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the prompt file {}", path.display()))?;
    let mut prompts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let prompt: EvalPrompt = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: invalid prompt line; expected a JSON object with a \"prompt\" string and an optional \"category\" string",
                path.display(),
                index + 1
            )
        })?;
        if prompt.prompt.trim().is_empty() {
            anyhow::bail!("{}:{}: the prompt is empty", path.display(), index + 1);
        }
        prompts.push(prompt);
    }
    if prompts.is_empty() {
        anyhow::bail!("the prompt file {} has no prompts", path.display());
    }
    Ok(prompts)
}

/// Lists the runs the flags request, in order. Single-shot runs once, at
/// budget 1.
pub fn plan_runs(args: &EvalArgs) -> anyhow::Result<Vec<RunPlan>> {
    let limit = redraft_orchestrator::spec::SpecLimits::defaults().max_generator_calls;
    let (strategies, budgets) = if args.strategies.is_empty() {
        (vec![args.strategy], vec![args.budget])
    } else {
        (args.strategies.clone(), args.budgets.clone())
    };
    for budget in &budgets {
        if *budget == 0 || *budget > limit {
            anyhow::bail!("--budget {budget} is invalid; it must be from 1 to {limit}");
        }
    }
    if args.candidates == 0 {
        anyhow::bail!("--candidates 0 is invalid; it must be at least 1");
    }
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency 0 is invalid; it must be at least 1");
    }
    let mut runs = Vec::new();
    for strategy in strategies {
        if strategy == EvalStrategy::SingleShot {
            let run = RunPlan {
                strategy,
                budget: 1,
            };
            if !runs.contains(&run) {
                runs.push(run);
            }
            continue;
        }
        for budget in &budgets {
            runs.push(RunPlan {
                strategy,
                budget: *budget,
            });
        }
    }
    Ok(runs)
}

/// Builds the job of prompt `index` in `run`.
pub fn job_spec(args: &EvalArgs, run: RunPlan, index: usize, prompt: &str) -> JobSpec {
    let candidates = args.candidates.min(run.budget).max(1);
    JobSpec {
        prompt: prompt.to_string(),
        params: Some(GenerationParams {
            steps: args.steps,
            guidance_scale: args.guidance,
            seed: Some(args.seed.wrapping_add(1000 * index as u64)),
            ..Default::default()
        }),
        policy: Some(LoopPolicy {
            threshold: Some(args.threshold),
            // The budget, not the iteration limit, ends the job.
            max_iterations: Some(run.budget.min(32)),
            candidates_per_iteration: Some(candidates),
            max_generator_calls: Some(run.budget),
            strategy: run.strategy.loop_strategy().to_proto() as i32,
            deadline_seconds: None,
        }),
    }
}

/// The built-in prompt set: `per_category` prompts of each shapes category
/// drawn with `seed`, as JSON lines. `eval/shapes.jsonl` contains 50 per
/// category with seed 0.
pub fn builtin_prompts(per_category: usize, seed: u64) -> String {
    redraft_shapes::eval_prompts(per_category, seed)
        .into_iter()
        .map(|(prompt, category)| {
            serde_json::json!({"prompt": prompt, "category": category.name()}).to_string() + "\n"
        })
        .collect()
}

/// Runs `redraft eval`.
pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    let runs = plan_runs(&args)?;
    let mut prompts = read_prompts(&args.prompts)?;
    if let Some(limit) = args.limit {
        prompts.truncate(limit);
    }
    if let Some(per_category) = args.per_category {
        prompts = first_per_category(prompts, per_category);
    }
    if prompts.is_empty() {
        anyhow::bail!("no prompts are left after --limit and --per-category");
    }
    if let Some(plot) = &args.plot
        && args.strategies.is_empty()
    {
        anyhow::bail!(
            "--plot {} needs a sweep; pass --strategies and --budgets",
            plot.display()
        );
    }
    // Every prompt must parse for the oracle before any job runs.
    for prompt in &prompts {
        redraft_shapes::parse_prompt(&prompt.prompt).map_err(|error| {
            anyhow::anyhow!(
                "the shapes oracle cannot judge the prompt {:?}: {error}",
                prompt.prompt
            )
        })?;
    }

    let mut stack = None;
    let url = match &args.orchestrator {
        Some(url) => url.clone(),
        None => {
            let launcher = crate::up::launcher(600.0, 5.0, &args.log, &args.actor_log_level)?;
            let models =
                crate::models::resolve(args.generator_model.clone(), args.critic_model.clone())?;
            let config = StackConfig {
                models,
                generators: args.generators,
                critics: args.critics,
                orchestrator_listen: "127.0.0.1:0".parse().expect("a valid socket address"),
                orchestrator_args: vec![
                    "--concurrent-jobs".to_string(),
                    args.concurrency.to_string(),
                ],
            };
            tracing::info!("starting local actors");
            let started = stack::start(&launcher, &config).await?;
            let url = started.orchestrator_url.clone();
            stack = Some((launcher, started));
            url
        }
    };

    let outcome = evaluate(&args, &runs, &prompts, &url).await;
    if let Some((launcher, mut started)) = stack {
        launcher.stop_all(&mut started.actors).await;
    }
    let summaries = outcome?;

    println!("{}", eval_report::table(&summaries));
    if let Some(path) = &args.json {
        eval_report::write_json(path, &args, &summaries)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        eval_report::plot(path, &summaries)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn evaluate(
    args: &EvalArgs,
    runs: &[RunPlan],
    prompts: &[EvalPrompt],
    url: &str,
) -> anyhow::Result<Vec<RunSummary>> {
    let client = crate::connect_orchestrator(url).await?;
    let progress = ProgressBar::new((runs.len() * prompts.len()) as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(200));

    let mut summaries = Vec::with_capacity(runs.len());
    for run in runs {
        progress.set_prefix(format!("{} budget {}", run.strategy.name(), run.budget));
        let tally = Arc::new(Mutex::new((0usize, 0usize)));
        let results: Vec<anyhow::Result<PromptResult>> =
            futures::stream::iter(prompts.iter().enumerate())
                .map(|(index, prompt)| {
                    let mut client = client.clone();
                    let spec = job_spec(args, *run, index, &prompt.prompt);
                    let category = prompt
                        .category
                        .clone()
                        .unwrap_or_else(|| "uncategorized".to_string());
                    let progress = progress.clone();
                    let tally = tally.clone();
                    async move {
                        let result = run_prompt(&mut client, spec, category).await?;
                        let mut tally = tally.lock().await;
                        tally.0 += usize::from(result.correct);
                        tally.1 += 1;
                        progress.set_message(format!(
                            "accuracy {:.3}",
                            tally.0 as f64 / tally.1 as f64
                        ));
                        progress.inc(1);
                        Ok(result)
                    }
                })
                .buffered(args.concurrency)
                .collect()
                .await;
        let results = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let summary = RunSummary::new(run.strategy, run.budget, results);
        let line = format!(
            "{} budget {}: accuracy {:.3} over {} prompts",
            run.strategy.name(),
            run.budget,
            summary.overall,
            summary.results.len()
        );
        // A hidden bar (stderr is not a terminal) drops `println`, so print directly.
        if progress.is_hidden() {
            eprintln!("{line}");
        } else {
            progress.println(line);
        }
        summaries.push(summary);
    }
    progress.finish_and_clear();
    Ok(summaries)
}

/// Runs one job to its end and judges its final image with the oracle.
async fn run_prompt(
    client: &mut OrchestratorClient<Channel>,
    spec: JobSpec,
    category: String,
) -> anyhow::Result<PromptResult> {
    let started = Instant::now();
    let prompt = spec.prompt.clone();
    let mut stream = client
        .generate(SubmitJobRequest { spec: Some(spec) })
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "the orchestrator rejected the job for {prompt:?}: {}",
                status.message()
            )
        })?
        .into_inner();
    let job: Job = loop {
        let event = stream
            .message()
            .await
            .with_context(|| format!("the job stream for {prompt:?} failed"))?
            .with_context(|| format!("the job stream for {prompt:?} ended before the job"))?;
        if let Some(job_event::Event::Finished(job)) = event.event {
            break job;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let status = JobStatus::try_from(job.status).unwrap_or(JobStatus::Unspecified);
    let totals = job.totals.unwrap_or_default();
    let actions = job
        .iterations
        .iter()
        .map(|iteration| crate::report::action_name(iteration.action))
        .collect();

    let best_png = crate::report::best_candidate(&job)
        .and_then(|(_, candidate)| candidate.image.as_ref())
        .map(|image| image.png.as_slice());
    let (correct, reason) = match best_png {
        Some(png) => {
            let image = image::load_from_memory(png)
                .map(|image| image.to_rgb8())
                .with_context(|| format!("the final image for {prompt:?} is not a valid PNG"))?;
            let verdict = redraft_shapes::oracle::judge(&image, &prompt)
                .map_err(|error| anyhow::anyhow!("the oracle cannot parse {prompt:?}: {error}"))?;
            (verdict.correct, verdict.reason)
        }
        None => (
            false,
            format!(
                "the job ended {} with no image: {}",
                status.as_str_name(),
                job.error
            ),
        ),
    };
    Ok(PromptResult {
        prompt,
        category,
        correct,
        reason,
        status: status.as_str_name().to_string(),
        best_score: job.best_score,
        generator_calls: totals.generator_calls,
        critic_calls: totals.critic_calls,
        seconds,
        actions,
    })
}

/// Keeps the first `count` prompts of each category, in file order.
pub fn first_per_category(prompts: Vec<EvalPrompt>, count: usize) -> Vec<EvalPrompt> {
    let mut taken: BTreeMap<Option<String>, usize> = BTreeMap::new();
    prompts
        .into_iter()
        .filter(|prompt| {
            let seen = taken.entry(prompt.category.clone()).or_default();
            *seen += 1;
            *seen <= count
        })
        .collect()
}

/// Accuracy per category.
pub fn per_category(results: &[PromptResult]) -> BTreeMap<String, f64> {
    let mut tallies: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for result in results {
        let tally = tallies.entry(result.category.clone()).or_default();
        tally.0 += usize::from(result.correct);
        tally.1 += 1;
    }
    tallies
        .into_iter()
        .map(|(category, (correct, total))| (category, correct as f64 / total as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: EvalArgs,
    }

    fn parse(flags: &[&str]) -> EvalArgs {
        Harness::try_parse_from(std::iter::once("eval").chain(flags.iter().copied()))
            .unwrap()
            .args
    }

    fn builtin_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/shapes.jsonl")
    }

    #[test]
    fn builtin_prompt_file_current() {
        let expected = builtin_prompts(50, 0);
        let found = std::fs::read_to_string(builtin_file()).unwrap_or_default();
        assert!(
            found == expected,
            "eval/shapes.jsonl differs from the shapes grammar's prompts; rewrite it with \
             `cargo test --release -p redraft --lib -- --ignored write_builtin_prompt_file`"
        );
        let prompts = read_prompts(&builtin_file()).unwrap();
        assert_eq!(prompts.len(), 300);
    }

    #[test]
    #[ignore = "rewrites eval/shapes.jsonl"]
    fn write_builtin_prompt_file() {
        std::fs::create_dir_all(builtin_file().parent().unwrap()).unwrap();
        std::fs::write(builtin_file(), builtin_prompts(50, 0)).unwrap();
    }

    #[test]
    fn sweep_runs_single_shot_once() {
        let args = parse(&[
            "--strategies",
            "single-shot,best-of-n,adaptive",
            "--budgets",
            "2,4",
        ]);
        let runs = plan_runs(&args).unwrap();
        let named: Vec<(&str, u32)> = runs
            .iter()
            .map(|run| (run.strategy.name(), run.budget))
            .collect();
        assert_eq!(
            named,
            vec![
                ("single-shot", 1),
                ("best-of-n", 2),
                ("best-of-n", 4),
                ("adaptive", 2),
                ("adaptive", 4)
            ]
        );
    }

    #[test]
    fn bad_budgets_rejected() {
        for flags in [
            vec!["--budget", "0"],
            vec!["--budget", "257"],
            vec!["--candidates", "0"],
            vec!["--concurrency", "0"],
        ] {
            let error = plan_runs(&parse(&flags)).unwrap_err().to_string();
            assert!(error.contains(flags[0]), "{error}");
            assert!(error.contains(flags[1]), "{error}");
        }
    }

    #[test]
    fn specs_share_seeds_across_strategies() {
        let args = parse(&["--seed", "5", "--candidates", "4"]);
        let single = job_spec(
            &args,
            RunPlan {
                strategy: EvalStrategy::SingleShot,
                budget: 1,
            },
            2,
            "a red circle",
        );
        let adaptive = job_spec(
            &args,
            RunPlan {
                strategy: EvalStrategy::Adaptive,
                budget: 8,
            },
            2,
            "a red circle",
        );
        let seed = |spec: &JobSpec| spec.params.as_ref().unwrap().seed;
        assert_eq!(seed(&single), Some(2005));
        assert_eq!(seed(&single), seed(&adaptive));
        let policy = |spec: &JobSpec| spec.policy.unwrap();
        assert_eq!(policy(&single).candidates_per_iteration, Some(1));
        assert_eq!(policy(&single).max_generator_calls, Some(1));
        assert_eq!(policy(&adaptive).candidates_per_iteration, Some(4));
        assert_eq!(policy(&adaptive).max_generator_calls, Some(8));
        assert_eq!(
            policy(&adaptive).strategy,
            redraft_proto::Strategy::Adaptive as i32
        );
    }

    #[test]
    fn prompt_file_errors_name_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prompts.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"a red circle\"}\n\n{\"text\": \"x\"}\n",
        )
        .unwrap();
        let error = read_prompts(&path).unwrap_err().to_string();
        assert!(error.contains("prompts.jsonl:3"), "{error}");

        std::fs::write(&path, "{\"prompt\": \"  \"}\n").unwrap();
        let error = read_prompts(&path).unwrap_err().to_string();
        assert!(error.contains("empty"), "{error}");

        std::fs::write(&path, "\n").unwrap();
        let error = read_prompts(&path).unwrap_err().to_string();
        assert!(error.contains("no prompts"), "{error}");

        std::fs::write(
            &path,
            "{\"prompt\": \"a red circle\", \"category\": \"colors\"}\n{\"prompt\": \"two squares\"}\n",
        )
        .unwrap();
        let prompts = read_prompts(&path).unwrap();
        assert_eq!(prompts.len(), 2);
        assert_eq!(prompts[0].category.as_deref(), Some("colors"));
        assert_eq!(prompts[1].category, None);
    }

    #[test]
    fn first_per_category_keeps_order() {
        let prompt = |text: &str, category: &str| EvalPrompt {
            prompt: text.to_string(),
            category: Some(category.to_string()),
        };
        let kept = first_per_category(
            vec![
                prompt("a", "x"),
                prompt("b", "y"),
                prompt("c", "x"),
                prompt("d", "x"),
                prompt("e", "y"),
            ],
            2,
        );
        let texts: Vec<&str> = kept.iter().map(|prompt| prompt.prompt.as_str()).collect();
        assert_eq!(texts, vec!["a", "b", "c", "e"]);
    }

    #[test]
    fn per_category_accuracy() {
        let result = |category: &str, correct: bool| PromptResult {
            prompt: String::new(),
            category: category.to_string(),
            correct,
            reason: String::new(),
            status: String::new(),
            best_score: 0.0,
            generator_calls: 1,
            critic_calls: 1,
            seconds: 0.0,
            actions: Vec::new(),
        };
        let accuracy = per_category(&[
            result("colors", true),
            result("colors", false),
            result("position", true),
        ]);
        assert_eq!(accuracy["colors"], 0.5);
        assert_eq!(accuracy["position"], 1.0);
    }
}
