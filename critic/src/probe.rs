//! Probes: each part of a parsed prompt (an object's presence, count and
//! colour, and each relation) checked by comparing the prompt's own caption
//! of that part against the same caption with one detail changed.
//!
//! CLIP's logits for the variants of one probe (cosine similarity times
//! the model's logit scale) go through a softmax. The prompt's own variant
//! passes when its probability beats every other variant's by the margin
//! stored with the model ([`crate::score::ProbeMargins`]).
//!
//! Relations along an axis (left of, right of, above, below) are not judged
//! from their captions, which CLIP scores close to a bag of words, but from
//! where each object is seen ([`crate::regions`]).

use std::collections::HashMap;

use redraft_proto::{Check, CheckKind, ProbeVariant};

use crate::prompt::{ObjectSpec, PromptSpec, Relation, RelationSpec, number_word};
use crate::regions::{Axis, ImageCosines, RegionRelation, evidence};
use crate::score::{Calibration, kind_weight};
use crate::vocabulary::Vocabulary;

/// One variant of a probe.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantSpec {
    /// Index of the variant's caption in [`ProbePlan::captions`].
    pub caption: usize,
    /// The detail of this variant, such as "three", "blue" or "right of".
    pub value: String,
    /// The phrase scored, with this variant's detail, such as "three red
    /// squares". Count and colour probes of a prompt with several objects
    /// write the whole scene ("three red squares and a blue circle").
    pub phrase: String,
}

/// One probe: the prompt's own variant first, then the changed ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub kind: CheckKind,
    /// The part of the prompt checked, such as "two red squares".
    pub subject: String,
    /// The variants; index 0 is the prompt's own.
    pub variants: Vec<VariantSpec>,
    /// For a relation judged by regions: where its objects must be. Such a
    /// probe has two variants, the prompt's relation and its opposite.
    pub regions: Option<RegionRelation>,
}

/// Every probe of one prompt, with the captions they need, each once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbePlan {
    pub probes: Vec<Probe>,
    /// Captions to embed. Index 0 is the whole prompt, for the alignment check.
    pub captions: Vec<String>,
    /// Sentences for the summary about what was not probed and why.
    pub notes: Vec<String>,
}

impl ProbePlan {
    /// Builds the probes of `spec` for `prompt`, with the words and caption
    /// template of `calibration`.
    ///
    /// A probe whose own caption has words outside `vocabulary` is skipped:
    /// the words are logged once and named in [`ProbePlan::notes`]. Variants
    /// with unknown words are left out, and a probe left with no other
    /// variant is skipped too.
    pub fn build(
        prompt: &str,
        spec: &PromptSpec,
        calibration: &Calibration,
        vocabulary: &Vocabulary,
    ) -> Self {
        let mut builder = Builder {
            plan: ProbePlan {
                captions: vec![prompt.to_string()],
                ..Self::default()
            },
            index: HashMap::new(),
            calibration,
            vocabulary,
            unknown: Vec::new(),
            unprobed: Vec::new(),
        };
        for (index, object) in spec.objects.iter().enumerate() {
            builder.presence(object, spec);
            builder.count(spec, index);
            builder.color(spec, index);
        }
        for relation in &spec.relations {
            builder.relation(spec, relation);
        }
        builder.finish(spec)
    }
}

struct Builder<'a> {
    plan: ProbePlan,
    index: HashMap<String, usize>,
    calibration: &'a Calibration,
    vocabulary: &'a Vocabulary,
    unknown: Vec<String>,
    /// Kinds with parts left unprobed, because the calibration found that the
    /// model scores their variants at chance.
    unprobed: Vec<CheckKind>,
}

