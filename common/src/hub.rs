//! Model sources for `--model`: a local folder, or a Hugging Face hub
//! repository fetched into the hub's standard cache with the `hf-hub` crate
//! (its blocking ureq client).
//!
//! The cache has the layout the Python `huggingface_hub` library uses, so
//! both share downloads: `HF_HOME/hub/models--OWNER--NAME/` contains `blobs/`,
//! `refs/REVISION` (the commit a branch pointed to) and
//! `snapshots/COMMIT/`, whose files link to the blobs.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressStyle};

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The branch a repo id without `@revision` refers to.
pub const DEFAULT_REVISION: &str = "main";

/// Maximum length of the owner or the name in a hub repo id, in characters
/// (the hub's limit).
const MAX_REPO_PART_CHARS: usize = 96;

/// Settings for fetching the repo ids given to `--model`.
#[derive(Debug, Clone, clap::Args)]
pub struct HubArgs {
    /// Base URL of the Hugging Face hub that repo ids in --model are downloaded from.
    #[arg(long, env = "HF_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub hf_endpoint: String,

    /// Hugging Face home folder; downloads are cached in its `hub` subfolder.
    /// Default: $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
    #[arg(long, env = "HF_HOME")]
    pub hf_home: Option<PathBuf>,

    /// Load repo ids from the cache only, without contacting the hub
    /// (1, true, yes or on enable it).
    #[arg(
        long,
        env = "HF_HUB_OFFLINE",
        value_parser = clap::builder::BoolishValueParser::new(),
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub hf_hub_offline: bool,
}

impl HubArgs {
    /// Returns the Hugging Face home folder: `--hf-home`, else
    /// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
    pub fn home(&self) -> anyhow::Result<PathBuf> {
        if let Some(home) = &self.hf_home {
            return Ok(home.clone());
        }
        if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|dir| !dir.is_empty()) {
            return Ok(PathBuf::from(cache).join("huggingface"));
        }
        match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".cache").join("huggingface")),
            None => anyhow::bail!(
                "no Hugging Face cache folder: HOME is not set; pass --hf-home or set HF_HOME"
            ),
        }
    }

    /// Returns the endpoint without a trailing slash, after checking that it
    /// is an http or https URL.
    fn endpoint(&self) -> anyhow::Result<String> {
        let endpoint = self.hf_endpoint.trim_end_matches('/');
        let valid = ["http://", "https://"]
            .iter()
            .any(|scheme| endpoint.len() > scheme.len() && endpoint.starts_with(scheme));
        if !valid {
            anyhow::bail!(
                "invalid --hf-endpoint (HF_ENDPOINT) {:?}; it must be an http:// or https:// URL such as {DEFAULT_ENDPOINT}",
                self.hf_endpoint
            );
        }
        Ok(endpoint.to_string())
    }
}

/// The model source a `--model` value names: a local folder or a hub repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A folder on this machine.
    Folder(PathBuf),
    /// A Hugging Face hub model repository.
    Repo(RepoId),
}

impl ModelSource {
    /// Parses a `--model` value. An existing path is a folder, and otherwise
    /// an `owner/name` or `owner/name@revision` value is a repo id. Anything
    /// else is an error that lists what is accepted.
    pub fn parse(value: &str) -> Result<Self, String> {
        if Path::new(value).exists() {
            return Ok(Self::Folder(PathBuf::from(value)));
        }
        RepoId::parse(value).map(Self::Repo).map_err(|reason| {
            format!(
                "no folder {value:?} exists, and it is not a Hugging Face repo id ({reason}); \
                 pass an existing model folder or a repo id owner/name[@revision], \
                 for example stabilityai/sd-turbo"
            )
        })
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Folder(path) => write!(f, "{}", path.display()),
            Self::Repo(repo) => write!(f, "{repo}"),
        }
    }
}

/// A hub model repository and the revision (branch, tag or commit) to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    /// `owner/name`.
    pub id: String,
    /// Branch, tag or commit hash.
    pub revision: String,
}

