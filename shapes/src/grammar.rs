//! The prompt grammar: sampling prompts per category, parsing prompt text
//! back into a [`Spec`], and the vocabulary both use.
//!
//! ```text
//! prompt   := ["a photo of"] group ( ("and" group)* | relation group )
//! group    := count [colour] noun      -- noun is plural unless count is 1
//! count    := "a" | "an" | "one" | "two" | "three" | "four" | "1" | "2" | "3" | "4"
//! relation := ["to the"] ("left" | "right") "of" | "above" | "below"
//! ```
//!
//! Parsing is case-insensitive, ignores a trailing full stop, and accepts "a"
//! and "an" before any word.

use rand::Rng;
use rand::seq::IndexedRandom;
use thiserror::Error;

use crate::flaws::{FLAW_NOUN, FLAW_PLURAL};
use crate::world::{Category, Color, MAX_COUNT, ObjectGroup, Relation, Shape, Spec, SpecError};

/// Surface choices that change a prompt's words but not its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PromptStyle {
    /// Start with "a photo of ".
    pub photo_prefix: bool,
    /// Write counts of two or more as digits ("3 triangles").
    pub digits: bool,
    /// Write "to the left of" instead of "left of" (also for "right").
    pub long_relation: bool,
}

impl PromptStyle {
    /// The canonical style used for captions: no prefix, number words, short
    /// relations.
    pub const CANONICAL: PromptStyle = PromptStyle {
        photo_prefix: false,
        digits: false,
        long_relation: false,
    };

    /// Draws a random style: the photo prefix half of the time, digits a fifth
    /// of the time and the long relation form a third of the time.
    pub fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        PromptStyle {
            photo_prefix: rng.random_bool(0.5),
            digits: rng.random_bool(0.2),
            long_relation: rng.random_bool(1.0 / 3.0),
        }
    }
}

const PHOTO_PREFIX: [&str; 3] = ["a", "photo", "of"];
pub(crate) const NUMBER_WORDS: [&str; 4] = ["one", "two", "three", "four"];
const DIGITS: [&str; 4] = ["1", "2", "3", "4"];

/// Lists every word the grammar can produce or parse, each once, and the
/// nouns that dataset captions use for flawed objects.
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = vec!["a", "an", "photo", "of", "and", "to", "the"];
    words.extend(NUMBER_WORDS);
    words.extend(DIGITS);
    words.extend(["left", "right", "above", "below"]);
    words.extend(Color::ALL.map(Color::word));
    words.extend(Shape::ALL.map(Shape::word));
    words.extend(Shape::ALL.map(Shape::plural));
    words.extend([FLAW_NOUN, FLAW_PLURAL]);
    words
}

/// Samples a spec of `category`, uniformly over its shapes, colours, counts
/// and relations.
pub fn sample_spec<R: Rng + ?Sized>(category: Category, rng: &mut R) -> Spec {
    let shapes = distinct(&Shape::ALL, 2, rng);
    let colors = distinct(&Color::ALL, 2, rng);
    let single = |count: u8, color: Option<Color>| Spec {
        groups: vec![ObjectGroup::new(count, color, shapes[0])],
        relation: None,
    };
    let pair = |color_a: Option<Color>, color_b: Option<Color>, relation| Spec {
        groups: vec![
            ObjectGroup::new(1, color_a, shapes[0]),
            ObjectGroup::new(1, color_b, shapes[1]),
        ],
        relation,
    };
    match category {
        Category::SingleObject => single(1, None),
        Category::Counting => single(rng.random_range(2..=MAX_COUNT), None),
        Category::Colors => single(1, Some(colors[0])),
        Category::TwoObjects => pair(None, None, None),
        Category::Position => {
            let relation = *Relation::ALL.choose(rng).unwrap_or(&Relation::LeftOf);
            pair(None, None, Some(relation))
        }
        Category::ColorAttr => pair(Some(colors[0]), Some(colors[1]), None),
    }
}

/// Picks `amount` different items from `items` in random order.
fn distinct<T: Copy, R: Rng + ?Sized>(items: &[T], amount: usize, rng: &mut R) -> Vec<T> {
    items.choose_multiple(rng, amount).copied().collect()
}

