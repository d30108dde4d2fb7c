//! Compiles the redraft.v1 contract with a vendored protoc, so no system
//! protobuf compiler is needed, and writes the descriptor set used by server
//! reflection.

use std::path::PathBuf;

const PROTOS: [&str; 4] = [
    "redraft/v1/common.proto",
    "redraft/v1/generator.proto",
    "redraft/v1/critic.proto",
    "redraft/v1/orchestrator.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded, so setting a variable cannot race.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("redraft_descriptor.bin"))
        .compile_protos(&PROTOS, &["."])?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
