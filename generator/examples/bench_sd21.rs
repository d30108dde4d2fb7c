//! Measures the generator on the full-size Stable Diffusion 2.1 architecture
//! with random weights: seconds per denoising step, VAE decode seconds, and
//! peak resident memory, tiled and untiled, at several image sizes.
//!
//! ```sh
//! cargo run --release -p redraft-generator --example bench_sd21 -- \
//!     --dir /tmp/sd21-random --case 256:0 --case 256:16 --case 512:0 --case 512:32
//! ```
//!
//! The first run writes the model folder to `--dir`: the UNet, VAE, text
//! encoder and scheduler configs of `stabilityai/stable-diffusion-2-1` and
//! random F16 weights (about 2.6 GB). The tokenizer is a word-level one in
//! place of the CLIP BPE tokenizer, which changes nothing the benchmark times. Each case
//! (`SIDE:TILE`, image side in pixels and `--vae-tile-size` in latent
//! pixels, 0 untiled) then runs in its own process, which loads the
//! weights as F32 on the CPU, draws one image, and prints one JSON line.
//! Peak memory is the kernel's `VmHWM`, reset through
//! `/proc/self/clear_refs` after loading and again after the last
//! denoising step, so the denoise and decode peaks are separate. Both
//! include the loaded weights. `--decode-only` loads only the VAE and
//! decodes seeded random latents.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use redraft_generator::clip_text::ClipTextModel;
use redraft_generator::folder::{ModelFolder, REQUIRED_FILES};
use redraft_generator::pipeline::{GenerationInput, Pipeline};
use redraft_generator::scheduler::seeded_normal;
use redraft_generator::tiling::decode_latents;
use redraft_generator::unet::Unet;
use serde_json::{Value, json};

/// Benchmarks the full-size SD 2.1 architecture with random weights.
#[derive(Debug, Parser)]
struct Args {
    /// Folder for the random-weight model; written when it has no weights yet.
    #[arg(long, default_value = "/tmp/redraft-sd21-random")]
    dir: PathBuf,

    /// Cases as `SIDE:TILE`: image side in pixels and VAE tile size in
    /// latent pixels (0 decodes in one piece).
    #[arg(long = "case", default_values = ["256:0", "256:16", "512:0", "512:32"])]
    cases: Vec<String>,

    /// Denoising steps per image.
    #[arg(long, default_value_t = 2)]
    steps: usize,

    /// Classifier-free guidance scale; above 1 the UNet runs a batch of 2.
    #[arg(long, default_value_t = 7.5)]
    guidance_scale: f64,

    /// Loads only the VAE and decodes seeded random latents, so the peak
    /// memory is the decoder's own and larger sides fit in memory.
    #[arg(long)]
    decode_only: bool,

    /// Runs one case in this process instead of spawning one per case.
    #[arg(long, hide = true)]
    run_case: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(case) = &args.run_case {
        let (side, tile) = parse_case(case)?;
        let record = if args.decode_only {
            run_decode_case(&args, side, tile)?
        } else {
            run_case(&args, side, tile)?
        };
        println!("{record}");
        return Ok(());
    }

    // The VAE is written last, so its weights mark a complete folder.
    let vae_weights = args.dir.join("vae/diffusion_pytorch_model.safetensors");
    if std::fs::metadata(&vae_weights).map_or(true, |meta| meta.len() == 0) {
        let started = Instant::now();
        write_folder(&args.dir)?;
        eprintln!(
            "wrote {} in {:.0} s",
            args.dir.display(),
            started.elapsed().as_secs_f64()
        );
    }

