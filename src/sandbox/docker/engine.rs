//! Engine calls with typed errors: every call the runner makes to the Docker engine goes
//! through here, each under its own deadline, and each failure becomes the
//! [`SandboxError`] variant of its operation with bollard's error kept as the source.
//!
//! The engine's answers that carry meaning are decided here, once, by HTTP status code:
//! 404 (no such image or container), 409 (conflict: not running, removal already in
//! progress), 304 (not modified: already started or stopped). Nothing anywhere matches the
//! engine's message text.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::container::AttachContainerResults;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptions, EventsOptionsBuilder,
    InspectContainerOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;

use crate::sandbox::{EngineTarget, SandboxError};

/// Deadline for one ordinary API call (create, start, inspect, remove, ...).
pub(super) const API_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for a health probe: `/health` must answer promptly even when the engine hangs.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for connecting (the first ping).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for one signal: a kill runs in its own task beside the drain (never inline), so
/// this only bounds how long that task lives.
pub(super) const KILL_TIMEOUT: Duration = Duration::from_secs(30);
/// bollard's own request timeout covers only the wait for response headers, and it is
/// shared by every call. Every call here has its own deadline (above, or the run's timeout),
/// so bollard's is set out of the way: a long test must never be cut by a client timeout.
pub(super) const CLIENT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// HTTP 304: the container is already in the asked-for state.
const NOT_MODIFIED: u16 = 304;
/// HTTP 404: no such image or container.
const NOT_FOUND: u16 = 404;
/// HTTP 409: conflict (not running; removal already in progress).
const CONFLICT: u16 = 409;

