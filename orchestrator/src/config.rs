//! Command-line and environment configuration of the orchestrator.

use std::net::SocketAddr;

use redraft_common::telemetry::TelemetryArgs;

/// Runs self-review jobs over generator and critic replicas.
#[derive(Debug, Clone, clap::Args)]
pub struct OrchestratorArgs {
    /// gRPC listen address. Port 0 picks a free port; the bound one is printed on stdout.
    #[arg(
        long,
        env = "REDRAFT_ORCHESTRATOR_LISTEN",
        default_value = "127.0.0.1:50050"
    )]
    pub listen: SocketAddr,

    /// Generator replica address, for example `http://127.0.0.1:50051`, or a DNS name whose
    /// every address is a replica, re-resolved to follow scaling, for example
    /// `dns:///redraft-generator:50051` (a Kubernetes headless Service). Repeat for more
    /// (the environment variable takes a comma-separated list).
    #[arg(
        long = "generator",
        env = "REDRAFT_GENERATORS",
        value_delimiter = ',',
        required = true
    )]
    pub generators: Vec<String>,

    /// Critic replica address, for example `http://127.0.0.1:50052`, or a DNS name such as
    /// `dns:///redraft-critic:50052`. Repeat for more (the environment variable takes a
    /// comma-separated list).
    #[arg(
        long = "critic",
        env = "REDRAFT_CRITICS",
        value_delimiter = ',',
        required = true
    )]
    pub critics: Vec<String>,

    /// Jobs that may wait in the queue before new ones get RESOURCE_EXHAUSTED.
    #[arg(long, env = "REDRAFT_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,

    /// Jobs run at the same time.
    #[arg(long, env = "REDRAFT_CONCURRENT_JOBS", default_value_t = 2)]
    pub concurrent_jobs: usize,

    /// Finished jobs kept for `GetJob` and `ListJobs`; older ones are dropped.
    #[arg(long, env = "REDRAFT_MAX_STORED_JOBS", default_value_t = 1000)]
    pub max_stored_jobs: usize,

    /// Largest iteration limit a job may ask for.
    #[arg(long, env = "REDRAFT_MAX_ITERATIONS", default_value_t = 32)]
    pub max_iterations: u32,

    /// Largest number of candidates per iteration a job may ask for.
    #[arg(long, env = "REDRAFT_MAX_CANDIDATES", default_value_t = 16)]
    pub max_candidates: u32,

    /// Largest budget in generator calls a job may ask for.
    #[arg(long, env = "REDRAFT_MAX_GENERATOR_CALLS", default_value_t = 256)]
    pub max_generator_calls: u32,

    /// Largest deadline a job may ask for, in seconds; also the default deadline.
    #[arg(long, env = "REDRAFT_MAX_DEADLINE_SECONDS", default_value_t = 3600.0)]
    pub max_deadline_seconds: f64,

    /// Longest accepted prompt, in characters.
    #[arg(long, env = "REDRAFT_MAX_PROMPT_CHARS", default_value_t = 1000)]
    pub max_prompt_chars: u32,

    /// Largest accepted image width or height, in pixels.
    #[arg(long, env = "REDRAFT_MAX_IMAGE_SIDE", default_value_t = 1024)]
    pub max_image_side: u32,

    /// Largest accepted number of denoising steps.
    #[arg(long, env = "REDRAFT_MAX_STEPS", default_value_t = 150)]
    pub max_steps: u32,

    /// Seconds between reconnection attempts to a replica whose health stream ended.
    #[arg(long, env = "REDRAFT_HEALTH_RETRY_SECONDS", default_value_t = 1.0)]
    pub health_retry_seconds: f64,

    /// Seconds between re-resolutions of `dns:///` replica addresses.
    #[arg(long, env = "REDRAFT_RESOLVE_INTERVAL_SECONDS", default_value_t = 10.0)]
    pub resolve_interval_seconds: f64,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl OrchestratorArgs {
    /// Checks rules that span flags.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, value) in [
            ("--queue-capacity", self.queue_capacity),
            ("--concurrent-jobs", self.concurrent_jobs),
            ("--max-stored-jobs", self.max_stored_jobs),
            ("--max-iterations", self.max_iterations as usize),
            ("--max-candidates", self.max_candidates as usize),
            ("--max-generator-calls", self.max_generator_calls as usize),
            ("--max-prompt-chars", self.max_prompt_chars as usize),
            ("--max-steps", self.max_steps as usize),
        ] {
            if value == 0 {
                anyhow::bail!("{flag} 0 is invalid; it must be at least 1");
            }
        }
        if self.max_deadline_seconds.is_nan() || self.max_deadline_seconds <= 0.0 {
            anyhow::bail!(
                "--max-deadline-seconds {} is invalid; it must be above 0",
                self.max_deadline_seconds
            );
        }
        if self.health_retry_seconds.is_nan() || self.health_retry_seconds <= 0.0 {
            anyhow::bail!(
                "--health-retry-seconds {} is invalid; it must be above 0",
                self.health_retry_seconds
            );
        }
        if self.resolve_interval_seconds.is_nan() || self.resolve_interval_seconds <= 0.0 {
            anyhow::bail!(
                "--resolve-interval-seconds {} is invalid; it must be above 0",
                self.resolve_interval_seconds
            );
        }
        if self.max_image_side < 8 {
            anyhow::bail!(
                "--max-image-side {} is too small; it must be at least 8",
                self.max_image_side
            );
        }
        Ok(())
    }
}
