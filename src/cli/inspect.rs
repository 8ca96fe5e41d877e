//! `skill-verifier inspect PATH`: validates a package (archive or directory)
//! and prints its facts as JSON on stdout.
//!
//! Exit 0 and JSON for a valid package; exit 2 and one line `invalid package (<code>):
//! <message>` on stderr for an invalid one (or an unreadable path); exit 3 when the verifier
//! itself failed (e.g. a directory input whose file cannot be read). Nothing is written:
//! the package is read once and hashed, and no tar is made.

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
    /// Only the package facts: no scan, and nothing written at all (the package is read and
    /// hashed; its normalised tar is never made).
    #[arg(long)]
    pub no_scan: bool,
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
    /// The declared Python requirements (absent without a requirements file): the file and
    /// each requirement with whether it is an exact pin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirements: Option<RequirementsReport<'a>>,
    /// The scan's findings under the configured verdict policy (`verdict` says whether any
    /// blocks); absent when the rules or policy could not be loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<serde_json::Value>,
}

/// `requirements` in the report.
#[derive(Debug, Serialize)]
pub struct RequirementsReport<'a> {
    /// The file, relative to the skill root.
    pub path: &'a str,
    /// Every requirement is an exact pin (then a verification result may be cached).
    pub all_pinned: bool,
    /// Hashes are required.
    pub require_hashes: bool,
    /// Each requirement.
    pub items: Vec<RequirementItem<'a>>,
}

/// One requirement in the report.
#[derive(Debug, Serialize)]
pub struct RequirementItem<'a> {
    /// As written.
    pub name: &'a str,
    /// Extras.
    pub extras: &'a [String],
    /// The version specifier (`==1.2`, `>=1,<2`, empty for any).
    pub specifier: &'a str,
    /// The environment marker.
    pub marker: Option<&'a str>,
    /// An exact pin.
    pub pinned: bool,
    /// How many `--hash` values.
    pub hashes: usize,
    /// Line in the file.
    pub line: usize,
}

impl<'a> RequirementsReport<'a> {
    /// The report of parsed requirements.
    pub fn of(r: &'a package::requirements::Requirements) -> Self {
        Self {
            path: &r.path,
            all_pinned: r.all_pinned(),
            require_hashes: r.require_hashes,
            items: r
                .items
                .iter()
                .map(|i| RequirementItem {
                    name: &i.name,
                    extras: &i.extras,
                    specifier: &i.specifier,
                    marker: i.marker.as_deref(),
                    pinned: i.pinned().is_some(),
                    hashes: i.hashes.len(),
                    line: i.line,
                })
                .collect(),
        }
    }
}

impl<'a> InspectReport<'a> {
    /// The report for a loaded package.
    pub fn new<T>(p: &'a Package<T>) -> Self {
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
            requirements: p.requirements.as_ref().map(RequirementsReport::of),
            scan: None,
        }
    }
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: InspectArgs, settings: &Settings) -> anyhow::Result<u8> {
    // The scan reads the files' content from the normalised tar, written to a private
    // temporary directory and removed on exit; with --no-scan nothing is written at all.
    let scratch;
    let result = if args.no_scan {
        package::inspect(&args.path, &settings.package).map(|p| (p, None))
    } else {
        scratch = match tempfile::Builder::new()
            .prefix("skill-verifier-inspect-")
            .tempdir()
        {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("error: creating a temporary directory for the scan: {e}");
                return Ok(EXIT_ERROR);
            }
        };
        package::read(
            &args.path,
            &scratch.path().join("tree.tar"),
            &settings.package,
        )
        .map(|p| {
            let scan = scan_summary(&p, settings);
            let facts = package::Package {
                format: p.format,
                manifest: p.manifest,
                test: p.test,
                requirements: p.requirements,
                tree_sha256: p.tree_sha256,
                archive_sha256: p.archive_sha256,
                files: p.files,
                bytes: p.bytes,
                file_facts: p.file_facts,
                tar: (),
            };
            (facts, scan)
        })
    };
    let code = match result {
        Ok((pkg, scan)) => {
            let mut report = InspectReport::new(&pkg);
            report.scan = scan;
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
    Ok(code)
}

/// The scan of an inspected package: findings, endpoints and the verdict under the policy.
fn scan_summary(pkg: &Package, settings: &Settings) -> Option<serde_json::Value> {
    let cache = settings.data_dir().join("cache");
    let (scanner, policy) = match settings.scan.load_cached(None, &cache) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("warning: scan rules or policy: {e}");
            return None;
        }
    };
    let stage = crate::scan::Stage { scanner, policy };
    let report = match stage.scan_package(pkg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warning: scanning: {e}");
            return None;
        }
    };
    Some(serde_json::json!({
        "verdict": stage.policy.verdict(&report.findings, None),
        "counts": report.counts(),
        "findings": report.findings,
        "endpoints": report.endpoints,
    }))
}
