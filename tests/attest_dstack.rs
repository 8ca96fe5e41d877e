//! The dstack provider against a fake guest agent that this test starts on a unix socket (and
//! once on TCP, as the dstack simulator's URL form). The fake speaks the agent's protocol:
//! `POST /GetQuote` with `{"report_data": "<hex, <= 64 bytes>"}`, answering `quote` (hex),
//! `event_log` (a JSON array as a string), `report_data` and `vm_config`, and errors as
//! `{"error": "..."}` with a 4xx/5xx status.

mod attest_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attest_support::*;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use skill_verifier::attest::keys::Signer;
use skill_verifier::attest::quote::{
    self, DstackEndpoint, DstackQuoteProvider, QuoteError, QuoteProvider,
};
use skill_verifier::attest::sign_statement;
use skill_verifier::attest::verify::{verify_envelope, QuoteCheck, VerifyError};
use skill_verifier::config::{AttestSettings, QuoteProviderKind};

/// How the fake agent behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Quote the requested report_data.
    Honest,
    /// Quote some other report_data.
    WrongReportData,
    /// Answer 500 `{"error": ...}`.
    Fail,
    /// Never answer in time.
    Hang,
}

#[derive(Clone)]
struct Agent {
    mode: Mode,
    seen: Arc<Mutex<Vec<Value>>>,
}

/// A TDX v4-shaped quote: 48-byte header, 584-byte TD report body, some signature bytes.
fn tdx_quote(report_data: &[u8; 64]) -> Vec<u8> {
    let mut q = vec![0u8; 48 + 584 + 100];
    q[0..2].copy_from_slice(&4u16.to_le_bytes());
    q[2..4].copy_from_slice(&2u16.to_le_bytes()); // ECDSA-256
    q[4..8].copy_from_slice(&0x81u32.to_le_bytes());
    q[568..632].copy_from_slice(report_data);
    q
}

async fn get_quote(
    State(agent): State<Agent>,
    body: Json<Value>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    agent.seen.lock().unwrap().push(body.0.clone());
    let bad = |msg: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": msg })));
    let hex_rd = body
        .get("report_data")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing report_data"))?;
    let raw = hex::decode(hex_rd).map_err(|_| bad("report_data is not hex"))?;
    if raw.len() > 64 {
        return Err(bad("report_data is longer than 64 bytes"));
    }
    // The agent zero-pads short report_data to 64 bytes.
    let mut rd = [0u8; 64];
    rd[..raw.len()].copy_from_slice(&raw);
    match agent.mode {
        Mode::Honest => {}
        Mode::WrongReportData => rd[0] ^= 0xff,
        Mode::Fail => {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": "failed to get quote: tdx guest device unavailable" })),
            ))
        }
        Mode::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
    }
    Ok(Json(json!({
        "quote": hex::encode(tdx_quote(&rd)),
        "event_log": "[{\"imr\":0,\"event_type\":1,\"digest\":\"00\",\"event\":\"\",\"event_payload\":\"\"}]",
        "report_data": hex::encode(rd),
        "vm_config": "{\"os_image_hash\":\"ab\"}",
    })))
}

fn router(agent: Agent) -> Router {
    Router::new()
        .route("/GetQuote", post(get_quote))
        .with_state(agent)
}

