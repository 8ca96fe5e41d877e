//! The one [`Settings`] struct: defaults < TOML file (`--config`) < `SKILL_VERIFIER_*`
//! environment < command-line flags. Runs with no config at all.
//!
//! Environment variables use `__` to reach into sections, e.g.
//! `SKILL_VERIFIER_SERVER__LISTEN=0.0.0.0:8080` or `SKILL_VERIFIER_SANDBOX__TIMEOUT_SECS=120`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::package::Limits;
use crate::sandbox::Policy;

/// Everything configurable.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where everything lives: keys, SQLite, blobs.
    pub data_dir: Option<PathBuf>,
    /// The HTTP server and the queue.
    pub server: ServerSettings,
    /// Package limits.
    pub package: Limits,
    /// Sandbox policy and images.
    pub sandbox: Policy,
    /// Attestation settings.
    pub attest: AttestSettings,
    /// The scan stage: operator rule files, the verdict policy, size bounds.
    pub scan: ScanSettings,
    /// Where jobs, results and keys live: SQLite in the data dir, or PostgreSQL.
    pub store: StoreSettings,
    /// Signed webhooks on each job's terminal status.
    pub webhooks: WebhookSettings,
    /// Python requirements: the index, the trust store, the limits, the cache.
    pub deps: crate::deps::DepsSettings,
}

/// The daemon's HTTP side and its queue.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Worker count; 0 means automatic: the sum of the engines' capacities when
    /// `[[sandbox.engines]]` is set, else twice the cores, at least 4. A worker spends its
    /// job waiting on the engine (create, start, exit), not computing, and on a 2-core
    /// machine the engine's start path saturates at about 4 concurrent starts: fewer
    /// workers leave the engine idle between jobs, more only queue inside the engine.
    pub workers: usize,
    /// Most jobs waiting; beyond it `POST /verify` answers 429.
    pub queue_capacity: usize,
    /// Bearer tokens; when non-empty, required for POST and DELETE.
    pub tokens: Vec<String>,
    /// Also require a token for reads (GET on jobs, attestations, logs).
    pub auth_reads: bool,
    /// Allowed CORS origins (`*` for any); empty disables CORS headers.
    pub cors_origins: Vec<String>,
    /// Deadline for a whole request, uploads included, in seconds.
    pub request_timeout_secs: u64,
    /// Grace period on SIGTERM for running jobs, in seconds.
    pub shutdown_grace_secs: u64,
    /// Containers kept started and waiting for their command per container shape
    /// (runtime × policy) that has had a job; a shape only prewarmed at start (a configured
    /// runtime with no job yet) keeps one. 0 disables the warm pool. The default, 8, is two
    /// rounds of the default 4 workers: a burst's first eight jobs find their containers
    /// started, so on 2 cores a burst of 24 finishes in about 0.8x the time of 24 bare
    /// `docker run`s 4 at a time (with 4: 0.88-0.99x, not every round under 0.9). An idle
    /// container costs about 17 MB of RSS, mostly containerd's shim (shared pages counted).
    pub warm_containers: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            queue_capacity: 1000,
            tokens: Vec::new(),
            auth_reads: false,
            cors_origins: Vec::new(),
            request_timeout_secs: 120,
            shutdown_grace_secs: 30,
            warm_containers: 8,
        }
    }
}

// Tokens are secrets: never in Debug output or logs.
impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("auth_reads", &self.auth_reads)
            .field("cors_origins", &self.cors_origins)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("warm_containers", &self.warm_containers)
            .finish()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("server", &self.server)
            .field("package", &self.package)
            .field("sandbox", &self.sandbox)
            .field("attest", &self.attest)
            .field("scan", &self.scan)
            .field("store", &self.store)
            .field("webhooks", &self.webhooks)
            .field("deps", &self.deps)
            .finish()
    }
}

