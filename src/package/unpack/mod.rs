//! Hardened extraction: tar, tar.gz and zip streams into a directory we created.
//!
//! Every container reader feeds one [`TreeWriter`], which is the only code that touches the
//! host file system. It:
//!
//! - takes only [`ArchivePath`]s (so only relative paths of normal components);
//! - creates only directories (`0755`) and regular files (`0644`, or `0755` when the entry had
//!   any executable bit: setuid, setgid and sticky bits are never restored), with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW`, below a work directory it created itself. Since no link is
//!   ever created, no path component can lead anywhere else;
//! - refuses duplicate paths and paths used both as file and directory;
//! - counts entries (directories created for a file's parents included) and real bytes as
//!   they are written, with saturating arithmetic, never trusting sizes from headers;
//! - checks each file's compression ratio against the compressed bytes consumed for it;
//! - hashes each file while writing, so the tree digest needs no second read.
//!
//! The caller removes the whole work directory when anything fails ([`WorkDirGuard`]).

pub mod tar;
pub mod zip;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::path::ArchivePath;
use super::tree::FileRecord;
use super::{Format, Limits, PackageError};
use crate::digest::Sha256Digest;

/// Trailing decompressed bytes tolerated after a gzip'd tar's end-of-archive block. GNU tar
/// pads to 10 KiB records; anything far beyond that is data hidden from the tree.
const GZIP_TRAILER_BYTES: u64 = 1024 * 1024;

/// Copy buffer size: large enough that syscalls do not dominate, small enough to stay cheap.
const COPY_BUFFER: usize = 256 * 1024;

/// Removes the work directory on drop unless [`WorkDirGuard::keep`] was called.
#[derive(Debug)]
pub struct WorkDirGuard {
    path: Option<PathBuf>,
}

impl WorkDirGuard {
    /// Creates `path` (which must not exist; its parent must) and guards it.
    pub fn create(path: &Path) -> Result<Self, PackageError> {
        match std::fs::create_dir(path) {
            Ok(()) => Ok(Self {
                path: Some(path.to_path_buf()),
            }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(PackageError::WorkDirExists {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => Err(PackageError::io(path)(e)),
        }
    }

    /// Keeps the directory (the package is valid).
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for WorkDirGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Safe to remove recursively: we created every entry below it and none is a link.
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove work dir");
            }
        }
    }
}

/// Shared state of the reader that sits directly on the input file: bytes consumed (for the
/// ratio check), the archive hash, and whether an error came from the file itself.
#[derive(Debug, Default)]
pub(crate) struct SourceState {
    consumed: Cell<u64>,
    source_failed: Cell<bool>,
    hasher: RefCell<Sha256>,
}

/// Reads the input file, hashing and counting every byte.
pub(crate) struct HashingReader<R> {
    inner: R,
    state: Rc<SourceState>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.state.hasher.borrow_mut().update(&buf[..n]);
                self.state
                    .consumed
                    .set(self.state.consumed.get().saturating_add(n as u64));
                Ok(n)
            }
            Err(e) => {
                self.state.source_failed.set(true);
                Err(e)
            }
        }
    }
}

/// Turns stream errors into refusals: a failing input file is unreadable input, anything a
/// decoder reports is a truncated or corrupt archive.
pub(crate) struct StreamErrors {
    input: PathBuf,
    state: Rc<SourceState>,
}

impl StreamErrors {
    pub(crate) fn classify(&self, e: io::Error) -> PackageError {
        if self.state.source_failed.get() {
            return PackageError::UnreadableInput {
                path: self.input.clone(),
                source: e,
            };
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            PackageError::Truncated {
                detail: e.to_string(),
            }
        } else {
            PackageError::Corrupt {
                detail: e.to_string(),
            }
        }
    }
}

/// How the compressed size of the file being written is known.
pub(crate) enum RatioProbe {
    /// A running count of compressed input bytes (gzip): the file's share is the growth of
    /// the count while it is written (over-estimated by at most one read buffer).
    Consumed(Rc<SourceState>),
    /// The entry's compressed size (zip; checked against the archive size first).
    Fixed(u64),
}

impl RatioProbe {
    fn start(&self) -> u64 {
        match self {
            RatioProbe::Consumed(s) => s.consumed.get(),
            RatioProbe::Fixed(_) => 0,
        }
    }

