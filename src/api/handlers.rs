//! The route handlers. Each is thin: parse, call the scheduler or store, shape the answer.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiQuery, ErrorBody};
use super::views::{self, DockerHealth, Health, JobList, JobView, KeyView, Keys, StoreHealth};
use super::AppState;
use crate::ids::JobId;
use crate::jobs::{Cancelled, Submitted};
use crate::store::{JobRecord, JobStatus};

/// The job named in the path, or the API's 400/404.
async fn find_job(state: &AppState, id: &str) -> Result<(JobId, JobRecord), ApiError> {
    let id = parse_id(id)?;
    let job = state
        .scheduler
        .store()
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::job_not_found(id))?;
    Ok((id, job))
}

/// The envelope bytes of a finished job's signed result, or the API's 409 (still running) or
/// 404 (unknown, or ended without a signed result).
async fn signed_result(state: &AppState, id: &str) -> Result<Vec<u8>, ApiError> {
    let (id, job) = find_job(state, id).await?;
    if !job.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_finished",
            format!("job {id} is {}; poll GET /verify/{id}", job.status.as_str()),
        ));
    }
    let Some(att) = job.attestation else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_attestation",
            format!(
                "job {id} ended {} without a signed result",
                job.status.as_str()
            ),
        ));
    };
    Ok(state.scheduler.read_blob(att).await?)
}

fn parse_id(text: &str) -> Result<JobId, ApiError> {
    JobId::parse(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_job_id", e.to_string()))
}

/// Query of `POST /verify`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// `true` forces a new run even when a cached result matches.
    #[serde(default)]
    pub fresh: bool,
    /// A URL to POST the job JSON to on its terminal status, signed per Standard Webhooks
    /// (PostgreSQL store only). Loopback, private and link-local addresses are refused.
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// Submit a skill archive for verification.
#[utoipa::path(post, path = "/verify", params(VerifyQuery),
    request_body(content = Vec<u8>, description = "The archive (tar, tar.gz, zip, .skill) as the raw body, or multipart field `file` (with an optional text field `callback_url`, as the query parameter)", content_type = "application/octet-stream"),
    responses(
        (status = 202, description = "Queued", body = JobView),
        (status = 200, description = "Answered from the result cache: the earlier job", body = JobView),
        (status = 400, description = "No archive in the body, a malformed query or multipart body, or a refused `callback_url` (`callback_refused`, `webhooks_unavailable`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 408, description = "The upload stalled past the request timeout", body = ErrorBody),
        (status = 413, description = "Archive over the size limit", body = ErrorBody),
        (status = 415, description = "Not a tar, tar.gz or zip", body = ErrorBody),
        (status = 422, description = "Invalid package (specific code)", body = ErrorBody),
        (status = 429, description = "Queue full; see Retry-After", body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<VerifyQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    // A query callback is checked before the upload is read; a multipart one once it is.
    // Either way a refused callback creates no job.
    if let Some(url) = &query.callback_url {
        check_callback(&state, url).await?;
    }
    let (upload, fields) =
        super::upload::receive(req, state.scheduler.blobs(), state.archive_limit).await?;
    let webhooks = match (query.callback_url, fields.callback_url) {
        (Some(_), Some(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "callback_url is given both as a query parameter and as a multipart field",
        )),
        (Some(url), None) => Ok(vec![url]),
        (None, Some(url)) => check_callback(&state, &url).await.map(|()| vec![url]),
        (None, None) => Ok(Vec::new()),
    };
    // A refused callback leaves no upload behind.
    let webhooks = webhooks.inspect_err(|_| {
        let _ = std::fs::remove_file(&upload.path);
    })?;
    let submitted = state
        .scheduler
        .submit_with_webhooks(upload, query.fresh, &webhooks)
        .await?;
    let (status, mut view) = match submitted {
        Submitted::Accepted(job) => (StatusCode::ACCEPTED, JobView::from_record(&job)),
        Submitted::Cached(job) => (StatusCode::OK, JobView::from_record(&job)),
    };
    view.cached = status == StatusCode::OK;
    let location = HeaderValue::from_str(&view.links.self_).expect("ascii path");
    let mut resp = (status, Json(view)).into_response();
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

/// Refuses a callback URL: on SQLite (`webhooks_unavailable`), or by the SSRF guard
/// (`callback_refused`).
async fn check_callback(state: &AppState, url: &str) -> Result<(), ApiError> {
    if state.scheduler.store().kind() != crate::store::StoreKind::Postgres {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "webhooks_unavailable",
            "callbacks need the PostgreSQL store (serve --store postgres://...)",
        ));
    }
    super::webhooks::check_callback(url, state.webhooks.allow_private)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "callback_refused", e.to_string()))
}

