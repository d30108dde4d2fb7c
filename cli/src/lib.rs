//! The `redraft` command: `up`, `generate`, `eval`, `jobs`, `models`, and each actor
//! as a subcommand.

pub mod critique;
pub mod eval;
pub mod eval_report;
pub mod generate;
pub mod jobs;
pub mod launcher;
pub mod models;
pub mod report;
pub mod shapes;
pub mod shapes_eval;
pub mod stack;
pub mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use redraft_common::telemetry::LogFormat;

/// redraft: a self-reviewing image generator. A generator draws a draft, a
/// critic checks it against the prompt, and an orchestrator decides what to
/// try next until the critic is satisfied or the budget is spent.
#[derive(Debug, Parser)]
#[command(name = "redraft", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Logging flags of the commands for people.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, for example `info` or `redraft=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
}

/// A loop strategy, as the commands for people name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    /// New seeds each iteration; the critic only ranks.
    BestOfN,
    /// New seeds with a prompt rewritten from the failed checks.
    Reprompt,
    /// Image-to-image from the best candidate with the rewritten prompt.
    Refine,
    /// Reseed, reprompt or refine, chosen each iteration from the checks and earlier gains.
    Adaptive,
}

impl StrategyArg {
    /// Converts to the contract's value.
    pub fn to_proto(self) -> redraft_proto::Strategy {
        match self {
            Self::BestOfN => redraft_proto::Strategy::BestOfN,
            Self::Reprompt => redraft_proto::Strategy::Reprompt,
            Self::Refine => redraft_proto::Strategy::Refine,
            Self::Adaptive => redraft_proto::Strategy::Adaptive,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a generator, a critic and an orchestrator as child processes and
    /// serve until Ctrl-C or SIGTERM.
    Up(up::UpArgs),
    /// Generate an image for a prompt with self-review, and write the final
    /// image, every candidate and a report.
    Generate(generate::GenerateArgs),
    /// Judge one image against a prompt with the critic and print its checks.
    Critique(critique::CritiqueArgs),
    /// Run prompts through the actors with a strategy and a budget, judge the
    /// final images with the shapes oracle, and report accuracy; or sweep
    /// strategies and budgets.
    Eval(eval::EvalArgs),
    /// List, inspect or cancel jobs on a running orchestrator.
    Jobs(jobs::JobsArgs),
    /// Manage model folders.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Render training data and judge images in the synthetic shapes world.
    Shapes {
        #[command(subcommand)]
        command: shapes::ShapesCommand,
    },
    /// Run the generator actor.
    Generator(redraft_generator::GeneratorArgs),
    /// Run the critic actor.
    Critic(redraft_critic::CriticArgs),
    /// Run the orchestrator actor.
    Orchestrator(redraft_orchestrator::OrchestratorArgs),
}

/// `redraft models` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Write tiny random-weight generator and critic folders (DIR/generator,
    /// DIR/critic) in the real layouts, for tests and trials.
    Tiny {
        /// Folder to write into.
        dir: PathBuf,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Parses the process arguments, runs the command and returns its exit
/// code, printing any error; the whole of `main`.
pub async fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command line and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => {
            init_logging(&args.log)?;
            up::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Generate(args) => {
            init_logging(&args.log)?;
            generate::run(args).await
        }
        Command::Eval(args) => {
            init_logging(&args.log)?;
            eval::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Critique(args) => {
            init_logging(&args.log)?;
            restore_sigpipe();
            critique::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Jobs(args) => {
            init_logging(&args.log)?;
            restore_sigpipe();
            jobs::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Models { command } => match command {
            ModelsCommand::Tiny { dir, seed } => {
                let paths = models::write_tiny(&dir, seed)?;
                println!(
                    "wrote {} and {}",
                    paths.generator.display(),
                    paths.critic.display()
                );
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Shapes { command } => {
            restore_sigpipe();
            let success = shapes::run(command)?;
            Ok(if success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Generator(args) => {
            redraft_common::telemetry::init_logging(
                args.telemetry.log_format,
                &args.telemetry.log_level,
            )?;
            redraft_generator::run(args)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Critic(args) => {
            redraft_common::telemetry::init_logging(
                args.telemetry.log_format,
                &args.telemetry.log_level,
            )?;
            redraft_critic::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Orchestrator(args) => {
            redraft_common::telemetry::init_logging(
                args.telemetry.log_format,
                &args.telemetry.log_level,
            )?;
            redraft_orchestrator::run(args)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
    }
}

/// Lets a closed stdout end the process quietly, as `redraft jobs get ID | head`
/// expects, in commands that only print; Rust ignores SIGPIPE by default,
/// which turns it into a panic on the next print.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: no other thread relies on the SIGPIPE disposition in these commands.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    redraft_common::telemetry::init_logging(args.log_format, &args.log_level)
}

/// Connects to an orchestrator at `url`; a bare `host:port` gets `http://`.
pub async fn connect_orchestrator(
    url: &str,
) -> anyhow::Result<redraft_proto::orchestrator_client::OrchestratorClient<tonic::transport::Channel>>
{
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|error| anyhow::anyhow!("invalid --orchestrator address {url:?}: {error}"))?
        .connect()
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "failed to connect to the orchestrator at {url}: {error}; is `redraft up` running there?"
            )
        })?;
    Ok(
        redraft_proto::orchestrator_client::OrchestratorClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024),
    )
}