impl Builder<'_> {
    fn caption_index(&mut self, phrase: &str) -> usize {
        let caption = self.calibration.caption(phrase);
        if let Some(index) = self.index.get(&caption) {
            return *index;
        }
        let index = self.plan.captions.len();
        self.plan.captions.push(caption.clone());
        self.index.insert(caption, index);
        index
    }

    /// Adds a probe whose own variant is `own` (value, phrase) and whose
    /// other variants are `others`, unless the calibration leaves `kind`
    /// unprobed, the own phrase has unknown words or no other variant is
    /// left. Returns the probe added.
    fn add(
        &mut self,
        kind: CheckKind,
        subject: String,
        own: (String, String),
        others: Vec<(String, String)>,
    ) -> Option<&mut Probe> {
        if !self.calibration.probes(kind) {
            if !self.unprobed.contains(&kind) {
                self.unprobed.push(kind);
            }
            return None;
        }
        let unknown = self.vocabulary.unknown_words(&own.1);
        if !unknown.is_empty() {
            for word in unknown {
                if !self.unknown.contains(&word) {
                    self.unknown.push(word);
                }
            }
            return None;
        }
        let others: Vec<(String, String)> = others
            .into_iter()
            .filter(|(_, phrase)| *phrase != own.1 && self.vocabulary.knows(phrase))
            .collect();
        if others.is_empty() {
            tracing::debug!(?kind, %subject, "probe skipped: no variant to compare against");
            return None;
        }
        let mut variants = Vec::with_capacity(others.len() + 1);
        for (value, phrase) in std::iter::once(own).chain(others) {
            let caption = self.caption_index(&phrase);
            variants.push(VariantSpec {
                caption,
                value,
                phrase,
            });
        }
        self.plan.probes.push(Probe {
            kind,
            subject,
            variants,
            regions: None,
        });
        self.plan.probes.last_mut()
    }

    /// Adds the presence probe of `object`: its noun against other nouns,
    /// both with the requested count and without colour, so that only the
    /// noun differs. The calibration's flaw noun, if any, is one more
    /// variant, written for one object ("a blob") as the model learned it.
    fn presence(&mut self, object: &ObjectSpec, spec: &PromptSpec) {
        let own = object.phrase_with(object.count, None, &object.noun);
        let words = &self.calibration.probe_words;
        let unused = |noun: &&String| spec.objects.iter().all(|other| other.noun != **noun);
        let mut others: Vec<(String, String)> = words
            .presence_nouns
            .iter()
            .filter(unused)
            .map(|noun| (noun.clone(), object.phrase_with(object.count, None, noun)))
            .collect();
        if let Some(flaw) = words.flaw_noun.as_ref().filter(unused) {
            others.push((flaw.clone(), object.phrase_with(Some(1), None, flaw)));
        }
        self.add(
            CheckKind::Presence,
            own.clone(),
            (object.noun.clone(), own),
            others,
        );
    }

    /// Returns a function that turns a phrase of object `index` into the
    /// caption phrase of a variant. The phrase goes into the whole scene of
    /// the prompt, so that colours and counts stay bound to their objects
    /// ("a red triangle and a green circle" against "a green triangle and a
    /// green circle"). When the other objects have words outside the
    /// vocabulary, the phrase stays alone.
    fn scene_writer<'s>(
        &self,
        spec: &'s PromptSpec,
        index: usize,
    ) -> impl Fn(String) -> String + 's {
        let own = scene_phrase(spec, index, spec.objects[index].phrase());
        let in_scene = self.vocabulary.knows(&own);
        move |replacement| {
            if in_scene {
                scene_phrase(spec, index, replacement)
            } else {
                replacement
            }
        }
    }

    fn count(&mut self, spec: &PromptSpec, index: usize) {
        let object = &spec.objects[index];
        let write = self.scene_writer(spec, index);
        let Some(count) = object.count else { return };
        let color = object.color.as_deref();
        let max = self.calibration.probe_words.max_count;
        let mut counts: Vec<u32> = (1..=max).collect();
        counts.push(count.saturating_add(1));
        if count > 1 {
            counts.push(count - 1);
        }
        counts.sort_unstable();
        counts.dedup();
        let others = counts
            .into_iter()
            .filter(|other| *other != count)
            .map(|other| {
                let phrase = write(object.phrase_with(Some(other), color, &object.noun));
                (number_word(other), phrase)
            })
            .collect();
        let own = write(object.phrase());
        self.add(
            CheckKind::Count,
            object.phrase(),
            (number_word(count), own),
            others,
        );
    }

    fn color(&mut self, spec: &PromptSpec, index: usize) {
        let object = &spec.objects[index];
        let Some(color) = object.color.as_deref() else {
            return;
        };
        let write = self.scene_writer(spec, index);
        let others = self
            .calibration
            .probe_words
            .colors
            .iter()
            .filter(|other| other.as_str() != color)
            .map(|other| {
                let phrase = write(object.phrase_with(object.count, Some(other), &object.noun));
                (other.clone(), phrase)
            })
            .collect();
        let own = write(object.phrase());
        self.add(
            CheckKind::Color,
            object.phrase(),
            (color.to_string(), own),
            others,
        );
    }

    fn relation(&mut self, spec: &PromptSpec, relation: &RelationSpec) {
        let subject = &spec.objects[relation.subject];
        let object = &spec.objects[relation.object];
        let phrase =
            |relation: Relation| format!("{} {relation} {}", subject.phrase(), object.phrase());
        let others = relation_variants(relation.relation)
            .into_iter()
            .map(|other| (other.words().to_string(), phrase(other)))
            .collect();
        let own = phrase(relation.relation);
        let regions = self.region_relation(subject, relation.relation, object);
        if let Some(probe) = self.add(
            CheckKind::Relation,
            own.clone(),
            (relation.relation.words().to_string(), own),
            others,
        ) {
            probe.regions = regions;
        }
    }

    /// Returns how regions judge "`subject` `relation` `object`": the axis
    /// and the captions of the object that must come first and of the one
    /// that must come second, each named alone ("a red circle"). `None` for
    /// relations with more than one opposite ("next to", "on top of"), when
    /// both objects have the same caption, so that no view distinguishes them,
    /// and when the model does not know the words of the captions.
    fn region_relation(
        &mut self,
        subject: &ObjectSpec,
        relation: Relation,
        object: &ObjectSpec,
    ) -> Option<RegionRelation> {
        let (axis, subject_first) = match relation {
            Relation::LeftOf => (Axis::Horizontal, true),
            Relation::RightOf => (Axis::Horizontal, false),
            Relation::Above => (Axis::Vertical, true),
            Relation::Below => (Axis::Vertical, false),
            Relation::NextTo | Relation::OnTopOf => return None,
        };
        let alone = |object: &ObjectSpec| {
            object.phrase_with(Some(1), object.color.as_deref(), &object.noun)
        };
        let (subject, object) = (alone(subject), alone(object));
        if subject == object || !self.vocabulary.knows(&subject) || !self.vocabulary.knows(&object)
        {
            return None;
        }
        let (subject, object) = (self.caption_index(&subject), self.caption_index(&object));
        let (first, second) = if subject_first {
            (subject, object)
        } else {
            (object, subject)
        };
        Some(RegionRelation {
            axis,
            first,
            second,
        })
    }

    fn finish(mut self, spec: &PromptSpec) -> ProbePlan {
        if !self.unknown.is_empty() {
            self.vocabulary.report_unknown(&self.unknown);
            let words: Vec<String> = self
                .unknown
                .iter()
                .map(|word| format!("\"{word}\""))
                .collect();
            self.plan.notes.push(format!(
                "Parts with {} were not probed, because the critic model does not know the word{}.",
                words.join(", "),
                if words.len() == 1 { "" } else { "s" }
            ));
        }
        for kind in &self.unprobed {
            self.plan.notes.push(format!(
                "The {} of the prompt {} judged only by the alignment check, because the critic \
                 model tells them apart no better than chance.",
                unprobed_parts(*kind),
                if *kind == CheckKind::Presence {
                    "is"
                } else {
                    "are"
                }
            ));
        }
        if !spec.quoted_text.is_empty() {
            self.plan.notes.push(
                "Quoted text is judged only by the alignment check, because no probe reads text."
                    .to_string(),
            );
        }
        if !spec.free_text.is_empty() {
            let fragments: Vec<String> = spec
                .free_text
                .iter()
                .map(|fragment| format!("\"{fragment}\""))
                .collect();
            self.plan.notes.push(format!(
                "{} is judged only by the alignment check.",
                fragments.join(", ")
            ));
        }
        self.plan
    }
}

