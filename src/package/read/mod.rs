//! The one pass over a package: tar, tar.gz, zip (`.skill`) or a directory, read once into
//! a [`TreeSink`] that never creates a file from the package on the host.
//!
//! Every container reader ([`tar`], [`zip`], [`dir`]) feeds one [`TreeSink`], the only code
//! that accepts an entry. It:
//!
//! - takes only [`ArchivePath`]s (relative paths of normal components);
//! - accepts only directories and regular files (the readers refuse everything else by type);
//! - refuses duplicate paths and paths used both as file and directory;
//! - counts entries (directories implied by a file's parents included) and real bytes as they
//!   arrive, with saturating arithmetic, never trusting sizes from headers;
//! - checks each file's compression ratio against the compressed bytes consumed for it;
//! - fails closed on the first bad entry.
//!
//! File bytes go, in arrival order, to a second thread over a bounded channel: it computes
//! each file's SHA-256 and, when a normalised tar is wanted, appends the bytes to a *spool*,
//! an unnamed temporary file (`O_TMPFILE`) next to the output that no path ever names and
//! the kernel frees when it is closed, crash included. The reading thread meanwhile
//! inflates the next bytes, so hashing overlaps decompression.
//!
//! What the test plan and the manifest need of a file's content (`SKILL.md`, a root
//! `package.json`'s test script, whether a Python test file is unittest-only) is captured
//! while it streams past, under fixed bounds ([`super::plan::wants_content`]).
//!
//! After the last entry, [`emit`] writes the normalised tar in canonical order by copying
//! byte ranges out of the spool.

pub mod dir;
pub mod emit;
pub mod tar;
pub mod zip;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::path::ArchivePath;
use super::plan;
use super::tree::FileRecord;
use super::{Format, Limits, PackageError};
use crate::digest::Sha256Digest;

/// Trailing decompressed bytes tolerated after a gzip'd tar's end-of-archive block. GNU tar
/// pads to 10 KiB records; anything far beyond that is data hidden from the tree.
const GZIP_TRAILER_BYTES: u64 = 1024 * 1024;

/// Input read size: the compressed stream is read in pieces this large.
const INPUT_BUFFER: usize = 256 * 1024;

/// Size of one chunk handed to the hashing thread.
const CHUNK: usize = 128 * 1024;

/// Chunks in flight between the reading and the hashing thread (bounds memory at 1 MiB).
const CHUNKS_IN_FLIGHT: usize = 8;

/// Shared state of the reader that sits directly on the input file: bytes consumed (for the
/// ratio check), the archive hash, and whether an error came from the file itself.
#[derive(Debug, Default)]
pub(crate) struct SourceState {
    pub(crate) consumed: Cell<u64>,
    source_failed: Cell<bool>,
    pub(crate) hasher: RefCell<Sha256>,
}

