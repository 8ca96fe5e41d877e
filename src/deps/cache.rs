//! The dependency cache: downloaded files stored by content, and per key the set of files
//! that key installs.
//!
//! ```text
//! <root>/blobs/sha256/<hex>   one file the index served, named by its SHA-256
//! <root>/sets/<key>.json      {files: [{dependency, bytes}], python, platform}
//! <root>/tmp/                 fetches in progress (one folder each, removed when done)
//! ```
//!
//! A set is written last, by rename, after every file it names is in place: a fetch that
//! fails or is killed leaves no set, so it is never served. A lookup re-hashes every file
//! against the set before serving it; a damaged entry is fetched again.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Dependency;

/// One file of a set, where it is in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// What it is.
    pub dependency: Dependency,
    /// Its length.
    pub bytes: u64,
    /// Its blob.
    pub path: PathBuf,
}

/// The files a key installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSet {
    /// The key.
    pub key: String,
    /// Every file, in name order.
    pub files: Vec<CachedFile>,
    /// The Python version the fetch ran (`3.11.2`).
    pub python: String,
    /// The platform the fetch ran on (`linux-x86_64`).
    pub platform: String,
}

impl CachedSet {
    /// Bytes of every file together.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The attested list.
    pub fn dependencies(&self) -> Vec<Dependency> {
        self.files.iter().map(|f| f.dependency.clone()).collect()
    }
}

/// A file a fetch produced, in the fetch's scratch folder.
#[derive(Debug)]
pub struct FetchedFile {
    /// What it is (its SHA-256 computed from the bytes received).
    pub dependency: Dependency,
    /// Its length.
    pub bytes: u64,
    /// Where it lies now (same filesystem as the cache: stored by rename).
    pub staged: PathBuf,
}

/// What a successful fetch hands to the cache; its scratch folder goes when it drops.
#[derive(Debug)]
pub struct Fetched {
    /// The files.
    pub files: Vec<FetchedFile>,
    /// Python version of the fetch.
    pub python: String,
    /// Platform of the fetch.
    pub platform: String,
    /// The scratch folder the files are in.
    pub scratch: tempfile::TempDir,
}

#[derive(Serialize, Deserialize)]
struct SetFile {
    files: Vec<SetEntry>,
    python: String,
    platform: String,
}

#[derive(Serialize, Deserialize)]
struct SetEntry {
    dependency: Dependency,
    bytes: u64,
}

