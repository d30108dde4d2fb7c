//! The oracle: judges whether an image matches a prompt by rules modelled on
//! the GenEval benchmark, using the objects that [`detect`] finds.
//!
//! GenEval's rules are in evaluation/evaluate_images.py of
//! github.com/djghosh13/geneval. There, counts are exact only for counting
//! prompts, and the other prompts need at least the requested count, with
//! colour checked on the most confident detections. A relation there holds
//! when the centre offset, less 0.1 times the summed box sizes, points mainly
//! along the relation's axis. This oracle is stricter on counts and uses a
//! fixed share of the image as the relation margin.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::detect::{DetectedObject, detect};
use crate::grammar::{ParseError, parse_prompt};
use crate::world::{Color, ObjectGroup, Relation, Spec, SpecError};

/// Minimum centre offset along a relation's axis, as a fraction of the image
/// side on that axis, for the relation to hold.
///
/// Invented value: half of the quarter canvas that the renderer keeps, so a
/// rendered relation holds with room to spare while objects that are nearly
/// level do not count as left, right, above or below each other.
pub const POSITION_MARGIN: f32 = 0.125;

/// The oracle's judgement of one image against one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub correct: bool,
    /// One sentence: the first rule the image breaks, or a confirmation.
    pub reason: String,
    pub detected: Vec<DetectedObject>,
}

/// Parses `prompt_text` and judges `image` against it.
///
/// Fails only when the prompt is not in the shapes grammar or describes an
/// invalid spec.
pub fn judge(image: &RgbImage, prompt_text: &str) -> Result<Verdict, ParseError> {
    let spec = parse_prompt(prompt_text)?;
    Ok(judge_spec(image, &spec)?)
}

/// Judges `image` against `spec`.
///
/// The image is correct when two rules hold. First, for every group, the
/// objects of the group's shape number exactly the requested count, and all
/// have the requested colour (any colour when none is requested). Second,
/// the relation, if any, holds between every subject and every reference
/// object by more than [`POSITION_MARGIN`]. Objects of shapes that the spec
/// does not mention, and blobs that match no shape, are ignored, as GenEval
/// ignores classes that a prompt does not name.
pub fn judge_spec(image: &RgbImage, spec: &Spec) -> Result<Verdict, SpecError> {
    judge_detected(detect(image), image.dimensions(), spec)
}

/// Judges objects that [`detect`] found in an image of `image_size` (width,
/// height) against `spec`, by the rules of [`judge_spec`]. Detecting once and
/// judging many specs saves the detection for each one.
pub fn judge_detected(
    detected: Vec<DetectedObject>,
    image_size: (u32, u32),
    spec: &Spec,
) -> Result<Verdict, SpecError> {
    spec.validate()?;
    let (width, height) = image_size;
    let failure = spec
        .groups
        .iter()
        .find_map(|group| check_group(group, &detected))
        .or_else(|| check_relation(spec, &detected, width, height));
    Ok(match failure {
        Some(reason) => Verdict {
            correct: false,
            reason,
            detected,
        },
        None => {
            let mut reason =
                "every requested object is present in the requested count and colour".to_owned();
            if spec.relation.is_some() {
                reason.push_str(", and the relation holds");
            }
            Verdict {
                correct: true,
                reason,
                detected,
            }
        }
    })
}

fn members<'a>(
    group: &'a ObjectGroup,
    detected: &'a [DetectedObject],
) -> impl Iterator<Item = &'a DetectedObject> {
    detected
        .iter()
        .filter(move |object| object.shape == Some(group.shape))
}

/// Returns why `group` is not satisfied, or `None` when it is.
fn check_group(group: &ObjectGroup, detected: &[DetectedObject]) -> Option<String> {
    let same_shape: Vec<&DetectedObject> = members(group, detected).collect();
    let wrong_color = group
        .color
        .is_some_and(|color| same_shape.iter().any(|object| object.color != color));
    if same_shape.len() == usize::from(group.count) && !wrong_color {
        return None;
    }
    Some(format!(
        "expected {}, found {}",
        describe_group(group),
        describe_found(group, &same_shape)
    ))
}