/// Which TEE quote provider binds attestations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QuoteProviderKind {
    /// A TDX-shaped quote signed by a simulator key (labelled simulated).
    #[default]
    Simulated,
    /// A real quote from a dstack guest agent.
    Dstack,
    /// No quote.
    None,
}

/// Attestation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AttestSettings {
    /// The quote provider.
    pub quote_provider: QuoteProviderKind,
    /// dstack guest agent endpoint (a socket path or URL); default: the well-known sockets.
    pub dstack_endpoint: Option<String>,
    /// A PCCS (or Intel PCS) base URL, e.g. `https://pccs.example:8081`. When set, the dstack
    /// provider fetches the quote's collateral at signing time and carries it in
    /// `tee.collateral`, so the attestation verifies fully offline.
    pub pccs_url: Option<String>,
    /// The TCB statuses accepted (Intel names; `UpToDate` only by default). Attested as
    /// `tee.tcb_policy`; with collateral, a quote outside it is not signed.
    pub tcb_policy: Vec<String>,
}

impl Default for AttestSettings {
    fn default() -> Self {
        AttestSettings {
            quote_provider: QuoteProviderKind::default(),
            dstack_endpoint: None,
            pccs_url: None,
            tcb_policy: vec!["UpToDate".into()],
        }
    }
}

impl AttestSettings {
    /// Checks the values a job would otherwise trip over later.
    fn validate(&self) -> Result<(), ConfigError> {
        crate::attest::quote::TcbPolicy::parse(&self.tcb_policy)
            .map_err(|e| invalid("attest.tcb_policy", e.to_string()))?;
        if let Some(url) = &self.pccs_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(
                    "attest.pccs_url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        Ok(())
    }
}

/// `[scan]`: what the scan stage loads at start. A rule file that does not compile or a policy
/// that does not parse stops start-up with the file, the line and the reason
/// ([`ScanSettings::load`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanSettings {
    /// Operator YARA rule files, compiled after the built-in pack in this order.
    pub rules: Vec<PathBuf>,
    /// The verdict policy file; `None` uses the built-in `rules/policy.toml`.
    pub policy: Option<PathBuf>,
    /// Per-file size and time bounds.
    #[serde(flatten)]
    pub limits: crate::scan::ScanLimits,
}

impl ScanSettings {
    /// Compiles the rule pack and loads the policy (`policy` overrides the configured one).
    pub fn load(
        &self,
        policy: Option<&Path>,
    ) -> Result<(crate::scan::Scanner, crate::scan::Policy), crate::scan::ScanError> {
        let scanner = crate::scan::Scanner::new(&self.rules, self.limits)?;
        let policy = crate::scan::Policy::load_or_builtin(
            policy.or(self.policy.as_deref()),
            scanner.pack(),
        )?;
        Ok((scanner, policy))
    }

    /// As [`ScanSettings::load`], for a one-shot process: the compiled rules are reused from
    /// `cache` (keyed by the pack's digest and the YARA-X version) instead of compiled again.
    pub fn load_cached(
        &self,
        policy: Option<&Path>,
        cache: &Path,
    ) -> Result<(crate::scan::Scanner, crate::scan::Policy), crate::scan::ScanError> {
        let scanner = crate::scan::Scanner::new_cached(&self.rules, self.limits, cache)?;
        let policy = crate::scan::Policy::load_or_builtin(
            policy.or(self.policy.as_deref()),
            scanner.pack(),
        )?;
        Ok((scanner, policy))
    }
}

