//! Prompt weighting: the `(words:1.4)` syntax, parsed into text segments with
//! weights, and the per-token scaling of the text encoder's hidden states.
//!
//! Syntax (also in `docs/prompt-weighting.md`):
//!
//! - `(words:w)` multiplies the weight of `words` by `w`, a number from
//!   [`MIN_WEIGHT`] to [`MAX_WEIGHT`];
//! - `(words)` multiplies it by [`EMPHASIS`] (1.1), and `[words]` divides it by 1.1;
//! - groups nest, and nested factors multiply; the product must stay
//!   within [`MIN_WEIGHT`] and [`MAX_WEIGHT`] too;
//! - `\(`, `\)`, `\[`, `\]`, `\:` and `\\` stand for the character itself;
//! - a colon is literal outside round brackets; inside them the first
//!   unescaped colon starts the weight, which runs to the closing bracket;
//! - brackets nest at most [`MAX_DEPTH`] deep.

use candle_core::{D, Tensor};
use redraft_common::InvalidArgument;
use redraft_common::tokenizer::{PromptTokenizer, TokenizerError};

/// Factor of one pair of round brackets without a number, and the divisor of
/// one pair of square brackets (the value AUTOMATIC1111's web UI uses).
pub const EMPHASIS: f64 = 1.1;
/// Smallest weight, explicit or effective. Zero removes the words' influence.
pub const MIN_WEIGHT: f64 = 0.0;
/// Largest weight, explicit or effective. It catches typos such as `(red:14)`.
/// Weights far from 1 already move the hidden states away from those the
/// UNet was trained on.
pub const MAX_WEIGHT: f64 = 3.0;

/// A run of prompt text that shares one weight.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedSegment {
    /// The text, with brackets, weights and escapes removed.
    pub text: String,
    /// The product of the factors of every group around the text.
    pub weight: f64,
}

/// Deepest nesting of brackets. Deeper prompts are rejected rather than
/// parsed with unbounded recursion.
pub const MAX_DEPTH: usize = 32;

/// Characters a backslash turns into ordinary text.
const ESCAPABLE: [char; 6] = ['(', ')', '[', ']', ':', '\\'];

/// The limit every syntax error states.
const SYNTAX: &str = "valid prompt weighting: close every ( with ) and every [ with ], \
     write weights as (words:1.4), and escape literal brackets as \\( \\) \\[ \\]";

/// Parses `prompt` into segments in order, merging neighbours of equal
/// weight. Errors name `field` (`prompt` or `negative_prompt`), the offending
/// part and the limit.
pub fn parse_weighted(field: &str, prompt: &str) -> Result<Vec<WeightedSegment>, InvalidArgument> {
    let mut parser = Parser {
        field,
        prompt,
        chars: prompt.chars().collect(),
        position: 0,
        depth: 0,
        segments: Vec::new(),
    };
    parser.parse_sequence(1.0, None)?;

    // Neighbours of equal weight become one segment, so a prompt whose
    // weights are all 1 is one segment and tokenizes like the plain text.
    let mut merged: Vec<WeightedSegment> = Vec::with_capacity(parser.segments.len());
    for segment in parser.segments {
        match merged.last_mut() {
            Some(last) if last.weight == segment.weight => last.text.push_str(&segment.text),
            _ => merged.push(segment),
        }
    }
    Ok(merged)
}

/// Joins the text of `segments` without any weighting, for example to show
/// or score the prompt as a person reads it.
pub fn plain_text(segments: &[WeightedSegment]) -> String {
    segments
        .iter()
        .map(|segment| segment.text.as_str())
        .collect()
}

/// The closing bracket a group waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Round,
    Square,
}

impl Group {
    fn closing(self) -> char {
        match self {
            Self::Round => ')',
            Self::Square => ']',
        }
    }
}

struct Parser<'a> {
    field: &'a str,
    prompt: &'a str,
    chars: Vec<char>,
    position: usize,
    depth: usize,
    segments: Vec<WeightedSegment>,
}

