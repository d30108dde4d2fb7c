//! Captions for images a generator drew, written from what the oracle reads
//! in them, so that the critic's CLIP can also learn from the generator's
//! own drawings (`shapes/train/sample.py` draws them).
//!
//! A drawn image often shows something other than its prompt. Its caption is
//! therefore not the prompt but the oracle's reading ([`read_spec`]), with
//! partial captions and hard negatives made from that reading as for a
//! rendered image. Images the shapes grammar cannot describe are left out.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::captions::{caption, hard_negatives, partial_captions};
use crate::dataset::{CAPTIONS_FILE, CaptionRecord, DatasetError, NegativeRecord, read_json_lines};
use crate::detect::detect;
use crate::grammar::parse_prompt;
use crate::oracle::{judge_detected, read_spec};
use crate::world::{Category, ObjectGroup, Spec};

/// File in a folder of drawn images that names each image and its prompt.
pub const SAMPLES_FILE: &str = "samples.jsonl";

/// One line of `samples.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// Image path relative to the folder, e.g. "images/000000.png".
    pub image: String,
    /// The prompt the image was drawn for.
    pub prompt: String,
}

/// Counts of the images [`label_samples`] read and captioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSummary {
    /// Images listed in `samples.jsonl`.
    pub images: usize,
    /// Images with a caption in `captions.jsonl`.
    pub labelled: usize,
    /// Images the oracle judges correct for the prompt they were drawn for.
    pub matching_prompt: usize,
    /// Labelled images per category of their caption, in the order of
    /// [`Category::ALL`].
    pub per_category: [(Category, usize); 6],
}

/// Returns the prompt category whose form a caption of `spec` has.
///
/// A read spec keeps the colours it found, so an object in a relation
/// counts as position, and two coloured objects as colour attribution.
pub fn category_of(spec: &Spec) -> Category {
    match spec.groups.as_slice() {
        [group] if group.count > 1 => Category::Counting,
        [group] if group.color.is_some() => Category::Colors,
        [_] => Category::SingleObject,
        _ if spec.relation.is_some() => Category::Position,
        groups if groups.iter().all(|group| group.color.is_some()) => Category::ColorAttr,
        _ => Category::TwoObjects,
    }
}

/// Reads `dir/samples.jsonl`, reads each image it names with the oracle, and
/// writes a [`CaptionRecord`] for every image the grammar can describe to
/// `dir/captions.jsonl`, so that the folder loads as a dataset.
///
/// The hard negatives of image `i` draw from ChaCha8 stream `i` of `seed`.
pub fn label_samples(dir: &Path, seed: u64) -> Result<LabelSummary, DatasetError> {
    let samples_path = dir.join(SAMPLES_FILE);
    let samples: Vec<SampleRecord> = read_json_lines(&samples_path)?;
    let captions_path = dir.join(CAPTIONS_FILE);
    let write_error = |source| DatasetError::Write {
        path: captions_path.clone(),
        source,
    };
    let mut captions = BufWriter::new(File::create(&captions_path).map_err(write_error)?);
    let mut summary = LabelSummary {
        images: samples.len(),
        labelled: 0,
        matching_prompt: 0,
        per_category: Category::ALL.map(|category| (category, 0)),
    };
    for (index, sample) in samples.iter().enumerate() {
        let path = dir.join(&sample.image);
        let image = image::open(&path)
            .map_err(|source| DatasetError::LoadImage {
                path: path.clone(),
                source,
            })?
            .to_rgb8();
        let detected = detect(&image);
        let prompt_spec =
            parse_prompt(&sample.prompt).map_err(|source| DatasetError::InvalidPrompt {
                path: samples_path.clone(),
                line: index + 1,
                prompt: sample.prompt.clone(),
                source,
            })?;
        if judge_detected(detected.clone(), image.dimensions(), &prompt_spec)
            .is_ok_and(|verdict| verdict.correct)
        {
            summary.matching_prompt += 1;
        }
        let Some(spec) = read_spec(&detected, image.dimensions()) else {
            continue;
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);
        let category = category_of(&spec);
        let record = CaptionRecord {
            image: sample.image.clone(),
            prompt: caption(&spec),
            category,
            partial: read_partials(&spec),
            negatives: hard_negatives(&spec, &mut rng)
                .into_iter()
                .map(|(text, kind)| NegativeRecord { text, kind })
                .collect(),
            flaws: Vec::new(),
            styles: Vec::new(),
        };
        serde_json::to_writer(&mut captions, &record)
            .map_err(|error| write_error(io::Error::from(error)))?;
        captions.write_all(b"\n").map_err(write_error)?;
        summary.labelled += 1;
        if let Some(entry) = summary
            .per_category
            .iter_mut()
            .find(|(listed, _)| *listed == category)
        {
            entry.1 += 1;
        }
    }
    captions.flush().map_err(write_error)?;
    Ok(summary)
}

