//! Several Docker engines behind one [`Runner`]: local or remote, plain or over TLS.
//!
//! - **Where engines come from.** `[[sandbox.engines]]` in the config, each with a `host`
//!   (`unix://`, `tcp://`, `http://`, `https://`), TLS settings and a `capacity` (most jobs
//!   at once on it). With none configured there is one engine, named `default`, from
//!   Docker's own conventions: `DOCKER_HOST` (else the local socket), `DOCKER_TLS_VERIFY`
//!   (non-empty: TLS, both ways) and `DOCKER_CERT_PATH` (else `~/.docker`).
//! - **TLS** is Docker's mutual TLS: the engine's certificate is checked against `ca.pem`
//!   and our client presents `cert.pem` with `key.pem`, all three in `cert_path`. The files
//!   are checked when the engine is connected, each named in the error. (bollard also
//!   accepts the host's trusted roots for the engine's certificate; a remote engine's
//!   address is ours to configure, so the CA only narrows what we already trust.)
//! - **Routing.** A job goes to an engine with free capacity: the least loaded (running
//!   jobs over capacity), the first configured on a tie. An engine whose transport failed
//!   (refused, timed out, TLS) is passed over for [`DOWN_FOR`] unless no other engine has
//!   room. A run that failed before its container existed (the engine unreachable, the
//!   image missing there) is tried once more on another engine with room: no test code ran,
//!   so nothing is run twice.
//! - **Everything else fans out**: warm pools, settling, reaping by instance or lease,
//!   `/health` (one entry per engine) and `images prepare` (each engine gets every image).
//! - **Image identity** across engines: see [`Runner::image_identity`]. An image built
//!   locally gets a different ID on each engine, so the result cache is keyed on what the
//!   image is made of (its recipe and package labels), not on an engine's ID.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::package::TreeTar;

use super::{ContainerSpec, DockerRunner, EngineHealth, RunOutcome, Runner, SandboxError};

/// How long an engine whose transport failed is passed over.
pub const DOWN_FOR: Duration = Duration::from_secs(15);
/// How long one engine's ping may take for `/health`.
pub const HEALTH_PING: Duration = Duration::from_millis(2500);
/// The implicit engine's name (no `[[sandbox.engines]]`).
pub const DEFAULT_ENGINE: &str = "default";
/// Capacity of a configured engine that names none.
pub const DEFAULT_CAPACITY: usize = 4;

/// One `[[sandbox.engines]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// A name for logs, `/health` and the attestation (`environment.engine`); default
    /// `engine-<n>`, counted from 1 in config order.
    #[serde(default)]
    pub name: Option<String>,
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`, `https://host:2376`, `http://host:2375`.
    pub host: String,
    /// Mutual TLS, as `DOCKER_TLS_VERIFY`: on by default for `https://`, off otherwise.
    #[serde(default)]
    pub tls_verify: Option<bool>,
    /// The folder with `ca.pem`, `cert.pem` and `key.pem`, as `DOCKER_CERT_PATH`; default
    /// `~/.docker`.
    #[serde(default)]
    pub cert_path: Option<PathBuf>,
    /// Most jobs at once on this engine; default [`DEFAULT_CAPACITY`].
    #[serde(default)]
    pub capacity: Option<usize>,
}

impl EngineSettings {
    /// Its name, or `engine-<n>` for the `index`th entry (0-based).
    fn name_at(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("engine-{}", index + 1))
    }
}

