//! The redraft generator: a Stable Diffusion pipeline on candle, loaded from
//! a diffusers-layout folder and served over gRPC as `redraft.v1.Generator`.

pub mod clip_text;
pub mod config;
mod error;
pub mod folder;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod request;
pub mod scheduler;
pub mod service;
pub mod text_encoder;
pub mod tiling;
pub mod tiny;
pub mod unet;
pub mod weighting;
pub mod worker;

use std::sync::Arc;

use candle_core::{DType, Device};
use redraft_common::hub::{self, Layout};
use redraft_common::serving::{self, BoundAddrs};
use redraft_proto::generator_server::GeneratorServer;
use redraft_proto::{GenerateRequest, GeneratorInfo};
use tokio::sync::OnceCell;

pub use config::GeneratorArgs;
pub use error::GeneratorError;

use folder::ModelFolder;
use pipeline::Pipeline;
use request::Limits;
use scheduler::SchedulerKind;
use service::{GeneratorService, Loaded};
use worker::ModelHandle;

/// Name of the gRPC service, as health checks and reflection list it.
pub const SERVICE_NAME: &str = "redraft.v1.Generator";

/// Largest gRPC message the generator accepts or sends (init images, results).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Runs the generator until SIGTERM or Ctrl-C: binds, announces the bound
/// addresses on stdout, loads and warms up the model (health NOT_SERVING
/// until then), and serves.
pub async fn run(args: GeneratorArgs) -> anyhow::Result<()> {
    args.validate()?;
    tracing::info!(config = ?args, "starting the generator");
    let metrics_addr =
        redraft_common::telemetry::install_metrics_exporter(args.telemetry.metrics_addr)?;
    metrics::describe();
    let (listener, grpc_addr) = serving::bind(args.listen).await?;
    let (reporter, health) = serving::health_service(SERVICE_NAME).await;
    BoundAddrs {
        grpc: grpc_addr,
        metrics: metrics_addr,
    }
    .announce();
    tracing::info!(%grpc_addr, %metrics_addr, model = %args.model, "generator listening; loading the model");

    let loaded = Arc::new(OnceCell::new());
    let service = GeneratorServer::new(GeneratorService::new(loaded.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    // Load and warm up off the runtime; a failure stops the server.
    let (load_failed_tx, load_failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let load_args = args.clone();
    tokio::spawn(async move {
        match load(&load_args).await {
            Ok(model) => {
                let _ = loaded.set(model);
                serving::set_serving(&reporter, SERVICE_NAME, true).await;
                tracing::info!("generator model loaded and warmed up; serving");
            }
            Err(error) => {
                let _ = load_failed_tx.send(error);
            }
        }
    });

    let shutdown = async move {
        tokio::select! {
            _ = serving::shutdown_signal() => Ok(()),
            Ok(error) = load_failed_rx => Err(error),
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(serving::reflection_service()?)
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stop_rx.await;
            },
        );
    let mut server = std::pin::pin!(server);
    let outcome = tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        outcome = shutdown => outcome,
    };
    // A model that failed to load ends the process at once: a graceful
    // shutdown would wait for open health Watch streams, which never end.
    outcome?;
    let _ = stop_tx.send(());
    server.await?;
    tracing::info!("generator stopped");
    Ok(())
}

async fn load(args: &GeneratorArgs) -> anyhow::Result<Loaded> {
    let device = args.open_device()?;
    let dtype = args.dtype_for(&device)?;

    // Fetch a hub repo id into the hub cache; a local folder is used as it is.
    let layout = Layout::Diffusers {
        prefer_fp16: dtype == DType::F16,
        optional_files: &[folder::DEFAULTS_FILE],
    };
    let (source, hub_args) = (args.model.clone(), args.hub.clone());
    let resolved =
        tokio::task::spawn_blocking(move || hub::resolve(&source, layout, &hub_args)).await??;
    let model_dir = resolved.dir.clone();
    let load_device = device.clone();
    let memory = args.memory.clone();
    let (pipeline, elapsed) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let folder = ModelFolder::open(&model_dir)?;
        let mut pipeline = Pipeline::load(folder, load_device, dtype)?;
        pipeline.set_vae_tile_size(memory.vae_tile_size as usize);
        pipeline.set_max_batch(memory.max_batch as usize);
        Ok::<_, GeneratorError>((pipeline, started.elapsed()))
    })
    .await??;
    tracing::info!(seconds = elapsed.as_secs_f64(), "generator model loaded");

    let folder = pipeline.folder().clone();
    let limits = Limits {
        max_side: args.max_image_side as usize,
        side_multiple: folder.side_multiple(),
        max_steps: args.max_steps as usize,
        max_prompt_chars: args.max_prompt_chars as usize,
        default_side: folder.default_side().min(args.max_image_side as usize),
        default_steps: folder.defaults.steps.min(args.max_steps as usize),
        default_guidance_scale: folder.defaults.guidance_scale,
        default_scheduler: folder.scheduler.kind,
        max_images: args.memory.max_images as usize,
        max_batch: args.memory.max_batch as usize,
    };
    let mut info = info(&folder, &limits, dtype, &device);
    if let Some(repo) = resolved.repo {
        info.model_id = repo;
    }
    let handle = ModelHandle::spawn(pipeline, args.queue_capacity)?;

    // Warm up with one smallest image, one step, so the first request does not pay for lazy set-up.
    let warm_up = GenerateRequest {
        prompt: "a red circle".to_string(),
        seed: Some(0),
        width: limits.side_multiple as u32,
        height: limits.side_multiple as u32,
        steps: Some(1),
        request_id: "warm-up".to_string(),
        ..Default::default()
    };
    let (input, resolved) = request::resolve(&warm_up, &limits)?;
    handle
        .run_to_completion(input, resolved)
        .await
        .map_err(|status| anyhow::anyhow!("warm-up generation failed: {}", status.message()))?;
    Ok(Loaded {
        handle,
        limits,
        info,
    })
}

fn info(folder: &ModelFolder, limits: &Limits, dtype: DType, device: &Device) -> GeneratorInfo {
    GeneratorInfo {
        model_id: folder.model_id(),
        family: folder.family.name().to_string(),
        build: Some(redraft_common::build_info()),
        max_width: limits.max_side as u32,
        max_height: limits.max_side as u32,
        max_steps: limits.max_steps as u32,
        max_prompt_chars: limits.max_prompt_chars as u32,
        default_width: limits.default_side as u32,
        default_height: limits.default_side as u32,
        default_steps: limits.default_steps as u32,
        default_guidance_scale: limits.default_guidance_scale as f32,
        schedulers: SchedulerKind::ALL
            .iter()
            .map(|kind| kind.name().to_string())
            .collect(),
        default_scheduler: limits.default_scheduler.name().to_string(),
        dtype: format!("{dtype:?}").to_lowercase(),
        device: if device.is_cpu() { "cpu" } else { "gpu" }.to_string(),
        max_images: limits.max_images as u32,
        max_batch: limits.max_batch as u32,
    }
}
