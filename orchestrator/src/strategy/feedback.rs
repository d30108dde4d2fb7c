//! Turns a critique's failed checks into a corrected prompt: weight on the
//! parts the image missed, and a negative prompt naming what it showed
//! instead.
//!
//! The weighting uses the generator's prompt syntax `(words:1.3)`, which
//! scales the embeddings of those words' tokens.

use redraft_proto::{CheckKind, Critique};

/// Weight put on a missed part of the prompt.
pub const EMPHASIS_WEIGHT: f32 = 1.3;
/// Most failed checks a rewrite acts on, worst first. More emphasis at once
/// mostly flattens the weights back to uniform.
pub const MAX_FINDINGS: usize = 2;

/// One failed check of a prompt part, as the strategies use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The check kind: presence, count, colour or relation.
    pub kind: CheckKind,
    /// The part of the prompt checked, for example "two red circles".
    pub subject: String,
    /// Value the prompt requests, for example "two".
    pub expected: String,
    /// Value the image seems to show, for example "three".
    pub observed: String,
    /// The caption of what the image seems to show, when the critic scored one,
    /// for example "three red circles".
    pub shown_caption: Option<String>,
    /// The check's score in [0, 1].
    pub score: f32,
}

/// Failed checks of a critique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// Failed checks of prompt parts, worst (lowest score) first.
    pub failed: Vec<Finding>,
    /// Prompt-part checks that ran, failed or not.
    pub part_checks: usize,
    /// True when an image quality check failed, so the image is unusable as a start.
    pub quality_failed: bool,
}

impl Findings {
    /// Reads the failed checks of `critique`.
    pub fn from_critique(critique: &Critique) -> Self {
        let mut findings = Self::default();
        for check in &critique.checks {
            let kind = CheckKind::try_from(check.kind).unwrap_or(CheckKind::Unspecified);
            match kind {
                CheckKind::Quality => findings.quality_failed |= !check.passed,
                CheckKind::Presence
                | CheckKind::Count
                | CheckKind::Color
                | CheckKind::Relation
                | CheckKind::Text => {
                    findings.part_checks += 1;
                    if !check.passed {
                        findings.failed.push(Finding {
                            kind,
                            subject: check.subject.clone(),
                            expected: check.expected.clone(),
                            observed: check.observed.clone(),
                            shown_caption: shown_caption(check),
                            score: check.score,
                        });
                    }
                }
                CheckKind::Alignment | CheckKind::Unspecified => {}
            }
        }
        findings.failed.sort_by(|a, b| a.score.total_cmp(&b.score));
        findings
    }

    /// Fraction of prompt-part checks that failed, 0 when none ran.
    pub fn failed_fraction(&self) -> f32 {
        if self.part_checks == 0 {
            0.0
        } else {
            self.failed.len() as f32 / self.part_checks as f32
        }
    }

    /// Describes the worst failures briefly, for iteration reasons.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .failed
            .iter()
            .take(MAX_FINDINGS)
            .map(|finding| {
                let kind = kind_word(finding.kind);
                if finding.observed.is_empty() {
                    format!("{kind} of \"{}\"", finding.subject)
                } else if finding.observed == finding.expected {
                    // The probe's own variant won, but by less than its margin.
                    format!("{kind} of \"{}\" (shown only weakly)", finding.subject)
                } else {
                    format!(
                        "{kind} of \"{}\" (shows {}, asks {})",
                        finding.subject, finding.observed, finding.expected
                    )
                }
            })
            .collect();
        parts.join("; ")
    }
}

/// The winning variant's caption of a failed probe, when it differs from
/// the prompt's own variant (variants come best first, and the prompt's own
/// has an empty value).
fn shown_caption(check: &redraft_proto::Check) -> Option<String> {
    let winner = check.variants.first()?;
    (!winner.value.is_empty() && !winner.text.is_empty()).then(|| winner.text.clone())
}

fn kind_word(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Presence => "presence",
        CheckKind::Count => "count",
        CheckKind::Color => "colour",
        CheckKind::Relation => "relation",
        CheckKind::Text => "text",
        CheckKind::Quality => "quality",
        CheckKind::Alignment => "alignment",
        CheckKind::Unspecified => "check",
    }
}