/// The certificate files of a TLS engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The folder they are in (the build script's `DOCKER_CERT_PATH`).
    pub dir: PathBuf,
    /// `ca.pem`: what the engine's certificate must chain to.
    pub ca: PathBuf,
    /// `cert.pem`: our client certificate.
    pub cert: PathBuf,
    /// `key.pem`: its private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The three files in `dir`, by Docker's names.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// Each file exists and holds PEM; the first that does not is named.
    pub fn check(&self) -> Result<(), String> {
        for (what, path) in [
            ("CA certificate", &self.ca),
            ("client certificate", &self.cert),
            ("client key", &self.key),
        ] {
            let text = std::fs::read(path)
                .map_err(|e| format!("reading the {what} {}: {e}", path.display()))?;
            if !text.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(format!(
                    "the {what} {} is not PEM (no -----BEGIN line)",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

/// One engine to connect to, resolved from settings or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineTarget {
    /// Its name.
    pub name: String,
    /// Its address, as configured.
    pub host: String,
    /// TLS files, when TLS is on.
    pub tls: Option<TlsFiles>,
    /// Most jobs at once.
    pub capacity: usize,
}

impl EngineTarget {
    /// The implicit engine: Docker's environment conventions, `capacity` jobs at once.
    pub fn from_env(capacity: usize) -> Self {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let verify = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty());
        let tls =
            (verify && !host.starts_with("unix://")).then(|| TlsFiles::in_dir(&env_cert_dir()));
        Self {
            name: DEFAULT_ENGINE.into(),
            host,
            tls,
            capacity: capacity.max(1),
        }
    }

    /// `tls` when TLS is on, else `plain`: for `/health`.
    pub fn transport(&self) -> &'static str {
        match (&self.tls, self.host.split_once("://").map(|(s, _)| s)) {
            (Some(_), _) => "tls",
            (None, Some("unix")) => "unix",
            (None, _) => "plain",
        }
    }

    /// The environment a `docker` CLI needs to reach this engine (for `images/build.sh`).
    pub fn docker_cli_env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        let host = self.host.replacen("https://", "tcp://", 1);
        let mut env = vec![("DOCKER_HOST", host.into())];
        match &self.tls {
            Some(tls) => {
                env.push(("DOCKER_TLS_VERIFY", "1".into()));
                env.push(("DOCKER_CERT_PATH", tls.dir.clone().into_os_string()));
            }
            // An inherited DOCKER_TLS_VERIFY must not apply to a plain engine.
            None => env.push(("DOCKER_TLS_VERIFY", "".into())),
        }
        env
    }
}

fn env_cert_dir() -> PathBuf {
    std::env::var_os("DOCKER_CERT_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".docker")))
        .unwrap_or_else(|| PathBuf::from(".docker"))
}

/// Checks `[[sandbox.engines]]`: `Err((key, reason))`.
pub fn validate(engines: &[EngineSettings]) -> Result<(), (&'static str, String)> {
    let key = "sandbox.engines";
    let mut names = std::collections::BTreeSet::new();
    for (i, e) in engines.iter().enumerate() {
        let name = e.name_at(i);
        let at = |why: String| (key, format!("engine {name:?}: {why}"));
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(at(
                "a name is 1 to 64 characters of letters, digits, '-', '_' and '.'".into(),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(at("the name is used twice".into()));
        }
        let scheme = e.host.split_once("://");
        match scheme {
            Some(("unix", path)) if path.starts_with('/') => {
                if e.tls_verify == Some(true) {
                    return Err(at("TLS applies to tcp:// and https:// engines, not a socket".into()));
                }
            }
            Some(("tcp" | "http", rest)) if !rest.is_empty() => {}
            Some(("https", rest)) if !rest.is_empty() => {
                if e.tls_verify == Some(false) {
                    return Err(at("an https:// engine is TLS; drop tls_verify = false or use tcp://".into()));
                }
            }
            _ => {
                return Err(at(format!(
                    "host {:?} is not unix:///path, tcp://host:port, http://host:port or https://host:port",
                    e.host
                )))
            }
        }
        if let Some(c) = e.capacity {
            if !(1..=1024).contains(&c) {
                return Err(at(format!("capacity {c} is outside 1..=1024")));
            }
        }
        if e.cert_path.is_some() && !tls_on(e) {
            return Err(at(
                "cert_path is set but TLS is off (set tls_verify = true)".into(),
            ));
        }
    }
    Ok(())
}

fn tls_on(e: &EngineSettings) -> bool {
    e.tls_verify
        .unwrap_or_else(|| e.host.starts_with("https://"))
}

/// The engines to drive: the configured ones, else the implicit one with `default_capacity`.
pub fn targets(engines: &[EngineSettings], default_capacity: usize) -> Vec<EngineTarget> {
    if engines.is_empty() {
        return vec![EngineTarget::from_env(default_capacity)];
    }
    engines
        .iter()
        .enumerate()
        .map(|(i, e)| EngineTarget {
            name: e.name_at(i),
            host: e.host.clone(),
            tls: tls_on(e)
                .then(|| TlsFiles::in_dir(&e.cert_path.clone().unwrap_or_else(env_cert_dir))),
            capacity: e.capacity.unwrap_or(DEFAULT_CAPACITY),
        })
        .collect()
}

/// One engine of the set, with its load.
struct Member {
    runner: DockerRunner,
    capacity: usize,
    /// One permit per job it may run at once.
    slots: Arc<Semaphore>,
    down_until: Mutex<Option<Instant>>,
}

impl Member {
    fn name(&self) -> &str {
        &self.runner.target().name
    }

    fn is_down(&self) -> bool {
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *down = None;
                false
            }
            None => false,
        }
    }

    fn mark(&self, error: Option<&SandboxError>) {
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(e) => {
                if down.is_none() {
                    tracing::warn!(engine = self.name(), error = %e, "engine unreachable; passed over for {} s", DOWN_FOR.as_secs());
                }
                *down = Some(Instant::now() + DOWN_FOR);
            }
            None => *down = None,
        }
    }

    /// Jobs running on it: its slots in use.
    fn running(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    /// Load as a fraction, for picking the least loaded.
    fn load(&self) -> f64 {
        self.running() as f64 / self.capacity as f64
    }

    /// Runs on this engine, and marks it down on a transport failure or up on success.
    async fn run(
        &self,
        spec: &ContainerSpec,
        tree: &TreeTar,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let result = self.runner.run(spec, tree, cancel).await;
        match &result {
            Ok(_) => self.mark(None),
            Err(e) if unreachable(e) => self.mark(Some(e)),
            Err(_) => {}
        }
        result
    }
}

