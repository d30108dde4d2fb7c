//! Logging and Prometheus metrics set-up shared by every actor.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging and metrics flags shared by every actor.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, for example `info`, `debug`, or `info,h2=warn`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Address of the Prometheus metrics endpoint (`/metrics`). Port 0 picks a free port.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:0")]
    pub metrics_addr: SocketAddr,
}

/// Installs the global tracing subscriber. Logs go to stderr, so stdout stays
/// free for the one line that announces the bound addresses.
pub fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|error| anyhow::anyhow!("invalid --log-level {filter:?}: {error}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    // A second call (several actors in one test process) keeps the first subscriber.
    if let Err(error) = result {
        tracing::debug!(%error, "logging was already initialised");
    }
    Ok(())
}

/// Buckets for request and stage durations in seconds, from 5 ms to 10 min.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Attempts at a free port when the metrics address has port 0.
const FREE_PORT_ATTEMPTS: usize = 5;

/// Starts the Prometheus exporter on `addr` and returns the bound address.
///
/// The exporter binds the port itself, so port 0 is first resolved here by
/// binding and releasing a listener. NOTE: another process can take that
/// port before the exporter binds it, so a port-0 address is tried again
/// with a new port when the exporter finds it taken.
pub fn install_metrics_exporter(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let attempts = if addr.port() == 0 {
        FREE_PORT_ATTEMPTS
    } else {
        1
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let bound = if addr.port() == 0 {
            std::net::TcpListener::bind(addr)?.local_addr()?
        } else {
            addr
        };
        let result = PrometheusBuilder::new()
            .with_http_listener(bound)
            .set_buckets(DURATION_BUCKETS)?
            .install();
        match result {
            Ok(()) => {}
            // Several actors in one test process share the first recorder.
            Err(metrics_exporter_prometheus::BuildError::FailedToSetGlobalRecorder(_)) => {
                tracing::debug!("metrics recorder was already installed");
            }
            Err(error) if attempt < attempts => {
                tracing::debug!(%bound, %error, "metrics port was taken, trying another");
                continue;
            }
            Err(error) => {
                return Err(anyhow::anyhow!(
                    "failed to start metrics on {bound}: {error}"
                ));
            }
        }
        describe_rpc_metrics();
        return Ok(bound);
    }
}

/// Name of the counter of handled RPCs.
pub const REQUESTS_TOTAL: &str = "redraft_requests_total";
/// Name of the counter of failed RPCs, by error type.
pub const REQUEST_ERRORS_TOTAL: &str = "redraft_request_errors_total";
/// Name of the histogram of RPC durations.
pub const REQUEST_DURATION_SECONDS: &str = "redraft_request_duration_seconds";

fn describe_rpc_metrics() {
    metrics::describe_counter!(REQUESTS_TOTAL, "RPCs handled, by service and method.");
    metrics::describe_counter!(
        REQUEST_ERRORS_TOTAL,
        "RPCs that failed, by service, method and error type."
    );
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "RPC handling time, by service and method."
    );
}

/// Records one handled RPC. `error_type` is the crate error's stable
/// snake_case type, or `None` on success.
pub fn record_rpc(
    service: &'static str,
    method: &'static str,
    elapsed: Duration,
    error_type: Option<&'static str>,
) {
    metrics::counter!(REQUESTS_TOTAL, "service" => service, "method" => method).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "service" => service, "method" => method)
        .record(elapsed.as_secs_f64());
    if let Some(error_type) = error_type {
        metrics::counter!(
            REQUEST_ERRORS_TOTAL,
            "service" => service,
            "method" => method,
            "error_type" => error_type
        )
        .increment(1);
    }
}
