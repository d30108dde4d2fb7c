//! `redraft shapes eval`: how good the default models are, measured by the
//! shapes oracle. The generator's single-shot accuracy per category, and the
//! critic's agreement with the oracle on rendered images paired with their
//! own prompt and with a prompt that changes one count, colour or relation,
//! and on the generated images with their own prompt.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use redraft_critic::judge::{Judge, accepts};
use redraft_critic::{Calibration, ClipScorer};
use redraft_generator::folder::ModelFolder;
use redraft_generator::pipeline::{GenerationInput, Pipeline};
use redraft_shapes::{Category, NegativeKind};
use serde_json::json;

/// Flags of `redraft shapes eval`.
#[derive(Debug, clap::Args)]
pub struct ShapesEvalArgs {
    /// Generator model folder. Default: models/shapes-v1/generator, else tiny models.
    #[arg(long)]
    pub generator_model: Option<PathBuf>,

    /// Critic model folder. Default: models/shapes-v1/critic, else tiny models.
    #[arg(long)]
    pub critic_model: Option<PathBuf>,

    /// Evaluation prompts per category (six categories).
    #[arg(long, default_value_t = 50)]
    pub per_category: usize,

    /// Seed of the prompts, the renders and the generator's noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Denoising steps. Default: the model's.
    #[arg(long)]
    pub steps: Option<usize>,

    /// Guidance scale. Default: the model's.
    #[arg(long)]
    pub guidance: Option<f64>,

    /// Job threshold of the critic's verdict: the critic calls an image
    /// correct when a job with this threshold would end satisfied with it
    /// (score at or above it, and no failed check other than alignment).
    /// The default is the orchestrator's default threshold.
    #[arg(long, default_value_t = redraft_orchestrator::spec::DEFAULT_THRESHOLD)]
    pub critic_threshold: f32,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Also save each generated image in this folder as
    /// `NNN-CATEGORY.png`, with the oracle's and the critic's verdict on
    /// each in `verdicts.jsonl`.
    #[arg(long)]
    pub images: Option<PathBuf>,
}

#[derive(Default, Clone, Copy)]
struct Tally {
    correct: usize,
    total: usize,
}

impl Tally {
    fn add(&mut self, correct: bool) {
        self.correct += usize::from(correct);
        self.total += 1;
    }

