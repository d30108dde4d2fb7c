//! `redraft-orchestrator`: the orchestrator actor as its own binary.

use clap::Parser;

/// Runs self-review jobs over generator and critic replicas (redraft.v1.Orchestrator).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: redraft_orchestrator::OrchestratorArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = &cli.args.telemetry;
    redraft_common::telemetry::init_logging(telemetry.log_format, &telemetry.log_level)?;
    redraft_orchestrator::run(cli.args).await
}