/// The cache under one root.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache at `root` (created when first written).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Its root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where fetches stage their files.
    pub fn scratch(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blob(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join("sha256").join(sha256)
    }

    fn set(&self, key: &str) -> PathBuf {
        self.root.join("sets").join(format!("{key}.json"))
    }

    /// The set stored under `key`, every file re-hashed; `None` when there is none.
    pub fn lookup(&self, key: &str) -> std::io::Result<Option<CachedSet>> {
        let set_path = self.set(key);
        let bytes = match std::fs::read(&set_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let set: SetFile = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        let mut files = Vec::with_capacity(set.files.len());
        for entry in set.files {
            let sha = &entry.dependency.sha256;
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(std::io::Error::other(format!(
                    "bad digest {sha:?} in set {key}"
                )));
            }
            let path = self.blob(sha);
            let (digest, len) = hash_file(&path)?;
            if digest != *sha || len != entry.bytes {
                return Err(std::io::Error::other(format!(
                    "cached {} does not match its digest",
                    entry.dependency.filename
                )));
            }
            files.push(CachedFile {
                dependency: entry.dependency,
                bytes: entry.bytes,
                path,
            });
        }
        // Used now: retention ([`Cache::collect`]) keeps what is in use.
        if let Ok(f) = std::fs::File::options().append(true).open(&set_path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Ok(Some(CachedSet {
            key: key.to_string(),
            files,
            python: set.python,
            platform: set.platform,
        }))
    }

    /// Stores a complete fetch under `key`: every file by content, then the set.
    pub fn store(&self, key: &str, fetched: Fetched) -> std::io::Result<CachedSet> {
        let blobs = self.root.join("blobs").join("sha256");
        let sets = self.root.join("sets");
        std::fs::create_dir_all(&blobs)?;
        std::fs::create_dir_all(&sets)?;
        let mut files = Vec::with_capacity(fetched.files.len());
        for f in fetched.files {
            let path = self.blob(&f.dependency.sha256);
            if path.exists() {
                std::fs::remove_file(&f.staged)?;
            } else {
                // Staged files are already synced (the fetch wrote them so).
                std::fs::rename(&f.staged, &path)?;
            }
            files.push(CachedFile {
                dependency: f.dependency,
                bytes: f.bytes,
                path,
            });
        }
        files.sort_by(|a, b| a.dependency.filename.cmp(&b.dependency.filename));
        let set = SetFile {
            files: files
                .iter()
                .map(|f| SetEntry {
                    dependency: f.dependency.clone(),
                    bytes: f.bytes,
                })
                .collect(),
            python: fetched.python.clone(),
            platform: fetched.platform.clone(),
        };
        let tmp = fetched.scratch.path().join("set.json");
        let json = serde_json::to_vec_pretty(&set).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.set(key))?;
        std::fs::File::open(&sets)?.sync_all()?;
        Ok(CachedSet {
            key: key.to_string(),
            files,
            python: fetched.python,
            platform: fetched.platform,
        })
    }

    /// Removes sets and blobs not used for `max_age` (by modification time) and stale
    /// scratch folders; returns how many files went. Blobs still named by a kept set stay.
    pub fn collect(&self, max_age: std::time::Duration) -> std::io::Result<usize> {
        let now = std::time::SystemTime::now();
        let old = |p: &Path| {
            p.metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > max_age)
                .unwrap_or(false)
        };
        let mut removed = 0;
        let mut keep = std::collections::HashSet::new();
        if let Ok(dir) = std::fs::read_dir(self.root.join("sets")) {
            for entry in dir.flatten() {
                let path = entry.path();
                if old(&path) {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                } else if let Ok(bytes) = std::fs::read(&path) {
                    if let Ok(set) = serde_json::from_slice::<SetFile>(&bytes) {
                        keep.extend(set.files.into_iter().map(|f| f.dependency.sha256));
                    }
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir(self.root.join("blobs").join("sha256")) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) && old(&entry.path()) {
                    std::fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir(self.scratch()) {
            for entry in dir.flatten() {
                if old(&entry.path()) {
                    std::fs::remove_dir_all(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// SHA-256 (hex) and length of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(h.finalize()), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(scratch_root: &Path, content: &[u8], name: &str) -> Fetched {
        std::fs::create_dir_all(scratch_root).unwrap();
        let scratch = tempfile::tempdir_in(scratch_root).unwrap();
        let staged = scratch.path().join(name);
        std::fs::write(&staged, content).unwrap();
        let (sha256, bytes) = hash_file(&staged).unwrap();
        Fetched {
            files: vec![FetchedFile {
                dependency: Dependency {
                    ecosystem: "pypi".into(),
                    name: "six".into(),
                    version: "1.16.0".into(),
                    filename: name.into(),
                    sha256,
                },
                bytes,
                staged,
            }],
            python: "3.11.2".into(),
            platform: "linux-x86_64".into(),
            scratch,
        }
    }

    #[test]
    fn a_stored_set_is_served_and_a_damaged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("deps"));
        assert_eq!(cache.lookup("k").unwrap(), None);
        let stored = cache
            .store(
                "k",
                fetched(
                    &cache.scratch(),
                    b"wheel bytes",
                    "six-1.16.0-py2.py3-none-any.whl",
                ),
            )
            .unwrap();
        let found = cache.lookup("k").unwrap().unwrap();
        assert_eq!(found, stored);
        assert_eq!(found.bytes(), 11);
        // The scratch folder went with the fetch.
        assert_eq!(std::fs::read_dir(cache.scratch()).unwrap().count(), 0);
        std::fs::write(&found.files[0].path, b"tampered!!!").unwrap();
        assert!(cache.lookup("k").is_err(), "a damaged blob is never served");
    }

    #[test]
    fn a_fetch_that_never_stored_leaves_no_set() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("deps"));
        drop(fetched(
            &cache.scratch(),
            b"partial",
            "six-1.16.0-py2.py3-none-any.whl",
        ));
        assert_eq!(cache.lookup("k").unwrap(), None);
        assert_eq!(std::fs::read_dir(cache.scratch()).unwrap().count(), 0);
    }
}
