//! Seeded datasets: rendered images with prompts, partial captions and hard
//! negatives, plus prompt lists for evaluation.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::captions::{NegativeKind, hard_negatives, partial_captions};
use crate::flaws::{FlawKind, add_flaws, counted_flaw_caption, flaw_caption};
use crate::grammar::sample_prompt;
use crate::render::{RenderError, draw, layout};
use crate::styles::{StyleKind, restyle};
use crate::world::Category;

/// File name of the caption list inside a dataset directory.
pub const CAPTIONS_FILE: &str = "captions.jsonl";
/// Directory of the images inside a dataset directory.
pub const IMAGES_DIR: &str = "images";

/// One line of `captions.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptionRecord {
    /// Image path relative to the dataset directory, e.g. "images/000000.png".
    pub image: String,
    pub prompt: String,
    pub category: Category,
    /// Captions that are true of the image but incomplete.
    pub partial: Vec<String>,
    /// Captions that contradict the image in one detail.
    pub negatives: Vec<NegativeRecord>,
    /// Kinds of the flawed objects drawn besides the prompt's objects; empty
    /// for most images, and absent from the JSON line then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flaws: Vec<FlawKind>,
    /// Kinds of the styles some of the prompt's objects are drawn in; empty
    /// for most images, and absent from the JSON line then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub styles: Vec<StyleKind>,
}

/// A hard negative caption and how it differs from the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativeRecord {
    pub text: String,
    pub kind: NegativeKind,
}

/// Summary of a dataset written by [`write_dataset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    pub images: usize,
    pub captions_path: PathBuf,
    /// Items per category, in the order of [`Category::ALL`].
    pub per_category: [(Category, usize); 6],
}