impl RepoId {
    /// Parses `owner/name` or `owner/name@revision`. The error names the part
    /// that breaks the hub's naming rules.
    pub fn parse(value: &str) -> Result<Self, String> {
        let (id, revision) = match value.split_once('@') {
            Some((id, revision)) => (id, revision),
            None => (value, DEFAULT_REVISION),
        };
        let parts: Vec<&str> = id.split('/').collect();
        let [owner, name] = parts.as_slice() else {
            return Err("a repo id has exactly one '/', between owner and name".to_string());
        };
        check_repo_part("owner", owner)?;
        check_repo_part("name", name)?;
        let path_like = revision.starts_with('/') || revision.split('/').any(|part| part == "..");
        if revision.is_empty() || revision.chars().any(char::is_whitespace) || path_like {
            return Err(format!(
                "the revision after '@' must be a branch, tag or commit without spaces, \
                 a leading '/' or \"..\" parts, not {revision:?}"
            ));
        }
        Ok(Self {
            id: id.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.revision == DEFAULT_REVISION {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}@{}", self.id, self.revision)
        }
    }
}

/// Checks one part of a repo id against the hub's rules: ASCII letters,
/// digits, '-', '_' and '.', no "--" or "..", no '-' or '.' at either end,
/// and at most 96 characters.
fn check_repo_part(part: &str, value: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let problem = if value.is_empty() {
        Some("is empty")
    } else if value.chars().count() > MAX_REPO_PART_CHARS {
        Some("is longer than 96 characters")
    } else if !value.chars().all(allowed) {
        Some("may contain only ASCII letters, digits, '-', '_' and '.'")
    } else if value.contains("--") || value.contains("..") {
        Some("may not contain \"--\" or \"..\"")
    } else if value.starts_with(['-', '.']) || value.ends_with(['-', '.']) {
        Some("may not start or end with '-' or '.'")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(format!("the {part} {value:?} {problem}")),
        None => Ok(()),
    }
}

/// The folder layout a model loader reads, which decides the files fetched
/// from a repo.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// A diffusers pipeline: `model_index.json` plus the component
    /// subfolders text-to-image needs (text encoders, tokenizers, UNet, VAE,
    /// scheduler). `safety_checker/`, `feature_extractor/`, `.bin` weights
    /// and single-file checkpoints at the root are never fetched.
    Diffusers {
        /// Fetch `*.fp16.safetensors` weights where the repo has them.
        prefer_fp16: bool,
        /// Files at the root that are fetched when the repo has them.
        optional_files: &'static [&'static str],
    },
    /// A Hugging Face CLIP folder: `config.json`, `tokenizer.json` and
    /// `model.safetensors`.
    Clip {
        /// Files at the root that are fetched when the repo has them.
        optional_files: &'static [&'static str],
    },
}

/// Component subfolders of a diffusers pipeline that generation reads.
const DIFFUSERS_COMPONENTS: [&str; 7] = [
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "unet",
    "vae",
    "scheduler",
];

/// Config and tokenizer files fetched from each diffusers component.
const DIFFUSERS_COMPONENT_FILES: [&str; 7] = [
    "config.json",
    "scheduler_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

/// Weight file stems of diffusers components: the diffusers models' and the
/// transformers models' (text encoders).
const WEIGHT_STEMS: [&str; 2] = ["diffusion_pytorch_model", "model"];

/// Weights every diffusers pipeline needs, under the names loaders read.
const DIFFUSERS_REQUIRED_WEIGHTS: [&str; 3] = [
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
];

const CLIP_REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// One file to fetch: its path in the repo, and the path the loader reads it
/// under, which differs for `fp16` weight variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedFile {
    /// Path in the repo.
    pub remote: String,
    /// Path in the folder handed to the loader.
    pub local: String,
}

