//! The `package` stage: untrusted archive bytes in, a validated skill tree, its `SKILL.md`
//! manifest, its test plan and its digests out, or a specific refusal.
//!
//! # Pipeline
//!
//! 1. [`detect`]: the container format is decided by content (magic bytes), never by name.
//! 2. [`read`]: one pass over the input. A hand-written, streaming tar reader (plain or
//!    gzip), a guarded zip reader and a directory walker feed one [`read::TreeSink`], which
//!    validates every entry path itself, accepts only regular files and directories, counts
//!    real bytes as they arrive, hashes every file on a second thread, and fails closed on
//!    the first bad entry. No file of the package is ever created on the host.
//! 3. The skill root: one top-level folder holding `SKILL.md` is the root, otherwise the
//!    archive root is.
//! 4. [`manifest`]: `SKILL.md` frontmatter under the Agent Skills specification.
//! 5. [`plan`]: the test plan (declared in `metadata`, detected from the layout, or smoke),
//!    from the file list and the few content facts the read captured.
//! 6. [`tree`]: the canonical tree digest.
//! 7. [`read::emit`]: the normalised tar ([`TreeTar`]) the sandbox streams into a container,
//!    written by [`read`] to the path its caller gives; [`inspect`] skips it.
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
//! Paths can hold neither control characters nor newlines (they are refused when read),
//! so each record ends at its only `\n` and the encoding is unambiguous. Timestamps, owners,
//! entry order and the container format play no part. `docs/packages.md` shows how to
//! recompute it with standard shell tools.
//!
//! `archive_sha256` is the plain SHA-256 of the uploaded bytes.

pub mod detect;
mod error;
pub mod manifest;
pub mod path;
pub mod plan;
pub mod read;
pub mod requirements;
pub mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::PackageError;
pub use tree::FileRecord;

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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a test plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TestSource {
    /// `metadata.verify-test` in `SKILL.md`.
    Declared,
    /// Found by layout (pytest/unittest, `package.json` test script, `test.sh`).
    Detected,
    /// No test found: built-in smoke checks (every script parses in its runtime).
    Smoke,
}

impl TestSource {
    /// The lowercase name used in the statement and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TestSource::Declared => "declared",
            TestSource::Detected => "detected",
            TestSource::Smoke => "smoke",
        }
    }
}

impl std::fmt::Display for TestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

/// A package that passed every check. `T` is what became of its tree: the normalised tar
/// ([`TreeTar`], from [`read`]) or nothing (`()`, from [`inspect`], which writes nothing).
#[derive(Debug, Clone)]
pub struct Package<T = TreeTar> {
    /// The container format it arrived in.
    pub format: Format,
    /// The validated manifest.
    pub manifest: Manifest,
    /// The test plan (declared, detected or smoke).
    pub test: TestPlan,
    /// The Python requirements (`requirements.txt` or `metadata.verify-requirements`).
    pub requirements: Option<requirements::Requirements>,
    /// Canonical tree digest (see the module docs for the exact algorithm).
    pub tree_sha256: Sha256Digest,
    /// SHA-256 of the archive bytes; `None` for a directory.
    pub archive_sha256: Option<Sha256Digest>,
    /// Number of regular files in the tree.
    pub files: u64,
    /// Total bytes of regular files in the tree.
    pub bytes: u64,
    /// Every regular file, in canonical order, with what a scanner needs to know of it
    /// (path relative to the skill root, executable bit, length, SHA-256, where its bytes
    /// lie in the tar).
    pub file_facts: Vec<FileRecord>,
    /// The normalised tar.
    pub tar: T,
}

/// The skill tree as it leaves the package stage: a normalised tar on disk (regular files and
/// directories only, canonical order, modes 0755/0644, no host metadata), streamed as is into
/// a container by the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeTar {
    /// The tar file (a job's content-addressed blob, or a temporary file for the CLI).
    pub path: PathBuf,
    /// SHA-256 of the tar bytes.
    pub sha256: Sha256Digest,
    /// Length of the tar, in bytes.
    pub len: u64,
    /// Bytes the unpacked tree occupies on a tmpfs: whole pages per file plus a page per
    /// entry (see [`tree_footprint`]).
    pub footprint_bytes: u64,
}

/// tmpfs charges whole pages.
const PAGE: u64 = 4096;

/// Bytes a tree occupies on a tmpfs: whole pages per file, plus a page per entry for
/// directories and slack.
pub fn tree_footprint(entries: &[TreeEntry]) -> u64 {
    entries
        .iter()
        .fold(0u64, |acc, e| acc.saturating_add(file_footprint(e.len)))
}

