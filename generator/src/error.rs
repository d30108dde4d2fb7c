//! Errors of the generator, with their stable type names and gRPC statuses.

use redraft_common::InvalidArgument;
use redraft_common::tokenizer::TokenizerError;

/// Everything that can go wrong in the generator.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    /// A request field is outside its limits.
    #[error(transparent)]
    InvalidArgument(#[from] InvalidArgument),

    /// A file of the model folder is missing or unreadable.
    #[error("model folder {folder}: {message}")]
    ModelFolder { folder: String, message: String },

    /// A config field has a value this pipeline does not support.
    #[error("{file}: unsupported {field} = {value}: {expected}")]
    UnsupportedConfig {
        file: String,
        field: String,
        value: String,
        expected: String,
    },

    /// A tensor operation failed.
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),

    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),

    /// The request queue of the model thread is full.
    #[error("the generator queue is full ({capacity} requests); retry later or add replicas")]
    QueueFull { capacity: usize },

    /// The client went away or cancelled, so the work stopped.
    #[error("generation cancelled at step {step} of {total}")]
    Cancelled { step: usize, total: usize },

    /// The model thread is gone.
    #[error("the model thread is not running")]
    Unavailable,
}

impl GeneratorError {
    /// Stable snake_case name used in logs and metric labels.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid_argument",
            Self::ModelFolder { .. } => "model_folder",
            Self::UnsupportedConfig { .. } => "unsupported_config",
            Self::Model(_) => "model",
            Self::Tokenizer(_) => "tokenizer",
            Self::QueueFull { .. } => "queue_full",
            Self::Cancelled { .. } => "cancelled",
            Self::Unavailable => "unavailable",
        }
    }

    pub(crate) fn folder(folder: &std::path::Path, message: impl Into<String>) -> Self {
        Self::ModelFolder {
            folder: folder.display().to_string(),
            message: message.into(),
        }
    }
}

impl From<GeneratorError> for tonic::Status {
    fn from(error: GeneratorError) -> Self {
        let message = error.to_string();
        match error {
            GeneratorError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            GeneratorError::ModelFolder { .. } | GeneratorError::UnsupportedConfig { .. } => {
                tonic::Status::failed_precondition(message)
            }
            GeneratorError::Model(_) | GeneratorError::Tokenizer(_) => {
                tonic::Status::internal(message)
            }
            GeneratorError::QueueFull { .. } => tonic::Status::resource_exhausted(message),
            GeneratorError::Cancelled { .. } => tonic::Status::cancelled(message),
            GeneratorError::Unavailable => tonic::Status::unavailable(message),
        }
    }
}