impl Layout {
    /// Short name for error messages.
    fn name(&self) -> &'static str {
        match self {
            Self::Diffusers { .. } => "diffusers pipeline",
            Self::Clip { .. } => "CLIP",
        }
    }

    /// Picks the files to fetch from a repo's file list. The error is the
    /// first required file the list lacks.
    pub fn select(&self, files: &[String]) -> Result<Vec<SelectedFile>, String> {
        let present: BTreeSet<&str> = files.iter().map(String::as_str).collect();
        let mut selected = Vec::new();
        let mut take = |path: String| {
            if present.contains(path.as_str()) {
                selected.push(SelectedFile {
                    remote: path.clone(),
                    local: path,
                });
            }
        };
        match *self {
            Self::Clip { optional_files } => {
                for file in CLIP_REQUIRED_FILES.iter().chain(optional_files) {
                    take(file.to_string());
                }
                require(&selected, &CLIP_REQUIRED_FILES)?;
            }
            Self::Diffusers {
                prefer_fp16,
                optional_files,
            } => {
                for file in ["model_index.json"].iter().chain(optional_files) {
                    take(file.to_string());
                }
                for component in DIFFUSERS_COMPONENTS {
                    for file in DIFFUSERS_COMPONENT_FILES {
                        take(format!("{component}/{file}"));
                    }
                }
                for component in DIFFUSERS_COMPONENTS {
                    for stem in WEIGHT_STEMS {
                        let full = format!("{component}/{stem}.safetensors");
                        let half = format!("{component}/{stem}.fp16.safetensors");
                        let has_full = present.contains(full.as_str());
                        let has_half = present.contains(half.as_str());
                        // Without the full-precision file, the fp16 one is
                        // taken for any dtype, because loading converts it.
                        let remote = match (has_full, has_half) {
                            (_, true) if prefer_fp16 => half,
                            (true, _) => full.clone(),
                            (false, true) => half,
                            (false, false) => continue,
                        };
                        selected.push(SelectedFile {
                            remote,
                            local: full,
                        });
                    }
                }
                require(&selected, &["model_index.json"])?;
                require(&selected, &DIFFUSERS_REQUIRED_WEIGHTS)?;
            }
        }
        Ok(selected)
    }
}

fn require(selected: &[SelectedFile], required: &[&str]) -> Result<(), String> {
    for file in required {
        if !selected.iter().any(|chosen| chosen.local == *file) {
            return Err(file.to_string());
        }
    }
    Ok(())
}

/// Failure to turn a repo id into a model folder.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Listing the repo's files failed.
    #[error(
        "failed to list the files of Hugging Face repo {repo} at {endpoint}: {detail}; check the repo id (no local folder of that name exists) and HF_ENDPOINT (--hf-endpoint), or set HF_HUB_OFFLINE=1 to load it from the cache"
    )]
    Listing {
        /// The repo id.
        repo: String,
        /// The hub's base URL.
        endpoint: String,
        /// Description of the failure.
        detail: String,
    },
    /// The repo lacks a file the layout needs.
    #[error("Hugging Face repo {repo} at {endpoint} has no {file}, which a {layout} folder needs")]
    MissingFile {
        /// The repo id.
        repo: String,
        /// The hub's base URL.
        endpoint: String,
        /// The missing file.
        file: String,
        /// Name of the layout.
        layout: &'static str,
    },
    /// Downloading one file failed.
    #[error("failed to download {file} of Hugging Face repo {repo} from {endpoint}: {detail}")]
    Download {
        /// The repo id.
        repo: String,
        /// The hub's base URL.
        endpoint: String,
        /// The file.
        file: String,
        /// Description of the failure.
        detail: String,
    },
    /// Offline mode found no usable snapshot in the cache.
    #[error(
        "HF_HUB_OFFLINE is set but Hugging Face repo {repo} is not in the cache {cache}: {detail}; download it once with the hub reachable"
    )]
    NotCached {
        /// The repo id.
        repo: String,
        /// The hub cache folder.
        cache: PathBuf,
        /// Description of the missing part.
        detail: String,
    },
    /// Reading or writing the cache failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Cache {
        /// The failed operation, for example "create".
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The endpoint or cache folder settings are invalid.
    #[error("{0}")]
    Settings(String),
}

/// A model folder ready for a loader.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// The folder to load.
    pub dir: PathBuf,
    /// The repo id for a hub model, to report as its model id; `None` for a
    /// local folder.
    pub repo: Option<String>,
}

/// Returns the folder `source` names, fetching a repo's `layout` files into
/// the hub cache first (or, offline, finding them there). Blocks on network
/// and disk I/O, so call it off the async runtime.
pub fn resolve(
    source: &ModelSource,
    layout: Layout,
    hub: &HubArgs,
) -> Result<ResolvedModel, HubError> {
    let repo = match source {
        ModelSource::Folder(dir) => {
            return Ok(ResolvedModel {
                dir: dir.clone(),
                repo: None,
            });
        }
        ModelSource::Repo(repo) => repo,
    };
    let home = hub
        .home()
        .map_err(|error| HubError::Settings(error.to_string()))?;
    let cache = Cache::new(home.join("hub"));
    let hf_repo = Repo::with_revision(repo.id.clone(), RepoType::Model, repo.revision.clone());
    let (commit, selected) = if hub.hf_hub_offline {
        find_cached(repo, &hf_repo, &cache, layout)?
    } else {
        download(repo, &hf_repo, &cache, layout, hub)?
    };
    let snapshot = cache.repo(hf_repo.clone()).pointer_path(&commit);
    let dir = if selected.iter().all(|file| file.remote == file.local) {
        snapshot
    } else {
        variant_folder(&home, &hf_repo, &commit, &snapshot, &selected)?
    };
    Ok(ResolvedModel {
        dir,
        repo: Some(repo.to_string()),
    })
}

