//! Pieces shared by the redraft actors: logging and metrics set-up, gRPC
//! serving with health and reflection, PNG and tensor conversions, the
//! word-level tokenizer used by the tiny and shapes models, and the
//! `--model` and `--dtype` flags with Hugging Face hub downloads.

pub mod dtype;
pub mod hub;
pub mod images;
pub mod invalid;
pub mod serving;
pub mod telemetry;
pub mod tokenizer;

pub use invalid::InvalidArgument;

/// Version of the redraft binaries, from the workspace manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `BuildInfo` message reported by every `Info` RPC.
pub fn build_info() -> redraft_proto::BuildInfo {
    redraft_proto::BuildInfo {
        version: VERSION.to_string(),
        api: redraft_proto::API_VERSION.to_string(),
    }
}
