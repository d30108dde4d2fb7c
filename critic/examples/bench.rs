//! Seconds per critique of full-size CLIP configs with random weights.
//!
//! ```sh
//! cargo run --release -p redraft-critic --example bench -- [vit-b-32|vit-l-14|all] [REPEATS]
//! ```
//!
//! For each config it writes random weights to a temporary folder, loads
//! them, and times critiques of 224 x 224 images at batch 1 and batch 8.
//! "new prompt" critiques embed the prompt's captions (the judge caches
//! the last prompt's embeddings), "same prompt" critiques reuse them, as
//! the candidates of one job do. Each row is the median of REPEATS runs
//! (default 3), divided by the batch size.

use std::time::Instant;

use candle_core::{DType, Device};
use image::{Rgb, RgbImage};
use redraft_critic::configs::{VIT_B_32, VIT_L_14, write_random_full_size};
use redraft_critic::judge::Judge;
use redraft_critic::{Calibration, ClipScorer};

/// Prompts with two objects, counts, colours and a relation, so that every
/// probe kind runs. Each "new prompt" run takes the next one.
const PROMPTS: [&str; 4] = [
    "a photo of two red circles left of a blue square",
    "a photo of three green triangles above a yellow circle",
    "a photo of a purple square right of two orange circles",
    "a photo of four blue circles below a red triangle",
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let selection = args.next().unwrap_or_else(|| "all".to_string());
    let repeats: usize = match args.next() {
        Some(text) => text.parse().map_err(|_| {
            anyhow::anyhow!("REPEATS {text:?} is invalid; it must be a positive integer")
        })?,
        None => 3,
    };
    anyhow::ensure!(repeats >= 1, "REPEATS 0 is invalid; it must be at least 1");
    let configs: Vec<(&str, &str)> = match selection.as_str() {
        "vit-b-32" => vec![("ViT-B/32", VIT_B_32)],
        "vit-l-14" => vec![("ViT-L/14", VIT_L_14)],
        "all" => vec![("ViT-B/32", VIT_B_32), ("ViT-L/14", VIT_L_14)],
        other => anyhow::bail!("unknown config {other:?}; expected vit-b-32, vit-l-14 or all"),
    };

    println!("| model | case | batch | seconds per critique |");
    println!("| --- | --- | --- | --- |");
    for (name, config) in configs {
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        write_random_full_size(dir.path(), config, 1)?;
        let written = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let scorer = ClipScorer::load(dir.path(), &Device::Cpu, DType::F32)?;
        let loaded = started.elapsed().as_secs_f64();
        eprintln!("{name}: wrote random weights in {written:.1} s, loaded in {loaded:.1} s");
        let judge = Judge::new(scorer, Calibration::clip_score());
        let images: Vec<RgbImage> = (0..8u8)
            .map(|index| {
                RgbImage::from_fn(224, 224, |x, y| {
                    Rgb([(x as u8).wrapping_add(index * 30), y as u8, 128])
                })
            })
            .collect();

        // Warm-up, so that no row pays for first-use set-up.
        judge.critique_batch(PROMPTS[0], &images[..1])?;
        let mut next_prompt = 1;
        for batch in [1, 8] {
            for case in ["new prompt", "same prompt"] {
                let mut seconds = Vec::with_capacity(repeats);
                for _ in 0..repeats {
                    let prompt = if case == "new prompt" {
                        next_prompt += 1;
                        PROMPTS[next_prompt % PROMPTS.len()]
                    } else {
                        PROMPTS[next_prompt % PROMPTS.len()]
                    };
                    let started = Instant::now();
                    let critiques = judge.critique_batch(prompt, &images[..batch])?;
                    seconds.push(started.elapsed().as_secs_f64() / batch as f64);
                    anyhow::ensure!(critiques.len() == batch, "expected {batch} critiques");
                }
                seconds.sort_by(f64::total_cmp);
                println!(
                    "| {name} | {case} | {batch} | {:.3} |",
                    seconds[seconds.len() / 2]
                );
            }
        }
    }
    Ok(())
}
