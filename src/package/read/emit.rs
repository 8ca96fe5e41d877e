//! The normalised tar: regular files and directories only, in canonical order (sorted by
//! path bytes), GNU headers, modes `0755`/`0644` by the executable bit, mtime 0, owner 0,
//! no other host metadata. The same tree always makes the same bytes, whatever container
//! it arrived in.
//!
//! File bytes come from the spool the read filled (in arrival order), copied range by range
//! in canonical order; the output is hashed as it is written.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::digest::HashingWriter;
use crate::package::{tree_footprint, EntryKind, PackageError, TreeEntry, TreeTar};

/// Largest piece copied from the spool at once.
const COPY_BUFFER: usize = 256 * 1024;

/// One entry to write: a tree entry and, for a file, where its bytes lie in the spool.
pub(crate) struct Emit {
    /// The entry (path relative to the skill root).
    pub(crate) entry: TreeEntry,
    /// Offset of the file's bytes in the spool.
    pub(crate) spool_offset: u64,
}

/// Reads `left` bytes of the spool from `pos`, failing if the spool is shorter.
struct SpoolRange<'a> {
    spool: &'a File,
    pos: u64,
    left: u64,
}

impl Read for SpoolRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = self.spool.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool is shorter than what was read into it",
            ));
        }
        self.pos += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Removes a partly written output unless the write completed.
struct OutputGuard<'a> {
    path: &'a Path,
    done: bool,
}

impl Drop for OutputGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = std::fs::remove_file(self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a partial tar");
            }
        }
    }
}

/// Writes `entries` (canonical order) to a new file at `out` and fsyncs it. Returns the
/// description of the tar and, per file entry, the offset of its data in the tar.
pub(crate) fn write_tar(
    entries: &[Emit],
    spool: &File,
    out: &Path,
) -> Result<(TreeTar, Vec<u64>), PackageError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                PackageError::OutputExists {
                    path: out.to_path_buf(),
                }
            } else {
                PackageError::io(out)(e)
            }
        })?;
    let mut guard = OutputGuard {
        path: out,
        done: false,
    };
    let io_err = PackageError::io(out);
    let (file, sha256, len, offsets) =
        write_stream(entries, spool, BufWriter::with_capacity(1 << 20, file)).map_err(io_err)?;
    file.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(PackageError::io(out))?;
    guard.done = true;
    let tree: Vec<TreeEntry> = entries.iter().map(|e| e.entry.clone()).collect();
    Ok((
        TreeTar {
            path: out.to_path_buf(),
            sha256,
            len,
            footprint_bytes: tree_footprint(&tree),
        },
        offsets,
    ))
}

/// The header of one entry of a job's normalised tar: mtime 0, uid and gid 0, mode 0755
/// for folders and executables, else 0644. Everything that writes a tar a container
/// unpacks uses it.
pub fn normal_header(kind: EntryKind, len: u64, executable: bool) -> ::tar::Header {
    let mut header = ::tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    match kind {
        EntryKind::Dir => {
            header.set_entry_type(::tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
        }
        EntryKind::File => {
            header.set_entry_type(::tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(len);
        }
    }
    header
}

/// Writes the tar into `out`, returning it with the SHA-256 and length of what was written
/// and the data offset of each file entry.
pub(crate) fn write_stream<W: Write>(
    entries: &[Emit],
    spool: &File,
    out: W,
) -> io::Result<(W, crate::digest::Sha256Digest, u64, Vec<u64>)> {
    let mut offsets = Vec::new();
    let mut builder = ::tar::Builder::new(HashingWriter::new(out));
    for item in entries {
        let entry = &item.entry;
        match entry.kind {
            EntryKind::Dir => {
                let mut header = normal_header(EntryKind::Dir, 0, false);
                builder.append_data(&mut header, &entry.path, io::empty())?;
            }
            EntryKind::File => {
                let mut header = normal_header(EntryKind::File, entry.len, entry.executable);
                let range = SpoolRange {
                    spool,
                    pos: item.spool_offset,
                    left: entry.len,
                };
                // A BufReader makes `io::copy` move the bytes in large chunks (std copies
                // straight out of a BufReader's buffer) instead of 8 KiB preads.
                let body =
                    io::BufReader::with_capacity(COPY_BUFFER.min(entry.len.max(1) as usize), range);
                builder.append_data(&mut header, &entry.path, body)?;
                let end = builder.get_ref().len();
                offsets.push(end - entry.len.div_ceil(512) * 512);
            }
        }
    }
    builder.finish()?;
    let (inner, sha256, len) = builder.into_inner()?.finish();
    Ok((inner, sha256, len, offsets))
}
