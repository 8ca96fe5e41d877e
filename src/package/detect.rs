//! Format detection by content (magic bytes), never by file name.
//!
//! - gzip: `1f 8b` at offset 0 (what is inside must then be a tar: the tar reader reports a
//!   first header that is not a tar header as "unsupported archive format");
//! - zip: a local file header `PK\x03\x04`, or `PK\x05\x06` (an empty zip), at offset 0.
//!   Self-extracting zips with a stub in front are not accepted;
//! - tar: `ustar` at offset 257 (POSIX and GNU), or an old v7 header whose checksum is right.
//!
//! Anything else is [`PackageError::UnsupportedFormat`].

use std::io::Read;
use std::path::Path;

use super::read::tar::header_checksum_ok;
use super::{Format, Limits, PackageError};

/// Detects the format of the file at `path`, refusing files above `limits.archive_bytes`.
pub fn detect_file(path: &Path, limits: &Limits) -> Result<Format, PackageError> {
    let unreadable = |source| PackageError::UnreadableInput {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    if len > limits.archive_bytes {
        return Err(PackageError::ArchiveTooLarge {
            limit: limits.archive_bytes,
        });
    }
    let mut head = Vec::with_capacity(512);
    (&mut file)
        .take(512)
        .read_to_end(&mut head)
        .map_err(unreadable)?;
    detect_bytes(&head).ok_or(PackageError::UnsupportedFormat)
}

/// Detects the format from the first (up to) 512 bytes.
pub fn detect_bytes(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some(Format::TarGz);
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Some(Format::Zip);
    }
    if head.len() == 512 {
        let block: &[u8; 512] = head.try_into().ok()?;
        if &block[257..262] == b"ustar" || header_checksum_ok(block) {
            return Some(Format::Tar);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic_not_name() {
        assert_eq!(detect_bytes(&[0x1f, 0x8b, 8, 0]), Some(Format::TarGz));
        assert_eq!(detect_bytes(b"PK\x03\x04rest"), Some(Format::Zip));
        assert_eq!(detect_bytes(b"PK\x05\x06"), Some(Format::Zip));
        let mut tar = [0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(detect_bytes(&tar), Some(Format::Tar));
        assert_eq!(detect_bytes(b"%PDF-1.7"), None);
        assert_eq!(detect_bytes(&[0u8; 512]), None);
        assert_eq!(detect_bytes(b""), None);
    }
}
