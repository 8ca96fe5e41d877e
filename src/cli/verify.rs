//! `skill-verifier verify PATH`: the whole pipeline in one process, no daemon
//! (unpack → run in Docker → attest), for local use and simple CI.
//!
//! Exit codes: 0 passed (WARNED included: no tests declared, smoke checks passed), 1 failed
//! (tests failed, or the verdict policy blocks a scan finding), 2 invalid package, 3 the
//! verifier could not do its job. The findings summary goes to stderr; `--sarif FILE` writes
//! them as SARIF 2.1.0.

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

use crate::jobs::{Attempt, PipelineError, Verifier};
use crate::sandbox::{DockerRunner, Runner as _};

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
    /// Write the findings as SARIF 2.1.0 to this file.
    #[arg(long)]
    pub sarif: Option<PathBuf>,
    /// The verdict policy (TOML); default: `[scan] policy`, else the built-in one.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

/// Runs the pipeline; returns the exit code.
pub fn run(args: VerifyArgs, settings: Settings) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let code = runtime.block_on(verify(args, settings));
    // Everything that matters is finished when `verify` returns (the containers removed,
    // the attestation written); dropping the runtime would also wait for its idle blocking
    // threads, a millisecond or two on the way out.
    runtime.shutdown_background();
    code
}

fn fail(code: u8, message: impl std::fmt::Display) -> anyhow::Result<u8> {
    eprintln!("error: {message}");
    Ok(code)
}

async fn verify(args: VerifyArgs, settings: Settings) -> anyhow::Result<u8> {
    // Ctrl-C cancels the run, whose containers are then removed. Registered before
    // anything reaches the engine (synchronously, not on a task's first poll): a container
    // exists from the prelaunch on, and an interrupt must never find the default action
    // (exit at once, the container left for a later run's reaper).
    let cancel = CancellationToken::new();
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("handling Ctrl-C")?;
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if interrupt.recv().await.is_some() {
                cancel.cancel();
            }
        });
    }
    // The engine first: connecting is on the run's critical path (the container cannot be
    // created before it), and so is the package (its runtime names the image); the rules,
    // the key, the scan and the dependency check are not: they happen while the container
    // starts.
    let connecting = {
        let settings = settings.clone();
        tokio::spawn(async move { engine(&settings).await })
    };
    let scratch = tempfile::Builder::new()
        .prefix("skill-verifier-")
        .tempdir()
        .context("creating a scratch directory")?;
    let tar = scratch.path().join("tree.tar");
    let (path, limits) = (args.path.clone(), settings.package.clone());
    // Reading the package and getting the engine ready overlap: the container's launch
    // needs both (its image is the package's runtime's), and nothing else.
    let loading = tokio::task::spawn_blocking(move || crate::package::read(&path, &tar, &limits));
    // The simulated quote measures this binary (SHA-384 of tens of MB): read from the cache
    // when this binary file was measured before, else hashed beside the package read, the
    // scan and the run instead of before signing.
    if settings.attest.quote_provider == crate::config::QuoteProviderKind::Simulated {
        crate::attest::quote::simulated::prewarm_measurement(Some(
            &settings.data_dir().join("cache"),
        ));
    }
    let (loaded, engine) = tokio::join!(loading, connecting);
    let engine = engine.unwrap_or_else(|e| Err(format!("connecting to the engine: {e}")));
    let package = match loaded? {
        Ok(p) => p,
        Err(e) if e.is_invalid_package() => {
            return fail(
                EXIT_INVALID,
                format!("invalid package {}: {e}", args.path.display()),
            )
        }
        Err(e) => return fail(EXIT_ERROR, format!("reading {}: {e}", args.path.display())),
    };
    let runner = match engine {
        Ok(runner) => runner,
        Err(message) => return fail(EXIT_ERROR, message),
    };
    if cancel.is_cancelled() {
        return fail(EXIT_ERROR, "interrupted");
    }
    // A per-process instance: a daemon's start-up reaper never touches CLI containers.
    let instance = format!("cli-{}", uuid::Uuid::new_v4());
    // The test's container is launched now, beside the rules, the key, the scan and the
    // dependency check: its start is most of the run's cost and needs none of them.
    if let Ok(spec) = crate::sandbox::spec_for_instance(&package.test, &settings.sandbox, &instance)
    {
        runner.prelaunch(&spec);
    }
    // The rules load while the engine starts the container (on 2 cores, deserialising them
    // before the launch was a few milliseconds on the critical path). A one-shot process:
    // the compiled rules come from the cache under the data dir.
    let rules = {
        let (scan, policy) = (settings.scan.clone(), args.policy.clone());
        let cache = settings.data_dir().join("cache");
        tokio::task::spawn_blocking(move || scan.load_cached(policy.as_deref(), &cache))
    };
    let runner = Arc::new(runner);
    // Whatever happens next, the prelaunched container and the run's container are gone
    // before the process exits.
    let code = finish(
        args,
        settings,
        runner.clone(),
        package,
        rules,
        instance,
        cancel,
    )
    .await;
    runner.settle().await;
    code
}

