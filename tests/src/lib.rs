//! Helpers for tests that start the redraft actors as real processes on
//! loopback: tiny models written once per test process, a stack of actors,
//! and clients.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use redraft_cli::launcher::Launcher;
use redraft_cli::models::ModelPaths;
use redraft_cli::stack::{self, Stack, StackConfig};
use redraft_proto::orchestrator_client::OrchestratorClient;
use redraft_proto::{
    GenerationParams, InfoRequest, Job, JobSpec, LoopPolicy, SubmitJobRequest, WatchJobRequest,
    job_event,
};
use tonic::transport::Channel;

/// Tiny random-weight models shared by every test of the process, written
/// into `target/test-models/PID`. Folders of test processes that have ended
/// are removed, so runs leave nothing behind for long.
pub fn tiny_models() -> &'static ModelPaths {
    static MODELS: OnceLock<ModelPaths> = OnceLock::new();
    MODELS.get_or_init(|| {
        let root = repo_root().join("target").join("test-models");
        remove_ended_runs(&root);
        let dir = root.join(std::process::id().to_string());
        redraft_cli::models::ensure_tiny(&dir, 11).expect("tiny models are written")
    })
}

fn remove_ended_runs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A launcher for the redraft binary at `exe`, quiet unless `LOG_LEVEL` is set.
pub fn launcher(exe: &Path) -> Launcher {
    Launcher {
        exe: exe.to_path_buf(),
        log_level: std::env::var("LOG_LEVEL").unwrap_or_else(|_| "error".to_string()),
        log_format: "text".to_string(),
        startup_timeout: Duration::from_secs(120),
        grace: Duration::from_secs(5),
    }
}

/// A running stack of actor processes with its launcher.
pub struct TestStack {
    /// The launcher that started it.
    pub launcher: Launcher,
    /// The actors, orchestrator last.
    pub stack: Stack,
}

impl TestStack {
    /// Starts `generators` generator and `critics` critic processes with the
    /// tiny models, and an orchestrator pointed at them, all on free ports.
    pub async fn start(exe: &Path, generators: usize, critics: usize) -> anyhow::Result<Self> {
        let launcher = launcher(exe);
        let config = StackConfig {
            models: tiny_models().clone(),
            generators,
            critics,
            orchestrator_listen: "127.0.0.1:0".parse()?,
            orchestrator_args: Vec::new(),
        };
        let stack = stack::start(&launcher, &config).await?;
        let started = Self { launcher, stack };
        started.wait_all_replicas_healthy().await?;
        Ok(started)
    }

    /// Waits until the orchestrator reports every replica healthy. It
    /// serves once one replica per pool is healthy, so without this wait a
    /// test could find its jobs served by fewer replicas than it started.
    async fn wait_all_replicas_healthy(&self) -> anyhow::Result<()> {
        let mut client = self.client().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let info = client.info(InfoRequest {}).await?.into_inner();
            let all_healthy = info
                .generators
                .iter()
                .chain(&info.critics)
                .all(|replica| replica.healthy);
            if all_healthy {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("replicas still unhealthy after 60 s: {info:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client of the orchestrator.
    pub async fn client(&self) -> OrchestratorClient<Channel> {
        redraft_cli::connect_orchestrator(&self.stack.orchestrator_url)
            .await
            .expect("the orchestrator accepts connections")
    }

    /// gRPC URL of the actor named `name`, for example "generator-1".
    pub fn url(&self, name: &str) -> String {
        self.actor(name).url()
    }

    /// The actor named `name`.
    pub fn actor(&self, name: &str) -> &redraft_cli::launcher::RunningActor {
        self.stack
            .actors
            .iter()
            .find(|actor| actor.name == name)
            .unwrap_or_else(|| panic!("no actor named {name}"))
    }

    /// Stops every actor with SIGTERM.
    pub async fn stop(mut self) {
        self.launcher.stop_all(&mut self.stack.actors).await;
    }
}

/// A best-of-N job spec for `prompt` with small tiny-model settings: 64x64,
/// few steps.
pub fn spec(prompt: &str, threshold: f32, iterations: u32, candidates: u32) -> JobSpec {
    JobSpec {
        prompt: prompt.to_string(),
        params: Some(GenerationParams {
            width: 64,
            height: 64,
            steps: Some(4),
            seed: Some(1),
            ..Default::default()
        }),
        policy: Some(LoopPolicy {
            threshold: Some(threshold),
            max_iterations: Some(iterations),
            candidates_per_iteration: Some(candidates),
            deadline_seconds: Some(300.0),
            strategy: redraft_proto::Strategy::BestOfN as i32,
            ..Default::default()
        }),
    }
}

/// Submits `spec` and follows the job's events until it finishes, calling
/// `on_event` for each. Returns the finished job.
pub async fn run_job(
    client: &mut OrchestratorClient<Channel>,
    spec: JobSpec,
    mut on_event: impl FnMut(&redraft_proto::JobEvent),
) -> anyhow::Result<Job> {
    let job = client
        .submit_job(SubmitJobRequest { spec: Some(spec) })
        .await?
        .into_inner();
    let mut events = client
        .watch_job(WatchJobRequest { job_id: job.id })
        .await?
        .into_inner();
    while let Some(event) = events.message().await? {
        on_event(&event);
        if let Some(job_event::Event::Finished(job)) = event.event {
            return Ok(job);
        }
    }
    anyhow::bail!("the watch stream ended before the job finished")
}

/// Reads the Prometheus text exposition at `addr` (`/metrics`) with a plain
/// HTTP/1.0 request.
pub async fn scrape_metrics(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// Sum of every sample of `metric` whose labels contain all of `labels`.
pub fn metric_sum(exposition: &str, metric: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(metric) && !line.starts_with('#'))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the repository")
        .to_path_buf()
}

/// Returns the standard output of a finished command, after asserting that
/// it succeeded; a failure shows both output streams.
pub fn success_stdout(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

/// Returns the standard error of a finished command, after asserting that
/// it failed.
pub fn failure_stderr(output: &std::process::Output) -> String {
    assert!(
        !output.status.success(),
        "the command succeeded; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}
