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
            touch(&target);
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
            touch(&target);
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

    /// Retention: removes blobs not in `keep` whose files were last written (or stored again)
    /// before `older_than`; returns how many. The age check keeps a blob that an upload in
    /// flight just stored, before the row naming it exists.
    pub fn sweep(
        &self,
        keep: &std::collections::HashSet<Sha256Digest>,
        older_than: std::time::SystemTime,
    ) -> usize {
        let Ok(fanout) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for dir in fanout.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
            let Ok(files) = fs::read_dir(dir.path()) else {
                continue;
            };
            for file in files.filter_map(|e| e.ok()) {
                let name = file.file_name();
                // Only names that are digests: nothing else in the directory is ours to remove.
                let Ok(digest) = Sha256Digest::parse(&name.to_string_lossy()) else {
                    continue;
                };
                let old = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < older_than);
                if !keep.contains(&digest) && old && fs::remove_file(file.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Reads a blob whole.
    pub fn read(&self, digest: &Sha256Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        fs::read(&path).map_err(blob_err(format!("reading {}", path.display())))
    }
}

/// Marks a blob as just stored (its mtime is what retention's age check reads).
fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
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

    #[test]
    fn sweep_removes_only_old_unreferenced_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().join("blobs")).unwrap();
        let kept = blobs.put(b"named by a row").unwrap();
        let old = blobs.put(b"named by nothing").unwrap();
        std::fs::write(dir.path().join("blobs").join("README"), b"not a blob").unwrap();
        let keep = std::collections::HashSet::from([kept]);
        // Nothing is older than a minute ago: a blob just stored survives.
        let minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(blobs.sweep(&keep, minute_ago), 0);
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(blobs.sweep(&keep, later), 1);
        assert!(blobs.path(&kept).exists());
        assert!(!blobs.path(&old).exists());
        assert!(dir.path().join("blobs").join("README").exists());
    }
}
