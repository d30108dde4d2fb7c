//! The global alignment check, its calibration, and the overall score of a
//! critique.

use std::path::Path;

use redraft_proto::{Check, CheckKind};
use serde::{Deserialize, Serialize};

use crate::error::CriticError;

/// Optional calibration file of a model folder.
pub const CALIBRATION_FILE: &str = "redraft_critic.json";

/// Weight of the alignment check in the overall score.
pub const ALIGNMENT_WEIGHT: f32 = 1.0;
/// Weight of each probe check (presence, count, colour and relation of one
/// object) in the overall score. Each probe weighs as much as the alignment
/// check, so a prompt with more parts leans more on its probes.
pub const PROBE_WEIGHT: f32 = 1.0;
/// Weight of each quality check in the overall score. Quality checks are
/// hard gates by default: a failed one sets the overall score to 0, and a
/// passed one leaves the score to the prompt checks, so it weighs nothing.
pub const QUALITY_WEIGHT: f32 = 0.0;

/// Returns the weight of a check of `kind` in the overall score.
pub fn kind_weight(kind: CheckKind) -> f32 {
    match kind {
        CheckKind::Alignment => ALIGNMENT_WEIGHT,
        CheckKind::Presence | CheckKind::Count | CheckKind::Color | CheckKind::Relation => {
            PROBE_WEIGHT
        }
        CheckKind::Quality | CheckKind::Text | CheckKind::Unspecified => QUALITY_WEIGHT,
    }
}

/// Margins by which the prompt's own variant of a probe must beat every
/// other variant, as a difference of softmax probabilities in [0, 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeMargins {
    #[serde(default = "default_margin")]
    pub presence: f32,
    #[serde(default = "default_margin")]
    pub count: f32,
    #[serde(default = "default_margin")]
    pub color: f32,
    #[serde(default = "default_margin")]
    pub relation: f32,
}

/// Margin of every probe kind when `redraft_critic.json` has no
/// `probe_margins`. It is a chosen value: the prompt's own variant must be
/// ten points of probability ahead of the next one.
pub const DEFAULT_MARGIN: f32 = 0.1;

fn default_margin() -> f32 {
    DEFAULT_MARGIN
}

impl Default for ProbeMargins {
    fn default() -> Self {
        Self {
            presence: DEFAULT_MARGIN,
            count: DEFAULT_MARGIN,
            color: DEFAULT_MARGIN,
            relation: DEFAULT_MARGIN,
        }
    }
}

impl ProbeMargins {
    /// Returns the margin of probes of `kind`, or `None` for kinds that are not probes.
    pub fn of(&self, kind: CheckKind) -> Option<f32> {
        match kind {
            CheckKind::Presence => Some(self.presence),
            CheckKind::Count => Some(self.count),
            CheckKind::Color => Some(self.color),
            CheckKind::Relation => Some(self.relation),
            _ => None,
        }
    }

    /// Sets the margin of probes of `kind`; other kinds are ignored.
    pub fn set(&mut self, kind: CheckKind, margin: f32) {
        match kind {
            CheckKind::Presence => self.presence = margin,
            CheckKind::Count => self.count = margin,
            CheckKind::Color => self.color = margin,
            CheckKind::Relation => self.relation = margin,
            _ => {}
        }
    }
}

/// Words the probes use for the variants they compare against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeWords {
    /// Colours of the colour probes' variants.
    #[serde(default = "default_colors")]
    pub colors: Vec<String>,
    /// Nouns the presence probes compare an object against. Nouns of the
    /// prompt itself are left out.
    #[serde(default = "default_presence_nouns")]
    pub presence_nouns: Vec<String>,
    /// Largest count of the count probes' variants (besides the requested
    /// count plus one).
    #[serde(default = "default_max_count")]
    pub max_count: u32,
    /// Noun the model learned for objects drawn wrong, such as "blob" for
    /// the shapes world's flawed objects. Presence probes offer one such
    /// object ("a blob") as another variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flaw_noun: Option<String>,
}

fn default_colors() -> Vec<String> {
    [
        "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
        "gray",
    ]
    .map(String::from)
    .to_vec()
}

fn default_presence_nouns() -> Vec<String> {
    [
        "person", "dog", "cat", "car", "bird", "chair", "cup", "bottle", "tree", "house", "ball",
        "circle", "square", "triangle",
    ]
    .map(String::from)
    .to_vec()
}

fn default_max_count() -> u32 {
    4
}

impl Default for ProbeWords {
    fn default() -> Self {
        Self {
            colors: default_colors(),
            presence_nouns: default_presence_nouns(),
            max_count: default_max_count(),
            flaw_noun: None,
        }
    }
}

/// Largest `probe_words.max_count`, which bounds the variants of a count probe.
pub const MAX_PROBE_COUNT: u32 = 20;

