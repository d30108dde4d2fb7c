//! Tiny random-weight folders of every family layout (SD 1.x, 2.x, SD-Turbo,
//! SDXL, SDXL-Turbo): loading, generating, SDXL's added conditioning, config
//! errors, and prompt weighting.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::schedulers::TimestepSpacing;
use image::RgbImage;
use redraft_common::tokenizer::{PromptTokenizer, SCENE_WORDS};
use redraft_generator::GeneratorError;
use redraft_generator::clip_text::ClipTextModel;
use redraft_generator::folder::{ModelFamily, ModelFolder};
use redraft_generator::pipeline::{GenerationInput, Pipeline};
use redraft_generator::scheduler::SchedulerKind;
use redraft_generator::tiny::{TinyFamily, write_tiny};
use redraft_generator::unet::{TextTimeInput, Unet};
use redraft_generator::weighting::{parse_weighted, weighted_token_ids};

const PROMPT: &str = "a red circle left of a blue square";

fn write(dir: &Path, family: TinyFamily) {
    write_tiny(dir, 11, SCENE_WORDS, family).unwrap();
}

fn load(dir: &Path) -> Pipeline {
    let folder = ModelFolder::open(dir).unwrap();
    Pipeline::load(folder, Device::Cpu, DType::F32).unwrap()
}

/// Builds an input with the folder's own defaults, as a request without
/// overrides gets them.
fn input(pipeline: &Pipeline, prompt: &str, seed: u64) -> GenerationInput {
    let folder = pipeline.folder();
    GenerationInput {
        prompt: prompt.to_string(),
        negative_prompt: String::new(),
        seed,
        width: 64,
        height: 64,
        steps: folder.defaults.steps,
        guidance_scale: folder.defaults.guidance_scale,
        scheduler: folder.scheduler.kind,
        init: None,
    }
}

fn generate(pipeline: &Pipeline, input: &GenerationInput) -> RgbImage {
    pipeline.generate(input, &mut |_| true).unwrap().0
}

fn open_error(dir: &Path) -> String {
    ModelFolder::open(dir).unwrap_err().to_string()
}

fn edit_json(dir: &Path, file: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(file);
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

#[test]
fn every_family_loads_and_generates() {
    let expected = [
        (TinyFamily::Sd1, ModelFamily::Sd1),
        (TinyFamily::Sd2, ModelFamily::Sd2),
        (TinyFamily::SdTurbo, ModelFamily::Sd2),
        (TinyFamily::Sdxl, ModelFamily::Sdxl),
        (TinyFamily::SdxlTurbo, ModelFamily::Sdxl),
    ];
    assert_eq!(expected.len(), TinyFamily::ALL.len());
    for (tiny, family) in expected {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), tiny);
        let pipeline = load(dir.path());
        assert_eq!(pipeline.folder().family, family, "{tiny:?}");

        let first = generate(&pipeline, &input(&pipeline, PROMPT, 3));
        assert_eq!(first.dimensions(), (64, 64), "{tiny:?}");
        let second = generate(&pipeline, &input(&pipeline, PROMPT, 3));
        assert_eq!(
            redraft_common::images::encode_png(&first),
            redraft_common::images::encode_png(&second),
            "{tiny:?} is not reproducible"
        );
        let other_seed = generate(&pipeline, &input(&pipeline, PROMPT, 4));
        assert_ne!(first, other_seed, "{tiny:?} ignores the seed");
    }
}

#[test]
fn family_names_match_info() {
    assert_eq!(ModelFamily::Sd1.name(), "sd1");
    assert_eq!(ModelFamily::Sd2.name(), "sd2");
    assert_eq!(ModelFamily::Sdxl.name(), "sdxl");
}

#[test]
fn sdxl_folder_reads_two_encoders() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    let folder = ModelFolder::open(dir.path()).unwrap();
    let first = &folder.text_encoder;
    let second = folder.text_encoder_2.as_ref().unwrap();
    assert_eq!(first.hidden_act, "quick_gelu");
    assert_eq!(second.hidden_act, "gelu");
    assert_eq!(
        folder.unet.cross_attention_dim,
        first.hidden_size + second.hidden_size
    );
    let text_time = folder.unet_text_time.unwrap();
    assert_eq!(
        text_time.input_dim,
        6 * text_time.time_embed_dim + second.projection_dim.unwrap()
    );
    assert!(folder.force_zeros_for_empty_prompt);
    assert!(matches!(
        folder.scheduler.timestep_spacing,
        TimestepSpacing::Leading
    ));
}

