//! One critique: quality checks, the CLIP alignment check, the probes of
//! each part of the prompt, and the aggregate score and summary.

use std::sync::Mutex;
use std::time::Instant;

use candle_core::Tensor;
use image::RgbImage;
use redraft_proto::{CheckKind, Critique};

use crate::model::ClipScorer;
use crate::probe::{ProbePlan, probe_check};
use crate::regions::{Axis, ImageCosines, VIEWS_PER_AXIS, views};
use crate::score::{Calibration, aggregate, alignment_check, summary};
use crate::{CriticError, prompt, quality};

/// Returns whether a job with `threshold` would end satisfied with the image
/// of `critique`. The orchestrator's rule: the score reaches the threshold
/// and no check other than alignment failed.
pub fn accepts(critique: &Critique, threshold: f32) -> bool {
    critique.score >= threshold
        && critique.hard_checks_passed
        && critique
            .checks
            .iter()
            .all(|check| check.passed || check.kind == CheckKind::Alignment as i32)
}

/// Computes the cosines of each of `images` with the captions of `plan`,
/// whose embeddings are `embeddings`: of the whole image, and of the views
/// that the plan's region relations need. The images are embedded as one
/// batch and their views as another.
pub fn plan_cosines(
    scorer: &ClipScorer,
    plan: &ProbePlan,
    embeddings: &Tensor,
    images: &[RgbImage],
) -> Result<Vec<ImageCosines>, CriticError> {
    let whole = scorer.cosine_rows(embeddings, images)?;
    let axes = plan.view_axes();
    let mut cosines: Vec<ImageCosines> = whole
        .into_iter()
        .map(|whole| ImageCosines {
            whole,
            ..ImageCosines::default()
        })
        .collect();
    if axes.is_empty() {
        return Ok(cosines);
    }
    let batch: Vec<RgbImage> = images
        .iter()
        .flat_map(|image| axes.iter().flat_map(|axis| views(image, *axis)))
        .collect();
    let mut rows = scorer.cosine_rows(embeddings, &batch)?.into_iter();
    for image in &mut cosines {
        for axis in &axes {
            let views: Vec<Vec<f32>> = rows.by_ref().take(VIEWS_PER_AXIS).collect();
            match axis {
                Axis::Horizontal => image.horizontal = views,
                Axis::Vertical => image.vertical = views,
            }
        }
    }
    Ok(cosines)
}

/// A loaded critic model with its calibration.
pub struct Judge {
    scorer: ClipScorer,
    calibration: Calibration,
    /// The probe plan and caption embeddings of the last prompt, because the
    /// orchestrator sends the same prompt for every candidate of a job.
    last_prompt: Mutex<Option<PreparedPrompt>>,
}

/// A prompt's probe plan with the embeddings of its captions.
#[derive(Clone)]
struct PreparedPrompt {
    prompt: String,
    plan: ProbePlan,
    embeddings: Tensor,
}

impl Judge {
    /// Wraps a loaded model and its calibration.
    pub fn new(scorer: ClipScorer, calibration: Calibration) -> Self {
        Self {
            scorer,
            calibration,
            last_prompt: Mutex::new(None),
        }
    }

    /// The CLIP model.
    pub fn scorer(&self) -> &ClipScorer {
        &self.scorer
    }

    /// The calibration.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Judges `image` against `prompt`.
    pub fn critique(&self, prompt: &str, image: &RgbImage) -> Result<Critique, CriticError> {
        let mut critiques = self.critique_batch(prompt, std::slice::from_ref(image))?;
        Ok(critiques.remove(0))
    }