/// The engine's HTTP status, when the error is an answer from the engine.
pub(crate) fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's reply in one line, for an error's text (the error keeps the source too).
pub(crate) fn reply(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// Runs `fut` under `deadline`: the outer error is the timeout, the inner one the engine's.
pub(super) async fn within<T>(
    operation: &'static str,
    deadline: Duration,
    fut: impl Future<Output = Result<T, BollardError>>,
) -> Result<Result<T, BollardError>, SandboxError> {
    tokio::time::timeout(deadline, fut)
        .await
        .map_err(|_| SandboxError::Timeout {
            operation,
            secs: deadline.as_secs(),
        })
}

/// Connects to `target` and checks that the engine answers (`GET /_ping`). A TLS engine's
/// files are checked first, each named in the error; the scheme decides the transport,
/// never an inherited `DOCKER_TLS_VERIFY`.
///
/// No version negotiation: bollard 0.21 sends every request without a `/vX.Y` prefix, so
/// the engine answers each at its own API version whatever bollard's client version says
/// (20.10 speaks 1.41; the suite runs against it). Negotiating costs a `GET /version`,
/// about 5 ms here, since the engine asks containerd and runc for their versions to
/// answer it; a ping is about 0.3 ms, and it is on the daemon-less `verify`'s critical
/// path.
pub(super) async fn connect(target: &EngineTarget) -> Result<Docker, SandboxError> {
    let timeout = CLIENT_TIMEOUT.as_secs();
    let docker = match (&target.tls, target.host.split_once("://")) {
        (Some(tls), _) => {
            tls.check().map_err(|message| SandboxError::EngineTls {
                engine: target.name.clone(),
                message,
            })?;
            Docker::connect_with_ssl(
                &target.host,
                &tls.key,
                &tls.cert,
                &tls.ca,
                timeout,
                bollard::API_DEFAULT_VERSION,
            )
        }
        (None, Some(("unix", _))) => {
            Docker::connect_with_unix(&target.host, timeout, bollard::API_DEFAULT_VERSION)
        }
        (None, _) => Docker::connect_with_http(&target.host, timeout, bollard::API_DEFAULT_VERSION),
    }
    .map_err(SandboxError::Connect)?;
    within("connect", CONNECT_TIMEOUT, docker.ping())
        .await?
        .map_err(SandboxError::Connect)?;
    Ok(docker)
}

/// The image's labels (`Config.Labels`), or `ImageMissing` on 404.
pub(super) async fn image_labels(
    docker: &Docker,
    image: &str,
) -> Result<(String, HashMap<String, String>), SandboxError> {
    match within("inspect image", API_TIMEOUT, docker.inspect_image(image)).await? {
        Ok(info) => {
            let id = info.id.ok_or_else(|| SandboxError::ImageMissing {
                image: image.to_string(),
            })?;
            let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
            Ok((id, labels))
        }
        Err(e) if status(&e) == Some(NOT_FOUND) => Err(SandboxError::ImageMissing {
            image: image.to_string(),
        }),
        Err(source) => Err(SandboxError::InspectImage {
            image: image.to_string(),
            source,
        }),
    }
}

/// `GET /_ping`.
pub(super) async fn ping(docker: &Docker) -> Result<(), SandboxError> {
    within("ping", PING_TIMEOUT, docker.ping())
        .await?
        .map(|_| ())
        .map_err(SandboxError::Ping)
}

/// The OCI runtimes the engine has registered (`GET /info`, `Runtimes`).
pub(super) async fn runtimes(docker: &Docker) -> Result<Vec<String>, SandboxError> {
    let info = within("engine info", API_TIMEOUT, docker.info())
        .await?
        .map_err(SandboxError::EngineInfo)?;
    Ok(info.runtimes.unwrap_or_default().into_keys().collect())
}

/// The image's ID (`sha256:...`), or `ImageMissing` on 404.
pub(super) async fn image_id(docker: &Docker, image: &str) -> Result<String, SandboxError> {
    match within("inspect image", API_TIMEOUT, docker.inspect_image(image)).await? {
        Ok(info) => info.id.ok_or_else(|| SandboxError::ImageMissing {
            image: image.to_string(),
        }),
        Err(e) if status(&e) == Some(NOT_FOUND) => Err(SandboxError::ImageMissing {
            image: image.to_string(),
        }),
        Err(source) => Err(SandboxError::InspectImage {
            image: image.to_string(),
            source,
        }),
    }
}

/// Creates a container; a 404 means the image is missing.
pub(super) async fn create(
    docker: &Docker,
    image: &str,
    body: ContainerCreateBody,
) -> Result<String, SandboxError> {
    match within(
        "create container",
        API_TIMEOUT,
        docker.create_container(None::<CreateContainerOptions>, body),
    )
    .await?
    {
        Ok(c) => Ok(c.id),
        Err(e) if status(&e) == Some(NOT_FOUND) => Err(SandboxError::ImageMissing {
            image: image.to_string(),
        }),
        Err(source) => Err(SandboxError::CreateContainer {
            image: image.to_string(),
            source,
        }),
    }
}

/// Attaches to stdin, stdout and stderr (streams only, no logs replay).
pub(super) async fn attach(
    docker: &Docker,
    id: &str,
) -> Result<AttachContainerResults, SandboxError> {
    let options = AttachContainerOptionsBuilder::new()
        .stream(true)
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .logs(false)
        .build();
    within(
        "attach container",
        API_TIMEOUT,
        docker.attach_container(id, Some(options)),
    )
    .await?
    .map_err(|source| SandboxError::AttachContainer {
        id: id.to_string(),
        source,
    })
}

/// Starts a container; 304 (already started) is success.
pub(super) async fn start(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    match within(
        "start container",
        API_TIMEOUT,
        docker.start_container(id, None),
    )
    .await?
    {
        Ok(()) => Ok(()),
        Err(e) if status(&e) == Some(NOT_MODIFIED) => Ok(()),
        Err(source) => Err(SandboxError::StartContainer {
            id: id.to_string(),
            source,
        }),
    }
}

/// Sends `signal`; a container that is not running (409) or gone (404) needs nothing.
pub(super) async fn kill(docker: &Docker, id: &str, signal: &str) -> Result<(), SandboxError> {
    let options = KillContainerOptionsBuilder::new().signal(signal).build();
    match within(
        "kill container",
        KILL_TIMEOUT,
        docker.kill_container(id, Some(options)),
    )
    .await?
    {
        Ok(()) => Ok(()),
        Err(e) if matches!(status(&e), Some(CONFLICT | NOT_FOUND)) => Ok(()),
        Err(source) => Err(SandboxError::KillContainer {
            id: id.to_string(),
            source,
        }),
    }
}

/// Inspects a container.
pub(super) async fn inspect(
    docker: &Docker,
    id: &str,
) -> Result<ContainerInspectResponse, SandboxError> {
    within(
        "inspect container",
        API_TIMEOUT,
        docker.inspect_container(id, None::<InspectContainerOptions>),
    )
    .await?
    .map_err(|source| SandboxError::InspectContainer {
        id: id.to_string(),
        source,
    })
}

/// Whether the engine logged an `oom` event for container `id` between `since` and `until`
/// (Unix seconds; `until` may lie a little ahead, and the answer comes as soon as an event
/// does). The event log is the engine's own record of the kernel's OOM notification; a
/// failed query is "not seen", never an error: it only refines an outcome.
pub(super) async fn oom_logged(docker: &Docker, id: &str, since: f64, until: f64) -> bool {
    let filters = HashMap::from([
        ("container".to_string(), vec![id.to_string()]),
        ("event".to_string(), vec!["oom".to_string()]),
    ]);
    let options = EventsOptionsBuilder::new()
        .since(&format!("{since:.3}"))
        .until(&format!("{until:.3}"))
        .filters(&filters)
        .build();
    let mut events = docker.events(Some(options));
    let budget = Duration::from_secs_f64((until - since).max(0.0) + 2.0);
    matches!(
        tokio::time::timeout(budget, futures_util::StreamExt::next(&mut events)).await,
        Ok(Some(Ok(_)))
    )
}

/// Removes a container (force, with its volumes). Already gone (404) or already being
/// removed by another remover (409): either way it will not remain, so success.
pub(super) async fn remove(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match within(
        "remove container",
        API_TIMEOUT,
        docker.remove_container(id, Some(options)),
    )
    .await?
    {
        Ok(()) => Ok(()),
        Err(e) if matches!(status(&e), Some(NOT_FOUND | CONFLICT)) => Ok(()),
        Err(source) => Err(SandboxError::RemoveContainer {
            id: id.to_string(),
            source,
        }),
    }
}

/// Every container (running or not) carrying the label `key=value`, or just `key` when
/// `value` is `None`.
pub(super) async fn list_labelled(
    docker: &Docker,
    key: &str,
    value: Option<&str>,
) -> Result<Vec<ContainerSummary>, SandboxError> {
    let filter = match value {
        Some(v) => format!("{key}={v}"),
        None => key.to_string(),
    };
    let filters = HashMap::from([("label".to_string(), vec![filter])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    within(
        "list containers",
        API_TIMEOUT,
        docker.list_containers(Some(options)),
    )
    .await?
    .map_err(SandboxError::ListContainers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status_code: u16) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code,
            message: "whatever the engine says".into(),
        }
    }

    #[test]
    fn statuses_come_from_the_answer_not_its_text() {
        assert_eq!(status(&answer(404)), Some(NOT_FOUND));
        assert_eq!(status(&answer(409)), Some(CONFLICT));
        assert_eq!(status(&BollardError::RequestTimeoutError), None);
        assert_eq!(reply(&answer(500)), "whatever the engine says (HTTP 500)");
    }
}