/// Everything after the engine and the package are ready: the rules, the key, the run,
/// the attestation and the report.
async fn finish(
    args: VerifyArgs,
    settings: Settings,
    runner: Arc<DockerRunner>,
    package: crate::package::Package,
    rules: tokio::task::JoinHandle<
        Result<(crate::scan::Scanner, crate::scan::Policy), crate::scan::ScanError>,
    >,
    instance: String,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    let scan = match rules.await.context("loading the rules")? {
        Ok((scanner, policy)) => Arc::new(crate::scan::Stage { scanner, policy }),
        Err(e) => return fail(EXIT_ERROR, e),
    };
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
    // The quote provider is made after the run (below): the run never quotes, and the
    // measurement it needs is hashed meanwhile.
    let mut verifier = Verifier {
        runner: runner.clone(),
        signer: Arc::new(signer),
        quotes: Arc::new(crate::attest::quote::NoQuoteProvider),
        policy: settings.sandbox.clone(),
        instance,
        scan: scan.clone(),
        deps: Arc::new(crate::deps::Deps::new(
            settings.deps.clone(),
            settings.deps_cache_dir(),
        )),
    };
    let attempt = Attempt {
        job: JobId::new(),
        attempt: 1,
    };
    let name = package.manifest.name.clone();
    let tree = package.tree_sha256;
    let ran = match verifier.run(attempt, package, cancel).await {
        Ok(ran) => ran,
        Err(PipelineError::Cancelled) => return fail(EXIT_ERROR, "interrupted; container removed"),
        Err(e) => return fail(EXIT_ERROR, e),
    };
    // Containers of earlier CLI runs that died without cleaning up (see the sandbox's
    // lease rule): removed beside this run's own removal and the attestation, finished
    // before the process exits. Not earlier: while this run's container is created and
    // started, the engine's time is the run's.
    let reaping = {
        let reaper = runner.clone();
        tokio::spawn(async move { reaper.reap_dead_leases().await })
    };
    verifier.quotes = match crate::attest::quote::from_settings(&settings.attest) {
        Ok(q) => q,
        Err(e) => return fail(EXIT_ERROR, format!("quote provider: {e}")),
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
    let mut statement_findings: Vec<crate::scan::Finding> = crate::jobs::pipeline::findings(&ran)
        .iter()
        .map(|f| f.to_scan())
        .collect();
    statement_findings.extend(ran.scan.findings.iter().cloned());
    super::scan::print_summary(&statement_findings, &scan.policy);
    let observed = crate::jobs::pipeline::observed(&ran);
    if !args.json {
        print_network(&ran, observed.as_ref());
    }
    if let Some(path) = &args.sarif {
        let sarif = crate::scan::sarif::to_sarif_json(
            &statement_findings,
            scan.scanner.pack(),
            &scan.policy,
            "",
        );
        std::fs::write(path, sarif).with_context(|| format!("writing {}", path.display()))?;
    }
    let status = attested.status.as_str();
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
                "verdict": attested.verdict,
                "network": ran.spec.network,
                "observed_network": observed.as_ref().map(|o| &o.network),
                "dry_run": ran.dry_run.iter().map(|d| serde_json::json!({
                    "script": d.script,
                    "args": d.args,
                    "exit_code": d.outcome.exit_code,
                    "duration_ms": d.outcome.duration_ms,
                })).collect::<Vec<_>>(),
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
            "{status} {name} (tree sha256:{tree}) in {} ms{notes}{dest}; verdict {}",
            o.duration_ms,
            attested.verdict.as_str()
        );
    }
    match reaping.await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(removed = n, "removed containers of dead CLI runs"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not reap containers of dead CLI runs"),
        Err(e) => tracing::warn!(error = %e, "the lease reaper failed"),
    }
    Ok(match (attested.status, attested.verdict) {
        (Status::Failed, _) | (_, crate::scan::VerdictStatus::Failed) => EXIT_FAILED,
        (Status::Passed | Status::Warned, crate::scan::VerdictStatus::Passed) => EXIT_OK,
    })
}