/// Several engines as one [`Runner`].
pub struct Engines {
    members: Vec<Member>,
    /// One permit per slot over all engines: holding one guarantees some engine has room.
    total: Arc<Semaphore>,
}

impl Engines {
    /// Drives `runners` (connected, configured), in order of preference.
    pub fn new(runners: Vec<DockerRunner>) -> Self {
        let members: Vec<Member> = runners
            .into_iter()
            .map(|runner| {
                let capacity = runner.target().capacity.max(1);
                Member {
                    runner,
                    capacity,
                    slots: Arc::new(Semaphore::new(capacity)),
                    down_until: Mutex::new(None),
                }
            })
            .collect();
        let total = members.iter().map(|m| m.capacity).sum();
        Self {
            members,
            total: Arc::new(Semaphore::new(total)),
        }
    }

    /// The engines' runners, in config order.
    pub fn runners(&self) -> impl Iterator<Item = &DockerRunner> {
        self.members.iter().map(|m| &m.runner)
    }

    /// A free slot on the best member other than `except`: a healthy one before one passed
    /// over, then the least loaded, then config order.
    fn pick(&self, except: Option<usize>) -> Option<(usize, OwnedSemaphorePermit)> {
        let mut order: Vec<usize> = (0..self.members.len())
            .filter(|i| Some(*i) != except)
            .collect();
        order.sort_by(|a, b| {
            let (ma, mb) = (&self.members[*a], &self.members[*b]);
            (ma.is_down(), ma.load())
                .partial_cmp(&(mb.is_down(), mb.load()))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        });
        order.into_iter().find_map(|i| {
            let permit = self.members[i].slots.clone().try_acquire_owned().ok()?;
            Some((i, permit))
        })
    }