    if args.decode_only {
        println!("| image | VAE tile | RSS after load GiB | decode s | decode peak GiB |");
        println!("| --- | --- | --- | --- | --- |");
    } else {
        println!(
            "| image | VAE tile | load s | RSS after load GiB | s per step | denoise peak GiB | decode s | decode peak GiB | s per image |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    }
    let exe = std::env::current_exe()?;
    for case in &args.cases {
        parse_case(case)?;
        let output = Command::new(&exe)
            .arg("--dir")
            .arg(&args.dir)
            .args(["--steps", &args.steps.to_string()])
            .args(["--guidance-scale", &args.guidance_scale.to_string()])
            .args(args.decode_only.then_some("--decode-only"))
            .args(["--run-case", case])
            .output()
            .with_context(|| format!("failed to start the process for case {case}"))?;
        if !output.status.success() {
            anyhow::bail!(
                "case {case} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let record: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("case {case} printed no JSON record"))?;
        eprintln!("{record}");
        print_row(&record, args.decode_only);
    }
    Ok(())
}

fn parse_case(case: &str) -> anyhow::Result<(usize, usize)> {
    let parsed = case
        .split_once(':')
        .and_then(|(side, tile)| Some((side.parse().ok()?, tile.parse().ok()?)));
    match parsed {
        Some((side, tile)) if side > 0 && side % 8 == 0 => Ok((side, tile)),
        _ => anyhow::bail!(
            "invalid --case {case:?}; it must be SIDE:TILE, for example 512:32, with SIDE a multiple of 8"
        ),
    }
}

fn print_row(record: &Value, decode_only: bool) {
    let gib = |key: &str| record[key].as_f64().unwrap_or(f64::NAN) / (1u64 << 30) as f64;
    let seconds = |key: &str| record[key].as_f64().unwrap_or(f64::NAN);
    let tile = record["tile"].as_u64().unwrap_or(0);
    let side = record["side"].as_u64().unwrap_or(0);
    let tile = if tile == 0 {
        "untiled".to_string()
    } else {
        format!("{tile} ({} px)", tile * 8)
    };
    if decode_only {
        println!(
            "| {side}x{side} | {tile} | {:.2} | {:.1} | {:.2} |",
            gib("rss_after_load"),
            seconds("decode_seconds"),
            gib("decode_peak"),
        );
        return;
    }
    println!(
        "| {side}x{side} | {tile} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} |",
        seconds("load_seconds"),
        gib("rss_after_load"),
        seconds("seconds_per_step"),
        gib("denoise_peak"),
        seconds("decode_seconds"),
        gib("decode_peak"),
        seconds("image_seconds"),
    );
}

/// Loads the folder, draws one image of `side` pixels with VAE tile size
/// `tile`, and returns the measurements as a JSON record.
fn run_case(args: &Args, side: usize, tile: usize) -> anyhow::Result<Value> {
    let started = Instant::now();
    let folder = ModelFolder::open(&args.dir)?;
    let mut pipeline = Pipeline::load(folder, Device::Cpu, DType::F32)?;
    pipeline.set_vae_tile_size(tile);
    let load_seconds = started.elapsed().as_secs_f64();
    let rss_after_load = memory_status("VmRSS")?;
    reset_peak()?;

    let scheduler = pipeline.folder().scheduler.kind;
    let input = GenerationInput {
        prompt: "a red circle left of a blue square".to_string(),
        negative_prompt: String::new(),
        seed: 1,
        width: side,
        height: side,
        steps: args.steps,
        guidance_scale: args.guidance_scale,
        scheduler,
        init: None,
    };
    let mut step_seconds = Vec::new();
    let mut denoise_peak = 0;
    let mut last_step = Instant::now();
    let generate_started = Instant::now();
    let (_, timings) = pipeline.generate(&input, &mut |progress| {
        step_seconds.push(last_step.elapsed().as_secs_f64());
        last_step = Instant::now();
        if progress.step == progress.total {
            // The peak so far is the denoising peak. Start over for the decode.
            denoise_peak = memory_status("VmHWM").unwrap_or(0);
            let _ = reset_peak();
        }
        true
    })?;
    let image_seconds = generate_started.elapsed().as_secs_f64();
    let decode_peak = memory_status("VmHWM")?;

    // The first step also includes the text encoding and latent set-up, so
    // the per-step figure averages the steps after it when there are any.
    let later_steps = &step_seconds[1.min(step_seconds.len() - 1)..];
    let seconds_per_step = later_steps.iter().sum::<f64>() / later_steps.len() as f64;
    Ok(json!({
        "side": side,
        "tile": tile,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "load_seconds": load_seconds,
        "rss_after_load": rss_after_load,
        "text_encode_seconds": timings.text_encode.as_secs_f64(),
        "step_seconds": step_seconds,
        "seconds_per_step": seconds_per_step,
        "denoise_peak": denoise_peak,
        "decode_seconds": timings.decode.as_secs_f64(),
        "decode_peak": decode_peak,
        "image_seconds": image_seconds,
    }))
}

/// Loads only the VAE, decodes seeded random latents for an image of `side`
/// pixels with VAE tile size `tile`, and returns the measurements as a JSON
/// record.
fn run_decode_case(args: &Args, side: usize, tile: usize) -> anyhow::Result<Value> {
    let folder = ModelFolder::open(&args.dir)?;
    let file = folder.file("vae/diffusion_pytorch_model.safetensors");
    // SAFETY: the benchmark folder is only read while it is mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[file], DType::F32, &Device::Cpu) }?;
    let vae = AutoEncoderKL::new(vb, 3, 3, folder.vae.clone())?;
    let rss_after_load = memory_status("VmRSS")?;

    let factor = folder.vae_scale_factor();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let latents = seeded_normal(
        &mut rng,
        &[1, 4, side / factor, side / factor],
        &Device::Cpu,
    )?;
    reset_peak()?;
    let started = Instant::now();
    let image = decode_latents(&vae, &latents, tile, factor)?;
    let decode_seconds = started.elapsed().as_secs_f64();
    let decode_peak = memory_status("VmHWM")?;
    anyhow::ensure!(
        image.dims() == [3, side, side],
        "decoded {:?}, expected (3, {side}, {side})",
        image.dims()
    );
    Ok(json!({
        "side": side,
        "tile": tile,
        "rss_after_load": rss_after_load,
        "decode_seconds": decode_seconds,
        "decode_peak": decode_peak,
    }))
}

/// Reads a `/proc/self/status` field such as `VmHWM`, in bytes.
fn memory_status(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with(&format!("{field}:")))
        .with_context(|| format!("/proc/self/status has no {field}"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("unreadable /proc/self/status line {line:?}"))?;
    Ok(kib * 1024)
}

/// Resets `VmHWM` to the current resident size (Linux 4.0 and later).
fn reset_peak() -> anyhow::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("failed to reset VmHWM")
}

/// Writes the SD 2.1 configs and random F16 weights to `dir`.
fn write_folder(dir: &Path) -> anyhow::Result<()> {
    for sub in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let tokenizer =
        redraft_common::tokenizer::build_word_level(redraft_common::tokenizer::SCENE_WORDS);
    tokenizer
        .save(dir.join("tokenizer/tokenizer.json"), true)
        .map_err(|error| anyhow::anyhow!("failed to write tokenizer.json: {error}"))?;
    for (file, value) in sd21_configs() {
        std::fs::write(dir.join(file), serde_json::to_string_pretty(&value)?)?;
    }

    // ModelFolder::open parses the configs once every required file exists,
    // so empty weight files stand in until the real ones are written.
    for file in REQUIRED_FILES {
        if !dir.join(file).exists() {
            std::fs::write(dir.join(file), b"")?;
        }
    }
    let configs = ModelFolder::open(dir)?;
    let device = Device::Cpu;

    let text = VarMap::new();
    ClipTextModel::new(
        VarBuilder::from_varmap(&text, DType::F32, &device).pp("text_model"),
        &configs.text_encoder,
        false,
    )?;
    save_f16(&text, &dir.join("text_encoder/model.safetensors"))?;
    drop(text);

    let unet = VarMap::new();
    Unet::new(
        VarBuilder::from_varmap(&unet, DType::F32, &device),
        configs.unet_channels,
        configs.unet.clone(),
        configs.unet_text_time,
    )?;
    save_f16(&unet, &dir.join("unet/diffusion_pytorch_model.safetensors"))?;
    drop(unet);

    let vae = VarMap::new();
    AutoEncoderKL::new(
        VarBuilder::from_varmap(&vae, DType::F32, &device),
        3,
        3,
        configs.vae.clone(),
    )?;
    save_f16(&vae, &dir.join("vae/diffusion_pytorch_model.safetensors"))?;
    Ok(())
}

/// Saves every variable of `vars`, which hold candle's default random
/// initialisation, as F16.
fn save_f16(vars: &VarMap, path: &Path) -> anyhow::Result<()> {
    let data = vars.data().lock().expect("the VarMap lock is not poisoned");
    let tensors = data
        .iter()
        .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(DType::F16)?)))
        .collect::<candle_core::Result<std::collections::HashMap<String, Tensor>>>()?;
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}