/// `store`: the job store. Written either as a URL (`store = "postgres://…"`, env
/// `SKILL_VERIFIER_STORE`, flag `serve --store`) or as a `[store]` table with `url` and the
/// lease timings. No URL (or `sqlite`) means SQLite in the data dir.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "StoreSettingsRepr")]
pub struct StoreSettings {
    /// `postgres://user:password@host:port/db`; `None` (or `sqlite`) is the embedded SQLite.
    pub url: Option<String>,
    /// How long a claim holds a job without a heartbeat, in seconds. A daemon that dies loses
    /// its jobs to another daemon this long after its last heartbeat.
    pub lease_secs: u64,
    /// How often a daemon renews the leases of the jobs it runs, in seconds; must be well
    /// under `lease_secs` (at most a third), so one late heartbeat does not lose a lease.
    pub heartbeat_secs: u64,
    /// Finished jobs (with their attestation rows, webhooks and cache entries) and blobs no
    /// remaining job names are removed once older than this many days, hourly; 0 keeps
    /// everything (the default).
    pub retention_days: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StoreSettingsRepr {
    Url(String),
    Table {
        #[serde(default)]
        url: Option<String>,
        #[serde(default = "default_lease_secs")]
        lease_secs: u64,
        #[serde(default = "default_heartbeat_secs")]
        heartbeat_secs: u64,
        #[serde(default)]
        retention_days: u64,
    },
}

fn default_lease_secs() -> u64 {
    30
}

fn default_heartbeat_secs() -> u64 {
    10
}

impl From<StoreSettingsRepr> for StoreSettings {
    fn from(r: StoreSettingsRepr) -> Self {
        match r {
            StoreSettingsRepr::Url(url) => StoreSettings {
                url: Some(url),
                ..StoreSettings::default()
            },
            StoreSettingsRepr::Table {
                url,
                lease_secs,
                heartbeat_secs,
                retention_days,
            } => StoreSettings {
                url,
                lease_secs,
                heartbeat_secs,
                retention_days,
            },
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: None,
            lease_secs: default_lease_secs(),
            heartbeat_secs: default_heartbeat_secs(),
            retention_days: 0,
        }
    }
}

impl StoreSettings {
    /// The PostgreSQL URL when the store is PostgreSQL.
    pub fn postgres_url(&self) -> Option<&str> {
        self.url
            .as_deref()
            .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = self.url.as_deref() {
            if url != "sqlite" && self.postgres_url().is_none() {
                return Err(invalid(
                    "store",
                    format!(
                        "{:?} is neither `sqlite` nor a postgres:// URL",
                        redact_url(url)
                    ),
                ));
            }
        }
        check("store.lease_secs", self.lease_secs, 3, 3_600)?;
        check("store.heartbeat_secs", self.heartbeat_secs, 1, 1_200)?;
        check("store.retention_days", self.retention_days, 0, 36_500)?;
        if self.heartbeat_secs.saturating_mul(3) > self.lease_secs {
            return Err(invalid(
                "store.heartbeat_secs",
                format!(
                    "{} is more than a third of store.lease_secs ({}): one late heartbeat would lose the lease",
                    self.heartbeat_secs, self.lease_secs
                ),
            ));
        }
        Ok(())
    }
}

// The URL may carry a password: never in Debug output or logs.
impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("lease_secs", &self.lease_secs)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

/// A URL with its password (if any) replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

/// `[webhooks]`: a POST of the job JSON on each terminal status, signed per the Standard
/// Webhooks scheme, delivered from an outbox in the store (PostgreSQL) with retries.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// A callback for every job (besides a job's own `callback_url`).
    pub url: Option<String>,
    /// `whsec_<base64>`: also sign with HMAC-SHA256 (`v1`); without it only Ed25519 (`v1a`,
    /// the daemon's signing key) signs.
    pub secret: Option<String>,
    /// Allow callbacks to loopback, private, link-local and other non-public addresses
    /// (refused by default: a callback URL must not reach into the daemon's network).
    pub allow_private: bool,
    /// Deliveries tried per webhook before it is given up.
    pub max_attempts: u32,
    /// Deadline of one delivery, in seconds.
    pub timeout_secs: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            url: None,
            secret: None,
            allow_private: false,
            max_attempts: 10,
            timeout_secs: 10,
        }
    }
}

