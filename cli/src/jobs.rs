//! `redraft jobs`: list, show or cancel jobs on a running orchestrator.

use std::path::PathBuf;

use redraft_proto::{CancelJobRequest, GetJobRequest, JobStatus, ListJobsRequest};

use crate::LogArgs;

/// Flags of `redraft jobs`.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Orchestrator URL.
    #[arg(
        long,
        env = "REDRAFT_ORCHESTRATOR",
        default_value = "http://127.0.0.1:50050"
    )]
    pub orchestrator: String,

    #[command(subcommand)]
    pub command: JobsCommand,

    #[command(flatten)]
    pub log: LogArgs,
}

/// `redraft jobs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Maximum number of jobs to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Print a job's report as JSON, or write its files with --out.
    Get {
        /// Job id.
        job_id: String,
        /// Folder to write final.png, candidates/ and report.json into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id.
        job_id: String,
    },
}

fn status_name(status: i32) -> &'static str {
    JobStatus::try_from(status)
        .map(|status| status.as_str_name().trim_start_matches("JOB_STATUS_"))
        .unwrap_or("UNKNOWN")
}

/// Runs `redraft jobs`.
pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let mut client = crate::connect_orchestrator(&args.orchestrator).await?;
    let failed = |status: tonic::Status| anyhow::anyhow!("{}", status.message());
    match args.command {
        JobsCommand::List { limit } => {
            let jobs = client
                .list_jobs(ListJobsRequest { limit })
                .await
                .map_err(failed)?
                .into_inner()
                .jobs;
            println!(
                "{:<36}  {:<10}  {:>5}  {:>5}  prompt",
                "id", "status", "iters", "best"
            );
            for job in jobs {
                let prompt = job.spec.map(|spec| spec.prompt).unwrap_or_default();
                println!(
                    "{:<36}  {:<10}  {:>5}  {:>5.3}  {}",
                    job.id,
                    status_name(job.status),
                    job.iterations.len(),
                    job.best_score,
                    prompt
                );
            }
        }
        JobsCommand::Get { job_id, out } => {
            let job = client
                .get_job(GetJobRequest { job_id })
                .await
                .map_err(failed)?
                .into_inner();
            match out {
                Some(out) => {
                    let written = crate::report::write(&out, &job)?;
                    println!("report: {}", written.report.display());
                }
                None => println!(
                    "{}",
                    serde_json::to_string_pretty(&crate::report::report_json(&job))?
                ),
            }
        }
        JobsCommand::Cancel { job_id } => {
            let job = client
                .cancel_job(CancelJobRequest { job_id })
                .await
                .map_err(failed)?
                .into_inner();
            println!("job {} is {}", job.id, status_name(job.status));
        }
    }
    Ok(())
}