    fn compressed_since(&self, start: u64) -> u64 {
        match self {
            RatioProbe::Consumed(s) => s.consumed.get().saturating_sub(start),
            RatioProbe::Fixed(n) => *n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// A directory; `explicit` once an entry named it (a second such entry is a duplicate).
    Dir {
        explicit: bool,
    },
    File,
}

/// The only writer of unpacked trees. See the module docs for what it guarantees.
pub struct TreeWriter<'a> {
    root: PathBuf,
    limits: &'a Limits,
    entries: u64,
    bytes: u64,
    nodes: HashMap<String, Node>,
    files: Vec<FileRecord>,
    buf: Vec<u8>,
}

impl<'a> TreeWriter<'a> {
    /// A writer into `root`, which the caller created and which is empty.
    pub fn new(root: &Path, limits: &'a Limits) -> Self {
        Self {
            root: root.to_path_buf(),
            limits,
            entries: 0,
            bytes: 0,
            nodes: HashMap::new(),
            files: Vec::new(),
            buf: vec![0u8; COPY_BUFFER],
        }
    }

    /// The files written so far, in archive order.
    pub fn into_files(self) -> Vec<FileRecord> {
        self.files
    }

    fn count_entry(&mut self) -> Result<(), PackageError> {
        self.entries = self.entries.saturating_add(1);
        if self.entries > self.limits.entries {
            return Err(PackageError::TooManyEntries {
                limit: self.limits.entries,
            });
        }
        Ok(())
    }

    /// Counts an entry that names the archive root (`./`), which creates nothing.
    pub fn count_root_entry(&mut self) -> Result<(), PackageError> {
        self.count_entry()
    }

    /// Refuses early when `declared` more bytes cannot fit the unpacked budget.
    pub fn check_room(&self, declared: u64) -> Result<(), PackageError> {
        if self.bytes.saturating_add(declared) > self.limits.unpacked_bytes {
            return Err(PackageError::UnpackedTooLarge {
                limit: self.limits.unpacked_bytes,
            });
        }
        Ok(())
    }

    fn mkdir(&self, rel: &str) -> Result<(), PackageError> {
        let full = self.root.join(rel);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&full)
            .map_err(PackageError::io(&full))
    }

    fn ensure_parents(&mut self, path: &ArchivePath) -> Result<(), PackageError> {
        for parent in path.ancestors() {
            match self.nodes.get(parent) {
                Some(Node::Dir { .. }) => {}
                Some(Node::File) => {
                    return Err(PackageError::PathConflict {
                        path: parent.to_string(),
                    })
                }
                None => {
                    self.count_entry()?;
                    self.mkdir(parent)?;
                    self.nodes
                        .insert(parent.to_string(), Node::Dir { explicit: false });
                }
            }
        }
        Ok(())
    }

    /// Adds a directory entry.
    pub fn add_dir(&mut self, path: &ArchivePath) -> Result<(), PackageError> {
        self.ensure_parents(path)?;
        match self.nodes.get_mut(path.as_str()) {
            Some(Node::Dir { explicit: true }) | Some(Node::File) => {
                Err(PackageError::DuplicatePath {
                    path: path.as_str().to_string(),
                })
            }
            Some(Node::Dir { explicit }) => {
                *explicit = true;
                Ok(())
            }
            None => {
                self.count_entry()?;
                self.mkdir(path.as_str())?;
                self.nodes
                    .insert(path.as_str().to_string(), Node::Dir { explicit: true });
                Ok(())
            }
        }
    }

    /// Adds a regular file, copying `body` to its end; returns the bytes written.
    pub(crate) fn add_file(
        &mut self,
        path: &ArchivePath,
        executable: bool,
        body: &mut dyn Read,
        probe: Option<&RatioProbe>,
        errors: &StreamErrors,
    ) -> Result<u64, PackageError> {
        self.ensure_parents(path)?;
        match self.nodes.get(path.as_str()) {
            Some(Node::File) => {
                return Err(PackageError::DuplicatePath {
                    path: path.as_str().to_string(),
                })
            }
            Some(Node::Dir { .. }) => {
                return Err(PackageError::PathConflict {
                    path: path.as_str().to_string(),
                })
            }
            None => {}
        }
        self.count_entry()?;
        self.nodes.insert(path.as_str().to_string(), Node::File);
        let full = self.root.join(path.as_str());
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&full)
            .map_err(PackageError::io(&full))?;
        let start = probe.map_or(0, RatioProbe::start);
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        loop {
            let n = match body.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(errors.classify(e)),
            };
            written = written.saturating_add(n as u64);
            if self.bytes.saturating_add(written) > self.limits.unpacked_bytes {
                return Err(PackageError::UnpackedTooLarge {
                    limit: self.limits.unpacked_bytes,
                });
            }
            if let Some(probe) = probe {
                if written > self.limits.ratio_min_bytes {
                    let compressed = probe.compressed_since(start).max(1);
                    if written > compressed.saturating_mul(self.limits.ratio) {
                        return Err(PackageError::CompressionRatio {
                            path: path.as_str().to_string(),
                            limit: self.limits.ratio,
                        });
                    }
                }
            }
            hasher.update(&self.buf[..n]);
            file.write_all(&self.buf[..n])
                .map_err(PackageError::io(&full))?;
        }
        let mode = if executable { 0o755 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(PackageError::io(&full))?;
        self.bytes = self.bytes.saturating_add(written);
        self.files.push(FileRecord {
            path: path.as_str().to_string(),
            executable,
            len: written,
            sha256: hasher.finalize().into(),
        });
        Ok(written)
    }
}