// The secret signs webhooks: never in Debug output or logs.
impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("allow_private", &self.allow_private)
            .field("max_attempts", &self.max_attempts)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl WebhookSettings {
    /// The HMAC key of `secret` (the bytes after `whsec_`, base64-decoded).
    pub fn hmac_key(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let secret = self.secret.as_deref()?;
        base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .ok()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(
                    "webhooks.url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        if self.secret.is_some() && self.hmac_key().is_none_or(|k| k.len() < 16) {
            return Err(invalid(
                "webhooks.secret",
                "not `whsec_` followed by base64 of at least 16 bytes",
            ));
        }
        check("webhooks.max_attempts", self.max_attempts.into(), 1, 100)?;
        check("webhooks.timeout_secs", self.timeout_secs, 1, 300)?;
        Ok(())
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or environment value could not be parsed into the settings' types.
    #[error("loading configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value parsed but is not allowed (a root user, a host network, a zero limit, ...).
    #[error("configuration key `{key}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `sandbox.user`.
        key: &'static str,
        /// Why the value is refused, and what is allowed.
        reason: String,
    },
}

impl Settings {
    /// Loads defaults < `file` (if given) < `SKILL_VERIFIER_*` environment.
    /// Command-line flags are applied by the caller afterwards.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            fig = fig.merge(Toml::file_exact(file));
        }
        fig = fig.merge(
            Env::prefixed("SKILL_VERIFIER_")
                .split("__")
                .ignore(&["server", "token", "config"])
                // `SKILL_VERIFIER_STORE` is the store's URL; `SKILL_VERIFIER_STORE__LEASE_SECS`
                // and friends reach into the `[store]` table beside it.
                .map(|key| {
                    if key == "store" {
                        "store.url".into()
                    } else {
                        key.into()
                    }
                }),
        );
        let settings: Settings = fig.extract().map_err(|e| ConfigError::Parse(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses values that would let a job run less confined than the policy says, or not at
    /// all: nothing invalid reaches a job. [`Settings::load`] calls it; callers that change
    /// settings afterwards call it again.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_sandbox(&self.sandbox)?;
        validate_package(&self.package)?;
        self.attest.validate()?;
        self.store.validate()?;
        self.webhooks.validate()?;
        self.deps
            .validate()
            .map_err(|(key, reason)| invalid(key, reason))?;
        let s = &self.server;
        check(
            "server.queue_capacity",
            s.queue_capacity as u64,
            1,
            1_000_000,
        )?;
        check("server.workers", s.workers as u64, 0, 1024)?;
        check(
            "server.request_timeout_secs",
            s.request_timeout_secs,
            1,
            86_400,
        )?;
        check(
            "server.shutdown_grace_secs",
            s.shutdown_grace_secs,
            0,
            86_400,
        )?;
        check("server.warm_containers", s.warm_containers as u64, 0, 64)?;
        Ok(())
    }

    /// The data dir: configured, else `$XDG_DATA_HOME/skill-verifier` (or the platform
    /// equivalent), else `./skill-verifier-data`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .map(|d| d.join("skill-verifier"))
                .unwrap_or_else(|| PathBuf::from("skill-verifier-data"))
        })
    }

    /// The dependency cache: `[deps] cache_dir`, else `<data dir>/deps`.
    pub fn deps_cache_dir(&self) -> PathBuf {
        self.deps
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("deps"))
    }

    /// Worker count with 0 resolved (see [`ServerSettings::workers`]): with
    /// `[[sandbox.engines]]`, the sum of their capacities; else twice the cores, at least 4.
    pub fn workers(&self) -> usize {
        match self.server.workers {
            0 if !self.sandbox.engines.is_empty() => self
                .engines()
                .iter()
                .map(|e| e.capacity)
                .sum::<usize>()
                .max(1),
            0 => auto_workers(),
            n => n,
        }
    }

    /// The engines to drive (see [`crate::sandbox::engines`]): `[[sandbox.engines]]`, else
    /// one from Docker's environment whose capacity is the worker count.
    pub fn engines(&self) -> Vec<crate::sandbox::EngineTarget> {
        let implicit = match self.server.workers {
            0 => auto_workers(),
            n => n,
        };
        crate::sandbox::engines::targets(&self.sandbox.engines, implicit)
    }
}

