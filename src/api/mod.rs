//! The `api` stage: the axum router and the daemon's entry point.
//!
//! - [`router`] builds the whole HTTP surface from an [`AppState`], so most tests are
//!   `oneshot` calls with no socket.
//! - [`Daemon::open`] assembles the daemon from [`Settings`] (data dir, keys, store, quote
//!   provider, Docker runner, scheduler, start-up recovery); [`Daemon::serve`] takes a bound
//!   listener and a shutdown future, so tests bind port 0 and stop it with a oneshot.
//!
//! Routes (DESIGN.md, "The API"): `POST /verify`, `GET|DELETE /verify/{id}`,
//! `GET /verify/{id}/attestation`, `GET /verify/{id}/logs`, `GET /jobs`, `GET /keys`,
//! `GET /health`, `GET /metrics`, `GET /openapi.json`.

pub mod error;
pub mod handlers;
pub mod upload;
pub mod views;
pub mod webhooks;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::attest::keys::Signer;
use crate::config::{ServerSettings, Settings};
use crate::jobs::{Metrics, Scheduler, SchedulerConfig, Verifier};
use crate::sandbox::Runner;
use crate::store::{Blobs, KeyRecord, PgStore, PgStoreOptions, SqliteStore, Store};

use error::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The scheduler (and through it the store, blobs, metrics, verifier).
    pub scheduler: Scheduler,
    /// Server settings (auth, CORS, timeouts).
    pub server: Arc<ServerSettings>,
    /// Largest archive accepted.
    pub archive_limit: u64,
    /// The `/keys` answer.
    pub keys: Arc<views::Keys>,
    /// Webhook settings (the callback guard reads `allow_private`).
    pub webhooks: Arc<crate::config::WebhookSettings>,
    /// SHA-256 of each configured token (compared digest to digest, so the comparison's
    /// timing says nothing about the token).
    token_digests: Arc<Vec<[u8; 32]>>,
}

impl AppState {
    /// State for a scheduler under these settings.
    pub fn new(
        scheduler: Scheduler,
        server: ServerSettings,
        archive_limit: u64,
        keys: views::Keys,
    ) -> Self {
        let token_digests = server
            .tokens
            .iter()
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        Self {
            scheduler,
            server: Arc::new(server),
            archive_limit,
            keys: Arc::new(keys),
            webhooks: Arc::new(crate::config::WebhookSettings::default()),
            token_digests: Arc::new(token_digests),
        }
    }
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "skill-verifier", description = "Runs an agent skill's tests in a locked-down sandbox and signs an in-toto/DSSE attestation of what happened."),
    paths(
        handlers::submit,
        handlers::get_job,
        handlers::get_attestation,
        handlers::get_logs,
        handlers::delete_job,
        handlers::list_jobs,
        handlers::get_findings,
        handlers::keys,
        handlers::health,
        handlers::metrics,
    ),
    components(schemas(views::JobView, views::JobList, views::FindingsView, views::Keys, views::Health, error::ErrorBody, handlers::FindingsFormat)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

impl ApiDoc {
    /// The document, with the crate version.
    pub fn document() -> utoipa::openapi::OpenApi {
        let mut doc = ApiDoc::openapi();
        doc.info.version = crate::VERSION.to_string();
        doc
    }
}

/// Routes that never need a token (operational endpoints).
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/metrics" | "/keys" | "/openapi.json")
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.token_digests.is_empty() || is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let writes = matches!(
        *req.method(),
        Method::POST | Method::DELETE | Method::PUT | Method::PATCH
    );
    if !writes && !state.server.auth_reads {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
    match presented {
        Some(d) if state.token_digests.contains(&d) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

async fn timeout_error(err: tower::BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request took too long and was cut off",
        )
    } else {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let cors = if state.server.cors_origins.is_empty() {
        None
    } else {
        let origins = if state.server.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::from(Any)
        } else {
            AllowOrigin::list(
                state
                    .server
                    .cors_origins
                    .iter()
                    .filter_map(|o| o.parse().ok()),
            )
        };
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        )
    };
    let timeout = Duration::from_secs(state.server.request_timeout_secs.max(1));
    // Multipart framing may add a little to the archive; the exact archive count happens
    // while streaming.
    let body_limit =
        usize::try_from(state.archive_limit.saturating_add(64 * 1024)).unwrap_or(usize::MAX);
    Router::new()
        .route(
            "/verify",
            // DefaultBodyLimit bounds the multipart parser; a raw body is counted while it
            // streams (upload.rs), so both answer 413 in the API's error shape.
            post(handlers::submit).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route("/verify/{id}", get(handlers::get_job).delete(handlers::delete_job))
        .route("/verify/{id}/attestation", get(handlers::get_attestation))
        .route("/verify/{id}/logs", get(handlers::get_logs))
        .route("/verify/{id}/findings", get(handlers::get_findings))
        .route("/jobs", get(handlers::list_jobs))
        .route("/keys", get(handlers::keys))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(timeout_error))
                .timeout(timeout),
        )
        .layer(tower::util::option_layer(cors))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
        .with_state(state)
}