    /// Judges each of `images` against `prompt`, embedding the prompt's
    /// captions once and the images as one batch. Each critique's `seconds`
    /// is the batch's time divided by the number of images.
    pub fn critique_batch(
        &self,
        prompt: &str,
        images: &[RgbImage],
    ) -> Result<Vec<Critique>, CriticError> {
        let started = Instant::now();
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = self.prepare(prompt)?;
        let rows = plan_cosines(&self.scorer, &prepared.plan, &prepared.embeddings, images)?;
        let logit_scale = self.scorer.logit_scale();

        let mut critiques = Vec::with_capacity(images.len());
        for (image, cosines) in images.iter().zip(&rows) {
            let mut checks = vec![alignment_check(prompt, cosines.whole[0], &self.calibration)];
            for probe in &prepared.plan.probes {
                checks.push(probe_check(probe, cosines, logit_scale, &self.calibration));
            }
            for mut check in quality::quality_checks(image) {
                check.hard = self.calibration.is_hard(CheckKind::Quality);
                checks.push(check);
            }
            let (score, hard_checks_passed) = aggregate(&checks);
            let mut text = summary(&checks);
            for note in &prepared.plan.notes {
                text.push(' ');
                text.push_str(note);
            }
            critiques.push(Critique {
                score,
                summary: text,
                checks,
                seconds: 0.0,
                hard_checks_passed,
            });
        }
        let seconds = started.elapsed().as_secs_f64() / images.len() as f64;
        for critique in &mut critiques {
            critique.seconds = seconds;
        }
        Ok(critiques)
    }

    /// Parses `prompt`, plans its probes and embeds their captions, or
    /// reuses the result of the previous call for the same prompt.
    fn prepare(&self, prompt: &str) -> Result<PreparedPrompt, CriticError> {
        let mut last = self
            .last_prompt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(prepared) = last.as_ref().filter(|prepared| prepared.prompt == prompt) {
            return Ok(prepared.clone());
        }
        let spec = prompt::parse(prompt);
        let plan = ProbePlan::build(prompt, &spec, &self.calibration, self.scorer.vocabulary());
        let embeddings = self.scorer.text_embeddings(&plan.captions)?;
        tracing::debug!(
            spec = %spec.describe(),
            probes = plan.probes.len(),
            captions = plan.captions.len(),
            "planned the probes of a new prompt"
        );
        let prepared = PreparedPrompt {
            prompt: prompt.to_string(),
            plan,
            embeddings,
        };
        *last = Some(prepared.clone());
        Ok(prepared)
    }
}

#[cfg(test)]
mod tests {
    //! Each probe kind on images painted for the hand-set model of
    //! [`crate::handset`], whose cosine of a caption and an image is the
    //! overlap of their words. So the variant that shares the most words
    //! with the painted image is known to win.

    use candle_core::{DType, Device};
    use redraft_proto::Check;

    use super::*;
    use crate::handset::{paint_words, paint_words_at, write_handset_clip};

    fn judge() -> (tempfile::TempDir, Judge) {
        let dir = tempfile::tempdir().unwrap();
        write_handset_clip(dir.path()).unwrap();
        let scorer = ClipScorer::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
        let calibration = Calibration::load(dir.path()).unwrap();
        (dir, Judge::new(scorer, calibration))
    }

    fn check(critique: &Critique, kind: CheckKind) -> &Check {
        critique
            .checks
            .iter()
            .find(|check| check.kind == i32::from(kind))
            .unwrap_or_else(|| panic!("no {kind:?} check in {critique:?}"))
    }

    fn critique_of(score: f32, hard_checks_passed: bool, failed: &[CheckKind]) -> Critique {
        let checks = [CheckKind::Alignment, CheckKind::Count, CheckKind::Relation]
            .into_iter()
            .map(|kind| Check {
                kind: kind.into(),
                passed: !failed.contains(&kind),
                ..Check::default()
            })
            .collect();
        Critique {
            score,
            hard_checks_passed,
            checks,
            ..Critique::default()
        }
    }

    #[test]
    fn accepts_needs_threshold_and_every_check_but_alignment() {
        assert!(accepts(&critique_of(0.8, true, &[]), 0.8));
        assert!(!accepts(&critique_of(0.79, true, &[]), 0.8));
        // A failed alignment check alone does not reject a high score.
        assert!(accepts(
            &critique_of(0.9, true, &[CheckKind::Alignment]),
            0.8
        ));
        assert!(!accepts(
            &critique_of(0.9, true, &[CheckKind::Relation]),
            0.8
        ));
        assert!(!accepts(&critique_of(0.9, false, &[]), 0.8));
    }

    #[test]
    fn matching_image_passes_every_probe() {
        let (_dir, judge) = judge();
        let image = paint_words(&["two", "red", "squares"]).unwrap();
        let critique = judge
            .critique("a photo of two red squares", &image)
            .unwrap();
        for kind in [CheckKind::Presence, CheckKind::Count, CheckKind::Color] {
            let check = check(&critique, kind);
            assert!(check.passed, "{check:?}");
            assert!(check.feedback.is_empty(), "{check:?}");
        }
        assert!(critique.hard_checks_passed, "{critique:?}");
        assert!(critique.score > 0.9, "{critique:?}");
    }

