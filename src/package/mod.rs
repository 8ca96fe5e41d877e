//! The `package` stage: untrusted archive bytes in, a validated skill tree, its `SKILL.md`
//! manifest, its test plan and its digests out, or a specific refusal.
//!
//! OWNER: issue 2. The public items below are the interface other stages rely on; add freely,
//! rename none without telling the integrator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// Limits on an untrusted package. Defaults follow DESIGN.md ("Skill packages").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest archive accepted, in bytes (100 MiB).
    pub archive_bytes: u64,
    /// Largest total of unpacked file bytes (512 MiB).
    pub unpacked_bytes: u64,
    /// Most entries (files + directories) in one package (10,000).
    pub entries: u64,
    /// Largest compression ratio of any one file (100, i.e. 100:1).
    pub ratio: u64,
    /// Deepest path, in components (32).
    pub depth: usize,
    /// Longest path component, in bytes (255).
    pub component_bytes: usize,
    /// Largest `SKILL.md`, in bytes (1 MiB).
    pub skill_md_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            archive_bytes: 100 * 1024 * 1024,
            unpacked_bytes: 512 * 1024 * 1024,
            entries: 10_000,
            ratio: 100,
            depth: 32,
            component_bytes: 255,
            skill_md_bytes: 1024 * 1024,
        }
    }
}

/// The container a package came in, detected by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// An uncompressed POSIX/GNU tar.
    Tar,
    /// A gzip-compressed tar.
    TarGz,
    /// A zip (including Anthropic's `.skill`).
    Zip,
    /// A plain directory (CLI only).
    Directory,
}

/// The runtime a test runs in; each maps to a runner image in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// POSIX shell (busybox).
    Shell,
    /// Python 3.
    Python,
    /// Node.js.
    Node,
}

impl Runtime {
    /// Every runtime, in a fixed order.
    pub const ALL: [Runtime; 3] = [Runtime::Shell, Runtime::Python, Runtime::Node];

    /// The lowercase name used in `verify-runtime` and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Shell => "shell",
            Runtime::Python => "python",
            Runtime::Node => "node",
        }
    }
}

/// Where a test plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestSource {
    /// `metadata.verify-test` in `SKILL.md`.
    Declared,
    /// Found by layout (pytest/unittest, `package.json` test script, `test.sh`).
    Detected,
    /// No test found: built-in smoke checks (every script parses in its runtime).
    Smoke,
}

/// What to run, where, for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestPlan {
    /// A shell command, run with `sh -c` in the skill root.
    pub command: String,
    /// The runtime image it needs.
    pub runtime: Runtime,
    /// The timeout the skill asked for (`verify-timeout`), if any; the policy caps it.
    pub timeout_secs: Option<u64>,
    /// Declared, detected or smoke.
    pub source: TestSource,
}

/// A validated `SKILL.md` frontmatter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `name`: 1-64 chars of `a-z0-9-`, no leading/trailing/double `-`.
    pub name: String,
    /// `description`: 1-1024 chars.
    pub description: String,
    /// `license`, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// `compatibility`, if given (<= 500 chars).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<String>,
    /// `metadata` (string -> string).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// `allowed-tools`, if given.
    #[serde(rename = "allowed-tools", skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<String>,
}

/// A package that passed every check: its tree lies under `root` on the host.
#[derive(Debug, Clone)]
pub struct Package {
    /// The skill root on the host (the folder holding `SKILL.md`).
    pub root: PathBuf,
    /// The container format it arrived in.
    pub format: Format,
    /// The validated manifest.
    pub manifest: Manifest,
    /// The test plan (declared, detected or smoke).
    pub test: TestPlan,
    /// Canonical tree digest (see the module docs for the exact algorithm).
    pub tree_sha256: Sha256Digest,
    /// SHA-256 of the archive bytes; `None` for a directory.
    pub archive_sha256: Option<Sha256Digest>,
    /// Number of regular files in the tree.
    pub files: u64,
    /// Total bytes of regular files in the tree.
    pub bytes: u64,
}

/// One entry of a validated tree, in canonical (sorted by path bytes) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Path relative to the skill root, `/`-separated, no leading `./`.
    pub path: String,
    /// Directory or regular file.
    pub kind: EntryKind,
    /// Whether any executable bit is set (files only).
    pub executable: bool,
    /// File size in bytes (0 for directories).
    pub len: u64,
}

/// The only entry kinds a validated tree holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

/// Why a package was refused. `code()` gives the stable machine-readable code.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Content is none of tar, tar.gz, zip (or a directory for the CLI).
    #[error("unsupported archive format")]
    UnsupportedFormat,
    /// An entry that is neither a regular file nor a directory (symlink, device, FIFO, ...).
    #[error("{path}: {kind} entries are not allowed")]
    UnsupportedEntry {
        /// The entry's path inside the package.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// A name that is not valid UTF-8.
    #[error("{path}: file name is not valid UTF-8")]
    InvalidName {
        /// The lossy form of the path.
        path: String,
    },
    /// Reading the input failed (not the package's fault).
    #[error("reading {path}: {source}")]
    Io {
        /// What was being read or written.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl PackageError {
    /// A stable machine-readable code, used by the API (`error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            PackageError::UnsupportedFormat => "unsupported_format",
            PackageError::UnsupportedEntry { .. } => "unsupported_entry",
            PackageError::InvalidName { .. } => "invalid_name",
            PackageError::Io { .. } => "io",
        }
    }

    /// True when the failure is the package's fault (a 4xx / exit 2), false when it is ours
    /// (I/O on our side: a 5xx / exit 3).
    pub fn is_invalid_package(&self) -> bool {
        !matches!(self, PackageError::Io { .. })
    }
}

/// Loads a package from `path`: an archive (detected by content) is unpacked under
/// `work_dir` (which must not exist yet; it is created, and removed again on failure);
/// a directory is validated in place and `work_dir` is not touched.
pub fn load(path: &Path, work_dir: &Path, limits: &Limits) -> Result<Package, PackageError> {
    let _ = (path, work_dir, limits);
    todo!("issue 2")
}

/// Walks a validated tree and returns its entries in canonical order (sorted by path bytes).
/// Refuses anything but directories and regular files.
pub fn tree_entries(root: &Path) -> Result<Vec<TreeEntry>, PackageError> {
    use std::os::unix::fs::PermissionsExt;

    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackageError::Io { path, source }
    };
    let mut out = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for item in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let item = item.map_err(io(&dir))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                return Err(PackageError::InvalidName {
                    path: format!("{prefix}{}", name.to_string_lossy()),
                });
            };
            let rel = format!("{prefix}{name}");
            // symlink_metadata: never follow a link, report it instead.
            let meta = std::fs::symlink_metadata(item.path()).map_err(io(&item.path()))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                pending.push((item.path(), format!("{rel}/")));
                out.push(TreeEntry {
                    path: rel,
                    kind: EntryKind::Dir,
                    executable: false,
                    len: 0,
                });
            } else if ft.is_file() {
                out.push(TreeEntry {
                    path: rel,
                    kind: EntryKind::File,
                    executable: meta.permissions().mode() & 0o111 != 0,
                    len: meta.len(),
                });
            } else {
                let kind = if ft.is_symlink() {
                    "symlink"
                } else {
                    "special file"
                };
                return Err(PackageError::UnsupportedEntry { path: rel, kind });
            }
        }
    }
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}