#[test]
fn turbo_folders_run_one_step_unguided() {
    for tiny in [TinyFamily::SdTurbo, TinyFamily::SdxlTurbo] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), tiny);
        let folder = ModelFolder::open(dir.path()).unwrap();
        assert_eq!(folder.defaults.steps, 1, "{tiny:?}");
        assert_eq!(folder.defaults.guidance_scale, 0.0, "{tiny:?}");
        assert_eq!(
            folder.scheduler.kind,
            SchedulerKind::EulerAncestral,
            "{tiny:?}"
        );
        assert!(
            matches!(folder.scheduler.timestep_spacing, TimestepSpacing::Trailing),
            "{tiny:?}"
        );
    }
}

#[test]
fn sdxl_weights_use_diffusers_names() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    let unet = candle_core::safetensors::load(
        dir.path().join("unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for name in [
        "add_embedding.linear_1.weight",
        "add_embedding.linear_1.bias",
        "add_embedding.linear_2.weight",
        "add_embedding.linear_2.bias",
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight",
    ] {
        assert!(unet.contains_key(name), "the SDXL UNet lacks {name}");
    }
    // 80 = 6 size numbers x 8 channels + the 32-wide pooled embedding.
    assert_eq!(unet["add_embedding.linear_1.weight"].dims(), &[128, 80]);

    let text_2 = candle_core::safetensors::load(
        dir.path().join("text_encoder_2/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(text_2.contains_key("text_projection.weight"));
    assert!(text_2.contains_key("text_model.final_layer_norm.weight"));
}

#[test]
fn sdxl_pooled_embedding_changes_image() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    let pipeline = load(dir.path());
    let before = generate(&pipeline, &input(&pipeline, PROMPT, 5));
    drop(pipeline);

    // text_projection only feeds the pooled embedding, so a change there can
    // reach the image only through the UNet's added embedding.
    let path = dir.path().join("text_encoder_2/model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let projection = tensors["text_projection.weight"].clone();
    tensors.insert(
        "text_projection.weight".to_string(),
        (projection * -3.0).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &path).unwrap();

    let pipeline = load(dir.path());
    let after = generate(&pipeline, &input(&pipeline, PROMPT, 5));
    assert_ne!(
        before, after,
        "the pooled embedding does not reach the UNet"
    );
}

#[test]
fn sdxl_size_ids_change_unet_output() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    let folder = ModelFolder::open(dir.path()).unwrap();
    let path = folder.file("unet/diffusion_pytorch_model.safetensors");
    let vb = VarBuilder::from_tensors(
        candle_core::safetensors::load(&path, &Device::Cpu).unwrap(),
        DType::F32,
        &Device::Cpu,
    );
    let unet = Unet::new(
        vb,
        folder.unet_channels,
        folder.unet.clone(),
        folder.unet_text_time,
    )
    .unwrap();
    assert!(unet.needs_text_time());

    let latents = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let hidden = Tensor::randn(0f32, 1.0, (1, 32, 64), &Device::Cpu).unwrap();
    let pooled = Tensor::randn(0f32, 1.0, (1, 32), &Device::Cpu).unwrap();
    let run = |sizes: [f32; 6]| {
        let time_ids = Tensor::new(&sizes, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let text_time = TextTimeInput {
            text_embeds: pooled.clone(),
            time_ids,
        };
        unet.forward(&latents, 500.0, &hidden, Some(&text_time))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let target = run([64.0, 64.0, 0.0, 0.0, 64.0, 64.0]);
    let cropped = run([64.0, 64.0, 16.0, 8.0, 64.0, 64.0]);
    let larger_original = run([1024.0, 1024.0, 0.0, 0.0, 64.0, 64.0]);
    assert_eq!(target, run([64.0, 64.0, 0.0, 0.0, 64.0, 64.0]));
    assert_ne!(target, cropped, "the crop ids are ignored");
    assert_ne!(target, larger_original, "the original size ids are ignored");

    let missing = unet.forward(&latents, 500.0, &hidden, None).unwrap_err();
    assert!(missing.to_string().contains("text_time"), "{missing}");
}

#[test]
fn sdxl_batch_matches_single_seeds() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    let pipeline = load(dir.path());
    let base = input(&pipeline, "a (red circle:1.3) left of a blue square", 40);
    assert!(base.guidance_scale > 1.0, "the test needs guidance");

    // With guidance the batch rows are [unconditional x 2, conditional x 2],
    // and the pooled embeddings and size ids must follow the same order.
    let (batch, _) = pipeline.generate_batch(&base, 2, &mut |_| true).unwrap();
    for (index, image) in batch.iter().enumerate() {
        let single = generate(
            &pipeline,
            &GenerationInput {
                seed: base.seed + index as u64,
                ..base.clone()
            },
        );
        let max_difference = image
            .as_raw()
            .iter()
            .zip(single.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        // Batched matrix products may round differently from single ones.
        assert!(max_difference <= 1, "image {index}: {max_difference}");
    }
}

#[test]
fn sdxl_img2img_low_strength_is_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    let pipeline = load(dir.path());
    let init = RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 128])
    });
    let with_strength = |strength: f64| GenerationInput {
        init: Some((init.clone(), strength)),
        ..input(&pipeline, PROMPT, 6)
    };
    // No denoising step runs below 1 / steps, so both are the VAE round trip.
    let low = generate(&pipeline, &with_strength(0.1));
    let lower = generate(&pipeline, &with_strength(0.01));
    assert_eq!(low, lower);
    let full = generate(&pipeline, &with_strength(1.0));
    assert_ne!(low, full);
}

