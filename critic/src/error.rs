//! Errors of the critic, with their stable type names and gRPC statuses.

use std::path::Path;

use redraft_common::InvalidArgument;
use redraft_common::tokenizer::TokenizerError;

/// Everything that can go wrong in the critic.
#[derive(Debug, thiserror::Error)]
pub enum CriticError {
    /// A request field is outside its limits.
    #[error(transparent)]
    InvalidArgument(#[from] InvalidArgument),

    /// A file of the model folder is missing, unreadable or malformed.
    /// `path` is the file or folder, and `message` is a full sentence that
    /// names the file and, for malformed files, the field.
    #[error("{message}")]
    ModelFolder { path: String, message: String },

    /// A config field has a value the critic does not support.
    #[error("{path}: unsupported {field} = {value}; it must be {expected}")]
    UnsupportedConfig {
        path: String,
        field: String,
        value: String,
        expected: String,
    },

    /// A tensor operation failed.
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),

    /// The tokenizer failed to load or to encode a prompt.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),

    /// The request queue of the model thread is full.
    #[error("the critic queue is full ({capacity} requests); retry later or add replicas")]
    QueueFull { capacity: usize },

    /// The model thread is gone, so no request can be served.
    #[error("the critic model is unavailable: {0}")]
    Unavailable(String),
}

impl CriticError {
    /// Stable snake_case name used in logs and metric labels.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid_argument",
            Self::ModelFolder { .. } => "model_folder",
            Self::UnsupportedConfig { .. } => "unsupported_config",
            Self::Model(_) => "model",
            Self::QueueFull { .. } => "queue_full",
            Self::Tokenizer(_) => "tokenizer",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// Creates a `ModelFolder` error for `path` with a full-sentence `message`.
    pub(crate) fn folder(path: &Path, message: impl Into<String>) -> Self {
        Self::ModelFolder {
            path: path.display().to_string(),
            message: message.into(),
        }
    }

    /// Creates an `UnsupportedConfig` error for `field` of the file `path`.
    pub(crate) fn unsupported(
        path: &Path,
        field: impl Into<String>,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        Self::UnsupportedConfig {
            path: path.display().to_string(),
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl From<CriticError> for tonic::Status {
    fn from(error: CriticError) -> Self {
        let message = error.to_string();
        match error {
            CriticError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            CriticError::ModelFolder { .. } | CriticError::UnsupportedConfig { .. } => {
                tonic::Status::failed_precondition(message)
            }
            // A tokenizer that fails to load means a broken model folder, but
            // one that fails to encode a prompt means a bug in the critic.
            CriticError::Tokenizer(TokenizerError::Load { .. })
            | CriticError::Tokenizer(TokenizerError::MissingToken { .. }) => {
                tonic::Status::failed_precondition(message)
            }
            CriticError::Tokenizer(TokenizerError::Encode(_)) | CriticError::Model(_) => {
                tonic::Status::internal(message)
            }
            CriticError::QueueFull { .. } => tonic::Status::resource_exhausted(message),
            CriticError::Unavailable(_) => tonic::Status::unavailable(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_by_variant() {
        let cases = [
            (
                CriticError::from(InvalidArgument::new("prompt", "\"\"", "non-empty text")),
                tonic::Code::InvalidArgument,
            ),
            (
                CriticError::folder(Path::new("/m"), "model folder /m is missing config.json"),
                tonic::Code::FailedPrecondition,
            ),
            (
                CriticError::unsupported(
                    Path::new("/m/config.json"),
                    "text_config.hidden_act",
                    "gelu",
                    "quick_gelu",
                ),
                tonic::Code::FailedPrecondition,
            ),
            (
                CriticError::from(candle_core::Error::Msg("shape mismatch".to_string())),
                tonic::Code::Internal,
            ),
            (
                CriticError::from(TokenizerError::Encode("bad text".to_string())),
                tonic::Code::Internal,
            ),
            (
                CriticError::Unavailable("model thread stopped".to_string()),
                tonic::Code::Unavailable,
            ),
        ];
        for (error, code) in cases {
            let error_type = error.error_type();
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), code, "{error_type}: {}", status.message());
        }
    }

    #[test]
    fn unsupported_message_names_field_and_value() {
        let error = CriticError::unsupported(
            Path::new("/m/config.json"),
            "vision_config.hidden_act",
            "gelu",
            "quick_gelu",
        );
        assert_eq!(error.error_type(), "unsupported_config");
        assert_eq!(
            error.to_string(),
            "/m/config.json: unsupported vision_config.hidden_act = gelu; it must be quick_gelu"
        );
    }
}
