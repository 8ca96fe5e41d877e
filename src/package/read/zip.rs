//! Guarded zip reading (including Anthropic's `.skill`, a zip with one top-level folder).
//!
//! The `zip` crate parses the central directory; everything it reports is then checked here
//! rather than trusted:
//!
//! - before the crate sees the file, central-directory signatures are counted over the whole
//!   file, so an archive claiming millions of entries is refused before the crate allocates
//!   for them;
//! - names are taken as raw bytes and must be UTF-8 ([`ArchivePath::parse`]); the crate's
//!   CP437 decoding and Info-ZIP Unicode-path extra fields are ignored, so what we check is
//!   what we write;
//! - symlinks, devices, FIFOs and sockets are refused by their Unix mode (RUSTSEC-2025-0168
//!   class: a symlink entry followed by a file "under" it);
//! - encrypted entries and methods other than stored and deflate are refused;
//! - compressed sizes must fit in the file and entries' data must not overlap (overlapping
//!   entries are how "better zip bombs" reuse one compressed stream many times);
//! - the declared uncompressed size is used only to refuse early (budget, ratio); the bytes
//!   actually produced are counted and must match it exactly.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};

use ::zip::result::ZipError;
use ::zip::{CompressionMethod, ZipArchive};

use super::{RatioProbe, StreamErrors, TreeSink};
use crate::package::path::{display_name, ArchivePath};
use crate::package::{Limits, PackageError};

/// The central directory file header signature.
const CENTRAL_SIGNATURE: &[u8; 4] = b"PK\x01\x02";

/// Counts central-directory signatures in `data`, carrying a 3-byte overlap between calls.
#[derive(Default)]
pub(crate) struct SignatureCounter {
    tail: Vec<u8>,
    count: u64,
}

impl SignatureCounter {
    /// Feeds the next chunk of the file.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        // The seam: the last 3 bytes of the previous chunk + the first 3 of this one.
        let mut seam = std::mem::take(&mut self.tail);
        seam.extend_from_slice(&chunk[..chunk.len().min(3)]);
        self.count += count_in(&seam) as u64;
        self.count += count_in(chunk) as u64;
        let keep = chunk.len().min(3);
        self.tail = chunk[chunk.len() - keep..].to_vec();
    }

    /// Signatures seen so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}

fn count_in(data: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while let Some(off) = data[i..].iter().position(|&b| b == b'P') {
        let at = i + off;
        if data[at..].starts_with(CENTRAL_SIGNATURE) {
            n += 1;
        }
        i = at + 1;
    }
    n
}

fn zip_error(e: ZipError, errors: &StreamErrors) -> PackageError {
    match e {
        ZipError::Io(e) => errors.classify(e),
        ZipError::CompressionMethodNotSupported(m) => PackageError::UnsupportedCompression {
            path: "(zip entry)".into(),
            method: m.to_string(),
        },
        other => PackageError::Corrupt {
            detail: other.to_string(),
        },
    }
}

