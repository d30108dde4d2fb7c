//! `redraft shapes`: the synthetic shapes world's dataset writer and oracle.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device};
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use redraft_critic::judge::plan_cosines;
use redraft_critic::probe::{ProbePlan, lead, variant_probabilities};
use redraft_critic::score::{CALIBRATION_FILE, PROBE_KINDS, ProbeWords, kind_name, kind_weight};
use redraft_critic::{Calibration, ClipScorer, aggregate, quality};
use redraft_proto::{Check, CheckKind};
use redraft_shapes::NegativeKind;

/// `redraft shapes` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ShapesCommand {
    /// Render a training dataset: DIR/images/*.png, DIR/captions.jsonl (prompt,
    /// category, partial captions, hard negatives) and DIR/tokenizer.json.
    Dataset {
        /// Folder to write into.
        dir: PathBuf,
        /// Number of images; categories are balanced.
        #[arg(long, default_value_t = 60_000)]
        count: usize,
        /// Canvas side in pixels.
        #[arg(long, default_value_t = redraft_shapes::render::DEFAULT_CANVAS_SIZE)]
        canvas: u32,
        /// Seed; the same seed writes the same dataset.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Share of images, 0 to 1, that also contain one or two flawed objects
        /// (a colour between two palette colours, a dull colour, two colours,
        /// or one colour fading into another) for the critic to learn that
        /// they are not objects. The UNet trainer skips those images.
        #[arg(long, default_value_t = 0.0)]
        flawed_share: f64,
        /// Share of images, 0 to 1, with one or two of their objects drawn
        /// in a generator's style: a square with rounded corners, or a colour
        /// that fades part of the way to the next palette colour. The critic
        /// learns from them that these are still the same objects, and the
        /// UNet trainer skips them.
        #[arg(long, default_value_t = 0.0)]
        styled_share: f64,
    },
    /// Caption images a generator drew with what the oracle reads in them.
    /// Reads DIR/samples.jsonl (image, prompt), which `shapes/train/sample.py`
    /// writes, and writes DIR/captions.jsonl, so that DIR loads as a dataset
    /// for the critic's trainer. Images the shapes grammar cannot describe
    /// are left out.
    Label {
        /// Folder with samples.jsonl and the images it names.
        dir: PathBuf,
        /// Seed of the hard negatives.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Measure the models with the oracle: the generator's single-shot
    /// accuracy per category, and the critic's agreement with the oracle.
    Eval(crate::shapes_eval::ShapesEvalArgs),
    /// Fit a critic model's caption template, probe margins and alignment range on rendered
    /// scenes, print the accuracies on held-out scenes, and write them into
    /// the folder's redraft_critic.json.
    CalibrateCritic(CalibrateCriticArgs),
    /// Judge an image against a prompt with the shapes oracle and print the
    /// objects it found.
    Judge {
        /// The prompt, in the shapes grammar.
        #[arg(long)]
        prompt: String,
        /// PNG image to judge.
        image: PathBuf,
    },
}

