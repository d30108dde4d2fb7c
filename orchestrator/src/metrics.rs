//! The orchestrator's own metrics, beside the RPC counters every actor has.

use std::time::Duration;

use redraft_proto::JobStatus;

const QUEUE_DEPTH: &str = "redraft_orchestrator_queue_depth";
const JOBS_TOTAL: &str = "redraft_orchestrator_jobs_total";
const ITERATIONS_PER_JOB: &str = "redraft_orchestrator_iterations_per_job";
const CANDIDATES_TOTAL: &str = "redraft_orchestrator_candidates_total";
const REPLICA_CALLS_TOTAL: &str = "redraft_orchestrator_replica_calls_total";
const REPLICA_CALL_ERRORS_TOTAL: &str = "redraft_orchestrator_replica_call_errors_total";
const REPLICA_CALL_SECONDS: &str = "redraft_orchestrator_replica_call_duration_seconds";

/// Describes the orchestrator metrics; call once at start-up.
pub fn describe() {
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs waiting in the queue.");
    metrics::describe_counter!(JOBS_TOTAL, "Jobs finished, by final status.");
    metrics::describe_histogram!(ITERATIONS_PER_JOB, "Iterations each finished job ran.");
    metrics::describe_counter!(CANDIDATES_TOTAL, "Candidates drawn and judged.");
    metrics::describe_counter!(
        REPLICA_CALLS_TOTAL,
        "Calls to generator and critic replicas, by pool."
    );
    metrics::describe_counter!(
        REPLICA_CALL_ERRORS_TOTAL,
        "Failed calls to replicas, by pool and gRPC code."
    );
    metrics::describe_histogram!(
        REPLICA_CALL_SECONDS,
        metrics::Unit::Seconds,
        "Duration of calls to replicas, by pool."
    );
}

pub(crate) fn queue_depth(depth: usize) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

pub(crate) fn job_finished(status: JobStatus, iterations: usize) {
    let status = match status {
        JobStatus::Satisfied => "satisfied",
        JobStatus::Exhausted => "exhausted",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
        JobStatus::Queued | JobStatus::Running | JobStatus::Unspecified => "unknown",
    };
    metrics::counter!(JOBS_TOTAL, "status" => status).increment(1);
    metrics::histogram!(ITERATIONS_PER_JOB).record(iterations as f64);
}

pub(crate) fn candidate_done() {
    metrics::counter!(CANDIDATES_TOTAL).increment(1);
}

pub(crate) fn replica_call(pool: &'static str, elapsed: Duration, error: Option<&tonic::Status>) {
    metrics::counter!(REPLICA_CALLS_TOTAL, "pool" => pool).increment(1);
    metrics::histogram!(REPLICA_CALL_SECONDS, "pool" => pool).record(elapsed.as_secs_f64());
    if let Some(status) = error {
        metrics::counter!(REPLICA_CALL_ERRORS_TOTAL, "pool" => pool, "code" => code_label(status.code()))
            .increment(1);
    }
}

fn code_label(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "ok",
        tonic::Code::Cancelled => "cancelled",
        tonic::Code::Unknown => "unknown",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::DeadlineExceeded => "deadline_exceeded",
        tonic::Code::NotFound => "not_found",
        tonic::Code::AlreadyExists => "already_exists",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::Aborted => "aborted",
        tonic::Code::OutOfRange => "out_of_range",
        tonic::Code::Unimplemented => "unimplemented",
        tonic::Code::Internal => "internal",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DataLoss => "data_loss",
        tonic::Code::Unauthenticated => "unauthenticated",
    }
}