/// A job.
#[utoipa::path(get, path = "/verify/{id}", params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
    responses((status = 200, body = JobView), (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let (_, job) = find_job(&state, &id).await?;
    Ok(Json(JobView::from_record(&state.scheduler.with_phase(job))))
}

/// A job's DSSE envelope.
#[utoipa::path(get, path = "/verify/{id}/attestation", params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
    responses((status = 200, description = "The DSSE envelope (application/json)", body = Object),
        (status = 400, description = "Not a job id", body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Not finished yet", body = ErrorBody)))]
pub async fn get_attestation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = signed_result(&state, &id).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
        .into_response())
}

/// The representation `GET /verify/{id}/findings` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FindingsFormat {
    /// The findings, verdict and policy as JSON.
    #[default]
    Json,
    /// A SARIF 2.1.0 log.
    Sarif,
}

/// Query of `GET /verify/{id}/findings`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindingsQuery {
    /// `json` (default) or `sarif`.
    pub format: Option<FindingsFormat>,
}

/// A finished job's findings, read from its signed attestation: JSON, or SARIF 2.1.0 with
/// `?format=sarif` (levels follow the daemon's current policy when it is the one attested).
#[utoipa::path(get, path = "/verify/{id}/findings",
    params(("id" = uuid::Uuid, Path, description = "Job id (UUID)"), FindingsQuery),
    responses((status = 200, description = "The findings, verdict and policy (or a SARIF 2.1.0 log)", body = views::FindingsView),
        (status = 400, description = "Not a job id, or an unknown format", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn get_findings(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<FindingsQuery>,
) -> Result<Response, ApiError> {
    let sarif = query.format.unwrap_or_default() == FindingsFormat::Sarif;
    let bytes = signed_result(&state, &id).await?;
    let statement = serde_json::from_slice::<crate::attest::dsse::Envelope>(&bytes)
        .ok()
        .and_then(|e| crate::attest::dsse::decode_base64(&e.payload))
        .and_then(|p| serde_json::from_slice::<crate::attest::statement::Statement>(&p).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "attestation_unreadable",
                format!("the stored attestation of job {id} does not decode"),
            )
        })?;
    let findings: Vec<crate::scan::Finding> = statement
        .predicate
        .findings
        .iter()
        .map(|f| f.to_scan())
        .collect();
    let scan = &state.scheduler.verifier().scan;
    if sarif {
        let body =
            crate::scan::sarif::to_sarif_json(&findings, scan.scanner.pack(), &scan.policy, "");
        return Ok((
            [(header::CONTENT_TYPE, "application/sarif+json")],
            Body::from(body),
        )
            .into_response());
    }
    Ok(Json(views::FindingsView {
        id: id.to_string(),
        counts: crate::scan::SeverityCounts::of(&findings),
        verdict: statement.predicate.verdict.clone(),
        policy: statement
            .predicate
            .policy
            .as_ref()
            .map(|p| serde_json::to_value(p).expect("plain data")),
        findings,
    })
    .into_response())
}

/// A job's captured stdout/stderr (bounded).
#[utoipa::path(get, path = "/verify/{id}/logs", params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
    responses((status = 200, description = "{stdout, stderr, stdout_sha256, stderr_sha256, output_truncated, limit_bytes}", body = Object),
        (status = 400, description = "Not a job id", body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn get_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, job) = find_job(&state, &id).await?;
    match job.logs {
        Some(logs) => {
            let bytes = state.scheduler.read_blob(logs).await?;
            Ok((
                [(header::CONTENT_TYPE, "application/json")],
                Body::from(bytes),
            )
                .into_response())
        }
        None if !job.status.is_finished() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_finished",
            format!("job {id} is {}", job.status.as_str()),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_logs",
            format!("job {id} ended {} before its test ran", job.status.as_str()),
        )),
    }
}