/// Runs `redraft shapes`.
pub fn run(command: ShapesCommand) -> anyhow::Result<bool> {
    match command {
        ShapesCommand::Dataset {
            dir,
            count,
            canvas,
            seed,
            flawed_share,
            styled_share,
        } => {
            if count == 0 {
                anyhow::bail!("--count 0 is invalid; it must be at least 1");
            }
            let started = std::time::Instant::now();
            let options = redraft_shapes::DatasetOptions {
                flawed_share,
                styled_share,
                ..redraft_shapes::DatasetOptions::new(count, canvas, seed)
            };
            let summary = redraft_shapes::write_dataset(&dir, &options)?;
            let tokenizer =
                redraft_common::tokenizer::build_word_level(&redraft_shapes::vocabulary());
            let tokenizer_path = dir.join("tokenizer.json");
            tokenizer.save(&tokenizer_path, true).map_err(|error| {
                anyhow::anyhow!("failed to write {}: {error}", tokenizer_path.display())
            })?;
            println!(
                "wrote {} images, {} and {} in {:.1} s",
                summary.images,
                summary.captions_path.display(),
                tokenizer_path.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(true)
        }
        ShapesCommand::Label { dir, seed } => {
            let started = Instant::now();
            let summary = redraft_shapes::label_samples(&dir, seed)?;
            let share = |count: usize| count as f64 / summary.images.max(1) as f64;
            println!(
                "captioned {} of {} images ({:.3}) in {} in {:.1} s; {} ({:.3}) show their prompt",
                summary.labelled,
                summary.images,
                share(summary.labelled),
                dir.join(redraft_shapes::CAPTIONS_FILE).display(),
                started.elapsed().as_secs_f64(),
                summary.matching_prompt,
                share(summary.matching_prompt),
            );
            for (category, count) in summary.per_category {
                println!("  {category}: {count}");
            }
            Ok(true)
        }
        ShapesCommand::Eval(args) => {
            crate::shapes_eval::run(args)?;
            Ok(true)
        }
        ShapesCommand::CalibrateCritic(args) => {
            calibrate_critic(args)?;
            Ok(true)
        }
        ShapesCommand::Judge { prompt, image } => {
            let picture = image::open(&image)
                .with_context(|| format!("failed to read {}", image.display()))?
                .to_rgb8();
            let verdict = redraft_shapes::judge(&picture, &prompt)?;
            println!(
                "{}: {}",
                if verdict.correct {
                    "correct"
                } else {
                    "incorrect"
                },
                verdict.reason
            );
            for object in &verdict.detected {
                let shape = object
                    .shape
                    .map(|shape| shape.word())
                    .unwrap_or("unknown shape");
                println!(
                    "  {} {shape} at ({:.0}, {:.0}), {}x{} px \
                     (fill {:.2}, vertical skew {:.2}, squareness {:.2})",
                    object.color.word(),
                    object.center.0,
                    object.center.1,
                    object.width,
                    object.height,
                    object.fill_ratio,
                    object.vertical_skew,
                    object.squareness
                );
            }
            match redraft_shapes::read_spec(&verdict.detected, picture.dimensions()) {
                Some(spec) => println!("reads as: {}", redraft_shapes::caption(&spec)),
                None => println!("reads as: nothing the shapes grammar can describe"),
            }
            Ok(verdict.correct)
        }
    }
}

/// Flags of `redraft shapes calibrate-critic`.
#[derive(Debug, clap::Args)]
pub struct CalibrateCriticArgs {
    /// Critic model folder whose redraft_critic.json is written. Default:
    /// models/shapes-v1/critic, else tiny models.
    #[arg(long)]
    pub critic_model: Option<PathBuf>,

    /// Scenes per category (six categories) to fit the margins on.
    #[arg(long, default_value_t = 100)]
    pub fit_per_category: usize,

    /// Held-out scenes per category to measure the accuracies on.
    #[arg(long, default_value_t = 100)]
    pub test_per_category: usize,

    /// Seed of the scenes; the held-out scenes use the next seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Objective of the probe margins: `probe` fits each probe kind for its
    /// own balanced accuracy. `verdict` starts from those margins and fits
    /// them for the whole verdict's (all probes and the score together)
    /// balanced agreement with the oracle.
    #[arg(long, value_enum, default_value_t = MarginFit::Verdict)]
    pub margins: MarginFit,

    /// Score threshold of the verdict that `--margins verdict` fits for:
    /// a job accepts an image whose score reaches it and whose checks other
    /// than alignment all pass. Default: the orchestrator's default threshold.
    #[arg(long, default_value_t = redraft_orchestrator::spec::DEFAULT_THRESHOLD)]
    pub verdict_threshold: f32,

    /// Print the fit and the accuracies without writing redraft_critic.json.
    #[arg(long)]
    pub dry_run: bool,

    /// Also write the measurements as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Objective of the probe margins in `redraft shapes calibrate-critic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MarginFit {
    /// Each probe kind's balanced accuracy on its own.
    Probe,
    /// The whole verdict's balanced agreement with the oracle.
    Verdict,
}

/// Probe leads of one probe kind. A lead is the prompt's own variant's
/// probability minus the best other variant's. `own` has the leads on clean
/// images with their own prompt, where the probe should pass, and `changed`
/// those with a prompt changed in that kind's detail, where it should fail.
#[derive(Default)]
struct Leads {
    own: Vec<f32>,
    changed: Vec<f32>,
}

/// Alignment cosines of clean images with their own prompt, with a prompt
/// changed in one detail, and with the prompt of another scene.
#[derive(Default)]
struct Cosines {
    own: Vec<f32>,
    changed: Vec<f32>,
    unrelated: Vec<f32>,
}

/// One rendered scene paired with one prompt, with what the critic's
/// verdict on the pair depends on.
struct Pair {
    /// Whether the prompt is the scene's own (the oracle accepts the pair)
    /// rather than a hard negative (the oracle rejects it).
    own: bool,
    /// Whether every quality check of the scene passed.
    quality_passed: bool,
    /// Alignment cosine of the prompt and the scene.
    cosine: f32,
    /// Each probe's kind, lead and own variant's probability.
    probes: Vec<(CheckKind, f32, f32)>,
}

/// Measurements on one set of scenes.
#[derive(Default)]
struct Measured {
    leads: BTreeMap<String, Leads>,
    cosines: Cosines,
    pairs: Vec<Pair>,
}

/// Caption templates the calibration chooses from: CLIP's usual zero-shot
/// prompt, and the bare phrase, as half of the shapes prompts are written.
const CAPTION_TEMPLATES: [&str; 2] = ["a photo of {}", "{}"];

/// Balanced accuracy on the fit scenes below which a probe kind counts as
/// uninformative for the model. A chosen value, a few points above chance.
const MIN_USEFUL_ACCURACY: f64 = 0.55;

/// Largest fitted margin, below the calibration file's limit of 1.
const MAX_MARGIN: f32 = 0.95;

fn probe_kind_of(negative: NegativeKind) -> CheckKind {
    match negative {
        NegativeKind::WrongCount | NegativeKind::CountedFlaw => CheckKind::Count,
        NegativeKind::SwappedColors | NegativeKind::OtherColor => CheckKind::Color,
        NegativeKind::OppositeRelation => CheckKind::Relation,
        NegativeKind::OtherShape | NegativeKind::Blob => CheckKind::Presence,
    }
}

/// Runs `redraft shapes calibrate-critic`.
fn calibrate_critic(args: CalibrateCriticArgs) -> anyhow::Result<()> {
    for (flag, value) in [
        ("--fit-per-category", args.fit_per_category),
        ("--test-per-category", args.test_per_category),
    ] {
        if value == 0 {
            anyhow::bail!("{flag} 0 is invalid; it must be at least 1");
        }
    }
    if !(0.0..=1.0).contains(&args.verdict_threshold) {
        anyhow::bail!(
            "--verdict-threshold {} is invalid; it must be in [0, 1]",
            args.verdict_threshold
        );
    }
    let started = Instant::now();
    let folder = crate::models::resolve(None, args.critic_model.clone())?.critic;
    let scorer = ClipScorer::load(&folder, &Device::Cpu, DType::F32)?;
    let mut calibration = Calibration::load(&folder)?;
    // Every kind is measured again; the fit decides which stay unprobed.
    calibration.unprobed_kinds.clear();
    // A model trained on flawed objects has "blob" in its vocabulary. With it
    // a presence probe rejects an object drawn in no palette colour as "a blob".
    let flaw_noun = scorer
        .vocabulary()
        .knows(redraft_shapes::FLAW_NOUN)
        .then(|| redraft_shapes::FLAW_NOUN.to_string());
    calibration.probe_words = ProbeWords {
        colors: redraft_shapes::Color::ALL
            .map(|color| color.word().to_string())
            .to_vec(),
        presence_nouns: redraft_shapes::Shape::ALL
            .map(|shape| shape.word().to_string())
            .to_vec(),
        max_count: u32::from(redraft_shapes::MAX_COUNT),
        flaw_noun,
    };

    // The caption template is part of the fit: the one whose fitted
    // margins tell own from changed prompts best on the fit scenes wins.
    let mut best: Option<(f64, &str, Measured)> = None;
    for template in CAPTION_TEMPLATES {
        calibration.caption_template = template.to_string();
        let fit = measure(&scorer, &calibration, args.fit_per_category, args.seed)?;
        let accuracies: Vec<f64> = PROBE_KINDS
            .iter()
            .filter_map(|kind| fit.leads.get(&kind_name(*kind)))
            .map(|leads| {
                let margin = best_threshold(&leads.own, &leads.changed, 0.0, MAX_MARGIN);
                rates(&leads.own, &leads.changed, margin).2
            })
            .collect();
        let mean = accuracies.iter().sum::<f64>() / accuracies.len().max(1) as f64;
        println!(
            "caption template {template:?}: mean probe accuracy {} on the fit scenes",
            percent(mean)
        );
        if best
            .as_ref()
            .is_none_or(|(best_mean, _, _)| mean > *best_mean)
        {
            best = Some((mean, template, fit));
        }
    }
    let (_, template, fit) = best.context("no caption template was measured")?;
    calibration.caption_template = template.to_string();
    let test = measure(
        &scorer,
        &calibration,
        args.test_per_category,
        args.seed.wrapping_add(1),
    )?;

    // Alignment: the median cosine with another scene's prompt maps to 0
    // and the 90th percentile with the scene's own prompt maps to 1.
    let low = percentile(&fit.cosines.unrelated, 0.5);
    let high = percentile(&fit.cosines.own, 0.9);
    if !(low.is_finite() && high.is_finite() && high > low) {
        anyhow::bail!(
            "the critic does not separate own prompts from unrelated ones (median unrelated cosine {low}, \
             90th percentile own cosine {high}), so no alignment range can be fitted"
        );
    }
    calibration.cosine_low = low;
    calibration.cosine_high = high;
    let own_scores: Vec<f32> = fit
        .cosines
        .own
        .iter()
        .map(|c| calibration.alignment_score(*c))
        .collect();
    let unrelated_scores: Vec<f32> = fit
        .cosines
        .unrelated
        .iter()
        .map(|c| calibration.alignment_score(*c))
        .collect();
    calibration.pass_threshold = best_threshold(&own_scores, &unrelated_scores, 0.0, 1.0);

    let mut report = serde_json::Map::new();
    report.insert(
        "caption_template".to_string(),
        calibration.caption_template.clone().into(),
    );
    println!(
        "critic {}: {} fit and {} held-out scenes per category, caption template {:?}",
        folder.display(),
        args.fit_per_category,
        args.test_per_category,
        calibration.caption_template
    );
    // Each probe kind's margin on its own; kinds at chance get no probe.
    for kind in PROBE_KINDS {
        let name = kind_name(kind);
        let fit_leads = fit.leads.get(&name);
        let margin = fit_leads
            .map(|leads| best_threshold(&leads.own, &leads.changed, 0.0, MAX_MARGIN))
            .unwrap_or(calibration.probe_margins.of(kind).unwrap_or(0.0));
        let fit_accuracy = fit_leads
            .map(|leads| rates(&leads.own, &leads.changed, margin).2)
            .unwrap_or(0.0);
        if fit_accuracy < MIN_USEFUL_ACCURACY {
            // A probe at chance level fails right images and passes wrong
            // ones at random, so such parts are left to the alignment check.
            println!(
                "NOTE: the model tells {name} changes apart at chance level ({} on the fit \
                 scenes), so {name} parts get no probe",
                percent(fit_accuracy)
            );
            calibration.probe_margins.set(kind, 0.0);
            calibration.unprobed_kinds.push(kind);
        } else {
            calibration.probe_margins.set(kind, margin);
        }
    }

    let verdict = fit_verdict(&args, &fit, &test, &mut calibration);
    report.insert("verdict".to_string(), verdict);

    println!(
        "{:<10} {:>7}  {:>10} {:>10} {:>9}  {:>6} {:>6}",
        "kind", "margin", "own pass", "changed", "accuracy", "own n", "chg n"
    );
    for kind in PROBE_KINDS {
        let name = kind_name(kind);
        let margin = calibration.probe_margins.of(kind).unwrap_or(0.0);
        let empty = Leads::default();
        let held_out = test.leads.get(&name).unwrap_or(&empty);
        let (own_rate, changed_rate, accuracy) = rates(&held_out.own, &held_out.changed, margin);
        println!(
            "{name:<10} {margin:>7.3}  {:>10} {:>10} {:>9}  {:>6} {:>6}",
            percent(own_rate),
            percent(changed_rate),
            percent(accuracy),
            held_out.own.len(),
            held_out.changed.len()
        );
        report.insert(
            name,
            serde_json::json!({
                "margin": margin,
                "own_pass_rate": own_rate,
                "changed_fail_rate": changed_rate,
                "accuracy": accuracy,
                "own_probes": held_out.own.len(),
                "changed_probes": held_out.changed.len(),
                "probed": calibration.probes(kind),
            }),
        );
    }

    let score = |cosines: &[f32]| -> Vec<f32> {
        cosines
            .iter()
            .map(|c| calibration.alignment_score(*c))
            .collect()
    };
    let pass_threshold = calibration.pass_threshold;
    let (own_rate, unrelated_rate, unrelated_accuracy) = rates(
        &score(&test.cosines.own),
        &score(&test.cosines.unrelated),
        pass_threshold,
    );
    let (_, changed_rate, changed_accuracy) = rates(
        &score(&test.cosines.own),
        &score(&test.cosines.changed),
        pass_threshold,
    );
    println!(
        "alignment: cosine range [{low:.3}, {high:.3}], pass threshold {pass_threshold:.2}; \
         held out: own prompt passes {}, unrelated prompt fails {} (accuracy {}), \
         one-detail change fails {} (accuracy {})",
        percent(own_rate),
        percent(unrelated_rate),
        percent(unrelated_accuracy),
        percent(changed_rate),
        percent(changed_accuracy)
    );
    report.insert(
        "alignment".to_string(),
        serde_json::json!({
            "cosine_low": low,
            "cosine_high": high,
            "pass_threshold": pass_threshold,
            "own_pass_rate": own_rate,
            "unrelated_fail_rate": unrelated_rate,
            "unrelated_accuracy": unrelated_accuracy,
            "changed_fail_rate": changed_rate,
            "changed_accuracy": changed_accuracy,
        }),
    );

    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(report))?;
        std::fs::write(path, text)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    let path = folder.join(CALIBRATION_FILE);
    if args.dry_run {
        println!("dry run: {} left unchanged", path.display());
    } else {
        std::fs::write(&path, calibration.to_json() + "\n")
            .with_context(|| format!("failed to write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Measures the verdict on every fit and held-out pair with the margins in
/// `calibration`, and with `--margins verdict` fits the margins for the
/// verdict and measures it again. Prints both and returns them as JSON.
fn fit_verdict(
    args: &CalibrateCriticArgs,
    fit: &Measured,
    test: &Measured,
    calibration: &mut Calibration,
) -> serde_json::Value {
    let threshold = args.verdict_threshold;
    let fit_scores = pair_scores(&fit.pairs, calibration);
    let test_scores = pair_scores(&test.pairs, calibration);
    let per_probe = (
        verdict_rates(&fit.pairs, &fit_scores, calibration, threshold),
        verdict_rates(&test.pairs, &test_scores, calibration, threshold),
    );
    if args.margins == MarginFit::Verdict {
        fit_verdict_margins(&fit.pairs, &fit_scores, calibration, threshold);
    }
    let fitted = (
        verdict_rates(&fit.pairs, &fit_scores, calibration, threshold),
        verdict_rates(&test.pairs, &test_scores, calibration, threshold),
    );
    println!(
        "verdict at score threshold {threshold:.2}, balanced agreement with the oracle \
         (own prompt accepted, changed prompt rejected):"
    );
    for (label, (fit_rates, test_rates)) in
        [("per-probe margins", per_probe), ("chosen margins", fitted)]
    {
        println!(
            "  {label:<18} fit scenes {} ({} own accepted, {} changed rejected); held out {} ({}, {})",
            percent(fit_rates.2),
            percent(fit_rates.0),
            percent(fit_rates.1),
            percent(test_rates.2),
            percent(test_rates.0),
            percent(test_rates.1)
        );
    }
    let verdict_json = |rates: (f64, f64, f64)| {
        serde_json::json!({
            "own_accept_rate": rates.0,
            "changed_reject_rate": rates.1,
            "agreement": rates.2,
        })
    };
    serde_json::json!({
            "margins": match args.margins {
                MarginFit::Probe => "probe",
                MarginFit::Verdict => "verdict",
            },
            "score_threshold": threshold,
            "per_probe_margins": { "fit": verdict_json(per_probe.0), "held_out": verdict_json(per_probe.1) },
            "chosen_margins": { "fit": verdict_json(fitted.0), "held_out": verdict_json(fitted.1) },
            "fit_pairs": fit.pairs.len(),
            "held_out_pairs": test.pairs.len(),
    })
}

/// Renders `per_category` scenes of every category and measures the probe
/// leads and alignment cosines on them.
fn measure(
    scorer: &ClipScorer,
    calibration: &Calibration,
    per_category: usize,
    seed: u64,
) -> anyhow::Result<Measured> {
    let prompts = redraft_shapes::eval_prompts(per_category, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let canvas = scorer.image_size() as u32;
    let mut measured = Measured::default();
    for (prompt, _) in &prompts {
        let spec = redraft_shapes::parse_prompt(prompt)?;
        let image = redraft_shapes::render(&spec, canvas, &mut rng)?;

        let quality_passed = quality::quality_checks(&image)
            .iter()
            .all(|check| check.passed);

        let own = probe_leads(scorer, calibration, prompt, &image)?;
        for probe in &own.probes {
            measured
                .leads
                .entry(kind_name(probe.kind))
                .or_default()
                .own
                .push(probe.lead);
        }
        measured.cosines.own.push(own.alignment);
        measured.pairs.push(own.pair(true, quality_passed));

        for (changed, negative) in redraft_shapes::hard_negatives(&spec, &mut rng) {
            let kind = probe_kind_of(negative);
            let result = probe_leads(scorer, calibration, &changed, &image)?;
            measured.cosines.changed.push(result.alignment);
            // The changed part's probes are those whose subject the own
            // prompt does not have.
            for probe in &result.probes {
                let new_subject = !own
                    .probes
                    .iter()
                    .any(|own| own.kind == probe.kind && own.subject == probe.subject);
                if probe.kind == kind && new_subject {
                    measured
                        .leads
                        .entry(kind_name(kind))
                        .or_default()
                        .changed
                        .push(probe.lead);
                }
            }
            measured.pairs.push(result.pair(false, quality_passed));
        }

        let (other, _) = prompts
            .choose(&mut rng)
            .context("the scene list is empty")?;
        if other != prompt {
            let cosine = scorer.cosine(other, &image)?;
            measured.cosines.unrelated.push(cosine);
        }
    }
    Ok(measured)
}

/// One probe's result on one image.
struct ProbeLead {
    kind: CheckKind,
    subject: String,
    lead: f32,
    /// Probability of the prompt's own variant, the probe check's score.
    own_probability: f32,
}

/// Probe leads of one prompt on one image, with the alignment cosine.
struct PromptLeads {
    probes: Vec<ProbeLead>,
    alignment: f32,
}

impl PromptLeads {
    fn pair(&self, own: bool, quality_passed: bool) -> Pair {
        Pair {
            own,
            quality_passed,
            cosine: self.alignment,
            probes: self
                .probes
                .iter()
                .map(|probe| (probe.kind, probe.lead, probe.own_probability))
                .collect(),
        }
    }
}

fn probe_leads(
    scorer: &ClipScorer,
    calibration: &Calibration,
    prompt: &str,
    image: &image::RgbImage,
) -> anyhow::Result<PromptLeads> {
    let spec = redraft_critic::prompt::parse(prompt);
    let plan = ProbePlan::build(prompt, &spec, calibration, scorer.vocabulary());
    let embeddings = scorer.text_embeddings(&plan.captions)?;
    let rows = plan_cosines(scorer, &plan, &embeddings, std::slice::from_ref(image))?;
    let cosines = &rows[0];
    let probes = plan
        .probes
        .iter()
        .map(|probe| {
            let probabilities = variant_probabilities(probe, cosines, scorer.logit_scale());
            ProbeLead {
                kind: probe.kind,
                subject: probe.subject.clone(),
                lead: lead(&probabilities).0,
                own_probability: probabilities[0],
            }
        })
        .collect();
    Ok(PromptLeads {
        probes,
        alignment: cosines.whole[0],
    })
}

/// Returns the threshold in [`min`, `max`] at which `passing` values (at
/// or above it) and `failing` values (below it) are separated with the
/// highest balanced accuracy, the lowest such threshold on ties.
fn best_threshold(passing: &[f32], failing: &[f32], min: f32, max: f32) -> f32 {
    let mut candidates: Vec<f32> = passing
        .iter()
        .chain(failing)
        .copied()
        .filter(|value| value.is_finite())
        .map(|value| value.clamp(min, max))
        .collect();
    candidates.push(min);
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let mut best = (f64::NEG_INFINITY, min);
    for candidate in candidates {
        let (_, _, accuracy) = rates(passing, failing, candidate);
        if accuracy > best.0 {
            best = (accuracy, candidate);
        }
    }
    best.1
}

/// Returns the share of `passing` at or above `threshold`, the share of
/// `failing` below it, and their mean (the balanced accuracy). An empty
/// list counts as a rate of 0.
fn rates(passing: &[f32], failing: &[f32], threshold: f32) -> (f64, f64, f64) {
    let share = |values: &[f32], keep: &dyn Fn(f32) -> bool| {
        if values.is_empty() {
            0.0
        } else {
            values.iter().filter(|value| keep(**value)).count() as f64 / values.len() as f64
        }
    };
    let pass = share(passing, &|value| value >= threshold);
    let fail = share(failing, &|value| value < threshold);
    (pass, fail, (pass + fail) / 2.0)
}

/// Rounds of [`fit_verdict_margins`] at most. A chosen bound: each round
/// revisits every kind, and the fit stops earlier once a round changes no
/// margin.
const MAX_FIT_ROUNDS: usize = 8;

/// Returns each pair's overall score as the critic computes it with
/// `calibration`: the weighted mean of the alignment score and the probed
/// kinds' own-variant probabilities, and 0 when a quality check failed.
/// The margins do not enter it.
fn pair_scores(pairs: &[Pair], calibration: &Calibration) -> Vec<f32> {
    pairs
        .iter()
        .map(|pair| {
            if !pair.quality_passed {
                return 0.0;
            }
            let alignment = Check {
                kind: CheckKind::Alignment.into(),
                score: calibration.alignment_score(pair.cosine),
                weight: kind_weight(CheckKind::Alignment),
                ..Check::default()
            };
            let probes = pair
                .probes
                .iter()
                .filter(|(kind, _, _)| calibration.probes(*kind))
                .map(|(kind, _, probability)| Check {
                    kind: (*kind).into(),
                    score: *probability,
                    weight: kind_weight(*kind),
                    ..Check::default()
                });
            let checks: Vec<Check> = std::iter::once(alignment).chain(probes).collect();
            aggregate(&checks).0
        })
        .collect()
}

/// Returns whether a job with `threshold` accepts `pair`, whose overall
/// score is `score`, with `calibration`'s margins: the orchestrator's rule
/// of [`redraft_critic::judge::accepts`] on the pair's checks.
fn verdict_accepts(pair: &Pair, score: f32, calibration: &Calibration, threshold: f32) -> bool {
    pair.quality_passed
        && score >= threshold
        && pair.probes.iter().all(|(kind, lead, _)| {
            !calibration.probes(*kind)
                || (lead.is_finite() && *lead >= calibration.probe_margins.of(*kind).unwrap_or(0.0))
        })
}

/// Returns the share of own pairs that the verdict accepts, the share of
/// changed pairs that it rejects, and their mean (the balanced agreement
/// with the oracle). An empty side counts as a rate of 0.
fn verdict_rates(
    pairs: &[Pair],
    scores: &[f32],
    calibration: &Calibration,
    threshold: f32,
) -> (f64, f64, f64) {
    let (mut own, mut accepted, mut changed, mut rejected) = (0usize, 0usize, 0usize, 0usize);
    for (pair, score) in pairs.iter().zip(scores) {
        let accepts = verdict_accepts(pair, *score, calibration, threshold);
        if pair.own {
            own += 1;
            accepted += usize::from(accepts);
        } else {
            changed += 1;
            rejected += usize::from(!accepts);
        }
    }
    let share = |count: usize, total: usize| {
        if total == 0 {
            0.0
        } else {
            count as f64 / total as f64
        }
    };
    let (accept_rate, reject_rate) = (share(accepted, own), share(rejected, changed));
    (accept_rate, reject_rate, (accept_rate + reject_rate) / 2.0)
}

/// Fits the margins of the probed kinds in `calibration` for the verdict's
/// balanced agreement on `pairs`, by coordinate ascent from its current
/// margins. Each round tries every lead of each kind in turn as that kind's
/// margin (clamped to [0, `MAX_MARGIN`]). It keeps a new margin only when
/// it raises the agreement. A probe kind's margin alone can pass a
/// right part that the score or another probe rejects anyway, so margins
/// fitted one kind at a time need not make the best verdict together.
fn fit_verdict_margins(
    pairs: &[Pair],
    scores: &[f32],
    calibration: &mut Calibration,
    threshold: f32,
) {
    let mut best = verdict_rates(pairs, scores, calibration, threshold).2;
    for _ in 0..MAX_FIT_ROUNDS {
        let mut improved = false;
        for kind in PROBE_KINDS {
            if !calibration.probes(kind) {
                continue;
            }
            let mut candidates: Vec<f32> = pairs
                .iter()
                .flat_map(|pair| &pair.probes)
                .filter(|(probe_kind, lead, _)| *probe_kind == kind && lead.is_finite())
                .map(|(_, lead, _)| lead.clamp(0.0, MAX_MARGIN))
                .collect();
            candidates.push(0.0);
            candidates.sort_by(f32::total_cmp);
            candidates.dedup();
            let current = calibration.probe_margins.of(kind).unwrap_or(0.0);
            let mut choice = (best, current);
            for candidate in candidates {
                calibration.probe_margins.set(kind, candidate);
                let agreement = verdict_rates(pairs, scores, calibration, threshold).2;
                if agreement > choice.0 {
                    choice = (agreement, candidate);
                }
            }
            calibration.probe_margins.set(kind, choice.1);
            if choice.0 > best {
                best = choice.0;
                improved = true;
            }
        }
        if !improved {
            break;
        }
    }
}

/// Returns the value at quantile `q` in [0, 1] of `values` (nearest rank),
/// or NaN when there are none.
fn percentile(values: &[f32], q: f64) -> f32 {
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f32::NAN;
    }
    sorted.sort_by(f32::total_cmp);
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank]
}

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_separates_values() {
        let passing = [0.5, 0.6, 0.9];
        let failing = [-0.4, 0.1, 0.2];
        let threshold = best_threshold(&passing, &failing, 0.0, 0.95);
        assert!(threshold > 0.2, "{threshold}");
        assert!(threshold <= 0.5, "{threshold}");
        assert_eq!(rates(&passing, &failing, threshold), (1.0, 1.0, 1.0));
    }

    #[test]
    fn threshold_clamped_at_min() {
        let threshold = best_threshold(&[-0.2, 0.3], &[-0.9, -0.5], 0.0, 0.95);
        assert_eq!(threshold, 0.0);
    }

    fn pair(own: bool, probes: &[(CheckKind, f32)]) -> Pair {
        Pair {
            own,
            quality_passed: true,
            cosine: 0.5,
            probes: probes
                .iter()
                .map(|(kind, lead)| (*kind, *lead, 0.9))
                .collect(),
        }
    }

    #[test]
    fn pair_score_is_the_critics_mean() {
        let mut calibration = Calibration {
            cosine_low: 0.0,
            cosine_high: 1.0,
            ..Calibration::default()
        };
        let mut pairs = vec![pair(true, &[(CheckKind::Color, 0.5)])];
        pairs[0].cosine = 0.6;
        pairs[0].probes[0].2 = 1.0;
        let mut failed = pair(true, &[(CheckKind::Color, 0.5)]);
        failed.quality_passed = false;
        pairs.push(failed);
        let scores = pair_scores(&pairs, &calibration);
        assert!((scores[0] - 0.8).abs() < 1e-6, "{scores:?}");
        assert_eq!(scores[1], 0.0);
        // An unprobed kind's probe is not part of the critique, so not of its score.
        calibration.unprobed_kinds.push(CheckKind::Color);
        assert!((pair_scores(&pairs, &calibration)[0] - 0.6).abs() < 1e-6);
    }

    #[test]
    fn verdict_fit_raises_colour_margin() {
        // The own prompts' colour leads are 0.5 and 0.6, the changed
        // prompts' 0.4 and 0.45: only a margin in (0.45, 0.5] gets all four.
        let pairs = vec![
            pair(true, &[(CheckKind::Color, 0.5)]),
            pair(true, &[(CheckKind::Color, 0.6)]),
            pair(false, &[(CheckKind::Color, 0.4)]),
            pair(false, &[(CheckKind::Color, 0.45)]),
        ];
        let scores = vec![0.9; pairs.len()];
        let mut calibration = Calibration::default();
        calibration.probe_margins.set(CheckKind::Color, 0.1);
        assert_eq!(
            verdict_rates(&pairs, &scores, &calibration, 0.8),
            (1.0, 0.0, 0.5)
        );

        fit_verdict_margins(&pairs, &scores, &mut calibration, 0.8);
        let color = calibration.probe_margins.of(CheckKind::Color).unwrap();
        assert!(color > 0.45, "{color}");
        assert!(color <= 0.5, "{color}");
        assert_eq!(
            verdict_rates(&pairs, &scores, &calibration, 0.8),
            (1.0, 1.0, 1.0)
        );
        // A kind with no probes among the pairs keeps its margin.
        assert_eq!(
            calibration.probe_margins.of(CheckKind::Count),
            Calibration::default().probe_margins.of(CheckKind::Count)
        );
    }

    #[test]
    fn verdict_fit_keeps_unneeded_margin() {
        // The changed prompt scores below the threshold, so it is rejected
        // whatever the margin, and the starting margin already passes the
        // own prompt: no margin does better, and none is changed.
        let pairs = vec![
            pair(true, &[(CheckKind::Relation, 0.3)]),
            pair(false, &[(CheckKind::Relation, 0.9)]),
        ];
        let scores = vec![0.9, 0.5];
        let mut calibration = Calibration::default();
        calibration.probe_margins.set(CheckKind::Relation, 0.2);
        fit_verdict_margins(&pairs, &scores, &mut calibration, 0.8);
        assert_eq!(calibration.probe_margins.of(CheckKind::Relation), Some(0.2));
        assert_eq!(
            verdict_rates(&pairs, &scores, &calibration, 0.8),
            (1.0, 1.0, 1.0)
        );
    }

    #[test]
    fn percentile_nearest_rank() {
        let values = [3.0, 1.0, 2.0, 5.0, 4.0];
        assert_eq!(percentile(&values, 0.5), 3.0);
        assert_eq!(percentile(&values, 1.0), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
