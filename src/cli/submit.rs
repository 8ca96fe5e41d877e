//! `skill-verifier submit PATH --server URL`: uploads a skill to a daemon and, with `--wait`,
//! follows the job to the end and writes the attestation.
//!
//! A directory is packed into a tar.gz in memory first (regular files and directories only,
//! sorted, normalized owners and times; a symlink is refused). Exit codes as `verify`:
//! 0 passed, 1 failed (tests, or a finding the verdict policy blocks), 2 invalid package, 3 the
//! verifier (or the connection) failed. With `--wait`, the findings summary goes to stderr and
//! `--sarif FILE` writes them as SARIF 2.1.0 (from `GET /verify/{id}/findings`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use reqwest::StatusCode;

use super::{EXIT_ERROR, EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::api::views::JobView;
use crate::config::Settings;
use crate::store::JobStatus;

/// Arguments.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The skill: a directory (packed as tar.gz) or an archive file.
    pub path: PathBuf,
    /// The daemon's base URL.
    #[arg(long, env = "SKILL_VERIFIER_SERVER")]
    pub server: String,
    /// Bearer token for the daemon.
    #[arg(long, env = "SKILL_VERIFIER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Follow the job to the end and fetch the attestation.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit 3).
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Write the DSSE envelope here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run again even if an identical package was verified before.
    #[arg(long)]
    pub fresh: bool,
    /// With --wait: write the findings as SARIF 2.1.0 to this file.
    #[arg(long)]
    pub sarif: Option<PathBuf>,
}

/// Uploads, optionally waits; returns the exit code.
pub fn run(args: SubmitArgs, _settings: &Settings) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(submit(args))
}

fn fail(code: u8, message: impl std::fmt::Display) -> anyhow::Result<u8> {
    eprintln!("error: {message}");
    Ok(code)
}

/// Packs a skill directory as a deterministic tar.gz (symlinks and special files refused).
pub fn pack_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let scratch = tempfile::tempdir()?;
    let tar = crate::package::TreeTar::write_from_dir(dir, &scratch.path().join("tree.tar"))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::copy(&mut std::fs::File::open(&tar.path)?, &mut gz)?;
    Ok(gz.finish()?)
}

async fn error_message(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some(format!(
                "{} ({})",
                e.get("message")?.as_str()?,
                e.get("code")?.as_str()?
            ))
        })
        .unwrap_or_else(|| {
            format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )
        })
}