#[test]
fn missing_text_encoder_2_config_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    std::fs::remove_file(dir.path().join("text_encoder_2/config.json")).unwrap();
    let message = open_error(dir.path());
    assert!(
        message.contains("missing text_encoder_2/config.json"),
        "{message}"
    );
    assert!(message.contains("addition_embed_type"), "{message}");
}

#[test]
fn missing_sdxl_weights_named() {
    for file in [
        "text_encoder_2/model.safetensors",
        "tokenizer_2/tokenizer.json",
    ] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), TinyFamily::Sdxl);
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let message = open_error(dir.path());
        assert!(message.contains(&format!("missing {file}")), "{message}");
    }
}

#[test]
fn unsupported_addition_embed_type_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    edit_json(dir.path(), "unet/config.json", |config| {
        config["addition_embed_type"] = "image".into();
    });
    let message = open_error(dir.path());
    assert!(message.contains("unet/config.json"), "{message}");
    assert!(message.contains("addition_embed_type = image"), "{message}");
    assert!(message.contains("text_time"), "{message}");
}

#[test]
fn text_time_without_sizes_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    edit_json(dir.path(), "unet/config.json", |config| {
        config["addition_time_embed_dim"] = serde_json::Value::Null;
    });
    let message = open_error(dir.path());
    assert!(message.contains("unet/config.json"), "{message}");
    assert!(message.contains("addition_time_embed_dim"), "{message}");
}

#[test]
fn projection_input_dim_mismatch_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    edit_json(dir.path(), "unet/config.json", |config| {
        config["projection_class_embeddings_input_dim"] = 2816.into();
    });
    let message = open_error(dir.path());
    assert!(
        message.contains("projection_class_embeddings_input_dim = 2816"),
        "{message}"
    );
    assert!(message.contains("= 80"), "{message}");
}

#[test]
fn sdxl_cross_attention_dim_mismatch_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    edit_json(dir.path(), "unet/config.json", |config| {
        config["cross_attention_dim"] = 32.into();
    });
    let message = open_error(dir.path());
    assert!(message.contains("cross_attention_dim = 32"), "{message}");
    assert!(message.contains("hidden_size (64)"), "{message}");
}

#[test]
fn mismatched_sequence_lengths_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    edit_json(dir.path(), "text_encoder_2/config.json", |config| {
        config["max_position_embeddings"] = 16.into();
    });
    let message = open_error(dir.path());
    assert!(message.contains("text_encoder_2/config.json"), "{message}");
    assert!(
        message.contains("max_position_embeddings = 16"),
        "{message}"
    );
}

#[test]
fn class_conditioned_unet_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sd1);
    edit_json(dir.path(), "unet/config.json", |config| {
        config["class_embed_type"] = "timestep".into();
    });
    let message = open_error(dir.path());
    assert!(message.contains("class_embed_type = timestep"), "{message}");
}