/// Describes the requested group, e.g. "2 red circles".
fn describe_group(group: &ObjectGroup) -> String {
    let noun = group.shape.noun(group.count);
    match group.color {
        Some(color) => format!("{} {color} {noun}", group.count),
        None => format!("{} {noun}", group.count),
    }
}

/// Describes what was found of the group's shape, e.g. "1 red circle and 2
/// blue circles", or "none".
fn describe_found(group: &ObjectGroup, same_shape: &[&DetectedObject]) -> String {
    if same_shape.is_empty() {
        return "none".to_owned();
    }
    if group.color.is_none() {
        return same_shape.len().to_string();
    }
    let mut parts = Vec::new();
    for color in Color::ALL {
        let count = same_shape.iter().filter(|o| o.color == color).count();
        if count > 0 {
            let noun = group.shape.noun(u8::try_from(count).unwrap_or(u8::MAX));
            parts.push(format!("{count} {color} {noun}"));
        }
    }
    parts.join(" and ")
}

/// Groups of at most this many are written by [`read_spec`]: the prompts of
/// the shapes grammar name one or two.
const MAX_READ_GROUPS: usize = 2;

/// Writes what `detected` shows as a spec, when the shapes grammar can
/// describe it the way its prompts do.
///
/// Each shape found becomes one group, in the order the shapes are first
/// found, with its count and with its colour when all its objects share one.
/// Two groups get the relation that holds between them (by the rules of
/// [`judge_spec`]) with the widest worst-case offset, if any does. So the
/// oracle judges the image correct against the returned spec.
///
/// Returns `None` when nothing is found, an object matches no shape, the
/// image has more than two shapes, or a count is outside the grammar's range.
pub fn read_spec(detected: &[DetectedObject], image_size: (u32, u32)) -> Option<Spec> {
    let mut groups: Vec<ObjectGroup> = Vec::new();
    for object in detected {
        let shape = object.shape?;
        match groups.iter_mut().find(|group| group.shape == shape) {
            Some(group) => {
                group.count = group.count.saturating_add(1);
                if group.color != Some(object.color) {
                    group.color = None;
                }
            }
            None => groups.push(ObjectGroup::new(1, Some(object.color), shape)),
        }
    }
    if groups.len() > MAX_READ_GROUPS {
        return None;
    }
    let mut spec = Spec {
        groups,
        relation: None,
    };
    if let [subject, reference] = spec.groups.as_slice() {
        let mut widest = 0.0_f32;
        for relation in Relation::ALL {
            let Some(offset) = worst_offset(relation, subject, reference, detected) else {
                continue;
            };
            let worst = offset / axis_length(relation, image_size);
            if worst > POSITION_MARGIN && worst > widest {
                widest = worst;
                spec.relation = Some(relation);
            }
        }
    }
    spec.validate().ok()?;
    Some(spec)
}

/// Returns why the spec's relation fails, or `None` when it holds or the spec
/// has none. Assumes every group passed [`check_group`].
fn check_relation(
    spec: &Spec,
    detected: &[DetectedObject],
    width: u32,
    height: u32,
) -> Option<String> {
    let relation = spec.relation?;
    let [subject_group, reference_group] = spec.groups.as_slice() else {
        return None;
    };
    let margin = POSITION_MARGIN * axis_length(relation, (width, height));

    let worst_offset = worst_offset(relation, subject_group, reference_group, detected)?;
    if worst_offset > margin {
        return None;
    }
    Some(format!(
        "{} not {relation} {} (centre offset {worst_offset:.1} px, needs more than {margin:.1} px)",
        describe_subject(subject_group),
        describe_reference(reference_group),
    ))
}