async fn submit(args: SubmitArgs) -> anyhow::Result<u8> {
    let base = args.server.trim_end_matches('/').to_string();
    let body = if args.path.is_dir() {
        match pack_dir(&args.path) {
            Ok(b) => b,
            Err(e) => {
                return fail(
                    EXIT_INVALID,
                    format!("packing {}: {e:#}", args.path.display()),
                )
            }
        }
    } else {
        match std::fs::read(&args.path) {
            Ok(b) => b,
            Err(e) => {
                return fail(
                    EXIT_INVALID,
                    format!("reading {}: {e}", args.path.display()),
                )
            }
        }
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()?;
    let auth = |rb: reqwest::RequestBuilder| match &args.token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let tty = std::io::stderr().is_terminal();

    // Upload, honouring 429 + Retry-After until the deadline.
    let job: JobView = loop {
        let resp = auth(client.post(format!("{base}/verify")))
            .query(&[("fresh", args.fresh)])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body.clone())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return fail(EXIT_ERROR, format!("uploading to {base}: {e}")),
        };
        match resp.status() {
            s if s.is_success() => break resp.json().await.context("reading the job")?,
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(5u64);
                if Instant::now() + Duration::from_secs(wait) > deadline {
                    return fail(
                        EXIT_ERROR,
                        "the verifier's queue stayed full until the timeout",
                    );
                }
                eprintln!("queue full; retrying in {wait}s");
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::UNPROCESSABLE_ENTITY => {
                return fail(EXIT_INVALID, error_message(resp).await)
            }
            _ => return fail(EXIT_ERROR, error_message(resp).await),
        }
    };
    if job.cached {
        eprintln!("job {} (cached result of an identical package)", job.id);
    } else {
        eprintln!("job {} queued", job.id);
    }
    if !args.wait {
        println!("{}", serde_json::to_string_pretty(&job)?);
        return Ok(EXIT_OK);
    }

    // Follow the job.
    let started = Instant::now();
    let mut last_line = String::new();
    let mut delay = Duration::from_millis(250);
    let job = loop {
        let resp = auth(client.get(format!("{base}/verify/{}", job.id)))
            .send()
            .await;
        let current: JobView = match resp {
            Ok(r) if r.status().is_success() => r.json().await.context("reading the job")?,
            Ok(r) => return fail(EXIT_ERROR, error_message(r).await),
            Err(e) => return fail(EXIT_ERROR, format!("polling {base}: {e}")),
        };
        let line = match &current.phase {
            Some(phase) => format!("{} ({phase})", current.status),
            None => current.status.to_string(),
        };
        if tty {
            eprint!("\r\x1b[2K{line}  {:>4}s", started.elapsed().as_secs());
            let _ = std::io::stderr().flush();
        } else if line != last_line {
            eprintln!("{line}");
        }
        last_line = line;
        if current.status.is_finished() {
            if tty {
                eprintln!();
            }
            break current;
        }
        if Instant::now() >= deadline {
            if tty {
                eprintln!();
            }
            return fail(
                EXIT_ERROR,
                format!(
                    "job {} still {} after {}s",
                    job.id, current.status, args.timeout
                ),
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    };

    match job.status {
        JobStatus::Error => {
            let why = job
                .error
                .map(|e| format!("{} ({})", e.message, e.code))
                .unwrap_or_default();
            return fail(
                EXIT_ERROR,
                format!("the verifier could not finish job {}: {why}", job.id),
            );
        }
        JobStatus::Cancelled => return fail(EXIT_ERROR, format!("job {} was cancelled", job.id)),
        _ => {}
    }
    let resp = auth(client.get(format!("{base}/verify/{}/attestation", job.id)))
        .send()
        .await;
    let envelope = match resp {
        Ok(r) if r.status().is_success() => r.bytes().await?,
        Ok(r) => return fail(EXIT_ERROR, error_message(r).await),
        Err(e) => return fail(EXIT_ERROR, format!("fetching the attestation: {e}")),
    };
    match &args.out {
        Some(out) => {
            std::fs::write(out, &envelope).with_context(|| format!("writing {}", out.display()))?
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&envelope)?;
            stdout.write_all(b"\n")?;
        }
    }
    let findings_url = format!("{base}/verify/{}/findings", job.id);
    match auth(client.get(&findings_url)).send().await {
        Ok(r) if r.status().is_success() => {
            match r.json::<crate::api::views::FindingsView>().await {
                Ok(view) => print_findings(&view),
                Err(e) => eprintln!("warning: reading the findings: {e}"),
            }
        }
        Ok(r) => eprintln!("warning: findings: {}", error_message(r).await),
        Err(e) => eprintln!("warning: fetching the findings: {e}"),
    }
    if let Some(path) = &args.sarif {
        let resp = auth(client.get(format!("{findings_url}?format=sarif")))
            .send()
            .await;
        let sarif = match resp {
            Ok(r) if r.status().is_success() => r.bytes().await?,
            Ok(r) => return fail(EXIT_ERROR, error_message(r).await),
            Err(e) => return fail(EXIT_ERROR, format!("fetching the SARIF: {e}")),
        };
        std::fs::write(path, &sarif).with_context(|| format!("writing {}", path.display()))?;
    }
    let verdict = job
        .result
        .as_ref()
        .map(|r| r.verdict.map(|v| v.as_str()).unwrap_or(r.status.as_str()))
        .unwrap_or("?");
    let dest = args
        .out
        .as_ref()
        .map(|p| format!("; attestation in {}", p.display()))
        .unwrap_or_default();
    eprintln!("{verdict} {} (job {}){dest}", job.package.name, job.id);
    Ok(if job.status == JobStatus::Passed {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// The findings summary on stderr: blocking reasons, then medium-or-worse findings, then counts.
fn print_findings(view: &crate::api::views::FindingsView) {
    use crate::scan::Severity;
    let mut err = std::io::stderr().lock();
    if let Some(v) = &view.verdict {
        for r in &v.reasons {
            let _ = writeln!(err, "BLOCK {}: {}", r.code, r.message);
        }
    }
    for f in view
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Medium)
    {
        let at = match f.line {
            Some(l) => format!("{}:{l}", f.path),
            None => f.path.clone(),
        };
        let _ = writeln!(
            err,
            "{:<8} {} {at}: {}",
            f.severity.as_str(),
            f.code,
            f.message
        );
    }
    let c = view.counts;
    let _ = writeln!(
        err,
        "findings: critical {}, high {}, medium {}, low {}, info {}",
        c.critical, c.high, c.medium, c.low, c.info
    );
}