/// Samples a prompt of `category` in a random [`PromptStyle`] and returns the
/// text with the spec it describes.
pub fn sample_prompt<R: Rng + ?Sized>(category: Category, rng: &mut R) -> (String, Spec) {
    let spec = sample_spec(category, rng);
    let style = PromptStyle::sample(rng);
    (format_prompt(&spec, style), spec)
}

/// Writes `spec` as prompt text in `style`.
///
/// Only a valid spec yields text that [`parse_prompt`] accepts. Counts outside
/// 1..=4 are written as digits, and groups beyond the second are joined with
/// "and" even when a relation is set.
pub fn format_prompt(spec: &Spec, style: PromptStyle) -> String {
    let mut text = String::new();
    if style.photo_prefix {
        text.push_str("a photo of ");
    }
    for (index, group) in spec.groups.iter().enumerate() {
        if index == 1 {
            match spec.relation {
                Some(relation) => {
                    text.push(' ');
                    text.push_str(&format_relation(relation, style));
                    text.push(' ');
                }
                None => text.push_str(" and "),
            }
        } else if index > 1 {
            text.push_str(" and ");
        }
        text.push_str(&format_group(group, style));
    }
    text
}

/// Writes one group, e.g. "an orange square" or "two red circles".
pub fn format_group(group: &ObjectGroup, style: PromptStyle) -> String {
    let noun = group.shape.noun(group.count);
    let described = match group.color {
        Some(color) => format!("{color} {noun}"),
        None => noun.to_owned(),
    };
    let words = if style.digits { &DIGITS } else { &NUMBER_WORDS };
    let count = if group.count == 1 {
        if described.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an".to_owned()
        } else {
            "a".to_owned()
        }
    } else {
        usize::from(group.count)
            .checked_sub(1)
            .and_then(|index| words.get(index))
            .map_or_else(|| group.count.to_string(), |word| (*word).to_owned())
    };
    format!("{count} {described}")
}

fn format_relation(relation: Relation, style: PromptStyle) -> String {
    match relation {
        Relation::LeftOf | Relation::RightOf if style.long_relation => {
            format!("to the {}", relation.words())
        }
        _ => relation.words().to_owned(),
    }
}

/// Reasons why prompt text is not a sentence of the shapes grammar.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("the prompt is empty; expected something like \"a red circle\"")]
    Empty,
    #[error("unknown word {word:?} at word {position}; the shapes grammar does not use it")]
    UnknownWord { word: String, position: usize },
    #[error("expected {expected} at word {position}, found {found:?}")]
    UnexpectedWord {
        expected: &'static str,
        found: String,
        position: usize,
    },
    #[error("the prompt ends early; expected {expected}")]
    UnexpectedEnd { expected: &'static str },
    #[error(
        "{count_word:?} does not agree with {noun:?}; use the singular after a count of one and the plural otherwise"
    )]
    NumberAgreement { count_word: String, noun: String },
    #[error("the prompt describes an invalid spec: {0}")]
    InvalidSpec(#[from] SpecError),
}

/// Parses prompt text into the spec it describes.
pub fn parse_prompt(text: &str) -> Result<Spec, ParseError> {
    let lowered = text.trim().to_lowercase();
    let without_stop = lowered.strip_suffix('.').unwrap_or(&lowered);
    let tokens: Vec<&str> = without_stop.split_whitespace().collect();
    if tokens.is_empty() {
        return Err(ParseError::Empty);
    }
    let known = vocabulary();
    if let Some((position, word)) = tokens
        .iter()
        .enumerate()
        .find(|(_, word)| !known.contains(word))
    {
        return Err(ParseError::UnknownWord {
            word: (*word).to_owned(),
            position,
        });
    }

    let mut parser = Parser { tokens, next: 0 };
    if parser.tokens.starts_with(&PHOTO_PREFIX) {
        parser.next = PHOTO_PREFIX.len();
    }
    let mut spec = Spec {
        groups: vec![parser.group()?],
        relation: None,
    };
    while let Some(word) = parser.peek() {
        if word == "and" {
            parser.next += 1;
            spec.groups.push(parser.group()?);
        } else {
            let relation = parser.relation()?;
            if spec.relation.replace(relation).is_some() {
                return Err(SpecError::RelationNeedsTwoGroups {
                    groups: spec.groups.len() + 1,
                }
                .into());
            }
            spec.groups.push(parser.group()?);
        }
    }
    spec.validate()?;
    Ok(spec)
}