/// Refuses to yield more than the declared size: the decoder's real output is what counts.
struct Declared<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Declared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "zip entry is larger than its declared size",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads a zip (already hashed; `archive_len` bytes, `signatures` central headers counted)
/// into `writer`.
pub(crate) fn read_archive(
    file: File,
    archive_len: u64,
    signatures: u64,
    writer: &mut TreeSink<'_>,
    limits: &Limits,
    errors: &StreamErrors,
) -> Result<(), PackageError> {
    if signatures > limits.entries {
        return Err(PackageError::TooManyEntries {
            limit: limits.entries,
        });
    }
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_error(e, errors))?;
    if archive.len() as u64 > limits.entries {
        return Err(PackageError::TooManyEntries {
            limit: limits.entries,
        });
    }
    if archive.has_duplicate_names() {
        return Err(PackageError::DuplicatePath {
            path: "(a name repeated in the zip central directory)".into(),
        });
    }
    // data start -> data end, for the overlap check.
    let mut ranges: BTreeMap<u64, u64> = BTreeMap::new();
    for index in 0..archive.len() {
        let (raw_name, is_dir, mode, encrypted, method, compressed, declared, data_start) = {
            let entry = archive
                .by_index_raw(index)
                .map_err(|e| zip_error(e, errors))?;
            (
                entry.name_raw().to_vec(),
                entry.name_raw().ends_with(b"/"),
                entry.unix_mode(),
                entry.encrypted(),
                entry.compression(),
                entry.compressed_size(),
                entry.size(),
                entry.data_start(),
            )
        };
        let shown = display_name(&raw_name);
        if let Some(mode) = mode {
            match mode & libc::S_IFMT {
                libc::S_IFLNK => return Err(PackageError::Symlink { path: shown }),
                libc::S_IFCHR => {
                    return Err(PackageError::SpecialFile {
                        path: shown,
                        kind: "character device",
                    })
                }
                libc::S_IFBLK => {
                    return Err(PackageError::SpecialFile {
                        path: shown,
                        kind: "block device",
                    })
                }
                libc::S_IFIFO => {
                    return Err(PackageError::SpecialFile {
                        path: shown,
                        kind: "FIFO",
                    })
                }
                libc::S_IFSOCK => {
                    return Err(PackageError::SpecialFile {
                        path: shown,
                        kind: "socket",
                    })
                }
                _ => {}
            }
        }
        if encrypted {
            return Err(PackageError::EncryptedEntry { path: shown });
        }
        if !matches!(
            method,
            CompressionMethod::Stored | CompressionMethod::Deflated
        ) {
            return Err(PackageError::UnsupportedCompression {
                path: shown,
                method: method.to_string(),
            });
        }
        let parsed = ArchivePath::parse(&raw_name, limits)?;
        if is_dir {
            if declared != 0 {
                return Err(PackageError::Corrupt {
                    detail: format!("{shown}: directory entry with data"),
                });
            }
            match parsed.path {
                Some(path) => writer.add_dir(&path)?,
                None => writer.count_root_entry()?,
            }
            continue;
        }
        let path = parsed.path.ok_or(PackageError::EmptyPath)?;
        let start = data_start.ok_or_else(|| PackageError::Corrupt {
            detail: format!("{shown}: no local header"),
        })?;
        let end = start.checked_add(compressed).filter(|&e| e <= archive_len);
        let Some(end) = end else {
            return Err(PackageError::Corrupt {
                detail: format!("{shown}: compressed data extends past the end of the file"),
            });
        };
        if end > start {
            let before = ranges.range(..end).next_back();
            if before.is_some_and(|(_, &prev_end)| prev_end > start) {
                return Err(PackageError::Corrupt {
                    detail: format!("{shown}: entry data overlaps another entry"),
                });
            }
            ranges.insert(start, end);
        }
        if declared > limits.ratio_min_bytes
            && declared > compressed.max(1).saturating_mul(limits.ratio)
        {
            return Err(PackageError::CompressionRatio {
                path: path.as_str().to_string(),
                limit: limits.ratio,
            });
        }
        writer.check_room(declared)?;
        let executable = mode.is_some_and(|m| m & 0o111 != 0);
        let mut entry = archive.by_index(index).map_err(|e| zip_error(e, errors))?;
        let mut body = Declared {
            inner: &mut entry,
            left: declared,
        };
        let probe = RatioProbe::Fixed(compressed);
        let written = writer.add_file(&path, executable, &mut body, Some(&probe), errors)?;
        if written != declared {
            return Err(PackageError::Corrupt {
                detail: format!("{shown}: {written} bytes, but {declared} declared"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_counter_sees_signatures_across_chunk_seams() {
        let mut c = SignatureCounter::default();
        c.feed(b"xxPK");
        c.feed(b"\x01\x02yyPK\x01\x02");
        c.feed(b"P");
        c.feed(b"K\x01\x02");
        assert_eq!(c.count(), 3);
    }
}
