//! `redraft eval` with the default shapes-v1 models, as CI runs it: a
//! small fixed-seed evaluation in which the adaptive strategy must beat
//! single-shot generation.

use redraft_tests::{repo_root, success_stdout};
use tokio::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_redraft-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_beats_single_shot() {
    let models = repo_root().join("models/shapes-v1");
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("eval.json");
    let output = Command::new(EXE)
        .current_dir(repo_root())
        .env("LOG_LEVEL", "warn")
        .kill_on_drop(true)
        .args([
            "eval",
            "--prompts",
            "eval/shapes.jsonl",
            "--per-category",
            "4",
        ])
        .args(["--strategies", "single-shot,adaptive", "--budgets", "4"])
        .args(["--seed", "0", "--concurrency", "2"])
        .arg("--generator-model")
        .arg(models.join("generator"))
        .arg("--critic-model")
        .arg(models.join("critic"))
        .arg("--json")
        .arg(&json)
        .output()
        .await
        .unwrap();
    let stdout = success_stdout(&output);
    assert!(stdout.contains("overall"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["prompts"], 24, "{report}");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let overall = |strategy: &str| {
        runs.iter()
            .find(|run| run["strategy"] == strategy)
            .and_then(|run| run["overall"].as_f64())
            .unwrap()
    };
    let calls = |strategy: &str| {
        runs.iter()
            .find(|run| run["strategy"] == strategy)
            .and_then(|run| run["mean_generator_calls"].as_f64())
            .unwrap()
    };
    // Every job obeys its budget.
    assert_eq!(calls("single-shot"), 1.0, "{stdout}");
    assert!(calls("adaptive") <= 4.0, "{stdout}");
    assert!(
        overall("adaptive") > overall("single-shot"),
        "adaptive does not beat single-shot:\n{stdout}"
    );
}