/// The automatic worker count: twice the cores, at least 4 (see [`ServerSettings::workers`]).
fn auto_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_mul(2))
        .unwrap_or(1)
        .max(4)
}

/// Accepts a string or a bare number (an environment value like `1000` arrives as a number)
/// as text, so `SKILL_VERIFIER_SANDBOX__USER=1000` means the string "1000".
pub fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        U(u64),
        I(i64),
    }
    Ok(match Text::deserialize(d)? {
        Text::S(s) => s,
        Text::U(n) => n.to_string(),
        Text::I(n) => n.to_string(),
    })
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// `value` must lie in `min..=max`; the bounds say what "absurd" means for each key.
fn check(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            reason: format!("{value} is outside the allowed range {min}..={max}"),
        })
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The sandbox policy: every limit present and sane, never root, never the host's network.
fn validate_sandbox(p: &Policy) -> Result<(), ConfigError> {
    crate::sandbox::engines::validate(&p.engines).map_err(|(key, reason)| invalid(key, reason))?;
    let mode = match crate::sandbox::NetworkMode::parse(&p.network) {
        Some(mode) => mode,
        None => {
            return Err(invalid(
                "sandbox.network",
                format!(
                    "{:?} is not one of none, observe, allowlist (a host or bridge network \
                     would give untrusted code a route of its own)",
                    p.network
                ),
            ))
        }
    };
    // gVisor's own network stack fails on this kind of engine (runsc with
    // --network=none only), and the sink's trap is the host kernel's netfilter, which a
    // runsc sandbox does not go through: refuse rather than silently downgrade.
    if mode != crate::sandbox::NetworkMode::None && p.runtime_name() == "runsc" {
        return Err(invalid(
            "sandbox.network",
            format!(
                "{:?} needs the runc tier: under gVisor (runsc) only network = \"none\" works \
                 here; set sandbox.network = \"none\" or sandbox.isolation = \"runc\"",
                p.network
            ),
        ));
    }
    if mode != crate::sandbox::NetworkMode::None
        && (p.sink_image.trim().is_empty() || p.sink_image.contains(char::is_whitespace))
    {
        return Err(invalid(
            "sandbox.sink_image",
            format!("{:?} is not an image reference", p.sink_image),
        ));
    }
    match p.dry_run.as_str() {
        "smoke" | "always" | "never" => {}
        other => {
            return Err(invalid(
                "sandbox.dry_run",
                format!("{other:?} is not one of smoke, always, never"),
            ))
        }
    }
    check(
        "sandbox.dry_run_timeout_secs",
        p.dry_run_timeout_secs,
        1,
        600,
    )?;
    check(
        "sandbox.dry_run_max_scripts",
        p.dry_run_max_scripts as u64,
        0,
        256,
    )?;
    validate_user(&p.user)?;
    for runtime in crate::package::Runtime::ALL {
        match p.images.get(&runtime) {
            Some(image) if !image.trim().is_empty() && !image.contains(char::is_whitespace) => {}
            Some(image) => {
                return Err(invalid(
                    "sandbox.images",
                    format!("runtime {runtime} has an invalid image reference {image:?}"),
                ))
            }
            None => {
                return Err(invalid(
                    "sandbox.images",
                    format!("runtime {runtime} has no image; set sandbox.images.{runtime}"),
                ))
            }
        }
    }
    check(
        "sandbox.timeout_secs",
        p.timeout_secs,
        1,
        p.max_timeout_secs.max(1),
    )?;
    check("sandbox.max_timeout_secs", p.max_timeout_secs, 1, 86_400)?;
    check("sandbox.memory_bytes", p.memory_bytes, 16 * MIB, 256 * GIB)?;
    if !(p.cpus.is_finite() && p.cpus >= 0.01 && p.cpus <= 1024.0) {
        return Err(invalid(
            "sandbox.cpus",
            format!("{} is outside the allowed range 0.01..=1024", p.cpus),
        ));
    }
    // A pids limit of 0 or -1 means "unlimited" to the engine: a fork bomb's dream.
    if !(8..=1_000_000).contains(&p.pids) {
        return Err(invalid(
            "sandbox.pids",
            format!("{} is outside the allowed range 8..=1000000", p.pids),
        ));
    }
    check("sandbox.output_bytes", p.output_bytes, KIB, GIB)?;
    check(
        "sandbox.output_kill_bytes",
        p.output_kill_bytes,
        p.output_bytes,
        16 * GIB,
    )?;
    check("sandbox.work_bytes", p.work_bytes, MIB, 64 * GIB)?;
    check("sandbox.tmp_bytes", p.tmp_bytes, MIB, 64 * GIB)?;
    check("sandbox.shm_bytes", p.shm_bytes, 64 * KIB, 64 * GIB)?;
    check("sandbox.nofile", p.nofile, 16, 1 << 20)?;
    check("sandbox.fsize_bytes", p.fsize_bytes, MIB, 1 << 50)?;
    check("sandbox.log_bytes", p.log_bytes, KIB, GIB)?;
    check("sandbox.kill_grace_secs", p.kill_grace_secs, 0, 600)?;
    match p.log_driver.as_str() {
        "none" | "json-file" | "local" => {}
        other => {
            return Err(invalid(
                "sandbox.log_driver",
                format!("{other:?} is not one of none, json-file, local"),
            ))
        }
    }
    if let Some(runtime) = &p.oci_runtime {
        if runtime.is_empty()
            || !runtime
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "sandbox.oci_runtime",
                format!("{runtime:?} is not a runtime name"),
            ));
        }
    }
    Ok(())
}

