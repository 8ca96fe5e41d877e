//! The `package` stage: untrusted archive bytes in, a validated skill tree, its `SKILL.md`
//! manifest, its test plan and its digests out, or a specific refusal.
//!
//! OWNER: issue 2. The public items below are the interface other stages rely on; add freely,
//! rename none without telling the integrator.
//!
//! # Pipeline
//!
//! 1. [`detect`]: the container format is decided by content (magic bytes), never by name.
//! 2. [`unpack`]: a hand-written, streaming tar reader (plain or gzip) and a guarded zip reader
//!    feed one [`unpack::TreeWriter`], which validates every entry path itself, creates only
//!    regular files and directories under a directory it created, counts real bytes as they are
//!    written, hashes every file on the way, and fails closed on the first bad entry.
//! 3. The skill root: one top-level folder holding `SKILL.md` is the root, otherwise the
//!    archive root is.
//! 4. [`manifest`]: `SKILL.md` frontmatter under the Agent Skills specification.
//! 5. [`plan`]: the test plan (declared in `metadata`, detected from the layout, or smoke).
//! 6. [`tree`]: the canonical tree digest.
//!
//! # Canonical tree digest (`tree_sha256`), version 1
//!
//! The digest covers the regular files under the skill root (directories are implied by the
//! paths of the files under them; empty directories do not count, because zip archives often
//! leave directory entries out). It is computed as:
//!
//! ```text
//! tree_sha256 = SHA-256( "skill-verifier tree v1\n" || record_1 || record_2 || ... )
//! record      = mode " " content_sha256_hex " " length " " path "\n"
//! ```
//!
//! - `path` is the file's path relative to the skill root, `/`-separated, UTF-8, no leading
//!   `./` (so an optional top folder is not part of it);
//! - records are sorted by `path` compared as raw bytes (`LC_ALL=C sort` order);
//! - `mode` is `755` when any executable bit is set on the file and `644` otherwise;
//! - `content_sha256_hex` is the lowercase hex SHA-256 of the file's bytes;
//! - `length` is the file's size in bytes, in decimal without leading zeros.
//!
//! Paths can hold neither control characters nor newlines (they are refused at unpack time),
//! so each record ends at its only `\n` and the encoding is unambiguous. Timestamps, owners,
//! entry order and the container format play no part. `docs/packages.md` shows how to
//! recompute it with standard shell tools.
//!
//! `archive_sha256` is the plain SHA-256 of the uploaded bytes.

pub mod detect;
pub mod manifest;
pub mod path;
pub mod plan;
pub mod tree;
pub mod unpack;

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
    /// Most entries (files + directories, including directories created implicitly for a
    /// file's parents) in one package (10,000).
    pub entries: u64,
    /// Largest compression ratio of any one file (100, i.e. 100:1).
    pub ratio: u64,
    /// The ratio is only enforced once a file has produced this many bytes (1 MiB): small
    /// files of repeated bytes legitimately compress beyond 100:1 and cannot hurt anyone.
    pub ratio_min_bytes: u64,
    /// Deepest path, in components (32).
    pub depth: usize,
    /// Longest path component, in bytes (255).
    pub component_bytes: usize,
    /// Largest tar extension record (GNU long name / long link, PAX extended header), in
    /// bytes (16 KiB). A path can be at most ~8 KiB under `depth` x `component_bytes`, so
    /// anything bigger is an attempt to make us buffer data.
    pub extension_bytes: u64,
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
            ratio_min_bytes: 1024 * 1024,
            depth: 32,
            component_bytes: 255,
            extension_bytes: 16 * 1024,
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

