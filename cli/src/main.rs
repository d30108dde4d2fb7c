//! `redraft`: the command line for people.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    redraft_cli::main_entry().await
}
