//! Batched requests, the DDPM scheduler end to end, and tiled VAE decoding,
//! on tiny random-weight folders.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use redraft_common::images::encode_png;
use redraft_common::tokenizer::SCENE_WORDS;
use redraft_generator::GeneratorError;
use redraft_generator::folder::ModelFolder;
use redraft_generator::pipeline::{GenerationInput, Pipeline};
use redraft_generator::request::{Limits, resolve};
use redraft_generator::scheduler::{SchedulerKind, seeded_normal};
use redraft_generator::tiling::{decode_latents, tile_overlap, tile_starts};
use redraft_generator::tiny::write_tiny_generator;
use redraft_generator::worker::{ModelHandle, WorkItem, event_capacity};
use redraft_proto::{GenerateRequest, generate_event};
use tokio::sync::mpsc;

fn tiny_pipeline(dir: &Path) -> Pipeline {
    write_tiny_generator(dir, 7, SCENE_WORDS).unwrap();
    let folder = ModelFolder::open(dir).unwrap();
    Pipeline::load(folder, Device::Cpu, DType::F32).unwrap()
}

fn input(seed: u64, scheduler: SchedulerKind) -> GenerationInput {
    GenerationInput {
        prompt: "a red circle left of a blue square".to_string(),
        negative_prompt: String::new(),
        seed,
        width: 64,
        height: 64,
        steps: 4,
        guidance_scale: 2.0,
        scheduler,
        init: None,
    }
}

fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

#[test]
fn ddpm_same_seed_same_png_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = tiny_pipeline(dir.path());
    let run = |seed| {
        let (image, _) = pipeline
            .generate(&input(seed, SchedulerKind::Ddpm), &mut |_| true)
            .unwrap();
        encode_png(&image)
    };
    let first = run(42);
    assert_eq!(first, run(42), "DDPM is not reproducible");
    assert_ne!(first, run(43), "DDPM ignores the seed");
}

#[test]
fn batch_matches_single_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = tiny_pipeline(dir.path());
    pipeline.set_max_batch(3);
    for scheduler in SchedulerKind::ALL {
        let mut steps = 0;
        let (batch, _) = pipeline
            .generate_batch(&input(100, scheduler), 3, &mut |_| {
                steps += 1;
                true
            })
            .unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(steps, 4, "{scheduler:?}: one progress call per step");
        for (index, image) in batch.iter().enumerate() {
            let (single, _) = pipeline
                .generate(&input(100 + index as u64, scheduler), &mut |_| true)
                .unwrap();
            let diff = max_abs_diff(image, &single);
            eprintln!("{scheduler:?} image {index}: max difference {diff}");
            assert!(
                diff <= 1,
                "{scheduler:?} image {index} differs from seed {} alone by up to {diff}",
                100 + index
            );
        }
        assert_ne!(
            batch[0], batch[1],
            "{scheduler:?}: batch images share a seed"
        );
    }
}

#[test]
fn batch_size_outside_max_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = tiny_pipeline(dir.path());
    pipeline.set_max_batch(2);
    for count in [0, 3] {
        let error = pipeline
            .generate_batch(&input(1, SchedulerKind::Ddim), count, &mut |_| true)
            .unwrap_err();
        match error {
            GeneratorError::InvalidArgument(invalid) => {
                assert_eq!(invalid.field, "count");
                assert_eq!(invalid.value, count.to_string());
                assert_eq!(invalid.limit, "from 1 to the max batch 2");
            }
            other => panic!("count {count}: expected an invalid argument, got {other}"),
        }
    }
}

#[test]
fn tiled_generation_has_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = tiny_pipeline(dir.path());
    pipeline.set_vae_tile_size(4);
    let (image, _) = pipeline
        .generate(
            &GenerationInput {
                width: 96,
                height: 64,
                ..input(5, SchedulerKind::Ddim)
            },
            &mut |_| true,
        )
        .unwrap();
    assert_eq!((image.width(), image.height()), (96, 64));
}

/// Writes a tiny folder to `dir` and loads its VAE on its own.
fn tiny_vae(dir: &Path) -> AutoEncoderKL {
    write_tiny_generator(dir, 7, SCENE_WORDS).unwrap();
    let folder = ModelFolder::open(dir).unwrap();
    let file = folder.file("vae/diffusion_pytorch_model.safetensors");
    // SAFETY: the file was just written and nothing writes it while mapped.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[file], DType::F32, &Device::Cpu) }.unwrap();
    AutoEncoderKL::new(vb, 3, 3, folder.vae.clone()).unwrap()
}

/// Mean absolute difference between neighbouring pixel columns `x - 1` and
/// `x` of a `(3, height, width)` image.
fn column_step(image: &[Vec<Vec<f32>>], x: usize) -> f64 {
    let mut total = 0.0;
    let mut count = 0;
    for channel in image {
        for row in channel {
            total += (row[x] - row[x - 1]).abs() as f64;
            count += 1;
        }
    }
    total / count as f64
}

