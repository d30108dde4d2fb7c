//! Model folders: the trained defaults under `models/shapes-v1`, and the
//! tiny random-weight models written on demand until those exist.

use std::path::{Path, PathBuf};

use anyhow::Context;
use redraft_common::tokenizer::SCENE_WORDS;

/// Folder of the trained default models, relative to the repository root.
pub const DEFAULT_MODELS: &str = "models/shapes-v1";

/// Seed of the tiny models written by `redraft generate` and `redraft up`.
const TINY_SEED: u64 = 0;

/// Generator and critic model folders.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    /// Diffusers-layout generator folder.
    pub generator: PathBuf,
    /// HF CLIP-layout critic folder.
    pub critic: PathBuf,
}

/// Writes tiny random-weight generator and critic folders to
/// `dir/generator` and `dir/critic`.
pub fn write_tiny(dir: &Path, seed: u64) -> anyhow::Result<ModelPaths> {
    let paths = ModelPaths {
        generator: dir.join("generator"),
        critic: dir.join("critic"),
    };
    redraft_generator::tiny::write_tiny_generator(&paths.generator, seed, SCENE_WORDS)
        .with_context(|| {
            format!(
                "failed to write the tiny generator to {}",
                paths.generator.display()
            )
        })?;
    redraft_critic::tiny::write_tiny_clip(&paths.critic, seed, &[]).with_context(|| {
        format!(
            "failed to write the tiny critic to {}",
            paths.critic.display()
        )
    })?;
    Ok(paths)
}

/// Picks the model folders: the ones given, else the trained defaults
/// (searched in the working directory and in the source tree this binary
/// was built from), else tiny random-weight models in the cache folder.
pub fn resolve(generator: Option<PathBuf>, critic: Option<PathBuf>) -> anyhow::Result<ModelPaths> {
    for (flag, path) in [
        ("--generator-model", &generator),
        ("--critic-model", &critic),
    ] {
        if let Some(path) = path
            && !path.is_dir()
        {
            anyhow::bail!(
                "{flag} {}: folder not found; pass a model folder, or leave the flag out to use the defaults",
                path.display()
            );
        }
    }
    if let (Some(generator), Some(critic)) = (&generator, &critic) {
        return Ok(ModelPaths {
            generator: generator.clone(),
            critic: critic.clone(),
        });
    }
    let trained = [
        PathBuf::from(DEFAULT_MODELS),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DEFAULT_MODELS),
    ]
    .into_iter()
    .find(|dir| {
        dir.join("generator/model_index.json").is_file() && dir.join("critic/config.json").is_file()
    });
    let defaults = match trained {
        Some(dir) => ModelPaths {
            generator: dir.join("generator"),
            critic: dir.join("critic"),
        },
        None => tiny_in_cache()?,
    };
    Ok(ModelPaths {
        generator: generator.unwrap_or(defaults.generator),
        critic: critic.unwrap_or(defaults.critic),
    })
}

/// The cache folder: `$XDG_CACHE_HOME/redraft`, else `~/.cache/redraft`,
/// else the system temporary folder.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir).join("redraft");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        return PathBuf::from(home).join(".cache").join("redraft");
    }
    std::env::temp_dir().join("redraft")
}

fn tiny_in_cache() -> anyhow::Result<ModelPaths> {
    let dir = cache_dir().join(format!("tiny-{}-seed{TINY_SEED}", redraft_common::VERSION));
    let paths = ensure_tiny(&dir, TINY_SEED)?;
    tracing::warn!(
        folder = %dir.display(),
        "no trained models found under {DEFAULT_MODELS}; using tiny random-weight models, whose images are noise"
    );
    Ok(paths)
}

fn is_complete(paths: &ModelPaths) -> bool {
    redraft_generator::folder::REQUIRED_FILES
        .iter()
        .all(|file| paths.generator.join(file).is_file())
        && ["config.json", "model.safetensors", "tokenizer.json"]
            .iter()
            .all(|file| paths.critic.join(file).is_file())
}

/// Returns tiny models in `dir`, writing them first when they are missing.
/// The folder appears only by an atomic rename of a finished one, so
/// concurrent commands never see a half-written folder or delete one in use.
pub fn ensure_tiny(dir: &Path, seed: u64) -> anyhow::Result<ModelPaths> {
    let paths = ModelPaths {
        generator: dir.join("generator"),
        critic: dir.join("critic"),
    };
    if is_complete(&paths) {
        return Ok(paths);
    }
    let parent = dir.parent().context("the model folder has a parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("failed to create {}", parent.display()))?;
    let unique = format!("{}-{}", std::process::id(), rand::random::<u32>());
    let staging = parent.join(format!(".tiny-staging-{unique}"));
    write_tiny(&staging, seed)?;

    // A folder left incomplete by an older version is moved aside first.
    if dir.exists() && !is_complete(&paths) {
        let aside = parent.join(format!(".tiny-incomplete-{unique}"));
        if std::fs::rename(dir, &aside).is_ok() {
            let _ = std::fs::remove_dir_all(&aside);
        }
    }
    if let Err(error) = std::fs::rename(&staging, dir) {
        let _ = std::fs::remove_dir_all(&staging);
        // Another command finished first, which is as good.
        if !is_complete(&paths) {
            return Err(anyhow::anyhow!(
                "failed to move the tiny models to {}: {error}",
                dir.display()
            ));
        }
    }
    Ok(paths)
}