/// The test user must be a numeric, non-root `uid[:gid]`: a name is resolved inside an image
/// we do not control, and uid or gid 0 in any spelling (`0`, `00`, `root`, `0:0`) is root.
fn validate_user(user: &str) -> Result<(), ConfigError> {
    let key = "sandbox.user";
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    for (what, part) in [("uid", uid), ("gid", gid)] {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                key,
                format!("{user:?}: the {what} must be a number (e.g. \"65534:65534\")"),
            ));
        }
        match part.parse::<u32>() {
            Ok(0) => {
                return Err(invalid(
                    key,
                    format!("{user:?}: {what} 0 is root; tests never run as root"),
                ))
            }
            Ok(_) => {}
            Err(_) => return Err(invalid(key, format!("{user:?}: the {what} is too large"))),
        }
    }
    Ok(())
}

fn validate_package(l: &Limits) -> Result<(), ConfigError> {
    check("package.archive_bytes", l.archive_bytes, 1, 64 * GIB)?;
    check("package.unpacked_bytes", l.unpacked_bytes, 1, 256 * GIB)?;
    check("package.entries", l.entries, 1, 10_000_000)?;
    check("package.ratio", l.ratio, 1, 1_000_000)?;
    check("package.depth", l.depth as u64, 1, 4096)?;
    check("package.component_bytes", l.component_bytes as u64, 1, 4096)?;
    check("package.skill_md_bytes", l.skill_md_bytes, 64, 64 * MIB)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_no_config_and_redacts_tokens() {
        let mut s = Settings::load(None).unwrap();
        assert_eq!(s.server.queue_capacity, 1000);
        s.server.tokens = vec!["hunter2".into()];
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn attest_tcb_policy_and_pccs_url_are_validated_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let s = Settings::load(None).unwrap();
        assert_eq!(s.attest.tcb_policy, vec!["UpToDate".to_string()]);
        for (toml, key) in [
            (
                "[attest]\ntcb_policy = [\"UpToDat\"]\n",
                "attest.tcb_policy",
            ),
            (
                "[attest]\ntcb_policy = [\"Revoked\"]\n",
                "attest.tcb_policy",
            ),
            ("[attest]\ntcb_policy = []\n", "attest.tcb_policy"),
            ("[attest]\npccs_url = \"ftp://x\"\n", "attest.pccs_url"),
        ] {
            std::fs::write(&file, toml).unwrap();
            let err = Settings::load(Some(&file)).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        std::fs::write(
            &file,
            "[attest]\ntcb_policy = [\"UpToDate\", \"SWHardeningNeeded\"]\npccs_url = \"https://pccs.example:8081\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.attest.tcb_policy.len(), 2);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[server]\nqueue_capacity = 5\nworkers = 3\n[sandbox]\ntimeout_secs = 9\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("SKILL_VERIFIER_SERVER__WORKERS", "7");
            let s = Settings::load(Some(&file)).unwrap();
            assert_eq!(s.server.queue_capacity, 5);
            assert_eq!(s.server.workers, 7);
            assert_eq!(s.sandbox.timeout_secs, 9);
            Ok(())
        });
    }
}