/// Bytes one entry of `len` bytes occupies on a tmpfs: its whole pages plus one.
pub fn file_footprint(len: u64) -> u64 {
    len.div_ceil(PAGE).saturating_add(1).saturating_mul(PAGE)
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

/// Reads the package at `input` once (an archive detected by content, or a directory) and
/// writes its normalised tar to `tar_out`, which must not exist (its directory must). On a
/// refusal nothing is left: no `tar_out`, no spool. No file of the package is ever created
/// on the host.
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn read(input: &Path, tar_out: &Path, limits: &Limits) -> Result<Package, PackageError> {
    if tar_out.symlink_metadata().is_ok() {
        return Err(PackageError::OutputExists {
            path: tar_out.to_path_buf(),
        });
    }
    let spool = read::spool_for(tar_out)?;
    let (read, checked) = read_checked(input, Some(spool), limits)?;
    let spool = read
        .spool
        .as_ref()
        .expect("a spool was given, so the read keeps it");
    let mut emits = tree_emits(&read, checked.top.as_deref());
    emits.sort_by(|a, b| a.entry.path.as_bytes().cmp(b.entry.path.as_bytes()));
    let (tar, offsets) = read::emit::write_tar(&emits, spool, tar_out)?;
    let mut package = checked.package;
    // `file_facts` and the file entries of `emits` are both in canonical order, and the
    // `offsets` are those of the file entries.
    for (fact, offset) in package.file_facts.iter_mut().zip(offsets) {
        fact.tar_offset = Some(offset);
    }
    Ok(Package {
        format: package.format,
        manifest: package.manifest,
        test: package.test,
        requirements: package.requirements,
        tree_sha256: package.tree_sha256,
        archive_sha256: package.archive_sha256,
        files: package.files,
        bytes: package.bytes,
        file_facts: package.file_facts,
        tar,
    })
}

/// Reads and validates the package at `input` exactly as [`read`] does, but only hashes
/// its files: no tar, no spool, nothing written anywhere.
///
/// Blocking: call it from `spawn_blocking` in async code.
pub fn inspect(input: &Path, limits: &Limits) -> Result<Package<()>, PackageError> {
    let (_, checked) = read_checked(input, None, limits)?;
    Ok(checked.package)
}

impl TreeTar {
    /// Writes the tree under `root` as a normalised tar at `out` (created; must not exist),
    /// read through the same entry rules as a package (default [`Limits`]) but without
    /// looking for a skill root or a manifest: the tar holds `root`'s tree as it is.
    pub fn write_from_dir(root: &Path, out: &Path) -> Result<TreeTar, PackageError> {
        let limits = Limits::default();
        if out.symlink_metadata().is_ok() {
            return Err(PackageError::OutputExists {
                path: out.to_path_buf(),
            });
        }
        let mut sink = read::TreeSink::new(&limits, Some(read::spool_for(out)?));
        read::dir::read_dir_tree(root, &mut sink)?;
        let read = sink.finish()?;
        let spool = read.spool.as_ref().expect("a spool was given");
        let mut emits = tree_emits(&read, None);
        emits.sort_by(|a, b| a.entry.path.as_bytes().cmp(b.entry.path.as_bytes()));
        Ok(read::emit::write_tar(&emits, spool, out)?.0)
    }
}

/// The tar entries of everything under the skill root `top` (or the whole tree).
fn tree_emits(read: &read::ReadTree, top: Option<&str>) -> Vec<read::emit::Emit> {
    let prefix = top.map(|t| format!("{t}/"));
    let strip = |path: &str| -> Option<String> {
        match &prefix {
            Some(p) => path.strip_prefix(p.as_str()).map(str::to_string),
            None => Some(path.to_string()),
        }
    };
    let mut out = Vec::new();
    for (path, node) in &read.nodes {
        if let (read::Node::Dir { .. }, Some(rel)) = (node, strip(path)) {
            out.push(read::emit::Emit {
                entry: TreeEntry {
                    path: rel,
                    kind: EntryKind::Dir,
                    executable: false,
                    len: 0,
                },
                spool_offset: 0,
            });
        }
    }
    for (file, offset) in read.files.iter().zip(&read.spool_offsets) {
        if let Some(rel) = strip(&file.path) {
            out.push(read::emit::Emit {
                entry: TreeEntry {
                    path: rel,
                    kind: EntryKind::File,
                    executable: file.executable,
                    len: file.len,
                },
                spool_offset: *offset,
            });
        }
    }
    out
}

/// A validated package before its tar is written (files re-rooted, in canonical order) and
/// its skill root's folder, if any.
struct Checked {
    package: Package<()>,
    top: Option<String>,
}

/// The one read, then the skill root, the manifest, the plan and the digests.
fn read_checked(
    input: &Path,
    spool: Option<std::fs::File>,
    limits: &Limits,
) -> Result<(read::ReadTree, Checked), PackageError> {
    let meta = std::fs::metadata(input).map_err(|source| PackageError::UnreadableInput {
        path: input.to_path_buf(),
        source,
    })?;
    let (format, read, archive_sha256) = if meta.is_dir() {
        let mut sink = read::TreeSink::new(limits, spool);
        read::dir::read_dir_tree(input, &mut sink)?;
        (Format::Directory, sink.finish()?, None)
    } else {
        let format = detect::detect_file(input, limits)?;
        let (read, digest) = read::read_archive(input, format, spool, limits)?;
        (format, read, Some(digest))
    };
    let top = skill_root(&read)?;
    let skill_md_path = match &top {
        Some(t) => format!("{t}/SKILL.md"),
        None => "SKILL.md".to_string(),
    };
    let record = read
        .files
        .iter()
        .find(|f| f.path == skill_md_path)
        .ok_or(PackageError::MissingSkillMd)?;
    if record.len > limits.skill_md_bytes {
        return Err(PackageError::SkillMdTooLarge {
            limit: limits.skill_md_bytes,
        });
    }
    let text = read
        .skill_md
        .iter()
        .find(|(p, _)| *p == skill_md_path)
        .map(|(_, text)| text.as_slice())
        .ok_or(PackageError::MissingSkillMd)?;
    // A directory may only name-check against its folder when it came from an archive's
    // top folder: a directory on a user's disk can be called anything (see docs).
    let folder = if format == Format::Directory {
        None
    } else {
        top.as_deref()
    };
    let manifest = manifest::parse_skill_md(text, folder)?;

    let prefix = top.as_ref().map(|t| format!("{t}/"));
    let mut files: Vec<(FileRecord, usize)> = read
        .files
        .iter()
        .enumerate()
        .filter_map(|(index, f)| {
            let rel = match &prefix {
                Some(p) => f.path.strip_prefix(p.as_str())?.to_string(),
                None => f.path.clone(),
            };
            Some((
                FileRecord {
                    path: rel,
                    ..f.clone()
                },
                index,
            ))
        })
        .collect();
    files.sort_by(|a, b| a.0.path.as_bytes().cmp(b.0.path.as_bytes()));
    let facts: Vec<FileRecord> = files.iter().map(|(f, _)| f.clone()).collect();
    // Re-rooting can make a second-level component the first one: check it like one.
    if let Some(p) = prefix.as_deref() {
        let mut under_root = read.nodes.keys().filter_map(|k| k.strip_prefix(p));
        if let Some(bad) = under_root.find(|k| path::has_drive_prefix(k)) {
            return Err(PackageError::WindowsPrefix {
                path: path::display_name(bad.as_bytes()),
            });
        }
    }
    let test = plan::plan(&manifest, &facts)?;
    let requirements = plan::requirements(&manifest, &facts)?;
    let tree_sha256 = tree::digest(&facts);
    let package = Package {
        format,
        manifest,
        test,
        requirements,
        tree_sha256,
        archive_sha256,
        files: facts.len() as u64,
        bytes: facts.iter().map(|f| f.len).sum(),
        file_facts: facts,
        tar: (),
    };
    Ok((read, Checked { package, top }))
}

/// The skill root: the archive's single top-level entry when it is a folder holding
/// `SKILL.md`, otherwise the archive root (which must then hold `SKILL.md`). Returns the
/// folder's name, if any.
fn skill_root(read: &read::ReadTree) -> Result<Option<String>, PackageError> {
    let mut tops = read.nodes.iter().filter(|(path, _)| !path.contains('/'));
    let first = tops.next();
    if let (Some((name, read::Node::Dir { .. })), None) = (first, tops.next()) {
        let skill_md = format!("{name}/SKILL.md");
        if read.files.iter().any(|f| f.path == skill_md) {
            return Ok(Some(name.clone()));
        }
    }
    if read.files.iter().any(|f| f.path == "SKILL.md") {
        Ok(None)
    } else {
        Err(PackageError::MissingSkillMd)
    }
}
