//! `redraft-generator`: the generator actor as its own binary.

use clap::Parser;

/// Serves a Stable Diffusion model folder over gRPC (redraft.v1.Generator).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: redraft_generator::GeneratorArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = &cli.args.telemetry;
    redraft_common::telemetry::init_logging(telemetry.log_format, &telemetry.log_level)?;
    redraft_generator::run(cli.args).await
}
