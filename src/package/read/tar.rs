//! A small, strict, streaming tar reader (POSIX ustar, GNU, PAX, v7 headers).
//!
//! Hand-written rather than the `tar` crate because the crate reads GNU long-name and PAX
//! records of any declared size into memory, parses sparse maps before the caller can refuse
//! them, and its `unpack_in` silently skips `..` entries (RUSTSEC-2018-0002, 2021-0080,
//! 2026-0067/0068 show the class of bug). Here every header is checked before anything is
//! written:
//!
//! - header checksums must be right (the first bad one as the first header means "not a tar");
//! - GNU long names (`L`), long links (`K`) and PAX records (`x`, `g`) are read only up to
//!   `Limits::extension_bytes`, and PAX `size` overrides the header size exactly as GNU tar
//!   and the `tar` crate do (a disagreement between parsers is how smuggling works);
//! - `path` from PAX wins over a GNU long name, which wins over the ustar prefix + name;
//! - hard links, symlinks, devices, FIFOs, sparse files, volume labels and anything unknown
//!   are refused by type, each with its own error;
//! - the archive must end with an end-of-archive (zero) block: a stream that stops at an
//!   entry boundary is reported as truncated.

use std::io::{self, Read};

use super::{RatioProbe, StreamErrors, TreeSink};
use crate::package::path::{display_name, ArchivePath};
use crate::package::{Limits, PackageError};

const BLOCK: usize = 512;

/// True when the block's stored checksum matches its contents (unsigned or, as some old
/// tars wrote it, signed byte sum).
pub fn header_checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_octal(&block[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).ok() == Some(signed)
}

/// Parses a NUL/space-terminated octal field; `None` if it holds anything else or nothing.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() || text.len() > 22 {
        return None;
    }
    let mut value: u64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// Parses a numeric field that may use GNU base-256 (high bit set) instead of octal.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        if field[0] == 0xff {
            return None; // negative
        }
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    // An all-NUL field means zero (some writers leave size empty for directories).
    if field.iter().all(|&b| b == 0 || b == b' ') {
        return Some(0);
    }
    parse_octal(field)
}

/// Bytes of a NUL-terminated field.
fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// PAX keys we act on.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    size: Option<u64>,
    sparse: bool,
}

/// Parses PAX records (`"<len> <key>=<value>\n"`, `len` counting the whole record).
fn parse_pax(data: &[u8]) -> Result<Pax, PackageError> {
    let corrupt = |what: &str| PackageError::Corrupt {
        detail: format!("malformed PAX record: {what}"),
    };
    let mut pax = Pax::default();
    let mut rest = data;
    // Writers pad the final block with NULs; tolerate only that.
    while !rest.is_empty() && !rest.iter().all(|&b| b == 0) {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| corrupt("no length"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("bad length"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(corrupt("length does not match"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| corrupt("no '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pax.path = (!value.is_empty()).then(|| value.to_vec()),
            b"size" => {
                pax.size = if value.is_empty() {
                    None
                } else {
                    Some(
                        std::str::from_utf8(value)
                            .ok()
                            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| corrupt("bad size"))?,
                    )
                }
            }
            k if k.starts_with(b"GNU.sparse.") => pax.sparse = true,
            // mtime, atime, uid, uname, linkpath, SCHILY.xattr.*, comment, ...: irrelevant
            // to what we create (owners, times and xattrs are never restored).
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(pax)
}

/// Reads exactly `buf.len()` bytes; a short read is a truncated archive.
fn read_full<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    errors: &StreamErrors,
    what: &str,
) -> Result<(), PackageError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            PackageError::Truncated {
                detail: format!("stream ends inside {what}"),
            }
        } else {
            errors.classify(e)
        }
    })
}

