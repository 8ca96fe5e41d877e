//! Dependencies: a skill's Python requirements, fetched outside the test run, cached by
//! content, installed offline in the test's own container, and attested file by file.
//!
//! The flow for a package with requirements whose test runs in the python runtime
//! ([`Deps::prepare`]):
//!
//! 1. **Key.** The requirements' canonical digest ([`Requirements::digest`]), the runner
//!    image (its tag is the recipe's digest, so it names the Python version and the
//!    platform), the machine's architecture and the wheel policy. The index is *not* in the
//!    key: the cache holds what gets installed, by content, wherever it came from, and every
//!    file's SHA-256 is attested.
//! 2. **Cache.** A hit needs no index at all ([`cache`]).
//! 3. **Fetch** on a miss ([`pypi`]): `pip download` in a container of the python runner
//!    image, whose only way out is the network sink in allowlist mode, open to the index's
//!    hosts only. TLS is verified against the host's trust store (`[deps] ca_bundle`), copied
//!    in. Binary wheels only unless `[deps] allow_sdist`. The files come back as a tar on the
//!    container's stdout and go into the cache only when every check passed: nothing partial
//!    is ever cached.
//! 4. **Install** ([`crate::sandbox::InstallStep`]): the files travel with the skill's tree
//!    into the test's container and are installed there with the network off
//!    (`pip --no-index --no-deps`, exactly the attested files) into a venv in `/tmp`, under
//!    their own deadline, before the test's deadline starts.
//!
//! Failures split by whose fault they are ([`DepsError`]): an unknown distribution or
//! version, conflicting pins, a hash mismatch or a download over the caps is the skill's
//! (the job ends `failed`, signed, with a `dependencies_failed` finding naming the
//! requirement); an index the sandbox cannot reach, or a trust store that does not verify
//! it, is ours (the job ends `error` and the message says which index and how to configure
//! it).

pub mod cache;
pub mod pypi;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::package::read::emit::normal_header;
use crate::package::requirements::Requirements;
use crate::package::EntryKind;
use crate::sandbox::{ContainerSpec, Policy, Runner};

pub use cache::{Cache, CachedSet};

/// PyPI's simple index, the default `[deps] python_index`.
pub const PYPI_INDEX: &str = "https://pypi.org/simple";
/// Where PyPI serves the files its simple index links to.
pub const PYPI_FILES_HOST: &str = "files.pythonhosted.org";
/// The system trust store on Debian and its derivatives.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

const MIB: u64 = 1024 * 1024;

/// `[deps]`: where Python distributions come from and the limits of fetching and
/// installing them (env `SKILL_VERIFIER_DEPS__*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DepsSettings {
    /// The simple index (PEP 503) pip resolves against.
    pub python_index: String,
    /// Hosts the fetch may reach besides the index's own (the host its files are served
    /// from, when that differs). PyPI's `files.pythonhosted.org` is added for PyPI.
    pub python_hosts: Vec<String>,
    /// The trust store the fetch verifies TLS against, copied into the fetch container: a
    /// TLS-intercepting proxy's CA must be in it. Verification is never turned off.
    pub ca_bundle: PathBuf,
    /// Also accept source distributions (their build scripts then run during the fetch, in
    /// the fetch's sandbox). Off by default: binary wheels only.
    pub allow_sdist: bool,
    /// Deadline of resolving and downloading, in seconds.
    pub fetch_timeout_secs: u64,
    /// Most bytes downloaded for one package, all distributions together.
    pub max_download_bytes: u64,
    /// Most distributions one package may pull in (its requirements and theirs).
    pub max_distributions: u64,
    /// Deadline of the install in the test's container, in seconds (the test's own timeout
    /// starts after it).
    pub install_timeout_secs: u64,
    /// The cache; default `<data dir>/deps`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for DepsSettings {
    fn default() -> Self {
        Self {
            python_index: PYPI_INDEX.to_string(),
            python_hosts: Vec::new(),
            ca_bundle: PathBuf::from(SYSTEM_CA_BUNDLE),
            allow_sdist: false,
            fetch_timeout_secs: 300,
            max_download_bytes: 200 * MIB,
            max_distributions: 100,
            install_timeout_secs: 300,
            cache_dir: None,
        }
    }
}

impl DepsSettings {
    /// The index's host, lowercased (validated settings always have one).
    pub fn index_host(&self) -> Option<String> {
        let url = reqwest::Url::parse(&self.python_index).ok()?;
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        (!host.is_empty()).then(|| host.to_ascii_lowercase())
    }

    /// Every host the fetch may reach: the index's, PyPI's file host for PyPI, and
    /// `python_hosts`.
    pub fn allowed_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.index_host().into_iter().collect();
        if hosts.iter().any(|h| h == "pypi.org") {
            hosts.push(PYPI_FILES_HOST.to_string());
        }
        hosts.extend(self.python_hosts.iter().map(|h| h.to_ascii_lowercase()));
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// The limits, as attested.
    pub fn limits(&self) -> DepsLimits {
        DepsLimits {
            fetch_timeout_secs: self.fetch_timeout_secs,
            max_download_bytes: self.max_download_bytes,
            max_distributions: self.max_distributions,
            install_timeout_secs: self.install_timeout_secs,
        }
    }

