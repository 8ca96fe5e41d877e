//! The `scan` stage: static analysis of every file of a package, with no Docker.
//!
//! A [`Scanner`] holds the compiled rule pack (the built-in `rules/*.yar` plus operator rule
//! files from `[scan] rules`) and scans a package given as the normalised tar the package
//! stage produces. Every file is scanned, text and binary, by two engines:
//!
//! - **YARA-X rules** ([`rules`]): textual patterns (download-and-execute, decoded payloads
//!   piped into an interpreter, prompt injection, persistence, credential harvesting,
//!   exfiltration, secrets, ...). Rules are data: each carries `category`, `severity` and
//!   `message` metadata, and its identifier is the finding's stable `code`.
//! - **Native checks** ([`native`]): what a pattern language is the wrong tool for —
//!   invisible or deceptive Unicode, executable and archive magic, EICAR, obfuscation by line
//!   length and entropy, base64 blobs decoded and rescanned, network endpoints, and the
//!   manifest's `allowed-tools`.
//!
//! The result is a [`ScanReport`]: findings (`{code, category, severity, message, path, line,
//! excerpt}`) and the skill's statically visible network endpoints. A [`policy::Policy`] turns
//! findings into *block* or *record*; [`sarif`] renders a report as SARIF 2.1.0.
//!
//! ## Bounds
//! Each file is scanned up to [`ScanLimits::file_bytes`] (default 4 MiB); a longer file is
//! scanned on its head and gets a `scan_truncated` finding, and the rest is skipped (read and
//! dropped, never held). Memory is bounded by that one buffer. The YARA-X scan of one file has
//! a timeout ([`ScanLimits::yara_timeout_ms`]); a file that hits it gets a `scan_timeout`
//! finding instead of stalling the job. Excerpts are at most [`EXCERPT_CHARS`] characters with
//! control characters escaped. Each rule yields at most one finding per file (its first
//! match; the message counts the others), so a hostile file cannot flood the attestation.

pub mod native;
pub mod policy;
pub mod rules;
pub mod sarif;
pub mod text;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::package::Manifest;

pub use policy::{Action, Policy, Reason, Verdict, VerdictStatus};
pub use rules::RulePack;

/// Longest excerpt kept on a finding, in characters (after escaping).
pub const EXCERPT_CHARS: usize = 160;

/// How bad a finding is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational (e.g. a network endpoint).
    Info,
    /// Worth a look.
    Low,
    /// Suspicious.
    Medium,
    /// Very likely harmful.
    High,
    /// Harmful.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What kind of problem a finding is. The names are stable (policies refer to them).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A remote script fetched and run (`curl | sh`, `iwr | iex`).
    DownloadExec,
    /// An encoded payload decoded and executed (base64/hex/base85 into a shell or eval).
    EncodedExec,
    /// Instructions to the agent or user to fetch and run something, or paste a command.
    RemoteInstruction,
    /// Text aimed at overriding the agent's instructions or hiding actions from the user.
    PromptInjection,
    /// Invisible or deceptive Unicode (tag characters, zero-width runs, bidi controls,
    /// homoglyphs).
    HiddenText,
    /// Writes to agent memory or shell/startup config (CLAUDE.md, ~/.bashrc, crontab, ...).
    Persistence,
    /// Reads of credential stores (SSH keys, cloud credentials, browser stores, keychains).
    CredentialHarvest,
    /// Sensitive data sent to a network endpoint.
    Exfiltration,
    /// Secrets shipped in the package (private keys, API tokens).
    Secret,
    /// Reverse shells and remote-control channels.
    RemoteAccess,
    /// Destructive commands (wiping disks or home directories, fork bombs).
    Destructive,
    /// Known malware or test signatures (EICAR, miners).
    Malware,
    /// Executables (ELF, PE, Mach-O) inside the package.
    Executable,
    /// Archives nested inside the package.
    Archive,
    /// Code made hard to read: very long lines, high-entropy blobs, escape chains.
    Obfuscation,
    /// `allowed-tools` that pre-approve dangerous tool use.
    ToolEscalation,
    /// A network endpoint (URL or IP literal) the skill names.
    NetworkEndpoint,
    /// A network attempt the sink observed while the skill ran that it did not declare.
    Network,
    /// The skill's declared dependencies: unpinned requirements, requirements that could not
    /// be fetched or installed.
    Dependencies,
    /// What the scan itself could not fully cover (truncation, timeout).
    Coverage,
    /// Facts about the test run (existing pipeline codes such as `no_tests_declared`).
    Tests,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 21] = [
        Category::DownloadExec,
        Category::EncodedExec,
        Category::RemoteInstruction,
        Category::PromptInjection,
        Category::HiddenText,
        Category::Persistence,
        Category::CredentialHarvest,
        Category::Exfiltration,
        Category::Secret,
        Category::RemoteAccess,
        Category::Destructive,
        Category::Malware,
        Category::Executable,
        Category::Archive,
        Category::Obfuscation,
        Category::ToolEscalation,
        Category::NetworkEndpoint,
        Category::Network,
        Category::Dependencies,
        Category::Coverage,
        Category::Tests,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::DownloadExec => "download_exec",
            Category::EncodedExec => "encoded_exec",
            Category::RemoteInstruction => "remote_instruction",
            Category::PromptInjection => "prompt_injection",
            Category::HiddenText => "hidden_text",
            Category::Persistence => "persistence",
            Category::CredentialHarvest => "credential_harvest",
            Category::Exfiltration => "exfiltration",
            Category::Secret => "secret",
            Category::RemoteAccess => "remote_access",
            Category::Destructive => "destructive",
            Category::Malware => "malware",
            Category::Executable => "executable",
            Category::Archive => "archive",
            Category::Obfuscation => "obfuscation",
            Category::ToolEscalation => "tool_escalation",
            Category::NetworkEndpoint => "network_endpoint",
            Category::Network => "network",
            Category::Dependencies => "dependencies",
            Category::Coverage => "coverage",
            Category::Tests => "tests",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One finding of the scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    /// The stable rule id (a YARA rule identifier or a native check's code).
    pub code: String,
    /// The rule's category.
    pub category: Category,
    /// The rule's severity.
    pub severity: Severity,
    /// Human text.
    pub message: String,
    /// Path relative to the skill root (`/`-separated); empty for package-level findings.
    pub path: String,
    /// 1-based line of the first match, when the finding has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The matched text, at most [`EXCERPT_CHARS`] characters, control characters escaped.
    pub excerpt: String,
}