/// Decoding in tiles changes the inputs of the tiny VAE's group norms and
/// mid-block attention from the whole image to one tile. Tiled pixels
/// therefore match the untiled ones only approximately, even far from any
/// border. The `tiling` unit tests check the tile arithmetic exactly with a
/// local decoder.
#[test]
fn tiled_decode_matches_untiled_without_seams() {
    const LATENT_SIDE: usize = 40;
    const TILE: usize = 16;
    const SCALE: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let vae = tiny_vae(dir.path());
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let latents = seeded_normal(&mut rng, &[1, 4, LATENT_SIDE, LATENT_SIDE], &Device::Cpu).unwrap();

    let whole = decode_latents(&vae, &latents, 0, SCALE).unwrap();
    let tiled = decode_latents(&vae, &latents, TILE, SCALE).unwrap();
    assert_eq!(tiled.dims(), whole.dims());
    let whole: Vec<Vec<Vec<f32>>> = whole.to_vec3().unwrap();
    let tiled: Vec<Vec<Vec<f32>>> = tiled.to_vec3().unwrap();
    let starts = tile_starts(LATENT_SIDE, TILE, tile_overlap(TILE));
    assert_eq!(starts, vec![0, 12, 24]);

    // Away from the borders: latent rows and columns that one tile covers,
    // at least one latent pixel inside that tile's inner edges.
    let away_from_borders = |latent: usize| {
        let covering: Vec<usize> = starts
            .iter()
            .copied()
            .filter(|&start| start <= latent && latent < start + TILE)
            .collect();
        let [start] = covering[..] else {
            return false;
        };
        let clear_of_start = start == 0 || latent > start;
        let clear_of_end = start + TILE == LATENT_SIDE || latent + 1 < start + TILE;
        clear_of_start && clear_of_end
    };
    let mut difference = 0.0;
    let mut shifted_difference = 0.0;
    let mut magnitude = 0.0;
    let mut count = 0;
    for (channel_whole, channel_tiled) in whole.iter().zip(&tiled) {
        for (y, (row_whole, row_tiled)) in channel_whole.iter().zip(channel_tiled).enumerate() {
            for x in 1..row_whole.len() {
                if away_from_borders(y / SCALE) && away_from_borders(x / SCALE) {
                    difference += (row_whole[x] - row_tiled[x]).abs() as f64;
                    shifted_difference += (row_whole[x - 1] - row_tiled[x]).abs() as f64;
                    magnitude += row_whole[x].abs() as f64;
                    count += 1;
                }
            }
        }
    }
    assert!(count > 0, "no pixel is away from the borders");
    let (difference, shifted_difference, magnitude) = (
        difference / count as f64,
        shifted_difference / count as f64,
        magnitude / count as f64,
    );
    eprintln!(
        "away from borders: mean |tiled - untiled| {difference:.4}, against the untiled image shifted one pixel {shifted_difference:.4}, mean |untiled| {magnitude:.4}"
    );
    assert!(
        difference < 0.25 * magnitude,
        "tiled pixels differ by {difference} on average; the untiled ones average {magnitude}"
    );
    assert!(
        difference < 0.5 * shifted_difference,
        "tiled pixels ({difference}) are hardly closer to the untiled ones than to their neighbours ({shifted_difference}), so tiles are misplaced"
    );

    // No seam: the step between neighbouring columns at a tile edge is no
    // larger than the typical step between columns.
    let width = LATENT_SIDE * SCALE;
    let column_steps: Vec<f64> = (1..width).map(|x| column_step(&tiled, x)).collect();
    let typical = column_steps.iter().sum::<f64>() / column_steps.len() as f64;
    let edges = starts
        .iter()
        .flat_map(|&start| [start * SCALE, (start + TILE) * SCALE])
        .filter(|&x| x > 0 && x < width);
    for x in edges {
        let step = column_step(&tiled, x);
        let untiled_step = column_step(&whole, x);
        eprintln!(
            "tile edge at column {x}: step {step:.4}, untiled {untiled_step:.4}, typical {typical:.4}"
        );
        assert!(
            step <= 1.2 * typical,
            "seam at column {x}: step {step} against a typical {typical}"
        );
    }
}

#[test]
fn worker_streams_one_result_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = tiny_pipeline(dir.path());
    pipeline.set_max_batch(2);
    let singles: Vec<RgbImage> = (0..3)
        .map(|index| {
            let (image, _) = pipeline
                .generate(&input(200 + index, SchedulerKind::Ddim), &mut |_| true)
                .unwrap();
            image
        })
        .collect();
    let handle = ModelHandle::spawn(pipeline, 4).unwrap();

    let limits = Limits {
        max_side: 256,
        side_multiple: 8,
        max_steps: 50,
        max_prompt_chars: 100,
        default_side: 64,
        default_steps: 4,
        default_guidance_scale: 2.0,
        default_scheduler: SchedulerKind::Ddim,
        max_images: 4,
        max_batch: 2,
    };
    let request = GenerateRequest {
        prompt: input(0, SchedulerKind::Ddim).prompt,
        seed: Some(200),
        num_images: Some(3),
        ..Default::default()
    };
    let (input, resolved) = resolve(&request, &limits).unwrap();
    let (events, mut receiver) = mpsc::channel(event_capacity(&input, &resolved));
    handle
        .submit(WorkItem {
            input,
            resolved,
            events,
            queued_at: Instant::now(),
            span: tracing::Span::none(),
        })
        .unwrap();

    // The model thread drops the sender when the request is done.
    let mut progress = Vec::new();
    let mut results = Vec::new();
    while let Some(event) = receiver.blocking_recv() {
        match event.unwrap().event.unwrap() {
            generate_event::Event::Progress(step) => progress.push(step),
            generate_event::Event::Result(result) => results.push(result),
        }
    }

    // Three images in two batches (2 + 1) of 4 steps each.
    let steps: Vec<u32> = progress.iter().map(|event| event.step).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<u32>>());
    assert!(progress.iter().all(|event| event.total_steps == 8));
    assert_eq!(results.len(), 3);
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result.index, index as u32);
        assert_eq!(result.seed, 200 + index as u64);
        assert_eq!(result.resolved.as_ref().unwrap().num_images, Some(3));
        let png = &result.image.as_ref().unwrap().png;
        let image = image::load_from_memory(png).unwrap().to_rgb8();
        let diff = max_abs_diff(&image, &singles[index]);
        assert!(
            diff <= 1,
            "image {index} differs from seed {} alone by up to {diff}",
            200 + index
        );
    }
}
