//! `redraft-critic`: the critic actor as its own binary.

use clap::Parser;

/// Serves a CLIP model folder as an image critic over gRPC (redraft.v1.Critic).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: redraft_critic::CriticArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = &cli.args.telemetry;
    redraft_common::telemetry::init_logging(telemetry.log_format, &telemetry.log_level)?;
    redraft_critic::run(cli.args).await
}
