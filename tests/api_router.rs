//! The router without a socket: `oneshot` requests against `router(state)` for everything
//! that needs no Docker (the runner is a double that is never asked to run here: no worker
//! is started). Uploads over a real socket are in `tests/api.rs`.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::{shell_skill, skill_md, tar_gz, InstantRunner};
use http_body_util::BodyExt;
use serde_json::Value;
use skill_verifier::api::{router, Daemon};
use skill_verifier::config::Settings;
use tower::ServiceExt;

struct Fixture {
    app: Router,
    _data: tempfile::TempDir,
}

async fn fixture(configure: impl FnOnce(&mut Settings)) -> Fixture {
    let data = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        data_dir: Some(data.path().to_path_buf()),
        ..Settings::default()
    };
    configure(&mut settings);
    let daemon = Daemon::open(settings, Arc::new(InstantRunner))
        .await
        .unwrap();
    Fixture {
        app: router(daemon.state.clone()),
        _data: data,
    }
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, ct, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post(uri: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(body))
        .unwrap()
}

/// Asserts a JSON error answer with `status` and `code`.
async fn expect_error(app: &Router, req: Request<Body>, status: StatusCode, code: &str) {
    let what = format!("{} {}", req.method(), req.uri());
    let (got, ct, body) = call(app, req).await;
    assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct}"
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn every_malformed_request_gets_a_json_error_with_its_code() {
    let f = fixture(|_| {}).await;
    let app = &f.app;
    let bad = StatusCode::BAD_REQUEST;
    for uri in [
        "/jobs?limit=0",
        "/jobs?limit=201",
        "/jobs?cursor=-1",
        "/jobs?cursor=x",
    ] {
        let code = if uri.contains("limit") {
            "invalid_limit"
        } else {
            "invalid_cursor"
        };
        expect_error(app, get(uri), bad, code).await;
    }
    for uri in [
        "/jobs?limit=abc",
        "/jobs?limit=99999999999999999999",
        "/jobs?status=bogus",
        "/jobs?status=",
        "/verify?fresh=maybe",
    ] {
        let req = if uri.starts_with("/verify") {
            post(uri, b"x".to_vec())
        } else {
            get(uri)
        };
        expect_error(app, req, bad, "invalid_query").await;
    }
    for uri in [
        "/verify/0",
        "/verify/not-a-uuid/logs",
        "/verify/0/attestation",
    ] {
        expect_error(app, get(uri), bad, "invalid_job_id").await;
    }
    let unknown = "/verify/6f1c1f2e-0000-4000-8000-000000000000";
    expect_error(app, get(unknown), StatusCode::NOT_FOUND, "job_not_found").await;
    let delete = Request::delete(unknown).body(Body::empty()).unwrap();
    expect_error(app, delete, StatusCode::NOT_FOUND, "job_not_found").await;
    expect_error(app, get("/nope"), StatusCode::NOT_FOUND, "not_found").await;
    let put = Request::builder()
        .method(Method::PUT)
        .uri("/jobs")
        .body(Body::empty())
        .unwrap();
    expect_error(
        app,
        put,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn bad_packages_are_refused_with_their_status_and_nothing_is_queued() {
    let f = fixture(|_| {}).await;
    let app = &f.app;
    expect_error(
        app,
        post("/verify", Vec::new()),
        StatusCode::BAD_REQUEST,
        "empty_body",
    )
    .await;
    expect_error(
        app,
        post("/verify", b"[]".to_vec()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_format",
    )
    .await;
    let no_skill_md = tar_gz(None, &[("README.md", "hi", false)]);
    expect_error(
        app,
        post("/verify", no_skill_md),
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_skill_md",
    )
    .await;
    let bad_name = tar_gz(None, &[("SKILL.md", &skill_md("Bad_Name", &[]), false)]);
    let (status, _, body) = call(app, post("/verify", bad_name)).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = call(app, get("/jobs")).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["jobs"], serde_json::json!([]), "{v}");
}

#[tokio::test]
async fn a_valid_package_is_queued_and_listed_with_typed_fields() {
    let f = fixture(|_| {}).await;
    let app = &f.app;
    let (status, _, body) = call(app, post("/verify", shell_skill("queued-one", "true"))).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let job: skill_verifier::api::views::JobView = serde_json::from_slice(&body).unwrap();
    assert_eq!(job.status, skill_verifier::store::JobStatus::Queued);
    assert_eq!(job.package.runtime, skill_verifier::package::Runtime::Shell);
    assert_eq!(
        job.package.test_source,
        skill_verifier::package::TestSource::Declared
    );

    let (status, _, body) = call(app, get("/jobs?status=queued&limit=1")).await;
    assert_eq!(status, StatusCode::OK);
    let list: skill_verifier::api::views::JobList = serde_json::from_slice(&body).unwrap();
    assert_eq!(list.jobs.len(), 1);
    assert_eq!(list.jobs[0].id, job.id);
    let (_, _, body) = call(app, get("/jobs?status=passed")).await;
    let list: skill_verifier::api::views::JobList = serde_json::from_slice(&body).unwrap();
    assert!(list.jobs.is_empty());
    let attestation = format!("/verify/{}/attestation", job.id);
    expect_error(app, get(&attestation), StatusCode::CONFLICT, "not_finished").await;
}

#[tokio::test]
async fn tokens_guard_writes_and_optionally_reads() {
    let f = fixture(|s| {
        s.server.tokens = vec!["s3cret".into()];
        s.server.auth_reads = true;
    })
    .await;
    let app = &f.app;
    expect_error(
        app,
        post("/verify", b"x".to_vec()),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_error(app, get("/jobs"), StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong = Request::get("/jobs")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    expect_error(app, wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let right = Request::get("/jobs")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(app, right).await.0, StatusCode::OK);
    for public in ["/health", "/keys", "/openapi.json", "/metrics"] {
        assert_eq!(call(app, get(public)).await.0, StatusCode::OK, "{public}");
    }
}

#[tokio::test]
async fn operational_routes_answer_in_their_documented_types() {
    let f = fixture(|_| {}).await;
    let app = &f.app;
    let (status, _, body) = call(app, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["docker"]["reachable"], true);
    let (_, _, body) = call(app, get("/keys")).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["keys"][0]["algorithm"], "ed25519");
    let (status, ct, body) = call(app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(String::from_utf8_lossy(&body).contains("skill_verifier_"));
}

#[tokio::test]
async fn the_openapi_document_shows_every_enum_and_typed_parameter() {
    let f = fixture(|_| {}).await;
    let (status, _, body) = call(&f.app, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let schemas = &doc["components"]["schemas"];
    let values = |name: &str| -> Vec<String> {
        schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is not an enum schema: {}", schemas[name]))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        values("JobStatus"),
        [
            "queued",
            "running",
            "passed",
            "failed",
            "error",
            "cancelled"
        ]
    );
    assert_eq!(
        values("Phase"),
        ["unpacking", "preparing", "running", "signing"]
    );
    assert_eq!(values("Status"), ["PASSED", "FAILED", "WARNED"]);
    assert_eq!(values("Runtime"), ["shell", "python", "node"]);
    assert_eq!(values("TestSource"), ["declared", "detected", "smoke"]);

    let params = doc["paths"]["/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(param("limit")["in"], "query");
    assert_eq!(param("limit")["schema"]["minimum"], 1);
    assert_eq!(param("limit")["schema"]["maximum"], 200);
    assert_eq!(
        param("status")["schema"]["$ref"],
        "#/components/schemas/JobStatus"
    );
    assert!(param("cursor")["schema"]["pattern"].is_string());
    // Every reference resolves to a component.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(schemas[name].is_object(), "unresolved reference {r}");
    }
    let id = &doc["paths"]["/verify/{id}"]["get"]["parameters"][0];
    assert_eq!(id["schema"]["format"], "uuid", "{id}");
    assert!(doc["paths"]["/verify/{id}"]["get"]["responses"]["400"].is_object());
}
