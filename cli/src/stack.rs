//! A local stack of actors (generators, critics, orchestrator) as child
//! processes, as `redraft up` and `redraft generate` run them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::launcher::{ActorSpec, Launcher, RunningActor};
use crate::models::ModelPaths;

/// The actors to start.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Model folders.
    pub models: ModelPaths,
    /// Generator replicas.
    pub generators: usize,
    /// Critic replicas.
    pub critics: usize,
    /// Orchestrator gRPC address.
    pub orchestrator_listen: SocketAddr,
    /// Extra orchestrator flags.
    pub orchestrator_args: Vec<String>,
}

/// Started actors, orchestrator last.
pub struct Stack {
    /// Every actor, in start order.
    pub actors: Vec<RunningActor>,
    /// Orchestrator gRPC URL.
    pub orchestrator_url: String,
}

/// Starts the stack: generators and critics side by side on free loopback
/// ports, then the orchestrator pointed at them. On failure, every started
/// actor is stopped.
pub async fn start(launcher: &Launcher, config: &StackConfig) -> anyhow::Result<Stack> {
    let path_arg = |path: &PathBuf| path.display().to_string();
    let mut specs = Vec::new();
    for index in 0..config.generators {
        specs.push(ActorSpec {
            role: "generator",
            name: format!("generator-{}", index + 1),
            service: redraft_generator::SERVICE_NAME,
            args: vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--metrics-addr".into(),
                "127.0.0.1:0".into(),
                "--model".into(),
                path_arg(&config.models.generator),
            ],
        });
    }
    for index in 0..config.critics {
        specs.push(ActorSpec {
            role: "critic",
            name: format!("critic-{}", index + 1),
            service: redraft_critic::SERVICE_NAME,
            args: vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--metrics-addr".into(),
                "127.0.0.1:0".into(),
                "--model".into(),
                path_arg(&config.models.critic),
            ],
        });
    }

    let started = start_all(launcher, &specs).await;
    let mut actors = Vec::new();
    let mut failure = None;
    for outcome in started {
        match outcome {
            Ok(actor) => actors.push(actor),
            Err(error) => failure = failure.or(Some(error)),
        }
    }
    if let Some(error) = failure {
        launcher.stop_all(&mut actors).await;
        return Err(error);
    }

    let mut args = vec![
        "--listen".to_string(),
        config.orchestrator_listen.to_string(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
    ];
    for actor in &actors {
        let flag = if actor.name.starts_with("generator") {
            "--generator"
        } else {
            "--critic"
        };
        args.push(flag.to_string());
        args.push(actor.url());
    }
    args.extend(config.orchestrator_args.iter().cloned());
    let orchestrator = ActorSpec {
        role: "orchestrator",
        name: "orchestrator".to_string(),
        service: redraft_orchestrator::SERVICE_NAME,
        args,
    };
    match launcher.start(&orchestrator).await {
        Ok(actor) => {
            let orchestrator_url = actor.url();
            actors.push(actor);
            Ok(Stack {
                actors,
                orchestrator_url,
            })
        }
        Err(error) => {
            launcher.stop_all(&mut actors).await;
            Err(error)
        }
    }
}

/// Starts every spec concurrently and returns the outcomes in spec order.
async fn start_all(launcher: &Launcher, specs: &[ActorSpec]) -> Vec<anyhow::Result<RunningActor>> {
    futures::future::join_all(specs.iter().map(|spec| launcher.start(spec))).await
}

/// Waits until any actor exits, and returns its name and exit status.
pub async fn first_exit(actors: &mut [RunningActor]) -> (String, String) {
    if actors.is_empty() {
        return std::future::pending().await;
    }
    let waits = actors.iter_mut().map(|actor| {
        Box::pin(async move {
            let status = match actor.wait().await {
                Ok(status) => status.to_string(),
                Err(error) => error.to_string(),
            };
            (actor.name.clone(), status)
        })
    });
    futures::future::select_all(waits).await.0
}

/// Default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
