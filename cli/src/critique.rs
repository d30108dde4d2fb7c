//! `redraft critique`: judge one image against a prompt, with a running
//! critic or with the critic model loaded in this process.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::{DType, Device};
use redraft_proto::critic_client::CriticClient;
use redraft_proto::{CheckKind, Critique, CritiqueRequest, Image};

use crate::LogArgs;

/// Flags of `redraft critique`.
#[derive(Debug, clap::Args)]
pub struct CritiqueArgs {
    /// The prompt the image was drawn for.
    #[arg(long)]
    pub prompt: String,

    /// PNG image to judge.
    pub image: PathBuf,

    /// Critic URL, for example http://127.0.0.1:50052. Without it, the critic
    /// model is loaded in this process.
    #[arg(long, env = "REDRAFT_CRITIC")]
    pub critic: Option<String>,

    /// Critic model folder for the in-process critic. Default:
    /// models/shapes-v1/critic, else tiny models.
    #[arg(long, env = "REDRAFT_CRITIC_MODEL")]
    pub critic_model: Option<PathBuf>,

    /// Print the critique as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Runs `redraft critique`.
pub async fn run(args: CritiqueArgs) -> anyhow::Result<()> {
    let png = std::fs::read(&args.image)
        .with_context(|| format!("failed to read {}", args.image.display()))?;
    let critique = match &args.critic {
        Some(url) => remote(url, &args.prompt, png).await?,
        None => local(&args, &png)?,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&critique_json(&critique))?
        );
    } else {
        print_table(&critique);
    }
    Ok(())
}

async fn remote(url: &str, prompt: &str, png: Vec<u8>) -> anyhow::Result<Critique> {
    let image = image::load_from_memory(&png).context("the image is not a decodable PNG")?;
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|error| anyhow::anyhow!("invalid --critic URL {url:?}: {error}"))?
        .connect()
        .await
        .map_err(|error| anyhow::anyhow!("failed to connect to the critic at {url}: {error}"))?;
    let request = CritiqueRequest {
        prompt: prompt.to_string(),
        image: Some(Image {
            png,
            width: image.width(),
            height: image.height(),
        }),
        request_id: "redraft-critique".to_string(),
    };
    let response = CriticClient::new(channel)
        .max_encoding_message_size(64 * 1024 * 1024)
        .critique(request)
        .await
        .map_err(|status| {
            anyhow::anyhow!("the critic rejected the request: {}", status.message())
        })?;
    Ok(response.into_inner())
}

fn local(args: &CritiqueArgs, png: &[u8]) -> anyhow::Result<Critique> {
    let folder = match &args.critic_model {
        Some(folder) if folder.is_dir() => folder.clone(),
        Some(folder) => anyhow::bail!("--critic-model {}: folder not found", folder.display()),
        None => crate::models::resolve(None, None)?.critic,
    };
    let image = image::load_from_memory(png)
        .context("the image is not a decodable PNG")?
        .to_rgb8();
    redraft_common::invalid::check_prompt("--prompt", &args.prompt, 1000)?;
    let scorer = redraft_critic::ClipScorer::load(&folder, &Device::Cpu, DType::F32)?;
    let judge =
        redraft_critic::judge::Judge::new(scorer, redraft_critic::Calibration::load(&folder)?);
    Ok(judge.critique(&args.prompt, &image)?)
}

fn kind_name(kind: i32) -> String {
    CheckKind::try_from(kind)
        .map(|kind| {
            kind.as_str_name()
                .trim_start_matches("CHECK_KIND_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({kind})"))
}

fn print_table(critique: &Critique) {
    println!("score {:.3}: {}", critique.score, critique.summary);
    let subject_width = critique
        .checks
        .iter()
        .map(|check| check.subject.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(7, 48);
    println!(
        "{:<10} {:<6} {:>6}  {:<subject_width$}  {:<10}  observed",
        "check", "result", "score", "subject", "expected"
    );
    for check in &critique.checks {
        let result = if check.passed {
            "pass"
        } else if check.hard {
            "FAIL!"
        } else {
            "fail"
        };
        // Probe checks expect a short value ("two"); the others a sentence,
        // which the table leaves out.
        let expected = if check.variants.is_empty() {
            ""
        } else {
            check.expected.as_str()
        };
        println!(
            "{:<10} {:<6} {:>6.3}  {:<subject_width$}  {:<10}  {}",
            kind_name(check.kind),
            result,
            check.score,
            check.subject,
            expected,
            check.observed
        );
        if !check.passed && !check.feedback.is_empty() {
            println!("{:>20}{}", "", check.feedback);
        }
    }
}

fn critique_json(critique: &Critique) -> serde_json::Value {
    serde_json::json!({
        "score": critique.score,
        "summary": critique.summary,
        "hard_checks_passed": critique.hard_checks_passed,
        "seconds": critique.seconds,
        "checks": critique.checks.iter().map(|check| serde_json::json!({
            "kind": kind_name(check.kind),
            "subject": check.subject,
            "expected": check.expected,
            "observed": check.observed,
            "score": check.score,
            "passed": check.passed,
            "hard": check.hard,
            "weight": check.weight,
            "feedback": check.feedback,
            "variants": check.variants.iter().map(|variant| serde_json::json!({
                "text": variant.text,
                "probability": variant.probability,
                "value": variant.value,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