/// Failures while writing or reading a dataset.
#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("failed to create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("failed to write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("failed to save image {path}: {source}")]
    SaveImage {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("failed to render item {index} ({prompt:?}): {source}")]
    Render {
        index: usize,
        prompt: String,
        source: RenderError,
    },
    #[error("{field} {value} is outside the range 0 to 1")]
    InvalidShare { field: &'static str, value: f64 },
    #[error("failed to read image {path}: {source}")]
    LoadImage {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("prompt {prompt:?} on line {line} of {path} is not in the shapes grammar: {source}")]
    InvalidPrompt {
        path: PathBuf,
        line: usize,
        prompt: String,
        source: crate::grammar::ParseError,
    },
    #[error("invalid record on line {line} of {path}: {source}")]
    InvalidRecord {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// Size, seed and extra objects of a dataset for [`write_dataset`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DatasetOptions {
    /// Number of images.
    pub count: usize,
    /// Canvas side in pixels.
    pub canvas_size: u32,
    pub seed: u64,
    /// Share of images, 0 to 1, with one or two flawed objects.
    pub flawed_share: f64,
    /// Share of images, 0 to 1, with one or two objects drawn in a style.
    pub styled_share: f64,
}

impl DatasetOptions {
    /// Options for `count` plain images of `canvas_size` pixels: no flawed
    /// or styled objects.
    pub fn new(count: usize, canvas_size: u32, seed: u64) -> Self {
        DatasetOptions {
            count,
            canvas_size,
            seed,
            flawed_share: 0.0,
            styled_share: 0.0,
        }
    }
}

/// Renders `count` images of `canvas_size` pixels into `dir/images/` and
/// writes one [`CaptionRecord`] per image to `dir/captions.jsonl`.
///
/// Item `i` has category `Category::ALL[i % 6]`, so categories differ in
/// size by at most one. Item `i` draws from its own ChaCha8 stream `i` of
/// `seed`, so the output depends only on the arguments, and a longer dataset
/// starts with the items of a shorter one. Existing files with the same names
/// are overwritten.
///
/// With a `flawed_share` above 0, that share of the images also contains one
/// or two flawed objects ([`crate::flaws`]). Their partial captions include
/// "a blob" or "two blobs", and a `counted_flaw` negative counts a flaw as
/// the object it resembles. Every other image gets the negative "a blob".
/// With a `styled_share` above 0, that share of the images has one or two of
/// its objects drawn in a style ([`crate::styles`]), and the captions stay
/// the same. With both at 0 the dataset is the same as before flaws and
/// styles existed.
pub fn write_dataset(dir: &Path, options: &DatasetOptions) -> Result<DatasetSummary, DatasetError> {
    let DatasetOptions {
        count,
        canvas_size,
        seed,
        flawed_share,
        styled_share,
    } = *options;
    for (field, value) in [
        ("flawed share", flawed_share),
        ("styled share", styled_share),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(DatasetError::InvalidShare { field, value });
        }
    }
    let images_dir = dir.join(IMAGES_DIR);
    fs::create_dir_all(&images_dir).map_err(|source| DatasetError::CreateDir {
        path: images_dir.clone(),
        source,
    })?;
    let captions_path = dir.join(CAPTIONS_FILE);
    let write_error = |source| DatasetError::Write {
        path: captions_path.clone(),
        source,
    };
    let file = File::create(&captions_path).map_err(write_error)?;
    let mut captions = BufWriter::new(file);
    let mut per_category = Category::ALL.map(|category| (category, 0));

    for index in 0..count {
        let category_index = index % Category::ALL.len();
        let category = Category::ALL[category_index];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);

        let (prompt, spec) = sample_prompt(category, &mut rng);
        let objects =
            layout(&spec, canvas_size, &mut rng).map_err(|source| DatasetError::Render {
                index,
                prompt: prompt.clone(),
                source,
            })?;
        let mut image = draw(&objects, canvas_size);
        let mut partial = partial_captions(&spec);
        let mut negatives: Vec<NegativeRecord> = hard_negatives(&spec, &mut rng)
            .into_iter()
            .map(|(text, kind)| NegativeRecord { text, kind })
            .collect();
        let mut flaws = Vec::new();
        if flawed_share > 0.0 {
            if rng.random_bool(flawed_share) {
                let requested = rng.random_range(1..=2);
                let added = add_flaws(&mut image, &spec, &objects, requested, &mut rng);
                if let Some(first) = added.first() {
                    partial.push(flaw_caption(added.len()));
                    if let Some(text) = counted_flaw_caption(&image, &spec, first) {
                        negatives.push(NegativeRecord {
                            text,
                            kind: NegativeKind::CountedFlaw,
                        });
                    }
                }
                flaws = added.iter().map(|flaw| flaw.kind).collect();
            }
            if flaws.is_empty() {
                negatives.push(NegativeRecord {
                    text: flaw_caption(1),
                    kind: NegativeKind::Blob,
                });
            }
        }
        let mut styles = Vec::new();
        if styled_share > 0.0 && rng.random_bool(styled_share) {
            let requested = rng.random_range(1..=2);
            styles = restyle(&mut image, &spec, &objects, requested, &mut rng);
        }
        let relative = format!("{IMAGES_DIR}/{index:06}.png");
        let image_path = dir.join(&relative);
        image
            .save(&image_path)
            .map_err(|source| DatasetError::SaveImage {
                path: image_path,
                source,
            })?;

        let record = CaptionRecord {
            image: relative,
            prompt,
            category,
            partial,
            negatives,
            flaws,
            styles,
        };
        serde_json::to_writer(&mut captions, &record)
            .map_err(|error| write_error(io::Error::from(error)))?;
        captions.write_all(b"\n").map_err(write_error)?;
        per_category[category_index].1 += 1;
    }
    captions.flush().map_err(write_error)?;

    Ok(DatasetSummary {
        images: count,
        captions_path,
        per_category,
    })
}

/// Reads every record of a `captions.jsonl` file.
pub fn read_captions(path: &Path) -> Result<Vec<CaptionRecord>, DatasetError> {
    read_json_lines(path)
}