/// A prompt corrected from findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The prompt with weight on the missed parts.
    pub prompt: String,
    /// The user's negative prompt followed by what the image showed instead.
    pub negative_prompt: String,
}

/// Rewrites `prompt` from the worst findings: each missed part found in the
/// prompt gets `EMPHASIS_WEIGHT`, and each shown caption joins the negative
/// prompt. Parts the prompt does not contain word for word get no weight.
pub fn rewrite(prompt: &str, negative_prompt: &str, findings: &Findings) -> Rewrite {
    let mut rewritten = prompt.to_string();
    let mut negatives: Vec<String> = Vec::new();
    if !negative_prompt.trim().is_empty() {
        negatives.push(negative_prompt.trim().to_string());
    }
    for finding in findings.failed.iter().take(MAX_FINDINGS) {
        for phrase in [&finding.subject, &finding.expected] {
            if let Some(emphasized) = emphasize(&rewritten, phrase, EMPHASIS_WEIGHT) {
                rewritten = emphasized;
                break;
            }
        }
        if let Some(caption) = &finding.shown_caption
            && !negatives.contains(caption)
        {
            negatives.push(caption.clone());
        }
    }
    Rewrite {
        prompt: rewritten,
        negative_prompt: negatives.join(", "),
    }
}

/// Wraps the first whole-word, case-insensitive occurrence of `phrase` in
/// `prompt` that is outside any weighting brackets as `(phrase:weight)`.
/// Returns `None` when there is none.
pub fn emphasize(prompt: &str, phrase: &str, weight: f32) -> Option<String> {
    let phrase = phrase.trim();
    if phrase.is_empty() {
        return None;
    }
    let lower_prompt = prompt.to_lowercase();
    let lower_phrase = phrase.to_lowercase();
    // Lower-casing can change byte lengths outside ASCII; match only where it does not.
    if lower_prompt.len() != prompt.len() || lower_phrase.len() != phrase.len() {
        return None;
    }
    let mut search_from = 0;
    while let Some(offset) = lower_prompt[search_from..].find(&lower_phrase) {
        let start = search_from + offset;
        let end = start + lower_phrase.len();
        let word_start = prompt[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let word_end = prompt[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric());
        if word_start && word_end && bracket_depth(&prompt[..start]) == 0 {
            return Some(format!(
                "{}({}:{weight}){}",
                &prompt[..start],
                &prompt[start..end],
                &prompt[end..]
            ));
        }
        search_from = start + 1;
        while !prompt.is_char_boundary(search_from) {
            search_from += 1;
        }
    }
    None
}

/// Weighting brackets open at the end of `text`; escaped brackets do not count.
fn bracket_depth(text: &str) -> i32 {
    let mut depth = 0;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            '\\' if !escaped => {
                escaped = true;
                continue;
            }
            '(' | '[' if !escaped => depth += 1,
            ')' | ']' if !escaped => depth -= 1,
            _ => {}
        }
        escaped = false;
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;
    use redraft_proto::{Check, ProbeVariant};

    fn failed(
        kind: CheckKind,
        subject: &str,
        expected: &str,
        observed: &str,
        shown: &str,
    ) -> Check {
        Check {
            kind: kind as i32,
            subject: subject.to_string(),
            expected: expected.to_string(),
            observed: observed.to_string(),
            score: 0.2,
            passed: false,
            variants: vec![
                ProbeVariant {
                    text: shown.to_string(),
                    probability: 0.7,
                    value: observed.to_string(),
                },
                ProbeVariant {
                    text: subject.to_string(),
                    probability: 0.3,
                    value: String::new(),
                },
            ],
            ..Default::default()
        }
    }

    fn passed(kind: CheckKind) -> Check {
        Check {
            kind: kind as i32,
            passed: true,
            score: 0.9,
            ..Default::default()
        }
    }

    #[test]
    fn findings_read_failed_parts() {
        let critique = Critique {
            checks: vec![
                passed(CheckKind::Alignment),
                passed(CheckKind::Presence),
                failed(
                    CheckKind::Count,
                    "two red circles",
                    "two",
                    "three",
                    "three red circles",
                ),
                passed(CheckKind::Quality),
            ],
            ..Default::default()
        };
        let findings = Findings::from_critique(&critique);
        assert_eq!(findings.part_checks, 2);
        assert_eq!(findings.failed.len(), 1);
        assert!(!findings.quality_failed);
        assert_eq!(findings.failed_fraction(), 0.5);
        assert_eq!(
            findings.failed[0].shown_caption.as_deref(),
            Some("three red circles")
        );
        assert_eq!(
            findings.describe(),
            "count of \"two red circles\" (shows three, asks two)"
        );
    }

    #[test]
    fn findings_describe_weak_part() {
        let critique = Critique {
            checks: vec![failed(
                CheckKind::Color,
                "a red circle",
                "red",
                "red",
                "a red circle",
            )],
            ..Default::default()
        };
        let findings = Findings::from_critique(&critique);
        assert_eq!(findings.failed.len(), 1);
        assert_eq!(
            findings.describe(),
            "colour of \"a red circle\" (shown only weakly)"
        );
    }

    #[test]
    fn findings_flag_quality_failure() {
        let mut quality = passed(CheckKind::Quality);
        quality.passed = false;
        let findings = Findings::from_critique(&Critique {
            checks: vec![quality],
            ..Default::default()
        });
        assert!(findings.quality_failed);
        assert_eq!(findings.part_checks, 0);
        assert_eq!(findings.failed_fraction(), 0.0);
    }

    #[test]
    fn rewrite_weights_subject_and_negates_shown() {
        let critique = Critique {
            checks: vec![failed(
                CheckKind::Count,
                "two red circles",
                "two",
                "three",
                "three red circles",
            )],
            ..Default::default()
        };
        let rewrite = rewrite(
            "a photo of two red circles",
            "",
            &Findings::from_critique(&critique),
        );
        assert_eq!(rewrite.prompt, "a photo of (two red circles:1.3)");
        assert_eq!(rewrite.negative_prompt, "three red circles");
    }

    #[test]
    fn rewrite_falls_back_to_expected() {
        let critique = Critique {
            checks: vec![failed(
                CheckKind::Color,
                "the red square",
                "red",
                "blue",
                "a blue square",
            )],
            ..Default::default()
        };
        let rewrite = rewrite(
            "a red square above a circle",
            "noise",
            &Findings::from_critique(&critique),
        );
        assert_eq!(rewrite.prompt, "a (red:1.3) square above a circle");
        assert_eq!(rewrite.negative_prompt, "noise, a blue square");
    }

    #[test]
    fn rewrite_acts_on_worst_findings_only() {
        let mut checks = vec![
            failed(CheckKind::Presence, "circle", "", "", ""),
            failed(CheckKind::Presence, "square", "", "", ""),
            failed(CheckKind::Presence, "triangle", "", "", ""),
        ];
        checks[0].score = 0.3;
        checks[1].score = 0.1;
        checks[2].score = 0.2;
        let findings = Findings::from_critique(&Critique {
            checks,
            ..Default::default()
        });
        let rewrite = rewrite("a circle, a square and a triangle", "", &findings);
        assert_eq!(
            rewrite.prompt,
            "a circle, a (square:1.3) and a (triangle:1.3)"
        );
        assert_eq!(rewrite.negative_prompt, "");
    }

    #[test]
    fn emphasize_matches_whole_words_outside_brackets() {
        assert_eq!(
            emphasize("a red square", "red", 1.3).as_deref(),
            Some("a (red:1.3) square")
        );
        assert_eq!(emphasize("a reddish square", "red", 1.3), None);
        assert_eq!(
            emphasize("(red:1.2) and red", "red", 1.3).as_deref(),
            Some("(red:1.2) and (red:1.3)")
        );
        assert_eq!(
            emphasize("A Red Square", "red square", 1.5).as_deref(),
            Some("A (Red Square:1.5)")
        );
        assert_eq!(emphasize("a red square", "", 1.3), None);
        assert_eq!(emphasize("a red square", "blue", 1.3), None);
        assert_eq!(
            emphasize(r"\(red\) red", "red", 1.3).as_deref(),
            Some(r"\((red:1.3)\) red")
        );
    }
}
