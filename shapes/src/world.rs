//! Things that exist in the shapes world: shapes, colours, relations, prompt
//! categories and the [`Spec`] that a prompt describes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Smallest count a group may request.
pub const MIN_COUNT: u8 = 1;
/// Largest count a group may request ("four"), as in GenEval's counting
/// prompts.
pub const MAX_COUNT: u8 = 4;
/// Maximum number of objects in one spec.
///
/// Invented limit: the renderer can place six of the largest shapes on a
/// 64x64 canvas with the required gaps, and no prompt category requests more
/// than four.
pub const MAX_OBJECTS: usize = 6;

/// A shape the renderer draws and the oracle recognises.
///
/// Squares are axis-aligned and triangles are isosceles with the apex up and
/// the base as wide as the triangle is tall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    /// Returns the singular noun, as used after "a".
    pub fn word(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }

    /// Returns the plural noun, as used after counts of two or more.
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
        }
    }

    /// Returns the noun that agrees with `count`: singular for one and plural
    /// otherwise.
    pub fn noun(self, count: u8) -> &'static str {
        if count == 1 {
            self.word()
        } else {
            self.plural()
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A palette colour: the first six of GenEval's ten colour names. Every
/// colour has one fixed sRGB value, and the renderer adds a few units of
/// jitter per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Color {
    Red,
    Orange,
    Yellow,
    Green,
    Blue,
    Purple,
}

impl Color {
    pub const ALL: [Color; 6] = [
        Color::Red,
        Color::Orange,
        Color::Yellow,
        Color::Green,
        Color::Blue,
        Color::Purple,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Orange => "orange",
            Color::Yellow => "yellow",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Purple => "purple",
        }
    }

    /// Returns the palette value in sRGB.
    ///
    /// Chosen by hand so that the HSV hues are far apart (about 351, 26, 58,
    /// 134, 223 and 280 degrees) and every colour is saturated enough to stand
    /// out from a white background. The closest pair, orange and yellow, is
    /// about 32 degrees apart.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [225, 30, 60],
            Color::Orange => [250, 115, 10],
            Color::Yellow => [230, 222, 15],
            Color::Green => [40, 170, 70],
            Color::Blue => [40, 90, 220],
            Color::Purple => [150, 50, 200],
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A spatial relation between the first group (the subject) and the second
/// group (the reference) of a [`Spec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
}

impl Relation {
    pub const ALL: [Relation; 4] = [
        Relation::LeftOf,
        Relation::RightOf,
        Relation::Above,
        Relation::Below,
    ];

    /// Returns the canonical words between the two groups, e.g. "left of".
    pub fn words(self) -> &'static str {
        match self {
            Relation::LeftOf => "left of",
            Relation::RightOf => "right of",
            Relation::Above => "above",
            Relation::Below => "below",
        }
    }

    /// Returns the relation that holds when the subject and the reference
    /// swap places.
    pub fn opposite(self) -> Relation {
        match self {
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
            Relation::Above => Relation::Below,
            Relation::Below => Relation::Above,
        }
    }

    /// Returns the signed offset of `subject` from `reference` in the
    /// direction the relation requests, in pixels. Positive means the
    /// relation holds. Image y grows downwards.
    pub fn offset(self, subject: (f32, f32), reference: (f32, f32)) -> f32 {
        match self {
            Relation::LeftOf => reference.0 - subject.0,
            Relation::RightOf => subject.0 - reference.0,
            Relation::Above => reference.1 - subject.1,
            Relation::Below => subject.1 - reference.1,
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.words())
    }
}

/// Prompt categories of the GenEval benchmark (the tags in
/// prompts/create_prompts.py of github.com/djghosh13/geneval), except that
/// GenEval's `two_object` is named `two_objects` here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// One uncoloured object: "a circle".
    SingleObject,
    /// Two uncoloured objects of different shapes: "a circle and a square".
    TwoObjects,
    /// Two to four uncoloured objects of one shape: "three triangles".
    Counting,
    /// One coloured object: "a blue square".
    Colors,
    /// Two uncoloured objects in a relation: "a circle left of a square".
    Position,
    /// Two objects of different shapes and colours: "a red square and a
    /// yellow triangle".
    ColorAttr,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::SingleObject,
        Category::TwoObjects,
        Category::Counting,
        Category::Colors,
        Category::Position,
        Category::ColorAttr,
    ];

    /// Returns the snake_case name, identical to the serde name.
    pub fn name(self) -> &'static str {
        match self {
            Category::SingleObject => "single_object",
            Category::TwoObjects => "two_objects",
            Category::Counting => "counting",
            Category::Colors => "colors",
            Category::Position => "position",
            Category::ColorAttr => "color_attr",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error returned when a string is not a category name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown category {0:?}; expected one of single_object, two_objects, counting, colors, position, color_attr"
)]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|category| category.name() == name)
            .ok_or_else(|| UnknownCategory(name.to_owned()))
    }
}

/// One group of identical requests: `count` objects of `shape`, all in
/// `color` when a colour is given and in any one colour otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectGroup {
    pub count: u8,
    pub color: Option<Color>,
    pub shape: Shape,
}

impl ObjectGroup {
    pub fn new(count: u8, color: Option<Color>, shape: Shape) -> Self {
        Self {
            count,
            color,
            shape,
        }
    }
}