#[test]
fn weighted_ids_match_plain_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    redraft_common::tokenizer::build_word_level(SCENE_WORDS)
        .save(&path, false)
        .unwrap();
    let tokenizer = PromptTokenizer::from_file(&path, 16).unwrap();

    let segments = parse_weighted("prompt", "a (red circle:1.4) left of [a blue] square").unwrap();
    let (ids, weights) = weighted_token_ids(&tokenizer, &segments).unwrap();
    let plain = tokenizer
        .encode("a red circle left of a blue square")
        .unwrap();
    assert_eq!(ids, plain);
    let expected: Vec<f32> = [
        1.0, // start
        1.0, // a
        1.4, // red
        1.4, // circle
        1.0, // left
        1.0, // of
        (1.0 / 1.1) as f32,
        (1.0 / 1.1) as f32,
        1.0, // square
        1.0, // end
    ]
    .into_iter()
    .chain(std::iter::repeat_n(1.0, 6))
    .collect();
    assert_eq!(weights, expected);

    // A prompt longer than the sequence keeps the end token last.
    let long = "(red:1.2) ".repeat(20);
    let (ids, weights) =
        weighted_token_ids(&tokenizer, &parse_weighted("prompt", &long).unwrap()).unwrap();
    assert_eq!(ids.len(), 16);
    assert_eq!(ids, tokenizer.encode(&"red ".repeat(20)).unwrap());
    assert_eq!(weights[15], 1.0);
    assert_eq!(weights[14], 1.2);
}

#[test]
fn unit_weight_matches_plain_prompt() {
    for tiny in [TinyFamily::Sd1, TinyFamily::Sd2, TinyFamily::Sdxl] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), tiny);
        let pipeline = load(dir.path());
        let plain = generate(&pipeline, &input(&pipeline, PROMPT, 8));
        let unit = generate(
            &pipeline,
            &input(&pipeline, "a (red circle:1) left of a blue square", 8),
        );
        assert_eq!(plain, unit, "{tiny:?}: weight 1 changes the image");

        let stronger = generate(
            &pipeline,
            &input(&pipeline, "a (red circle:1.8) left of a blue square", 8),
        );
        assert_ne!(plain, stronger, "{tiny:?}: weight 1.8 changes nothing");
        let emphasised = generate(
            &pipeline,
            &input(&pipeline, "a ((red circle)) left of a blue square", 8),
        );
        assert_ne!(plain, emphasised, "{tiny:?}: (( )) changes nothing");
        assert_ne!(stronger, emphasised, "{tiny:?}: 1.21 and 1.8 match");
    }
}

#[test]
fn weighted_negative_prompt_changes_image() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sd1);
    let pipeline = load(dir.path());
    let with_negative = |negative: &str| GenerationInput {
        negative_prompt: negative.to_string(),
        ..input(&pipeline, PROMPT, 2)
    };
    let plain = generate(&pipeline, &with_negative("a green triangle"));
    let weighted = generate(&pipeline, &with_negative("a (green triangle:2)"));
    assert_ne!(plain, weighted);
}

#[test]
fn bad_weighting_names_field() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sdxl);
    let pipeline = load(dir.path());
    let number = "a number from 0 to 3";
    let balanced = "close every ( with )";
    let cases = [
        (
            input(&pipeline, "a (red circle", 1),
            "prompt",
            "unclosed ( at character 3",
            balanced,
        ),
        (
            input(&pipeline, "a (red circle:4) square", 1),
            "prompt",
            "weight 4",
            number,
        ),
        (
            input(&pipeline, "a (red circle:big) square", 1),
            "prompt",
            "weight \"big\"",
            number,
        ),
        (
            GenerationInput {
                negative_prompt: "blurry]".to_string(),
                ..input(&pipeline, PROMPT, 1)
            },
            "negative_prompt",
            "unmatched ]",
            balanced,
        ),
    ];
    for (input, field, value, limit) in cases {
        let error = pipeline.generate(&input, &mut |_| true).unwrap_err();
        let GeneratorError::InvalidArgument(invalid) = &error else {
            panic!(
                "{:?}: expected an invalid argument, got {error}",
                input.prompt
            );
        };
        assert_eq!(invalid.field, field, "{error}");
        assert!(invalid.value.contains(value), "{error}");
        assert!(invalid.limit.contains(limit), "{error}");
    }
}