/// Lists the repo, downloads the selected files missing from the snapshot
/// of its current commit, and points `refs/REVISION` at that commit.
fn download(
    repo: &RepoId,
    hf_repo: &Repo,
    cache: &Cache,
    layout: Layout,
    hub: &HubArgs,
) -> Result<(String, Vec<SelectedFile>), HubError> {
    let endpoint = hub
        .endpoint()
        .map_err(|error| HubError::Settings(error.to_string()))?;
    // A token from HF_TOKEN, else from HF_HOME/token (written by
    // `huggingface-cli login`), lets gated and private repos download.
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|token| !token.trim().is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(endpoint.clone())
        .with_token(token)
        .with_progress(true)
        .build()
        .map_err(|error| HubError::Listing {
            repo: repo.to_string(),
            endpoint: endpoint.clone(),
            detail: format!("failed to build the HTTP client: {error}"),
        })?;
    let api_repo = api.repo(hf_repo.clone());

    tracing::info!(repo = %repo, %endpoint, "listing the files of the Hugging Face repo");
    let info = api_repo.info().map_err(|error| HubError::Listing {
        repo: repo.to_string(),
        endpoint: endpoint.clone(),
        detail: describe(&error, "the repo or revision"),
    })?;
    // The commit names a cache folder, so it must not be a path.
    if info.sha.is_empty() || !info.sha.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(HubError::Listing {
            repo: repo.to_string(),
            endpoint,
            detail: format!("the hub returned an invalid commit hash {:?}", info.sha),
        });
    }
    let files: Vec<String> = info
        .siblings
        .into_iter()
        .map(|file| file.rfilename)
        .collect();
    let selected = layout
        .select(&files)
        .map_err(|file| HubError::MissingFile {
            repo: repo.to_string(),
            endpoint: endpoint.clone(),
            file,
            layout: layout.name(),
        })?;

    let repo_cache = cache.repo(hf_repo.clone());
    let snapshot = repo_cache.pointer_path(&info.sha);
    for file in &selected {
        if snapshot.join(&file.remote).is_file() {
            continue;
        }
        fetch_file(&api_repo, repo, &endpoint, &file.remote, &snapshot)?;
    }
    repo_cache
        .create_ref(&info.sha)
        .map_err(|source| HubError::Cache {
            action: "write",
            path: ref_path(cache, hf_repo),
            source,
        })?;
    Ok((info.sha, selected))
}

/// Downloads one file into `snapshot` with a progress bar on stderr.
fn fetch_file(
    api_repo: &ApiRepo,
    repo: &RepoId,
    endpoint: &str,
    file: &str,
    snapshot: &Path,
) -> Result<(), HubError> {
    let download_error = |detail: String| HubError::Download {
        repo: repo.to_string(),
        endpoint: endpoint.to_string(),
        file: file.to_string(),
        detail,
    };
    let started = Instant::now();
    let mut waiting = false;
    let path = loop {
        match api_repo.download_with_progress(file, DownloadBar::new()) {
            // hf-hub waits 5 s for the lock of a blob another process is
            // downloading. That process either finishes the file or dies,
            // and its lock goes away either way, so waiting on ends.
            // NOTE: no test runs two downloads of one file at once.
            Err(ApiError::LockAcquisition(lock)) => {
                if !waiting {
                    tracing::info!(
                        repo = %repo,
                        file,
                        lock = %lock.display(),
                        "another process is downloading this file; waiting for it"
                    );
                    waiting = true;
                }
                if snapshot.join(file).is_file() {
                    return Ok(());
                }
            }
            result => {
                break result.map_err(|error| download_error(describe(&error, "the file")))?;
            }
        }
    };
    // hf-hub files a download under the commit the server names in
    // `x-repo-commit`, which differs from the listed one only when the
    // branch moved in between.
    if path != snapshot.join(file) {
        return Err(download_error(format!(
            "the revision moved to another commit during the download (now {}); start again",
            path.display()
        )));
    }
    let bytes = std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);
    tracing::info!(
        repo = %repo,
        file,
        bytes,
        seconds = started.elapsed().as_secs_f64(),
        "downloaded"
    );
    Ok(())
}