/// Caption template of the probes when the file sets none: CLIP's usual
/// zero-shot prompt.
pub const DEFAULT_CAPTION_TEMPLATE: &str = "a photo of {}";

/// Calibration of a critic model, read from `redraft_critic.json` in its
/// folder: the cosine range that maps linearly onto alignment scores 0 to
/// 1, the alignment score that passes, the probe margins, the check kinds
/// that are hard, and the words of the probes' variants.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Cosine similarity that maps to score 0.
    pub cosine_low: f32,
    /// Cosine similarity that maps to score 1.
    pub cosine_high: f32,
    /// Lowest alignment score that passes, in [0, 1].
    pub pass_threshold: f32,
    /// Margins of the probes, per kind.
    pub probe_margins: ProbeMargins,
    /// Kinds whose failed checks set the overall score to 0.
    pub hard_kinds: Vec<CheckKind>,
    /// Probe kinds whose variants the model scores at chance, as measured by
    /// `redraft shapes calibrate-critic`. Parts of these kinds get no probe
    /// and are judged only by the alignment check.
    pub unprobed_kinds: Vec<CheckKind>,
    /// Words of the probes' variants.
    pub probe_words: ProbeWords,
    /// Caption of a probe variant, with `{}` where the variant's phrase goes.
    pub caption_template: String,
}

impl Calibration {
    /// CLIPScore's rescaling of the cosine for full-size CLIP, `2.5 * max(cosine, 0)`
    /// (Hessel et al. 2021, `get_clip_score` in github.com/jmhessel/clipscore,
    /// w = 2.5), clamped here at 1 and written as the cosine range [0, 0.4].
    /// The pass threshold 0.5 is a chosen value, not from the paper.
    pub fn clip_score() -> Self {
        Self {
            cosine_low: 0.0,
            cosine_high: 0.4,
            pass_threshold: 0.5,
            probe_margins: ProbeMargins::default(),
            hard_kinds: vec![CheckKind::Quality],
            unprobed_kinds: Vec::new(),
            probe_words: ProbeWords::default(),
            caption_template: DEFAULT_CAPTION_TEMPLATE.to_string(),
        }
    }

    /// Reads `redraft_critic.json` from the model folder `dir`, or returns
    /// [`Calibration::clip_score`] when the folder has no such file.
    pub fn load(dir: &Path) -> Result<Self, CriticError> {
        let path = dir.join(CALIBRATION_FILE);
        if !path.exists() {
            return Ok(Self::clip_score());
        }
        let text = std::fs::read_to_string(&path).map_err(|error| {
            CriticError::folder(&path, format!("failed to read {}: {error}", path.display()))
        })?;
        Self::parse(&text, &path)
    }