    /// What a cached verification result depends on besides the package: the index and
    /// everything that decides what gets installed.
    pub fn cache_identity(&self) -> String {
        serde_json::to_string(&(
            &self.python_index,
            self.allowed_hosts(),
            self.allow_sdist,
            self.limits(),
        ))
        .unwrap_or_default()
    }

    /// Refuses settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let index = &self.python_index;
        if !(index.starts_with("https://") || index.starts_with("http://")) {
            return Err((
                "deps.python_index",
                format!("{index:?} is not an http(s) URL"),
            ));
        }
        if self.index_host().is_none() || index.chars().any(|c| c.is_whitespace()) {
            return Err((
                "deps.python_index",
                format!("{index:?} has no host, or has whitespace"),
            ));
        }
        for host in &self.python_hosts {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err((
                    "deps.python_hosts",
                    format!("{host:?} is not a host name (or *.domain)"),
                ));
            }
        }
        let ranges: [(&'static str, u64, u64, u64); 4] = [
            (
                "deps.fetch_timeout_secs",
                self.fetch_timeout_secs,
                1,
                86_400,
            ),
            (
                "deps.max_download_bytes",
                self.max_download_bytes,
                1,
                16 * 1024 * MIB,
            ),
            ("deps.max_distributions", self.max_distributions, 1, 10_000),
            (
                "deps.install_timeout_secs",
                self.install_timeout_secs,
                1,
                86_400,
            ),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err((
                    key,
                    format!("{value} is outside the allowed range {min}..={max}"),
                ));
            }
        }
        Ok(())
    }
}

/// `predicate.install.limits`: the configured bounds of fetching and installing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepsLimits {
    /// Deadline of resolving and downloading.
    pub fetch_timeout_secs: u64,
    /// Most bytes downloaded.
    pub max_download_bytes: u64,
    /// Most distributions.
    pub max_distributions: u64,
    /// Deadline of the install.
    pub install_timeout_secs: u64,
}

/// One installed file (`predicate.dependencies[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// `pypi`.
    pub ecosystem: String,
    /// The distribution's name, normalised (PEP 503).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The file's name as the index served it.
    pub filename: String,
    /// SHA-256 of the exact file the index served (hex).
    pub sha256: String,
}

/// Why the dependencies are not there, by whose fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepsError {
    /// The skill's: its requirements cannot be satisfied within the limits. The job ends
    /// `failed`, signed.
    #[error("{0}")]
    Skill(String),
    /// Ours: the index cannot be reached, the trust store is missing, the engine failed. The
    /// job ends `error`.
    #[error("{0}")]
    Ours(String),
}

/// Fetched (or cached) distributions ready to install.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The files and where they are.
    pub set: CachedSet,
    /// Served from the cache (no index was asked).
    pub cached: bool,
    /// How long the fetch took (0 from the cache).
    pub fetch_ms: u64,
}

/// The dependency stage: settings, the cache, and one fetch at a time per key.
pub struct Deps {
    /// The settings.
    pub settings: DepsSettings,
    cache: Cache,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("settings", &self.settings)
            .field("cache", &self.cache.root())
            .finish()
    }
}