/// Finds the snapshot `refs/REVISION` points at (or the snapshot named by a
/// commit revision) and selects the layout's files among those it holds.
fn find_cached(
    repo: &RepoId,
    hf_repo: &Repo,
    cache: &Cache,
    layout: Layout,
) -> Result<(String, Vec<SelectedFile>), HubError> {
    let not_cached = |detail: String| HubError::NotCached {
        repo: repo.to_string(),
        cache: cache.path().clone(),
        detail,
    };
    let repo_cache = cache.repo(hf_repo.clone());
    let ref_path = ref_path(cache, hf_repo);
    let commit = match std::fs::read_to_string(&ref_path) {
        Ok(commit) => commit.trim().to_string(),
        Err(_) if repo_cache.pointer_path(&repo.revision).is_dir() => repo.revision.clone(),
        Err(_) => {
            return Err(not_cached(format!("{} does not exist", ref_path.display())));
        }
    };
    let snapshot = repo_cache.pointer_path(&commit);
    let mut files = Vec::new();
    list_files(&snapshot, "", &mut files).map_err(|source| HubError::Cache {
        action: "list",
        path: snapshot.clone(),
        source,
    })?;
    let selected = layout
        .select(&files)
        .map_err(|file| not_cached(format!("the cached snapshot {commit} has no {file}")))?;
    Ok((commit, selected))
}

/// Returns the path of the file that stores the commit `hf_repo`'s revision
/// points at.
fn ref_path(cache: &Cache, hf_repo: &Repo) -> PathBuf {
    cache
        .path()
        .join(hf_repo.folder_name())
        .join("refs")
        .join(hf_repo.revision())
}

/// Appends the paths of the files under `dir`, relative to the snapshot
/// root and joined with '/', the way the hub names them.
fn list_files(dir: &Path, prefix: &str, files: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        // Follows the snapshot's links to blobs.
        let path = entry.path();
        if path.is_dir() {
            list_files(&path, &relative, files)?;
        } else if path.is_file() {
            files.push(relative);
        }
    }
    Ok(())
}

/// Returns a folder under `HF_HOME/redraft-variants` in which every selected
/// file appears under the name its loader reads (`unet/diffusion_pytorch_model.safetensors`
/// for `unet/diffusion_pytorch_model.fp16.safetensors`), as a link into
/// the snapshot. The folder is built aside and renamed into place, so
/// replicas starting together never see half of it.
fn variant_folder(
    home: &Path,
    hf_repo: &Repo,
    commit: &str,
    snapshot: &Path,
    selected: &[SelectedFile],
) -> Result<PathBuf, HubError> {
    let parent = home.join("redraft-variants").join(hf_repo.folder_name());
    let dir = parent.join(format!("{commit}-fp16"));
    if selected.iter().all(|file| dir.join(&file.local).is_file()) {
        return Ok(dir);
    }
    let cache_error = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| HubError::Cache {
            action,
            path,
            source,
        }
    };
    let staging = parent.join(format!(".staging-{}-{commit}", std::process::id()));
    for file in selected {
        let link = staging.join(&file.local);
        let link_parent = link.parent().unwrap_or(&staging);
        std::fs::create_dir_all(link_parent).map_err(cache_error("create", link_parent))?;
        link_file(&snapshot.join(&file.remote), &link).map_err(cache_error("link", &link))?;
    }
    if dir.exists() {
        // A folder left by an older selection is replaced.
        let aside = parent.join(format!(".old-{}-{commit}", std::process::id()));
        if std::fs::rename(&dir, &aside).is_ok() {
            let _ = std::fs::remove_dir_all(&aside);
        }
    }
    if let Err(error) = std::fs::rename(&staging, &dir) {
        let _ = std::fs::remove_dir_all(&staging);
        // Another replica that finished first is as good as this one.
        if !dir.is_dir() {
            return Err(cache_error("create", &dir)(error));
        }
    }
    Ok(dir)
}

