//! Generator and critic calls over a pool, retried once on another replica.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use redraft_proto::critic_client::CriticClient;
use redraft_proto::generator_client::GeneratorClient;
use redraft_proto::{Critique, CritiqueRequest, GenerateRequest, GenerateResult, generate_event};
use tonic::Code;

use crate::OrchestratorError;
use crate::metrics as orch_metrics;
use crate::pool::{Lease, Pool};

/// Largest gRPC message exchanged with replicas.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A generator result with where and how long it took.
pub struct Generated {
    /// The generator's result.
    pub result: GenerateResult,
    /// Address of the replica that produced it.
    pub address: String,
    /// Seconds from the first attempt to the result.
    pub seconds: f64,
}

/// A critique with where and how long it took.
pub struct Judged {
    /// The critic's verdict.
    pub critique: Critique,
    /// Address of the replica that judged.
    pub address: String,
    /// Seconds from the first attempt to the verdict.
    pub seconds: f64,
}

/// True for failures worth one retry on another replica: the replica is
/// down, overloaded or broke mid-call. A bad request fails everywhere.
fn retryable(code: Code) -> bool {
    !matches!(
        code,
        Code::InvalidArgument | Code::Cancelled | Code::FailedPrecondition | Code::NotFound
    )
}

/// True when the failure shows that the replica cannot be reached.
fn unreachable(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown)
}

/// Draws one image, reporting each step to `on_progress(step, total)` and
/// counting each attempt in `attempts`. Dropping the returned future drops
/// the stream, which cancels the work on the replica.
pub async fn generate(
    pool: &Pool,
    request: GenerateRequest,
    on_progress: &(dyn Fn(u32, u32) + Sync),
    attempts: &AtomicU32,
) -> Result<Generated, OrchestratorError> {
    let started = Instant::now();
    let mut excluded: Option<String> = None;
    loop {
        let lease = pool.lease(excluded.as_deref())?;
        attempts.fetch_add(1, Ordering::Relaxed);
        let address = lease.replica().address().to_string();
        let call_started = Instant::now();
        let outcome = generate_once(&lease, request.clone(), on_progress).await;
        orch_metrics::replica_call("generator", call_started.elapsed(), outcome.as_ref().err());
        match outcome {
            Ok(result) => {
                return Ok(Generated {
                    result,
                    address,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            Err(status) => {
                lease.replica().record_failure(unreachable(&status));
                let can_retry = excluded.is_none()
                    && retryable(status.code())
                    && pool.has_healthy_other(&address);
                tracing::warn!(replica = %address, code = ?status.code(), message = status.message(), retry = can_retry, "generator call failed");
                if !can_retry {
                    return Err(OrchestratorError::ReplicaCall {
                        pool: "generator",
                        address,
                        code: status.code(),
                        message: status.message().to_string(),
                    });
                }
                excluded = Some(address);
            }
        }
    }
}

async fn generate_once(
    lease: &Lease,
    request: GenerateRequest,
    on_progress: &(dyn Fn(u32, u32) + Sync),
) -> Result<GenerateResult, tonic::Status> {
    let mut client = GeneratorClient::new(lease.replica().channel())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut stream = client.generate(request).await?.into_inner();
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(generate_event::Event::Progress(progress)) => {
                on_progress(progress.step, progress.total_steps)
            }
            Some(generate_event::Event::Result(result)) => return Ok(result),
            None => {}
        }
    }
    Err(tonic::Status::unknown(
        "the generator closed the stream without a result",
    ))
}

/// Judges one image, counting each attempt in `attempts`.
pub async fn critique(
    pool: &Pool,
    request: CritiqueRequest,
    attempts: &AtomicU32,
) -> Result<Judged, OrchestratorError> {
    let started = Instant::now();
    let mut excluded: Option<String> = None;
    loop {
        let lease = pool.lease(excluded.as_deref())?;
        attempts.fetch_add(1, Ordering::Relaxed);
        let address = lease.replica().address().to_string();
        let mut client = CriticClient::new(lease.replica().channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let call_started = Instant::now();
        let outcome = client
            .critique(request.clone())
            .await
            .map(tonic::Response::into_inner);
        orch_metrics::replica_call("critic", call_started.elapsed(), outcome.as_ref().err());
        match outcome {
            Ok(critique) => {
                if !(0.0..=1.0).contains(&critique.score) {
                    return Err(OrchestratorError::BadResponse {
                        pool: "critic",
                        address,
                        message: format!("score {} is outside [0, 1]", critique.score),
                    });
                }
                return Ok(Judged {
                    critique,
                    address,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            Err(status) => {
                lease.replica().record_failure(unreachable(&status));
                let can_retry = excluded.is_none()
                    && retryable(status.code())
                    && pool.has_healthy_other(&address);
                tracing::warn!(replica = %address, code = ?status.code(), message = status.message(), retry = can_retry, "critic call failed");
                if !can_retry {
                    return Err(OrchestratorError::ReplicaCall {
                        pool: "critic",
                        address,
                        code: status.code(),
                        message: status.message().to_string(),
                    });
                }
                excluded = Some(address);
            }
        }
    }
}
