//! Content-addressed blobs: `<dir>/<first two hex>/<sha256 hex>`, mode 0600.
//!
//! A blob is written to a temp file in the same directory, fsynced, then renamed into place,
//! so a crash leaves either no blob or a whole one. Names come only from digests we computed,
//! never from input, so a blob path cannot escape the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::StoreError;
use crate::digest::Sha256Digest;

/// The blob directory.
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

fn blob_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Blob { what, source }
}

impl Blobs {
    /// Opens (creating, mode 0700) the blob directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        create_private_dir(&dir).map_err(blob_err(format!("creating {}", dir.display())))?;
        Ok(Self { dir })
    }

    /// Where a blob lives (whether or not it exists).
    pub fn path(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// A fresh private temp file path inside the blob directory (same filesystem, so a later
    /// `adopt` is a rename).
    pub fn temp_path(&self) -> PathBuf {
        self.dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()))
    }

    /// Removes temp files a crashed run left (start-up only); returns how many.
    pub fn clear_temp(&self) -> usize {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return 0;
        };
        dir.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .filter(|e| fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// Stores bytes; returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Sha256Digest, StoreError> {
        let digest = Sha256Digest::of(bytes);
        let target = self.path(&digest);
        if target.exists() {
            return Ok(digest);
        }
        let tmp = self.temp_path();
        let write = || -> std::io::Result<()> {
            let mut f = create_private_file(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        write().map_err(blob_err(format!("writing {}", tmp.display())))?;
        self.place(&tmp, &target)?;
        Ok(digest)
    }

    /// Moves a complete file written at `tmp` (from [`Blobs::temp_path`]) into place under
    /// its digest, which the caller computed while writing it.
    pub fn adopt(&self, tmp: &Path, digest: &Sha256Digest) -> Result<PathBuf, StoreError> {
        let target = self.path(digest);
        if target.exists() {
            let _ = fs::remove_file(tmp);
            return Ok(target);
        }
        self.place(tmp, &target)?;
        Ok(target)
    }

    fn place(&self, tmp: &Path, target: &Path) -> Result<(), StoreError> {
        let parent = target.parent().expect("blob paths have a parent");
        create_private_dir(parent).map_err(blob_err(format!("creating {}", parent.display())))?;
        fs::rename(tmp, target).map_err(blob_err(format!("renaming into {}", target.display())))
    }

    /// Reads a blob whole.
    pub fn read(&self, digest: &Sha256Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        fs::read(&path).map_err(blob_err(format!("reading {}", path.display())))
    }

    /// Hashes a file (used by tests and the crash check).
    pub fn hash_file(path: &Path) -> std::io::Result<Sha256Digest> {
        let mut f = File::open(path)?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(Sha256Digest::finish(h))
    }
}

/// Creates a directory (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates a new file with mode 0600 (fails if it exists).
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stores_by_digest_privately_and_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().join("blobs")).unwrap();
        let d1 = blobs.put(b"hello").unwrap();
        let d2 = blobs.put(b"hello").unwrap();
        assert_eq!(d1, d2);
        assert_eq!(d1, Sha256Digest::of(b"hello"));
        assert_eq!(blobs.read(&d1).unwrap(), b"hello");
        let mode = fs::metadata(blobs.path(&d1)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
