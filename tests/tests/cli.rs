//! The `redraft` command line as a user runs it: `generate` end to end,
//! `up` with signals and a dying child, and the Python client against `up`.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redraft_tests::{failure_stderr, repo_root, success_stdout, tiny_models};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const EXE: &str = env!("CARGO_BIN_EXE_redraft-under-test");

fn redraft() -> Command {
    let mut command = Command::new(EXE);
    command.env("LOG_LEVEL", "warn").kill_on_drop(true);
    command
}

fn model_flags() -> Vec<String> {
    let models = tiny_models();
    vec![
        "--generator-model".to_string(),
        models.generator.display().to_string(),
        "--critic-model".to_string(),
        models.critic.display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_writes_final_and_report() {
    let out = tempfile::tempdir().unwrap();
    let output = redraft()
        .args([
            "generate",
            "a red circle left of a blue square",
            "--seed",
            "3",
        ])
        .args(["--max-iterations", "2", "--candidates", "2", "--steps", "3"])
        .args(["--strategy", "best-of-n"])
        .arg("--out")
        .arg(out.path())
        .args(model_flags())
        .output()
        .await
        .unwrap();
    let stdout = success_stdout(&output);
    assert!(stdout.contains("final image:"), "{stdout}");

    let final_image = image::open(out.path().join("final.png")).unwrap();
    assert_eq!((final_image.width(), final_image.height()), (64, 64));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["status"], "exhausted");
    assert_eq!(report["prompt"], "a red circle left of a blue square");
    assert_eq!(report["policy"]["strategy"], "best_of_n");
    assert_eq!(report["policy"]["max_generator_calls"], 4);
    assert_eq!(report["totals"]["budget_spent"], 4);
    let iterations = report["iterations"].as_array().unwrap();
    assert_eq!(iterations.len(), 2);
    for iteration in iterations {
        assert_eq!(iteration["action"], "reseed");
        for candidate in iteration["candidates"].as_array().unwrap() {
            assert_eq!(candidate["action"], "reseed");
            assert!(candidate["init_from"].is_null());
            let score = candidate["score"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&score));
            assert!(!candidate["checks"].as_array().unwrap().is_empty());
            assert!(candidate["timings"]["generate_seconds"].as_f64().unwrap() > 0.0);
            assert!(candidate["timings"]["critique_seconds"].as_f64().unwrap() > 0.0);
            let image = candidate["image"].as_str().unwrap();
            assert!(out.path().join(image).is_file(), "missing {image}");
        }
    }
    assert_eq!(report["totals"]["generator_calls"], 4);
    assert_eq!(report["totals"]["critic_calls"], 4);
    assert!(report["totals"]["wall_seconds"].as_f64().unwrap() > 0.0);
    assert!(report["best"]["score"].is_number());
    assert_eq!(
        std::fs::read_dir(out.path().join("candidates"))
            .unwrap()
            .count(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_rejects_bad_threshold() {
    let out = tempfile::tempdir().unwrap();
    let output = redraft()
        .args(["generate", "a red circle", "--threshold", "2"])
        .arg("--out")
        .arg(out.path())
        .args(model_flags())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("invalid --threshold: 2"), "{stderr}");
    assert!(stderr.contains("[0, 1]"), "{stderr}");
    assert!(!out.path().join("final.png").exists());
}

/// A running `redraft up` and what it printed.
struct Up {
    child: Child,
    orchestrator: String,
    pids: Vec<(String, u32)>,
    _stdout: Lines<BufReader<ChildStdout>>,
}

async fn start_up(stderr: Stdio) -> Up {
    let mut child = redraft()
        .args(["up", "--listen", "127.0.0.1:0", "--grace-seconds", "5"])
        .args(model_flags())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pids = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("redraft is up: orchestrator at ") {
                return url.to_string();
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 2 && fields[1] == "pid" {
                pids.push((fields[0].to_string(), fields[2].parse().unwrap()));
            }
        }
        panic!("redraft up ended before it was up");
    };
    let orchestrator = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .unwrap();
    Up {
        child,
        orchestrator,
        pids,
        _stdout: lines,
    }
}

fn is_running(pid: u32) -> bool {
    // Signal 0 checks existence only. A zombie still counts, but `up` reaps its children.
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stops_children_on_sigterm() {
    let mut up = start_up(Stdio::inherit()).await;
    let names: Vec<&str> = up.pids.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, vec!["generator-1", "critic-1", "orchestrator"]);
    assert!(up.pids.iter().all(|(_, pid)| is_running(*pid)));

    kill(
        Pid::from_raw(up.child.id().unwrap() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), up.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    for (name, pid) in &up.pids {
        assert!(
            !is_running(*pid),
            "{name} (pid {pid}) still runs after up exited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_fails_when_child_dies() {
    let up = start_up(Stdio::piped()).await;
    let critic = up
        .pids
        .iter()
        .find(|(name, _)| name == "critic-1")
        .unwrap()
        .1;
    kill(Pid::from_raw(critic as i32), Signal::SIGKILL).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(60), up.child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = failure_stderr(&output);
    assert!(stderr.contains("critic-1 exited unexpectedly"), "{stderr}");
    for (name, pid) in &up.pids {
        assert!(
            !is_running(*pid),
            "{name} (pid {pid}) still runs after up exited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_gets_image() {
    let mut up = start_up(Stdio::inherit()).await;
    let out = tempfile::tempdir().unwrap();
    let script = repo_root().join("examples/python/client.py");
    let target = up.orchestrator.trim_start_matches("http://").to_string();
    let output = Command::new("python3")
        .arg(&script)
        .args([
            "--orchestrator",
            &target,
            "--prompt",
            "a red circle",
            "--threshold",
            "0",
            "--seed",
            "5",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed (install it with pip install -r examples/python/requirements.txt)\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("JOB_STATUS_SATISFIED"), "{stdout}");
    let image = image::open(out.path().join("final.png")).unwrap();
    assert_eq!(image.width(), 64);

    kill(
        Pid::from_raw(up.child.id().unwrap() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = up.child.wait().await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_tiny_writes_both_folders() {
    let dir = tempfile::tempdir().unwrap();
    let output = redraft()
        .args(["models", "tiny"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "generator/model_index.json",
        "generator/unet/diffusion_pytorch_model.safetensors",
        "generator/tokenizer/tokenizer.json",
        "critic/config.json",
        "critic/model.safetensors",
        "critic/tokenizer.json",
    ] {
        assert!(dir.path().join(file).is_file(), "missing {file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_model_folder_named() {
    let out = tempfile::tempdir().unwrap();
    let output = redraft()
        .args([
            "generate",
            "a red circle",
            "--generator-model",
            "/nonexistent/generator",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .await
        .unwrap();
    let stderr = failure_stderr(&output);
    assert!(
        stderr.contains("--generator-model /nonexistent/generator: folder not found"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critique_prints_checks_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.png");
    let image = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 90])
    });
    image.save(&path).unwrap();
    let output = redraft()
        .args([
            "critique",
            "--prompt",
            "a red circle",
            "--json",
            "--critic-model",
        ])
        .arg(&tiny_models().critic)
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let critique: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let score = critique["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    let kinds: Vec<&str> = critique["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| check["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"alignment"), "{kinds:?}");
    assert!(kinds.contains(&"quality"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critique_rejects_non_png() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.png");
    std::fs::write(&path, b"plain text").unwrap();
    let output = redraft()
        .args(["critique", "--prompt", "a red circle", "--critic-model"])
        .arg(&tiny_models().critic)
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stderr = failure_stderr(&output);
    assert!(stderr.contains("not a decodable PNG"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critique_against_running_critic() {
    let stack = redraft_tests::TestStack::start(EXE.as_ref(), 1, 1)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([255, 255, 255]))
        .save(&path)
        .unwrap();
    let output = redraft()
        .args([
            "critique",
            "--prompt",
            "a red circle",
            "--critic",
            &stack.url("critic-1"),
        ])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A blank white image fails the hard blank check, so the score is 0.
    assert!(stdout.starts_with("score 0.000"), "{stdout}");
    assert!(stdout.contains("FAIL!"), "{stdout}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_rejects_file_as_out() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taken");
    std::fs::write(&file, b"x").unwrap();
    let output = redraft()
        .args(["generate", "a red circle", "--out"])
        .arg(&file)
        .args(model_flags())
        .output()
        .await
        .unwrap();
    let stderr = failure_stderr(&output);
    assert!(stderr.contains("exists and is not a folder"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_rejects_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = redraft()
        .args(["up", "--listen", &address])
        .args(model_flags())
        .output()
        .await
        .unwrap();
    let stderr = failure_stderr(&output);
    assert!(
        stderr.contains(&format!("--listen {address} is not available")),
        "{stderr}"
    );
}

/// `redraft shapes judge` on a drawn image: the verdict, the objects, and
/// what the image shows as a caption; the exit code follows the verdict.
#[tokio::test]
async fn shapes_judge_reads_image_back() {
    let image = repo_root().join("eval/generated/056-two_objects.png");
    let output = redraft()
        .args(["shapes", "judge", "--prompt", "a circle and a square"])
        .arg(&image)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("incorrect: expected 1 circle, found 2"),
        "{stdout}"
    );
    assert!(stdout.contains("reads as: two circles"), "{stdout}");

    let output = redraft()
        .args(["shapes", "judge", "--prompt", "two circles"])
        .arg(&image)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.starts_with("correct"), "{stdout}");
}

/// `redraft shapes calibrate-critic --dry-run` on a copy of the default
/// critic: it reports the verdict's agreement with the per-probe margins and
/// with the margins fitted for the verdict, which are at least as good on the
/// fit scenes, and leaves the calibration file as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibrate_critic_fits_margins_for_the_verdict() {
    let critic = tempfile::tempdir().unwrap();
    let source = repo_root().join("models/shapes-v1/critic");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, critic.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let calibration_file = critic.path().join("redraft_critic.json");
    let before = std::fs::read(&calibration_file).unwrap();
    let report = critic.path().join("report.json");
    let output = redraft()
        .args(["shapes", "calibrate-critic", "--dry-run"])
        .args(["--fit-per-category", "4", "--test-per-category", "2"])
        .arg("--critic-model")
        .arg(critic.path())
        .arg("--json")
        .arg(&report)
        .output()
        .await
        .unwrap();
    let stdout = success_stdout(&output);
    assert!(stdout.contains("chosen margins"), "{stdout}");
    assert!(stdout.contains("dry run"), "{stdout}");
    assert_eq!(std::fs::read(&calibration_file).unwrap(), before);

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let verdict = &report["verdict"];
    assert_eq!(verdict["margins"], "verdict");
    let agreement = |margins: &str| {
        verdict[margins]["fit"]["agreement"]
            .as_f64()
            .unwrap_or_else(|| panic!("no {margins} agreement in {verdict}"))
    };
    assert!(
        agreement("chosen_margins") >= agreement("per_probe_margins"),
        "{verdict}"
    );
    assert!(agreement("chosen_margins") > 0.5, "{verdict}");
    for kind in ["presence", "count", "color", "relation"] {
        let margin = report[kind]["margin"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&margin), "{kind}: {margin}");
    }
}

#[tokio::test]
async fn calibrate_critic_rejects_a_threshold_out_of_range() {
    let output = redraft()
        .args(["shapes", "calibrate-critic", "--dry-run"])
        .args(["--verdict-threshold", "1.5"])
        .output()
        .await
        .unwrap();
    let stderr = failure_stderr(&output);
    assert!(
        stderr.contains("--verdict-threshold 1.5 is invalid; it must be in [0, 1]"),
        "{stderr}"
    );
}
