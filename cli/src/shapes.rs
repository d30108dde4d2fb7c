//! `redraft shapes`: the synthetic shapes world's dataset writer and oracle.

use std::path::PathBuf;

use anyhow::Context;

/// `redraft shapes` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ShapesCommand {
    /// Render a training dataset: DIR/images/*.png, DIR/captions.jsonl (prompt,
    /// category, partial captions, hard negatives) and DIR/tokenizer.json.
    Dataset {
        /// Folder to write into.
        dir: PathBuf,
        /// Number of images; categories are balanced.
        #[arg(long, default_value_t = 60_000)]
        count: usize,
        /// Canvas side in pixels.
        #[arg(long, default_value_t = redraft_shapes::render::DEFAULT_CANVAS_SIZE)]
        canvas: u32,
        /// Seed; the same seed writes the same dataset.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Measure the models with the oracle: the generator's single-shot
    /// accuracy per category, and the critic's agreement with the oracle.
    Eval(crate::shapes_eval::ShapesEvalArgs),
    /// Judge an image against a prompt with the shapes oracle and print the
    /// objects it found.
    Judge {
        /// The prompt, in the shapes grammar.
        #[arg(long)]
        prompt: String,
        /// PNG image to judge.
        image: PathBuf,
    },
}

/// Runs `redraft shapes`.
pub fn run(command: ShapesCommand) -> anyhow::Result<bool> {
    match command {
        ShapesCommand::Dataset {
            dir,
            count,
            canvas,
            seed,
        } => {
            if count == 0 {
                anyhow::bail!("--count 0 is invalid; it must be at least 1");
            }
            let started = std::time::Instant::now();
            let summary = redraft_shapes::write_dataset(&dir, count, canvas, seed)?;
            let tokenizer =
                redraft_common::tokenizer::build_word_level(&redraft_shapes::vocabulary());
            let tokenizer_path = dir.join("tokenizer.json");
            tokenizer.save(&tokenizer_path, true).map_err(|error| {
                anyhow::anyhow!("failed to write {}: {error}", tokenizer_path.display())
            })?;
            println!(
                "wrote {} images, {} and {} in {:.1} s",
                summary.images,
                summary.captions_path.display(),
                tokenizer_path.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(true)
        }
        ShapesCommand::Eval(args) => {
            crate::shapes_eval::run(args)?;
            Ok(true)
        }
        ShapesCommand::Judge { prompt, image } => {
            let picture = image::open(&image)
                .with_context(|| format!("failed to read {}", image.display()))?
                .to_rgb8();
            let verdict = redraft_shapes::judge(&picture, &prompt)?;
            println!(
                "{}: {}",
                if verdict.correct {
                    "correct"
                } else {
                    "incorrect"
                },
                verdict.reason
            );
            for object in &verdict.detected {
                let shape = object
                    .shape
                    .map(|shape| shape.word())
                    .unwrap_or("unknown shape");
                println!(
                    "  {} {shape} at ({:.0}, {:.0}), {}x{} px",
                    object.color.word(),
                    object.center.0,
                    object.center.1,
                    object.width,
                    object.height
                );
            }
            Ok(verdict.correct)
        }
    }
}
