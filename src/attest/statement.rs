//! The in-toto Statement v1 and the skill-verifier predicate. The field names are a contract
//! (DESIGN.md, "Attestations"): add fields freely, rename none.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::package::{Runtime, TestSource};
use crate::sandbox::RunLimits;
pub use crate::scan::{Category, Reason, Severity, Verdict, VerdictStatus};

/// `_type` of every statement.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of every statement.
pub const PREDICATE_TYPE: &str = "https://skill-verifier.dev/attestation/verification/v1";

/// An in-toto Statement v1 carrying a [`Predicate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// What is attested: the skill by tree digest (and archive digest).
    pub subject: Vec<Subject>,
    /// Always [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The facts.
    pub predicate: Predicate,
}

/// A `ResourceDescriptor` subject: a name and its digests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// The skill name (or `<name>.archive` for the archive digest subject).
    pub name: String,
    /// `{"sha256": "<hex>"}`.
    pub digest: std::collections::BTreeMap<String, String>,
}

/// The skill-verifier predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predicate {
    /// Who verified.
    pub verifier: VerifierInfo,
    /// Which job and attempt.
    pub job: JobInfo,
    /// Package facts.
    pub package: PackageInfo,
    /// Where and under which limits it ran.
    pub environment: Environment,
    /// What ran.
    pub test: TestInfo,
    /// What happened.
    pub result: ResultInfo,
    /// Notes a reader must see (e.g. "no tests declared") and the scan's findings.
    pub findings: Vec<Finding>,
    /// The verdict: tests and the policy together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The verdict policy and the rule pack it was judged under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyInfo>,
    /// What the run tried, seen from outside the test (the network sink); absent when the
    /// run had no network (`environment.network` = `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    /// The scripts executed once each under observation (the dry run); absent when none ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Vec<DryRun>>,
    /// Every distribution installed before the test, as the index served it:
    /// `[{ecosystem, name, version, filename, sha256}]`; absent without requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<crate::deps::Dependency>>,
    /// The install of those distributions, apart from the test; absent without
    /// requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<Install>,
    /// The TEE quote binding this statement to the signing key; `None` until bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tee: Option<Tee>,
}

/// `predicate.observed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Every network attempt of the test (and the dry run), aggregated by destination:
    /// `{protocol, host, address, port, method, path, qtype, count, allowed,
    /// first_bytes_sha256, excerpt}`.
    pub network: Vec<crate::sink::record::Observation>,
    /// Attempts past the sink's bound of distinct destinations, counted only.
    #[serde(default)]
    pub network_dropped: u64,
}

/// `predicate.dry_run[]`: one script invocation of the dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRun {
    /// The script, relative to the skill root.
    pub script: String,
    /// Its arguments (`["--help"]`, then `[]`).
    pub args: Vec<String>,
    /// Its exit code (a failure is not a finding by itself).
    pub exit_code: i64,
    /// How long it ran.
    pub duration_ms: u64,
    /// It hit the dry run's per-script timeout.
    pub timed_out: bool,
}

/// `predicate.install`: fetching and installing the skill's requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Install {
    /// The install in the test's container, in milliseconds (0 when it never ran).
    pub duration_ms: u64,
    /// The installer's exit code; `None` when it did not run or did not finish.
    pub exit_code: Option<i64>,
    /// The install's deadline fired.
    #[serde(default)]
    pub timed_out: bool,
    /// The requirements file, relative to the skill root.
    pub requirements: String,
    /// The index the distributions were resolved against.
    pub index: String,
    /// The distributions came from the verifier's cache (the index was not asked).
    pub cached: bool,
    /// How long resolving and downloading took, in milliseconds (0 from the cache).
    pub fetch_ms: u64,
    /// The Python version and platform they were fetched for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub python: String,
    /// The platform (`linux-x86_64`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform: String,
    /// Why the requirements could not be fetched (the test then did not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The configured bounds.
    pub limits: crate::deps::DepsLimits,
}

/// `predicate.verifier`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierInfo {
    /// Verifier id (the signing key id).
    pub id: String,
    /// The verifier's version.
    pub version: String,
}

/// `predicate.job`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Job id (UUID).
    pub id: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
}

/// `predicate.package`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageInfo {
    /// Skill name.
    pub name: String,
    /// Canonical tree digest.
    pub tree_sha256: Sha256Digest,
    /// Archive digest (`None` for a directory).
    pub archive_sha256: Option<Sha256Digest>,
    /// Regular files.
    pub files: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

