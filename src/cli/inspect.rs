//! `skill-verifier inspect PATH` (OWNER: issue2): validates a package (archive or directory)
//! and prints its facts as JSON on stdout.
//!
//! Exit 0 and JSON for a valid package; exit 2 and one line `invalid package (<code>):
//! <message>` on stderr for an invalid one (or an unreadable path); exit 3 when the verifier
//! itself failed (e.g. no temporary directory). An archive is unpacked into a fresh
//! temporary directory that is removed before the command returns.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{EXIT_ERROR, EXIT_INVALID, EXIT_OK};
use crate::config::Settings;
use crate::digest::Sha256Digest;
use crate::package::{self, Format, Manifest, Package, TestPlan};

/// Arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The package: a .zip/.skill, .tar, .tar.gz/.tgz (detected by content) or a directory.
    pub path: PathBuf,
}

/// The JSON printed on success.
#[derive(Debug, Serialize)]
pub struct InspectReport<'a> {
    /// Skill name.
    pub name: &'a str,
    /// Skill description.
    pub description: &'a str,
    /// Canonical tree digest (hex).
    pub tree_sha256: Sha256Digest,
    /// SHA-256 of the archive bytes (null for a directory).
    pub archive_sha256: Option<Sha256Digest>,
    /// Regular files in the tree.
    pub files: u64,
    /// Total bytes of those files.
    pub bytes: u64,
    /// Container format.
    pub format: Format,
    /// The test plan.
    pub test: &'a TestPlan,
    /// The whole validated manifest.
    pub manifest: &'a Manifest,
}

impl<'a> InspectReport<'a> {
    /// The report for a loaded package.
    pub fn new(p: &'a Package) -> Self {
        Self {
            name: &p.manifest.name,
            description: &p.manifest.description,
            tree_sha256: p.tree_sha256,
            archive_sha256: p.archive_sha256,
            files: p.files,
            bytes: p.bytes,
            format: p.format,
            test: &p.test,
            manifest: &p.manifest,
        }
    }
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: InspectArgs, settings: &Settings) -> anyhow::Result<u8> {
    let temp = match tempfile::Builder::new()
        .prefix("skill-verifier-inspect-")
        .tempdir()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: creating a temporary directory: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    let work = temp.path().join("package");
    let result = package::load(&args.path, &work, &settings.package);
    let code = match result {
        Ok(pkg) => {
            let report = InspectReport::new(&pkg);
            match serde_json::to_string_pretty(&report) {
                Ok(json) => {
                    println!("{json}");
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("error: encoding JSON: {e}");
                    EXIT_ERROR
                }
            }
        }
        Err(e) if e.is_invalid_package() => {
            eprintln!("invalid package ({}): {e}", e.code());
            EXIT_INVALID
        }
        Err(e) => {
            eprintln!("error ({}): {e}", e.code());
            EXIT_ERROR
        }
    };
    if let Err(e) = temp.close() {
        eprintln!("warning: removing the temporary directory: {e}");
    }
    Ok(code)
}
