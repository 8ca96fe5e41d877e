//! Runner images: present, else pull, else build locally from Debian packages (`images/`).
//!
//! No registry is assumed. For each configured runtime image [`prepare`] checks the engine,
//! tries a pull (which fails fast without a registry), and otherwise runs the recipe
//! `images/build.sh` (embedded in the binary, so an installed `skill-verifier` needs no source
//! checkout): busybox-static for `shell`, `debootstrap --variant=minbase` for `python` and
//! `node`, turned into an image with `docker import`. Building needs root (debootstrap), a
//! Debian mirror and the `docker` CLI, which honours `DOCKER_HOST` like the daemon does.

use std::io::Write;
use std::process::Stdio;

use crate::package::Runtime;

use super::{DockerRunner, ImageMap, Runner, SandboxError};

/// The build recipe, embedded so the binary is self-contained.
pub const BUILD_SCRIPT: &str = include_str!("../../images/build.sh");

/// The default runner image of `runtime`: `skill-verifier/runner-<runtime>:<12 hex>`, the
/// tag being the digest of the recipe ([`BUILD_SCRIPT`]) and the runtime's name. A changed
/// recipe (a package added to the python image, say) gets a new tag, so `images prepare`
/// builds it instead of finding the old image present, and the result cache, keyed by the
/// image, never serves a result of the old one.
pub fn default_image(runtime: Runtime) -> String {
    format!(
        "skill-verifier/runner-{}:{}",
        runtime.as_str(),
        &recipe_digest(runtime.as_str())[..12]
    )
}

/// The digest of a recipe: [`BUILD_SCRIPT`] and the recipe's name (a runtime, or `sink`).
/// Default tags carry its first 12 hex digits; every image the script builds carries all
/// of it in the label `dev.skill-verifier.recipe`.
pub fn recipe_digest(recipe: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(BUILD_SCRIPT.as_bytes());
    h.update([0]);
    h.update(recipe.as_bytes());
    hex::encode(h.finalize())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// It was already there.
    Present,
    /// It was pulled from a registry.
    Pulled,
    /// It was built locally from Debian packages.
    Built,
}

/// One image's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedImage {
    /// The runtime it serves.
    pub runtime: Runtime,
    /// The image reference.
    pub image: String,
    /// How it got there.
    pub how: Prepared,
    /// Its content digest (image ID).
    pub digest: String,
}

/// Options for [`prepare`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PrepareOptions {
    /// Do not try a registry; build what is missing.
    pub no_pull: bool,
    /// Rebuild even when present.
    pub force_build: bool,
}

/// Ensures every image in `images` exists on the engine; `progress` receives one line per
/// step. Stops at the first image that can be neither pulled nor built.
pub async fn prepare(
    runner: &DockerRunner,
    images: &ImageMap,
    options: PrepareOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Vec<PreparedImage>, SandboxError> {
    let mut out = Vec::new();
    for (runtime, image) in images {
        let how = ensure(runner, *runtime, image, options, progress).await?;
        let digest = runner.image_digest(image).await?;
        progress(&format!(
            "{}: {image} {} ({digest})",
            runtime.as_str(),
            how_word(how)
        ));
        out.push(PreparedImage {
            runtime: *runtime,
            image: image.clone(),
            how,
            digest,
        });
    }
    Ok(out)
}

fn how_word(how: Prepared) -> &'static str {
    match how {
        Prepared::Present => "present",
        Prepared::Pulled => "pulled",
        Prepared::Built => "built",
    }
}

async fn ensure(
    runner: &DockerRunner,
    runtime: Runtime,
    image: &str,
    options: PrepareOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Prepared, SandboxError> {
    let name = runtime.as_str();
    if !options.force_build && runner.image_present(image).await? {
        return Ok(Prepared::Present);
    }
    if !options.no_pull && !options.force_build {
        progress(&format!("{name}: {image} missing, trying to pull"));
        let mut pull_progress = |line: &str| progress(&format!("{name}: pull: {line}"));
        match runner.pull(image, &mut pull_progress).await {
            Ok(()) if runner.image_present(image).await? => return Ok(Prepared::Pulled),
            Ok(()) => progress(&format!(
                "{name}: pull finished but {image} is still missing"
            )),
            Err(e) => progress(&format!("{name}: pull failed ({e}); building locally")),
        }
    }
    progress(&format!(
        "{name}: building {image} from Debian packages (this takes a few minutes)"
    ));
    build(runner, runtime.as_str(), image, &[]).await?;
    if runner.image_present(image).await? {
        Ok(Prepared::Built)
    } else {
        Err(SandboxError::Image {
            image: image.to_string(),
            message: "the build finished but the image is not on the engine".into(),
        })
    }
}

/// Ensures the network sink's image exists: built locally from this very binary (its
/// `sink` command) when missing, never pulled: its tag is the digest of the sink's sources
/// ([`crate::sink::image`]), so a changed sink gets a new image.
pub async fn prepare_sink(
    runner: &DockerRunner,
    image: &str,
    options: PrepareOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<PreparedSink, SandboxError> {
    let how = if !options.force_build && runner.image_present(image).await? {
        Prepared::Present
    } else {
        let exe = std::env::current_exe().map_err(|e| SandboxError::Image {
            image: image.to_string(),
            message: format!("finding this binary to embed: {e}"),
        })?;
        progress(&format!(
            "sink: building {image} from Debian packages and {} (this takes a few minutes)",
            exe.display()
        ));
        build(
            runner,
            "sink",
            image,
            &[("SINK_BINARY", exe.as_os_str().to_owned())],
        )
        .await?;
        Prepared::Built
    };
    let digest = runner.image_digest(image).await?;
    progress(&format!("sink: {image} {} ({digest})", how_word(how)));
    Ok(PreparedSink {
        image: image.to_string(),
        how,
        digest,
    })
}

/// The sink image's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedSink {
    /// The image reference.
    pub image: String,
    /// How it got there.
    pub how: Prepared,
    /// Its content digest (image ID).
    pub digest: String,
}

/// Runs the embedded recipe `recipe` (a runtime's name, or `sink`) against `runner`'s
/// engine (its `DOCKER_HOST` and TLS files), tagging the result `image`, with `env` added
/// and the recipe's digest as `RECIPE_DIGEST`. The script's own progress goes to this
/// process's stderr.
pub async fn build(
    runner: &DockerRunner,
    recipe: &str,
    image: &str,
    env: &[(&str, std::ffi::OsString)],
) -> Result<(), SandboxError> {
    let err = |message: String| SandboxError::Image {
        image: image.to_string(),
        message,
    };
    let mut script = tempfile::Builder::new()
        .prefix("skill-verifier-build-")
        .suffix(".sh")
        .tempfile()
        .map_err(|e| err(format!("writing the build script: {e}")))?;
    script
        .write_all(BUILD_SCRIPT.as_bytes())
        .and_then(|()| script.flush())
        .map_err(|e| err(format!("writing the build script: {e}")))?;
    let status = tokio::process::Command::new("sh")
        .arg(script.path())
        .arg(recipe)
        .arg(image)
        // The engine this runner drives, for the script's `docker` CLI.
        .envs(runner.target().docker_cli_env())
        .env("RECIPE_DIGEST", recipe_digest(recipe))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .map_err(|e| err(format!("running sh: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "images/build.sh {recipe} failed ({status}); see its output above"
        )))
    }
}
