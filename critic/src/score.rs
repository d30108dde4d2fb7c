//! The global alignment check, its calibration, and the overall score of a
//! critique.

use std::path::Path;

use redraft_proto::{Check, CheckKind};
use serde::Deserialize;

use crate::error::CriticError;

/// Optional calibration file of a model folder.
pub const CALIBRATION_FILE: &str = "redraft_critic.json";

/// Weight of the alignment check in the overall score.
pub const ALIGNMENT_WEIGHT: f32 = 1.0;
/// Weight of each quality check in the overall score. Quality checks are
/// hard gates: a failed one sets the overall score to 0, and a passed one
/// leaves the score to the prompt checks, so it weighs nothing.
pub const QUALITY_WEIGHT: f32 = 0.0;

/// Calibration of the alignment check: the cosine range that maps linearly
/// onto alignment scores 0 to 1, and the score the check needs to pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Cosine similarity that maps to score 0.
    pub cosine_low: f32,
    /// Cosine similarity that maps to score 1.
    pub cosine_high: f32,
    /// Lowest alignment score that passes, in [0, 1].
    pub pass_threshold: f32,
}

impl Calibration {
    /// CLIPScore's rescaling of the cosine for full-size CLIP, `2.5 * max(cosine, 0)`
    /// (Hessel et al. 2021, `get_clip_score` in github.com/jmhessel/clipscore,
    /// w = 2.5), clamped here at 1 and written as the cosine range [0, 0.4].
    /// The pass threshold 0.5 is a chosen value, not from the paper.
    pub const CLIP_SCORE: Self = Self {
        cosine_low: 0.0,
        cosine_high: 0.4,
        pass_threshold: 0.5,
    };

    /// Reads `redraft_critic.json` from the model folder `dir`, or returns
    /// [`Calibration::CLIP_SCORE`] when the folder has no such file.
    pub fn load(dir: &Path) -> Result<Self, CriticError> {
        let path = dir.join(CALIBRATION_FILE);
        if !path.exists() {
            return Ok(Self::CLIP_SCORE);
        }
        let text = std::fs::read_to_string(&path).map_err(|error| {
            CriticError::folder(&path, format!("failed to read {}: {error}", path.display()))
        })?;
        Self::parse(&text, &path)
    }

    /// Parses the text of a calibration file:
    /// `{"alignment": {"cosine_low": f, "cosine_high": f}, "pass_threshold": f}`,
    /// where `pass_threshold` is optional and defaults to 0.5. `path` names
    /// the file in errors.
    pub fn parse(json: &str, path: &Path) -> Result<Self, CriticError> {
        let file: CalibrationFile = serde_json::from_str(json).map_err(|error| {
            CriticError::folder(path, format!("invalid {}: {error}", path.display()))
        })?;
        let low = file.alignment.cosine_low;
        let high = file.alignment.cosine_high;
        if !low.is_finite() || !(-1.0..1.0).contains(&low) {
            return Err(CriticError::unsupported(
                path,
                "alignment.cosine_low",
                low,
                "in [-1, 1)",
            ));
        }
        if !high.is_finite() || high <= low || high > 1.0 {
            return Err(CriticError::unsupported(
                path,
                "alignment.cosine_high",
                high,
                format!("greater than alignment.cosine_low ({low}) and at most 1"),
            ));
        }
        let threshold = file.pass_threshold;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(CriticError::unsupported(
                path,
                "pass_threshold",
                threshold,
                "in [0, 1]",
            ));
        }
        Ok(Self {
            cosine_low: low,
            cosine_high: high,
            pass_threshold: threshold,
        })
    }

    /// Alignment score of `cosine`: `clamp((cosine - low) / (high - low), 0, 1)`,
    /// and 0 for a non-finite cosine.
    pub fn alignment_score(&self, cosine: f32) -> f32 {
        if !cosine.is_finite() {
            return 0.0;
        }
        ((cosine - self.cosine_low) / (self.cosine_high - self.cosine_low)).clamp(0.0, 1.0)
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Self::CLIP_SCORE
    }
}

#[derive(Deserialize)]
struct CalibrationFile {
    alignment: AlignmentRange,
    #[serde(default = "default_pass_threshold")]
    pass_threshold: f32,
}

#[derive(Deserialize)]
struct AlignmentRange {
    cosine_low: f32,
    cosine_high: f32,
}

fn default_pass_threshold() -> f32 {
    Calibration::CLIP_SCORE.pass_threshold
}