#[cfg(test)]
mod store_settings_tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn the_store_url_comes_from_env_beside_the_store_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[store]\nlease_secs = 60\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "SKILL_VERIFIER_STORE",
                "postgres://sv:pw-hunter2@127.0.0.1:55432/sv",
            );
            jail.set_env("SKILL_VERIFIER_STORE__HEARTBEAT_SECS", "5");
            let s = Settings::load(Some(&file)).unwrap();
            assert_eq!(
                s.store.postgres_url(),
                Some("postgres://sv:pw-hunter2@127.0.0.1:55432/sv")
            );
            assert_eq!((s.store.lease_secs, s.store.heartbeat_secs), (60, 5));
            let debug = format!("{s:?}");
            assert!(!debug.contains("pw-hunter2"), "{debug}");
            assert!(debug.contains("sv:***@127.0.0.1:55432/sv"), "{debug}");
            Ok(())
        });
        // The short form: a bare URL.
        std::fs::write(&file, "store = \"postgresql://h/db\"\n").unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.store.postgres_url(), Some("postgresql://h/db"));
        assert_eq!(s.store.lease_secs, 30);
    }

    #[test]
    fn bad_store_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        for (toml, key) in [
            ("store = \"mysql://x\"\n", "`store`"),
            ("[store]\nlease_secs = 0\n", "store.lease_secs"),
            (
                "[store]\nlease_secs = 30\nheartbeat_secs = 20\n",
                "store.heartbeat_secs",
            ),
            ("[store]\nheartbeat_secs = 0\n", "store.heartbeat_secs"),
        ] {
            std::fs::write(&file, toml).unwrap();
            let err = Settings::load(Some(&file)).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        assert_eq!(Settings::default().store.postgres_url(), None);
    }

    #[test]
    fn webhook_settings_are_validated_and_the_secret_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        for (toml, key) in [
            ("[webhooks]\nurl = \"ftp://x\"\n", "webhooks.url"),
            (
                "[webhooks]\nsecret = \"whsec_c2hvcnQ=\"\n",
                "webhooks.secret",
            ),
            ("[webhooks]\nsecret = \"whsec_***\"\n", "webhooks.secret"),
            ("[webhooks]\nmax_attempts = 0\n", "webhooks.max_attempts"),
            ("[webhooks]\ntimeout_secs = 0\n", "webhooks.timeout_secs"),
        ] {
            std::fs::write(&file, toml).unwrap();
            let err = Settings::load(Some(&file)).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        std::fs::write(
            &file,
            "[webhooks]\nurl = \"https://hooks.example/sv\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.webhooks.hmac_key().unwrap().len(), 24);
        assert!(!format!("{s:?}").contains("MfKQ9r8G"));
    }

    #[test]
    fn urls_lose_their_password_in_logs() {
        assert_eq!(redact_url("postgres://u:p@h:1/d"), "postgres://u:***@h:1/d");
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url("postgres://h/d"), "postgres://h/d");
    }
}

