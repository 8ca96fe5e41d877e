//! `skill-verifier attestation verify FILE --key PUBFILE [--package PATH]`: the offline check
//! of an attestation (see [`crate::attest::verify`] for what is checked).
//!
//! Exit codes: 0 valid, 1 invalid (the reason is printed), 2 unreadable input (the envelope,
//! the key or the package could not be read or parsed).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::attest::dsse::Envelope;
use crate::attest::keys;
use crate::attest::verify::verify_envelope;
use crate::config::Settings;
use crate::digest::Sha256Digest;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// Envelopes are small (tens of KiB with a dstack event log); refuse to read huge files.
const MAX_ENVELOPE_BYTES: u64 = 16 * 1024 * 1024;

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestationCommand {
    /// Check a DSSE attestation offline: signature, statement, report_data binding, quote,
    /// and (with --package) the package digest. Exit 0 valid, 1 invalid, 2 unreadable input.
    Verify {
        /// The DSSE envelope (JSON).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The verifier's public key (SPKI PEM, or 32 bytes as base64/hex).
        #[arg(long, value_name = "PUBFILE")]
        key: PathBuf,
        /// The skill package (archive or directory) whose tree digest must match the subject.
        #[arg(long, value_name = "PATH")]
        package: Option<PathBuf>,
    },
}

/// Runs the subcommand; returns the exit code.
pub fn run(cmd: AttestationCommand, settings: &Settings) -> anyhow::Result<u8> {
    match cmd {
        AttestationCommand::Verify { file, key, package } => {
            Ok(verify(&file, &key, package.as_deref(), settings))
        }
    }
}

fn unreadable(what: impl std::fmt::Display) -> u8 {
    eprintln!("error: {what}");
    EXIT_INVALID
}

fn verify(file: &Path, key: &Path, package: Option<&Path>, settings: &Settings) -> u8 {
    let envelope = match read_envelope(file) {
        Ok(e) => e,
        Err(e) => return unreadable(e),
    };
    let key = match keys::load_public_key(key) {
        Ok(k) => k,
        Err(e) => return unreadable(e),
    };
    let package = match package.map(|p| load_package(p, settings)).transpose() {
        Ok(p) => p,
        Err(e) => return unreadable(e),
    };
    let tree = package.as_ref().map(|(tree, _)| *tree);
    match verify_envelope(&envelope, &key, tree.as_ref()) {
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
    let tmp = tempfile::tempdir().map_err(|e| format!("creating a temporary dir: {e}"))?;
    // `load` wants a work dir that does not exist yet.
    let work = tmp.path().join("package");
    let package = crate::package::load(path, &work, &settings.package)
        .map_err(|e| format!("package {}: {e}", path.display()))?;
    Ok((package.tree_sha256, package.archive_sha256))
}
