//! The network sink's container, from the runner's side (the sink itself is
//! [`crate::sink`]).
//!
//! For `observe` and `allowlist`, every test container has a sink: a container of the sink
//! image, created, attached and started **before** the test's, whose network namespace the
//! test joins. The pair is launched together (and pooled together), and removed together.
//!
//! - The sink runs as root with `CAP_NET_ADMIN` (to set its nftables trap) and
//!   `CAP_NET_BIND_SERVICE` (to answer DNS from port 53), nothing else; read-only rootfs,
//!   no-new-privileges, its own memory and process limits. The test container still has no
//!   capability at all and never runs as root, so it cannot touch the trap.
//! - `observe`: network mode `none` (no interface to the outside). `allowlist`: the engine's
//!   default `bridge` (the sink alone may leave, for allowed names). No per-job network is
//!   ever created, so the engine's address pools never run out in a burst.
//! - It carries the job's labels plus [`LABEL_ROLE`], so the reapers find it like any
//!   container of ours.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::sandbox::{ContainerSpec, NetworkMode, SandboxError};
use crate::sink::record::Report;
use crate::sink::{Config, READY};

use super::{engine, ContainerGuard};

/// Label on a sink container: `sink`.
pub const LABEL_ROLE: &str = "dev.skill-verifier.role";
/// How long a sink may take to set its trap.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a sink may take to report after its stdin closes.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The sink's own memory.
const SINK_MEMORY: i64 = 128 * 1024 * 1024;
/// The sink's own processes (its threads, `ip` and `nft` at start).
const SINK_PIDS: i64 = 64;
/// Descriptors: enough for thousands of trapped connections.
const SINK_NOFILE: i64 = 8192;
/// Bytes of the sink's stderr kept for an error message.
const STDERR_KEEP: usize = 4096;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, BollardError>> + Send>>;

/// A started sink, ready: its removal guard and its stdio.
pub(in crate::sandbox::docker) struct SinkRun {
    pub(super) guard: ContainerGuard,
    pub(super) id: String,
    input: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    output: Output,
    /// stdout bytes after the ready line not yet split into lines.
    pending: Vec<u8>,
    stderr: Vec<u8>,
}

/// The sink's create request for a test of `spec`.
fn sink_body(spec: &ContainerSpec, mode: NetworkMode) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.insert(LABEL_ROLE.to_string(), "sink".to_string());
    let mut cmd = vec![
        "/usr/local/bin/skill-verifier".to_string(),
        "sink".to_string(),
    ];
    if mode == NetworkMode::Allowlist {
        cmd.push("--egress".into());
    }
    let host_config = HostConfig {
        network_mode: Some(
            match mode {
                NetworkMode::Allowlist => "bridge",
                _ => "none",
            }
            .to_string(),
        ),
        memory: Some(SINK_MEMORY),
        memory_swap: Some(SINK_MEMORY),
        pids_limit: Some(SINK_PIDS),
        ulimits: Some(vec![bollard::models::ResourcesUlimits {
            name: Some("nofile".into()),
            soft: Some(SINK_NOFILE),
            hard: Some(SINK_NOFILE),
        }]),
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: Some(vec![
            "NET_ADMIN".to_string(),
            "NET_BIND_SERVICE".to_string(),
        ]),
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        readonly_rootfs: Some(true),
        // tini reaps `ip` and `nft`.
        init: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            "size=1048576,mode=1777,nosuid,nodev,noexec".to_string(),
        )])),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        // The sink is ours, and netfilter is the host kernel's: always the engine's runc.
        runtime: Some("runc".into()),
        auto_remove: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: spec.sink_image.clone(),
        entrypoint: Some(cmd),
        cmd: None,
        user: Some("0:0".into()),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Creates, attaches, starts the sink for `spec` and waits for its ready line.
pub(super) async fn launch(docker: &Docker, spec: &ContainerSpec) -> Result<SinkRun, SandboxError> {
    let mode = spec.network_mode();
    let image = spec.sink_image.clone().unwrap_or_default();
    let id = engine::create(docker, &image, sink_body(spec, mode)).await?;
    let guard = ContainerGuard {
        docker: docker.clone(),
        id: Some(id.clone()),
    };
    let io = engine::attach(docker, &id).await?;
    engine::start(docker, &id).await?;
    let mut sink = SinkRun {
        guard,
        id,
        input: Some(io.input),
        output: io.output,
        pending: Vec::new(),
        stderr: Vec::new(),
    };
    match tokio::time::timeout(READY_TIMEOUT, sink.line()).await {
        Ok(Some(line)) if line == READY => Ok(sink),
        Ok(Some(line)) => Err(sink.error(format!("said {line:?} instead of ready"))),
        Ok(None) => Err(sink.error("exited before it was ready".into())),
        Err(_) => Err(sink.error(format!("not ready within {} s", READY_TIMEOUT.as_secs()))),
    }
}

impl SinkRun {
    /// The next stdout line; `None` at the end of the stream.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..i]).trim().to_string());
            }
            match self.output.next().await? {
                Ok(LogOutput::StdOut { message }) => self.pending.extend_from_slice(&message),
                Ok(LogOutput::StdErr { message }) => {
                    let room = STDERR_KEEP.saturating_sub(self.stderr.len());
                    self.stderr
                        .extend_from_slice(&message[..message.len().min(room)]);
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    fn error(&self, what: String) -> SandboxError {
        let said = String::from_utf8_lossy(&self.stderr).trim().to_string();
        SandboxError::Sink {
            id: self.id.clone(),
            message: if said.is_empty() {
                what
            } else {
                format!("{what}; it said: {said}")
            },
        }
    }

    /// Sends the job's network settings.
    pub(super) async fn configure(&mut self, config: &Config) -> Result<(), SandboxError> {
        let mut line = serde_json::to_vec(config).map_err(|e| self.error(e.to_string()))?;
        line.push(b'\n');
        let Some(input) = self.input.as_mut() else {
            return Err(self.error("stdin already closed".into()));
        };
        let sent = tokio::time::timeout(REPORT_TIMEOUT, async {
            input.write_all(&line).await?;
            input.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(format!("sending its config: {e}"))),
            Err(_) => Err(self.error("sending its config timed out".into())),
        }
    }

    /// Closes the sink's stdin and reads its report.
    pub(super) async fn report(&mut self) -> Result<Report, SandboxError> {
        if let Some(mut input) = self.input.take() {
            let _ = tokio::time::timeout(REPORT_TIMEOUT, input.shutdown()).await;
        }
        let read = tokio::time::timeout(REPORT_TIMEOUT, async {
            while let Some(line) = self.line().await {
                if let Ok(report) = serde_json::from_str::<Report>(&line) {
                    return Some(report);
                }
            }
            None
        })
        .await;
        match read {
            Ok(Some(report)) => Ok(report),
            Ok(None) => Err(self.error("ended without a report".into())),
            Err(_) => Err(self.error(format!("no report within {} s", REPORT_TIMEOUT.as_secs()))),
        }
    }
}