#[cfg(test)]
mod validation_tests {
    use super::*;

    fn with(f: impl FnOnce(&mut Settings)) -> Result<(), ConfigError> {
        let mut s = Settings::default();
        f(&mut s);
        s.validate()
    }

    fn refused_key(f: impl FnOnce(&mut Settings)) -> &'static str {
        match with(f) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn root_in_any_spelling_is_refused() {
        for user in [
            "0",
            "00",
            "root",
            "0:0",
            "root:root",
            "1000:0",
            "0:1000",
            "",
            ":",
            "x:1",
        ] {
            assert_eq!(
                refused_key(|s| s.sandbox.user = user.into()),
                "sandbox.user",
                "{user:?}"
            );
        }
        with(|s| s.sandbox.user = "1000".into()).unwrap();
        with(|s| s.sandbox.user = "1000:1001".into()).unwrap();
    }

    #[test]
    fn a_network_other_than_the_three_modes_is_refused() {
        for net in ["host", "bridge", "container:abc", "", "Observe"] {
            assert_eq!(
                refused_key(|s| s.sandbox.network = net.into()),
                "sandbox.network"
            );
        }
    }

    #[test]
    fn gvisor_with_a_network_is_refused_and_with_none_accepted() {
        for net in ["observe", "allowlist"] {
            assert_eq!(
                refused_key(|s| {
                    s.sandbox.network = net.into();
                    s.sandbox.isolation = crate::sandbox::Isolation::Gvisor;
                }),
                "sandbox.network"
            );
        }
        let mut s = Settings::default();
        s.sandbox.network = "none".into();
        s.sandbox.isolation = crate::sandbox::Isolation::Gvisor;
        s.validate().unwrap();
    }

    #[test]
    fn zero_or_absurd_limits_are_refused_by_key() {
        assert_eq!(
            refused_key(|s| s.sandbox.memory_bytes = 0),
            "sandbox.memory_bytes"
        );
        assert_eq!(
            refused_key(|s| s.sandbox.memory_bytes = u64::MAX),
            "sandbox.memory_bytes"
        );
        assert_eq!(refused_key(|s| s.sandbox.pids = 0), "sandbox.pids");
        assert_eq!(refused_key(|s| s.sandbox.pids = -1), "sandbox.pids");
        assert_eq!(refused_key(|s| s.sandbox.cpus = 0.0), "sandbox.cpus");
        assert_eq!(refused_key(|s| s.sandbox.cpus = f64::NAN), "sandbox.cpus");
        assert_eq!(
            refused_key(|s| s.sandbox.timeout_secs = 0),
            "sandbox.timeout_secs"
        );
        assert_eq!(
            refused_key(|s| s.sandbox.output_bytes = 0),
            "sandbox.output_bytes"
        );
        assert_eq!(
            refused_key(|s| s.sandbox.work_bytes = 0),
            "sandbox.work_bytes"
        );
        assert_eq!(
            refused_key(|s| s.server.queue_capacity = 0),
            "server.queue_capacity"
        );
        assert_eq!(refused_key(|s| s.package.entries = 0), "package.entries");
    }

    #[test]
    fn a_runtime_without_an_image_is_refused() {
        let key = refused_key(|s| {
            s.sandbox.images.remove(&crate::package::Runtime::Node);
        });
        assert_eq!(key, "sandbox.images");
        let err = with(|s| {
            s.sandbox.images.remove(&crate::package::Runtime::Node);
        })
        .unwrap_err();
        assert!(err.to_string().contains("node"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn load_refuses_a_bad_environment_value_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SKILL_VERIFIER_SANDBOX__USER", "0:0");
            let err = Settings::load(None).unwrap_err();
            assert!(err.to_string().contains("sandbox.user"), "{err}");
            Ok(())
        });
    }
}
