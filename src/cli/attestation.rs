//! `skill-verifier attestation verify FILE --key KEYS [--package PATH] [checks...]`: the
//! offline check of an attestation (see [`crate::attest::verify`] for what is checked).
//!
//! - `--key` names one public key, a file of several PEM public keys, or the JSON answer of
//!   `GET /keys`: the envelope verifies if any key of the set verifies it.
//! - A dstack quote is DCAP-verified when the attestation carries collateral (or
//!   `--collateral` gives it), at `job.finished_at` unless `--at` says otherwise, under the
//!   attested TCB policy unless `--allow-tcb` replaces it, against Intel's root unless
//!   `--root-ca` replaces it.
//! - `--expect-mrtd HEX`, `--expect-rtmr N=HEX` compare measurements; an event log is
//!   always replayed into RTMR3 and compared.
//! - Relying-party gates: `--require-verdict PASSED`, `--expect-policy SHA256`,
//!   `--require-isolation runsc`, `--require-tee` (refuses simulated and none).
//!
//! Exit codes: 0 valid, 1 invalid or a requirement not met (the reason is printed), 2
//! unreadable input (the envelope, a key, the package, the collateral, a flag's value).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::attest::dsse::Envelope;
use crate::attest::keys;
use crate::attest::quote::{self, TcbPolicy};
use crate::attest::verify::{verify_envelope_with, Requirements, VerifyOptions};
use crate::config::Settings;
use crate::digest::Sha256Digest;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// Envelopes are small (tens of KiB with a dstack event log); refuse to read huge files.
const MAX_ENVELOPE_BYTES: u64 = 16 * 1024 * 1024;

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestationCommand {
    /// Check a DSSE attestation offline: signature, statement, report_data binding, quote
    /// (DCAP chain and TCB with collateral), measurements, event log, and (with --package)
    /// the package digest; plus the relying party's requirements. Exit 0 valid, 1 invalid,
    /// 2 unreadable input.
    Verify(VerifyArgs),
}

/// `attestation verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The DSSE envelope (JSON).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The verifier's public key(s): one key (SPKI PEM, or 32 bytes as base64/hex), a file
    /// of several PEM keys, or the JSON of `GET /keys`.
    #[arg(long, value_name = "KEYS")]
    pub key: PathBuf,
    /// The skill package (archive or directory) whose tree digest must match the subject.
    #[arg(long, value_name = "PATH")]
    pub package: Option<PathBuf>,
    /// Check the quote's chain at this time (RFC 3339) instead of `job.finished_at`.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Collateral for a dstack quote whose attestation carries none.
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// Trust this root CA certificate (PEM or DER) instead of Intel's.
    #[arg(long, value_name = "FILE")]
    pub root_ca: Option<PathBuf>,
    /// Accept this TCB status (repeatable; replaces the attested `tee.tcb_policy`).
    #[arg(long = "allow-tcb", value_name = "STATUS")]
    pub allow_tcb: Vec<String>,
    /// The quote's MRTD must be this (96 hex chars).
    #[arg(long, value_name = "HEX")]
    pub expect_mrtd: Option<String>,
    /// RTMR N (0-3) must be HEX (repeatable).
    #[arg(long, value_name = "N=HEX")]
    pub expect_rtmr: Vec<String>,
    /// `predicate.verdict.status` must be this (e.g. PASSED).
    #[arg(long, value_name = "STATUS")]
    pub require_verdict: Option<String>,
    /// `predicate.policy.sha256` must be this.
    #[arg(long, value_name = "SHA256")]
    pub expect_policy: Option<String>,
    /// `predicate.environment.isolation.runtime` must be this (e.g. runsc).
    #[arg(long, value_name = "RUNTIME")]
    pub require_isolation: Option<String>,
    /// Refuse simulated and none quotes, and a dstack quote whose chain was not verified.
    #[arg(long)]
    pub require_tee: bool,
}

/// Runs the subcommand; returns the exit code.
pub fn run(cmd: AttestationCommand, settings: &Settings) -> anyhow::Result<u8> {
    match cmd {
        AttestationCommand::Verify(args) => Ok(verify(&args, settings)),
    }
}

fn unreadable(what: impl std::fmt::Display) -> u8 {
    eprintln!("error: {what}");
    EXIT_INVALID
}

