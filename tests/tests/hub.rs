//! `--model` with a Hugging Face repo id. The generator and critic download
//! tiny models from a loopback HTTP server that responds to the requests
//! hf-hub sends to the hub, then serve them. Failures name the repo, the file
//! and the endpoint. No request leaves 127.0.0.1.
//!
//! hf-hub 0.5 (blocking client) sends three kinds of request:
//! `GET /api/models/{repo}/revision/{revision}` for the file list and commit,
//! `GET /{repo}/resolve/{revision}/{file}` with `Range: bytes=0-0` for a
//! file's `etag`, `x-repo-commit` and size (from `Content-Range`), and the
//! same URL with `Range: bytes={start}-` for its content.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use redraft_cli::launcher::{ActorSpec, RunningActor};
use redraft_proto::critic_client::CriticClient;
use redraft_proto::generator_client::GeneratorClient;
use redraft_proto::{CritiqueRequest, GenerateRequest, Image, InfoRequest, generate_event};
use redraft_tests::{launcher, tiny_models};

const EXE: &str = env!("CARGO_BIN_EXE_redraft-under-test");

/// Commit hash every served repo reports.
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One repository the stand-in hub serves: file paths and their bytes;
/// `None` is a listed file whose download returns 404.
type ServedRepo = BTreeMap<String, Option<Vec<u8>>>;

/// A loopback HTTP server that responds like the Hugging Face hub and
/// records the path of every request it receives.
struct FakeHub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeHub {
    async fn start(repos: BTreeMap<String, ServedRepo>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let repos = Arc::new(repos);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (repos, log) = (repos.clone(), log.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    log.lock().unwrap().push(request.uri().path().to_string());
                    let response = respond(&repos, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            server,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Token the stand-in hub requires for repos whose owner is `private`.
const TOKEN: &str = "hf_test_token";

fn respond(
    repos: &BTreeMap<String, ServedRepo>,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|value| value.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
    if path.contains("private/") && !authorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Full::new(Bytes::from_static(b"unauthorized")))
            .unwrap();
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, revision)) = rest.split_once("/revision/") else {
            return not_found("RepoNotFound");
        };
        return match repos.get(repo) {
            Some(files) if revision == "main" || revision == COMMIT => list(files),
            Some(_) => not_found("RevisionNotFound"),
            None => not_found("RepoNotFound"),
        };
    }
    // `/{owner}/{name}/resolve/{revision}/{file}`
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [owner, name, "resolve", revision, file] = parts.as_slice() else {
        return not_found("EntryNotFound");
    };
    let repo = format!("{owner}/{name}");
    let Some(files) = repos.get(&repo) else {
        return not_found("RepoNotFound");
    };
    if *revision != "main" && *revision != COMMIT {
        return not_found("RevisionNotFound");
    }
    match files.get(*file) {
        Some(Some(bytes)) => file_range(bytes, request),
        _ => not_found("EntryNotFound"),
    }
}

fn list(files: &ServedRepo) -> Response<Full<Bytes>> {
    let siblings: Vec<_> = files
        .keys()
        .map(|file| serde_json::json!({ "rfilename": file }))
        .collect();
    let body = serde_json::json!({ "sha": COMMIT, "siblings": siblings });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Serves a `Range: bytes=START-` or `bytes=START-END` request with 206, or
/// a request without a range with the whole file.
fn file_range(bytes: &[u8], request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let total = bytes.len();
    let range = request
        .headers()
        .get("range")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("bytes="))
        .and_then(|value| value.split_once('-'))
        .map(|(start, end)| {
            let start: usize = start.parse().unwrap_or(0);
            let end: usize = end.parse().unwrap_or(total - 1).min(total - 1);
            (start, end)
        });
    let builder = Response::builder()
        .header("etag", format!("\"{}\"", content_etag(bytes)))
        .header("x-repo-commit", COMMIT);
    match range {
        Some((start, end)) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header("content-range", format!("bytes {start}-{end}/{total}"))
            .body(Full::new(Bytes::copy_from_slice(&bytes[start..=end]))),
        None => builder.body(Full::new(Bytes::copy_from_slice(bytes))),
    }
    .unwrap()
}

/// Returns a stand-in for the hub's etag (a SHA-256 for weights, a git hash for
/// others): equal bytes give equal etags, which is all hf-hub relies on.
fn content_etag(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016x}{:08x}", hasher.finish(), bytes.len())
}