struct Parser<'a> {
    tokens: Vec<&'a str>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.next).copied()
    }

    /// Consumes the next word, or fails naming `expected`.
    fn take(&mut self, expected: &'static str) -> Result<&'a str, ParseError> {
        let word = self.peek().ok_or(ParseError::UnexpectedEnd { expected })?;
        self.next += 1;
        Ok(word)
    }

    fn unexpected(&self, expected: &'static str, found: &str) -> ParseError {
        ParseError::UnexpectedWord {
            expected,
            found: found.to_owned(),
            position: self.next - 1,
        }
    }

    fn group(&mut self) -> Result<ObjectGroup, ParseError> {
        const COUNT: &str = "a count (\"a\", \"two\", \"3\", ...)";
        const SHAPE: &str = "a colour or a shape";
        let count_word = self.take(COUNT)?;
        let count = parse_count(count_word).ok_or_else(|| self.unexpected(COUNT, count_word))?;

        let mut noun = self.take(SHAPE)?;
        let color = Color::ALL.into_iter().find(|color| color.word() == noun);
        if color.is_some() {
            noun = self.take("a shape")?;
        }
        let (shape, plural) = parse_noun(noun).ok_or_else(|| self.unexpected(SHAPE, noun))?;
        if plural != (count > 1) {
            return Err(ParseError::NumberAgreement {
                count_word: count_word.to_owned(),
                noun: noun.to_owned(),
            });
        }
        Ok(ObjectGroup {
            count,
            color,
            shape,
        })
    }

    fn relation(&mut self) -> Result<Relation, ParseError> {
        const RELATION: &str = "\"and\" or a relation (\"left of\", \"above\", ...)";
        let mut word = self.take(RELATION)?;
        let long_form = word == "to";
        if long_form {
            let article = self.take("\"the\"")?;
            if article != "the" {
                return Err(self.unexpected("\"the\"", article));
            }
            word = self.take("\"left\" or \"right\"")?;
        }
        let relation = match word {
            "left" => Relation::LeftOf,
            "right" => Relation::RightOf,
            "above" if !long_form => return Ok(Relation::Above),
            "below" if !long_form => return Ok(Relation::Below),
            _ if long_form => return Err(self.unexpected("\"left\" or \"right\"", word)),
            _ => return Err(self.unexpected(RELATION, word)),
        };
        let of = self.take("\"of\"")?;
        if of != "of" {
            return Err(self.unexpected("\"of\"", of));
        }
        Ok(relation)
    }
}

fn parse_count(word: &str) -> Option<u8> {
    if word == "a" || word == "an" {
        return Some(1);
    }
    let index = NUMBER_WORDS
        .iter()
        .position(|number| *number == word)
        .or_else(|| DIGITS.iter().position(|digit| *digit == word))?;
    u8::try_from(index + 1).ok()
}