/// `predicate.environment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// Image reference.
    pub image: String,
    /// Image digest (`sha256:...`).
    pub image_digest: String,
    /// `shell` | `python` | `node`.
    pub runtime: Runtime,
    /// Network mode: `none`, `observe` or `allowlist`.
    pub network: String,
    /// The network the skill declared (`metadata.verify-network`): host names; empty for
    /// `none`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declared_network: Vec<String>,
    /// The isolation actually used, read back from the engine. Absent in statements made
    /// before it was recorded, which must keep verifying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// The engine that ran the test, by its configured name (`[[sandbox.engines]]`;
    /// `default` for the implicit one). Absent when the test did not run, and in
    /// statements made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Every limit.
    pub limits: RunLimits,
}

/// `predicate.environment.isolation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// The OCI runtime that ran the container, as the engine reports it (`runc`, `runsc`).
    pub runtime: String,
}

/// `predicate.test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestInfo {
    /// The command run in the skill root.
    pub command: String,
    /// `declared` | `detected` | `smoke`.
    pub source: TestSource,
}

/// `predicate.result.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Tests ran and passed.
    Passed,
    /// Tests ran and failed (or timed out, or were OOM-killed).
    Failed,
    /// No tests were declared or detected; smoke checks passed.
    Warned,
}

impl Status {
    /// The uppercase name used in the statement and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "PASSED",
            Status::Failed => "FAILED",
            Status::Warned => "WARNED",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `predicate.result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultInfo {
    /// PASSED | FAILED | WARNED.
    pub status: Status,
    /// Container exit code.
    pub exit_code: i64,
    /// Milliseconds.
    pub duration_ms: u64,
    /// Wall-clock timeout fired.
    pub timed_out: bool,
    /// OOM killer fired.
    pub oom_killed: bool,
    /// Output beyond the cap was dropped.
    pub output_truncated: bool,
    /// SHA-256 of captured stdout.
    pub stdout_sha256: Sha256Digest,
    /// SHA-256 of captured stderr.
    pub stderr_sha256: Sha256Digest,
    /// Bounded excerpt of stdout (lossy UTF-8).
    pub stdout_excerpt: String,
    /// Bounded excerpt of stderr (lossy UTF-8).
    pub stderr_excerpt: String,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable code, e.g. `no_tests_declared`, or a scan rule id.
    pub code: String,
    /// Human text.
    pub message: String,
    /// The rule's category (see `crate::scan::Category`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// `info|low|medium|high|critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Path relative to the skill root, for findings about a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// 1-based line, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Bounded excerpt, control characters escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

impl Finding {
    /// A finding about the test run (category `tests`).
    pub fn test(code: &str, severity: Severity, message: String) -> Finding {
        Finding {
            code: code.into(),
            message,
            category: Some(Category::Tests),
            severity: Some(severity),
            path: None,
            line: None,
            excerpt: None,
        }
    }
}

impl From<crate::scan::Finding> for Finding {
    fn from(f: crate::scan::Finding) -> Finding {
        Finding {
            code: f.code,
            message: f.message,
            category: Some(f.category),
            severity: Some(f.severity),
            path: (!f.path.is_empty()).then_some(f.path),
            line: f.line,
            excerpt: (!f.excerpt.is_empty()).then_some(f.excerpt),
        }
    }
}

impl Finding {
    /// Back to the scan's form (for SARIF and policy evaluation); findings without a
    /// category or severity (older attestations) count as `tests` / `info`.
    pub fn to_scan(&self) -> crate::scan::Finding {
        crate::scan::Finding {
            code: self.code.clone(),
            category: self.category.unwrap_or(Category::Tests),
            severity: self.severity.unwrap_or(Severity::Info),
            message: self.message.clone(),
            path: self.path.clone().unwrap_or_default(),
            line: self.line,
            excerpt: self.excerpt.clone().unwrap_or_default(),
        }
    }
}

/// `predicate.policy`: the verdict policy and the rule pack, by digest (docs/scan.md says how
/// to recompute both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// The policy's `name`.
    pub name: String,
    /// The policy's `version` (absent in statements made before it was recorded).
    #[serde(default)]
    pub version: String,
    /// SHA-256 of the policy file's bytes.
    pub sha256: Sha256Digest,
    /// SHA-256 of the rule pack (rule files in load order, built-in first).
    pub rules_sha256: Sha256Digest,
}

/// `predicate.tee`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tee {
    /// `simulated` | `dstack` | `none`.
    pub provider: String,
    /// The quote, hex (empty for `none`).
    pub quote: String,
    /// The 64 bytes bound into the quote, hex.
    pub report_data: String,
    /// Provider extras (event log, vm config, simulator public key, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}