/// Cancel a queued or running job, or delete a finished one.
#[utoipa::path(delete, path = "/verify/{id}", params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
    responses((status = 200, description = "Deleted (queued or finished job)", body = views::Deleted),
        (status = 202, description = "Running job cancelled; the job as it stands", body = JobView),
        (status = 400, description = "Not a job id", body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Running, but not on this daemon; retry", body = ErrorBody)))]
pub async fn delete_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match state.scheduler.cancel(id).await? {
        Cancelled::NotFound => Err(ApiError::job_not_found(id)),
        Cancelled::NotHere => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!("job {id} is running but not on this daemon; retry shortly"),
        )),
        Cancelled::Deleted(status) => Ok(Json(views::Deleted {
            id: id.to_string(),
            deleted: true,
            status,
        })
        .into_response()),
        Cancelled::Cancelling => {
            // The container is killed at once; wait briefly so the answer usually shows the
            // final `cancelled` status.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let job = state.scheduler.store().get_job(id).await?;
                match job {
                    Some(job)
                        if job.status.is_finished() || tokio::time::Instant::now() >= deadline =>
                    {
                        return Ok((StatusCode::ACCEPTED, Json(JobView::from_record(&job)))
                            .into_response());
                    }
                    None => return Err(ApiError::job_not_found(id)),
                    Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
}

/// Query of `GET /jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let status = query.status;
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<i64>().ok().filter(|c| *c >= 0).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "cursor is not one we issued",
            )
        })?),
    };
    let limit = match query.limit {
        None => 50,
        Some(n @ 1..=200) => n,
        Some(n) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_limit",
                format!("limit {n} is outside 1..=200"),
            ))
        }
    };
    let page = state
        .scheduler
        .store()
        .list_jobs(status, cursor, limit)
        .await?;
    Ok(Json(JobList {
        jobs: page
            .jobs
            .into_iter()
            .map(|j| JobView::from_record(&state.scheduler.with_phase(j)))
            .collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// The verifier's public keys.
#[utoipa::path(get, path = "/keys", responses((status = 200, body = Keys)))]
pub async fn keys(State(state): State<AppState>) -> Json<Keys> {
    let own = state.keys.as_ref().clone();
    // A shared store has a key registry: every daemon's key, retired ones included.
    let registered = match state.scheduler.store().list_keys().await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, "reading the key registry failed; publishing this daemon's key only");
            Vec::new()
        }
    };
    if registered.is_empty() {
        return Json(own);
    }
    let mut keys: Vec<KeyView> = registered
        .into_iter()
        .map(|k| KeyView {
            keyid: k.key_id,
            algorithm: "ed25519".into(),
            public_key_pem: k.public_key_pem,
            instance: Some(k.instance),
            first_seen: Some(crate::store::rfc3339(k.first_seen)),
            retired_at: k.retired_at.map(crate::store::rfc3339),
        })
        .collect();
    // This daemon's own key is always published, even if its registration is not visible.
    for mine in own.keys {
        if !keys.iter().any(|k| k.keyid == mine.keyid) {
            keys.push(mine);
        }
    }
    Json(Keys {
        keys,
        quote_provider: own.quote_provider,
    })
}

/// How long `/health` waits for the engines' pings (each engine gets
/// [`crate::sandbox::engines::HEALTH_PING`] of it).
const PING_BUDGET: Duration = Duration::from_secs(3);

/// Liveness, with the reachability of every engine and of the store.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    let runner = state.scheduler.verifier().runner.clone();
    // Every engine is probed at once, each within PING_BUDGET.
    let engines = match tokio::time::timeout(PING_BUDGET, runner.engines()).await {
        Ok(engines) => engines,
        Err(_) => vec![crate::sandbox::EngineHealth {
            name: "engines".into(),
            transport: String::new(),
            reachable: false,
            error: Some(format!("no answer within {}s", PING_BUDGET.as_secs())),
            capacity: 0,
            running: 0,
        }],
    };
    let docker = match engines.iter().find(|e| e.reachable) {
        Some(_) => DockerHealth {
            reachable: true,
            error: None,
        },
        None => DockerHealth {
            reachable: false,
            error: Some(
                engines
                    .iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.name,
                            e.error.as_deref().unwrap_or("unreachable")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        },
    };
    let store = state.scheduler.store().clone();
    let store_health = match tokio::time::timeout(Duration::from_secs(3), store.ping()).await {
        Ok(Ok(())) => StoreHealth {
            kind: store.kind(),
            reachable: true,
            error: None,
        },
        Ok(Err(e)) => StoreHealth {
            kind: store.kind(),
            reachable: false,
            error: Some(e.to_string()),
        },
        Err(_) => StoreHealth {
            kind: store.kind(),
            reachable: false,
            error: Some("no answer within 3s".into()),
        },
    };
    let queue_depth = store.count_queued().await.unwrap_or(0);
    Json(Health {
        status: "ok".into(),
        version: crate::VERSION.into(),
        docker,
        engines,
        queue_depth,
        store: store_health,
    })
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "OpenMetrics text", body = String,
    content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = state.scheduler.metrics();
    for (status, n) in state.scheduler.store().count_by_status().await? {
        m.jobs
            .get_or_create(&crate::jobs::metrics::StatusLabel {
                status: status.as_str().into(),
            })
            .set(n as i64);
        if status == JobStatus::Queued {
            m.queue_depth.set(n as i64);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response())
}

/// The OpenAPI document.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::ApiDoc::document())
}

/// Answers unknown routes in the API's error shape.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Answers a wrong method in the API's error shape.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Builds the `/keys` answer.
pub fn keys_view(keyid: String, pem: String, quote_provider: &str) -> Keys {
    Keys {
        keys: vec![KeyView {
            keyid,
            algorithm: "ed25519".into(),
            public_key_pem: pem,
            instance: None,
            first_seen: None,
            retired_at: None,
        }],
        quote_provider: quote_provider.to_string(),
    }
}