/// Content that a prompt requests: object groups and at most one relation.
///
/// When `relation` is set, it relates `groups[0]` (the subject) to
/// `groups[1]` (the reference), and every subject object must stand in that
/// relation to every reference object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Spec {
    pub groups: Vec<ObjectGroup>,
    pub relation: Option<Relation>,
}

impl Spec {
    /// Returns the total number of objects the spec requests.
    pub fn object_count(&self) -> usize {
        self.groups
            .iter()
            .map(|group| usize::from(group.count))
            .sum()
    }

    /// Checks the rules every spec must follow.
    ///
    /// A valid spec has at least one group, counts in 1..=4, each shape in at
    /// most one group (so "a circle and a red circle" is rejected as
    /// ambiguous), at most [`MAX_OBJECTS`] objects, and exactly two groups
    /// when it has a relation.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.groups.is_empty() {
            return Err(SpecError::NoGroups);
        }
        for (index, group) in self.groups.iter().enumerate() {
            if !(MIN_COUNT..=MAX_COUNT).contains(&group.count) {
                return Err(SpecError::CountOutOfRange {
                    count: group.count,
                    shape: group.shape,
                });
            }
            if self.groups[..index]
                .iter()
                .any(|earlier| earlier.shape == group.shape)
            {
                return Err(SpecError::RepeatedShape { shape: group.shape });
            }
        }
        let objects = self.object_count();
        if objects > MAX_OBJECTS {
            return Err(SpecError::TooManyObjects { objects });
        }
        if self.relation.is_some() && self.groups.len() != 2 {
            return Err(SpecError::RelationNeedsTwoGroups {
                groups: self.groups.len(),
            });
        }
        Ok(())
    }
}

/// A rule of [`Spec::validate`] that a spec breaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("the spec has no object groups; at least one is required")]
    NoGroups,
    #[error("count {count} for {shape} is outside the allowed range {MIN_COUNT}..={MAX_COUNT}")]
    CountOutOfRange { count: u8, shape: Shape },
    #[error("{shape} is requested in more than one group; each shape may appear in one group only")]
    RepeatedShape { shape: Shape },
    #[error("the spec asks for {objects} objects; at most {MAX_OBJECTS} are allowed")]
    TooManyObjects { objects: usize },
    #[error("a relation needs exactly two object groups, but the spec has {groups}")]
    RelationNeedsTwoGroups { groups: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_names_round_trip() {
        for category in Category::ALL {
            assert_eq!(category.name().parse::<Category>(), Ok(category));
            let json = serde_json::to_string(&category).expect("category serialises");
            assert_eq!(json, format!("\"{}\"", category.name()));
        }
        assert!("colours".parse::<Category>().is_err());
    }

    #[test]
    fn relation_opposite_is_involution() {
        for relation in Relation::ALL {
            assert_ne!(relation.opposite(), relation);
            assert_eq!(relation.opposite().opposite(), relation);
        }
    }

    #[test]
    fn relation_offset_signs() {
        let left = (10.0, 30.0);
        let right = (40.0, 30.0);
        assert!(Relation::LeftOf.offset(left, right) > 0.0);
        assert!(Relation::RightOf.offset(left, right) < 0.0);
        let top = (30.0, 10.0);
        let bottom = (30.0, 50.0);
        assert!(Relation::Above.offset(top, bottom) > 0.0);
        assert!(Relation::Below.offset(bottom, top) > 0.0);
    }

    #[test]
    fn validate_accepts_category_shapes() {
        let spec = Spec {
            groups: vec![
                ObjectGroup::new(1, None, Shape::Circle),
                ObjectGroup::new(1, None, Shape::Square),
            ],
            relation: Some(Relation::LeftOf),
        };
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_broken_rules() {
        let empty = Spec {
            groups: vec![],
            relation: None,
        };
        assert_eq!(empty.validate(), Err(SpecError::NoGroups));

        let zero = Spec {
            groups: vec![ObjectGroup::new(0, None, Shape::Circle)],
            relation: None,
        };
        assert!(matches!(
            zero.validate(),
            Err(SpecError::CountOutOfRange { count: 0, .. })
        ));

        let repeated = Spec {
            groups: vec![
                ObjectGroup::new(1, None, Shape::Circle),
                ObjectGroup::new(1, Some(Color::Red), Shape::Circle),
            ],
            relation: None,
        };
        assert_eq!(
            repeated.validate(),
            Err(SpecError::RepeatedShape {
                shape: Shape::Circle
            })
        );

        let crowded = Spec {
            groups: vec![
                ObjectGroup::new(4, None, Shape::Circle),
                ObjectGroup::new(3, None, Shape::Square),
            ],
            relation: None,
        };
        assert_eq!(
            crowded.validate(),
            Err(SpecError::TooManyObjects { objects: 7 })
        );

        let lonely_relation = Spec {
            groups: vec![ObjectGroup::new(1, None, Shape::Circle)],
            relation: Some(Relation::Above),
        };
        assert_eq!(
            lonely_relation.validate(),
            Err(SpecError::RelationNeedsTwoGroups { groups: 1 })
        );
    }

    #[test]
    fn palette_colours_are_distinct() {
        for (index, color) in Color::ALL.iter().enumerate() {
            for other in &Color::ALL[index + 1..] {
                assert_ne!(color.rgb(), other.rgb(), "{color} and {other}");
            }
        }
    }
}
