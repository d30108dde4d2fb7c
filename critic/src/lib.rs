//! The redraft critic: judges an image against its prompt with a CLIP model
//! and with image-quality checks, served over gRPC as `redraft.v1.Critic`.

pub mod config;
pub mod configs;
pub mod error;
pub mod handset;
pub mod judge;
pub mod model;
pub mod probe;
pub mod prompt;
pub mod quality;
pub mod regions;
pub mod score;
pub mod service;
pub mod tiny;
pub mod vocabulary;
pub mod worker;

use std::sync::Arc;

use candle_core::Device;
use redraft_common::hub::{self, Layout};
use redraft_common::serving::{self, BoundAddrs};
use redraft_proto::critic_server::CriticServer;
use redraft_proto::{CheckKind, CriticInfo};
use tokio::sync::OnceCell;

pub use config::CriticArgs;
pub use error::CriticError;
pub use model::ClipScorer;
pub use score::{Calibration, aggregate, alignment_check, summary};

use judge::Judge;
use service::{CriticService, Loaded};
use worker::JudgeHandle;

/// Name of the gRPC service, as health checks and reflection list it.
pub const SERVICE_NAME: &str = "redraft.v1.Critic";

/// Largest gRPC message the critic accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Runs the critic until SIGTERM or Ctrl-C: binds, announces the bound
/// addresses on stdout, loads and warms up the model (health NOT_SERVING
/// until then), and serves.
pub async fn run(args: CriticArgs) -> anyhow::Result<()> {
    args.validate()?;
    tracing::info!(config = ?args, "starting the critic");
    let metrics_addr =
        redraft_common::telemetry::install_metrics_exporter(args.telemetry.metrics_addr)?;
    worker::describe_metrics();
    let (listener, grpc_addr) = serving::bind(args.listen).await?;
    let (reporter, health) = serving::health_service(SERVICE_NAME).await;
    BoundAddrs {
        grpc: grpc_addr,
        metrics: metrics_addr,
    }
    .announce();
    tracing::info!(%grpc_addr, %metrics_addr, model = %args.model, "critic listening; loading the model");

    let loaded = Arc::new(OnceCell::new());
    let service = CriticServer::new(CriticService::new(
        loaded.clone(),
        args.max_prompt_chars as usize,
        args.max_image_side,
        args.max_batch_images,
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (load_failed_tx, load_failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let load_args = args.clone();
    tokio::spawn(async move {
        match load(&load_args).await {
            Ok(model) => {
                let _ = loaded.set(model);
                serving::set_serving(&reporter, SERVICE_NAME, true).await;
                tracing::info!("critic model loaded and warmed up; serving");
            }
            Err(error) => {
                let _ = load_failed_tx.send(error);
            }
        }
    });

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
        _ = serving::shutdown_signal() => Ok(()),
        Ok(error) = load_failed_rx => Err(error),
    };
    // A model that failed to load ends the process at once: a graceful
    // shutdown would wait for open health Watch streams, which never end.
    outcome?;
    let _ = stop_tx.send(());
    server.await?;
    tracing::info!("critic stopped");
    Ok(())
}

async fn load(args: &CriticArgs) -> anyhow::Result<Loaded> {
    let device = Device::Cpu;
    let dtype = args.dtype.resolve(&device)?;

    // Fetch a hub repo id into the hub cache; a local folder is used as it is.
    let layout = Layout::Clip {
        optional_files: &[score::CALIBRATION_FILE],
    };
    let (source, hub_args) = (args.model.clone(), args.hub.clone());
    let resolved =
        tokio::task::spawn_blocking(move || hub::resolve(&source, layout, &hub_args)).await??;
    let model_dir = resolved.dir.clone();
    let (judge, info) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let scorer = ClipScorer::load(&model_dir, &device, dtype)?;
        let calibration = Calibration::load(&model_dir)?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "critic model loaded"
        );
        let info = CriticInfo {
            model_id: resolved
                .repo
                .unwrap_or_else(|| scorer.model_id().to_string()),
            build: Some(redraft_common::build_info()),
            image_size: scorer.image_size() as u32,
            max_prompt_chars: 0,
            max_image_side: 0,
            max_batch_images: 0,
            check_kinds: [
                CheckKind::Alignment,
                CheckKind::Presence,
                CheckKind::Count,
                CheckKind::Color,
                CheckKind::Relation,
                CheckKind::Quality,
            ]
            .map(i32::from)
            .to_vec(),
            dtype: format!("{:?}", scorer.dtype()).to_lowercase(),
        };
        Ok::<_, CriticError>((Judge::new(scorer, calibration), info))
    })
    .await??;
    let info = CriticInfo {
        max_prompt_chars: args.max_prompt_chars,
        max_image_side: args.max_image_side,
        max_batch_images: args.max_batch_images,
        ..info
    };
    let handle = JudgeHandle::spawn(judge, args.queue_capacity)?;

    // Warm up with one small image so the first request does not pay for lazy set-up.
    let warm_up = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, 128])
    });
    handle
        .critique("a red circle".to_string(), warm_up)
        .await
        .map_err(|error| anyhow::anyhow!("warm-up critique failed: {error}"))?;
    Ok(Loaded { handle, info })
}