#[cfg(unix)]
fn link_file(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn link_file(target: &Path, link: &Path) -> std::io::Result<()> {
    std::fs::copy(target, link).map(|_| ())
}

/// Describes an hf-hub error in plain words. `subject` is what a 404
/// reports as not found.
fn describe(error: &ApiError, subject: &str) -> String {
    match error {
        ApiError::RequestError(inner) => match inner.as_ref() {
            ureq::Error::StatusCode(404) => format!(
                "{subject} was not found (HTTP 404); a private or gated repo also needs a token in HF_TOKEN"
            ),
            ureq::Error::StatusCode(code @ (401 | 403)) => format!(
                "access denied (HTTP {code}); set HF_TOKEN to a token with access to the repo"
            ),
            ureq::Error::StatusCode(code) => format!("the hub returned HTTP {code}"),
            other => format!("request failed: {other}"),
        },
        other => other.to_string(),
    }
}

/// An indicatif progress bar on stderr for one download. indicatif draws
/// nothing when stderr is not a terminal, so logs stay clean.
struct DownloadBar(ProgressBar);

impl DownloadBar {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
        )
        .expect("the progress template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        Self(bar)
    }
}

impl hf_hub::api::Progress for DownloadBar {
    fn init(&mut self, size: usize, filename: &str) {
        // hf-hub 0.5 calls `init` twice per download. The second call is
        // followed by `update` with the bytes already on disk, which are
        // more than zero when it resumes a partial download.
        self.0.set_length(size as u64);
        self.0.set_position(0);
        self.0.set_message(filename.to_string());
    }

    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }

    fn finish(&mut self) {
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[&str]) -> Vec<String> {
        files.iter().map(|file| file.to_string()).collect()
    }

    /// Returns the files of a diffusers SD repo with fp16 variants, a safety
    /// checker and a single-file checkpoint at the root.
    fn sd_repo() -> Vec<String> {
        names(&[
            "model_index.json",
            "README.md",
            "v2-1_768-ema-pruned.safetensors",
            "feature_extractor/preprocessor_config.json",
            "safety_checker/config.json",
            "safety_checker/model.safetensors",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/pytorch_model.bin",
            "tokenizer/merges.txt",
            "tokenizer/vocab.json",
            "tokenizer/tokenizer_config.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.non_ema.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ])
    }

    fn diffusers(prefer_fp16: bool) -> Layout {
        Layout::Diffusers {
            prefer_fp16,
            optional_files: &["redraft_generator.json"],
        }
    }

    fn remotes(selected: &[SelectedFile]) -> Vec<&str> {
        selected.iter().map(|file| file.remote.as_str()).collect()
    }

    #[test]
    fn existing_path_is_folder() {
        let dir = tempfile::tempdir().unwrap();
        let value = dir.path().to_str().unwrap();
        assert_eq!(
            ModelSource::parse(value).unwrap(),
            ModelSource::Folder(dir.path().to_path_buf())
        );
    }

    #[test]
    fn owner_name_is_repo() {
        let source = ModelSource::parse("stabilityai/sd-turbo").unwrap();
        let ModelSource::Repo(repo) = source else {
            panic!("expected a repo id, got {source:?}");
        };
        assert_eq!(repo.id, "stabilityai/sd-turbo");
        assert_eq!(repo.revision, "main");
        assert_eq!(repo.to_string(), "stabilityai/sd-turbo");
    }

    #[test]
    fn revision_after_at() {
        let repo = RepoId::parse("owner/name.v2@refs/pr/1").unwrap();
        assert_eq!(repo.id, "owner/name.v2");
        assert_eq!(repo.revision, "refs/pr/1");
        assert_eq!(repo.to_string(), "owner/name.v2@refs/pr/1");
    }

    #[test]
    fn bad_model_values_rejected() {
        let cases = [
            ("/no/such/folder", "exactly one '/'"),
            ("just-a-name", "exactly one '/'"),
            ("owner/", "the name \"\" is empty"),
            ("own er/name", "may contain only"),
            ("owner/na--me", "may not contain"),
            ("owner/-name", "may not start or end"),
            ("owner/name@", "the revision"),
            ("owner/name@a b", "the revision"),
            ("owner/name@../../etc", "the revision"),
            ("owner/name@/main", "the revision"),
        ];
        for (value, reason) in cases {
            let error = ModelSource::parse(value).unwrap_err();
            assert!(error.contains(&format!("{value:?}")), "{value}: {error}");
            assert!(error.contains(reason), "{value}: {error}");
            assert!(error.contains("owner/name[@revision]"), "{value}: {error}");
        }
    }

    #[test]
    fn long_repo_part_rejected() {
        let value = format!("owner/{}", "a".repeat(97));
        let error = RepoId::parse(&value).unwrap_err();
        assert!(error.contains("longer than 96"), "{error}");
    }

    #[test]
    fn diffusers_selection_skips_extras() {
        let selected = diffusers(false).select(&sd_repo()).unwrap();
        let expected = [
            "model_index.json",
            "text_encoder/config.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "unet/config.json",
            "vae/config.json",
            "scheduler/scheduler_config.json",
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        ];
        assert_eq!(remotes(&selected), expected);
        assert!(selected.iter().all(|file| file.remote == file.local));
    }

    #[test]
    fn fp16_variants_chosen_for_f16() {
        let selected = diffusers(true).select(&sd_repo()).unwrap();
        let unet = selected
            .iter()
            .find(|file| file.local == "unet/diffusion_pytorch_model.safetensors")
            .unwrap();
        assert_eq!(unet.remote, "unet/diffusion_pytorch_model.fp16.safetensors");
        let text_encoder = selected
            .iter()
            .find(|file| file.local == "text_encoder/model.safetensors")
            .unwrap();
        assert_eq!(text_encoder.remote, "text_encoder/model.fp16.safetensors");
        // This VAE has no fp16 variant, so the full-precision file is used.
        let vae = selected
            .iter()
            .find(|file| file.local == "vae/diffusion_pytorch_model.safetensors")
            .unwrap();
        assert_eq!(vae.remote, vae.local);
    }

    #[test]
    fn fp16_only_weights_used_for_f32() {
        let mut files = sd_repo();
        files.retain(|file| file != "unet/diffusion_pytorch_model.safetensors");
        let selected = diffusers(false).select(&files).unwrap();
        assert!(
            remotes(&selected).contains(&"unet/diffusion_pytorch_model.fp16.safetensors"),
            "{selected:?}"
        );
    }

    #[test]
    fn optional_root_file_fetched_when_present() {
        let mut files = sd_repo();
        files.push("redraft_generator.json".to_string());
        let selected = diffusers(false).select(&files).unwrap();
        assert!(remotes(&selected).contains(&"redraft_generator.json"));
    }

    #[test]
    fn missing_diffusers_weights_named() {
        let mut files = sd_repo();
        files.retain(|file| !file.starts_with("vae/diffusion_pytorch_model"));
        let error = diffusers(false).select(&files).unwrap_err();
        assert_eq!(error, "vae/diffusion_pytorch_model.safetensors");

        let error = diffusers(false)
            .select(&names(&["unet/config.json"]))
            .unwrap_err();
        assert_eq!(error, "model_index.json");
    }

    #[test]
    fn clip_selection_and_missing_file() {
        let layout = Layout::Clip {
            optional_files: &["redraft_critic.json"],
        };
        let files = names(&[
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "pytorch_model.bin",
            "redraft_critic.json",
        ]);
        let selected = layout.select(&files).unwrap();
        assert_eq!(
            remotes(&selected),
            [
                "config.json",
                "tokenizer.json",
                "model.safetensors",
                "redraft_critic.json"
            ]
        );
        let error = layout
            .select(&names(&["config.json", "model.safetensors"]))
            .unwrap_err();
        assert_eq!(error, "tokenizer.json");
    }

    #[test]
    fn bad_endpoint_named() {
        let hub = HubArgs {
            hf_endpoint: "huggingface.co".to_string(),
            hf_home: None,
            hf_hub_offline: false,
        };
        let error = hub.endpoint().unwrap_err().to_string();
        assert!(error.contains("--hf-endpoint"), "{error}");
        assert!(error.contains("\"huggingface.co\""), "{error}");
    }

    #[test]
    fn endpoint_trailing_slash_dropped() {
        let hub = HubArgs {
            hf_endpoint: "http://127.0.0.1:8080/".to_string(),
            hf_home: None,
            hf_hub_offline: false,
        };
        assert_eq!(hub.endpoint().unwrap(), "http://127.0.0.1:8080");
    }

    /// Writes a cache entry the way hf-hub does: blobs, a snapshot of links
    /// and a ref.
    fn write_cached_clip(home: &Path, with_fp16_unet: bool) -> PathBuf {
        let repo_dir = home.join("hub").join("models--owner--clip");
        let snapshot = repo_dir.join("snapshots").join("abc123");
        std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs").join("main"), "abc123").unwrap();
        let mut files = vec!["config.json", "tokenizer.json", "model.safetensors"];
        if with_fp16_unet {
            files.push("unet/diffusion_pytorch_model.fp16.safetensors");
        }
        for (index, file) in files.iter().enumerate() {
            let blob = repo_dir.join("blobs").join(format!("etag{index}"));
            std::fs::write(&blob, file.as_bytes()).unwrap();
            let link = snapshot.join(file);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            link_file(&blob, &link).unwrap();
        }
        snapshot
    }

    fn offline(home: &Path) -> HubArgs {
        HubArgs {
            hf_endpoint: DEFAULT_ENDPOINT.to_string(),
            hf_home: Some(home.to_path_buf()),
            hf_hub_offline: true,
        }
    }

    #[test]
    fn offline_finds_cached_snapshot() {
        let home = tempfile::tempdir().unwrap();
        let snapshot = write_cached_clip(home.path(), false);
        let source = ModelSource::parse("owner/clip").unwrap();
        let layout = Layout::Clip {
            optional_files: &[],
        };
        let resolved = resolve(&source, layout, &offline(home.path())).unwrap();
        assert_eq!(resolved.dir, snapshot);
        assert_eq!(resolved.repo.as_deref(), Some("owner/clip"));
    }

    #[test]
    fn offline_missing_repo_names_cache() {
        let home = tempfile::tempdir().unwrap();
        let source = ModelSource::parse("owner/absent").unwrap();
        let layout = Layout::Clip {
            optional_files: &[],
        };
        let error = resolve(&source, layout, &offline(home.path()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("HF_HUB_OFFLINE"), "{error}");
        assert!(error.contains("owner/absent"), "{error}");
        assert!(error.contains("refs/main does not exist"), "{error}");
    }

    #[test]
    fn offline_incomplete_snapshot_names_file() {
        let home = tempfile::tempdir().unwrap();
        write_cached_clip(home.path(), false);
        let source = ModelSource::parse("owner/clip").unwrap();
        let error = resolve(&source, diffusers(false), &offline(home.path()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("has no model_index.json"), "{error}");
    }

    #[test]
    fn variant_folder_links_plain_names() {
        let home = tempfile::tempdir().unwrap();
        let snapshot = write_cached_clip(home.path(), true);
        let repo = Repo::model("owner/clip".to_string());
        let selected = vec![
            SelectedFile {
                remote: "config.json".to_string(),
                local: "config.json".to_string(),
            },
            SelectedFile {
                remote: "unet/diffusion_pytorch_model.fp16.safetensors".to_string(),
                local: "unet/diffusion_pytorch_model.safetensors".to_string(),
            },
        ];
        let dir = variant_folder(home.path(), &repo, "abc123", &snapshot, &selected).unwrap();
        let unet =
            std::fs::read_to_string(dir.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
        assert_eq!(unet, "unet/diffusion_pytorch_model.fp16.safetensors");
        assert!(dir.join("config.json").is_file());
        assert!(!dir.join("tokenizer.json").exists());

        // A second call reuses the finished folder.
        let again = variant_folder(home.path(), &repo, "abc123", &snapshot, &selected).unwrap();
        assert_eq!(again, dir);
    }

    #[derive(clap::Parser)]
    struct HubCli {
        #[command(flatten)]
        hub: HubArgs,
    }

    #[test]
    fn offline_flag_parses() {
        use clap::Parser;
        let parsed = HubCli::try_parse_from(["test", "--hf-hub-offline"]).unwrap();
        assert!(parsed.hub.hf_hub_offline);
        let parsed = HubCli::try_parse_from(["test", "--hf-hub-offline", "0"]).unwrap();
        assert!(!parsed.hub.hf_hub_offline);
        let parsed = HubCli::try_parse_from(["test", "--hf-hub-offline=yes"]).unwrap();
        assert!(parsed.hub.hf_hub_offline);
        let parsed = HubCli::try_parse_from(["test"]).unwrap();
        assert!(!parsed.hub.hf_hub_offline);
        assert_eq!(parsed.hub.hf_endpoint, DEFAULT_ENDPOINT);
    }
}
