//! The run loop: from command delivery to the outcome of one container.
//!
//! The loop owns the output stream and the deadline, and nothing else may block it: every
//! engine call it needs while the container lives (SIGTERM, SIGKILL) runs in its own task
//! beside it, and feeding stdin is another task. A kill that waits for a drain that waits
//! for the kill was the flood bug this design removes: the engine does not finish a kill
//! while nobody reads the attach stream.
//!
//! - Output is counted as it arrives: up to `output_bytes` kept per stream, the rest
//!   discarded; past `output_kill_bytes` in total the container gets SIGKILL.
//! - The deadline is ours (`tokio::time`), counted from command delivery: on expiry SIGTERM,
//!   then SIGKILL after `kill_grace_secs`; cancellation sends SIGKILL at once.
//! - The exit is awaited beside the output, so a test that closes its stdout and keeps
//!   running still meets its deadline; after the exit, output still buffered is read for at
//!   most [`DRAIN_TIMEOUT`].
//!
//! So every run ends within `timeout + kill_grace + ` about a second of engine latency,
//! whatever the test does; a run the engine fails to stop within [`EXIT_TIMEOUT`] after
//! SIGKILL is an error, not an outcome.

use std::time::Duration;

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as BollardError;
use bollard::query_parameters::WaitContainerOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::digest::Sha256Digest;
use crate::package::TreeTar;
use crate::sandbox::spec::{READ_COMMAND_FAILED_MARKER, UNPACK_FAILED_EXIT, UNPACK_FAILED_MARKER};
use crate::sandbox::{ContainerSpec, RunOutcome, SandboxError};

use super::engine;
use super::feed::feed;

/// How long the container may take to go away after SIGKILL before we call the engine stuck.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// After the exit is known, how long to keep draining output the engine still has buffered.
/// With tini as PID 1 every process dies with the container, so the stream ends at once;
/// this only bounds an engine that keeps it open.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The exit code of a process killed by SIGKILL (128 + 9), as tini reports it.
const SIGKILL_EXIT: i64 = 137;
/// How long to wait for a late OOM event after an unexplained SIGKILL.
const OOM_EVENT_WAIT: f64 = 1.0;

/// Wall-clock seconds since the Unix epoch: the engine's event log is queried by them.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sends `signal` from a task of `kills`: the loop never awaits an engine call inline.
fn signal(kills: &mut JoinSet<()>, docker: &Docker, id: &str, signal: &'static str) {
    let (docker, id) = (docker.clone(), id.to_string());
    kills.spawn(async move {
        if let Err(e) = engine::kill(&docker, &id, signal).await {
            tracing::warn!(container = %id, signal, error = %e, "signal not delivered");
        }
    });
}