/// Writes the objects of `spec` as one phrase, with `replacement` in place
/// of object `index`: "A RELATION B" for two objects in one relation, and
/// the objects joined by "and" otherwise, without relations.
fn scene_phrase(spec: &PromptSpec, index: usize, replacement: String) -> String {
    let mut replacement = Some(replacement);
    let phrases: Vec<String> = spec
        .objects
        .iter()
        .enumerate()
        .map(|(position, object)| {
            if position == index {
                replacement.take().unwrap_or_default()
            } else {
                object.phrase()
            }
        })
        .collect();
    match (phrases.as_slice(), spec.relations.as_slice()) {
        ([_, _], [relation]) => format!(
            "{} {} {}",
            phrases[relation.subject], relation.relation, phrases[relation.object]
        ),
        _ => phrases.join(" and "),
    }
}

/// Names the parts a probe kind checks, for the note on unprobed kinds.
fn unprobed_parts(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Presence => "presence of each object",
        CheckKind::Count => "counts",
        CheckKind::Color => "colours",
        _ => "relations",
    }
}

/// Returns the relations a relation probe compares `relation` against.
/// A direction is compared with its opposite only. A scene where A is left
/// of B may also have A above B, so "above" can be just as true of it. "next to" is compared with the vertical relations, because
/// an object next to another is also left or right of it, and "on top of"
/// with the relations other than "above".
fn relation_variants(relation: Relation) -> Vec<Relation> {
    match relation {
        Relation::LeftOf | Relation::RightOf => vec![Relation::LeftOf, Relation::RightOf],
        Relation::Above | Relation::Below => vec![Relation::Above, Relation::Below],
        Relation::NextTo => vec![Relation::Above, Relation::Below],
        Relation::OnTopOf => vec![Relation::Below, Relation::LeftOf, Relation::RightOf],
    }
}