    fn rate(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Runs `redraft shapes eval`.
pub fn run(args: ShapesEvalArgs) -> anyhow::Result<()> {
    if args.per_category == 0 {
        anyhow::bail!("--per-category 0 is invalid; it must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.critic_threshold) {
        anyhow::bail!(
            "--critic-threshold {} is invalid; it must be in [0, 1]",
            args.critic_threshold
        );
    }
    if let Some(dir) = &args.images {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create --images folder {}", dir.display()))?;
    }
    let mut verdicts = Vec::new();
    let models = crate::models::resolve(args.generator_model.clone(), args.critic_model.clone())?;
    let folder = ModelFolder::open(&models.generator)?;
    let defaults = folder.defaults;
    let side = folder.default_side();
    let pipeline = Pipeline::load(folder, Device::Cpu, DType::F32)?;
    let scorer = ClipScorer::load(&models.critic, &Device::Cpu, DType::F32)?;
    let judge = Judge::new(scorer, Calibration::load(&models.critic)?);
    let prompts = redraft_shapes::eval_prompts(args.per_category, args.seed);
    let steps = args.steps.unwrap_or(defaults.steps);
    let guidance = args.guidance.unwrap_or(defaults.guidance_scale);

    let progress = ProgressBar::new(prompts.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} prompts [{bar:30}] {msg} ({elapsed})")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );

    let mut generator: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut critic_own: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut critic_changed: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut critic_generated: BTreeMap<&str, Tally> = BTreeMap::new();
    let (mut false_accepts, mut false_rejects) = (0usize, 0usize);
    let mut generate_seconds = 0.0;
    let mut critique_seconds = 0.0;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    for (index, (prompt, category)) in prompts.iter().enumerate() {
        let name = category.name();

        // Single shot: one image from the generator, judged by the oracle.
        let started = Instant::now();
        let input = GenerationInput {
            prompt: prompt.clone(),
            negative_prompt: String::new(),
            seed: args.seed.wrapping_add(index as u64),
            width: side,
            height: side,
            steps,
            guidance_scale: guidance,
            scheduler: pipeline.folder().scheduler.kind,
            init: None,
        };
        let (image, _) = pipeline.generate(&input, &mut |_| true)?;
        generate_seconds += started.elapsed().as_secs_f64();
        let verdict = redraft_shapes::judge(&image, prompt)?;
        generator.entry(name).or_default().add(verdict.correct);
        let started = Instant::now();
        let critique = judge.critique(prompt, &image)?;
        let accepted = accepts(&critique, args.critic_threshold);
        critique_seconds += started.elapsed().as_secs_f64();
        if let Some(dir) = &args.images {
            let file = format!("{index:03}-{name}.png");
            let path = dir.join(&file);
            image
                .save(&path)
                .with_context(|| format!("failed to write {}", path.display()))?;
            verdicts.push(json!({
                "image": file,
                "prompt": prompt,
                "category": name,
                "oracle_correct": verdict.correct,
                "oracle_reason": verdict.reason,
                "critic_accepts": accepted,
                "critic_score": critique.score,
                "critic_summary": critique.summary,
            }));
        }
        critic_generated
            .entry(name)
            .or_default()
            .add(accepted == verdict.correct);
        false_accepts += usize::from(accepted && !verdict.correct);
        false_rejects += usize::from(!accepted && verdict.correct);

        // The critic on a render of the prompt, paired with the prompt and with a changed prompt.
        let spec = redraft_shapes::parse_prompt(prompt)?;
        let render = redraft_shapes::render(&spec, side as u32, &mut rng)?;
        let started = Instant::now();
        let own = judge.critique(prompt, &render)?;
        critic_own
            .entry(name)
            .or_default()
            .add(accepts(&own, args.critic_threshold));
        let changed = redraft_shapes::hard_negatives(&spec, &mut rng)
            .into_iter()
            .find(|(_, kind)| *kind != NegativeKind::OtherShape)
            .map(|(text, _)| text);
        if let Some(changed) = changed {
            let oracle = redraft_shapes::judge(&render, &changed)?;
            let critique = judge.critique(&changed, &render)?;
            critic_changed
                .entry(name)
                .or_default()
                .add(accepts(&critique, args.critic_threshold) == oracle.correct);
        }
        critique_seconds += started.elapsed().as_secs_f64();

        let overall: Tally = sum(&generator);
        progress.set_message(format!("generator accuracy {:.3}", overall.rate()));
        progress.inc(1);
    }
    progress.finish_and_clear();

    // Report.
    println!(
        "{:<14} {:>10} {:>14} {:>18} {:>20}",
        "category", "generator", "critic (own)", "critic (changed)", "critic (generated)"
    );
    let mut rows = Vec::new();
    for category in Category::ALL {
        let name = category.name();
        let row = (
            generator.get(name).copied().unwrap_or_default(),
            critic_own.get(name).copied().unwrap_or_default(),
            critic_changed.get(name).copied().unwrap_or_default(),
            critic_generated.get(name).copied().unwrap_or_default(),
        );
        println!(
            "{name:<14} {:>10.3} {:>14.3} {:>18.3} {:>20.3}",
            row.0.rate(),
            row.1.rate(),
            row.2.rate(),
            row.3.rate()
        );
        rows.push(json!({
            "category": name,
            "generator_accuracy": row.0.rate(),
            "critic_agreement_own_prompt": row.1.rate(),
            "critic_agreement_changed_prompt": row.2.rate(),
            "critic_agreement_generated": row.3.rate(),
            "prompts": row.0.total,
        }));
    }
    let (generator_all, own_all, changed_all, generated_all) = (
        sum(&generator),
        sum(&critic_own),
        sum(&critic_changed),
        sum(&critic_generated),
    );
    let critic_all = Tally {
        correct: own_all.correct + changed_all.correct,
        total: own_all.total + changed_all.total,
    };
    println!(
        "{:<14} {:>10.3} {:>14.3} {:>18.3} {:>20.3}",
        "overall",
        generator_all.rate(),
        own_all.rate(),
        changed_all.rate(),
        generated_all.rate()
    );
    println!(
        "critic agreement with the oracle on rendered images: {:.3}",
        critic_all.rate()
    );
    println!(
        "critic agreement on generated images: {:.3} ({false_accepts} wrong images accepted, {false_rejects} right images rejected, of {})",
        generated_all.rate(),
        generated_all.total
    );
    let images = prompts.len() as f64;
    println!(
        "{:.3} s per generated image ({steps} steps, guidance {guidance}), {:.3} s per critique",
        generate_seconds / images,
        critique_seconds / (own_all.total + changed_all.total + generated_all.total).max(1) as f64
    );

    if let Some(dir) = &args.images {
        let path = dir.join("verdicts.jsonl");
        let lines: Vec<String> = verdicts.iter().map(|verdict| verdict.to_string()).collect();
        std::fs::write(&path, lines.join("\n") + "\n")
            .with_context(|| format!("failed to write {}", path.display()))?;
        println!("wrote {} images and {}", verdicts.len(), path.display());
    }
    if let Some(path) = &args.json {
        let document = json!({
            "generator_model": models.generator,
            "critic_model": models.critic,
            "per_category": args.per_category,
            "seed": args.seed,
            "steps": steps,
            "guidance_scale": guidance,
            "critic_threshold": args.critic_threshold,
            "categories": rows,
            "generator_accuracy": generator_all.rate(),
            "critic_agreement": critic_all.rate(),
            "critic_agreement_generated": generated_all.rate(),
            "critic_false_accepts_generated": false_accepts,
            "critic_false_rejects_generated": false_rejects,
            "seconds_per_image": generate_seconds / images,
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

fn sum(tallies: &BTreeMap<&str, Tally>) -> Tally {
    tallies
        .values()
        .fold(Tally::default(), |total, tally| Tally {
            correct: total.correct + tally.correct,
            total: total.total + tally.total,
        })
}