/// Skips `n` bytes (entry padding, directory bodies) by reading them.
fn skip<R: Read>(r: &mut R, n: u64, errors: &StreamErrors, what: &str) -> Result<(), PackageError> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(|e| errors.classify(e))?;
    if copied != n {
        return Err(PackageError::Truncated {
            detail: format!("stream ends inside {what}"),
        });
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Reads a bounded extension record body (plus padding).
fn read_extension<R: Read>(
    r: &mut R,
    size: u64,
    kind: &'static str,
    limits: &Limits,
    errors: &StreamErrors,
) -> Result<Vec<u8>, PackageError> {
    if size > limits.extension_bytes {
        return Err(PackageError::ExtensionTooLarge {
            kind,
            size,
            limit: limits.extension_bytes,
        });
    }
    let mut data = vec![0u8; size as usize];
    read_full(r, &mut data, errors, kind)?;
    skip(r, padding(size), errors, kind)?;
    Ok(data)
}

/// Reads a whole tar stream into `writer`. Returns after the end-of-archive block.
pub(crate) fn read_archive<R: Read>(
    r: &mut R,
    writer: &mut TreeSink<'_>,
    limits: &Limits,
    errors: &StreamErrors,
    probe: Option<&RatioProbe>,
) -> Result<(), PackageError> {
    let mut block = [0u8; BLOCK];
    let mut first = true;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link_seen = false;
    let mut pax: Option<Pax> = None;
    // Extension headers are not entries, but they still cost a loop turn each: bound them
    // by the same number so a stream of empty `g` records cannot spin forever.
    let mut extension_headers: u64 = 0;
    loop {
        read_full(r, &mut block, errors, "a header").map_err(|e| match e {
            PackageError::Truncated { .. } if first => PackageError::UnsupportedFormat,
            PackageError::Truncated { .. } => PackageError::Truncated {
                detail: "missing end-of-archive block".into(),
            },
            other => other,
        })?;
        if block.iter().all(|&b| b == 0) {
            if first {
                return Err(PackageError::UnsupportedFormat);
            }
            if long_name.is_some() || pax.is_some() || long_link_seen {
                return Err(PackageError::Truncated {
                    detail: "extension header without the entry it describes".into(),
                });
            }
            // End of archive. The second zero block and any record padding are left to the
            // caller, which hashes (and for gzip, checks) what remains.
            return Ok(());
        }
        if !header_checksum_ok(&block) {
            if first {
                return Err(PackageError::UnsupportedFormat);
            }
            return Err(PackageError::Corrupt {
                detail: "tar header checksum mismatch".into(),
            });
        }
        first = false;
        let typeflag = block[156];
        let header_size = parse_numeric(&block[124..136]).ok_or_else(|| PackageError::Corrupt {
            detail: "tar header size field is not a number".into(),
        })?;
        match typeflag {
            b'L' | b'K' | b'x' | b'g' => {
                extension_headers += 1;
                if extension_headers > limits.entries {
                    return Err(PackageError::TooManyEntries {
                        limit: limits.entries,
                    });
                }
                let kind = match typeflag {
                    b'L' => "GNU long name",
                    b'K' => "GNU long link",
                    b'x' => "PAX header",
                    _ => "PAX global header",
                };
                let data = read_extension(r, header_size, kind, limits, errors)?;
                let twice = || PackageError::Corrupt {
                    detail: format!("two {kind} records for one entry"),
                };
                match typeflag {
                    b'L' => {
                        if long_name.replace(cstr(&data).to_vec()).is_some() {
                            return Err(twice());
                        }
                    }
                    // Only links have link names, and links are refused: remember that one
                    // was announced so the following link is refused by its own type.
                    b'K' => {
                        if std::mem::replace(&mut long_link_seen, true) {
                            return Err(twice());
                        }
                    }
                    b'x' => {
                        if pax.replace(parse_pax(&data)?).is_some() {
                            return Err(twice());
                        }
                    }
                    _ => {
                        let global = parse_pax(&data)?;
                        if global.sparse {
                            return Err(PackageError::SparseEntry {
                                path: "(PAX global header)".into(),
                            });
                        }
                        if global.path.is_some() || global.size.is_some() {
                            return Err(PackageError::Corrupt {
                                detail: "PAX global header sets path or size".into(),
                            });
                        }
                    }
                }
                continue;
            }
            _ => {}
        }

        let ext = pax.take().unwrap_or_default();
        let gnu_long = long_name.take();
        long_link_seen = false;
        let raw_name: Vec<u8> = if let Some(p) = ext.path {
            p
        } else if let Some(n) = gnu_long {
            n
        } else {
            let name = cstr(&block[0..100]);
            // POSIX ustar ("ustar\0"): a prefix field joins the name. GNU ("ustar  ")
            // keeps other data there.
            let prefix = if &block[257..263] == b"ustar\0" {
                cstr(&block[345..500])
            } else {
                &[]
            };
            if prefix.is_empty() {
                name.to_vec()
            } else {
                let mut v = prefix.to_vec();
                v.push(b'/');
                v.extend_from_slice(name);
                v
            }
        };
        let size = ext.size.unwrap_or(header_size);
        let shown = display_name(&raw_name);
        if ext.sparse || typeflag == b'S' {
            return Err(PackageError::SparseEntry { path: shown });
        }
        match typeflag {
            b'0' | 0 | b'7' | b'5' => {}
            b'1' => return Err(PackageError::HardLink { path: shown }),
            b'2' => return Err(PackageError::Symlink { path: shown }),
            b'3' => {
                return Err(PackageError::SpecialFile {
                    path: shown,
                    kind: "character device",
                })
            }
            b'4' => {
                return Err(PackageError::SpecialFile {
                    path: shown,
                    kind: "block device",
                })
            }
            b'6' => {
                return Err(PackageError::SpecialFile {
                    path: shown,
                    kind: "FIFO",
                })
            }
            b'V' => {
                return Err(PackageError::UnsupportedEntry {
                    path: shown,
                    kind: "volume label",
                })
            }
            b'M' => {
                return Err(PackageError::UnsupportedEntry {
                    path: shown,
                    kind: "multi-volume continuation",
                })
            }
            b'D' => {
                return Err(PackageError::UnsupportedEntry {
                    path: shown,
                    kind: "GNU dump directory",
                })
            }
            _ => {
                return Err(PackageError::UnsupportedEntry {
                    path: shown,
                    kind: "unknown tar type",
                })
            }
        }
        let parsed = ArchivePath::parse(&raw_name, limits)?;
        let is_dir = typeflag == b'5' || (parsed.trailing_slash && size == 0);
        if is_dir {
            if size != 0 {
                return Err(PackageError::Corrupt {
                    detail: format!("{shown}: directory entry with data"),
                });
            }
            match parsed.path {
                Some(path) => writer.add_dir(&path)?,
                // "./": the archive root itself. Count it so a stream of them is bounded.
                None => writer.count_root_entry()?,
            }
            continue;
        }
        if parsed.trailing_slash {
            return Err(PackageError::Corrupt {
                detail: format!("{shown}: file entry named like a directory"),
            });
        }
        let path = parsed.path.ok_or(PackageError::EmptyPath)?;
        let mode = parse_octal(&block[100..108]).unwrap_or(0o644);
        // Refuse before writing a byte if the declared size alone breaks the budget; the
        // real count below is what is enforced.
        writer.check_room(size)?;
        let mut body = (&mut *r).take(size);
        let written = writer.add_file(&path, mode & 0o111 != 0, &mut body, probe, errors)?;
        if written != size {
            return Err(PackageError::Truncated {
                detail: format!("stream ends inside {shown}"),
            });
        }
        skip(r, padding(size), errors, "entry padding")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_parse_octal_and_base256() {
        assert_eq!(parse_numeric(b"00000000012\0"), Some(10));
        assert_eq!(parse_numeric(b"   12 \0\0\0\0\0\0"), Some(10));
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
        assert_eq!(parse_numeric(&[0xff; 12]), None);
        assert_eq!(parse_numeric(b"9\0\0\0\0\0\0\0\0\0\0\0"), None);
    }

    #[test]
    fn pax_records_parse_and_reject_malformed() {
        let p = parse_pax(b"13 path=abcd\n12 size=100\n").unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"abcd"[..]));
        assert_eq!(p.size, Some(100));
        assert!(parse_pax(b"99 path=abcd\n").is_err());
        assert!(parse_pax(b"12 size=1x0\n").is_err());
        assert!(parse_pax(b"22 GNU.sparse.major=1\n").unwrap().sparse);
    }
}
