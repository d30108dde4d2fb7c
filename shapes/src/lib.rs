//! The shapes world: a small synthetic world with an exact oracle, used to
//! train redraft's small default models and to check whether generated
//! images match their prompts.
//!
//! Images show circles, squares and upright triangles in six palette colours
//! (red, orange, yellow, green, blue, purple) on a white canvas, 64x64 px by
//! default. Prompts come from a small English grammar ("a photo of two red
//! circles", "a circle left of a square") in the six GenEval categories, and
//! parse into a [`Spec`]. The renderer draws random layouts that satisfy a
//! spec exactly, and the oracle finds objects by colour and geometry and
//! judges an image against a prompt by rules modelled on GenEval's. Everything random
//! takes a seeded RNG, so datasets and evaluations are reproducible.
//!
//! ```
//! use rand::SeedableRng;
//! use redraft_shapes::{Category, judge, render, sample_prompt};
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
//! let (prompt, spec) = sample_prompt(Category::ColorAttr, &mut rng);
//! let image = render(&spec, 64, &mut rng)?;
//! assert!(judge(&image, &prompt)?.correct);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod augment;
pub mod captions;
pub mod dataset;
pub mod detect;
mod features;
pub mod flaws;
pub mod grammar;
pub mod labels;
pub mod oracle;
pub mod render;
pub mod styles;
pub mod world;

pub use augment::{
    AugmentError, Corruption, add_gaussian_noise, box_blur3, random_color_shift, shift_colors,
};
pub use captions::{NegativeKind, caption, hard_negatives, partial_captions};
pub use dataset::{
    CAPTIONS_FILE, CaptionRecord, DatasetError, DatasetOptions, DatasetSummary, IMAGES_DIR,
    NegativeRecord, eval_prompts, read_captions, write_dataset,
};
pub use detect::{DetectedObject, classify_pixel, detect};
pub use flaws::{
    FLAW_NOUN, FLAW_PLURAL, FlawKind, FlawedObject, add_flaws, counted_flaw_caption, flaw_caption,
};
pub use grammar::{
    ParseError, PromptStyle, format_group, format_prompt, parse_prompt, sample_prompt, sample_spec,
    vocabulary,
};
pub use labels::{LabelSummary, SAMPLES_FILE, SampleRecord, category_of, label_samples};
pub use oracle::{POSITION_MARGIN, Verdict, judge, judge_detected, judge_spec, read_spec};
pub use render::{
    BACKGROUND, DEFAULT_CANVAS_SIZE, LayoutRules, MIN_CANVAS_SIZE, PlacedObject, RenderError, draw,
    layout, render,
};
pub use styles::{StyleKind, restyle};
pub use world::{
    Category, Color, MAX_COUNT, MAX_OBJECTS, MIN_COUNT, ObjectGroup, Relation, Shape, Spec,
    SpecError, UnknownCategory,
};