impl Parser<'_> {
    /// Parses until the end of the prompt (`group` None) or the closing
    /// bracket of `group`, which it consumes. For a round group it returns
    /// the explicit weight after the colon, if any.
    fn parse_sequence(
        &mut self,
        weight: f64,
        group: Option<(Group, usize)>,
    ) -> Result<Option<f64>, InvalidArgument> {
        let mut text = String::new();
        while let Some(&character) = self.chars.get(self.position) {
            self.position += 1;
            match character {
                // A backslash escapes only the syntax characters. Before
                // anything else it is ordinary text.
                '\\' => match self.chars.get(self.position) {
                    Some(&next) if ESCAPABLE.contains(&next) => {
                        text.push(next);
                        self.position += 1;
                    }
                    _ => text.push('\\'),
                },
                '(' | '[' => {
                    self.push(&mut text, weight);
                    let (inner, factor) = if character == '(' {
                        (Group::Round, EMPHASIS)
                    } else {
                        (Group::Square, 1.0 / EMPHASIS)
                    };
                    let opened_at = self.position - 1;
                    if self.depth == MAX_DEPTH {
                        return Err(self.error(
                            format!(
                                "brackets nested deeper than {MAX_DEPTH} at character {}",
                                opened_at + 1
                            ),
                            format!("nested at most {MAX_DEPTH} deep"),
                        ));
                    }
                    self.depth += 1;
                    // The group's text is parsed at the emphasis weight first,
                    // and an explicit weight replaces that factor afterwards.
                    let first_segment = self.segments.len();
                    let explicit =
                        self.parse_sequence(weight * factor, Some((inner, opened_at)))?;
                    if let Some(explicit) = explicit {
                        for segment in &mut self.segments[first_segment..] {
                            segment.weight = segment.weight / factor * explicit;
                        }
                    }
                    self.depth -= 1;
                    self.check_effective(first_segment, opened_at)?;
                }
                ')' | ']' => {
                    let Some((open, opened_at)) = group else {
                        return Err(self.error(
                            format!("unmatched {character} at character {}", self.position),
                            SYNTAX,
                        ));
                    };
                    if character != open.closing() {
                        return Err(self.error(
                            format!(
                                "{character} at character {} closes the {} opened at character {}",
                                self.position,
                                if open == Group::Round { '(' } else { '[' },
                                opened_at + 1
                            ),
                            SYNTAX,
                        ));
                    }
                    self.push(&mut text, weight);
                    return Ok(None);
                }
                ':' if matches!(group, Some((Group::Round, _))) => {
                    self.push(&mut text, weight);
                    let explicit =
                        self.parse_weight_to_close(group.map(|(_, at)| at).unwrap_or(0))?;
                    return Ok(Some(explicit));
                }
                other => text.push(other),
            }
        }
        if let Some((open, opened_at)) = group {
            let bracket = if open == Group::Round { '(' } else { '[' };
            return Err(self.error(
                format!("unclosed {bracket} at character {}", opened_at + 1),
                SYNTAX,
            ));
        }
        self.push(&mut text, weight);
        Ok(None)
    }

    /// Reads the number after a colon up to the closing `)` and checks its range.
    fn parse_weight_to_close(&mut self, opened_at: usize) -> Result<f64, InvalidArgument> {
        let start = self.position;
        while let Some(&character) = self.chars.get(self.position) {
            if character == ')' {
                break;
            }
            self.position += 1;
        }
        if self.position >= self.chars.len() {
            return Err(self.error(format!("unclosed ( at character {}", opened_at + 1), SYNTAX));
        }
        let raw: String = self.chars[start..self.position].iter().collect();
        self.position += 1;
        let limit = format!("a number from {MIN_WEIGHT} to {MAX_WEIGHT}, as in (words:1.4)");
        let weight: f64 = raw.trim().parse().map_err(|_| {
            self.error(
                format!("weight {:?} at character {}", raw.trim(), start + 1),
                &limit,
            )
        })?;
        if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&weight) {
            return Err(self.error(
                format!("weight {} at character {}", raw.trim(), start + 1),
                &limit,
            ));
        }
        Ok(weight)
    }

    /// Checks the product of nested factors of the segments from `first` on.
    fn check_effective(&self, first: usize, opened_at: usize) -> Result<(), InvalidArgument> {
        for segment in &self.segments[first..] {
            if !(MIN_WEIGHT..=MAX_WEIGHT + 1e-9).contains(&segment.weight) {
                return Err(self.error(
                    format!(
                        "effective weight {:.3} of {:?} in the group at character {}",
                        segment.weight,
                        segment.text,
                        opened_at + 1
                    ),
                    format!(
                        "from {MIN_WEIGHT} to {MAX_WEIGHT}: nested groups multiply their factors"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Appends `text` at `weight` as a new segment and empties `text`.
    /// Segments are merged only after parsing, because an explicit weight
    /// still rescales every segment its group produced.
    fn push(&mut self, text: &mut String, weight: f64) {
        if !text.is_empty() {
            self.segments.push(WeightedSegment {
                text: std::mem::take(text),
                weight,
            });
        }
    }

    fn error(&self, value: impl std::fmt::Display, limit: impl Into<String>) -> InvalidArgument {
        InvalidArgument::new(self.field, format!("{value} in {:?}", self.prompt), limit)
    }
}

/// Tokenizes `segments` into one id sequence of the tokenizer's fixed length
/// and returns it with one weight per id. Each segment is tokenized on its
/// own, so no token spans two weights. Start, end and padding tokens get
/// weight 1. A prompt without weights is one segment, so its ids are exactly
/// those of the tokenizer on the plain text.
pub fn weighted_token_ids(
    tokenizer: &PromptTokenizer,
    segments: &[WeightedSegment],
) -> Result<(Vec<u32>, Vec<f32>), TokenizerError> {
    if let [only] = segments {
        let ids = tokenizer.encode(&only.text)?;
        let mut weights = vec![only.weight as f32; ids.len()];
        weights[0] = 1.0;
        let end = end_position(&ids, tokenizer)?;
        for weight in &mut weights[end..] {
            *weight = 1.0;
        }
        return Ok((ids, weights));
    }

    // The empty text encodes to [start, end, padding...], which gives the special ids.
    let max_len = tokenizer.max_len();
    let empty = tokenizer.encode("")?;
    let (start_id, end_id) = (empty[0], empty[1]);
    let pad_id = empty.get(2).copied().unwrap_or(end_id);

    let mut ids = vec![start_id];
    let mut weights = vec![1.0f32];
    for segment in segments {
        let segment_ids = tokenizer.encode(&segment.text)?;
        let end = end_position(&segment_ids, tokenizer)?;
        for &id in &segment_ids[1..end] {
            ids.push(id);
            weights.push(segment.weight as f32);
        }
    }
    // Truncate like the tokenizer does: keep the end token last.
    ids.truncate(max_len - 1);
    weights.truncate(max_len - 1);
    ids.push(end_id);
    weights.push(1.0);
    ids.resize(max_len, pad_id);
    weights.resize(max_len, 1.0);
    Ok((ids, weights))
}

/// Position of the end-of-text token in an encoded sequence: the first
/// occurrence of the id that ends the encoding of the empty text.
fn end_position(ids: &[u32], tokenizer: &PromptTokenizer) -> Result<usize, TokenizerError> {
    let empty = tokenizer.encode("")?;
    let end_id = empty[1];
    Ok(ids[1..]
        .iter()
        .position(|&id| id == end_id)
        .map_or(ids.len(), |index| index + 1))
}

/// Scales each token's hidden state `(batch, tokens, hidden)` by its weight
/// `(tokens)`, then rescales the whole tensor so its mean is the one before
/// weighting.
///
/// Restoring the mean follows AUTOMATIC1111's web UI: weights above 1 would
/// otherwise also raise the overall magnitude of the conditioning, which the
/// UNet reads as a different prompt everywhere, not only at the weighted
/// words. After the rescale only the relative emphasis between tokens changes.
/// When the weighted mean is almost zero the rescale would blow up, so it is
/// skipped.
pub fn apply_token_weights(hidden: &Tensor, weights: &[f32]) -> candle_core::Result<Tensor> {
    if weights.iter().all(|&weight| weight == 1.0) {
        return Ok(hidden.clone());
    }
    let dtype = hidden.dtype();
    let hidden = hidden.to_dtype(candle_core::DType::F32)?;
    let tokens = hidden.dim(1)?;
    let scale = Tensor::from_slice(weights, (1, tokens, 1), hidden.device())?;
    let original_mean = hidden.mean_keepdim(D::Minus1)?.mean_keepdim(1)?;
    let weighted = hidden.broadcast_mul(&scale)?;
    let weighted_mean = weighted.mean_keepdim(D::Minus1)?.mean_keepdim(1)?;

    let original = original_mean.flatten_all()?.to_vec1::<f32>()?;
    let current = weighted_mean.flatten_all()?.to_vec1::<f32>()?;
    let ratios: Vec<f32> = original
        .iter()
        .zip(&current)
        .map(|(&before, &after)| {
            if after.abs() < 1e-6 {
                1.0
            } else {
                before / after
            }
        })
        .collect();
    let ratios = Tensor::from_vec(ratios, (original.len(), 1, 1), hidden.device())?;
    weighted.broadcast_mul(&ratios)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(prompt: &str) -> Vec<(String, f64)> {
        parse_weighted("prompt", prompt)
            .unwrap()
            .into_iter()
            .map(|segment| (segment.text, (segment.weight * 1e6).round() / 1e6))
            .collect()
    }

    fn owned(expected: &[(&str, f64)]) -> Vec<(String, f64)> {
        expected
            .iter()
            .map(|(text, weight)| (text.to_string(), (weight * 1e6).round() / 1e6))
            .collect()
    }

    #[test]
    fn parser_table() {
        let cases: &[(&str, &[(&str, f64)])] = &[
            ("a red circle", &[("a red circle", 1.0)]),
            ("a (red circle:1.4)", &[("a ", 1.0), ("red circle", 1.4)]),
            (
                "a (red) circle",
                &[("a ", 1.0), ("red", 1.1), (" circle", 1.0)],
            ),
            (
                "a [red] circle",
                &[("a ", 1.0), ("red", 1.0 / 1.1), (" circle", 1.0)],
            ),
            ("((red))", &[("red", 1.21)]),
            (
                "(a (red:2) circle:1.5)",
                &[("a ", 1.5), ("red", 3.0), (" circle", 1.5)],
            ),
            ("[(red)]", &[("red", 1.0)]),
            ("(red: 0.5 )", &[("red", 0.5)]),
            ("(red:1) circle", &[("red circle", 1.0)]),
            ("(a)(b:2)", &[("a", 1.1), ("b", 2.0)]),
            ("(a)((b):1)", &[("ab", 1.1)]),
            ("(red:0)", &[("red", 0.0)]),
            ("a \\(red\\) circle", &[("a (red) circle", 1.0)]),
            ("\\[x\\] \\\\ y", &[("[x] \\ y", 1.0)]),
            ("(time\\: noon:1.2)", &[("time: noon", 1.2)]),
            ("ratio 2:1", &[("ratio 2:1", 1.0)]),
            ("[a:b]", &[("a:b", 1.0 / 1.1)]),
            ("()", &[]),
            ("trailing \\", &[("trailing \\", 1.0)]),
            ("C:\\new \\n", &[("C:\\new \\n", 1.0)]),
        ];
        for (prompt, expected) in cases {
            assert_eq!(segments(prompt), owned(expected), "prompt {prompt:?}");
        }
    }

    #[test]
    fn parser_errors_name_field_value_limit() {
        let deep = format!("{}red{}", "[".repeat(40), "]".repeat(40));
        let cases: &[(&str, &str, &str)] = &[
            ("(red circle", "unclosed ( at character 1", "close every ("),
            (
                "red circle)",
                "unmatched ) at character 11",
                "close every (",
            ),
            ("[red", "unclosed [ at character 1", "every [ with ]"),
            (
                "(red]",
                "] at character 5 closes the ( opened at character 1",
                "close every (",
            ),
            (
                "(red:abc)",
                "weight \"abc\" at character 6",
                "a number from 0 to 3",
            ),
            (
                "(red:)",
                "weight \"\" at character 6",
                "a number from 0 to 3",
            ),
            (
                "(red:3.5)",
                "weight 3.5 at character 6",
                "a number from 0 to 3",
            ),
            (
                "(red:-1)",
                "weight -1 at character 6",
                "a number from 0 to 3",
            ),
            ("(red:1.2", "unclosed ( at character 1", "close every ("),
            (
                "((red:2.9))",
                "effective weight 3.190",
                "nested groups multiply",
            ),
            (
                deep.as_str(),
                "nested deeper than 32 at character 33",
                "at most 32 deep",
            ),
        ];
        for (prompt, value, limit) in cases {
            let error = parse_weighted("prompt", prompt).unwrap_err();
            assert_eq!(error.field, "prompt", "prompt {prompt:?}");
            assert!(error.value.contains(value), "prompt {prompt:?}: {error}");
            assert!(error.value.contains(prompt), "prompt {prompt:?}: {error}");
            assert!(error.limit.contains(limit), "prompt {prompt:?}: {error}");
        }
    }

    #[test]
    fn negative_prompt_errors_name_field() {
        let error = parse_weighted("negative_prompt", "(blurry").unwrap_err();
        assert_eq!(error.field, "negative_prompt");
    }

    #[test]
    fn plain_text_drops_syntax() {
        let segments =
            parse_weighted("prompt", "a (red circle:1.4) and [a \\(blue\\) one]").unwrap();
        assert_eq!(plain_text(&segments), "a red circle and a (blue) one");
    }

    #[test]
    fn unit_weights_leave_states_unchanged() {
        let hidden = Tensor::arange(0f32, 24.0, &candle_core::Device::Cpu)
            .unwrap()
            .reshape((1, 4, 6))
            .unwrap();
        let weighted = apply_token_weights(&hidden, &[1.0; 4]).unwrap();
        assert_eq!(
            weighted.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            hidden.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn weights_scale_tokens_and_keep_mean() {
        let hidden = Tensor::ones(
            (2, 3, 4),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let weighted = apply_token_weights(&hidden, &[1.0, 2.0, 1.0]).unwrap();
        let rows = weighted.to_vec3::<f32>().unwrap();
        // The mean was 1; after scaling token 1 by 2 it is 4/3, so every
        // token is multiplied by 3/4 to restore it.
        for row in &rows {
            assert!((row[0][0] - 0.75).abs() < 1e-6, "{row:?}");
            assert!((row[1][0] - 1.5).abs() < 1e-6, "{row:?}");
            assert!((row[2][3] - 0.75).abs() < 1e-6, "{row:?}");
        }
        let mean = weighted.mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((mean - 1.0).abs() < 1e-6, "mean {mean}");
    }
}