impl Format {
    /// The lowercase name used in JSON (`tar`, `targz`, `zip`, `directory`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::TarGz => "targz",
            Format::Zip => "zip",
            Format::Directory => "directory",
        }
    }
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

    /// Parses a `verify-runtime` value (exact lowercase name).
    pub fn parse(text: &str) -> Option<Runtime> {
        Runtime::ALL.into_iter().find(|r| r.as_str() == text)
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
    /// `allowed-tools`, if given (a YAML list is joined with single spaces, as `skills-ref`
    /// does).
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
///
/// Every refusal the package can cause has its own variant; only [`PackageError::Io`] and
/// [`PackageError::WorkDirExists`] are the verifier's own failures.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Content is none of tar, tar.gz, zip (or a directory for the CLI).
    #[error("unsupported archive format")]
    UnsupportedFormat,
    /// The input file is larger than `Limits::archive_bytes`.
    #[error("archive is larger than {limit} bytes")]
    ArchiveTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The input path could not be opened or read (missing, unreadable).
    #[error("cannot read {path}: {source}")]
    UnreadableInput {
        /// The input path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An entry path that starts with `/`.
    #[error("{path}: absolute paths are not allowed")]
    AbsolutePath {
        /// The entry's path as stored.
        path: String,
    },
    /// An entry path with a `..` component.
    #[error("{path}: `..` path components are not allowed")]
    ParentDir {
        /// The entry's path as stored.
        path: String,
    },
    /// An entry path that starts with a Windows drive prefix (`C:`).
    #[error("{path}: Windows drive prefixes are not allowed")]
    WindowsPrefix {
        /// The entry's path as stored.
        path: String,
    },
    /// An entry path holding a backslash (a Windows separator on some extractors).
    #[error("{path}: backslashes in paths are not allowed")]
    Backslash {
        /// The entry's path as stored (control characters escaped).
        path: String,
    },
    /// An entry path holding a control character (including NUL and newline).
    #[error("{path}: control characters in file names are not allowed")]
    ControlCharacter {
        /// The entry's path, escaped.
        path: String,
    },
    /// A name that is not valid UTF-8.
    #[error("{path}: file name is not valid UTF-8")]
    InvalidName {
        /// The lossy form of the path.
        path: String,
    },
    /// An entry whose path is empty (or only `.` components) but which is not a directory.
    #[error("an entry has an empty path")]
    EmptyPath,
    /// A path deeper than `Limits::depth` components.
    #[error("{path}: path is deeper than {limit} components")]
    PathTooDeep {
        /// The entry's path.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// A path component longer than `Limits::component_bytes`.
    #[error("{path}: a path component is longer than {limit} bytes")]
    ComponentTooLong {
        /// The entry's path (shortened).
        path: String,
        /// The limit.
        limit: usize,
    },
    /// A symbolic link entry (the host must never follow a link an uploader planted).
    #[error("{path}: symlinks are not allowed")]
    Symlink {
        /// The entry's path.
        path: String,
    },
    /// A hard link entry.
    #[error("{path}: hard links are not allowed")]
    HardLink {
        /// The entry's path.
        path: String,
    },
    /// A device node, FIFO or socket.
    #[error("{path}: {kind} entries are not allowed")]
    SpecialFile {
        /// The entry's path.
        path: String,
        /// What it is ("character device", "block device", "FIFO", "socket").
        kind: &'static str,
    },
    /// A sparse file (GNU `S` entries or PAX `GNU.sparse.*` records).
    #[error("{path}: sparse files are not allowed")]
    SparseEntry {
        /// The entry's path.
        path: String,
    },
    /// Any other entry that is neither a regular file nor a directory (volume labels,
    /// multi-volume continuations, unknown tar types).
    #[error("{path}: {kind} entries are not allowed")]
    UnsupportedEntry {
        /// The entry's path inside the package.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// The same path twice (also after normalising `./` and `a//b`).
    #[error("{path}: duplicate path")]
    DuplicatePath {
        /// The path.
        path: String,
    },
    /// A path used both as a file and as a directory.
    #[error("{path}: used both as a file and as a directory")]
    PathConflict {
        /// The path.
        path: String,
    },
    /// More than `Limits::entries` entries.
    #[error("more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// More than `Limits::unpacked_bytes` of file content.
    #[error("unpacked content is larger than {limit} bytes")]
    UnpackedTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A file that decompresses beyond `Limits::ratio`:1.
    #[error("{path}: compression ratio above {limit}:1")]
    CompressionRatio {
        /// The entry's path.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// A GNU long-name/long-link or PAX record larger than `Limits::extension_bytes`.
    #[error("tar {kind} record of {size} bytes exceeds {limit} bytes")]
    ExtensionTooLarge {
        /// "GNU long name", "GNU long link", "PAX header" or "PAX global header".
        kind: &'static str,
        /// The declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An encrypted zip entry.
    #[error("{path}: encrypted entries are not allowed")]
    EncryptedEntry {
        /// The entry's path.
        path: String,
    },
    /// A zip compression method other than stored or deflate.
    #[error("{path}: compression method {method} is not supported (only stored and deflate)")]
    UnsupportedCompression {
        /// The entry's path.
        path: String,
        /// The method, as the zip crate names it.
        method: String,
    },
    /// The stream ended early.
    #[error("archive is truncated: {detail}")]
    Truncated {
        /// Where it ended.
        detail: String,
    },
    /// The stream is malformed (bad checksum, bad gzip, bad zip structure, sizes that lie).
    #[error("archive is corrupt: {detail}")]
    Corrupt {
        /// What is wrong.
        detail: String,
    },
    /// No `SKILL.md` at the skill root.
    #[error("SKILL.md not found (at the archive root or in its single top-level folder)")]
    MissingSkillMd,
    /// `SKILL.md` larger than `Limits::skill_md_bytes`.
    #[error("SKILL.md is larger than {limit} bytes")]
    SkillMdTooLarge {
        /// The limit.
        limit: u64,
    },
    /// `SKILL.md` is not UTF-8.
    #[error("SKILL.md is not valid UTF-8")]
    SkillMdNotUtf8,
    /// `SKILL.md` does not start with a `---` line.
    #[error("SKILL.md must start with YAML frontmatter (a `---` line)")]
    MissingFrontmatter,
    /// The frontmatter has no closing `---` line.
    #[error("SKILL.md frontmatter is not closed with a `---` line")]
    UnclosedFrontmatter,
    /// The frontmatter is not valid YAML (or exceeds the parser's alias/size budget).
    #[error("invalid YAML in SKILL.md frontmatter: {detail}")]
    InvalidYaml {
        /// The parser's message (first line).
        detail: String,
    },
    /// The frontmatter is not a mapping.
    #[error("SKILL.md frontmatter must be a YAML mapping")]
    FrontmatterNotMapping,
    /// A top-level frontmatter key outside the specification.
    #[error("unexpected key in SKILL.md frontmatter: {field} (allowed: allowed-tools, compatibility, description, license, metadata, name)")]
    UnknownField {
        /// The key.
        field: String,
    },
    /// `name` or `description` missing.
    #[error("missing required field in SKILL.md frontmatter: {field}")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field of the wrong YAML type.
    #[error("field '{field}' must be {expected}")]
    FieldType {
        /// The field.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// `name` breaks the naming rules.
    #[error("invalid skill name {name:?}: {reason}")]
    InvalidSkillName {
        /// The name (shortened).
        name: String,
        /// Which rule.
        reason: &'static str,
    },
    /// `name` differs from the archive's top-level folder.
    #[error("skill name {name:?} does not match its folder {folder:?}")]
    NameMismatch {
        /// The name.
        name: String,
        /// The folder.
        folder: String,
    },
    /// `description` breaks the rules.
    #[error("invalid description: {reason}")]
    InvalidDescription {
        /// Which rule.
        reason: &'static str,
    },
    /// `compatibility` breaks the rules.
    #[error("invalid compatibility: {reason}")]
    InvalidCompatibility {
        /// Which rule.
        reason: &'static str,
    },
    /// A `metadata` entry that is not a string (or a verifier key used wrongly).
    #[error("invalid metadata.{key}: {reason}")]
    InvalidMetadata {
        /// The key.
        key: String,
        /// Which rule.
        reason: &'static str,
    },
    /// `metadata.verify-runtime` is not `shell`, `python` or `node`.
    #[error("invalid metadata.verify-runtime {value:?}: must be shell, python or node")]
    InvalidRuntime {
        /// The value given (shortened).
        value: String,
    },
    /// `metadata.verify-timeout` is not a positive integer number of seconds.
    #[error("invalid metadata.verify-timeout {value:?}: must be a positive integer (seconds)")]
    InvalidTimeout {
        /// The value given (shortened).
        value: String,
    },
    /// `metadata.verify-test` is empty or unusable.
    #[error("invalid metadata.verify-test: {reason}")]
    InvalidTestCommand {
        /// Which rule.
        reason: &'static str,
    },
    /// The work directory already exists (a caller bug: it must be fresh).
    #[error("work directory {path} already exists")]
    WorkDirExists {
        /// The path.
        path: PathBuf,
    },
    /// Reading or writing on our side failed (not the package's fault).
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
        use PackageError as E;
        match self {
            E::UnsupportedFormat => "unsupported_format",
            E::ArchiveTooLarge { .. } => "archive_too_large",
            E::UnreadableInput { .. } => "unreadable_input",
            E::AbsolutePath { .. } => "absolute_path",
            E::ParentDir { .. } => "parent_dir",
            E::WindowsPrefix { .. } => "windows_prefix",
            E::Backslash { .. } => "backslash",
            E::ControlCharacter { .. } => "control_character",
            E::InvalidName { .. } => "invalid_name",
            E::EmptyPath => "empty_path",
            E::PathTooDeep { .. } => "path_too_deep",
            E::ComponentTooLong { .. } => "component_too_long",
            E::Symlink { .. } => "symlink",
            E::HardLink { .. } => "hard_link",
            E::SpecialFile { .. } => "special_file",
            E::SparseEntry { .. } => "sparse_entry",
            E::UnsupportedEntry { .. } => "unsupported_entry",
            E::DuplicatePath { .. } => "duplicate_path",
            E::PathConflict { .. } => "path_conflict",
            E::TooManyEntries { .. } => "too_many_entries",
            E::UnpackedTooLarge { .. } => "unpacked_too_large",
            E::CompressionRatio { .. } => "compression_ratio",
            E::ExtensionTooLarge { .. } => "extension_too_large",
            E::EncryptedEntry { .. } => "encrypted_entry",
            E::UnsupportedCompression { .. } => "unsupported_compression",
            E::Truncated { .. } => "truncated",
            E::Corrupt { .. } => "corrupt",
            E::MissingSkillMd => "missing_skill_md",
            E::SkillMdTooLarge { .. } => "skill_md_too_large",
            E::SkillMdNotUtf8 => "skill_md_not_utf8",
            E::MissingFrontmatter => "missing_frontmatter",
            E::UnclosedFrontmatter => "unclosed_frontmatter",
            E::InvalidYaml { .. } => "invalid_yaml",
            E::FrontmatterNotMapping => "frontmatter_not_mapping",
            E::UnknownField { .. } => "unknown_field",
            E::MissingField { .. } => "missing_field",
            E::FieldType { .. } => "field_type",
            E::InvalidSkillName { .. } => "invalid_skill_name",
            E::NameMismatch { .. } => "name_mismatch",
            E::InvalidDescription { .. } => "invalid_description",
            E::InvalidCompatibility { .. } => "invalid_compatibility",
            E::InvalidMetadata { .. } => "invalid_metadata",
            E::InvalidRuntime { .. } => "invalid_runtime",
            E::InvalidTimeout { .. } => "invalid_timeout",
            E::InvalidTestCommand { .. } => "invalid_test_command",
            E::WorkDirExists { .. } => "work_dir_exists",
            E::Io { .. } => "io",
        }
    }

    /// True when the failure is the package's fault (a 4xx / exit 2), false when it is ours
    /// (I/O on our side: a 5xx / exit 3). An unreadable input path counts as the caller's.
    pub fn is_invalid_package(&self) -> bool {
        !matches!(
            self,
            PackageError::Io { .. } | PackageError::WorkDirExists { .. }
        )
    }

    /// A closure that wraps an `io::Error` on our side as [`PackageError::Io`].
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError {
        let path = path.to_path_buf();
        move |source| PackageError::Io { path, source }
    }
}

/// Loads a package from `path`: an archive (detected by content) is unpacked under
/// `work_dir` (which must not exist yet; it is created, and removed again on failure);
/// a directory is validated in place and `work_dir` is not touched.
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn load(path: &Path, work_dir: &Path, limits: &Limits) -> Result<Package, PackageError> {
    let meta = std::fs::metadata(path).map_err(|source| PackageError::UnreadableInput {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return load_directory(path, limits);
    }
    let format = detect::detect_file(path, limits)?;
    let guard = unpack::WorkDirGuard::create(work_dir)?;
    let unpacked = unpack::unpack(path, format, work_dir, limits)?;
    let package = finish(
        work_dir,
        format,
        unpacked.files,
        Some(unpacked.archive_sha256),
        limits,
    )?;
    guard.keep();
    Ok(package)
}

/// Validates a directory in place: the same path and entry rules as an archive, then the
/// same manifest, plan and digest steps.
fn load_directory(dir: &Path, limits: &Limits) -> Result<Package, PackageError> {
    let files = tree::scan_directory(dir, limits)?;
    finish(dir, Format::Directory, files, None, limits)
}

/// Shared tail of [`load`]: find the skill root, read the manifest, plan the test, digest.
fn finish(
    base: &Path,
    format: Format,
    files: Vec<tree::FileRecord>,
    archive_sha256: Option<Sha256Digest>,
    limits: &Limits,
) -> Result<Package, PackageError> {
    let (top, files) = tree::skill_root(base, files)?;
    let root = match &top {
        Some(folder) => base.join(folder),
        None => base.to_path_buf(),
    };
    let skill_md = files
        .iter()
        .find(|f| f.path == "SKILL.md")
        .ok_or(PackageError::MissingSkillMd)?;
    if skill_md.len > limits.skill_md_bytes {
        return Err(PackageError::SkillMdTooLarge {
            limit: limits.skill_md_bytes,
        });
    }
    let skill_md_path = root.join("SKILL.md");
    let text = read_bounded(&skill_md_path, limits.skill_md_bytes)?;
    // A directory may only name-check against its folder when it came from an archive's
    // top folder: a directory on a user's disk can be called anything (see docs).
    let folder = if format == Format::Directory {
        None
    } else {
        top.as_deref()
    };
    let manifest = manifest::parse_skill_md(&text, folder)?;
    let test = plan::plan(&manifest, &root, &files)?;
    let tree_sha256 = tree::digest(&files);
    Ok(Package {
        root,
        format,
        manifest,
        test,
        tree_sha256,
        archive_sha256,
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.len).sum(),
    })
}

/// Reads at most `limit` bytes of a file we wrote (or validated), refusing anything larger.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, PackageError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    let mut out = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(PackageError::io(path))?;
    if out.len() as u64 > limit {
        return Err(PackageError::SkillMdTooLarge { limit });
    }
    Ok(out)
}

/// Walks a validated tree and returns its entries in canonical order (sorted by path bytes).
/// Refuses anything but directories and regular files.
pub fn tree_entries(root: &Path) -> Result<Vec<TreeEntry>, PackageError> {
    use std::os::unix::fs::PermissionsExt;

    let mut out = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for item in std::fs::read_dir(&dir).map_err(PackageError::io(&dir))? {
            let item = item.map_err(PackageError::io(&dir))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                return Err(PackageError::InvalidName {
                    path: format!("{prefix}{}", name.to_string_lossy()),
                });
            };
            let rel = format!("{prefix}{name}");
            // symlink_metadata: never follow a link, report it instead.
            let meta =
                std::fs::symlink_metadata(item.path()).map_err(PackageError::io(&item.path()))?;
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
            } else if ft.is_symlink() {
                return Err(PackageError::Symlink { path: rel });
            } else {
                return Err(PackageError::SpecialFile {
                    path: rel,
                    kind: tree::special_kind(&ft),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}