    /// The first answer from an engine not passed over, else the last error.
    async fn first_answer<'a, F, Fut>(&'a self, image: &str, ask: F) -> Result<String, SandboxError>
    where
        F: Fn(&'a DockerRunner) -> Fut,
        Fut: std::future::Future<Output = Result<String, SandboxError>>,
    {
        let mut last = None;
        for m in self.members.iter().filter(|m| !m.is_down()) {
            match ask(&m.runner).await {
                Ok(answer) => return Ok(answer),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| SandboxError::ImageMissing {
            image: image.to_string(),
        }))
    }
}

/// A failure before the container existed, which another engine may not have: the engine
/// did not answer, or it lacks the image. No test code ran.
fn before_container(e: &SandboxError) -> bool {
    match e {
        SandboxError::Connect(_) | SandboxError::ImageMissing { .. } => true,
        SandboxError::Timeout { operation, .. } => *operation == "create container",
        SandboxError::CreateContainer { source, .. } => {
            super::docker::engine_status(source).is_none()
        }
        _ => false,
    }
}

/// A failure of the engine's transport (refused, reset, timed out, TLS), not an answer.
fn unreachable(e: &SandboxError) -> bool {
    use super::docker::engine_status as status;
    match e {
        SandboxError::Connect(_) | SandboxError::Ping(_) | SandboxError::Timeout { .. } => true,
        SandboxError::CreateContainer { source, .. }
        | SandboxError::StartContainer { source, .. }
        | SandboxError::AttachContainer { source, .. }
        | SandboxError::InspectContainer { source, .. } => status(source).is_none(),
        _ => false,
    }
}

#[async_trait]
impl Runner for Engines {
    async fn run(
        &self,
        spec: &ContainerSpec,
        tree: &TreeTar,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let _all = tokio::select! {
            permit = self.total.acquire() => permit.map_err(|_| SandboxError::Spec("the engine set is closed".into()))?,
            // Cancelled while waiting for a slot: nothing started.
            () = cancel.cancelled() => return Ok(RunOutcome { cancelled: true, ..RunOutcome::not_run(spec, "") }),
        };
        // Holding one of `total`'s permits means some member has a free slot.
        let Some((first, slot)) = self.pick(None) else {
            return Err(SandboxError::Spec("no engine has a free slot".into()));
        };
        match self.members[first].run(spec, tree, cancel.clone()).await {
            Err(e) if before_container(&e) && !cancel.is_cancelled() => {
                drop(slot);
                let Some((second, _slot)) = self.pick(Some(first)) else {
                    return Err(e);
                };
                tracing::info!(from = self.members[first].name(), to = self.members[second].name(), error = %e, "run moved to another engine");
                self.members[second].run(spec, tree, cancel).await
            }
            result => result,
        }
    }

    async fn image_digest(&self, image: &str) -> Result<String, SandboxError> {
        self.first_answer(image, |r| r.image_digest(image)).await
    }

    async fn image_identity(&self, image: &str) -> Result<String, SandboxError> {
        self.first_answer(image, |r| r.image_identity(image)).await
    }