/// Starts the fake agent on a unix socket in `dir`; returns its path and the request log.
async fn start_unix_agent(dir: &Path, mode: Mode) -> (PathBuf, Arc<Mutex<Vec<Value>>>) {
    let path = dir.join("dstack.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = router(Agent {
        mode,
        seen: seen.clone(),
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (path, seen)
}

fn provider(path: &Path) -> DstackQuoteProvider {
    DstackQuoteProvider::new(DstackEndpoint::Unix(path.to_path_buf()))
        .with_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn quotes_over_the_unix_socket_and_the_attestation_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (sock, seen) = start_unix_agent(tmp.path(), Mode::Honest).await;
    let dstack = provider(&sock);
    assert_eq!(dstack.kind(), "dstack");

    let rd = [0x5au8; 64];
    let tee = dstack.quote(&rd).await.unwrap();
    assert_eq!(tee.provider, "dstack");
    assert_eq!(tee.report_data, hex::encode(rd));
    assert_eq!(
        quote::tdx_report_data(&hex::decode(&tee.quote).unwrap()).unwrap(),
        rd
    );
    let event_log = tee.extra["event_log"].as_str().unwrap();
    assert!(serde_json::from_str::<Vec<Value>>(event_log).is_ok());
    assert!(tee.extra["vm_config"]
        .as_str()
        .unwrap()
        .contains("os_image_hash"));
    // The request was exactly {"report_data": "<128 hex chars>"}.
    assert_eq!(
        seen.lock().unwrap()[0],
        json!({ "report_data": hex::encode(rd) })
    );

    let signer = Signer::generate();
    let env = sign_statement(sample_statement(tree()), &signer, &dstack)
        .await
        .unwrap();
    let v = verify_envelope(&env, &signer.verifying_key(), Some(&tree())).unwrap();
    assert_eq!(v.quote, QuoteCheck::Dstack);
    let summary = v.summary.join("\n");
    assert!(summary.contains("quote: dstack TDX"), "{summary}");
    assert!(summary.contains("NOT verified offline"), "{summary}");

    // A dstack quote pasted from another statement does not bind this one.
    let other = sign_statement(
        {
            let mut s = sample_statement(tree());
            s.predicate.job.attempt = 2;
            s
        },
        &signer,
        &dstack,
    )
    .await
    .unwrap();
    let mut value = payload_value(&env);
    value["predicate"]["tee"]["quote"] = payload_value(&other)["predicate"]["tee"]["quote"].clone();
    assert!(matches!(
        verify_envelope(&resign(&value, &signer), &signer.verifying_key(), None),
        Err(VerifyError::QuoteReportDataMismatch { .. })
    ));
}

#[tokio::test]
async fn the_agents_error_shape_becomes_a_specific_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (sock, _) = start_unix_agent(tmp.path(), Mode::Fail).await;
    match provider(&sock).quote(&[1u8; 64]).await {
        Err(QuoteError::Agent { status, message }) => {
            assert_eq!(status, 500);
            assert_eq!(message, "failed to get quote: tdx guest device unavailable");
        }
        other => panic!("want Agent error, got {other:?}"),
    }
    // And the signing path surfaces it rather than signing without a quote.
    let err = sign_statement(
        sample_statement(tree()),
        &Signer::generate(),
        &provider(&sock),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn the_fake_agent_refuses_oversized_report_data_with_400() {
    // Checks the fake itself speaks the protocol's 4xx shape, through a raw hyper request.
    let tmp = tempfile::tempdir().unwrap();
    let (sock, _) = start_unix_agent(tmp.path(), Mode::Honest).await;
    let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = json!({ "report_data": hex::encode([0u8; 65]) }).to_string();
    let req = hyper::Request::post("/GetQuote")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    use http_body_util::BodyExt;
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"], "report_data is longer than 64 bytes");
}

#[tokio::test]
async fn a_quote_over_other_report_data_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (sock, _) = start_unix_agent(tmp.path(), Mode::WrongReportData).await;
    assert!(matches!(
        provider(&sock).quote(&[1u8; 64]).await,
        Err(QuoteError::ReportDataMismatch)
    ));
}

#[tokio::test]
async fn a_silent_agent_hits_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let (sock, _) = start_unix_agent(tmp.path(), Mode::Hang).await;
    let started = std::time::Instant::now();
    let result = provider(&sock)
        .with_timeout(Duration::from_millis(300))
        .quote(&[1u8; 64])
        .await;
    assert!(
        matches!(result, Err(QuoteError::Timeout { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_missing_socket_is_a_transport_error() {
    let tmp = tempfile::tempdir().unwrap();
    let result = provider(&tmp.path().join("absent.sock"))
        .quote(&[1u8; 64])
        .await;
    assert!(
        matches!(result, Err(QuoteError::Transport { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_simulator_url_form_works_over_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(Agent {
        mode: Mode::Honest,
        seen: Arc::new(Mutex::new(Vec::new())),
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dstack = DstackQuoteProvider::new(DstackEndpoint::parse(&format!("http://{addr}/")))
        .with_timeout(Duration::from_secs(5));
    let tee = dstack.quote(&[9u8; 64]).await.unwrap();
    assert_eq!(tee.report_data, hex::encode([9u8; 64]));
}

/// `DSTACK_SIMULATOR_ENDPOINT` names the socket when nothing is configured, and
/// `from_settings` builds a working dstack provider from it. (nextest runs each test in its
/// own process, so setting the variable here touches no other test.)
#[tokio::test]
async fn from_settings_uses_the_simulator_endpoint_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let (sock, _) = start_unix_agent(tmp.path(), Mode::Honest).await;
    std::env::set_var(quote::DSTACK_SIMULATOR_ENV, &sock);
    assert_eq!(
        DstackEndpoint::resolve(None).unwrap(),
        DstackEndpoint::Unix(sock.clone())
    );
    let settings = AttestSettings {
        quote_provider: QuoteProviderKind::Dstack,
        dstack_endpoint: None,
    };
    let provider = quote::from_settings(&settings).unwrap();
    assert_eq!(provider.kind(), "dstack");
    assert_eq!(provider.quote(&[2u8; 64]).await.unwrap().provider, "dstack");
    // A configured endpoint wins over the variable.
    assert_eq!(
        DstackEndpoint::resolve(Some("/elsewhere.sock")).unwrap(),
        DstackEndpoint::Unix("/elsewhere.sock".into())
    );
    std::env::remove_var(quote::DSTACK_SIMULATOR_ENV);
    if !quote::DSTACK_SOCKETS.iter().any(|p| Path::new(p).exists()) {
        assert!(matches!(
            DstackEndpoint::resolve(None),
            Err(QuoteError::NoDstackEndpoint { .. })
        ));
    }
}

#[tokio::test]
async fn from_settings_builds_simulated_and_none() {
    let simulated = quote::from_settings(&AttestSettings::default()).unwrap();
    assert_eq!(simulated.kind(), "simulated");
    let tee = simulated.quote(&[4u8; 64]).await.unwrap();
    let parsed = quote::verify_simulated_quote(&hex::decode(tee.quote).unwrap()).unwrap();
    // MRTD is the SHA-384 of this very binary.
    use sha2::Digest;
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let want: [u8; 48] = sha2::Sha384::digest(&exe).into();
    assert_eq!(parsed.measurements.mr_td, want);

    let none = quote::from_settings(&AttestSettings {
        quote_provider: QuoteProviderKind::None,
        dstack_endpoint: None,
    })
    .unwrap();
    assert_eq!(none.kind(), "none");
}