/// Everything between an attached container and its outcome; the caller removes the
/// container whatever this returns. `line` is the command line a warm container reads
/// first. `starting` is the container's start when it is still under way (a prelaunched
/// container): its stdin is fed meanwhile, and the engine holds the bytes until the
/// container reads them, so the container finds its command and tree the moment it runs.
/// The deadline starts once the container runs with its command delivered.
#[allow(clippy::too_many_arguments)]
pub(super) async fn drive(
    docker: &Docker,
    id: &str,
    spec: &ContainerSpec,
    io: AttachContainerResults,
    tree: &TreeTar,
    line: Option<Vec<u8>>,
    starting: Option<tokio::task::JoinHandle<Result<(), SandboxError>>>,
    cancel: CancellationToken,
) -> Result<RunOutcome, SandboxError> {
    let AttachContainerResults { mut output, input } = io;
    let tar = tokio::fs::File::open(&tree.path)
        .await
        .map_err(|source| SandboxError::ReadTree {
            path: tree.path.clone(),
            source,
        })?;

    // Waiting for the exit runs alongside reading output: a test that closes its stdout
    // and keeps running must still meet the deadline.
    let wait_options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(id, Some(wait_options));

    // Aborted when this function returns, on every path: an early error must not leave it
    // writing into a connection nobody reads.
    let mut feeder = AbortOnDropHandle::new(tokio::spawn(feed(line, tar, input)));
    if let Some(starting) = starting {
        match starting.await {
            Ok(result) => result?,
            // The start task was lost (aborted): start again; an engine that already
            // started the container answers 304, which is success.
            Err(_) => engine::start(docker, id).await?,
        }
    }
    let started = Instant::now();
    let started_wall = unix_now();
    let mut kills = JoinSet::new();

    let limits = &spec.limits;
    let mut stdout = Capture::new(limits.output_bytes);
    let mut stderr = Capture::new(limits.output_bytes);
    let mut phase = Phase::Running;
    // With an install step the first deadline is the install's; the test's starts at the
    // install's marker.
    let mut install = spec.install.as_ref().map(InstallWatch::new);
    let mut wake = started
        + Duration::from_secs(match &spec.install {
            Some(step) => step.timeout_secs,
            None => limits.timeout_secs,
        });
    let mut test_started = started;
    let mut timed_out = false;
    let mut cancelled = false;
    let mut output_done = false;
    let mut exited = false;
    let mut fed = false;
    let mut read_error = None;
    // Whether we sent any signal: an exit by SIGKILL is then ours, not the kernel's.
    let mut signalled = false;

    while !(output_done && exited) {
        tokio::select! {
            // biased: under an output flood the stream is always ready; the deadline and
            // cancellation must still win.
            biased;
            _ = cancel.cancelled(), if !cancelled && !exited => {
                cancelled = true;
                signalled = true;
                signal(&mut kills, docker, id, "SIGKILL");
                phase = Phase::Killed;
                wake = Instant::now() + EXIT_TIMEOUT;
            }
            _ = tokio::time::sleep_until(wake) => match phase {
                Phase::Running => {
                    match install.as_mut().filter(|w| w.exit_code.is_none()) {
                        Some(watch) => watch.timed_out = true,
                        None => timed_out = true,
                    }
                    signalled = true;
                    signal(&mut kills, docker, id, "SIGTERM");
                    phase = Phase::Terminating;
                    wake = Instant::now() + Duration::from_secs(limits.kill_grace_secs);
                }
                Phase::Terminating => {
                    signalled = true;
                    signal(&mut kills, docker, id, "SIGKILL");
                    phase = Phase::Killed;
                    wake = Instant::now() + EXIT_TIMEOUT;
                }
                // Exited, and the engine still holds output after the drain window:
                // stop reading; what we have is what the attestation gets.
                Phase::Draining => break,
                Phase::Killed => {
                    return Err(SandboxError::Timeout {
                        operation: "container exit after SIGKILL",
                        secs: EXIT_TIMEOUT.as_secs(),
                    })
                }
            },
            status = wait.next(), if !exited => {
                match status {
                    Some(Ok(_)) | None => {}
                    // A non-zero exit is an outcome; the code is read from inspect below.
                    Some(Err(BollardError::DockerContainerWaitError { .. })) => {}
                    Some(Err(source)) => {
                        return Err(SandboxError::WaitContainer { id: id.to_string(), source })
                    }
                }
                exited = true;
                if !output_done {
                    phase = Phase::Draining;
                    wake = Instant::now() + DRAIN_TIMEOUT;
                }
            }
            fed_result = &mut feeder, if !fed => {
                fed = true;
                let failure = match fed_result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(join) => Some(std::io::Error::other(join)),
                };
                // Our side could not read the tar: the run is void; stop it.
                if let Some(e) = failure {
                    read_error = Some(e);
                    if !exited && phase != Phase::Killed {
                        signalled = true;
                        signal(&mut kills, docker, id, "SIGKILL");
                        phase = Phase::Killed;
                        wake = Instant::now() + EXIT_TIMEOUT;
                    }
                }
            }
            // Reap finished signal tasks so the set does not grow.
            Some(_) = kills.join_next(), if !kills.is_empty() => {}
            item = output.next(), if !output_done => match item {
                None => output_done = true,
                Some(Ok(LogOutput::StdOut { message })) => stdout.push(&message),
                Some(Ok(LogOutput::StdErr { message })) => {
                    stderr.push(&message);
                    if let Some(watch) = install.as_mut().filter(|w| w.exit_code.is_none()) {
                        if let Some(code) = watch.scan(&message) {
                            watch.exit_code = Some(code);
                            watch.duration = started.elapsed();
                            test_started = Instant::now();
                            if phase == Phase::Running && !watch.timed_out {
                                wake = test_started + Duration::from_secs(limits.timeout_secs);
                            }
                        }
                    }
                }
                // Without a TTY the engine only sends stdout and stderr frames.
                Some(Ok(_)) => {}
                Some(Err(source)) => {
                    return Err(SandboxError::ReadOutput { id: id.to_string(), source })
                }
            },
        }
        // Past the hard cap the run is stopped: a flood would otherwise keep the daemon
        // busy discarding bytes until the timeout.
        let total = stdout.seen.saturating_add(stderr.seen);
        if total > limits.output_kill_bytes && matches!(phase, Phase::Running | Phase::Terminating)
        {
            signalled = true;
            signal(&mut kills, docker, id, "SIGKILL");
            phase = Phase::Killed;
            wake = Instant::now() + EXIT_TIMEOUT;
        }
    }
    let duration = test_started.elapsed();
    let install = install.map(|mut watch| {
        if watch.exit_code.is_none() {
            watch.duration = started.elapsed();
        }
        crate::sandbox::InstallOutcome {
            duration_ms: u64::try_from(watch.duration.as_millis()).unwrap_or(u64::MAX),
            exit_code: watch.exit_code,
            timed_out: watch.timed_out,
        }
    });
    if let Some(source) = read_error {
        return Err(SandboxError::ReadTree {
            path: tree.path.clone(),
            source,
        });
    }

    let info = engine::inspect(docker, id).await?;
    let runtime = info
        .host_config
        .as_ref()
        .and_then(|h| h.runtime.clone())
        .unwrap_or_default();
    let state = info.state.unwrap_or_default();
    let exit_code = state.exit_code.unwrap_or(-1);
    let mut oom_killed = state.oom_killed.unwrap_or(false);
    // The engine sets `OOMKilled` only when the kernel's OOM notification reaches it before
    // the exit does; under gVisor the two race, and a lost race leaves a memory hog looking
    // like an unexplained SIGKILL. A SIGKILL we did not send is checked against the engine's
    // event log, which records the notification whenever it comes (waiting briefly for a
    // late one). Only then: a test that kills itself gets no OOM it did not have.
    if !oom_killed && exit_code == SIGKILL_EXIT && !signalled {
        oom_killed =
            engine::oom_logged(docker, id, started_wall - 1.0, unix_now() + OOM_EVENT_WAIT).await;
    }

    if exit_code == UNPACK_FAILED_EXIT
        && !timed_out
        && !cancelled
        && (stderr.buf.starts_with(UNPACK_FAILED_MARKER.as_bytes())
            || stderr
                .buf
                .starts_with(READ_COMMAND_FAILED_MARKER.as_bytes()))
    {
        return Err(SandboxError::Unpack(
            String::from_utf8_lossy(&stderr.buf)
                .chars()
                .take(2000)
                .collect(),
        ));
    }

    Ok(RunOutcome {
        exit_code,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        timed_out,
        oom_killed,
        output_truncated: stdout.truncated || stderr.truncated,
        cancelled,
        stdout_sha256: Sha256Digest::of(&stdout.buf),
        stderr_sha256: Sha256Digest::of(&stderr.buf),
        stdout: stdout.buf,
        stderr: stderr.buf,
        image: spec.image.clone(),
        image_digest: info.image.unwrap_or_default(),
        oci_runtime: runtime,
        limits: spec.limits.clone(),
        network: None,
        install,
        engine: None,
    })
}