    /// Parses the text of a calibration file. `path` names the file in errors.
    ///
    /// ```json
    /// {
    ///   "alignment": {"cosine_low": 0.2, "cosine_high": 0.74},
    ///   "pass_threshold": 0.5,
    ///   "probe_margins": {"presence": 0.1, "count": 0.1, "color": 0.1, "relation": 0.1},
    ///   "hard_kinds": ["quality"],
    ///   "unprobed_kinds": ["relation"],
    ///   "probe_words": {"colors": ["red"], "presence_nouns": ["circle"], "max_count": 4},
    ///   "caption_template": "a photo of {}"
    /// }
    /// ```
    ///
    /// Only `alignment` is required. The defaults are `pass_threshold` 0.5,
    /// [`DEFAULT_MARGIN`] for each probe kind, `hard_kinds` `["quality"]`,
    /// no `unprobed_kinds`,
    /// [`ProbeWords::default`] and [`DEFAULT_CAPTION_TEMPLATE`].
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
        let margins = file.probe_margins;
        for (name, margin) in [
            ("presence", margins.presence),
            ("count", margins.count),
            ("color", margins.color),
            ("relation", margins.relation),
        ] {
            if !(0.0..1.0).contains(&margin) {
                return Err(CriticError::unsupported(
                    path,
                    format!("probe_margins.{name}"),
                    margin,
                    "in [0, 1)",
                ));
            }
        }
        let mut hard_kinds = Vec::with_capacity(file.hard_kinds.len());
        for (index, name) in file.hard_kinds.iter().enumerate() {
            let kind = kind_from_name(name).ok_or_else(|| {
                CriticError::unsupported(
                    path,
                    format!("hard_kinds[{index}]"),
                    name,
                    "one of alignment, presence, count, color, relation, text, quality",
                )
            })?;
            hard_kinds.push(kind);
        }
        let mut unprobed_kinds = Vec::with_capacity(file.unprobed_kinds.len());
        for (index, name) in file.unprobed_kinds.iter().enumerate() {
            let kind = kind_from_name(name)
                .filter(|kind| PROBE_KINDS.contains(kind))
                .ok_or_else(|| {
                    CriticError::unsupported(
                        path,
                        format!("unprobed_kinds[{index}]"),
                        name,
                        "one of presence, count, color, relation",
                    )
                })?;
            unprobed_kinds.push(kind);
        }
        let words = file.probe_words;
        if !(1..=MAX_PROBE_COUNT).contains(&words.max_count) {
            return Err(CriticError::unsupported(
                path,
                "probe_words.max_count",
                words.max_count,
                format!("from 1 to {MAX_PROBE_COUNT}"),
            ));
        }
        if file.caption_template.matches("{}").count() != 1 {
            return Err(CriticError::unsupported(
                path,
                "caption_template",
                format!("{:?}", file.caption_template),
                "text with exactly one {} where the phrase goes",
            ));
        }
        Ok(Self {
            cosine_low: low,
            cosine_high: high,
            pass_threshold: threshold,
            probe_margins: margins,
            hard_kinds,
            unprobed_kinds,
            probe_words: words,
            caption_template: file.caption_template,
        })
    }

    /// Writes the calibration as the JSON text of `redraft_critic.json`.
    pub fn to_json(&self) -> String {
        let file = CalibrationFile {
            alignment: AlignmentRange {
                cosine_low: self.cosine_low,
                cosine_high: self.cosine_high,
            },
            pass_threshold: self.pass_threshold,
            probe_margins: self.probe_margins,
            hard_kinds: self
                .hard_kinds
                .iter()
                .map(|kind| kind_name(*kind))
                .collect(),
            unprobed_kinds: self
                .unprobed_kinds
                .iter()
                .map(|kind| kind_name(*kind))
                .collect(),
            probe_words: self.probe_words.clone(),
            caption_template: self.caption_template.clone(),
        };
        serde_json::to_string_pretty(&file).expect("the calibration serializes to JSON")
    }

    /// Alignment score of `cosine`: `clamp((cosine - low) / (high - low), 0, 1)`,
    /// and 0 for a non-finite cosine.
    pub fn alignment_score(&self, cosine: f32) -> f32 {
        if !cosine.is_finite() {
            return 0.0;
        }
        ((cosine - self.cosine_low) / (self.cosine_high - self.cosine_low)).clamp(0.0, 1.0)
    }

    /// Returns whether parts of `kind` get a probe.
    pub fn probes(&self, kind: CheckKind) -> bool {
        !self.unprobed_kinds.contains(&kind)
    }

    /// Returns whether checks of `kind` are hard.
    pub fn is_hard(&self, kind: CheckKind) -> bool {
        self.hard_kinds.contains(&kind)
    }

    /// Writes `phrase` into the caption template.
    pub fn caption(&self, phrase: &str) -> String {
        self.caption_template.replacen("{}", phrase, 1)
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Self::clip_score()
    }
}

/// The check kinds that probes compare variants for.
pub const PROBE_KINDS: [CheckKind; 4] = [
    CheckKind::Presence,
    CheckKind::Count,
    CheckKind::Color,
    CheckKind::Relation,
];

/// Returns the lower-case name of `kind` without its `CHECK_KIND_` prefix, such as "color".
pub fn kind_name(kind: CheckKind) -> String {
    kind.as_str_name()
        .trim_start_matches("CHECK_KIND_")
        .to_lowercase()
}

/// Parses a name written by [`kind_name`].
pub fn kind_from_name(name: &str) -> Option<CheckKind> {
    CheckKind::from_str_name(&format!("CHECK_KIND_{}", name.to_uppercase()))
        .filter(|kind| *kind != CheckKind::Unspecified)
}

#[derive(Serialize, Deserialize)]
struct CalibrationFile {
    alignment: AlignmentRange,
    #[serde(default = "default_pass_threshold")]
    pass_threshold: f32,
    #[serde(default)]
    probe_margins: ProbeMargins,
    #[serde(default = "default_hard_kinds")]
    hard_kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unprobed_kinds: Vec<String>,
    #[serde(default)]
    probe_words: ProbeWords,
    #[serde(default = "default_caption_template")]
    caption_template: String,
}

#[derive(Serialize, Deserialize)]
struct AlignmentRange {
    cosine_low: f32,
    cosine_high: f32,
}

fn default_pass_threshold() -> f32 {
    0.5
}

fn default_hard_kinds() -> Vec<String> {
    vec![kind_name(CheckKind::Quality)]
}