/// Returns the length in pixels of the image side along `relation`'s axis.
fn axis_length(relation: Relation, (width, height): (u32, u32)) -> f32 {
    match relation {
        Relation::LeftOf | Relation::RightOf => width as f32,
        Relation::Above | Relation::Below => height as f32,
    }
}

/// Returns the smallest offset, in pixels, of any `subject` object from any
/// `reference` object in the direction of `relation`, or `None` when either
/// group has no detected object.
fn worst_offset(
    relation: Relation,
    subject: &ObjectGroup,
    reference: &ObjectGroup,
    detected: &[DetectedObject],
) -> Option<f32> {
    members(subject, detected)
        .flat_map(|subject_object| {
            members(reference, detected).map(move |reference_object| {
                relation.offset(subject_object.center, reference_object.center)
            })
        })
        .min_by(f32::total_cmp)
}

/// Describes the subject of a relation, e.g. "the red circle is" or "the
/// circles are".
fn describe_subject(group: &ObjectGroup) -> String {
    let verb = if group.count == 1 { "is" } else { "are" };
    format!("{} {verb}", describe_reference(group))
}

/// Describes a group with "the", e.g. "the red circle".
fn describe_reference(group: &ObjectGroup) -> String {
    let noun = group.shape.noun(group.count);
    match group.color {
        Some(color) => format!("the {color} {noun}"),
        None => format!("the {noun}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{PlacedObject, draw, palette_object as object};
    use crate::world::Shape;

    fn verdict(objects: &[PlacedObject], prompt: &str) -> Verdict {
        judge(&draw(objects, 64), prompt).expect("prompt parses")
    }

    #[test]
    fn accepts_matching_scene() {
        let scene = [
            object(Shape::Circle, Color::Red, (15.0, 30.0)),
            object(Shape::Square, Color::Blue, (48.0, 30.0)),
        ];
        let judged = verdict(&scene, "a red circle left of a blue square");
        assert!(judged.correct, "{}", judged.reason);
        assert_eq!(judged.detected.len(), 2);
        assert!(verdict(&scene, "a circle and a square").correct);
        assert!(verdict(&scene, "a photo of a blue square").correct);
    }

    #[test]
    fn reports_missing_count() {
        let scene = [object(Shape::Circle, Color::Red, (15.0, 30.0))];
        let judged = verdict(&scene, "two red circles");
        assert!(!judged.correct);
        assert_eq!(judged.reason, "expected 2 red circles, found 1 red circle");
    }

    #[test]
    fn reports_extra_instances() {
        let scene = [
            object(Shape::Triangle, Color::Green, (15.0, 15.0)),
            object(Shape::Triangle, Color::Green, (45.0, 45.0)),
        ];
        let judged = verdict(&scene, "a triangle");
        assert!(!judged.correct);
        assert_eq!(judged.reason, "expected 1 triangle, found 2");
    }

    #[test]
    fn reports_wrong_colour() {
        let scene = [
            object(Shape::Square, Color::Yellow, (15.0, 15.0)),
            object(Shape::Square, Color::Purple, (45.0, 45.0)),
        ];
        let judged = verdict(&scene, "two yellow squares");
        assert!(!judged.correct);
        assert_eq!(
            judged.reason,
            "expected 2 yellow squares, found 1 yellow square and 1 purple square"
        );
        let missing = verdict(&scene, "a circle");
        assert_eq!(missing.reason, "expected 1 circle, found none");
    }

    #[test]
    fn reports_failed_relation() {
        let scene = [
            object(Shape::Circle, Color::Orange, (15.0, 30.0)),
            object(Shape::Square, Color::Blue, (48.0, 30.0)),
        ];
        let judged = verdict(&scene, "a circle right of a square");
        assert!(!judged.correct);
        assert!(
            judged
                .reason
                .starts_with("the circle is not right of the square"),
            "{}",
            judged.reason
        );
        assert!(!verdict(&scene, "a circle above a square").correct);
    }

    #[test]
    fn relation_needs_margin() {
        // Centres 6 px apart horizontally, below the 8 px margin on 64 px.
        let scene = [
            object(Shape::Circle, Color::Red, (29.0, 12.0)),
            object(Shape::Square, Color::Blue, (35.0, 48.0)),
        ];
        assert!(!verdict(&scene, "a circle left of a square").correct);
        assert!(verdict(&scene, "a circle above a square").correct);
    }

    #[test]
    fn ignores_unmentioned_shapes() {
        let scene = [
            object(Shape::Circle, Color::Red, (15.0, 30.0)),
            object(Shape::Triangle, Color::Green, (48.0, 30.0)),
        ];
        assert!(verdict(&scene, "a red circle").correct);
    }

    #[test]
    fn judge_detected_matches_judge_spec() {
        let image = draw(&[object(Shape::Circle, Color::Red, (15.0, 30.0))], 64);
        let spec = parse_prompt("two red circles").expect("prompt parses");
        let direct = judge_spec(&image, &spec).expect("spec is valid");
        let reused =
            judge_detected(detect(&image), image.dimensions(), &spec).expect("spec is valid");
        assert_eq!(direct, reused);
    }

    fn read(objects: &[PlacedObject]) -> Option<String> {
        let image = draw(objects, 64);
        let spec = read_spec(&detect(&image), image.dimensions())?;
        let text = crate::captions::caption(&spec);
        let judged = judge_spec(&image, &spec).expect("a read spec is valid");
        assert!(judged.correct, "{text}: {}", judged.reason);
        Some(text)
    }

    #[test]
    fn reads_scene_as_caption() {
        let pair = [
            object(Shape::Circle, Color::Red, (15.0, 30.0)),
            object(Shape::Square, Color::Blue, (48.0, 30.0)),
        ];
        assert_eq!(
            read(&pair).as_deref(),
            Some("a red circle left of a blue square")
        );
        let counted = [
            object(Shape::Triangle, Color::Green, (15.0, 15.0)),
            object(Shape::Triangle, Color::Green, (45.0, 45.0)),
        ];
        assert_eq!(read(&counted).as_deref(), Some("two green triangles"));
    }

    #[test]
    fn reads_mixed_colours_without_colour() {
        let scene = [
            object(Shape::Square, Color::Yellow, (15.0, 15.0)),
            object(Shape::Square, Color::Purple, (45.0, 45.0)),
        ];
        assert_eq!(read(&scene).as_deref(), Some("two squares"));
    }

    #[test]
    fn reads_no_relation_inside_margin() {
        // Centres 7 px apart on both axes, below the 8 px margin on 64 px.
        let small = |shape, color, center| PlacedObject {
            size: 6.0,
            ..object(shape, color, center)
        };
        let scene = [
            small(Shape::Circle, Color::Red, (29.0, 29.0)),
            small(Shape::Square, Color::Blue, (36.0, 36.0)),
        ];
        let image = draw(&scene, 64);
        let spec = read_spec(&detect(&image), image.dimensions()).expect("two shapes read");
        assert_eq!(spec.relation, None);
        assert_eq!(spec.groups.len(), 2);
    }

    #[test]
    fn reads_nothing_it_cannot_say() {
        assert_eq!(read(&[]), None);
        let three_shapes = [
            object(Shape::Circle, Color::Red, (12.0, 12.0)),
            object(Shape::Square, Color::Blue, (50.0, 12.0)),
            object(Shape::Triangle, Color::Green, (30.0, 50.0)),
        ];
        assert_eq!(read(&three_shapes), None);
    }

    #[test]
    fn rejects_unparseable_prompt() {
        let image = draw(&[], 64);
        assert!(matches!(
            judge(&image, "a dodecahedron"),
            Err(ParseError::UnknownWord { .. })
        ));
    }
}
