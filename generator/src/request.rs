//! Validation of `GenerateRequest`s against the model's limits.

use redraft_common::InvalidArgument;
use redraft_common::invalid::check_prompt;
use redraft_proto::GenerateRequest;

use crate::pipeline::GenerationInput;
use crate::scheduler::SchedulerKind;

/// Largest accepted guidance scale; far above any useful value.
pub const MAX_GUIDANCE_SCALE: f32 = 50.0;

/// Limits and defaults a request is checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest width or height in pixels.
    pub max_side: usize,
    /// Sides must be a multiple of this.
    pub side_multiple: usize,
    /// Largest number of steps.
    pub max_steps: usize,
    /// Maximum prompt length in characters.
    pub max_prompt_chars: usize,
    /// Side used when a request gives 0.
    pub default_side: usize,
    /// Steps used when a request gives 0.
    pub default_steps: usize,
    /// Guidance scale used when a request leaves it unset.
    pub default_guidance_scale: f64,
    /// Scheduler used when a request leaves it empty.
    pub default_scheduler: SchedulerKind,
    /// Largest accepted `num_images`.
    pub max_images: usize,
    /// Largest number of images denoised in one UNet batch, as reported in `Info`.
    pub max_batch: usize,
}

/// Checks `request` and fills in defaults. Returns the pipeline input and
/// the request as resolved, whose `num_images` is always set (see
/// [`image_count`]).
pub fn resolve(
    request: &GenerateRequest,
    limits: &Limits,
) -> Result<(GenerationInput, GenerateRequest), InvalidArgument> {
    check_prompt("prompt", &request.prompt, limits.max_prompt_chars)?;
    let negative_chars = request.negative_prompt.chars().count();
    if negative_chars > limits.max_prompt_chars {
        return Err(InvalidArgument::new(
            "negative_prompt",
            format!("text of {negative_chars} characters"),
            format!("at most {} characters", limits.max_prompt_chars),
        ));
    }
    // Reject bad weighting syntax here, before the request waits in the queue.
    crate::weighting::parse_weighted("prompt", &request.prompt)?;
    crate::weighting::parse_weighted("negative_prompt", &request.negative_prompt)?;

    // Decode the init image first: its size is the default image size.
    let init_image = match &request.init_image {
        Some(image) => Some(redraft_common::images::decode_png(
            "init_image",
            &image.png,
            image.width,
            image.height,
            limits.max_side as u32,
        )?),
        None => None,
    };
    let (default_width, default_height) = match &init_image {
        Some(image) => (image.width() as usize, image.height() as usize),
        None => (limits.default_side, limits.default_side),
    };
    let width = check_side("width", request.width, default_width, limits)?;
    let height = check_side("height", request.height, default_height, limits)?;

    let steps = match request.steps {
        None => limits.default_steps,
        Some(steps) if steps == 0 || steps as usize > limits.max_steps => {
            return Err(InvalidArgument::new(
                "steps",
                steps,
                format!("from 1 to {}", limits.max_steps),
            ));
        }
        Some(steps) => steps as usize,
    };

    let guidance_scale = match request.guidance_scale {
        None => limits.default_guidance_scale,
        Some(scale) if !(0.0..=MAX_GUIDANCE_SCALE).contains(&scale) => {
            return Err(InvalidArgument::new(
                "guidance_scale",
                scale,
                format!("from 0 to {MAX_GUIDANCE_SCALE}"),
            ));
        }
        Some(scale) => scale as f64,
    };

    let scheduler = if request.scheduler.is_empty() {
        limits.default_scheduler
    } else {
        SchedulerKind::from_name(&request.scheduler).ok_or_else(|| {
            let names: Vec<&str> = SchedulerKind::ALL.iter().map(|kind| kind.name()).collect();
            InvalidArgument::new(
                "scheduler",
                format!("{:?}", request.scheduler),
                format!("one of {}", names.join(", ")),
            )
        })?
    };

    let init = match init_image {
        None if request.strength != 0.0 => {
            return Err(InvalidArgument::new(
                "strength",
                request.strength,
                "0 unless init_image is set",
            ));
        }
        None => None,
        Some(image) => {
            if !(request.strength > 0.0 && request.strength <= 1.0) {
                return Err(InvalidArgument::new(
                    "strength",
                    request.strength,
                    "in (0, 1] when init_image is set",
                ));
            }
            if (image.width() as usize, image.height() as usize) != (width, height) {
                return Err(InvalidArgument::new(
                    "init_image",
                    format!("an image of {}x{}", image.width(), image.height()),
                    format!("the requested size {width}x{height}"),
                ));
            }
            Some((image, request.strength as f64))
        }
    };

    let num_images = match request.num_images {
        None => 1,
        Some(count) if count == 0 || count as usize > limits.max_images => {
            return Err(InvalidArgument::new(
                "num_images",
                count,
                format!("from 1 to {}", limits.max_images),
            ));
        }
        Some(count) => count,
    };

    let seed = request.seed.unwrap_or_else(rand::random);
    let resolved = GenerateRequest {
        prompt: request.prompt.clone(),
        negative_prompt: request.negative_prompt.clone(),
        seed: Some(seed),
        width: width as u32,
        height: height as u32,
        steps: Some(steps as u32),
        guidance_scale: Some(guidance_scale as f32),
        scheduler: scheduler.name().to_string(),
        init_image: None,
        strength: request.strength,
        request_id: request.request_id.clone(),
        num_images: Some(num_images),
    };
    let input = GenerationInput {
        prompt: request.prompt.clone(),
        negative_prompt: request.negative_prompt.clone(),
        seed,
        width,
        height,
        steps,
        guidance_scale,
        scheduler,
        init,
    };
    Ok((input, resolved))
}

