//! Why a package was refused: one variant per refusal, each with a stable machine-readable
//! code ([`PackageError::code`]) that the API and the CLI report.

use std::path::{Path, PathBuf};

/// Why a package was refused. `code()` gives the stable machine-readable code.
///
/// Every refusal the package can cause has its own variant; only [`PackageError::Io`] and
/// [`PackageError::OutputExists`] are the verifier's own failures.
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
    /// `metadata.verify-network` is neither `none` nor a list of host names.
    #[error("invalid metadata.verify-network {value:?}: {reason}")]
    InvalidNetwork {
        /// The value given (shortened).
        value: String,
        /// Which rule.
        reason: String,
    },
    /// The requirements file (`requirements.txt`, or `metadata.verify-requirements`) is
    /// missing, unreadable, or has a line the verifier does not accept.
    #[error("invalid requirements: {0}")]
    InvalidRequirements(String),
    /// `metadata.verify-test` is empty or unusable.
    #[error("invalid metadata.verify-test: {reason}")]
    InvalidTestCommand {
        /// Which rule.
        reason: &'static str,
    },
    /// The output tar already exists (a caller bug: it must be fresh).
    #[error("output {path} already exists")]
    OutputExists {
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
            E::InvalidNetwork { .. } => "invalid_network",
            E::InvalidRequirements(_) => "invalid_requirements",
            E::InvalidTestCommand { .. } => "invalid_test_command",
            E::OutputExists { .. } => "output_exists",
            E::Io { .. } => "io",
        }
    }

    /// True when the failure is the package's fault (a 4xx / exit 2), false when it is ours
    /// (I/O on our side: a 5xx / exit 3). An unreadable input path counts as the caller's.
    pub fn is_invalid_package(&self) -> bool {
        !matches!(
            self,
            PackageError::Io { .. } | PackageError::OutputExists { .. }
        )
    }

    /// A closure that wraps an `io::Error` on our side as [`PackageError::Io`].
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError {
        let path = path.to_path_buf();
        move |source| PackageError::Io { path, source }
    }
}