    #[test]
    fn presence_names_other_shape() {
        let (_dir, judge) = judge();
        // "a circle" shares two features (one, circle) with the image,
        // "a square" one (one).
        let image = paint_words(&["one", "red", "circle"]).unwrap();
        let critique = judge.critique("a red square", &image).unwrap();
        let presence = check(&critique, CheckKind::Presence);
        assert!(!presence.passed, "{presence:?}");
        assert_eq!(presence.subject, "a square");
        assert_eq!(presence.expected, "square");
        assert_eq!(presence.observed, "circle");
        assert_eq!(presence.variants[0].value, "circle");
        assert_eq!(
            presence.feedback,
            "The image seems to show a circle rather than a square, so draw a square."
        );
        assert!(check(&critique, CheckKind::Color).passed);
    }

    #[test]
    fn presence_names_blob() {
        let dir = tempfile::tempdir().unwrap();
        write_handset_clip(dir.path()).unwrap();
        let scorer = ClipScorer::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
        let mut calibration = Calibration::load(dir.path()).unwrap();
        calibration.probe_words.flaw_noun = Some("blob".to_string());
        let judge = Judge::new(scorer, calibration);

        let critique = judge
            .critique(
                "a red circle",
                &paint_words(&["one", "red", "blob"]).unwrap(),
            )
            .unwrap();
        let presence = check(&critique, CheckKind::Presence);
        assert!(!presence.passed, "{presence:?}");
        assert_eq!(presence.observed, "blob");
        assert_eq!(
            presence.feedback,
            "The image seems to show a blob rather than a circle, so draw a circle."
        );
        assert!(!accepts(&critique, 0.8), "{critique:?}");

        let critique = judge
            .critique(
                "a red circle",
                &paint_words(&["one", "red", "circle"]).unwrap(),
            )
            .unwrap();
        let presence = check(&critique, CheckKind::Presence);
        assert!(presence.passed, "{presence:?}");
        let values: Vec<&str> = presence.variants.iter().map(|v| v.value.as_str()).collect();
        assert!(values.contains(&"blob"), "{values:?}");

        // The flaw variant names one object, whatever the prompt's count.
        let critique = judge
            .critique(
                "two red circles",
                &paint_words(&["two", "red", "circles"]).unwrap(),
            )
            .unwrap();
        let presence = check(&critique, CheckKind::Presence);
        assert!(presence.passed, "{presence:?}");
        let texts: Vec<&str> = presence.variants.iter().map(|v| v.text.as_str()).collect();
        assert!(texts.contains(&"a blob"), "{texts:?}");
    }

    #[test]
    fn count_names_shown_count() {
        let (_dir, judge) = judge();
        let image = paint_words(&["three", "red", "squares"]).unwrap();
        let critique = judge.critique("two red squares", &image).unwrap();
        let count = check(&critique, CheckKind::Count);
        assert!(!count.passed, "{count:?}");
        assert_eq!(
            (count.expected.as_str(), count.observed.as_str()),
            ("two", "three")
        );
        assert_eq!(count.variants[0].text, "three red squares");
        assert!(
            count
                .feedback
                .contains("seems to show three red squares, but the prompt asks for two"),
            "{}",
            count.feedback
        );
        assert!(check(&critique, CheckKind::Color).passed);
        assert!(check(&critique, CheckKind::Presence).passed);
    }

    #[test]
    fn color_names_shown_color() {
        let (_dir, judge) = judge();
        let image = paint_words(&["two", "blue", "squares"]).unwrap();
        let critique = judge.critique("two red squares", &image).unwrap();
        let color = check(&critique, CheckKind::Color);
        assert!(!color.passed, "{color:?}");
        assert_eq!(
            (color.expected.as_str(), color.observed.as_str()),
            ("red", "blue")
        );
        assert!(
            color.feedback.contains("seems to show two blue squares"),
            "{}",
            color.feedback
        );
        assert!(check(&critique, CheckKind::Count).passed);
        assert!(!critique.summary.starts_with("All"), "{}", critique.summary);
    }

