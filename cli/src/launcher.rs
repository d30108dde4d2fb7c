//! Starts actors as child processes, waits for each to report SERVING on
//! gRPC health, and stops them with SIGTERM, a grace period, then SIGKILL.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use redraft_common::serving::BoundAddrs;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Environment variables children inherit; everything else is cleared so
/// that a parent's `REDRAFT_*` settings cannot leak into a child's flags.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "RUST_BACKTRACE",
    "CANDLE_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "XDG_CACHE_HOME",
];

/// How often a still-starting actor gets a log line.
const STILL_WAITING_EVERY: Duration = Duration::from_secs(10);

/// One actor to start.
#[derive(Debug, Clone)]
pub struct ActorSpec {
    /// Subcommand of the redraft binary: "generator", "critic" or "orchestrator".
    pub role: &'static str,
    /// Name for logs, for example "generator-1".
    pub name: String,
    /// gRPC service the actor reports health for.
    pub service: &'static str,
    /// Flags after the subcommand.
    pub args: Vec<String>,
}

/// A started, SERVING actor.
pub struct RunningActor {
    /// Name for logs.
    pub name: String,
    /// Bound addresses.
    pub addrs: BoundAddrs,
    child: Child,
}

impl RunningActor {
    /// The gRPC URL, for example `http://127.0.0.1:50051`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addrs.grpc)
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }
}

/// Settings shared by every child.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The redraft binary that children run.
    pub exe: PathBuf,
    /// Children's LOG_LEVEL.
    pub log_level: String,
    /// Children's LOG_FORMAT ("text" or "json").
    pub log_format: String,
    /// How long an actor may take to report SERVING.
    pub startup_timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl Launcher {
    /// Starts `spec` and waits until it reports SERVING. A child that exits
    /// or stays silent past the start-up timeout is an error.
    pub async fn start(&self, spec: &ActorSpec) -> anyhow::Result<RunningActor> {
        let mut command = Command::new(&self.exe);
        command
            .arg(spec.role)
            .args(&spec.args)
            .env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|name| std::env::var(name).ok().map(|value| (*name, value))),
            )
            .env("LOG_LEVEL", &self.log_level)
            .env("LOG_FORMAT", &self.log_format)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true);
        // Children get SIGTERM when this process dies, even by SIGKILL, so
        // that no actor outlives the command that started it.
        // NOTE: Linux sends it when the spawning thread exits; tokio's worker
        // threads live as long as the runtime, which is the whole command.
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("failed to start {} ({})", spec.name, self.exe.display()))?;
        tracing::debug!(actor = %spec.name, pid = child.id(), "started");

        // Read the announcement, then keep draining stdout so the child never blocks on it.
        let stdout = child.stdout.take().context("child stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let announced = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addrs) = BoundAddrs::parse_announcement(&line) {
                    return Ok(Some(addrs));
                }
            }
            Ok::<_, std::io::Error>(None)
        };
        let addrs = tokio::select! {
            addrs = tokio::time::timeout(self.startup_timeout, announced) => match addrs {
                Ok(Ok(Some(addrs))) => addrs,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = child.wait().await?;
                    bail!("{} exited before binding its ports ({status})", spec.name);
                }
                Err(_) => bail!("{} did not bind its ports within {:?}", spec.name, self.startup_timeout),
            },
            status = child.wait() => bail!("{} exited during start-up ({}); see its log above for the cause", spec.name, status?),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let mut actor = RunningActor {
            name: spec.name.clone(),
            addrs,
            child,
        };
        let url = actor.url();
        let serving = wait_serving(&spec.name, &url, spec.service);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(self.startup_timeout, serving) => match outcome {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow::anyhow!("{} did not report SERVING within {:?}", spec.name, self.startup_timeout)),
            },
            status = actor.child.wait() => Err(anyhow::anyhow!("{} exited during start-up ({}); see its log above for the cause", spec.name, status?)),
        };
        if let Err(error) = outcome {
            // A child that died explains the failure better than the connection error it caused.
            if let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(2), actor.child.wait()).await
            {
                bail!(
                    "{} exited during start-up ({status}); see its log above for the cause",
                    spec.name
                );
            }
            self.stop(&mut actor).await;
            return Err(error);
        }
        tracing::debug!(actor = %actor.name, grpc = %actor.addrs.grpc, metrics = %actor.addrs.metrics, "serving");
        Ok(actor)
    }

    /// Sends SIGTERM to the actor's process group, waits up to the grace
    /// period, then sends SIGKILL.
    pub async fn stop(&self, actor: &mut RunningActor) {
        let Some(pid) = actor.child.id() else { return };
        let group = Pid::from_raw(pid as i32);
        if let Err(error) = killpg(group, Signal::SIGTERM) {
            tracing::debug!(actor = %actor.name, %error, "SIGTERM failed; the process already exited");
        }
        match tokio::time::timeout(self.grace, actor.child.wait()).await {
            Ok(Ok(status)) => tracing::debug!(actor = %actor.name, %status, "stopped"),
            Ok(Err(error)) => {
                tracing::warn!(actor = %actor.name, %error, "waiting for the actor failed")
            }
            Err(_) => {
                tracing::warn!(actor = %actor.name, grace = ?self.grace, "still running after SIGTERM; sending SIGKILL");
                let _ = killpg(group, Signal::SIGKILL);
                let _ = actor.child.wait().await;
            }
        }
    }

    /// Stops every actor, in reverse start order.
    pub async fn stop_all(&self, actors: &mut [RunningActor]) {
        for actor in actors.iter_mut().rev() {
            self.stop(actor).await;
        }
    }
}

/// Follows the actor's health Watch stream until it reports SERVING, logging
/// while it waits.
async fn wait_serving(name: &str, url: &str, service: &str) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await
        .with_context(|| format!("failed to connect to {name} at {url}"))?;
    let mut client = HealthClient::new(channel);
    let mut stream = client
        .watch(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .with_context(|| format!("health watch on {name} failed"))?
        .into_inner();
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(started + STILL_WAITING_EVERY, STILL_WAITING_EVERY);
    loop {
        tokio::select! {
            message = stream.message() => match message? {
                Some(status) if status.status == ServingStatus::Serving as i32 => return Ok(()),
                Some(_) => {}
                None => bail!("{name} closed its health stream before reporting SERVING"),
            },
            _ = ticker.tick() => {
                tracing::info!(actor = name, waited = ?started.elapsed(), "still waiting for the model to load");
            }
        }
    }
}