#[test]
fn clip_text_matches_candle() {
    use candle_transformers::models::clip::text_model::{
        Activation, ClipTextConfig, ClipTextTransformer,
    };

    // candle's own CLIP text model reads the same QuickGELU weights, so both
    // must agree on the last hidden state.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), TinyFamily::Sd1);
    let folder = ModelFolder::open(dir.path()).unwrap();
    let config = &folder.text_encoder;
    let tensors =
        candle_core::safetensors::load(folder.file("text_encoder/model.safetensors"), &Device::Cpu)
            .unwrap();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let ours = ClipTextModel::new(vb.clone(), config, false).unwrap();
    let candle_config = ClipTextConfig {
        vocab_size: config.vocab_size,
        embed_dim: config.hidden_size,
        activation: Activation::QuickGelu,
        intermediate_size: config.intermediate_size,
        max_position_embeddings: config.max_position_embeddings,
        pad_with: None,
        num_hidden_layers: config.num_hidden_layers,
        num_attention_heads: config.num_attention_heads,
        projection_dim: config.hidden_size,
    };
    let reference = ClipTextTransformer::new(vb.pp("text_model"), &candle_config).unwrap();

    let ids = Tensor::new(&[[2u32, 3, 40, 60, 20, 94, 0, 0]], &Device::Cpu).unwrap();
    let expected = reference.forward_with_mask(&ids, usize::MAX).unwrap();
    let actual = ours.forward(&ids).unwrap().last_hidden_state;
    let difference = (actual - expected)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(difference < 1e-4, "max difference {difference}");
}

#[test]
fn unet_matches_candle_without_text_time() {
    use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel;

    // Without the added embedding our UNet is candle's, block for block.
    for tiny in [TinyFamily::Sd1, TinyFamily::Sd2] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), tiny);
        let folder = ModelFolder::open(dir.path()).unwrap();
        let tensors = candle_core::safetensors::load(
            folder.file("unet/diffusion_pytorch_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let ours = Unet::new(vb.clone(), folder.unet_channels, folder.unet.clone(), None).unwrap();
        assert!(!ours.needs_text_time());
        let reference = UNet2DConditionModel::new(vb, 4, 4, false, folder.unet.clone()).unwrap();

        // 6x10 latents are not divisible by the down-sampling, which
        // exercises the explicit up-sampling sizes.
        for (height, width) in [(8, 8), (6, 10)] {
            let latents = Tensor::randn(0f32, 1.0, (2, 4, height, width), &Device::Cpu).unwrap();
            let hidden = Tensor::randn(0f32, 1.0, (2, 32, 32), &Device::Cpu).unwrap();
            let expected = reference.forward(&latents, 321.0, &hidden).unwrap();
            let actual = ours.forward(&latents, 321.0, &hidden, None).unwrap();
            assert_eq!(actual.dims(), expected.dims(), "{tiny:?}");
            let difference = (actual - expected)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                difference < 1e-4,
                "{tiny:?} {height}x{width}: max difference {difference}"
            );
        }
    }
}

/// A VarBuilder backend that records every tensor name and shape a model
/// requests and returns zero-stride views of one zero, so full-size
/// models can be built without their memory.
/// Tensor names with their shapes, in the order a model requested them.
type RecordedShapes = Vec<(String, Vec<usize>)>;

#[derive(Clone, Default)]
struct ShapeRecorder {
    shapes: std::sync::Arc<std::sync::Mutex<RecordedShapes>>,
}

impl candle_nn::var_builder::SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.shapes
            .lock()
            .unwrap()
            .push((name.to_string(), shape.dims().to_vec()));
        Tensor::zeros(1, dtype, device)?
            .reshape(vec![1; shape.rank()])?
            .broadcast_as(shape)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!("{name} needs a shape")))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        name.starts_with("text_model.")
    }
}

/// Builds a model on a [`ShapeRecorder`] and returns the recorded shapes by name.
fn record_shapes(
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> std::collections::BTreeMap<String, Vec<usize>> {
    let recorder = ShapeRecorder::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu);
    build(vb).unwrap();
    let shapes = recorder.shapes.lock().unwrap().clone();
    shapes.into_iter().collect()
}

