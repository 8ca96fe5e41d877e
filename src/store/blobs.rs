//! Content-addressed blobs: `<dir>/<first two hex>/<sha256 hex>`, mode 0600.
//!
//! A blob is written to a temp file in the same directory, fsynced, then renamed into place,
//! so a crash leaves either no blob or a whole one. Names come only from digests we computed,
//! never from input, so a blob path cannot escape the directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

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
        crate::fsutil::write_new_file(&tmp, bytes, 0o600)
            .map_err(blob_err(format!("writing {}", tmp.display())))?;
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

    /// Makes `tmp` durable under `target`: the file's bytes are fsynced, then the rename,
    /// then the directory entries (the fan-out folder and, when it was just made, the blob
    /// directory), so a row that names the blob is only committed after the blob is on disk.
    fn place(&self, tmp: &Path, target: &Path) -> Result<(), StoreError> {
        let parent = target.parent().expect("blob paths have a parent");
        let fresh_parent = !parent.exists();
        File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(blob_err(format!("syncing {}", tmp.display())))?;
        create_private_dir(parent).map_err(blob_err(format!("creating {}", parent.display())))?;
        fs::rename(tmp, target).map_err(blob_err(format!("renaming into {}", target.display())))?;
        crate::fsutil::sync_dir(parent)
            .map_err(blob_err(format!("syncing {}", parent.display())))?;
        if fresh_parent {
            crate::fsutil::sync_dir(&self.dir)
                .map_err(blob_err(format!("syncing {}", self.dir.display())))?;
        }
        Ok(())
    }

    /// Reads a blob whole.
    pub fn read(&self, digest: &Sha256Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        fs::read(&path).map_err(blob_err(format!("reading {}", path.display())))
    }
}

pub use crate::fsutil::{create_private_dir, create_private_file};

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