/// Returns the partial captions of a read spec: those of a rendered scene,
/// plus the whole scene without its relation and without its colours. A read
/// spec names every colour and relation it finds, so without these the
/// shorter forms that prompts use ("a circle and a square") would never
/// describe a drawn image.
fn read_partials(spec: &Spec) -> Vec<String> {
    let full = caption(spec);
    let mut partials = partial_captions(spec);
    let without_relation = Spec {
        relation: None,
        ..spec.clone()
    };
    let uncoloured = |spec: &Spec| Spec {
        groups: spec
            .groups
            .iter()
            .map(|group| ObjectGroup {
                color: None,
                ..*group
            })
            .collect(),
        relation: spec.relation,
    };
    for shorter in [
        uncoloured(spec),
        uncoloured(&without_relation),
        without_relation,
    ] {
        let text = caption(&shorter);
        if text != full && !partials.contains(&text) {
            partials.push(text);
        }
    }
    partials
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::read_captions;
    use crate::oracle::judge;
    use crate::render::{PlacedObject, draw, palette_object as object};
    use crate::world::{Color, Shape};

    fn write_samples(dir: &Path, samples: &[(&[PlacedObject], &str)]) {
        std::fs::create_dir_all(dir.join("images")).expect("images folder");
        let mut lines = String::new();
        for (index, (objects, prompt)) in samples.iter().enumerate() {
            let image = format!("images/{index:06}.png");
            draw(objects, 64)
                .save(dir.join(&image))
                .expect("image saves");
            let record = SampleRecord {
                image,
                prompt: prompt.to_string(),
            };
            lines.push_str(&serde_json::to_string(&record).expect("record serialises"));
            lines.push('\n');
        }
        std::fs::write(dir.join(SAMPLES_FILE), lines).expect("samples file");
    }

    #[test]
    fn captions_say_what_the_image_shows() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pair = [
            object(Shape::Circle, Color::Red, (15.0, 30.0)),
            object(Shape::Square, Color::Blue, (48.0, 30.0)),
        ];
        let squares = [
            object(Shape::Square, Color::Green, (15.0, 15.0)),
            object(Shape::Square, Color::Green, (45.0, 45.0)),
        ];
        let three_shapes = [
            object(Shape::Circle, Color::Red, (12.0, 12.0)),
            object(Shape::Square, Color::Blue, (50.0, 12.0)),
            object(Shape::Triangle, Color::Green, (30.0, 50.0)),
        ];
        write_samples(
            dir.path(),
            &[
                (&pair, "a circle left of a square"),
                // Drawn for a circle and a square, shows two squares.
                (&squares, "a circle and a square"),
                (&three_shapes, "two triangles"),
            ],
        );
        let summary = label_samples(dir.path(), 0).expect("labels write");
        assert_eq!(summary.images, 3);
        assert_eq!(summary.labelled, 2);
        assert_eq!(summary.matching_prompt, 1);

        let records = read_captions(&dir.path().join(CAPTIONS_FILE)).expect("captions read");
        let prompts: Vec<&str> = records.iter().map(|r| r.prompt.as_str()).collect();
        assert_eq!(
            prompts,
            ["a red circle left of a blue square", "two green squares"]
        );
        assert_eq!(records[0].category, Category::Position);
        for shorter in [
            "a circle left of a square",
            "a circle and a square",
            "a red circle and a blue square",
        ] {
            assert!(
                records[0].partial.iter().any(|partial| partial == shorter),
                "{shorter} missing from {:?}",
                records[0].partial
            );
        }
        assert_eq!(records[1].category, Category::Counting);
        for record in &records {
            let image = image::open(dir.path().join(&record.image))
                .expect("image opens")
                .to_rgb8();
            for partial in &record.partial {
                assert!(judge(&image, partial).expect("parses").correct, "{partial}");
            }
            assert!(!record.negatives.is_empty());
            for negative in &record.negatives {
                assert!(
                    !judge(&image, &negative.text).expect("parses").correct,
                    "{}",
                    negative.text
                );
            }
        }
    }

    #[test]
    fn bad_samples_name_the_line() {
        let dir = tempfile::tempdir().expect("temporary directory");
        write_samples(dir.path(), &[(&[], "a dodecahedron")]);
        let error = label_samples(dir.path(), 0).expect_err("unknown word fails");
        let message = error.to_string();
        assert!(message.contains("line 1"), "{message}");
        assert!(message.contains("dodecahedron"), "{message}");

        std::fs::write(dir.path().join(SAMPLES_FILE), "{\"image\": 3}\n").expect("write");
        let error = label_samples(dir.path(), 0).expect_err("bad record fails");
        assert!(matches!(error, DatasetError::InvalidRecord { line: 1, .. }));

        std::fs::write(
            dir.path().join(SAMPLES_FILE),
            "{\"image\": \"images/missing.png\", \"prompt\": \"a circle\"}\n",
        )
        .expect("write");
        let error = label_samples(dir.path(), 0).expect_err("missing image fails");
        assert!(error.to_string().contains("missing.png"), "{error}");
    }

    #[test]
    fn categories_follow_the_caption_form() {
        let read = |prompt: &str| category_of(&parse_prompt(prompt).expect("parses"));
        assert_eq!(read("a circle"), Category::SingleObject);
        assert_eq!(read("a red circle"), Category::Colors);
        assert_eq!(read("three red circles"), Category::Counting);
        assert_eq!(read("a circle and a square"), Category::TwoObjects);
        assert_eq!(read("a red circle and a square"), Category::TwoObjects);
        assert_eq!(read("a red circle and a blue square"), Category::ColorAttr);
        assert_eq!(
            read("a red circle left of a blue square"),
            Category::Position
        );
    }
}