/// Watches stderr for the install step's marker line (`<marker><code>\n`), across chunk
/// boundaries, keeping a bounded tail.
struct InstallWatch {
    marker: Vec<u8>,
    tail: Vec<u8>,
    exit_code: Option<i64>,
    timed_out: bool,
    duration: Duration,
}

impl InstallWatch {
    /// Longest tail kept between chunks: the marker plus an exit code and a newline.
    const KEEP: usize = 160;

    fn new(step: &crate::sandbox::InstallStep) -> Self {
        Self {
            marker: step.marker().into_bytes(),
            tail: Vec::new(),
            exit_code: None,
            timed_out: false,
            duration: Duration::ZERO,
        }
    }

    /// The installer's exit code once the whole marker line has arrived.
    fn scan(&mut self, chunk: &[u8]) -> Option<i64> {
        self.tail.extend_from_slice(chunk);
        let found = self
            .tail
            .windows(self.marker.len())
            .position(|w| w == self.marker.as_slice());
        match found {
            Some(at) => {
                let rest = &self.tail[at + self.marker.len()..];
                let end = rest.iter().position(|b| *b == b'\n')?;
                let code = std::str::from_utf8(&rest[..end]).ok()?.trim().parse().ok();
                code.or(Some(-1))
            }
            None => {
                let keep = Self::KEEP.max(self.marker.len());
                if self.tail.len() > keep {
                    self.tail.drain(..self.tail.len() - keep);
                }
                None
            }
        }
    }
}

