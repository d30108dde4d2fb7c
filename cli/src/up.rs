//! `redraft up`: a generator, a critic and an orchestrator as child processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::LogArgs;
use crate::launcher::Launcher;
use crate::stack::{self, StackConfig};

/// Flags of `redraft up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Orchestrator gRPC address that clients connect to.
    #[arg(long, env = "REDRAFT_LISTEN", default_value = "127.0.0.1:50050")]
    pub listen: SocketAddr,

    /// Generator model folder (diffusers layout). Default: models/shapes-v1/generator, else tiny models.
    #[arg(long, env = "REDRAFT_GENERATOR_MODEL")]
    pub generator_model: Option<PathBuf>,

    /// Critic model folder (HF CLIP layout). Default: models/shapes-v1/critic, else tiny models.
    #[arg(long, env = "REDRAFT_CRITIC_MODEL")]
    pub critic_model: Option<PathBuf>,

    /// Generator replicas to start.
    #[arg(long, env = "REDRAFT_GENERATOR_REPLICAS", default_value_t = 1)]
    pub generators: usize,

    /// Critic replicas to start.
    #[arg(long, env = "REDRAFT_CRITIC_REPLICAS", default_value_t = 1)]
    pub critics: usize,

    /// Seconds each actor may take to load its model and report SERVING.
    #[arg(long, env = "REDRAFT_STARTUP_TIMEOUT_SECONDS", default_value_t = 600.0)]
    pub startup_timeout_seconds: f64,

    /// Seconds between SIGTERM and SIGKILL when stopping an actor.
    #[arg(long, env = "REDRAFT_GRACE_SECONDS", default_value_t = 10.0)]
    pub grace_seconds: f64,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Checks the flags of `up` and builds its launcher.
pub fn launcher(
    startup_timeout_seconds: f64,
    grace_seconds: f64,
    log: &LogArgs,
    child_log_level: &str,
) -> anyhow::Result<Launcher> {
    if startup_timeout_seconds.is_nan() || startup_timeout_seconds <= 0.0 {
        anyhow::bail!(
            "--startup-timeout-seconds {startup_timeout_seconds} is invalid; it must be above 0"
        );
    }
    if grace_seconds.is_nan() || grace_seconds < 0.0 {
        anyhow::bail!("--grace-seconds {grace_seconds} is invalid; it must be 0 or more");
    }
    Ok(Launcher {
        exe: std::env::current_exe()?,
        log_level: child_log_level.to_string(),
        log_format: match log.log_format {
            redraft_common::telemetry::LogFormat::Text => "text".to_string(),
            redraft_common::telemetry::LogFormat::Json => "json".to_string(),
        },
        startup_timeout: Duration::from_secs_f64(startup_timeout_seconds),
        grace: Duration::from_secs_f64(grace_seconds),
    })
}

/// Runs `redraft up` until Ctrl-C, SIGTERM or a child's death.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // Install the signal handlers first, so a signal at any point stops the actors.
    let mut signals = redraft_common::serving::ShutdownSignals::install()?;
    if args.generators == 0 || args.critics == 0 {
        anyhow::bail!(
            "--generators {} and --critics {} must both be at least 1",
            args.generators,
            args.critics
        );
    }
    let launcher = launcher(
        args.startup_timeout_seconds,
        args.grace_seconds,
        &args.log,
        &args.log.log_level,
    )?;
    check_port_free(args.listen)?;
    let models = crate::models::resolve(args.generator_model, args.critic_model)?;
    let config = StackConfig {
        models,
        generators: args.generators,
        critics: args.critics,
        orchestrator_listen: args.listen,
        orchestrator_args: Vec::new(),
    };
    let mut stack = tokio::select! {
        stack = stack::start(&launcher, &config) => stack?,
        signal = signals.recv() => anyhow::bail!("received {signal} while starting; stopped the actors"),
    };
    for actor in &stack.actors {
        println!(
            "{:<14} pid {:<8} grpc {}  metrics http://{}/metrics",
            actor.name,
            actor.pid().map(|pid| pid.to_string()).unwrap_or_default(),
            actor.url(),
            actor.addrs.metrics
        );
    }
    println!("redraft is up: orchestrator at {}", stack.orchestrator_url);
    println!("press Ctrl-C to stop");

    let outcome = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "stopping the actors");
            Ok(())
        }
        (name, status) = stack::first_exit(&mut stack.actors) => {
            Err(anyhow::anyhow!("{name} exited unexpectedly ({status}); stopping the others"))
        }
    };
    launcher.stop_all(&mut stack.actors).await;
    outcome
}

/// Fails early, with the flag named, when the orchestrator's port is taken.
fn check_port_free(listen: SocketAddr) -> anyhow::Result<()> {
    if listen.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(listen).map(drop).map_err(|error| {
        anyhow::anyhow!(
            "--listen {listen} is not available ({error}); stop the server using it or pass another --listen"
        )
    })
}