/// How a network endpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// A URL (`http`, `https`, `ws`, `wss`, `ftp`, ...).
    Url,
    /// A bare IPv4 literal.
    Ip,
}

/// A network endpoint named by the package, found statically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// URL or IP literal.
    pub kind: EndpointKind,
    /// The host (name or address), lowercase.
    pub host: String,
    /// The URL (or the IP literal) as written, bounded.
    pub value: String,
    /// Where it was first seen.
    pub path: String,
    /// Line of the first occurrence.
    pub line: u64,
}

/// The result of scanning one package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Every finding, ordered by path, then line, then code.
    pub findings: Vec<Finding>,
    /// Distinct endpoints (by value), in the order first seen.
    pub endpoints: Vec<Endpoint>,
    /// Regular files scanned.
    pub files: u64,
    /// Bytes scanned (after per-file truncation).
    pub bytes_scanned: u64,
}

impl ScanReport {
    /// Findings counted by severity.
    pub fn counts(&self) -> SeverityCounts {
        SeverityCounts::of(&self.findings)
    }
}

/// Findings counted by severity (the job view's `findings` object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeverityCounts {
    /// Critical findings.
    pub critical: u64,
    /// High findings.
    pub high: u64,
    /// Medium findings.
    pub medium: u64,
    /// Low findings.
    pub low: u64,
    /// Informational findings.
    pub info: u64,
}

impl SeverityCounts {
    /// Counts `findings`.
    pub fn of<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Self {
        let mut c = SeverityCounts::default();
        for f in findings {
            c.add(f.severity);
        }
        c
    }

    /// Counts one more finding of `severity`.
    pub fn add(&mut self, severity: Severity) {
        let slot = match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Info => &mut self.info,
        };
        *slot = slot.saturating_add(1);
    }
}

/// The scan's size and time bounds (`[scan]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanLimits {
    /// Bytes of each file scanned; the rest is skipped with a `scan_truncated` finding.
    pub file_bytes: u64,
    /// Timeout of the YARA-X scan of one file, in milliseconds.
    pub yara_timeout_ms: u64,
    /// Endpoints kept per package (the rest are counted in a finding).
    pub max_endpoints: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            // Skills are text plus a few assets; 4 MiB covers any script anyone reads, and
            // bounds memory to one such buffer per scanning thread.
            file_bytes: 4 * 1024 * 1024,
            yara_timeout_ms: 2_000,
            max_endpoints: 256,
        }
    }
}

