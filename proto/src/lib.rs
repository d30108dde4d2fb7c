//! The redraft.v1 gRPC contract: messages, clients and servers for the
//! generator, critic and orchestrator services.

/// Generated code for package `redraft.v1`.
pub mod v1 {
    tonic::include_proto!("redraft.v1");

    /// Encoded `FileDescriptorSet` of the contract, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("redraft_descriptor");

    /// Name of the contract version, as reported in `BuildInfo.api`.
    pub const API_VERSION: &str = "redraft.v1";
}

pub use v1::*;