/// An assembled daemon: state, scheduler, settings.
pub struct Daemon {
    /// The router's state.
    pub state: AppState,
    /// The scheduler.
    pub scheduler: Scheduler,
    settings: Settings,
    workers: usize,
}

/// The daemon instance id: stable per data dir, so a restart on the same data dir reaps the
/// containers its earlier run left (they carry this id as a label).
fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

impl Daemon {
    /// Opens everything under the settings' data dir and recovers from an earlier run.
    pub async fn open(settings: Settings, runner: Arc<dyn Runner>) -> anyhow::Result<Self> {
        let data_dir = settings.data_dir();
        crate::store::blobs::create_private_dir(&data_dir)
            .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
        let signer =
            Signer::load_or_create(&data_dir.join("keys")).context("loading the signing key")?;
        let quotes = crate::attest::quote::from_settings(&settings.attest)
            .context("setting up the quote provider")?;
        let instance = instance_id(&data_dir)?;
        let store: Arc<dyn Store> = match settings.store.postgres_url() {
            Some(url) => {
                let store = PgStore::connect(
                    url,
                    PgStoreOptions {
                        owner: instance.clone(),
                        lease: Duration::from_secs(settings.store.lease_secs),
                        pool_size: settings.workers() + 4,
                    },
                )
                .await
                .context("opening the PostgreSQL store")?
                .with_default_webhook(settings.webhooks.url.clone());
                tracing::info!(url = %crate::config::redact_url(url), instance, "job store: PostgreSQL");
                Arc::new(store)
            }
            None => {
                if settings.webhooks.url.is_some() {
                    anyhow::bail!(
                        "[webhooks] url needs the PostgreSQL store (its outbox): set store = \"postgres://...\""
                    );
                }
                Arc::new(SqliteStore::open(&data_dir.join("skill-verifier.db"))?)
            }
        };
        // The key registry: every daemon on a shared store publishes this key too.
        store
            .register_key(KeyRecord {
                key_id: signer.key_id(),
                public_key_pem: signer.public_key_pem(),
                instance: instance.clone(),
                first_seen: time::OffsetDateTime::now_utc(),
                retired_at: None,
            })
            .await
            .context("registering the signing key in the store")?;
        let blobs = Blobs::open(data_dir.join("blobs"))?;
        // Versions before 0.2 unpacked packages under `work/`; nothing is written there now.
        let legacy_work = data_dir.join("work");
        if legacy_work.exists() {
            std::fs::remove_dir_all(&legacy_work)
                .with_context(|| format!("removing {}", legacy_work.display()))?;
        }
        let keys = handlers::keys_view(signer.key_id(), signer.public_key_pem(), quotes.kind());
        // The rule pack is compiled and the policy loaded once, here: a bad rule file or
        // policy stops start-up with its file, line and reason.
        let (scanner, scan_policy) = settings
            .scan
            .load(None)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("loading the scan rules and policy")?;
        let verifier = Verifier {
            runner,
            signer: Arc::new(signer),
            quotes: quotes.clone(),
            policy: settings.sandbox.clone(),
            instance,
            scan: Arc::new(crate::scan::Stage {
                scanner,
                policy: scan_policy,
            }),
            deps: Arc::new(crate::deps::Deps::new(
                settings.deps.clone(),
                settings.deps_cache_dir(),
            )),
        };
        let scheduler = Scheduler::new(
            store,
            blobs,
            verifier,
            SchedulerConfig {
                limits: settings.package.clone(),
                queue_capacity: settings.server.queue_capacity as u64,
                quote_kind: quotes.kind().to_string(),
            },
            Arc::new(Metrics::new()),
        );
        scheduler.recover().await?;
        let mut state = AppState::new(
            scheduler.clone(),
            settings.server.clone(),
            settings.package.archive_bytes,
            keys,
        );
        state.webhooks = Arc::new(settings.webhooks.clone());
        let workers = settings.workers();
        Ok(Self {
            state,
            scheduler,
            settings,
            workers,
        })
    }