fn default_caption_template() -> String {
    DEFAULT_CAPTION_TEMPLATE.to_string()
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
        hard: calibration.is_hard(CheckKind::Alignment),
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
        assert_eq!(calibration, Calibration::clip_score());
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
    fn probe_sections_default() {
        let json = r#"{"alignment": {"cosine_low": 0.1, "cosine_high": 0.3}}"#;
        let calibration = Calibration::parse(json, Path::new("redraft_critic.json")).unwrap();
        assert_eq!(calibration.probe_margins, ProbeMargins::default());
        assert_eq!(calibration.probe_margins.count, DEFAULT_MARGIN);
        assert_eq!(calibration.hard_kinds, vec![CheckKind::Quality]);
        assert_eq!(calibration.probe_words, ProbeWords::default());
        assert_eq!(
            calibration.caption("two red squares"),
            "a photo of two red squares"
        );
    }

    #[test]
    fn probe_sections_read_and_written() {
        let json = r#"{
            "alignment": {"cosine_low": 0.1, "cosine_high": 0.3},
            "probe_margins": {"count": 0.25, "relation": 0.05},
            "hard_kinds": ["quality", "count"],
            "unprobed_kinds": ["relation"],
            "probe_words": {"colors": ["red", "blue"], "max_count": 6},
            "caption_template": "{}"
        }"#;
        let path = Path::new("redraft_critic.json");
        let calibration = Calibration::parse(json, path).unwrap();
        assert_eq!(calibration.probe_margins.count, 0.25);
        assert_eq!(calibration.probe_margins.relation, 0.05);
        assert_eq!(calibration.probe_margins.color, DEFAULT_MARGIN);
        assert!(calibration.is_hard(CheckKind::Count));
        assert!(!calibration.is_hard(CheckKind::Color));
        assert!(!calibration.probes(CheckKind::Relation));
        assert!(calibration.probes(CheckKind::Count));
        assert_eq!(calibration.probe_words.colors, ["red", "blue"]);
        assert_eq!(calibration.probe_words.max_count, 6);
        assert_eq!(
            calibration.probe_words.presence_nouns,
            ProbeWords::default().presence_nouns
        );
        assert_eq!(calibration.caption("a cat"), "a cat");

        let written = Calibration::parse(&calibration.to_json(), path).unwrap();
        assert_eq!(written, calibration);
    }

    #[test]
    fn probe_sections_rejected() {
        let path = Path::new("/m/redraft_critic.json");
        let base = r#""alignment": {"cosine_low": 0.1, "cosine_high": 0.3}"#;
        let cases = [
            (r#""probe_margins": {"color": 1.0}"#, "probe_margins.color"),
            (
                r#""probe_margins": {"presence": -0.1}"#,
                "probe_margins.presence",
            ),
            (r#""hard_kinds": ["quality", "sharpness"]"#, "hard_kinds[1]"),
            // Alignment and quality are not probes.
            (r#""unprobed_kinds": ["quality"]"#, "unprobed_kinds[0]"),
            (
                r#""unprobed_kinds": ["count", "position"]"#,
                "unprobed_kinds[1]",
            ),
            (
                r#""probe_words": {"max_count": 0}"#,
                "probe_words.max_count",
            ),
            (
                r#""probe_words": {"max_count": 21}"#,
                "probe_words.max_count",
            ),
            (r#""caption_template": "a photo""#, "caption_template"),
        ];
        for (section, expected_field) in cases {
            let json = format!("{{{base}, {section}}}");
            match Calibration::parse(&json, path) {
                Err(CriticError::UnsupportedConfig { field, .. }) => {
                    assert_eq!(field, expected_field)
                }
                other => panic!("{json}: expected an error on {expected_field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in [CheckKind::Alignment, CheckKind::Color, CheckKind::Quality] {
            assert_eq!(kind_from_name(&kind_name(kind)), Some(kind));
        }
        assert_eq!(kind_name(CheckKind::Relation), "relation");
        assert_eq!(kind_from_name("unspecified"), None);
        assert_eq!(kind_from_name("colour"), None);
        assert_eq!(kind_weight(CheckKind::Count), PROBE_WEIGHT);
        assert_eq!(kind_weight(CheckKind::Quality), QUALITY_WEIGHT);
    }

    #[test]
    fn alignment_check_fields() {
        let check = alignment_check("two blue squares", 0.1, &Calibration::clip_score());
        assert_eq!(check.kind, i32::from(CheckKind::Alignment));
        assert_eq!(check.subject, "two blue squares");
        assert!(!check.passed);
        assert!(!check.hard);
        assert_eq!(check.weight, ALIGNMENT_WEIGHT);
        assert!(check.observed.contains("0.100"), "{}", check.observed);
        assert!(check.feedback.contains("0.25"), "{}", check.feedback);

        let passed = alignment_check("two blue squares", 0.3, &Calibration::clip_score());
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
            alignment_check("a red circle", 0.05, &Calibration::clip_score()),
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