impl Deps {
    /// The stage with its cache under `cache_dir` (created when first written).
    pub fn new(settings: DepsSettings, cache_dir: PathBuf) -> Self {
        Self {
            settings,
            cache: Cache::new(cache_dir),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cache key of `requirements` installed into `image`.
    pub fn key(&self, requirements: &Requirements, image: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            "pypi",
            &requirements.digest(),
            image,
            std::env::consts::ARCH,
            if self.settings.allow_sdist {
                "sdist"
            } else {
                "wheels"
            },
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The distributions for `requirements`: from the cache, else fetched through `runner`
    /// with a container like `base` (the test's spec: labels, image, policy limits).
    pub async fn prepare(
        &self,
        runner: &dyn Runner,
        base: &ContainerSpec,
        policy: &Policy,
        requirements: &Requirements,
        cancel: &CancellationToken,
    ) -> Result<Prepared, DepsError> {
        let key = self.key(requirements, &base.image);
        // Jobs with the same requirements wait for one fetch instead of each fetching.
        let gate = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight.entry(key.clone()).or_default().clone()
        };
        let _turn = gate.lock().await;
        let found = {
            let cache = self.cache.clone();
            let key = key.clone();
            tokio::task::spawn_blocking(move || cache.lookup(&key))
                .await
                .map_err(|e| DepsError::Ours(format!("reading the dependency cache: {e}")))?
        };
        match found {
            Ok(Some(set)) => {
                return Ok(Prepared {
                    set,
                    cached: true,
                    fetch_ms: 0,
                })
            }
            Ok(None) => {}
            // A damaged entry is fetched again, never trusted.
            Err(e) => {
                tracing::warn!(key, error = %e, "dependency cache entry unusable; fetching again")
            }
        }
        let clock = std::time::Instant::now();
        let fetched = pypi::fetch(
            runner,
            base,
            policy,
            &self.settings,
            requirements,
            self.cache.scratch(),
            cancel,
        )
        .await?;
        let cache = self.cache.clone();
        let set = tokio::task::spawn_blocking(move || cache.store(&key, fetched))
            .await
            .map_err(|e| DepsError::Ours(format!("writing the dependency cache: {e}")))?
            .map_err(|e| DepsError::Ours(format!("writing the dependency cache: {e}")))?;
        Ok(Prepared {
            set,
            cached: false,
            fetch_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Writes a tar at `out` holding every entry of the tree's tar `tree` and then the files of
/// `set` under `folder/`: what the test's container unpacks into `/work`. Returns the new
/// tar's description (its footprint covers the distributions too).
pub fn tree_with_dists(
    tree: &Path,
    set: &CachedSet,
    folder: &str,
    out: &Path,
) -> std::io::Result<crate::package::TreeTar> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)?;
    let hashing = crate::digest::HashingWriter::new(std::io::BufWriter::new(file));
    let mut builder = tar::Builder::new(hashing);
    let mut footprint: u64 = 0;
    let mut archive = tar::Archive::new(std::fs::File::open(tree)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header().clone();
        let len = header.size()?;
        footprint = footprint.saturating_add(crate::package::file_footprint(len));
        builder.append(&header, &mut entry)?;
    }
    let mut dir = normal_header(EntryKind::Dir, 0, false);
    builder.append_data(&mut dir, format!("{folder}/"), std::io::empty())?;
    footprint = footprint.saturating_add(crate::package::file_footprint(0));
    for f in &set.files {
        let mut header = normal_header(EntryKind::File, f.bytes, false);
        let data = std::fs::File::open(&f.path)?;
        builder.append_data(
            &mut header,
            format!("{folder}/{}", f.dependency.filename),
            data,
        )?;
        footprint = footprint.saturating_add(crate::package::file_footprint(f.bytes));
    }
    let (writer, sha256, len) = builder.into_inner()?.finish();
    writer.into_inner().map_err(|e| e.into_error())?;
    Ok(crate::package::TreeTar {
        path: out.to_path_buf(),
        sha256,
        len,
        footprint_bytes: footprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pypi_adds_its_file_host_and_bad_settings_name_their_key() {
        let s = DepsSettings::default();
        assert_eq!(
            s.allowed_hosts(),
            vec!["files.pythonhosted.org", "pypi.org"]
        );
        s.validate().unwrap();
        let mirror = DepsSettings {
            python_index: "https://user@mirror.example:8443/pypi/simple".into(),
            python_hosts: vec!["*.cdn.example".into()],
            ..DepsSettings::default()
        };
        assert_eq!(
            mirror.allowed_hosts(),
            vec!["*.cdn.example", "mirror.example"]
        );
        mirror.validate().unwrap();
        for (bad, key) in [
            (
                DepsSettings {
                    python_index: "ftp://x/simple".into(),
                    ..DepsSettings::default()
                },
                "deps.python_index",
            ),
            (
                DepsSettings {
                    python_hosts: vec!["bad host".into()],
                    ..DepsSettings::default()
                },
                "deps.python_hosts",
            ),
            (
                DepsSettings {
                    max_download_bytes: 0,
                    ..DepsSettings::default()
                },
                "deps.max_download_bytes",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().0, key);
        }
    }

    #[test]
    fn the_tree_and_its_distributions_travel_in_one_tar() {
        let dir = tempfile::tempdir().unwrap();
        let tree =
            pypi::write_tar(&dir.path().join("tree.tar"), &[("SKILL.md", b"---\n")]).unwrap();
        let wheel = dir.path().join("blob");
        std::fs::write(&wheel, b"wheel").unwrap();
        let set = CachedSet {
            key: "k".into(),
            files: vec![cache::CachedFile {
                dependency: Dependency {
                    ecosystem: "pypi".into(),
                    name: "six".into(),
                    version: "1.16.0".into(),
                    filename: "six-1.16.0-py2.py3-none-any.whl".into(),
                    sha256: "x".into(),
                },
                bytes: 5,
                path: wheel,
            }],
            python: String::new(),
            platform: String::new(),
        };
        let out = dir.path().join("with.tar");
        let combined = tree_with_dists(&tree.path, &set, ".deps-n", &out).unwrap();
        assert!(combined.footprint_bytes > tree.footprint_bytes);
        let mut names = Vec::new();
        for e in tar::Archive::new(std::fs::File::open(&out).unwrap())
            .entries()
            .unwrap()
        {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(
            names,
            [
                "SKILL.md",
                ".deps-n/",
                ".deps-n/six-1.16.0-py2.py3-none-any.whl"
            ]
        );
        assert_eq!(
            combined.sha256,
            crate::digest::Sha256Digest::of(&std::fs::read(&out).unwrap())
        );
    }
}
