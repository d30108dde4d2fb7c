//! `--dtype` on the CPU: F16 weights generate an image close to the F32
//! one, and BF16 is rejected at start-up with an error naming the flag.

use candle_core::{DType, Device};
use clap::Parser;
use image::RgbImage;
use redraft_common::tokenizer::SCENE_WORDS;
use redraft_generator::GeneratorArgs;
use redraft_generator::folder::ModelFolder;
use redraft_generator::pipeline::{GenerationInput, Pipeline};
use redraft_generator::scheduler::SchedulerKind;
use redraft_generator::tiny::write_tiny_generator;

#[derive(Parser)]
struct Command {
    #[command(flatten)]
    args: GeneratorArgs,
}

/// Parses generator flags for `model` with `dtype` and resolves the dtype on the CPU.
fn cpu_dtype(model: &std::path::Path, dtype: &str) -> anyhow::Result<DType> {
    let command = Command::try_parse_from([
        "redraft-generator",
        "--model",
        model.to_str().unwrap(),
        "--dtype",
        dtype,
    ])
    .unwrap();
    command.args.dtype_for(&Device::Cpu)
}

fn generate(dir: &std::path::Path, dtype: DType) -> RgbImage {
    let folder = ModelFolder::open(dir).unwrap();
    let pipeline = Pipeline::load(folder, Device::Cpu, dtype).unwrap();
    let input = GenerationInput {
        prompt: "a red circle left of a blue square".to_string(),
        negative_prompt: String::new(),
        seed: 3,
        width: 64,
        height: 64,
        steps: 4,
        guidance_scale: 2.0,
        scheduler: SchedulerKind::Ddim,
        init: None,
    };
    pipeline.generate(&input, &mut |_| true).unwrap().0
}

#[test]
fn f16_generates_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_generator(dir.path(), 5, SCENE_WORDS).unwrap();
    let dtype = cpu_dtype(dir.path(), "f16").unwrap();
    assert_eq!(dtype, DType::F16);

    let half = generate(dir.path(), dtype);
    let full = generate(dir.path(), DType::F32);
    assert_eq!(half.dimensions(), (64, 64));

    // Rounding the weights to F16 moves pixels a little, not the whole image.
    let total: u64 = half
        .as_raw()
        .iter()
        .zip(full.as_raw())
        .map(|(a, b)| a.abs_diff(*b) as u64)
        .sum();
    let mean_abs_diff = total as f64 / full.as_raw().len() as f64;
    assert!(
        mean_abs_diff < 8.0,
        "F16 image differs from F32 by {mean_abs_diff} per channel"
    );
}

#[test]
fn auto_is_f32_on_cpu() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(cpu_dtype(dir.path(), "auto").unwrap(), DType::F32);
}

#[test]
fn bf16_rejected_on_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let error = cpu_dtype(dir.path(), "bf16").unwrap_err().to_string();
    assert!(error.contains("--dtype bf16"), "{error}");
    assert!(error.contains("cpu"), "{error}");
}