/// Returns the configs of `stabilityai/stable-diffusion-2-1` (diffusers
/// layout) as json files to write. The architecture fields agree with
/// candle-transformers 0.11.1's `StableDiffusionConfig::v2_1` and
/// `clip::Config::v2_1`, which transcribe the same hub files.
fn sd21_configs() -> Vec<(&'static str, Value)> {
    let text_encoder = json!({
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "hidden_act": "gelu",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 23,
        "num_attention_heads": 16,
        "max_position_embeddings": 77,
        "projection_dim": 512,
        "vocab_size": 49408,
        "layer_norm_eps": 1e-05,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    });
    let unet = json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": [5, 10, 20, 20],
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": false,
        "cross_attention_dim": 1024,
        "down_block_types": [
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D"
        ],
        "downsample_padding": 1,
        "dual_cross_attention": false,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_class_embeds": null,
        "only_cross_attention": false,
        "out_channels": 4,
        "sample_size": 96,
        "up_block_types": [
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D"
        ],
        "upcast_attention": true,
        "use_linear_projection": true,
    });
    let vae = json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": [
            "DownEncoderBlock2D",
            "DownEncoderBlock2D",
            "DownEncoderBlock2D",
            "DownEncoderBlock2D"
        ],
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 768,
        "up_block_types": [
            "UpDecoderBlock2D",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D"
        ],
    });
    let scheduler = json!({
        "_class_name": "DDIMScheduler",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "num_train_timesteps": 1000,
        "prediction_type": "v_prediction",
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null,
    });
    let model_index = json!({
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    });
    vec![
        ("model_index.json", model_index),
        ("text_encoder/config.json", text_encoder),
        ("unet/config.json", unet),
        ("vae/config.json", vae),
        ("scheduler/scheduler_config.json", scheduler),
    ]
}
