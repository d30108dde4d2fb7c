//! gRPC serving shared by every actor: binding, the start-up announcement,
//! health and reflection services, and shutdown on SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Prefix of the one stdout line an actor prints once its ports are bound.
/// `redraft up` and the tests read it to learn the ports picked for port 0.
pub const ANNOUNCE_PREFIX: &str = "REDRAFT_LISTENING";

/// Addresses an actor bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Prometheus metrics address.
    pub metrics: SocketAddr,
}

impl BoundAddrs {
    /// Formats the announcement line, for example
    /// `REDRAFT_LISTENING grpc=127.0.0.1:50051 metrics=127.0.0.1:9090`.
    pub fn announcement(&self) -> String {
        format!(
            "{ANNOUNCE_PREFIX} grpc={} metrics={}",
            self.grpc, self.metrics
        )
    }

    /// Parses an announcement line; other lines return `None`.
    pub fn parse_announcement(line: &str) -> Option<Self> {
        let mut fields = line.trim().split(' ');
        if fields.next()? != ANNOUNCE_PREFIX {
            return None;
        }
        let grpc = fields.next()?.strip_prefix("grpc=")?.parse().ok()?;
        let metrics = fields.next()?.strip_prefix("metrics=")?.parse().ok()?;
        Some(Self { grpc, metrics })
    }

    /// Prints the announcement line on stdout.
    pub fn announce(&self) {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        // A closed stdout only means that no process reads the announcement.
        let _ = writeln!(stdout, "{}", self.announcement());
        let _ = stdout.flush();
    }
}

/// Binds the gRPC listener and returns it with the bound address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("failed to bind gRPC address {addr}: {error}"))?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Creates the `grpc.health.v1` service with the overall status ("") and
/// `service_name` both NOT_SERVING until [`set_serving`] is called.
pub async fn health_service(
    service_name: &str,
) -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, server) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(service_name, ServingStatus::NotServing)
        .await;
    (reporter, server)
}

/// Marks the overall status and `service_name` as SERVING or NOT_SERVING.
pub async fn set_serving(reporter: &HealthReporter, service_name: &str, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    reporter.set_service_status(service_name, status).await;
}

/// Creates the server reflection service for the redraft contract and health.
pub fn reflection_service() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(redraft_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?)
}

/// Handlers for the signals that stop a redraft process: SIGTERM, SIGINT
/// (Ctrl-C) and SIGHUP. They take effect when installed, so a signal that
/// arrives before [`ShutdownSignals::recv`] is awaited is not lost.
pub struct ShutdownSignals {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 3],
}

impl ShutdownSignals {
    /// Installs the handlers; the default action of these signals (ending
    /// the process at once) no longer applies.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                signals: [
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::hangup())?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves when one of the signals arrives, and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let [terminate, interrupt, hangup] = &mut self.signals;
            tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
                _ = hangup.recv() => "SIGHUP",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Resolves when the process receives SIGTERM, SIGINT (Ctrl-C) or SIGHUP.
pub async fn shutdown_signal() {
    match ShutdownSignals::install() {
        Ok(mut signals) => {
            let name = signals.recv().await;
            tracing::info!(signal = name, "shutting down");
        }
        Err(error) => {
            tracing::error!(%error, "failed to install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_round_trip() {
        let addrs = BoundAddrs {
            grpc: "127.0.0.1:5001".parse().unwrap(),
            metrics: "[::1]:9000".parse().unwrap(),
        };
        assert_eq!(
            BoundAddrs::parse_announcement(&addrs.announcement()),
            Some(addrs)
        );
        assert_eq!(BoundAddrs::parse_announcement("some log line"), None);
    }
}