/// Builds the ALIGNMENT check of the whole `prompt` against the whole image,
/// from their CLIP cosine similarity.
pub fn alignment_check(prompt: &str, cosine: f32, calibration: &Calibration) -> Check {
    let score = calibration.alignment_score(cosine);
    let threshold = calibration.pass_threshold;
    let passed = cosine.is_finite() && score >= threshold;
    let observed = if cosine.is_finite() {
        format!("cosine similarity {cosine:.3} with the prompt (alignment score {score:.2})")
    } else {
        format!("a non-finite cosine similarity ({cosine}) with the prompt")
    };
    let feedback = if passed {
        String::new()
    } else {
        format!(
            "The image matches the prompt weakly (alignment score {score:.2}, below {threshold:.2}), \
             so draw what the prompt describes."
        )
    };
    Check {
        kind: CheckKind::Alignment.into(),
        subject: prompt.to_string(),
        expected: format!(
            "an image that matches the prompt, alignment score at least {threshold:.2}"
        ),
        observed,
        score,
        passed,
        feedback,
        hard: false,
        variants: Vec::new(),
        weight: ALIGNMENT_WEIGHT,
    }
}

/// Computes the overall score of `checks` and whether every hard check passed.
///
/// The score is the mean of the check scores weighted by `weight`, and 0 when
/// a hard check failed or no check has a positive weight. Scores are clamped
/// to [0, 1], and checks with a non-finite or non-positive weight are left out.
pub fn aggregate(checks: &[Check]) -> (f32, bool) {
    let hard_checks_passed = checks.iter().all(|check| check.passed || !check.hard);
    if !hard_checks_passed {
        return (0.0, false);
    }
    let mut weighted_sum = 0.0f32;
    let mut total_weight = 0.0f32;
    for check in checks {
        if !check.weight.is_finite() || check.weight <= 0.0 {
            continue;
        }
        let score = if check.score.is_finite() {
            check.score.clamp(0.0, 1.0)
        } else {
            0.0
        };
        weighted_sum += check.weight * score;
        total_weight += check.weight;
    }
    let score = if total_weight > 0.0 {
        weighted_sum / total_weight
    } else {
        0.0
    };
    (score, true)
}

/// Sums up `checks` in one sentence for a person: how many passed, and what
/// each failed check observed.
pub fn summary(checks: &[Check]) -> String {
    if checks.is_empty() {
        return "No checks were run.".to_string();
    }
    let failed: Vec<&Check> = checks.iter().filter(|check| !check.passed).collect();
    let noun = if checks.len() == 1 { "check" } else { "checks" };
    if failed.is_empty() {
        return format!("All {} {noun} passed.", checks.len());
    }
    let observations: Vec<String> = failed
        .iter()
        .map(|check| {
            let kind = CheckKind::try_from(check.kind)
                .map(|kind| {
                    kind.as_str_name()
                        .trim_start_matches("CHECK_KIND_")
                        .to_lowercase()
                })
                .unwrap_or_else(|_| "unknown".to_string());
            format!("{kind} ({})", check.observed)
        })
        .collect();
    let hard = if failed.iter().any(|check| check.hard) {
        ", including a hard check, so the score is 0"
    } else {
        ""
    };
    format!(
        "{} of {} {noun} failed{hard}: {}.",
        failed.len(),
        checks.len(),
        join_words(&observations)
    )
}

