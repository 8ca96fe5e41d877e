//! `skill-verifier scan PATH`: the scan stage alone, no Docker. Validates the package like
//! `inspect`, runs the rule pack and the native checks over every file, judges the findings
//! under the verdict policy, and prints them as text, JSON or SARIF 2.1.0 on stdout.
//!
//! Exit codes: 0 nothing blocking, 1 blocking findings, 2 invalid package, 3 our error
//! (including a rule file or policy that does not load: the message names file and line).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{EXIT_ERROR, EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::config::Settings;
use crate::scan::{Action, Finding, Policy, Severity, VerdictStatus};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanFormat {
    /// One line per finding, blocking ones marked.
    Text,
    /// The whole report as one JSON object.
    Json,
    /// SARIF 2.1.0 (GitHub code scanning).
    Sarif,
}

/// Arguments.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// The skill: a directory, or a tar / tar.gz / zip / .skill archive.
    pub path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ScanFormat::Text)]
    pub format: ScanFormat,
    /// The verdict policy (TOML); default: `[scan] policy`, else the built-in one.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Prefix for SARIF artifact URIs (the skill folder's path in the repository, e.g.
    /// `skills/my-skill/`); default: PATH itself when it is a relative directory.
    #[arg(long)]
    pub sarif_prefix: Option<String>,
}

/// Runs the scan; returns the exit code.
pub fn run(args: ScanArgs, settings: &Settings) -> anyhow::Result<u8> {
    let scratch = tempfile::Builder::new()
        .prefix("skill-verifier-scan-")
        .tempdir()
        .context("creating a scratch directory")?;
    let package = match crate::package::read(
        &args.path,
        &scratch.path().join("tree.tar"),
        &settings.package,
    ) {
        Ok(p) => p,
        Err(e) if e.is_invalid_package() => {
            eprintln!("error: invalid package {}: {e}", args.path.display());
            return Ok(EXIT_INVALID);
        }
        Err(e) => {
            eprintln!("error: reading {}: {e}", args.path.display());
            return Ok(EXIT_ERROR);
        }
    };
    // A one-shot process: reuse the compiled rules cached under the data dir (keyed by the
    // pack digest) instead of compiling them on every run.
    let cache = settings.data_dir().join("cache");
    let loaded = settings.scan.load_cached(args.policy.as_deref(), &cache);
    let (scanner, policy) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    let stage = crate::scan::Stage { scanner, policy };
    let report = match stage.scan_package(&package) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    let verdict = stage.policy.verdict(&report.findings, None);
    let mut out = std::io::stdout().lock();
    match args.format {
        ScanFormat::Sarif => {
            let prefix = args.sarif_prefix.clone().unwrap_or_else(|| {
                if args.path.is_dir() && args.path.is_relative() {
                    let p = args.path.to_string_lossy();
                    let p = p.trim_start_matches("./").trim_end_matches('/');
                    if p.is_empty() || p == "." {
                        String::new()
                    } else {
                        format!("{p}/")
                    }
                } else {
                    String::new()
                }
            });
            let sarif = crate::scan::sarif::to_sarif_json(
                &report.findings,
                stage.scanner.pack(),
                &stage.policy,
                &prefix,
            );
            out.write_all(&sarif)?;
            out.write_all(b"\n")?;
        }
        ScanFormat::Json => {
            let findings: Vec<serde_json::Value> = report
                .findings
                .iter()
                .map(|f| {
                    let mut v = serde_json::to_value(f).expect("plain data");
                    v["action"] = serde_json::to_value(stage.policy.action(f)).expect("enum");
                    v
                })
                .collect();
            let doc = serde_json::json!({
                "skill": package.manifest.name,
                "tree_sha256": package.tree_sha256,
                "verdict": verdict,
                "policy": {
                    "name": stage.policy.name,
                    "version": stage.policy.version,
                    "sha256": stage.policy.sha256(),
                    "rules_sha256": stage.scanner.rules_sha256(),
                },
                "counts": report.counts(),
                "findings": findings,
                "endpoints": report.endpoints,
                "files": report.files,
                "bytes_scanned": report.bytes_scanned,
            });
            serde_json::to_writer_pretty(&mut out, &doc)?;
            out.write_all(b"\n")?;
        }
        ScanFormat::Text => {
            for f in &report.findings {
                writeln!(out, "{}", finding_line(f, stage.policy.action(f)))?;
            }
            let c = report.counts();
            writeln!(
                out,
                "{} {}: {} files, {} findings (critical {}, high {}, medium {}, low {}, info {}), {} endpoints; policy {} v{}",
                verdict.status.as_str(),
                package.manifest.name,
                report.files,
                report.findings.len(),
                c.critical,
                c.high,
                c.medium,
                c.low,
                c.info,
                report.endpoints.len(),
                stage.policy.name,
                stage.policy.version,
            )?;
        }
    }
    out.flush()?;
    Ok(match verdict.status {
        VerdictStatus::Passed => EXIT_OK,
        VerdictStatus::Failed => EXIT_FAILED,
    })
}

fn finding_line(f: &Finding, action: Action) -> String {
    let mark = if action == Action::Block {
        "BLOCK "
    } else {
        ""
    };
    let at = match f.line {
        Some(l) => format!(
            "{}:{l}",
            if f.path.is_empty() {
                "SKILL.md"
            } else {
                &f.path
            }
        ),
        None if f.path.is_empty() => "SKILL.md".to_string(),
        None => f.path.clone(),
    };
    let mut line = format!(
        "{mark}{:<8} {} {at}: {}",
        f.severity.as_str(),
        f.code,
        f.message
    );
    if !f.excerpt.is_empty() {
        line.push_str(&format!("\n         | {}", f.excerpt));
    }
    line
}

/// Prints the findings summary on stderr (for `verify` and `submit`): blocking findings and
/// anything `medium` or worse one per line, then counts. Info and low findings are counted only.
pub fn print_summary(findings: &[Finding], policy: &Policy) {
    let mut err = std::io::stderr().lock();
    for f in findings {
        let action = policy.action(f);
        if action == Action::Block || f.severity >= Severity::Medium {
            let _ = writeln!(err, "{}", finding_line(f, action));
        }
    }
    let c = crate::scan::SeverityCounts::of(findings);
    let blocking = policy.blocking(findings).len();
    let _ = writeln!(
        err,
        "findings: {blocking} blocking; critical {}, high {}, medium {}, low {}, info {} (policy {} v{})",
        c.critical, c.high, c.medium, c.low, c.info, policy.name, policy.version
    );
}