/// Connects to the engine and checks that it has the configured OCI runtime (the engine's
/// info answers both: it is the ping); the error is the message to print.
async fn engine(settings: &Settings) -> Result<DockerRunner, String> {
    // A daemon-less run uses the first engine (`[[sandbox.engines]]`, else DOCKER_HOST).
    let target = settings
        .engines()
        .into_iter()
        .next()
        .ok_or_else(|| "no Docker engine configured".to_string())?;
    let name = target.name.clone();
    let runner = DockerRunner::connect_to(target).await.map_err(|e| {
        format!(
            "engine {name}: {e} (is the Docker engine running? set DOCKER_HOST for a remote one)"
        )
    })?;
    // runc is every engine's built-in runtime: the check (one `GET /info`) is for a tier
    // that must never silently fall back to it (gVisor, an `oci_runtime` override).
    // Containers are removed in the background, beside signing and writing the
    // attestation; `settle` waits for them before the process exits.
    let runner = runner.with_lease().with_background_removal();
    let runtime = settings.sandbox.runtime_name();
    if runtime == "runc" {
        return Ok(runner);
    }
    match runner.require_runtime(runtime).await {
        Ok(()) => Ok(runner),
        Err(e @ crate::sandbox::SandboxError::RuntimeMissing { .. }) => Err(e.to_string()),
        Err(e) => Err(format!(
            "the Docker engine does not answer: {e} (start it, or set DOCKER_HOST)"
        )),
    }
}

/// The network side on stderr: the mode, each destination the sink saw (marked when the
/// skill did not declare it), and the dry run's invocations.
fn print_network(
    ran: &crate::jobs::pipeline::Ran,
    observed: Option<&crate::attest::statement::Observed>,
) {
    let declared =
        crate::package::plan::declared_network(&ran.package.manifest).unwrap_or_default();
    match observed {
        None => eprintln!("network: {} (nothing observed)", ran.spec.network),
        Some(o) if o.network.is_empty() => {
            eprintln!("network: {}: no attempts", ran.spec.network)
        }
        Some(o) => {
            eprintln!(
                "network: {}: {} destination(s){}",
                ran.spec.network,
                o.network.len(),
                if o.network_dropped > 0 {
                    format!(", {} more attempts past the bound", o.network_dropped)
                } else {
                    String::new()
                }
            );
            for a in &o.network {
                let covered = a.allowed
                    || a.host
                        .as_deref()
                        .is_some_and(|h| crate::sink::egress::allowed(&declared, h));
                eprintln!(
                    "  {} x{}{}",
                    a.describe(),
                    a.count,
                    if a.allowed {
                        " (allowed)"
                    } else if covered {
                        " (declared)"
                    } else {
                        " (undeclared)"
                    }
                );
            }
        }
    }
    for d in &ran.dry_run {
        eprintln!(
            "dry run: {} {} -> exit {} in {} ms{}",
            d.script,
            d.args.join(" "),
            d.outcome.exit_code,
            d.outcome.duration_ms,
            if d.outcome.timed_out {
                " (timed out)"
            } else {
                ""
            }
        );
    }
}