/// What [`unpack`] produced.
#[derive(Debug)]
pub struct Unpacked {
    /// Every regular file written, with its digest.
    pub files: Vec<FileRecord>,
    /// SHA-256 of the input bytes.
    pub archive_sha256: Sha256Digest,
}

/// Unpacks the archive at `input` (already detected as `format`) into `work_dir`, which
/// exists and is empty. On error the caller removes `work_dir`.
pub fn unpack(
    input: &Path,
    format: Format,
    work_dir: &Path,
    limits: &Limits,
) -> Result<Unpacked, PackageError> {
    let unreadable = |source| PackageError::UnreadableInput {
        path: input.to_path_buf(),
        source,
    };
    let file = File::open(input).map_err(unreadable)?;
    let state = Rc::new(SourceState::default());
    let errors = StreamErrors {
        input: input.to_path_buf(),
        state: state.clone(),
    };
    // Never read more than the limit, even if the file grows while we read it.
    let mut source = HashingReader {
        inner: file.take(limits.archive_bytes.saturating_add(1)),
        state: state.clone(),
    };
    let mut writer = TreeWriter::new(work_dir, limits);
    match format {
        Format::Tar => {
            tar::read_archive(&mut source, &mut writer, limits, &errors, None)?;
        }
        Format::TarGz => {
            let buffered = BufReader::with_capacity(64 * 1024, &mut source);
            let mut gz = flate2::bufread::MultiGzDecoder::new(buffered);
            let probe = RatioProbe::Consumed(state.clone());
            tar::read_archive(&mut gz, &mut writer, limits, &errors, Some(&probe))?;
            // Read the rest of the gzip stream so its CRC and length are checked, but only
            // up to a bound: bytes after the tar's end are not part of any file.
            let trailer = io::copy(&mut (&mut gz).take(GZIP_TRAILER_BYTES + 1), &mut io::sink())
                .map_err(|e| errors.classify(e))?;
            if trailer > GZIP_TRAILER_BYTES {
                return Err(PackageError::Corrupt {
                    detail: "more than 1 MiB of data after the end of the tar archive".into(),
                });
            }
        }
        Format::Zip => {
            // The zip reader seeks, so hash the whole file in one sequential pass first,
            // counting central-directory signatures on the way (see `zip`).
            let mut counter = zip::SignatureCounter::default();
            let mut chunk = vec![0u8; COPY_BUFFER];
            loop {
                let n = match source.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(errors.classify(e)),
                };
                counter.feed(&chunk[..n]);
            }
            if state.consumed.get() > limits.archive_bytes {
                return Err(PackageError::ArchiveTooLarge {
                    limit: limits.archive_bytes,
                });
            }
            let file = File::open(input).map_err(unreadable)?;
            zip::read_archive(
                file,
                state.consumed.get(),
                counter.count(),
                &mut writer,
                limits,
                &errors,
            )?;
        }
        Format::Directory => unreachable!("directories are not unpacked"),
    }
    // Hash whatever follows the archive's own end (tar record padding and the like).
    io::copy(&mut source, &mut io::sink()).map_err(|e| errors.classify(e))?;
    if state.consumed.get() > limits.archive_bytes {
        return Err(PackageError::ArchiveTooLarge {
            limit: limits.archive_bytes,
        });
    }
    let hasher = std::mem::take(&mut *state.hasher.borrow_mut());
    Ok(Unpacked {
        files: writer.into_files(),
        archive_sha256: Sha256Digest::finish(hasher),
    })
}
