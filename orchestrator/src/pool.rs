//! Pools of generator or critic replicas: membership from static addresses
//! and re-resolved DNS names, health tracking through `grpc.health.v1`
//! Watch streams, and least-outstanding-requests balancing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::OrchestratorError;
use crate::discovery::{Resolver, Target, url_of};

/// One replica and its live state.
#[derive(Debug)]
pub struct Replica {
    address: String,
    channel: Channel,
    healthy: AtomicBool,
    outstanding: AtomicUsize,
    failures: AtomicU64,
    /// Stops the health watcher when the replica leaves the pool.
    removed: CancellationToken,
}

impl Replica {
    fn new(address: String) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|error| format!("invalid replica address {address:?}: {error}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        Ok(Self {
            channel: endpoint.connect_lazy(),
            address,
            healthy: AtomicBool::new(false),
            outstanding: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
            removed: CancellationToken::new(),
        })
    }

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

/// A call slot on a replica; dropping it ends the call's count. A lease
/// keeps a removed replica alive until its call finishes (draining).
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
pub struct Pool {
    kind: &'static str,
    service_name: &'static str,
    targets: Vec<Target>,
    resolver: Arc<dyn Resolver>,
    replicas: RwLock<Vec<Arc<Replica>>>,
    health_changed: Arc<Notify>,
    health_retry: Duration,
}

impl Pool {
    /// Creates an empty pool for `targets` serving `service_name`. Call
    /// [`Pool::refresh`] to fill it and [`Pool::follow`] to keep it current.
    /// Every health change wakes `health_changed`.
    pub fn new(
        kind: &'static str,
        service_name: &'static str,
        addresses: &[String],
        resolver: Arc<dyn Resolver>,
        health_changed: Arc<Notify>,
        health_retry: Duration,
    ) -> Result<Self, String> {
        let targets = addresses
            .iter()
            .map(|address| Target::parse(address))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("--{kind}: {error}"))?;
        if targets.is_empty() {
            return Err(format!("--{kind}: at least one address is required"));
        }
        Ok(Self {
            kind,
            service_name,
            targets,
            resolver,
            replicas: RwLock::new(Vec::new()),
            health_changed,
            health_retry,
        })
    }

    /// "generator" or "critic".
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Every current replica.
    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Resolves every target and updates the membership: new addresses join
    /// (and their health is watched), vanished ones leave, while calls in
    /// flight to them finish. A DNS name that fails to resolve keeps its
    /// current replicas.
    pub async fn refresh(&self) {
        let current: BTreeSet<String> = self
            .replicas()
            .iter()
            .map(|replica| replica.address.clone())
            .collect();
        let mut wanted = BTreeSet::new();
        for target in &self.targets {
            match target {
                Target::Static(url) => {
                    wanted.insert(url.clone());
                }
                Target::Dns { host, port } => match self.resolver.resolve(host, *port).await {
                    Ok(addresses) => wanted.extend(addresses.into_iter().map(url_of)),
                    Err(error) => {
                        tracing::warn!(pool = self.kind, %host, port, %error, "failed to resolve replicas; keeping the current ones");
                        wanted.extend(current.iter().filter(|url| !self.is_static(url)).cloned());
                    }
                },
            }
        }
        if wanted == current {
            return;
        }

        let mut replicas = self
            .replicas
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        replicas.retain(|replica| {
            let keep = wanted.contains(&replica.address);
            if !keep {
                replica.removed.cancel();
                tracing::info!(pool = self.kind, replica = %replica.address, outstanding = replica.outstanding(), "replica removed; draining its calls");
            }
            keep
        });
        for url in wanted.difference(&current) {
            match Replica::new(url.clone()) {
                Ok(replica) => {
                    let replica = Arc::new(replica);
                    tracing::info!(pool = self.kind, replica = %url, "replica added");
                    self.spawn_health_watch(replica.clone());
                    replicas.push(replica);
                }
                Err(error) => tracing::warn!(pool = self.kind, %error, "replica skipped"),
            }
        }
        drop(replicas);
        self.health_changed.notify_waiters();
    }

    fn is_static(&self, url: &str) -> bool {
        self.targets
            .iter()
            .any(|target| matches!(target, Target::Static(static_url) if static_url == url))
    }

    /// True when any target is a DNS name, so membership can change.
    pub fn has_dns_targets(&self) -> bool {
        self.targets
            .iter()
            .any(|target| matches!(target, Target::Dns { .. }))
    }

    /// Re-resolves the targets every `interval` until `shutdown`.
    pub fn follow(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        if !self.has_dns_targets() {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => pool.refresh().await,
                    _ = shutdown.cancelled() => break,
                }
            }
        });
    }

    fn spawn_health_watch(&self, replica: Arc<Replica>) {
        let service = self.service_name.to_string();
        let changed = self.health_changed.clone();
        let retry = self.health_retry;
        tokio::spawn(async move {
            let removed = replica.removed.clone();
            tokio::select! {
                _ = follow_health(&replica, &service, retry, &changed) => {}
                _ = removed.cancelled() => {}
            }
        });
    }

    /// Stops every health watcher.
    pub fn shutdown(&self) {
        for replica in self.replicas() {
            replica.removed.cancel();
        }
    }

    /// True when at least one replica is healthy.
    pub fn any_healthy(&self) -> bool {
        self.replicas().iter().any(|replica| replica.is_healthy())
    }

    /// Leases the healthy replica with the fewest calls in flight, skipping
    /// `exclude`; ties go to a random one of the least loaded.
    pub fn lease(&self, exclude: Option<&str>) -> Result<Lease, OrchestratorError> {
        let replicas = self.replicas();
        let candidates: Vec<&Arc<Replica>> = replicas
            .iter()
            .filter(|replica| replica.is_healthy() && Some(replica.address()) != exclude)
            .collect();
        let Some(least) = candidates.iter().map(|replica| replica.outstanding()).min() else {
            return Err(OrchestratorError::NoHealthyReplica {
                pool: self.kind,
                addresses: self.describe_targets(),
            });
        };
        let tied: Vec<&Arc<Replica>> = candidates
            .into_iter()
            .filter(|replica| replica.outstanding() == least)
            .collect();
        let replica = tied[rand::random_range(0..tied.len())].clone();
        replica.outstanding.fetch_add(1, Ordering::Relaxed);
        Ok(Lease { replica })
    }

    /// True when a healthy replica other than `address` exists.
    pub fn has_healthy_other(&self, address: &str) -> bool {
        self.replicas()
            .iter()
            .any(|replica| replica.is_healthy() && replica.address() != address)
    }

    fn describe_targets(&self) -> String {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|target| match target {
                Target::Static(url) => url.clone(),
                Target::Dns { host, port } => format!("dns:///{host}:{port}"),
            })
            .collect();
        targets.join(", ")
    }
}

async fn follow_health(replica: &Replica, service: &str, retry: Duration, changed: &Notify) {
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