/// Number of images a resolved request asks for.
pub fn image_count(resolved: &GenerateRequest) -> usize {
    resolved.num_images.unwrap_or(1) as usize
}

fn check_side(
    field: &str,
    value: u32,
    default: usize,
    limits: &Limits,
) -> Result<usize, InvalidArgument> {
    if value == 0 {
        return Ok(default);
    }
    let value = value as usize;
    if !value.is_multiple_of(limits.side_multiple) || value > limits.max_side {
        return Err(InvalidArgument::new(
            field,
            value,
            format!(
                "a multiple of {} from {} to {}",
                limits.side_multiple, limits.side_multiple, limits.max_side
            ),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_side: 256,
            side_multiple: 16,
            max_steps: 50,
            max_prompt_chars: 100,
            default_side: 64,
            default_steps: 4,
            default_guidance_scale: 2.0,
            default_scheduler: SchedulerKind::Ddim,
            max_images: 4,
            max_batch: 2,
        }
    }

    fn request() -> GenerateRequest {
        GenerateRequest {
            prompt: "a red circle".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_filled_in() {
        let (input, resolved) = resolve(&request(), &limits()).unwrap();
        assert_eq!((input.width, input.height, input.steps), (64, 64, 4));
        assert_eq!(input.guidance_scale, 2.0);
        assert_eq!(resolved.seed, Some(input.seed));
        assert_eq!(resolved.scheduler, "ddim");
        assert_eq!(resolved.num_images, Some(1));
        assert_eq!(image_count(&resolved), 1);
    }

    #[test]
    fn num_images_within_limit() {
        let many = GenerateRequest {
            num_images: Some(4),
            ..request()
        };
        let (_, resolved) = resolve(&many, &limits()).unwrap();
        assert_eq!(image_count(&resolved), 4);
        for count in [0, 5] {
            let error = resolve(
                &GenerateRequest {
                    num_images: Some(count),
                    ..request()
                },
                &limits(),
            )
            .unwrap_err();
            assert_eq!(error.field, "num_images");
            assert_eq!(error.value, count.to_string());
            assert_eq!(error.limit, "from 1 to 4");
        }
    }

    #[test]
    fn ddpm_scheduler_accepted() {
        let ddpm = GenerateRequest {
            scheduler: "ddpm".to_string(),
            ..request()
        };
        let (input, resolved) = resolve(&ddpm, &limits()).unwrap();
        assert_eq!(input.scheduler, SchedulerKind::Ddpm);
        assert_eq!(resolved.scheduler, "ddpm");
    }

    #[test]
    fn bad_fields_named() {
        let cases: Vec<(GenerateRequest, &str)> = vec![
            (
                GenerateRequest {
                    prompt: String::new(),
                    ..request()
                },
                "prompt",
            ),
            (
                GenerateRequest {
                    prompt: "x".repeat(101),
                    ..request()
                },
                "prompt",
            ),
            (
                GenerateRequest {
                    negative_prompt: "x".repeat(101),
                    ..request()
                },
                "negative_prompt",
            ),
            (
                GenerateRequest {
                    prompt: "a (red circle".to_string(),
                    ..request()
                },
                "prompt",
            ),
            (
                GenerateRequest {
                    prompt: "a (red:9) circle".to_string(),
                    ..request()
                },
                "prompt",
            ),
            (
                GenerateRequest {
                    negative_prompt: "blue)".to_string(),
                    ..request()
                },
                "negative_prompt",
            ),
            (
                GenerateRequest {
                    width: 100,
                    ..request()
                },
                "width",
            ),
            (
                GenerateRequest {
                    height: 512,
                    ..request()
                },
                "height",
            ),
            (
                GenerateRequest {
                    steps: Some(0),
                    ..request()
                },
                "steps",
            ),
            (
                GenerateRequest {
                    steps: Some(51),
                    ..request()
                },
                "steps",
            ),
            (
                GenerateRequest {
                    guidance_scale: Some(-1.0),
                    ..request()
                },
                "guidance_scale",
            ),
            (
                GenerateRequest {
                    guidance_scale: Some(f32::NAN),
                    ..request()
                },
                "guidance_scale",
            ),
            (
                GenerateRequest {
                    scheduler: "pndm".to_string(),
                    ..request()
                },
                "scheduler",
            ),
            (
                GenerateRequest {
                    strength: 0.5,
                    ..request()
                },
                "strength",
            ),
        ];
        for (request, field) in cases {
            let error = resolve(&request, &limits()).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn init_image_checked() {
        let png = redraft_common::images::encode_png(&image::RgbImage::new(32, 32));
        let with_image = |strength| GenerateRequest {
            init_image: Some(redraft_proto::Image {
                png: png.clone(),
                width: 32,
                height: 32,
            }),
            strength,
            ..request()
        };
        let (input, _) = resolve(&with_image(0.5), &limits()).unwrap();
        assert_eq!((input.width, input.height), (32, 32));
        assert_eq!(
            resolve(&with_image(0.0), &limits()).unwrap_err().field,
            "strength"
        );
        assert_eq!(
            resolve(&with_image(1.5), &limits()).unwrap_err().field,
            "strength"
        );
        let garbage = GenerateRequest {
            init_image: Some(redraft_proto::Image {
                png: vec![1, 2, 3],
                width: 32,
                height: 32,
            }),
            strength: 0.5,
            ..request()
        };
        assert_eq!(
            resolve(&garbage, &limits()).unwrap_err().field,
            "init_image.png"
        );
    }
}
