//! The `redraft` command line, built inside the test crate so that its
//! integration tests can start it as a process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    redraft_cli::main_entry().await
}