    /// Paints "one red circle" down column `circle` and "one blue square"
    /// down column `square`.
    fn circle_and_square_in_columns(circle: usize, square: usize) -> RgbImage {
        let mut placed = Vec::new();
        for (words, column) in [
            (["one", "red", "circle"], circle),
            (["one", "blue", "square"], square),
        ] {
            for (row, word) in words.into_iter().enumerate() {
                placed.push((word, column, row));
            }
        }
        paint_words_at(&placed).unwrap()
    }

    #[test]
    fn relation_names_shown_relation() {
        let (_dir, judge) = judge();
        let prompt = "a red circle to the left of a blue square";
        // The circle is in the right column, the square in the left one.
        let critique = judge
            .critique(prompt, &circle_and_square_in_columns(5, 0))
            .unwrap();
        let relation = check(&critique, CheckKind::Relation);
        assert!(!relation.passed, "{relation:?}");
        assert_eq!(relation.subject, "a red circle left of a blue square");
        assert_eq!(relation.expected, "left of");
        assert_eq!(relation.observed, "right of");
        assert!(
            relation
                .feedback
                .contains("seems to show a red circle right of a blue square"),
            "{}",
            relation.feedback
        );
        // "left of" is compared with its opposite only.
        assert_eq!(relation.variants.len(), 2);

        let critique = judge
            .critique(prompt, &circle_and_square_in_columns(0, 5))
            .unwrap();
        assert!(check(&critique, CheckKind::Relation).passed);
        let critique = judge
            .critique(
                "a blue square right of a red circle",
                &circle_and_square_in_columns(0, 4),
            )
            .unwrap();
        assert!(check(&critique, CheckKind::Relation).passed);
    }

    #[test]
    fn vertical_relation_from_rows() {
        let (_dir, judge) = judge();
        // The red circle in the top row, the blue square in the bottom row.
        let placed = [
            ("one", 0, 0),
            ("red", 1, 0),
            ("circle", 2, 0),
            ("one", 0, 5),
            ("blue", 1, 5),
            ("square", 2, 5),
        ];
        let image = paint_words_at(&placed).unwrap();
        let above = judge
            .critique("a red circle above a blue square", &image)
            .unwrap();
        assert!(check(&above, CheckKind::Relation).passed, "{above:?}");
        let below = judge
            .critique("a red circle below a blue square", &image)
            .unwrap();
        let relation = check(&below, CheckKind::Relation);
        assert!(!relation.passed, "{relation:?}");
        assert_eq!(relation.observed, "above");
    }

    #[test]
    fn batch_matches_single_critiques() {
        let (_dir, judge) = judge();
        let prompt = "two red squares above a green triangle";
        let images = [
            paint_words(&["two", "red", "squares", "above", "one", "green", "triangle"]).unwrap(),
            paint_words(&[
                "three", "blue", "squares", "below", "one", "green", "circle",
            ])
            .unwrap(),
            paint_words(&["one", "red", "square"]).unwrap(),
        ];
        let batch = judge.critique_batch(prompt, &images).unwrap();
        assert_eq!(batch.len(), 3);
        for (image, batched) in images.iter().zip(&batch) {
            let single = judge.critique(prompt, image).unwrap();
            assert!(
                (single.score - batched.score).abs() < 1e-4,
                "{} vs {}",
                single.score,
                batched.score
            );
            assert_eq!(single.checks.len(), batched.checks.len());
            for (a, b) in single.checks.iter().zip(&batched.checks) {
                assert_eq!(a.kind, b.kind);
                assert_eq!(a.passed, b.passed, "{a:?} vs {b:?}");
                assert!((a.score - b.score).abs() < 1e-4, "{a:?} vs {b:?}");
            }
        }
        assert!(judge.critique_batch(prompt, &[]).unwrap().is_empty());
    }

    #[test]
    fn unknown_prompt_words_still_judged() {
        let (_dir, judge) = judge();
        let image = paint_words(&["one", "red", "square"]).unwrap();
        let critique = judge
            .critique("a red zebra left of a square", &image)
            .unwrap();
        assert!(
            critique.summary.contains("\"zebra\""),
            "{}",
            critique.summary
        );
        let kinds: Vec<i32> = critique.checks.iter().map(|check| check.kind).collect();
        assert!(kinds.contains(&i32::from(CheckKind::Alignment)));
        assert!(
            kinds.contains(&i32::from(CheckKind::Presence)),
            "the square is still probed"
        );
    }
}