/// Why a scan (or loading the scanner) failed. A finding is never an error.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A rule file could not be read.
    #[error("{path}: reading the rule file: {source}")]
    ReadRules {
        /// The rule file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A rule file does not compile, or a rule lacks the required metadata.
    #[error("{path}:{line}: {reason}")]
    BadRule {
        /// The rule file (`builtin:<name>` for the built-in pack).
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The policy file could not be read.
    #[error("{path}: reading the policy: {source}")]
    ReadPolicy {
        /// The policy file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The policy file is invalid.
    #[error("{path}:{line}: {reason}")]
    BadPolicy {
        /// The policy file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The package tar could not be read.
    #[error("reading the package tar: {0}")]
    ReadTar(#[source] std::io::Error),
    /// The package tar holds an entry that is not a directory or regular file, or an unsafe
    /// path (the package stage never produces one).
    #[error("the package tar holds an unexpected entry `{path}`")]
    UnexpectedEntry {
        /// The entry's path.
        path: String,
    },
    /// The package directory could not be turned into a tar.
    #[error("reading the package tree: {0}")]
    ReadTree(String),
}

/// The compiled rule pack plus the native checks: built once per process, shared by every
/// scan (`Scanner` is `Send + Sync`; each scan makes its own cheap YARA-X scanner).
pub struct Scanner {
    pack: RulePack,
    limits: ScanLimits,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("rules", &self.pack.rule_count())
            .field("rules_sha256", &self.pack.sha256())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Scanner {
    /// The built-in rule pack plus `extra` operator rule files (in that order), compiled.
    pub fn new(extra: &[PathBuf], limits: ScanLimits) -> Result<Scanner, ScanError> {
        Ok(Scanner {
            pack: RulePack::load(extra)?,
            limits,
        })
    }

    /// Like [`Scanner::new`], reusing compiled rules cached under `cache_dir`
    /// ([`RulePack::load_cached`]).
    pub fn new_cached(
        extra: &[PathBuf],
        limits: ScanLimits,
        cache_dir: &Path,
    ) -> Result<Scanner, ScanError> {
        Ok(Scanner {
            pack: RulePack::load_cached(extra, cache_dir)?,
            limits,
        })
    }

    /// The built-in rule pack only, default limits.
    pub fn builtin() -> Result<Scanner, ScanError> {
        Scanner::new(&[], ScanLimits::default())
    }

    /// The compiled rule pack (its digest goes into `predicate.policy.rules_sha256`).
    pub fn pack(&self) -> &RulePack {
        &self.pack
    }

    /// SHA-256 of the rule pack (see [`RulePack::sha256`]).
    pub fn rules_sha256(&self) -> Sha256Digest {
        self.pack.sha256()
    }

    /// The limits in force.
    pub fn limits(&self) -> ScanLimits {
        self.limits
    }

    /// Scans a package: its manifest and the normalised tar of its tree (regular files and
    /// directories only). Each file is read up to [`ScanLimits::file_bytes`]; the rest of it is
    /// skipped without being held.
    pub fn scan_tar(&self, manifest: &Manifest, tar: impl Read) -> Result<ScanReport, ScanError> {
        let mut yara = self.pack.scanner(self.limits);
        let mut report = ScanReport::default();
        let mut seen = BTreeMap::new();
        native::check_manifest(manifest, &mut report.findings);
        let mut archive = tar::Archive::new(tar);
        let mut buf = Vec::new();
        for entry in archive.entries().map_err(ScanError::ReadTar)? {
            let mut entry = entry.map_err(ScanError::ReadTar)?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = path.trim_end_matches('/').to_string();
            if path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(ScanError::UnexpectedEntry { path });
            }
            match entry.header().entry_type() {
                tar::EntryType::Directory => {
                    native::check_name(&path, &mut report.findings);
                    continue;
                }
                tar::EntryType::Regular => {}
                _ => return Err(ScanError::UnexpectedEntry { path }),
            }
            let size = entry.size();
            buf.clear();
            (&mut entry)
                .take(self.limits.file_bytes)
                .read_to_end(&mut buf)
                .map_err(ScanError::ReadTar)?;
            // The tar reader skips what we did not read when it moves to the next entry.
            report.files += 1;
            report.bytes_scanned += buf.len() as u64;
            if size > self.limits.file_bytes {
                report.findings.push(Finding {
                    code: "scan_truncated".into(),
                    category: Category::Coverage,
                    severity: Severity::Low,
                    message: format!(
                        "only the first {} of {size} bytes were scanned",
                        self.limits.file_bytes
                    ),
                    path: path.clone(),
                    line: None,
                    excerpt: String::new(),
                });
            }
            self.scan_one(&mut yara, &path, &buf, &mut report, &mut seen);
        }
        finish(&mut report, &seen, self.limits);
        Ok(report)
    }

    /// Scans one file's bytes (all checks, no manifest check); for tests and tools.
    pub fn scan_file(&self, path: &str, bytes: &[u8]) -> ScanReport {
        let mut yara = self.pack.scanner(self.limits);
        let mut report = ScanReport::default();
        let mut seen = BTreeMap::new();
        let bytes = &bytes[..bytes.len().min(self.limits.file_bytes as usize)];
        report.files = 1;
        report.bytes_scanned = bytes.len() as u64;
        self.scan_one(&mut yara, path, bytes, &mut report, &mut seen);
        finish(&mut report, &seen, self.limits);
        report
    }

    fn scan_one(
        &self,
        yara: &mut rules::FileScanner<'_>,
        path: &str,
        bytes: &[u8],
        report: &mut ScanReport,
        seen: &mut BTreeMap<String, Endpoint>,
    ) {
        native::check_name(path, &mut report.findings);
        let kind = native::FileKind::of(path, bytes);
        yara.scan(path, kind, bytes, None, &mut report.findings);
        let decoded = native::check_file(path, kind, bytes, &mut report.findings, seen);
        // Payloads hidden in base64 are decoded and run through the rules once more (one
        // level deep: a payload encoded twice is reported as an encoded blob, not decoded).
        for blob in decoded {
            yara.scan(
                path,
                native::FileKind::Script,
                &blob.bytes,
                Some(blob.line),
                &mut report.findings,
            );
        }
    }
}

fn finish(report: &mut ScanReport, seen: &BTreeMap<String, Endpoint>, limits: ScanLimits) {
    let mut endpoints: Vec<Endpoint> = seen.values().cloned().collect();
    endpoints.sort_by(|a, b| (&a.path, a.line, &a.value).cmp(&(&b.path, b.line, &b.value)));
    if endpoints.len() > limits.max_endpoints {
        report.findings.push(Finding {
            code: "endpoints_truncated".into(),
            category: Category::Coverage,
            severity: Severity::Info,
            message: format!(
                "{} endpoints found; only the first {} are listed",
                endpoints.len(),
                limits.max_endpoints
            ),
            path: String::new(),
            line: None,
            excerpt: String::new(),
        });
        endpoints.truncate(limits.max_endpoints);
    }
    report.endpoints = endpoints;
    report.findings.sort_by(|a, b| {
        (&a.path, a.line, &a.code, &a.excerpt).cmp(&(&b.path, b.line, &b.code, &b.excerpt))
    });
    report
        .findings
        .dedup_by(|a, b| a.path == b.path && a.code == b.code && a.line == b.line);
}

/// The scan stage as a verification holds it: the compiled scanner and the verdict policy,
/// loaded once per process.
#[derive(Debug)]
pub struct Stage {
    /// The compiled rule pack and limits.
    pub scanner: Scanner,
    /// The verdict policy.
    pub policy: Policy,
}

impl Stage {
    /// The built-in rule pack and the default policy.
    pub fn builtin() -> Result<Stage, ScanError> {
        let scanner = Scanner::builtin()?;
        let policy = Policy::builtin(scanner.pack())?;
        Ok(Stage { scanner, policy })
    }

    /// Scans a package through its normalised tar, the package stage's one output (blocking:
    /// call from `spawn_blocking` in async code).
    pub fn scan_package(&self, package: &crate::package::Package) -> Result<ScanReport, ScanError> {
        let mut report = self.scan_tar_file(&package.manifest, &package.tar.path)?;
        if let Some(r) = &package.requirements {
            report.findings.extend(requirement_findings(r));
        }
        Ok(report)
    }

    /// Scans the normalised tar at `tar` of a package with `manifest` (blocking).
    pub fn scan_tar_file(&self, manifest: &Manifest, tar: &Path) -> Result<ScanReport, ScanError> {
        let file = std::fs::File::open(tar)
            .map_err(|e| ScanError::ReadTree(format!("{}: {e}", tar.display())))?;
        self.scanner.scan_tar(
            manifest,
            std::io::BufReader::with_capacity(256 * 1024, file),
        )
    }
}

/// Findings about a package's declared requirements: each requirement that is not an exact
/// pin is a low finding (`requirements_unpinned`): what it installs is decided by the index
/// at verification time, and may differ the next time.
pub fn requirement_findings(r: &crate::package::requirements::Requirements) -> Vec<Finding> {
    r.items
        .iter()
        .filter(|i| i.pinned().is_none())
        .map(|i| Finding {
            code: "requirements_unpinned".into(),
            category: Category::Dependencies,
            severity: Severity::Low,
            message: format!(
                "{} is not pinned to one version ({}): what gets installed is the index's \
                 choice at verification time, and the result is not cached",
                i.name,
                if i.specifier.is_empty() {
                    "any version".to_string()
                } else {
                    i.specifier.clone()
                }
            ),
            path: r.path.clone(),
            line: Some(i.line as u64),
            excerpt: i.to_line().chars().take(EXCERPT_CHARS).collect(),
        })
        .collect()
}

/// Finding codes the pipeline emits about the test run (category `tests`); policies may name
/// them too.
pub const PIPELINE_CODES: &[&str] = &[
    "no_tests_declared",
    "tests_detected",
    "timeout_capped",
    "timed_out",
    "oom_killed",
    "output_truncated",
    "dependencies_failed",
    "dependencies_install_failed",
    "requirements_unpinned",
    "requirements_not_installed",
];