/// Reads a JSON-lines file of `T` records, skipping blank lines.
pub(crate) fn read_json_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Vec<T>, DatasetError> {
    let read_error = |source| DatasetError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut records = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_error)?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|source| DatasetError::InvalidRecord {
            path: path.to_owned(),
            line: index + 1,
            source,
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Samples `count_per_category` prompts of every category, grouped by
/// category in the order of [`Category::ALL`]. The list depends only on the
/// arguments. Prompts may repeat, because some categories have few distinct
/// prompts.
pub fn eval_prompts(count_per_category: usize, seed: u64) -> Vec<(String, Category)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut prompts = Vec::with_capacity(count_per_category * Category::ALL.len());
    for category in Category::ALL {
        for _ in 0..count_per_category {
            let (prompt, _) = sample_prompt(category, &mut rng);
            prompts.push((prompt, category));
        }
    }
    prompts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::judge;

    #[test]
    fn dataset_layout_and_records() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let summary =
            write_dataset(dir.path(), &DatasetOptions::new(14, 64, 5)).expect("dataset writes");
        assert_eq!(summary.images, 14);
        assert_eq!(summary.captions_path, dir.path().join(CAPTIONS_FILE));
        let counts: Vec<usize> = summary.per_category.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, vec![3, 3, 2, 2, 2, 2]);

        let records = read_captions(&summary.captions_path).expect("captions read");
        assert_eq!(records.len(), 14);
        assert_eq!(records[0].image, "images/000000.png");
        assert_eq!(records[13].image, "images/000013.png");
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.category, Category::ALL[index % 6]);
            assert!(!record.negatives.is_empty());
            let image = image::open(dir.path().join(&record.image))
                .expect("image opens")
                .to_rgb8();
            assert_eq!(image.dimensions(), (64, 64));
            let verdict = judge(&image, &record.prompt).expect("prompt parses");
            assert!(verdict.correct, "{}: {}", record.prompt, verdict.reason);
        }
    }

    #[test]
    fn json_lines_use_documented_keys() {
        let dir = tempfile::tempdir().expect("temporary directory");
        write_dataset(dir.path(), &DatasetOptions::new(6, 64, 1)).expect("dataset writes");
        let text = fs::read_to_string(dir.path().join(CAPTIONS_FILE)).expect("captions read");
        let last = text.lines().last().expect("six lines");
        let value: serde_json::Value = serde_json::from_str(last).expect("valid JSON");
        assert_eq!(value["image"], "images/000005.png");
        assert_eq!(value["category"], "color_attr");
        assert!(value["prompt"].is_string());
        assert!(value["partial"].is_array());
        assert!(value["negatives"][0]["text"].is_string());
        assert!(value["negatives"][0]["kind"].is_string());
    }

    #[test]
    fn dataset_is_deterministic() {
        let first = tempfile::tempdir().expect("temporary directory");
        let second = tempfile::tempdir().expect("temporary directory");
        write_dataset(first.path(), &DatasetOptions::new(8, 64, 42)).expect("dataset writes");
        write_dataset(second.path(), &DatasetOptions::new(5, 64, 42)).expect("dataset writes");
        let first_records = read_captions(&first.path().join(CAPTIONS_FILE)).expect("read");
        let second_records = read_captions(&second.path().join(CAPTIONS_FILE)).expect("read");
        assert_eq!(first_records[..5], second_records[..]);
        for record in &second_records {
            let a = fs::read(first.path().join(&record.image)).expect("image bytes");
            let b = fs::read(second.path().join(&record.image)).expect("image bytes");
            assert_eq!(a, b, "{}", record.image);
        }
    }

    #[test]
    fn flawed_images_captioned_as_blobs() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = DatasetOptions {
            flawed_share: 0.5,
            ..DatasetOptions::new(60, 64, 9)
        };
        write_dataset(dir.path(), &options).expect("dataset writes");
        let records = read_captions(&dir.path().join(CAPTIONS_FILE)).expect("captions read");
        let flawed: Vec<&CaptionRecord> = records.iter().filter(|r| !r.flaws.is_empty()).collect();
        assert!(
            (15..=45).contains(&flawed.len()),
            "{} of 60 images are flawed",
            flawed.len()
        );
        for record in &records {
            let image = image::open(dir.path().join(&record.image))
                .expect("image opens")
                .to_rgb8();
            let verdict = judge(&image, &record.prompt).expect("prompt parses");
            assert!(verdict.correct, "{}: {}", record.prompt, verdict.reason);
            let kinds: Vec<NegativeKind> = record.negatives.iter().map(|n| n.kind).collect();
            if record.flaws.is_empty() {
                assert!(kinds.contains(&NegativeKind::Blob), "{record:?}");
                continue;
            }
            let blobs = flaw_caption(record.flaws.len());
            assert!(record.partial.contains(&blobs), "{record:?}");
            assert!(!kinds.contains(&NegativeKind::Blob), "{record:?}");
            for negative in &record.negatives {
                if negative.kind == NegativeKind::CountedFlaw {
                    let verdict = judge(&image, &negative.text).expect("negative parses");
                    assert!(!verdict.correct, "{}: {}", record.prompt, negative.text);
                }
            }
        }
        let counted = flawed
            .iter()
            .filter(|r| {
                r.negatives
                    .iter()
                    .any(|n| n.kind == NegativeKind::CountedFlaw)
            })
            .count();
        assert!(counted * 2 >= flawed.len(), "{counted} of {}", flawed.len());
    }

    #[test]
    fn styled_images_record_styles() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = DatasetOptions {
            styled_share: 0.5,
            ..DatasetOptions::new(60, 64, 9)
        };
        write_dataset(dir.path(), &options).expect("dataset writes");
        let records = read_captions(&dir.path().join(CAPTIONS_FILE)).expect("captions read");
        let styled = records.iter().filter(|r| !r.styles.is_empty()).count();
        assert!(
            (15..=45).contains(&styled),
            "{styled} of 60 images are styled"
        );
        for record in &records {
            let image = image::open(dir.path().join(&record.image))
                .expect("image opens")
                .to_rgb8();
            for text in std::iter::once(&record.prompt).chain(&record.partial) {
                let verdict = judge(&image, text).expect("caption parses");
                assert!(verdict.correct, "{text}: {}", verdict.reason);
            }
            for negative in &record.negatives {
                let verdict = judge(&image, &negative.text).expect("negative parses");
                assert!(!verdict.correct, "{}: {}", record.prompt, negative.text);
            }
        }
    }

    #[test]
    fn shares_out_of_range() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for value in [-0.1, 1.5, f64::NAN] {
            let flawed = DatasetOptions {
                flawed_share: value,
                ..DatasetOptions::new(2, 64, 1)
            };
            let error = write_dataset(dir.path(), &flawed).expect_err("share is invalid");
            assert_eq!(
                error.to_string(),
                format!("flawed share {value} is outside the range 0 to 1")
            );
            let styled = DatasetOptions {
                styled_share: value,
                ..DatasetOptions::new(2, 64, 1)
            };
            let error = write_dataset(dir.path(), &styled).expect_err("share is invalid");
            assert_eq!(
                error.to_string(),
                format!("styled share {value} is outside the range 0 to 1")
            );
        }
    }

    #[test]
    fn invalid_canvas_reports_item() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let error =
            write_dataset(dir.path(), &DatasetOptions::new(3, 8, 1)).expect_err("canvas too small");
        assert!(
            matches!(error, DatasetError::Render { index: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn read_reports_bad_line() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(CAPTIONS_FILE);
        fs::write(&path, "{\"image\": 3}\n").expect("file writes");
        let error = read_captions(&path).expect_err("record is invalid");
        assert!(
            matches!(error, DatasetError::InvalidRecord { line: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn eval_prompts_are_balanced_and_seeded() {
        let prompts = eval_prompts(10, 3);
        assert_eq!(prompts.len(), 60);
        for category in Category::ALL {
            let found = prompts.iter().filter(|(_, c)| *c == category).count();
            assert_eq!(found, 10, "{category}");
        }
        assert_eq!(prompts, eval_prompts(10, 3));
        assert_ne!(prompts, eval_prompts(10, 4));
    }
}