fn parse_mr(flag: &str, text: &str) -> Result<[u8; 48], String> {
    hex::decode(text.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{flag} {text:?}: want 48 bytes as 96 hex characters"))
}

/// Builds the verification options from the flags; `Err` is an exit-2 message.
fn options(args: &VerifyArgs, tree: Option<Sha256Digest>) -> Result<VerifyOptions, String> {
    let at = args
        .at
        .as_deref()
        .map(super::quote::parse_time)
        .transpose()?;
    let collateral = match &args.collateral {
        Some(path) => Some(
            quote::parse_collateral(&super::quote::read_bounded(path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let root_ca_der = match &args.root_ca {
        Some(path) => Some(
            quote::parse_root_ca(&super::quote::read_bounded(path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let tcb_policy = if args.allow_tcb.is_empty() {
        None
    } else {
        Some(TcbPolicy::parse(&args.allow_tcb).map_err(|e| e.to_string())?)
    };
    let expect_mrtd = args
        .expect_mrtd
        .as_deref()
        .map(|t| parse_mr("--expect-mrtd", t))
        .transpose()?;
    let mut expect_rtmr = Vec::new();
    for spec in &args.expect_rtmr {
        let (n, hex_text) = spec
            .split_once('=')
            .ok_or_else(|| format!("--expect-rtmr {spec:?}: want N=HEX"))?;
        let n: usize = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n <= 3)
            .ok_or_else(|| format!("--expect-rtmr {spec:?}: N must be 0-3"))?;
        expect_rtmr.push((n, parse_mr("--expect-rtmr", hex_text)?));
    }
    Ok(VerifyOptions {
        expected_tree: tree,
        at,
        root_ca_der,
        tcb_policy,
        collateral,
        expect_mrtd,
        expect_rtmr,
        require: Requirements {
            verdict: args.require_verdict.clone(),
            policy_sha256: args.expect_policy.clone(),
            isolation: args.require_isolation.clone(),
            tee: args.require_tee,
        },
    })
}

fn verify(args: &VerifyArgs, settings: &Settings) -> u8 {
    let envelope = match read_envelope(&args.file) {
        Ok(e) => e,
        Err(e) => return unreadable(e),
    };
    let keys = match keys::load_key_set(&args.key) {
        Ok(k) => k,
        Err(e) => return unreadable(e),
    };
    let package = match args
        .package
        .as_deref()
        .map(|p| load_package(p, settings))
        .transpose()
    {
        Ok(p) => p,
        Err(e) => return unreadable(e),
    };
    let tree = package.as_ref().map(|(tree, _)| *tree);
    let opts = match options(args, tree) {
        Ok(o) => o,
        Err(e) => return unreadable(e),
    };
    match verify_envelope_with(&envelope, &keys, &opts) {
        Ok(verified) => {
            println!("attestation: VALID");
            for line in &verified.summary {
                println!("  {line}");
            }
            let p = &verified.statement.predicate;
            if let Some((_, archive)) = &package {
                match (archive, &p.package.archive_sha256) {
                    (Some(a), Some(b)) if a == b => println!("  archive sha256: ok ({a})"),
                    (Some(_), Some(_)) => println!(
                        "  archive sha256: differs (same tree in another container; informational)"
                    ),
                    _ => println!("  archive sha256: not compared"),
                }
            }
            if let Some(report) = &verified.dcap {
                super::quote::print_report(report, "  quote ");
            }
            println!(
                "  skill: {} (tree sha256 {}), result {:?}, job {} attempt {}",
                p.package.name, p.package.tree_sha256, p.result.status, p.job.id, p.job.attempt
            );
            EXIT_OK
        }
        Err(reason) => {
            println!("attestation: INVALID");
            println!("  reason: {reason}");
            EXIT_FAILED
        }
    }
}

fn read_envelope(file: &Path) -> Result<Envelope, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_ENVELOPE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {}: {e}", file.display()))?;
    if bytes.len() as u64 > MAX_ENVELOPE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_ENVELOPE_BYTES} bytes",
            file.display()
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a DSSE envelope: {e}", file.display()))
}

/// Recomputes the package's tree digest (and archive digest) with the package stage.
fn load_package(
    path: &Path,
    settings: &Settings,
) -> Result<(Sha256Digest, Option<Sha256Digest>), String> {
    let package = crate::package::inspect(path, &settings.package)
        .map_err(|e| format!("package {}: {e}", path.display()))?;
    Ok((package.tree_sha256, package.archive_sha256))
}
