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
}

/// The daemon's HTTP side and its queue.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Worker count; 0 means one per core.
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
    /// Containers kept created (never started) ahead of demand per container shape
    /// (runtime × policy); 0 disables the warm pool.
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
            warm_containers: 2,
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AttestSettings {
    /// The quote provider.
    pub quote_provider: QuoteProviderKind,
    /// dstack guest agent endpoint (a socket path or URL); default: the well-known sockets.
    pub dstack_endpoint: Option<String>,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("loading configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

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
                .ignore(&["server", "token", "config"]),
        );
        fig.extract().map_err(|e| ConfigError(Box::new(e)))
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

    /// Worker count with 0 resolved to one per core.
    pub fn workers(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }
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