/// Where the run is in its shutdown sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the deadline.
    Running,
    /// SIGTERM sent; SIGKILL at `wake`.
    Terminating,
    /// SIGKILL sent; the engine must report the exit by `wake`.
    Killed,
    /// Exited; reading what output is left until `wake`.
    Draining,
}

/// One output stream, captured up to a cap and counted beyond it.
struct Capture {
    buf: Vec<u8>,
    cap: usize,
    seen: u64,
    truncated: bool,
}

impl Capture {
    fn new(cap: u64) -> Self {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        Self {
            buf: Vec::with_capacity(cap.min(64 * 1024)),
            cap,
            seen: 0,
            truncated: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.seen = self.seen.saturating_add(bytes.len() as u64);
        let room = self.cap.saturating_sub(self.buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_marker_is_found_across_chunks() {
        let step = crate::sandbox::InstallStep::new(5);
        let mut watch = InstallWatch::new(&step);
        let line = format!("pip says hi\n{}0\nthe test prints", step.marker());
        let bytes = line.as_bytes();
        let mut found = None;
        for chunk in bytes.chunks(7) {
            if let Some(code) = watch.scan(chunk) {
                found = Some(code);
                break;
            }
        }
        assert_eq!(found, Some(0));
        let mut other = InstallWatch::new(&crate::sandbox::InstallStep::new(5));
        assert_eq!(
            other.scan(line.as_bytes()),
            None,
            "another nonce's marker is not ours"
        );
        let mut failing = InstallWatch::new(&step);
        assert_eq!(
            failing.scan(format!("{}1\n", step.marker()).as_bytes()),
            Some(1)
        );
    }

    #[test]
    fn capture_keeps_the_cap_and_counts_the_rest() {
        let mut c = Capture::new(5);
        c.push(b"abc");
        c.push(b"defg");
        c.push(b"h");
        assert_eq!(c.buf, b"abcde");
        assert_eq!(c.seen, 8);
        assert!(c.truncated);
        let mut exact = Capture::new(3);
        exact.push(b"abc");
        assert!(!exact.truncated);
    }
}
