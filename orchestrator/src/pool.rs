//! Pools of generator or critic replicas: health tracking through
//! `grpc.health.v1` Watch streams, least-outstanding-requests balancing, and
//! one retry on another replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::OrchestratorError;

/// One replica and its live state.
#[derive(Debug)]
pub struct Replica {
    address: String,
    channel: Channel,
    healthy: AtomicBool,
    outstanding: AtomicUsize,
    failures: AtomicU64,
}

impl Replica {
    /// gRPC address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A lazily connected channel to the replica.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// True when its last health report was SERVING.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Calls in flight now.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Failed calls since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Records a failed call. Transport failures also mark the replica
    /// unhealthy until its health stream reports SERVING again.
    pub fn record_failure(&self, unreachable: bool) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if unreachable {
            self.healthy.store(false, Ordering::Relaxed);
        }
    }
}

/// A call slot on a replica; dropping it ends the call's count.
pub struct Lease {
    replica: Arc<Replica>,
}

impl Lease {
    /// The leased replica.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.replica.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Interchangeable replicas of one service.
#[derive(Debug)]
pub struct Pool {
    kind: &'static str,
    service_name: &'static str,
    replicas: Vec<Arc<Replica>>,
    health_changed: Arc<tokio::sync::Notify>,
}

impl Pool {
    /// Creates a pool of `addresses` serving `service_name`. Addresses
    /// without a scheme get `http://`. Health watching starts with
    /// [`Pool::watch_health`], which wakes `health_changed` on every change.
    pub fn new(
        kind: &'static str,
        service_name: &'static str,
        addresses: &[String],
        health_changed: Arc<tokio::sync::Notify>,
    ) -> Result<Self, String> {
        let mut replicas = Vec::with_capacity(addresses.len());
        for address in addresses {
            let address = if address.contains("://") {
                address.clone()
            } else {
                format!("http://{address}")
            };
            let endpoint = Endpoint::from_shared(address.clone())
                .map_err(|error| format!("invalid {kind} address {address:?}: {error}"))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true);
            replicas.push(Arc::new(Replica {
                channel: endpoint.connect_lazy(),
                address,
                healthy: AtomicBool::new(false),
                outstanding: AtomicUsize::new(0),
                failures: AtomicU64::new(0),
            }));
        }
        Ok(Self {
            kind,
            service_name,
            replicas,
            health_changed,
        })
    }

    /// "generator" or "critic".
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Every replica.
    pub fn replicas(&self) -> &[Arc<Replica>] {
        &self.replicas
    }

    /// Starts one task per replica that follows its health Watch stream and
    /// reconnects after `retry` when the stream ends.
    pub fn watch_health(&self, retry: Duration, shutdown: tokio_util::sync::CancellationToken) {
        for replica in &self.replicas {
            let replica = replica.clone();
            let service = self.service_name.to_string();
            let shutdown = shutdown.clone();
            let changed = self.health_changed.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = follow_health(&replica, &service, retry, &changed) => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }

    /// True when at least one replica is healthy.
    pub fn any_healthy(&self) -> bool {
        self.replicas.iter().any(|replica| replica.is_healthy())
    }

    /// Leases the healthy replica with the fewest calls in flight, skipping
    /// `exclude`; ties go to a random one of the least loaded.
    pub fn lease(&self, exclude: Option<&str>) -> Result<Lease, OrchestratorError> {
        let candidates: Vec<&Arc<Replica>> = self
            .replicas
            .iter()
            .filter(|replica| replica.is_healthy() && Some(replica.address()) != exclude)
            .collect();
        let least = candidates.iter().map(|replica| replica.outstanding()).min();
        let Some(least) = least else {
            return Err(OrchestratorError::NoHealthyReplica {
                pool: self.kind,
                addresses: self.addresses(),
            });
        };
        let tied: Vec<&&Arc<Replica>> = candidates
            .iter()
            .filter(|replica| replica.outstanding() == least)
            .collect();
        let replica = (*tied[rand::random_range(0..tied.len())]).clone();
        replica.outstanding.fetch_add(1, Ordering::Relaxed);
        Ok(Lease { replica })
    }

    /// True when a healthy replica other than `address` exists.
    pub fn has_healthy_other(&self, address: &str) -> bool {
        self.replicas
            .iter()
            .any(|replica| replica.is_healthy() && replica.address() != address)
    }

    fn addresses(&self) -> String {
        let addresses: Vec<&str> = self
            .replicas
            .iter()
            .map(|replica| replica.address())
            .collect();
        addresses.join(", ")
    }
}

async fn follow_health(
    replica: &Replica,
    service: &str,
    retry: Duration,
    changed: &tokio::sync::Notify,
) {
    loop {
        let mut client = HealthClient::new(replica.channel());
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        match client.watch(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(status)) => {
                            let serving = status.status == ServingStatus::Serving as i32;
                            let was = replica.healthy.swap(serving, Ordering::Relaxed);
                            if was != serving {
                                changed.notify_waiters();
                                tracing::info!(
                                    replica = replica.address(),
                                    serving,
                                    "replica health changed"
                                );
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(replica = replica.address(), %status, "health stream ended");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::debug!(replica = replica.address(), %status, "health watch failed");
            }
        }
        if replica.healthy.swap(false, Ordering::Relaxed) {
            changed.notify_waiters();
            tracing::warn!(
                replica = replica.address(),
                "replica unreachable; marked unhealthy"
            );
        }
        tokio::time::sleep(retry).await;
    }
}
