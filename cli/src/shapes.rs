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
use redraft_critic::score::{CALIBRATION_FILE, PROBE_KINDS, ProbeWords, kind_name};
use redraft_critic::{Calibration, ClipScorer};
use redraft_proto::CheckKind;
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

    /// Print the fit and the accuracies without writing redraft_critic.json.
    #[arg(long)]
    pub dry_run: bool,

    /// Also write the measurements as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
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

/// Measurements on one set of scenes.
#[derive(Default)]
struct Measured {
    leads: BTreeMap<String, Leads>,
    cosines: Cosines,
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
    println!(
        "{:<10} {:>7}  {:>10} {:>10} {:>9}  {:>6} {:>6}",
        "kind", "margin", "own pass", "changed", "accuracy", "own n", "chg n"
    );
    for kind in PROBE_KINDS {
        let name = kind_name(kind);
        let fit_leads = fit.leads.get(&name);
        let mut margin = fit_leads
            .map(|leads| best_threshold(&leads.own, &leads.changed, 0.0, MAX_MARGIN))
            .unwrap_or(calibration.probe_margins.of(kind).unwrap_or(0.0));
        let fit_accuracy = fit_leads
            .map(|leads| rates(&leads.own, &leads.changed, margin).2)
            .unwrap_or(0.0);
        let chance = fit_accuracy < MIN_USEFUL_ACCURACY;
        if chance {
            // A probe at chance level fails right images and passes wrong
            // ones at random, so such parts are left to the alignment check.
            println!(
                "NOTE: the model tells {name} changes apart at chance level ({} on the fit \
                 scenes), so {name} parts get no probe",
                percent(fit_accuracy)
            );
            margin = 0.0;
            calibration.unprobed_kinds.push(kind);
        }
        calibration.probe_margins.set(kind, margin);
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
                "probed": !chance,
            }),
        );
    }

    let score = |cosines: &[f32]| -> Vec<f32> {
        cosines
            .iter()
            .map(|c| calibration.alignment_score(*c))
            .collect()
    };
    let threshold = calibration.pass_threshold;
    let (own_rate, unrelated_rate, unrelated_accuracy) = rates(
        &score(&test.cosines.own),
        &score(&test.cosines.unrelated),
        threshold,
    );
    let (_, changed_rate, changed_accuracy) = rates(
        &score(&test.cosines.own),
        &score(&test.cosines.changed),
        threshold,
    );
    println!(
        "alignment: cosine range [{low:.3}, {high:.3}], pass threshold {threshold:.2}; \
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
            "pass_threshold": threshold,
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

        let own = probe_leads(scorer, calibration, prompt, &image)?;
        for (kind, _, lead) in &own.probes {
            measured
                .leads
                .entry(kind_name(*kind))
                .or_default()
                .own
                .push(*lead);
        }
        measured.cosines.own.push(own.alignment);

        for (changed, negative) in redraft_shapes::hard_negatives(&spec, &mut rng) {
            let kind = probe_kind_of(negative);
            let result = probe_leads(scorer, calibration, &changed, &image)?;
            measured.cosines.changed.push(result.alignment);
            // The changed part's probes are those whose subject the own
            // prompt does not have.
            for (probe_kind, subject, lead) in &result.probes {
                let new_subject = !own.probes.iter().any(|(own_kind, own_subject, _)| {
                    own_kind == probe_kind && own_subject == subject
                });
                if *probe_kind == kind && new_subject {
                    measured
                        .leads
                        .entry(kind_name(kind))
                        .or_default()
                        .changed
                        .push(*lead);
                }
            }
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

/// Probe leads of one prompt on one image, with the alignment cosine.
struct PromptLeads {
    probes: Vec<(CheckKind, String, f32)>,
    alignment: f32,
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
            (probe.kind, probe.subject.clone(), lead(&probabilities).0)
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

    #[test]
    fn percentile_nearest_rank() {
        let values = [3.0, 1.0, 2.0, 5.0, 4.0];
        assert_eq!(percentile(&values, 0.5), 3.0);
        assert_eq!(percentile(&values, 1.0), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