    async fn ping(&self) -> Result<(), SandboxError> {
        let mut last = None;
        for m in &self.members {
            match m.runner.ping().await {
                Ok(()) => {
                    m.mark(None);
                    return Ok(());
                }
                Err(e) => {
                    m.mark(Some(&e));
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| SandboxError::Spec("no engines configured".into())))
    }

    async fn engines(&self) -> Vec<EngineHealth> {
        let probes = self.members.iter().map(|m| async move {
            let result = match tokio::time::timeout(HEALTH_PING, m.runner.ping()).await {
                Ok(result) => result,
                Err(_) => Err(SandboxError::Timeout {
                    operation: "ping",
                    secs: HEALTH_PING.as_secs_f64().ceil() as u64,
                }),
            };
            m.mark(result.as_ref().err());
            EngineHealth {
                running: m.running(),
                ..EngineHealth::of(m.runner.target(), result.err())
            }
        });
        futures_util::future::join_all(probes).await
    }

    fn prewarm(&self, spec: &ContainerSpec) {
        for m in self.members.iter().filter(|m| !m.is_down()) {
            m.runner.prewarm(spec);
        }
    }

    async fn settle(&self) {
        futures_util::future::join_all(self.members.iter().map(|m| m.runner.settle())).await;
    }

    async fn reap(&self, instance: &str) -> Result<usize, SandboxError> {
        let mut removed = 0;
        let mut first_error = None;
        for m in &self.members {
            match m.runner.reap(instance).await {
                Ok(n) => removed += n,
                Err(e) => {
                    tracing::warn!(engine = m.name(), error = %e, "reap failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if removed == 0 => Err(e),
            _ => Ok(removed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(host: &str) -> EngineSettings {
        EngineSettings {
            name: None,
            host: host.into(),
            tls_verify: None,
            cert_path: None,
            capacity: None,
        }
    }

    #[test]
    fn configured_engines_resolve_with_names_tls_and_capacity() {
        let mut remote = engine("tcp://10.0.0.2:2376");
        remote.tls_verify = Some(true);
        remote.cert_path = Some("/etc/sv/certs".into());
        remote.capacity = Some(8);
        let list = vec![
            engine("unix:///var/run/docker.sock"),
            remote,
            engine("https://e3:2376"),
        ];
        validate(&list).unwrap();
        let t = targets(&list, 99);
        assert_eq!(t[0].name, "engine-1");
        assert_eq!(t[0].capacity, DEFAULT_CAPACITY);
        assert_eq!(t[0].tls, None);
        assert_eq!(t[0].transport(), "unix");
        assert_eq!(t[1].name, "engine-2");
        assert_eq!(t[1].capacity, 8);
        assert_eq!(
            t[1].tls.as_ref().unwrap().key,
            Path::new("/etc/sv/certs/key.pem")
        );
        assert!(t[2].tls.is_some(), "https:// is TLS by default");
        let env = t[1].docker_cli_env();
        assert!(env.contains(&("DOCKER_HOST", "tcp://10.0.0.2:2376".into())));
        assert!(env.contains(&("DOCKER_CERT_PATH", "/etc/sv/certs".into())));
        let plain = t[0].docker_cli_env();
        assert!(plain.contains(&("DOCKER_TLS_VERIFY", "".into())));
    }

    #[test]
    fn bad_engine_entries_are_refused_by_name() {
        let cases: Vec<(EngineSettings, &str)> = vec![
            (engine("ssh://box"), "is not unix"),
            (engine("unix://relative"), "is not unix"),
            (engine("tcp://"), "is not unix"),
            (
                EngineSettings {
                    tls_verify: Some(true),
                    ..engine("unix:///s")
                },
                "not a socket",
            ),
            (
                EngineSettings {
                    tls_verify: Some(false),
                    ..engine("https://h:1")
                },
                "https:// engine is TLS",
            ),
            (
                EngineSettings {
                    capacity: Some(0),
                    ..engine("tcp://h:1")
                },
                "capacity 0",
            ),
            (
                EngineSettings {
                    cert_path: Some("/c".into()),
                    ..engine("tcp://h:1")
                },
                "TLS is off",
            ),
            (
                EngineSettings {
                    name: Some("a b".into()),
                    ..engine("tcp://h:1")
                },
                "a name is",
            ),
        ];
        for (e, want) in cases {
            let (key, reason) = validate(std::slice::from_ref(&e)).unwrap_err();
            assert_eq!(key, "sandbox.engines");
            assert!(reason.contains(want), "{e:?}: {reason}");
        }
        let twice = vec![
            EngineSettings {
                name: Some("a".into()),
                ..engine("tcp://h:1")
            },
            EngineSettings {
                name: Some("a".into()),
                ..engine("tcp://h:2")
            },
        ];
        assert!(validate(&twice).unwrap_err().1.contains("used twice"));
    }

    #[test]
    fn tls_files_are_checked_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_dir(dir.path());
        assert!(files.check().unwrap_err().contains("CA certificate"));
        std::fs::write(&files.ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert!(files.check().unwrap_err().contains("client certificate"));
        std::fs::write(&files.cert, "not pem").unwrap();
        assert!(files.check().unwrap_err().contains("is not PEM"));
        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        files.check().unwrap();
    }
}
