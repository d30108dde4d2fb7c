//! Errors of the orchestrator, with their stable type names and gRPC statuses.

use redraft_common::InvalidArgument;

/// Everything that can go wrong in the orchestrator.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrchestratorError {
    /// A request field is outside its limits.
    #[error(transparent)]
    InvalidArgument(#[from] InvalidArgument),

    /// No job has this id.
    #[error("job {job_id:?} not found")]
    JobNotFound { job_id: String },

    /// The job queue is full.
    #[error("the job queue is full ({capacity} jobs); retry later")]
    QueueFull { capacity: usize },

    /// No replica of a pool is healthy.
    #[error("no healthy {pool} replica among {addresses}")]
    NoHealthyReplica {
        pool: &'static str,
        addresses: String,
    },

    /// A replica call failed, after the retry on another replica.
    #[error("{pool} call to {address} failed: {code:?}: {message}")]
    ReplicaCall {
        pool: &'static str,
        address: String,
        code: tonic::Code,
        message: String,
    },

    /// A replica returned a response that the contract does not allow.
    #[error("{pool} {address} sent an invalid response: {message}")]
    BadResponse {
        pool: &'static str,
        address: String,
        message: String,
    },
}

impl OrchestratorError {
    /// Stable snake_case name used in logs, metric labels and job errors.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid_argument",
            Self::JobNotFound { .. } => "job_not_found",
            Self::QueueFull { .. } => "queue_full",
            Self::NoHealthyReplica { .. } => "no_healthy_replica",
            Self::ReplicaCall { .. } => "replica_call",
            Self::BadResponse { .. } => "bad_response",
        }
    }
}

impl From<OrchestratorError> for tonic::Status {
    fn from(error: OrchestratorError) -> Self {
        let message = error.to_string();
        match error {
            OrchestratorError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            OrchestratorError::JobNotFound { .. } => tonic::Status::not_found(message),
            OrchestratorError::QueueFull { .. } => tonic::Status::resource_exhausted(message),
            OrchestratorError::NoHealthyReplica { .. } => tonic::Status::unavailable(message),
            OrchestratorError::ReplicaCall { .. } | OrchestratorError::BadResponse { .. } => {
                tonic::Status::internal(message)
            }
        }
    }
}
