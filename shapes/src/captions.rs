//! Captions for contrastive training: the full caption of a spec, partial
//! captions that are true but incomplete, and hard negatives that contradict
//! the spec in one detail.

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

use crate::grammar::{PromptStyle, format_prompt};
use crate::world::{Color, MAX_COUNT, MAX_OBJECTS, MIN_COUNT, Shape, Spec};

/// Kind of change that turns a spec into a hard negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeKind {
    /// One group has a different count.
    WrongCount,
    /// Two coloured groups trade colours.
    SwappedColors,
    /// One coloured group has a different colour.
    OtherColor,
    /// The relation points the other way.
    OppositeRelation,
    /// One group has a shape that the spec does not use.
    OtherShape,
    /// A flawed object is counted as the palette object it resembles (only in
    /// datasets with flawed objects, see [`crate::flaws`]).
    CountedFlaw,
    /// The caption "a blob" for a scene without flawed objects (only in
    /// datasets with flawed objects).
    Blob,
}

impl NegativeKind {
    /// The kinds [`hard_negatives`] makes from a spec alone.
    pub const ALL: [NegativeKind; 5] = [
        NegativeKind::WrongCount,
        NegativeKind::SwappedColors,
        NegativeKind::OtherColor,
        NegativeKind::OppositeRelation,
        NegativeKind::OtherShape,
    ];

    /// Returns the snake_case name, identical to the serde name.
    pub fn name(self) -> &'static str {
        match self {
            NegativeKind::WrongCount => "wrong_count",
            NegativeKind::SwappedColors => "swapped_colors",
            NegativeKind::OtherColor => "other_color",
            NegativeKind::OppositeRelation => "opposite_relation",
            NegativeKind::OtherShape => "other_shape",
            NegativeKind::CountedFlaw => "counted_flaw",
            NegativeKind::Blob => "blob",
        }
    }
}

/// Writes the canonical caption of `spec`: no "a photo of" prefix, number
/// words and the short relation form.
pub fn caption(spec: &Spec) -> String {
    format_prompt(spec, PromptStyle::CANONICAL)
}

/// Lists captions that are true of every image of `spec` but leave something
/// out.
///
/// They are each group alone (when there are several), each coloured group
/// without its colour, and the relation between the groups without colours
/// ("a circle left of a square"). The list has no duplicates and never
/// contains the full caption.
pub fn partial_captions(spec: &Spec) -> Vec<String> {
    let full = caption(spec);
    let mut partials: Vec<String> = Vec::new();
    let mut add = |partial: Spec| {
        let text = caption(&partial);
        if text != full && !partials.contains(&text) {
            partials.push(text);
        }
    };

    for group in &spec.groups {
        if spec.groups.len() > 1 {
            add(Spec {
                groups: vec![*group],
                relation: None,
            });
        }
        if group.color.is_some() {
            let mut colourless = *group;
            colourless.color = None;
            add(Spec {
                groups: vec![colourless],
                relation: None,
            });
        }
    }
    if spec.relation.is_some() {
        let mut colourless = spec.clone();
        for group in &mut colourless.groups {
            group.color = None;
        }
        add(colourless);
    }
    partials
}

/// Makes hard negatives of `spec`: captions that differ from it in one
/// detail, at most one of each [`NegativeKind`] that applies, in the order of
/// [`NegativeKind::ALL`].
///
/// Every negative is a valid spec that contradicts every image of `spec`
/// under the oracle's rules, because counts are exact and each shape belongs
/// to one group. Colour negatives are made only for groups that name a
/// colour, since an uncoloured group may be drawn in any colour.
pub fn hard_negatives<R: Rng + ?Sized>(spec: &Spec, rng: &mut R) -> Vec<(String, NegativeKind)> {
    let mut negatives = Vec::new();
    for kind in NegativeKind::ALL {
        if let Some(negative) = make_negative(spec, kind, rng) {
            negatives.push((caption(&negative), kind));
        }
    }
    negatives
}