/// Writes the json configs of SDXL 1.0 base (stabilityai/stable-diffusion-xl-base-1.0)
/// with empty weight files, which `ModelFolder::open` only checks for existence.
fn write_full_size_sdxl_configs(dir: &Path) {
    let text_encoder = |hidden: usize, layers: usize, heads: usize, act: &str, arch: &str| {
        serde_json::json!({
            "architectures": [arch],
            "vocab_size": 49408,
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "max_position_embeddings": 77,
            "hidden_act": act,
            "projection_dim": hidden,
            "layer_norm_eps": 1e-5,
        })
    };
    let files = [
        (
            "model_index.json",
            serde_json::json!({
                "_class_name": "StableDiffusionXLPipeline",
                "force_zeros_for_empty_prompt": true,
            }),
        ),
        (
            "text_encoder/config.json",
            text_encoder(768, 12, 12, "quick_gelu", "CLIPTextModel"),
        ),
        (
            "text_encoder_2/config.json",
            text_encoder(1280, 32, 20, "gelu", "CLIPTextModelWithProjection"),
        ),
        (
            "unet/config.json",
            serde_json::json!({
                "addition_embed_type": "text_time",
                "addition_time_embed_dim": 256,
                "attention_head_dim": [5, 10, 20],
                "block_out_channels": [320, 640, 1280],
                "class_embed_type": null,
                "cross_attention_dim": 2048,
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "flip_sin_to_cos": true,
                "freq_shift": 0,
                "in_channels": 4,
                "layers_per_block": 2,
                "norm_eps": 1e-5,
                "norm_num_groups": 32,
                "num_attention_heads": null,
                "out_channels": 4,
                "projection_class_embeddings_input_dim": 2816,
                "sample_size": 128,
                "time_cond_proj_dim": null,
                "transformer_layers_per_block": [1, 2, 10],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                "use_linear_projection": true,
            }),
        ),
        (
            "vae/config.json",
            serde_json::json!({
                "block_out_channels": [128, 256, 512, 512],
                "in_channels": 3,
                "out_channels": 3,
                "latent_channels": 4,
                "layers_per_block": 2,
                "norm_num_groups": 32,
                "scaling_factor": 0.13025,
            }),
        ),
        (
            "scheduler/scheduler_config.json",
            serde_json::json!({
                "_class_name": "EulerDiscreteScheduler",
                "beta_end": 0.012,
                "beta_schedule": "scaled_linear",
                "beta_start": 0.00085,
                "num_train_timesteps": 1000,
                "prediction_type": "epsilon",
                "steps_offset": 1,
                "timestep_spacing": "leading",
            }),
        ),
    ];
    for (file, value) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, value.to_string()).unwrap();
    }
    for file in [
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer_2/tokenizer.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
}

#[test]
fn full_size_sdxl_matches_diffusers_shapes() {
    let dir = tempfile::tempdir().unwrap();
    write_full_size_sdxl_configs(dir.path());
    let folder = ModelFolder::open(dir.path()).unwrap();
    assert_eq!(folder.family, ModelFamily::Sdxl);
    let unet = record_shapes(|vb| {
        Unet::new(
            vb,
            folder.unet_channels,
            folder.unet.clone(),
            folder.unet_text_time,
        )
        .map(drop)
    });
    let first = record_shapes(|vb| ClipTextModel::new(vb, &folder.text_encoder, false).map(drop));
    let second = record_shapes(|vb| {
        ClipTextModel::new(vb, folder.text_encoder_2.as_ref().unwrap(), true).map(drop)
    });

    // Tensor and parameter counts of SDXL 1.0 base's diffusers UNet and
    // transformers text encoders, as PyTorch reports them (len(state_dict()),
    // sum(p.numel())). Equal counts mean every tensor has a matching shape.
    let parameters = |shapes: &std::collections::BTreeMap<String, Vec<usize>>| -> usize {
        shapes
            .values()
            .map(|dims| dims.iter().product::<usize>())
            .sum()
    };
    assert_eq!((unet.len(), parameters(&unet)), (1680, 2_567_463_684));
    assert_eq!((first.len(), parameters(&first)), (196, 123_060_480));
    assert_eq!((second.len(), parameters(&second)), (517, 694_659_840));

    // The added embedding reads the 1280-wide pooled output and 6 x 256 size channels.
    assert_eq!(unet["add_embedding.linear_1.weight"], [1280, 2816]);
    assert_eq!(
        unet["down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight"],
        [1280, 2048]
    );
    assert_eq!(second["text_projection.weight"], [1280, 1280]);
    assert!(second.contains_key("text_model.encoder.layers.31.mlp.fc2.weight"));
}