fn not_found(code: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("x-error-code", code)
        .body(Full::new(Bytes::from_static(b"not found")))
        .unwrap()
}

/// Reads every file under `dir`, keyed by its path relative to `dir` with '/' separators.
fn folder_files(dir: &Path) -> ServedRepo {
    fn walk(dir: &Path, prefix: &str, files: &mut ServedRepo) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.path().is_dir() {
                walk(&entry.path(), &relative, files);
            } else {
                files.insert(relative, Some(std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    let mut files = ServedRepo::new();
    walk(dir, "", &mut files);
    files
}

const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";
const UNET_FP16_WEIGHTS: &str = "unet/diffusion_pytorch_model.fp16.safetensors";

/// Returns the repos every test serves:
/// - `owner/tiny`: the tiny generator, plus a safety checker and a `.bin`
///   copy of the UNet, which no generator should fetch, and an fp16 UNet
///   variant (the same F32 bytes; loading converts them);
/// - `owner/tiny-clip`: the tiny critic;
/// - `owner/no-unet`: the tiny generator without UNet weights;
/// - `owner/broken-link`: the tiny critic whose listed weights return 404;
/// - `private/tiny-clip`: the tiny critic, for requests with [`TOKEN`] only.
fn served_repos() -> BTreeMap<String, ServedRepo> {
    let models = tiny_models();
    let mut generator = folder_files(&models.generator);
    let unet = generator[UNET_WEIGHTS].clone();
    generator.insert(UNET_FP16_WEIGHTS.to_string(), unet.clone());
    generator.insert("unet/diffusion_pytorch_model.bin".to_string(), unet);
    generator.insert(
        "safety_checker/model.safetensors".to_string(),
        Some(b"not needed".to_vec()),
    );
    let critic = folder_files(&models.critic);

    let mut no_unet = generator.clone();
    no_unet.retain(|file, _| !file.starts_with("unet/diffusion_pytorch_model"));
    let mut broken_link = critic.clone();
    broken_link.insert("model.safetensors".to_string(), None);

    BTreeMap::from([
        ("owner/tiny".to_string(), generator),
        ("private/tiny-clip".to_string(), critic.clone()),
        ("owner/tiny-clip".to_string(), critic),
        ("owner/no-unet".to_string(), no_unet),
        ("owner/broken-link".to_string(), broken_link),
    ])
}

/// Builds an actor spec for `role` that fetches `model` from `hub` into `home`.
fn hub_actor(
    role: &'static str,
    model: &str,
    hub: &FakeHub,
    home: &Path,
    extra: &[&str],
) -> ActorSpec {
    let service = match role {
        "generator" => "redraft.v1.Generator",
        _ => "redraft.v1.Critic",
    };
    let mut args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--model",
        model,
        "--hf-endpoint",
        &hub.endpoint(),
        "--hf-home",
        home.to_str().unwrap(),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.extend(extra.iter().map(|arg| arg.to_string()));
    ActorSpec {
        role,
        name: format!("{role}-hub"),
        service,
        args,
    }
}

/// Draws one small image and returns its PNG.
async fn generate_one(actor: &RunningActor) -> Image {
    let mut client = GeneratorClient::connect(actor.url()).await.unwrap();
    let request = GenerateRequest {
        prompt: "a red circle".to_string(),
        seed: Some(1),
        width: 64,
        height: 64,
        steps: Some(2),
        ..Default::default()
    };
    let mut events = client.generate(request).await.unwrap().into_inner();
    while let Some(event) = events.message().await.unwrap() {
        if let Some(generate_event::Event::Result(result)) = event.event {
            return result.image.expect("a result carries an image");
        }
    }
    panic!("the generate stream ended without a result");
}

fn downloads(requests: &[String]) -> Vec<&str> {
    requests
        .iter()
        .filter_map(|path| path.split_once("/resolve/main/").map(|(_, file)| file))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_ids_download_and_serve() {
    let hub = FakeHub::start(served_repos()).await;
    let home = tempfile::tempdir().unwrap();
    let launcher = launcher(EXE.as_ref());

    let mut generator = launcher
        .start(&hub_actor(
            "generator",
            "owner/tiny",
            &hub,
            home.path(),
            &[],
        ))
        .await
        .unwrap();
    let mut critic = launcher
        .start(&hub_actor(
            "critic",
            "owner/tiny-clip",
            &hub,
            home.path(),
            &[],
        ))
        .await
        .unwrap();

    // Both report the repo id and work as users would call them.
    let mut generator_client = GeneratorClient::connect(generator.url()).await.unwrap();
    let info = generator_client
        .info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.model_id, "owner/tiny");
    assert_eq!(info.dtype, "f32");
    let image = generate_one(&generator).await;
    assert_eq!((image.width, image.height), (64, 64));

    let mut critic_client = CriticClient::connect(critic.url()).await.unwrap();
    let info = critic_client
        .info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.model_id, "owner/tiny-clip");
    let critique = critic_client
        .critique(CritiqueRequest {
            prompt: "a red circle".to_string(),
            image: Some(image),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!((0.0..=1.0).contains(&critique.score), "{critique:?}");
    assert!(!critique.checks.is_empty(), "{critique:?}");

    // Only the layout's files were fetched, each once after its size check.
    let requests = hub.requests();
    let fetched = downloads(&requests);
    assert!(fetched.contains(&UNET_WEIGHTS), "{fetched:?}");
    assert!(fetched.contains(&"model_index.json"), "{fetched:?}");
    assert!(fetched.contains(&"tokenizer.json"), "{fetched:?}");
    for skipped in [
        UNET_FP16_WEIGHTS,
        "unet/diffusion_pytorch_model.bin",
        "safety_checker/model.safetensors",
    ] {
        assert!(
            !fetched.contains(&skipped),
            "{skipped} was fetched: {fetched:?}"
        );
    }
    let unet_requests = fetched.iter().filter(|file| **file == UNET_WEIGHTS).count();
    assert_eq!(unet_requests, 2, "{fetched:?}");

    // The downloads landed in the standard cache layout under HF_HOME.
    let snapshot = home
        .path()
        .join("hub/models--owner--tiny/snapshots")
        .join(COMMIT);
    assert!(snapshot.join(UNET_WEIGHTS).is_file());
    let cached_ref = std::fs::read_to_string(home.path().join("hub/models--owner--tiny/refs/main"));
    assert_eq!(cached_ref.unwrap(), COMMIT);

    launcher.stop(&mut generator).await;
    launcher.stop(&mut critic).await;

    // A second start lists the repo again but downloads nothing.
    let before = hub.requests().len();
    let mut generator = launcher
        .start(&hub_actor(
            "generator",
            "owner/tiny",
            &hub,
            home.path(),
            &[],
        ))
        .await
        .unwrap();
    let again: Vec<String> = hub.requests()[before..].to_vec();
    assert_eq!(again, ["/api/models/owner/tiny/revision/main"]);
    launcher.stop(&mut generator).await;

    // Offline, the cache alone is enough and the hub gets no request.
    let before = hub.requests().len();
    let mut generator = launcher
        .start(&hub_actor(
            "generator",
            "owner/tiny",
            &hub,
            home.path(),
            &["--hf-hub-offline"],
        ))
        .await
        .unwrap();
    let image = generate_one(&generator).await;
    assert_eq!((image.width, image.height), (64, 64));
    assert_eq!(hub.requests().len(), before);
    launcher.stop(&mut generator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f16_fetches_fp16_variant() {
    let hub = FakeHub::start(served_repos()).await;
    let home = tempfile::tempdir().unwrap();
    let launcher = launcher(EXE.as_ref());
    let mut generator = launcher
        .start(&hub_actor(
            "generator",
            "owner/tiny",
            &hub,
            home.path(),
            &["--dtype", "f16", "--device", "cpu"],
        ))
        .await
        .unwrap();

    let mut client = GeneratorClient::connect(generator.url()).await.unwrap();
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.dtype, "f16");
    let image = generate_one(&generator).await;
    assert_eq!((image.width, image.height), (64, 64));

    let requests = hub.requests();
    let fetched = downloads(&requests);
    assert!(fetched.contains(&UNET_FP16_WEIGHTS), "{fetched:?}");
    assert!(!fetched.contains(&UNET_WEIGHTS), "{fetched:?}");
    launcher.stop(&mut generator).await;

    // The critic runs in F16 too.
    let mut critic = launcher
        .start(&hub_actor(
            "critic",
            "owner/tiny-clip",
            &hub,
            home.path(),
            &["--dtype", "f16"],
        ))
        .await
        .unwrap();
    let mut client = CriticClient::connect(critic.url()).await.unwrap();
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.dtype, "f16");
    let critique = client
        .critique(CritiqueRequest {
            prompt: "a red circle".to_string(),
            image: Some(image),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!((0.0..=1.0).contains(&critique.score), "{critique:?}");
    launcher.stop(&mut critic).await;
}

/// Runs `redraft-under-test ROLE ARGS` with only `env` (plus PATH) set and
/// returns its output once it exits.
async fn run_actor(role: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(EXE);
    command
        .arg(role)
        .args(["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOG_LEVEL", "error")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the actor exits within 120 s")
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_repo_names_repo_and_endpoint() {
    let hub = FakeHub::start(served_repos()).await;
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    // The settings come from HF_ENDPOINT and HF_HOME this time.
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home.path().to_str().unwrap()),
    ];
    let output = run_actor("generator", &["--model", "owner/missing"], &env).await;
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("owner/missing"), "{stderr}");
    assert!(stderr.contains(&endpoint), "{stderr}");
    assert!(stderr.contains("not found (HTTP 404)"), "{stderr}");
    assert_eq!(hub.requests(), ["/api/models/owner/missing/revision/main"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_weights_named() {
    let hub = FakeHub::start(served_repos()).await;
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home.path().to_str().unwrap()),
    ];
    let output = run_actor("generator", &["--model", "owner/no-unet"], &env).await;
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("owner/no-unet"), "{stderr}");
    assert!(
        stderr.contains(&format!("has no {UNET_WEIGHTS}")),
        "{stderr}"
    );
    assert!(stderr.contains(&endpoint), "{stderr}");
    assert!(downloads(&hub.requests()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_download_names_file() {
    let hub = FakeHub::start(served_repos()).await;
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home.path().to_str().unwrap()),
    ];
    let output = run_actor("critic", &["--model", "owner/broken-link"], &env).await;
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "failed to download model.safetensors of Hugging Face repo owner/broken-link"
        ),
        "{stderr}"
    );
    assert!(stderr.contains(&endpoint), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_without_cache_fails() {
    let hub = FakeHub::start(served_repos()).await;
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home.path().to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let output = run_actor("critic", &["--model", "owner/tiny-clip"], &env).await;
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("HF_HUB_OFFLINE is set"), "{stderr}");
    assert!(stderr.contains("owner/tiny-clip"), "{stderr}");
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_model_value_rejected() {
    for role in ["generator", "critic"] {
        let output = run_actor(role, &["--model", "not/a/repo"], &[]).await;
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{role}: {stderr}");
        assert!(stderr.contains("--model"), "{role}: {stderr}");
        assert!(stderr.contains("not/a/repo"), "{role}: {stderr}");
        assert!(stderr.contains("owner/name[@revision]"), "{role}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf16_on_cpu_rejected() {
    let models = tiny_models();
    let cases: [(&str, &PathBuf); 2] =
        [("generator", &models.generator), ("critic", &models.critic)];
    for (role, model) in cases {
        let mut args = vec!["--model", model.to_str().unwrap(), "--dtype", "bf16"];
        if role == "generator" {
            args.extend(["--device", "cpu"]);
        }
        let output = run_actor(role, &args, &[]).await;
        let stderr = stderr(&output);
        assert!(!output.status.success(), "{role}: {stderr}");
        assert!(stderr.contains("--dtype bf16"), "{role}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_hub_named() {
    // A loopback port that was free a moment ago, so nothing listens on it.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let home = tempfile::tempdir().unwrap();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home.path().to_str().unwrap()),
    ];
    let output = run_actor("critic", &["--model", "owner/tiny-clip"], &env).await;
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("owner/tiny-clip"), "{stderr}");
    assert!(stderr.contains(&endpoint), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(stderr.contains("HF_HUB_OFFLINE=1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_repo_needs_token() {
    let hub = FakeHub::start(served_repos()).await;
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home.path().to_str().unwrap()),
    ];
    let output = run_actor("critic", &["--model", "private/tiny-clip"], &env).await;
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("access denied (HTTP 401)"), "{stderr}");
    assert!(stderr.contains("HF_TOKEN"), "{stderr}");

    // The token `huggingface-cli login` saves in HF_HOME/token is sent.
    std::fs::write(home.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let launcher = launcher(EXE.as_ref());
    let spec = hub_actor("critic", "private/tiny-clip", &hub, home.path(), &[]);
    let mut critic = launcher.start(&spec).await.unwrap();
    let mut client = CriticClient::connect(critic.url()).await.unwrap();
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.model_id, "private/tiny-clip");
    launcher.stop(&mut critic).await;
}