/// Builds one negative spec of `kind`, or `None` when the kind does not apply.
fn make_negative<R: Rng + ?Sized>(spec: &Spec, kind: NegativeKind, rng: &mut R) -> Option<Spec> {
    let group_indices: Vec<usize> = (0..spec.groups.len()).collect();
    let colored: Vec<usize> = group_indices
        .iter()
        .copied()
        .filter(|&index| spec.groups[index].color.is_some())
        .collect();
    let mut negative = spec.clone();

    match kind {
        NegativeKind::WrongCount => {
            let index = *group_indices.choose(rng)?;
            let old = spec.groups[index].count;
            let others = spec.object_count() - usize::from(old);
            let counts: Vec<u8> = (MIN_COUNT..=MAX_COUNT)
                .filter(|&count| count != old && others + usize::from(count) <= MAX_OBJECTS)
                .collect();
            negative.groups[index].count = *counts.choose(rng)?;
        }
        NegativeKind::SwappedColors => {
            let pairs: Vec<(usize, usize)> = colored
                .iter()
                .flat_map(|&a| colored.iter().map(move |&b| (a, b)))
                .filter(|&(a, b)| a < b && spec.groups[a].color != spec.groups[b].color)
                .collect();
            let &(a, b) = pairs.choose(rng)?;
            negative.groups[a].color = spec.groups[b].color;
            negative.groups[b].color = spec.groups[a].color;
        }
        NegativeKind::OtherColor => {
            let index = *colored.choose(rng)?;
            let old = spec.groups[index].color;
            let colors: Vec<Color> = Color::ALL
                .into_iter()
                .filter(|&color| Some(color) != old)
                .collect();
            negative.groups[index].color = Some(*colors.choose(rng)?);
        }
        NegativeKind::OppositeRelation => {
            negative.relation = Some(spec.relation?.opposite());
        }
        NegativeKind::CountedFlaw | NegativeKind::Blob => return None,
        NegativeKind::OtherShape => {
            let unused: Vec<Shape> = Shape::ALL
                .into_iter()
                .filter(|&shape| spec.groups.iter().all(|group| group.shape != shape))
                .collect();
            let index = *group_indices.choose(rng)?;
            negative.groups[index].shape = *unused.choose(rng)?;
        }
    }
    Some(negative)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::{parse_prompt, sample_spec};
    use crate::world::{Category, ObjectGroup, Relation};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn spec(groups: Vec<ObjectGroup>, relation: Option<Relation>) -> Spec {
        Spec { groups, relation }
    }

    #[test]
    fn caption_is_canonical() {
        let two = spec(
            vec![
                ObjectGroup::new(2, Some(Color::Red), Shape::Circle),
                ObjectGroup::new(1, None, Shape::Square),
            ],
            Some(Relation::Above),
        );
        assert_eq!(caption(&two), "two red circles above a square");
    }

    #[test]
    fn partials_of_colour_pair() {
        let pair = spec(
            vec![
                ObjectGroup::new(1, Some(Color::Red), Shape::Square),
                ObjectGroup::new(1, Some(Color::Yellow), Shape::Triangle),
            ],
            None,
        );
        assert_eq!(
            partial_captions(&pair),
            vec![
                "a red square",
                "a square",
                "a yellow triangle",
                "a triangle"
            ]
        );
    }

    #[test]
    fn partials_of_relation() {
        let position = spec(
            vec![
                ObjectGroup::new(1, None, Shape::Circle),
                ObjectGroup::new(1, None, Shape::Square),
            ],
            Some(Relation::LeftOf),
        );
        assert_eq!(partial_captions(&position), vec!["a circle", "a square"]);

        let colored = spec(
            vec![
                ObjectGroup::new(1, Some(Color::Blue), Shape::Circle),
                ObjectGroup::new(1, None, Shape::Square),
            ],
            Some(Relation::LeftOf),
        );
        assert!(partial_captions(&colored).contains(&"a circle left of a square".to_owned()));
    }

    #[test]
    fn single_object_has_no_partials() {
        let single = spec(vec![ObjectGroup::new(3, None, Shape::Circle)], None);
        assert!(partial_captions(&single).is_empty());
    }

    #[test]
    fn negatives_per_category() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let expected: [(Category, &[NegativeKind]); 6] = [
            (
                Category::SingleObject,
                &[NegativeKind::WrongCount, NegativeKind::OtherShape],
            ),
            (
                Category::TwoObjects,
                &[NegativeKind::WrongCount, NegativeKind::OtherShape],
            ),
            (
                Category::Counting,
                &[NegativeKind::WrongCount, NegativeKind::OtherShape],
            ),
            (
                Category::Colors,
                &[
                    NegativeKind::WrongCount,
                    NegativeKind::OtherColor,
                    NegativeKind::OtherShape,
                ],
            ),
            (
                Category::Position,
                &[
                    NegativeKind::WrongCount,
                    NegativeKind::OppositeRelation,
                    NegativeKind::OtherShape,
                ],
            ),
            (
                Category::ColorAttr,
                &[
                    NegativeKind::WrongCount,
                    NegativeKind::SwappedColors,
                    NegativeKind::OtherColor,
                    NegativeKind::OtherShape,
                ],
            ),
        ];
        for (category, kinds) in expected {
            let sampled = sample_spec(category, &mut rng);
            let negatives = hard_negatives(&sampled, &mut rng);
            let found: Vec<NegativeKind> = negatives.iter().map(|(_, kind)| *kind).collect();
            assert_eq!(found, kinds, "{category}");
        }
    }

    #[test]
    fn negatives_parse_and_differ() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for category in Category::ALL {
            for _ in 0..100 {
                let sampled = sample_spec(category, &mut rng);
                for (text, kind) in hard_negatives(&sampled, &mut rng) {
                    let parsed = parse_prompt(&text).expect("negative parses");
                    assert_ne!(parsed, sampled, "{kind:?}: {text}");
                }
            }
        }
    }

    #[test]
    fn swapped_colours_trade_places() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let pair = spec(
            vec![
                ObjectGroup::new(1, Some(Color::Red), Shape::Square),
                ObjectGroup::new(1, Some(Color::Yellow), Shape::Triangle),
            ],
            None,
        );
        let negatives = hard_negatives(&pair, &mut rng);
        let swapped = negatives
            .iter()
            .find(|(_, kind)| *kind == NegativeKind::SwappedColors)
            .map(|(text, _)| text.as_str());
        assert_eq!(swapped, Some("a yellow square and a red triangle"));
    }

    #[test]
    fn negative_kind_names_match_serde() {
        for kind in NegativeKind::ALL {
            let json = serde_json::to_string(&kind).expect("kind serialises");
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }
}
