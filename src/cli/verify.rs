//! `skill-verifier verify PATH`: the whole pipeline in one process, no daemon
//! (unpack → run in Docker → attest), for local use and simple CI.
//!
//! Exit codes: 0 passed (WARNED included: no tests declared, smoke checks passed), 1 tests
//! failed, 2 invalid package, 3 the verifier could not do its job.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{EXIT_ERROR, EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::attest::keys::Signer;
use crate::attest::statement::Status;
use crate::config::Settings;
use crate::ids::JobId;
use crate::jobs::pipeline::status_name;
use crate::jobs::{Attempt, PipelineError, Verifier};
use crate::sandbox::{DockerRunner, Runner};

/// Arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The skill: a directory, or a tar / tar.gz / zip / .skill archive.
    pub path: PathBuf,
    /// Directory of the signing key (created on first use); default: `<data dir>/keys`.
    #[arg(long)]
    pub key_dir: Option<PathBuf>,
    /// Write the DSSE envelope here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the verdict on stderr as one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// Runs the pipeline; returns the exit code.
pub fn run(args: VerifyArgs, settings: Settings) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(verify(args, settings))
}

fn fail(code: u8, message: impl std::fmt::Display) -> anyhow::Result<u8> {
    eprintln!("error: {message}");
    Ok(code)
}

async fn verify(args: VerifyArgs, settings: Settings) -> anyhow::Result<u8> {
    let scratch = tempfile::Builder::new()
        .prefix("skill-verifier-")
        .tempdir()
        .context("creating a scratch directory")?;
    let work = scratch.path().join("tree");
    let (path, limits) = (args.path.clone(), settings.package.clone());
    let loaded =
        tokio::task::spawn_blocking(move || crate::package::load(&path, &work, &limits)).await?;
    let package = match loaded {
        Ok(p) => p,
        Err(e) if e.is_invalid_package() => {
            return fail(
                EXIT_INVALID,
                format!("invalid package {}: {e}", args.path.display()),
            )
        }
        Err(e) => return fail(EXIT_ERROR, format!("reading {}: {e}", args.path.display())),
    };

    let runner = match DockerRunner::connect().await {
        Ok(r) => r,
        Err(e) => {
            return fail(
                EXIT_ERROR,
                format!("{e} (is the Docker engine running? set DOCKER_HOST for a remote one)"),
            )
        }
    };
    if let Err(e) = runner.ping().await {
        return fail(
            EXIT_ERROR,
            format!("the Docker engine does not answer: {e} (start it, or set DOCKER_HOST)"),
        );
    }
    let key_dir = args
        .key_dir
        .clone()
        .unwrap_or_else(|| settings.data_dir().join("keys"));
    let signer = match Signer::load_or_create(&key_dir) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                EXIT_ERROR,
                format!("signing key in {}: {e}", key_dir.display()),
            )
        }
    };
    let quotes = match crate::attest::quote::from_settings(&settings.attest) {
        Ok(q) => q,
        Err(e) => return fail(EXIT_ERROR, format!("quote provider: {e}")),
    };
    let verifier = Verifier {
        runner: Arc::new(runner),
        signer: Arc::new(signer),
        quotes,
        policy: settings.sandbox.clone(),
        // A per-process instance: a daemon's start-up reaper never touches CLI containers.
        instance: format!("cli-{}", uuid::Uuid::new_v4()),
    };
    let attempt = Attempt {
        job: JobId::new(),
        attempt: 1,
    };
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let name = package.manifest.name.clone();
    let tree = package.tree_sha256;
    let ran = match verifier.run(attempt, package, cancel).await {
        Ok(ran) => ran,
        Err(PipelineError::Cancelled) => return fail(EXIT_ERROR, "interrupted; container removed"),
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let attested = match verifier.attest(&ran).await {
        Ok(a) => a,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    match &args.out {
        Some(out) => std::fs::write(out, &attested.envelope_json)
            .with_context(|| format!("writing {}", out.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&attested.envelope_json)?;
            stdout.write_all(b"\n")?;
        }
    }
    let status = status_name(attested.status);
    let o = &ran.outcome;
    if args.json {
        eprintln!(
            "{}",
            serde_json::json!({
                "status": status,
                "skill": name,
                "tree_sha256": tree,
                "exit_code": o.exit_code,
                "duration_ms": o.duration_ms,
                "timed_out": o.timed_out,
                "oom_killed": o.oom_killed,
                "attestation": args.out.as_ref().map(|p| p.display().to_string()),
            })
        );
    } else {
        let mut notes = Vec::new();
        if o.timed_out {
            notes.push("timed out".to_string());
        }
        if o.oom_killed {
            notes.push("killed: out of memory".to_string());
        }
        if attested.status == Status::Warned {
            notes.push("no tests declared; smoke checks only".to_string());
        }
        if attested.status == Status::Failed && !o.timed_out && !o.oom_killed {
            notes.push(format!("exit code {}", o.exit_code));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        let dest = args
            .out
            .as_ref()
            .map(|p| format!("; attestation in {}", p.display()))
            .unwrap_or_default();
        eprintln!(
            "{status} {name} (tree sha256:{tree}) in {} ms{notes}{dest}",
            o.duration_ms
        );
    }
    Ok(match attested.status {
        Status::Passed | Status::Warned => EXIT_OK,
        Status::Failed => EXIT_FAILED,
    })
}