/// Joins `items` as "a", "a and b" or "a, b and c".
fn join_words(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(score: f32, weight: f32, passed: bool, hard: bool) -> Check {
        Check {
            kind: CheckKind::Quality.into(),
            subject: "image".to_string(),
            observed: format!("score {score}"),
            score,
            passed,
            hard,
            weight,
            ..Check::default()
        }
    }

    #[test]
    fn clip_score_rescaling_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let calibration = Calibration::load(dir.path()).unwrap();
        assert_eq!(calibration, Calibration::CLIP_SCORE);
        assert!((calibration.alignment_score(0.3) - 0.75).abs() < 1e-6);
        assert_eq!(calibration.alignment_score(0.5), 1.0);
        assert_eq!(calibration.alignment_score(-0.1), 0.0);
        assert_eq!(calibration.alignment_score(f32::NAN), 0.0);
    }

    #[test]
    fn calibration_file_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let json =
            r#"{"alignment": {"cosine_low": 0.1, "cosine_high": 0.3}, "pass_threshold": 0.6}"#;
        std::fs::write(dir.path().join(CALIBRATION_FILE), json).unwrap();
        let calibration = Calibration::load(dir.path()).unwrap();
        assert_eq!(calibration.pass_threshold, 0.6);
        assert!((calibration.alignment_score(0.2) - 0.5).abs() < 1e-6);

        let check = alignment_check("a red circle", 0.2, &calibration);
        assert!(!check.passed, "0.5 is below the threshold 0.6");
        assert!((check.score - 0.5).abs() < 1e-6);
        let check = alignment_check("a red circle", 0.25, &calibration);
        assert!(check.passed, "0.75 is above the threshold 0.6");
    }

    #[test]
    fn calibration_threshold_defaults() {
        let json = r#"{"alignment": {"cosine_low": 0.1, "cosine_high": 0.3}}"#;
        let calibration = Calibration::parse(json, Path::new("redraft_critic.json")).unwrap();
        assert_eq!(calibration.pass_threshold, 0.5);
    }

    #[test]
    fn calibration_rejects_bad_ranges() {
        let path = Path::new("/m/redraft_critic.json");
        let cases = [
            (
                r#"{"alignment": {"cosine_low": 0.3, "cosine_high": 0.3}}"#,
                "alignment.cosine_high",
            ),
            (
                r#"{"alignment": {"cosine_low": -2, "cosine_high": 0.3}}"#,
                "alignment.cosine_low",
            ),
            (
                r#"{"alignment": {"cosine_low": 0, "cosine_high": 0.3}, "pass_threshold": 1.5}"#,
                "pass_threshold",
            ),
        ];
        for (json, expected_field) in cases {
            match Calibration::parse(json, path) {
                Err(CriticError::UnsupportedConfig { field, .. }) => {
                    assert_eq!(field, expected_field)
                }
                other => panic!("{json}: expected an error on {expected_field}, got {other:?}"),
            }
        }
        let error = Calibration::parse(r#"{"pass_threshold": 0.5}"#, path).unwrap_err();
        assert!(error.to_string().contains("alignment"), "{error}");
    }

    #[test]
    fn alignment_check_fields() {
        let check = alignment_check("two blue squares", 0.1, &Calibration::CLIP_SCORE);
        assert_eq!(check.kind, i32::from(CheckKind::Alignment));
        assert_eq!(check.subject, "two blue squares");
        assert!(!check.passed);
        assert!(!check.hard);
        assert_eq!(check.weight, ALIGNMENT_WEIGHT);
        assert!(check.observed.contains("0.100"), "{}", check.observed);
        assert!(check.feedback.contains("0.25"), "{}", check.feedback);

        let passed = alignment_check("two blue squares", 0.3, &Calibration::CLIP_SCORE);
        assert!(passed.passed);
        assert!(passed.feedback.is_empty());
    }

    #[test]
    fn aggregate_weighted_mean() {
        let checks = [check(0.4, 1.0, false, false), check(1.0, 0.5, true, true)];
        let (score, hard_passed) = aggregate(&checks);
        assert!(hard_passed);
        assert!(
            (score - 0.6).abs() < 1e-6,
            "(0.4 * 1 + 1 * 0.5) / 1.5 = 0.6, got {score}"
        );
    }

    #[test]
    fn aggregate_zero_on_hard_failure() {
        let checks = [check(0.9, 1.0, true, false), check(0.0, 0.5, false, true)];
        assert_eq!(aggregate(&checks), (0.0, false));
    }

    #[test]
    fn aggregate_ignores_bad_weights() {
        let checks = [
            check(1.0, 0.0, true, false),
            check(0.5, f32::NAN, true, false),
        ];
        assert_eq!(aggregate(&checks), (0.0, true));
        assert_eq!(aggregate(&[]), (0.0, true));
    }

    #[test]
    fn summary_names_failures() {
        assert_eq!(summary(&[]), "No checks were run.");
        assert_eq!(
            summary(&[check(1.0, 1.0, true, false)]),
            "All 1 check passed."
        );
        let checks = [
            alignment_check("a red circle", 0.05, &Calibration::CLIP_SCORE),
            check(0.0, 0.5, false, true),
            check(1.0, 0.5, true, true),
        ];
        let text = summary(&checks);
        assert!(
            text.starts_with("2 of 3 checks failed, including a hard check"),
            "{text}"
        );
        assert!(
            text.contains("alignment (cosine similarity 0.050"),
            "{text}"
        );
        assert!(text.contains(" and quality (score 0)"), "{text}");
    }
}