    /// Overrides the worker count (0: accept jobs but run none, for tests of the queue).
    pub fn set_workers(&mut self, workers: usize) {
        self.workers = workers;
    }

    /// Retires a key in the store's key registry (it stays published with `retired_at`);
    /// refuses this daemon's own signing key. False when no such active key exists (or the
    /// store keeps no registry: SQLite publishes only the daemon's own key).
    pub async fn retire_key(&self, key_id: &str) -> anyhow::Result<bool> {
        if self.state.keys.keys.iter().any(|k| k.keyid == key_id) {
            anyhow::bail!("{key_id} is this daemon's own signing key; rotate it first (keygen)");
        }
        Ok(self.scheduler.store().retire_key(key_id).await?)
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, lets running
    /// jobs finish within the grace period and re-queues the rest.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let workers = self.scheduler.spawn_workers(self.workers);
        let heartbeat = self
            .scheduler
            .spawn_heartbeat(Duration::from_secs(self.settings.store.heartbeat_secs));
        let retention = (self.settings.store.retention_days > 0).then(|| {
            let scheduler = self.scheduler.clone();
            let max_age = Duration::from_secs(self.settings.store.retention_days * 86_400);
            tokio::spawn(async move {
                // At start, then hourly; on a shared store every daemon runs it (the deletes
                // are idempotent) and sweeps its own blob directory.
                let mut tick = tokio::time::interval(Duration::from_secs(3_600));
                loop {
                    tick.tick().await;
                    match scheduler.collect_garbage(max_age).await {
                        Ok(c) => tracing::info!(
                            jobs = c.jobs,
                            store_blobs = c.store_blobs,
                            local_blobs = c.local_blobs,
                            "retention: collected"
                        ),
                        Err(e) => tracing::error!(error = %e, "retention failed"),
                    }
                }
            })
        });
        // The outbox lives in PostgreSQL; every daemon on it delivers.
        let webhook_worker = (self.scheduler.store().kind() == crate::store::StoreKind::Postgres)
            .then(|| {
                webhooks::spawn_worker(self.scheduler.clone(), self.settings.webhooks.clone())
            });
        let addr = listener.local_addr().ok();
        tracing::info!(?addr, workers = self.workers, data_dir = %self.settings.data_dir().display(), "serving");
        let result = axum::serve(listener, router(self.state.clone()))
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP");
        tracing::info!("shutting down: draining workers");
        self.scheduler
            .shutdown(
                workers,
                Duration::from_secs(self.settings.server.shutdown_grace_secs),
            )
            .await;
        // Leases are renewed until the last worker stopped (a job finishing in the grace
        // period keeps its lease), then no more.
        heartbeat.abort();
        if let Some(worker) = webhook_worker {
            worker.abort();
        }
        if let Some(task) = retention {
            task.abort();
        }
        result
    }
}