/// Returns the shape a noun names and whether the noun is plural.
fn parse_noun(word: &str) -> Option<(Shape, bool)> {
    Shape::ALL.into_iter().find_map(|shape| {
        if shape.word() == word {
            Some((shape, false))
        } else if shape.plural() == word {
            Some((shape, true))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn group(count: u8, color: Option<Color>, shape: Shape) -> ObjectGroup {
        ObjectGroup::new(count, color, shape)
    }

    #[test]
    fn sampled_prompts_round_trip() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for category in Category::ALL {
            for _ in 0..500 {
                let (text, spec) = sample_prompt(category, &mut rng);
                assert_eq!(spec.validate(), Ok(()), "{text}");
                assert_eq!(parse_prompt(&text), Ok(spec), "{text}");
            }
        }
    }

    #[test]
    fn sampled_words_are_in_vocabulary() {
        let known = vocabulary();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for category in Category::ALL {
            for _ in 0..200 {
                let (text, _) = sample_prompt(category, &mut rng);
                for word in text.split_whitespace() {
                    assert!(known.contains(&word), "{word:?} in {text:?}");
                }
            }
        }
    }

    #[test]
    fn vocabulary_has_no_duplicates() {
        let mut words = vocabulary();
        let total = words.len();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), total);
    }

    #[test]
    fn categories_have_expected_structure() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..100 {
            let spec = sample_spec(Category::Counting, &mut rng);
            assert!((2..=4).contains(&spec.groups[0].count));
            assert_eq!(spec.groups[0].color, None);

            let spec = sample_spec(Category::ColorAttr, &mut rng);
            assert_eq!(spec.groups.len(), 2);
            assert_ne!(spec.groups[0].color, spec.groups[1].color);
            assert!(spec.groups.iter().all(|group| group.color.is_some()));

            let spec = sample_spec(Category::Position, &mut rng);
            assert!(spec.relation.is_some());
            assert!(spec.groups.iter().all(|group| group.color.is_none()));
        }
    }

    #[test]
    fn parse_examples() {
        let cases = [
            ("a circle", vec![group(1, None, Shape::Circle)], None),
            (
                "A photo of two red circles.",
                vec![group(2, Some(Color::Red), Shape::Circle)],
                None,
            ),
            ("3 triangles", vec![group(3, None, Shape::Triangle)], None),
            (
                "an orange square and a yellow triangle",
                vec![
                    group(1, Some(Color::Orange), Shape::Square),
                    group(1, Some(Color::Yellow), Shape::Triangle),
                ],
                None,
            ),
            (
                "a circle to the right of a square",
                vec![group(1, None, Shape::Circle), group(1, None, Shape::Square)],
                Some(Relation::RightOf),
            ),
            (
                "one triangle below four blue circles",
                vec![
                    group(1, None, Shape::Triangle),
                    group(4, Some(Color::Blue), Shape::Circle),
                ],
                Some(Relation::Below),
            ),
        ];
        for (text, groups, relation) in cases {
            assert_eq!(parse_prompt(text), Ok(Spec { groups, relation }), "{text}");
        }
    }

    #[test]
    fn parse_rejects_bad_text() {
        assert_eq!(parse_prompt("   "), Err(ParseError::Empty));
        assert!(matches!(
            parse_prompt("a hexagon"),
            Err(ParseError::UnknownWord { position: 1, .. })
        ));
        assert!(matches!(
            parse_prompt("two circle"),
            Err(ParseError::NumberAgreement { .. })
        ));
        assert!(matches!(
            parse_prompt("a circles"),
            Err(ParseError::NumberAgreement { .. })
        ));
        assert!(matches!(
            parse_prompt("a red"),
            Err(ParseError::UnexpectedEnd { .. })
        ));
        assert!(matches!(
            parse_prompt("a circle left a square"),
            Err(ParseError::UnexpectedWord { position: 3, .. })
        ));
        assert!(matches!(
            parse_prompt("a circle to the above a square"),
            Err(ParseError::UnexpectedWord { .. })
        ));
        assert!(matches!(
            parse_prompt("red circle"),
            Err(ParseError::UnexpectedWord { position: 0, .. })
        ));
        assert!(matches!(
            parse_prompt("a circle and a red circle"),
            Err(ParseError::InvalidSpec(SpecError::RepeatedShape { .. }))
        ));
        assert!(matches!(
            parse_prompt("a circle left of a square above a triangle"),
            Err(ParseError::InvalidSpec(
                SpecError::RelationNeedsTwoGroups { .. }
            ))
        ));
        assert!(matches!(
            parse_prompt("a circle and a square left of a triangle"),
            Err(ParseError::InvalidSpec(
                SpecError::RelationNeedsTwoGroups { .. }
            ))
        ));
    }

    #[test]
    fn format_uses_an_before_orange() {
        let spec = Spec {
            groups: vec![group(1, Some(Color::Orange), Shape::Circle)],
            relation: None,
        };
        assert_eq!(
            format_prompt(&spec, PromptStyle::CANONICAL),
            "an orange circle"
        );
    }

    #[test]
    fn format_styles() {
        let spec = Spec {
            groups: vec![group(3, None, Shape::Square), group(1, None, Shape::Circle)],
            relation: Some(Relation::LeftOf),
        };
        let style = PromptStyle {
            photo_prefix: true,
            digits: true,
            long_relation: true,
        };
        assert_eq!(
            format_prompt(&spec, style),
            "a photo of 3 squares to the left of a circle"
        );
        assert_eq!(
            format_prompt(&spec, PromptStyle::CANONICAL),
            "three squares left of a circle"
        );
    }
}
