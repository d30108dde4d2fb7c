//! The redraft orchestrator: owns every job's state, runs the self-review
//! loop over pools of generator and critic replicas, and serves
//! `redraft.v1.Orchestrator` over gRPC.

mod calls;
pub mod config;
pub mod discovery;
mod error;
pub mod metrics;
pub mod pool;
pub mod runner;
pub mod service;
pub mod spec;
pub mod store;
pub mod strategy;

use std::sync::Arc;
use std::time::Duration;

use redraft_common::serving::{self, BoundAddrs};
use redraft_proto::orchestrator_server::OrchestratorServer;
use tokio_util::sync::CancellationToken;

pub use config::OrchestratorArgs;
pub use error::OrchestratorError;

use pool::Pool;
use runner::Runner;
use service::OrchestratorService;
use spec::SpecLimits;
use store::JobStore;

/// Name of the gRPC service, as health checks and reflection list it.
pub const SERVICE_NAME: &str = "redraft.v1.Orchestrator";

/// gRPC service name of the generator replicas.
pub const GENERATOR_SERVICE: &str = "redraft.v1.Generator";

/// gRPC service name of the critic replicas.
pub const CRITIC_SERVICE: &str = "redraft.v1.Critic";

/// A started orchestrator server.
pub struct Started {
    /// Bound gRPC address.
    pub grpc_addr: std::net::SocketAddr,
    /// Bound metrics address.
    pub metrics_addr: std::net::SocketAddr,
    /// Cancel to stop the server gracefully.
    pub shutdown: CancellationToken,
    /// The server task; it ends after `shutdown` is cancelled.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Runs the orchestrator until SIGTERM or Ctrl-C. It reports SERVING while
/// at least one generator and one critic replica are healthy.
pub async fn run(args: OrchestratorArgs) -> anyhow::Result<()> {
    let started = start(args, Arc::new(discovery::SystemResolver)).await?;
    BoundAddrs {
        grpc: started.grpc_addr,
        metrics: started.metrics_addr,
    }
    .announce();
    let shutdown = started.shutdown.clone();
    let mut task = started.task;
    tokio::select! {
        outcome = &mut task => return outcome?,
        _ = serving::shutdown_signal() => shutdown.cancel(),
    }
    task.await??;
    tracing::info!("orchestrator stopped");
    Ok(())
}

/// Binds and starts the orchestrator with `resolver` for `dns:///` replica
/// addresses, and returns once it accepts connections.
pub async fn start(
    args: OrchestratorArgs,
    resolver: Arc<dyn discovery::Resolver>,
) -> anyhow::Result<Started> {
    args.validate()?;
    tracing::info!(config = ?args, "starting the orchestrator");
    let metrics_addr =
        redraft_common::telemetry::install_metrics_exporter(args.telemetry.metrics_addr)?;
    metrics::describe();
    let (listener, grpc_addr) = serving::bind(args.listen).await?;
    let (reporter, health) = serving::health_service(SERVICE_NAME).await;
    tracing::info!(%grpc_addr, %metrics_addr, generators = ?args.generators, critics = ?args.critics, "orchestrator listening");

    let health_changed = Arc::new(tokio::sync::Notify::new());
    let retry = Duration::from_secs_f64(args.health_retry_seconds);
    let new_pool = |kind, service, addresses: &[String]| {
        Pool::new(
            kind,
            service,
            addresses,
            resolver.clone(),
            health_changed.clone(),
            retry,
        )
        .map(Arc::new)
    };
    let generators =
        new_pool("generator", GENERATOR_SERVICE, &args.generators).map_err(anyhow::Error::msg)?;
    let critics = new_pool("critic", CRITIC_SERVICE, &args.critics).map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    let interval = Duration::from_secs_f64(args.resolve_interval_seconds);
    for pool in [&generators, &critics] {
        pool.refresh().await;
        pool.follow(interval, shutdown.clone());
    }

    let store = Arc::new(JobStore::new(args.max_stored_jobs));
    let (queue, queue_receiver) = tokio::sync::mpsc::channel(args.queue_capacity);
    Runner::new(store.clone(), generators.clone(), critics.clone())
        .start_workers(args.concurrent_jobs, queue_receiver);

    let limits = SpecLimits {
        max_prompt_chars: args.max_prompt_chars as usize,
        max_side: args.max_image_side,
        max_steps: args.max_steps,
        max_iterations: args.max_iterations,
        max_candidates: args.max_candidates,
        max_generator_calls: args.max_generator_calls,
        max_deadline_seconds: args.max_deadline_seconds,
    };
    let service = OrchestratorService::new(
        store,
        queue,
        args.queue_capacity,
        limits,
        generators.clone(),
        critics.clone(),
    );

    // Report SERVING while both pools have a healthy replica.
    let pools = (generators.clone(), critics.clone());
    let stop_reporting = shutdown.clone();
    tokio::spawn(async move {
        let (generators, critics) = pools;
        let mut serving = false;
        loop {
            let changed = health_changed.notified();
            let ready = generators.any_healthy() && critics.any_healthy();
            if ready != serving {
                serving = ready;
                serving::set_serving(&reporter, SERVICE_NAME, serving).await;
                tracing::info!(serving, "orchestrator health changed");
            }
            tokio::select! {
                _ = changed => {}
                _ = stop_reporting.cancelled() => break,
            }
        }
    });

    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(serving::reflection_service()?)
        .add_service(
            OrchestratorServer::new(service)
                .max_decoding_message_size(calls::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(calls::MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.clone().cancelled_owned(),
        );
    let stop_pools = shutdown.clone();
    let task = tokio::spawn(async move {
        let outcome = server.await;
        stop_pools.cancel();
        generators.shutdown();
        critics.shutdown();
        outcome.map_err(Into::into)
    });
    Ok(Started {
        grpc_addr,
        metrics_addr,
        shutdown,
        task,
    })
}