/// Reads the input file, hashing and counting every byte.
pub(crate) struct HashingReader<R> {
    pub(crate) inner: R,
    pub(crate) state: Rc<SourceState>,
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
/// decoder reports is a truncated or corrupt archive. For a directory input every read error
/// is ours ([`PackageError::Io`]).
pub(crate) struct StreamErrors {
    pub(crate) input: PathBuf,
    pub(crate) state: Option<Rc<SourceState>>,
}

impl StreamErrors {
    pub(crate) fn classify(&self, e: io::Error) -> PackageError {
        let Some(state) = &self.state else {
            return PackageError::Io {
                path: self.input.clone(),
                source: e,
            };
        };
        if state.source_failed.get() {
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

/// How the compressed size of the file being read is known.
pub(crate) enum RatioProbe {
    /// A running count of compressed input bytes (gzip): the file's share is the growth of
    /// the count while it is read (over-estimated by at most one read buffer).
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

/// A node of the tree read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    /// A directory; `explicit` once an entry named it (a second such entry is a duplicate).
    Dir {
        /// Named by an entry of its own (not only implied by a file below it).
        explicit: bool,
    },
    /// A regular file.
    File,
}

enum Chunk {
    Data(Vec<u8>, usize),
    End,
}

/// What the hashing thread hands back: one digest per file, in arrival order, and the spool.
struct Hashed {
    digests: Vec<[u8; 32]>,
    spool: Option<File>,
}

/// The hashing (and spooling) thread and the channels to it.
struct Pipe {
    tx: Option<SyncSender<Chunk>>,
    recycled: Receiver<Vec<u8>>,
    allocated: usize,
    spare: Option<Vec<u8>>,
    handle: Option<JoinHandle<io::Result<Hashed>>>,
}

impl Pipe {
    fn start(spool: Option<File>) -> Pipe {
        let (tx, rx) = mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
        let (back_tx, recycled) = mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || {
            let mut spool = spool;
            let mut hasher = Sha256::new();
            let mut digests = Vec::new();
            for chunk in rx {
                match chunk {
                    Chunk::Data(buf, n) => {
                        hasher.update(&buf[..n]);
                        if let Some(file) = spool.as_mut() {
                            file.write_all(&buf[..n])?;
                        }
                        // The reader may be gone already (it failed): nothing to do then.
                        let _ = back_tx.send(buf);
                    }
                    Chunk::End => digests.push(hasher.finalize_reset().into()),
                }
            }
            Ok(Hashed { digests, spool })
        });
        Pipe {
            tx: Some(tx),
            recycled,
            allocated: 0,
            spare: None,
            handle: Some(handle),
        }
    }

    /// A buffer to read into: the spare one, a recycled one, a new one while fewer than
    /// `CHUNKS_IN_FLIGHT + 2` exist, or the next one the thread gives back.
    fn buffer(&mut self) -> Result<Vec<u8>, PackageError> {
        if let Some(buf) = self.spare.take() {
            return Ok(buf);
        }
        if let Ok(buf) = self.recycled.try_recv() {
            return Ok(buf);
        }
        if self.allocated < CHUNKS_IN_FLIGHT + 2 {
            self.allocated += 1;
            return Ok(vec![0u8; CHUNK]);
        }
        match self.recycled.recv() {
            Ok(buf) => Ok(buf),
            Err(_) => Err(self.failure()),
        }
    }

    fn send(&mut self, chunk: Chunk) -> Result<(), PackageError> {
        let sent = self.tx.as_ref().map(|tx| tx.send(chunk).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    /// The hashing thread stopped early: its error (a spool write that failed).
    fn failure(&mut self) -> PackageError {
        match self.join() {
            Err(e) => e,
            Ok(_) => PackageError::Io {
                path: PathBuf::from("<spool>"),
                source: io::Error::other("the hashing thread stopped"),
            },
        }
    }

    fn join(&mut self) -> Result<Hashed, PackageError> {
        self.tx = None;
        let spool_err = |source| PackageError::Io {
            path: PathBuf::from("<spool>"),
            source,
        };
        match self.handle.take() {
            Some(handle) => match handle.join() {
                Ok(result) => result.map_err(spool_err),
                Err(_) => Err(spool_err(io::Error::other("the hashing thread panicked"))),
            },
            None => Err(spool_err(io::Error::other("the hashing thread is gone"))),
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // Closing the channel ends the thread; wait for it so no work outlives a refusal.
        self.tx = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Everything one read produced, before the skill root is known.
pub(crate) struct ReadTree {
    /// Regular files in arrival order, paths relative to the archive root, digests filled.
    pub(crate) files: Vec<FileRecord>,
    /// Every directory (explicit or implied), paths relative to the archive root.
    pub(crate) nodes: HashMap<String, Node>,
    /// Captured `SKILL.md` candidates (`SKILL.md` and `<top>/SKILL.md`), up to the limit + 1.
    pub(crate) skill_md: Vec<(String, Vec<u8>)>,
    /// Where each file's bytes start in the spool (parallel to `files`).
    pub(crate) spool_offsets: Vec<u64>,
    /// The spool holding every file's bytes in arrival order (when a tar was asked for).
    pub(crate) spool: Option<File>,
}

/// The only acceptor of entries. See the module docs for what it guarantees.
pub struct TreeSink<'a> {
    pub(crate) limits: &'a Limits,
    entries: u64,
    bytes: u64,
    nodes: HashMap<String, Node>,
    files: Vec<FileRecord>,
    first_top: Option<String>,
    multiple_tops: bool,
    skill_md: Vec<(String, Vec<u8>)>,
    pipe: Pipe,
    spooled: u64,
    spool_offsets: Vec<u64>,
}

impl<'a> TreeSink<'a> {
    /// A sink; with `spool`, every file's bytes are kept there for [`emit`].
    pub(crate) fn new(limits: &'a Limits, spool: Option<File>) -> Self {
        Self {
            limits,
            entries: 0,
            bytes: 0,
            nodes: HashMap::new(),
            files: Vec::new(),
            first_top: None,
            multiple_tops: false,
            skill_md: Vec::new(),
            pipe: Pipe::start(spool),
            spooled: 0,
            spool_offsets: Vec::new(),
        }
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

    /// Counts an entry that names the archive root (`./`), which adds nothing.
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

    fn note_top(&mut self, path: &ArchivePath) {
        let top = path.as_str().split('/').next().unwrap_or_default();
        match &self.first_top {
            None => self.first_top = Some(top.to_string()),
            Some(first) if first != top => self.multiple_tops = true,
            Some(_) => {}
        }
    }

    /// True when `path` can turn out to be at the skill root: at the archive root, or one
    /// level down in what is so far the archive's only top-level folder.
    fn maybe_at_root(&self, path: &str) -> bool {
        match path.split_once('/') {
            None => true,
            Some((top, rest)) => {
                !rest.contains('/') && !self.multiple_tops && self.first_top.as_deref() == Some(top)
            }
        }
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
                    self.nodes
                        .insert(parent.to_string(), Node::Dir { explicit: false });
                }
            }
        }
        Ok(())
    }

    /// Adds a directory entry.
    pub fn add_dir(&mut self, path: &ArchivePath) -> Result<(), PackageError> {
        self.note_top(path);
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
                self.nodes
                    .insert(path.as_str().to_string(), Node::Dir { explicit: true });
                Ok(())
            }
        }
    }

    /// Adds a regular file, reading `body` to its end; returns the bytes read.
    pub(crate) fn add_file(
        &mut self,
        path: &ArchivePath,
        executable: bool,
        body: &mut dyn Read,
        probe: Option<&RatioProbe>,
        errors: &StreamErrors,
    ) -> Result<u64, PackageError> {
        self.note_top(path);
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

        let at_root = self.maybe_at_root(path.as_str());
        let name = path.as_str().rsplit('/').next().unwrap_or_default();
        let is_skill_md = at_root && name == "SKILL.md";
        let content_bound = if is_skill_md {
            Some(self.limits.skill_md_bytes.saturating_add(1))
        } else {
            plan::wants_content(name, at_root)
        };
        let mut content = Vec::new();

        let start = probe.map_or(0, RatioProbe::start);
        let mut written: u64 = 0;
        loop {
            let mut buf = self.pipe.buffer()?;
            let n = loop {
                match body.read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(errors.classify(e)),
                }
            };
            if n == 0 {
                self.pipe.spare = Some(buf);
                break;
            }
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
            if let Some(bound) = content_bound {
                let room = bound.saturating_sub(content.len() as u64);
                let take = (n as u64).min(room) as usize;
                content.extend_from_slice(&buf[..take]);
            }
            self.pipe.send(Chunk::Data(buf, n))?;
        }
        self.pipe.send(Chunk::End)?;
        self.bytes = self.bytes.saturating_add(written);
        let probe = match content_bound {
            Some(_) if is_skill_md => {
                self.skill_md
                    .push((path.as_str().to_string(), std::mem::take(&mut content)));
                None
            }
            Some(_) => plan::probe(name, &content),
            None => None,
        };
        self.files.push(FileRecord {
            path: path.as_str().to_string(),
            executable,
            len: written,
            sha256: [0; 32],
            tar_offset: None,
            probe,
        });
        self.spool_offsets.push(self.spooled);
        self.spooled = self.spooled.saturating_add(written);
        Ok(written)
    }

    /// Ends the read: waits for the hashing thread and fills in every file's digest.
    pub(crate) fn finish(mut self) -> Result<ReadTree, PackageError> {
        let hashed = self.pipe.join()?;
        if hashed.digests.len() != self.files.len() {
            return Err(PackageError::Io {
                path: PathBuf::from("<spool>"),
                source: io::Error::other("the hashing thread lost a file"),
            });
        }
        for (file, digest) in self.files.iter_mut().zip(hashed.digests) {
            file.sha256 = digest;
        }
        Ok(ReadTree {
            files: std::mem::take(&mut self.files),
            nodes: std::mem::take(&mut self.nodes),
            skill_md: std::mem::take(&mut self.skill_md),
            spool_offsets: std::mem::take(&mut self.spool_offsets),
            spool: hashed.spool,
        })
    }
}

/// The spool for a tar written to `out`: an unnamed file in `out`'s directory (`O_TMPFILE`
/// where the file system has it, else created and unlinked at once), so the output can later
/// be written from it without crossing file systems, and nothing is left after a crash.
pub(crate) fn spool_for(out: &Path) -> Result<File, PackageError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::tempfile_in(dir).map_err(PackageError::io(dir))
}

/// Reads the archive at `input` (already detected as `format`) into a new sink. Returns what
/// was read and the SHA-256 of the input bytes.
pub(crate) fn read_archive(
    input: &Path,
    format: Format,
    spool: Option<File>,
    limits: &Limits,
) -> Result<(ReadTree, Sha256Digest), PackageError> {
    let unreadable = |source| PackageError::UnreadableInput {
        path: input.to_path_buf(),
        source,
    };
    let file = File::open(input).map_err(unreadable)?;
    let state = Rc::new(SourceState::default());
    let errors = StreamErrors {
        input: input.to_path_buf(),
        state: Some(state.clone()),
    };
    // Never read more than the limit, even if the file grows while we read it.
    let mut source = HashingReader {
        inner: file.take(limits.archive_bytes.saturating_add(1)),
        state: state.clone(),
    };
    let mut sink = TreeSink::new(limits, spool);
    match format {
        Format::Tar => {
            tar::read_archive(&mut source, &mut sink, limits, &errors, None)?;
        }
        Format::TarGz => {
            let buffered = io::BufReader::with_capacity(INPUT_BUFFER, &mut source);
            let mut gz = flate2::bufread::MultiGzDecoder::new(buffered);
            let probe = RatioProbe::Consumed(state.clone());
            tar::read_archive(&mut gz, &mut sink, limits, &errors, Some(&probe))?;
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
            let mut chunk = vec![0u8; INPUT_BUFFER];
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
                &mut sink,
                limits,
                &errors,
            )?;
        }
        Format::Directory => unreachable!("a directory is read by `dir`, not as an archive"),
    }
    // Hash whatever follows the archive's own end (tar record padding and the like).
    io::copy(&mut source, &mut io::sink()).map_err(|e| errors.classify(e))?;
    if state.consumed.get() > limits.archive_bytes {
        return Err(PackageError::ArchiveTooLarge {
            limit: limits.archive_bytes,
        });
    }
    let hasher = std::mem::take(&mut *state.hasher.borrow_mut());
    Ok((sink.finish()?, Sha256Digest::finish(hasher)))
}