impl ProbePlan {
    /// Returns the axes along which the plan's region relations need views of the image.
    pub fn view_axes(&self) -> Vec<Axis> {
        Axis::ALL
            .into_iter()
            .filter(|axis| {
                self.probes
                    .iter()
                    .any(|probe| probe.regions.is_some_and(|regions| regions.axis == *axis))
            })
            .collect()
    }
}

/// Computes the probabilities of the variants of `probe` on one image, in
/// variant order: the softmax of `logit_scale * cosine` of each variant's
/// caption. A region relation's logits are instead `logit_scale * e / 2` for
/// the prompt's relation and its negation for the opposite, where `e` is the
/// [`evidence`] that its objects are in the prompt's order.
pub fn variant_probabilities(probe: &Probe, cosines: &ImageCosines, logit_scale: f32) -> Vec<f32> {
    let logits: Vec<f32> = match probe.regions {
        Some(regions) => {
            let evidence = evidence(cosines.views(regions.axis), regions.first, regions.second);
            let half = logit_scale * evidence / 2.0;
            (0..probe.variants.len())
                .map(|index| if index == 0 { half } else { -half })
                .collect()
        }
        None => probe
            .variants
            .iter()
            .map(|variant| logit_scale * cosines.whole[variant.caption])
            .collect(),
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|logit| (logit - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|value| value / sum).collect()
}

/// Computes how far the prompt's own variant (index 0) is ahead: its
/// probability minus the largest probability of the other variants, and
/// the index of that variant.
pub fn lead(probabilities: &[f32]) -> (f32, usize) {
    let (runner_up, best_other) = probabilities.iter().enumerate().skip(1).fold(
        (0, f32::NEG_INFINITY),
        |best, (index, &value)| {
            if value > best.1 { (index, value) } else { best }
        },
    );
    (probabilities[0] - best_other, runner_up)
}

/// Judges one probe on one image from the image's cosine similarity with
/// every caption of the plan.
pub fn probe_check(
    probe: &Probe,
    cosines: &ImageCosines,
    logit_scale: f32,
    calibration: &Calibration,
) -> Check {
    let probabilities = variant_probabilities(probe, cosines, logit_scale);
    let margin = calibration.probe_margins.of(probe.kind).unwrap_or(0.0);
    let (lead, runner_up) = lead(&probabilities);
    let passed = lead.is_finite() && lead >= margin;
    let winner = if lead > 0.0 { 0 } else { runner_up };

    let own = &probe.variants[0];
    let winning = &probe.variants[winner];
    let feedback = if passed {
        String::new()
    } else if winner == 0 {
        let close = &probe.variants[runner_up];
        format!(
            "The image shows {} only weakly: it leads {} by {lead:.2}, below the margin {margin:.2}, \
             so draw {} more distinctly.",
            own.phrase, close.phrase, own.phrase
        )
    } else if probe.kind == CheckKind::Presence {
        format!(
            "The image seems to show {} rather than {}, so draw {}.",
            winning.phrase, own.phrase, own.phrase
        )
    } else {
        format!(
            "The image seems to show {}, but the prompt asks for {}, so draw {}.",
            winning.phrase, own.value, own.phrase
        )
    };

    let mut order: Vec<usize> = (0..probe.variants.len()).collect();
    order.sort_by(|a, b| probabilities[*b].total_cmp(&probabilities[*a]));
    let variants = order
        .into_iter()
        .map(|index| {
            let variant = &probe.variants[index];
            ProbeVariant {
                text: variant.phrase.clone(),
                probability: probabilities[index],
                // The contract gives the prompt's own variant an empty value.
                value: if index == 0 {
                    String::new()
                } else {
                    variant.value.clone()
                },
            }
        })
        .collect();

    let score = if probabilities[0].is_finite() {
        probabilities[0]
    } else {
        0.0
    };
    Check {
        kind: probe.kind.into(),
        subject: probe.subject.clone(),
        expected: own.value.clone(),
        observed: winning.value.clone(),
        score,
        passed,
        feedback,
        hard: calibration.is_hard(probe.kind),
        variants,
        weight: kind_weight(probe.kind),
    }
}

#[cfg(test)]
mod tests {
    use redraft_common::tokenizer::build_word_level;

    use super::*;
    use crate::prompt::parse;

    fn vocabulary(words: &[&str]) -> Vocabulary {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        build_word_level(words).save(&path, false).unwrap();
        Vocabulary::from_file(&path).unwrap()
    }

    fn shapes_calibration() -> Calibration {
        let mut calibration = Calibration::clip_score();
        calibration.probe_words.colors = ["red", "blue", "green"].map(String::from).to_vec();
        calibration.probe_words.presence_nouns =
            ["circle", "square", "triangle"].map(String::from).to_vec();
        calibration.probe_words.max_count = 3;
        calibration
    }

    const SHAPE_WORDS: &[&str] = &[
        "a",
        "an",
        "and",
        "photo",
        "of",
        "one",
        "two",
        "three",
        "four",
        "red",
        "blue",
        "green",
        "circle",
        "circles",
        "square",
        "squares",
        "triangle",
        "triangles",
        "left",
        "right",
        "above",
        "below",
    ];

    /// Plans `prompt` with the shapes calibration and vocabulary.
    fn shapes_plan(prompt: &str) -> ProbePlan {
        ProbePlan::build(
            prompt,
            &parse(prompt),
            &shapes_calibration(),
            &vocabulary(SHAPE_WORDS),
        )
    }

    fn phrases(probe: &Probe) -> Vec<&str> {
        probe
            .variants
            .iter()
            .map(|variant| variant.phrase.as_str())
            .collect()
    }

    #[test]
    fn plan_of_counted_colored_object() {
        let prompt = "a photo of two red squares";
        let plan = shapes_plan(prompt);
        assert_eq!(plan.captions[0], prompt);
        let kinds: Vec<CheckKind> = plan.probes.iter().map(|probe| probe.kind).collect();
        assert_eq!(
            kinds,
            [CheckKind::Presence, CheckKind::Count, CheckKind::Color]
        );
        assert_eq!(
            phrases(&plan.probes[0]),
            ["two squares", "two circles", "two triangles"]
        );
        assert_eq!(
            phrases(&plan.probes[1]),
            ["two red squares", "a red square", "three red squares"]
        );
        assert_eq!(
            phrases(&plan.probes[2]),
            ["two red squares", "two blue squares", "two green squares"]
        );
        // The count and colour probes share the caption of the prompt's own variant.
        assert_eq!(
            plan.probes[1].variants[0].caption,
            plan.probes[2].variants[0].caption
        );
        assert_eq!(
            plan.captions[plan.probes[1].variants[1].caption],
            "a photo of a red square"
        );
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    }

    #[test]
    fn unprobed_kind_gets_no_probe_and_a_note() {
        let prompt = "a red circle to the left of a blue square";
        let mut calibration = shapes_calibration();
        calibration.unprobed_kinds = vec![CheckKind::Relation];
        let plan = ProbePlan::build(
            prompt,
            &parse(prompt),
            &calibration,
            &vocabulary(SHAPE_WORDS),
        );
        assert!(
            plan.probes
                .iter()
                .all(|probe| probe.kind != CheckKind::Relation)
        );
        assert!(
            plan.probes
                .iter()
                .any(|probe| probe.kind == CheckKind::Color)
        );
        assert_eq!(
            plan.notes,
            [
                "The relations of the prompt are judged only by the alignment check, because the \
              critic model tells them apart no better than chance."
            ]
        );
    }

    #[test]
    fn plan_of_relation() {
        let prompt = "a red circle to the left of a blue square";
        let plan = shapes_plan(prompt);
        let relation = plan
            .probes
            .iter()
            .find(|probe| probe.kind == CheckKind::Relation)
            .unwrap();
        assert_eq!(
            phrases(relation),
            [
                "a red circle left of a blue square",
                "a red circle right of a blue square",
            ]
        );
        // The presence probes leave out the nouns of the prompt.
        assert_eq!(phrases(&plan.probes[0]), ["a circle", "a triangle"]);
        // The relation is judged by where each object is seen: the circle
        // first along the horizontal axis.
        let regions = relation.regions.expect("left of is judged by regions");
        assert_eq!(regions.axis, Axis::Horizontal);
        assert_eq!(plan.captions[regions.first], "a photo of a red circle");
        assert_eq!(plan.captions[regions.second], "a photo of a blue square");
        assert_eq!(plan.view_axes(), [Axis::Horizontal]);

        // "below" puts the object first along the vertical axis.
        let prompt = "two green triangles below a red circle";
        let plan = shapes_plan(prompt);
        let regions = plan
            .probes
            .iter()
            .find_map(|probe| probe.regions)
            .expect("below is judged by regions");
        assert_eq!(regions.axis, Axis::Vertical);
        assert_eq!(plan.captions[regions.first], "a photo of a red circle");
        assert_eq!(plan.captions[regions.second], "a photo of a green triangle");

        // Regions cannot distinguish two objects of the same caption, so
        // their relation is judged from captions.
        let plan = shapes_plan("a red circle left of two red circles");
        let relation = plan
            .probes
            .iter()
            .find(|probe| probe.kind == CheckKind::Relation)
            .unwrap();
        assert_eq!(relation.regions, None);
        assert!(plan.view_axes().is_empty());
    }

    #[test]
    fn region_relation_probabilities() {
        let prompt = "a red circle to the left of a blue square";
        let plan = shapes_plan(prompt);
        let probe = plan
            .probes
            .iter()
            .find(|probe| probe.regions.is_some())
            .unwrap();
        let regions = probe.regions.unwrap();

        // Views (before, after) of one split: the circle's caption matches
        // the part after the split, the square's the part before, so the
        // image shows the circle right of the square.
        let mut before = vec![0.0; plan.captions.len()];
        let mut after = before.clone();
        before[regions.first] = 0.1;
        after[regions.first] = 0.5;
        before[regions.second] = 0.6;
        after[regions.second] = 0.2;
        let cosines = ImageCosines {
            whole: vec![0.0; plan.captions.len()],
            horizontal: vec![before, after],
            vertical: Vec::new(),
        };

        let probabilities = variant_probabilities(probe, &cosines, 10.0);
        // Evidence (0.1 - 0.5) + (0.2 - 0.6) = -0.8; logits -4 and 4.
        let expected = 1.0 / (1.0 + 8.0_f32.exp());
        assert!(
            (probabilities[0] - expected).abs() < 1e-6,
            "{probabilities:?}"
        );

        let check = probe_check(probe, &cosines, 10.0, &shapes_calibration());
        assert!(!check.passed);
        assert_eq!(check.observed, "right of");
    }

    #[test]
    fn colour_and_count_in_scene() {
        let prompt = "a green triangle and a red circle";
        let plan = shapes_plan(prompt);
        let color = plan
            .probes
            .iter()
            .find(|probe| probe.kind == CheckKind::Color)
            .unwrap();
        assert_eq!(color.subject, "a green triangle");
        assert_eq!(
            phrases(color),
            [
                "a green triangle and a red circle",
                "a red triangle and a red circle",
                "a blue triangle and a red circle",
            ]
        );
        let count = plan
            .probes
            .iter()
            .find(|probe| probe.kind == CheckKind::Count)
            .unwrap();
        assert_eq!(
            count.variants[1].phrase,
            "two green triangles and a red circle"
        );

        // A relation joins the scene with its words.
        let prompt = "two red circles above a square";
        let plan = shapes_plan(prompt);
        let color = plan
            .probes
            .iter()
            .find(|probe| probe.kind == CheckKind::Color)
            .unwrap();
        assert_eq!(color.variants[1].phrase, "two blue circles above a square");
    }

    #[test]
    fn unknown_neighbour_keeps_object_alone() {
        let prompt = "a red circle and a zebra";
        let plan = shapes_plan(prompt);
        let color = plan
            .probes
            .iter()
            .find(|probe| probe.kind == CheckKind::Color)
            .unwrap();
        assert_eq!(
            phrases(color),
            ["a red circle", "a blue circle", "a green circle"]
        );
    }

    #[test]
    fn unknown_words_skip_probes() {
        let prompt = "two red apples next to a blue square";
        let plan = shapes_plan(prompt);
        // Only the square's presence and colour probes remain; the square
        // has count 1 and max_count 3, so it has a count probe too.
        assert!(
            plan.probes
                .iter()
                .all(|probe| probe.subject.contains("square")),
            "{:?}",
            plan.probes
        );
        assert_eq!(plan.probes.len(), 3);
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert!(plan.notes[0].contains("\"apples\""), "{}", plan.notes[0]);
        assert!(plan.notes[0].contains("\"next\""), "{}", plan.notes[0]);
    }

    #[test]
    fn unknown_variant_words_dropped() {
        let prompt = "a red square";
        let mut calibration = shapes_calibration();
        calibration.probe_words.colors.push("pink".to_string());
        let plan = ProbePlan::build(
            prompt,
            &parse(prompt),
            &calibration,
            &vocabulary(SHAPE_WORDS),
        );
        let color = plan
            .probes
            .iter()
            .find(|probe| probe.kind == CheckKind::Color)
            .unwrap();
        assert_eq!(
            phrases(color),
            ["a red square", "a blue square", "a green square"]
        );
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn notes_for_quotes_and_free_text() {
        let prompt = "a square in the style of \"art\"";
        let plan = shapes_plan(prompt);
        assert_eq!(plan.notes.len(), 2, "{:?}", plan.notes);
        assert!(
            plan.notes[0].starts_with("Quoted text"),
            "{}",
            plan.notes[0]
        );
        assert!(
            plan.notes[1].contains("\"in the style of\""),
            "{}",
            plan.notes[1]
        );
    }

    fn whole(cosines: &[f32]) -> ImageCosines {
        ImageCosines {
            whole: cosines.to_vec(),
            ..ImageCosines::default()
        }
    }

    fn count_probe() -> Probe {
        let variant = |caption, value: &str, phrase: &str| VariantSpec {
            caption,
            value: value.to_string(),
            phrase: phrase.to_string(),
        };
        Probe {
            kind: CheckKind::Count,
            subject: "two red squares".to_string(),
            variants: vec![
                variant(1, "two", "two red squares"),
                variant(2, "one", "a red square"),
                variant(3, "three", "three red squares"),
            ],
            regions: None,
        }
    }

    #[test]
    fn probe_fails_with_winner() {
        let check = probe_check(
            &count_probe(),
            &whole(&[0.0, 0.20, 0.10, 0.25]),
            100.0,
            &Calibration::default(),
        );
        assert!(!check.passed);
        assert_eq!(check.expected, "two");
        assert_eq!(check.observed, "three");
        assert_eq!(
            check.feedback,
            "The image seems to show three red squares, but the prompt asks for two, so draw two red squares."
        );
        assert_eq!(check.variants[0].value, "three");
        assert_eq!(check.variants[0].text, "three red squares");
        assert_eq!(
            check.variants[1].value, "",
            "the prompt's own variant has an empty value"
        );
        let total: f32 = check
            .variants
            .iter()
            .map(|variant| variant.probability)
            .sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert!((check.score - check.variants[1].probability).abs() < 1e-6);
        assert!(!check.hard);
        assert_eq!(check.weight, 1.0);
    }

    #[test]
    fn probe_passes_by_margin() {
        let check = probe_check(
            &count_probe(),
            &whole(&[0.0, 0.30, 0.10, 0.25]),
            100.0,
            &Calibration::default(),
        );
        assert!(check.passed, "{check:?}");
        assert_eq!(check.observed, "two");
        assert!(check.feedback.is_empty());
        assert!(check.score > 0.9, "{}", check.score);
    }

    #[test]
    fn narrow_lead_fails_margin() {
        let mut calibration = Calibration::default();
        calibration.probe_margins.count = 0.5;
        // Logits 25.5 and 25.0: the prompt's variant leads with about 0.62 to 0.38.
        let check = probe_check(
            &count_probe(),
            &whole(&[0.0, 0.255, 0.0, 0.25]),
            100.0,
            &calibration,
        );
        assert!(!check.passed);
        assert_eq!(check.observed, "two");
        assert!(check.feedback.contains("only weakly"), "{}", check.feedback);
        assert!(
            check.feedback.contains("below the margin 0.50"),
            "{}",
            check.feedback
        );
    }

    #[test]
    fn hard_kinds_from_calibration() {
        let mut calibration = Calibration::default();
        calibration.hard_kinds.push(CheckKind::Count);
        let check = probe_check(
            &count_probe(),
            &whole(&[0.0, 0.3, 0.1, 0.1]),
            100.0,
            &calibration,
        );
        assert!(check.hard);
    }

    #[test]
    fn lead_of_probabilities() {
        let (value, index) = lead(&[0.5, 0.2, 0.3]);
        assert!((value - 0.2).abs() < 1e-6);
        assert_eq!(index, 2);
        let (value, index) = lead(&[0.1, 0.6, 0.3]);
        assert!((value + 0.5).abs() < 1e-6);
        assert_eq!(index, 1);
    }
}
