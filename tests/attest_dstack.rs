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
    /// Quote an RTMR3 that the event log does not replay to.
    BadRtmr3,
}

#[derive(Clone)]
struct Agent {
    mode: Mode,
    seen: Arc<Mutex<Vec<Value>>>,
}

/// A TDX v4-shaped quote: 48-byte header, 584-byte TD report body, some signature bytes.
/// RTMR3 (body offset 472) is what [`event_log`] replays to.
fn tdx_quote(report_data: &[u8; 64], rtmr3: &[u8; 48]) -> Vec<u8> {
    let mut q = vec![0u8; 48 + 584 + 100];
    q[0..2].copy_from_slice(&4u16.to_le_bytes());
    q[2..4].copy_from_slice(&2u16.to_le_bytes()); // ECDSA-256
    q[4..8].copy_from_slice(&0x81u32.to_le_bytes());
    q[48 + 472..48 + 520].copy_from_slice(rtmr3);
    q[568..632].copy_from_slice(report_data);
    q
}

/// A dstack-shaped event log: boot events in RTMR0-2 (digests only), then dstack's runtime
/// events in RTMR3 with `digest = SHA-384(type LE || ":" || name || ":" || payload)`.
/// Returns the JSON text and the RTMR3 it replays to.
fn event_log() -> (String, [u8; 48]) {
    use sha2::{Digest, Sha384};
    let mut entries = Vec::new();
    for imr in 0..3u32 {
        entries.push(json!({
            "imr": imr, "event_type": 0x8000_0008u32,
            "digest": hex::encode(Sha384::digest(format!("boot {imr}"))),
            "event": "", "event_payload": "",
        }));
    }
    let mut rtmr3 = [0u8; 48];
    for (name, payload) in [
        ("system-preparing", &b""[..]),
        ("app-id", &[0x11u8; 20][..]),
        ("compose-hash", &[0x22u8; 32][..]),
        ("instance-id", &[0x33u8; 20][..]),
        ("boot-mr-done", &b""[..]),
    ] {
        let ty = quote::DSTACK_RUNTIME_EVENT_TYPE;
        let mut h = Sha384::new();
        h.update(ty.to_le_bytes());
        h.update(b":");
        h.update(name.as_bytes());
        h.update(b":");
        h.update(payload);
        let digest: [u8; 48] = h.finalize().into();
        entries.push(json!({
            "imr": 3, "event_type": ty, "digest": hex::encode(digest),
            "event": name, "event_payload": hex::encode(payload),
        }));
        let mut h = Sha384::new();
        h.update(rtmr3);
        h.update(digest);
        rtmr3 = h.finalize().into();
    }
    (Value::Array(entries).to_string(), rtmr3)
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
    let (log, mut rtmr3) = event_log();
    match agent.mode {
        Mode::Honest => {}
        Mode::BadRtmr3 => rtmr3[0] ^= 1,
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
        "quote": hex::encode(tdx_quote(&rd, &rtmr3)),
        "event_log": log,
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
        ..AttestSettings::default()
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
        ..AttestSettings::default()
    })
    .unwrap();
    assert_eq!(none.kind(), "none");
}

async fn dstack_attestation(
    mode: Mode,
) -> (
    tempfile::TempDir,
    Signer,
    skill_verifier::attest::dsse::Envelope,
) {
    let tmp = tempfile::tempdir().unwrap();
    let (sock, _) = start_unix_agent(tmp.path(), mode).await;
    let signer = Signer::generate();
    let env = sign_statement(sample_statement(tree()), &signer, &provider(&sock))
        .await
        .unwrap();
    (tmp, signer, env)
}

#[tokio::test]
async fn the_event_log_replays_into_rtmr3_and_a_mismatch_is_refused() {
    let (_tmp, signer, env) = dstack_attestation(Mode::Honest).await;
    let v = verify_envelope(&env, &signer.verifying_key(), None).unwrap();
    let summary = v.summary.join("\n");
    assert!(
        summary.contains("event log: ok (RTMR3 replayed from 5 events, 5 runtime events checked"),
        "{summary}"
    );
    assert!(summary.contains("report_data binding: ok (v2"), "{summary}");
    let tee = v.statement.predicate.tee.unwrap();
    assert_eq!(tee.extra["binding"], "v2");
    assert_eq!(tee.extra["tcb_policy"], json!(["UpToDate"]));

    let (_tmp, signer, env) = dstack_attestation(Mode::BadRtmr3).await;
    assert!(matches!(
        verify_envelope(&env, &signer.verifying_key(), None),
        Err(VerifyError::Rtmr3Mismatch { .. })
    ));
}

/// Each tee field, changed by someone who holds the signing key (the strongest tamperer:
/// without the key, the DSSE signature already refuses any change).
#[tokio::test]
async fn tampering_with_each_tee_field_is_refused() {
    let (_tmp, signer, env) = dstack_attestation(Mode::Honest).await;
    let key = signer.verifying_key();
    let base = payload_value(&env);
    let check = |edit: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        edit(&mut v["predicate"]["tee"]);
        verify_envelope(&resign(&v, &signer), &key, None)
    };
    let rd_mismatch =
        |r: Result<_, VerifyError>| matches!(r, Err(VerifyError::ReportDataMismatch { .. }));
    // Bound fields: any change breaks report_data.
    assert!(rd_mismatch(check(&|t| t["provider"] = "simulated".into())));
    assert!(rd_mismatch(check(
        &|t| t["tcb_policy"] = json!(["UpToDate", "OutOfDate"])
    )));
    assert!(rd_mismatch(check(
        &|t| t["pccs_url"] = "https://evil".into()
    )));
    assert!(rd_mismatch(check(&|t| t["new_claim"] = true.into())));
    // Dropping the binding falls back to v1, which this quote does not bind either.
    assert!(rd_mismatch(check(&|t| {
        t.as_object_mut().unwrap().remove("binding");
    })));
    assert!(matches!(
        check(&|t| t["binding"] = "v9".into()),
        Err(VerifyError::UnknownBinding(_))
    ));
    // report_data itself.
    assert!(rd_mismatch(check(
        &|t| t["report_data"] = hex::encode([0u8; 64]).into()
    )));
    // The quote: its REPORTDATA no longer matches, or it is not a quote.
    assert!(matches!(
        check(&|t| {
            let mut q = hex::decode(t["quote"].as_str().unwrap()).unwrap();
            q[570] ^= 1;
            t["quote"] = hex::encode(q).into();
        }),
        Err(VerifyError::QuoteReportDataMismatch { .. })
    ));
    assert!(matches!(
        check(&|t| t["quote"] = "zz".into()),
        Err(VerifyError::QuoteMalformed(_))
    ));
    // The event log: checked by RTMR3 replay (and each runtime event against its content).
    fn log(edit: impl Fn(&mut Vec<Value>)) -> impl Fn(&mut Value) {
        move |t: &mut Value| {
            let mut entries: Vec<Value> =
                serde_json::from_str(t["event_log"].as_str().unwrap()).unwrap();
            edit(&mut entries);
            t["event_log"] = Value::Array(entries).to_string().into();
        }
    }
    assert!(matches!(
        check(&log(
            |e: &mut Vec<Value>| e[5]["event_payload"] = hex::encode([0x99u8; 32]).into()
        )),
        Err(VerifyError::EventLog(_))
    ));
    assert!(matches!(
        check(&log(|e: &mut Vec<Value>| {
            e.remove(4);
        })),
        Err(VerifyError::Rtmr3Mismatch { .. })
    ));
    assert!(matches!(
        check(&log(|e: &mut Vec<Value>| e[4]["imr"] = 2.into())),
        Err(VerifyError::Rtmr3Mismatch { .. })
    ));
    assert!(matches!(
        check(&|t| t["event_log"] = "not json".into()),
        Err(VerifyError::EventLog(_))
    ));
    // Collateral: checked by the chain. This quote is not Intel-signed, so any collateral
    // makes the DCAP check run and fail.
    let sample: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/dcap-qvl/tdx_quote_collateral.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(matches!(
        check(&|t| t["collateral"] = sample.clone()),
        Err(VerifyError::QuoteNotVerified(_))
    ));
    assert!(matches!(
        check(&|t| t["collateral"] = json!({"tcb_info": 1})),
        Err(VerifyError::QuoteMalformed(_))
    ));
    // vm_config is informational: covered by the DSSE signature only (docs/attestations.md).
    assert!(check(&|t| t["vm_config"] = "{}".into()).is_ok());
}

#[tokio::test]
async fn require_tee_needs_a_verified_chain_for_dstack() {
    use skill_verifier::attest::verify::{verify_envelope_with, Requirements, VerifyOptions};
    let (_tmp, signer, env) = dstack_attestation(Mode::Honest).await;
    let opts = VerifyOptions {
        require: Requirements {
            tee: true,
            ..Requirements::default()
        },
        ..VerifyOptions::default()
    };
    match verify_envelope_with(&env, &[signer.verifying_key()], &opts) {
        Err(VerifyError::RequirementNotMet { reason, .. }) => {
            assert!(reason.contains("not verified"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// A fake PCCS serving the dcap-qvl sample collateral the way a PCCS does (issuer chains
/// URL-encoded in headers, TCB info and QE identity wrapped with their signatures, the root
/// CA CRL as hex). The client must rebuild exactly the sample collateral from it.
#[tokio::test]
async fn collateral_is_fetched_from_a_pccs_and_verifies_the_sample_quote() {
    use axum::http::header::HeaderMap;
    use axum::routing::get;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dcap-qvl");
    let quote_bytes = std::fs::read(dir.join("tdx_quote")).unwrap();
    let c = quote::parse_collateral(&std::fs::read(dir.join("tdx_quote_collateral.json")).unwrap())
        .unwrap();
    let enc = |pem: &str| {
        pem.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let headers = |name: &'static str, value: String| {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    };
    let (c1, c2, c3, c4) = (c.clone(), c.clone(), c.clone(), c.clone());
    let hits = Arc::new(Mutex::new(Vec::<String>::new()));
    let (h1, h2, h3) = (hits.clone(), hits.clone(), hits.clone());
    let app = Router::new()
        .route(
            "/sgx/certification/v4/pckcrl",
            get(move |q: axum::extract::RawQuery| async move {
                h1.lock().unwrap().push(q.0.unwrap_or_default());
                (
                    headers("SGX-PCK-CRL-Issuer-Chain", enc(&c1.pck_crl_issuer_chain)),
                    c1.pck_crl.clone(),
                )
            }),
        )
        .route(
            "/tdx/certification/v4/tcb",
            get(move |q: axum::extract::RawQuery| async move {
                h2.lock().unwrap().push(q.0.unwrap_or_default());
                (
                    headers("TCB-Info-Issuer-Chain", enc(&c2.tcb_info_issuer_chain)),
                    format!(
                        "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
                        c2.tcb_info,
                        hex::encode(&c2.tcb_info_signature)
                    ),
                )
            }),
        )
        .route(
            "/tdx/certification/v4/qe/identity",
            get(move || async move {
                h3.lock().unwrap().push("qe".into());
                (
                    headers(
                        "SGX-Enclave-Identity-Issuer-Chain",
                        enc(&c3.qe_identity_issuer_chain),
                    ),
                    format!(
                        "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
                        c3.qe_identity,
                        hex::encode(&c3.qe_identity_signature)
                    ),
                )
            }),
        )
        .route(
            "/sgx/certification/v4/rootcacrl",
            get(move || async move { hex::encode(&c4.root_ca_crl) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let fetched = quote::pccs::fetch_collateral(&base, &quote_bytes)
        .await
        .unwrap();
    assert_eq!(
        fetched, c,
        "the PCCS client rebuilt the sample collateral byte for byte"
    );
    let at = time::OffsetDateTime::parse(
        "2025-06-19T11:16:03Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert_eq!(
        quote::verify_dcap(&quote_bytes, &fetched, at, None)
            .unwrap()
            .tcb_status,
        "UpToDate"
    );
    let hits = hits.lock().unwrap().clone();
    assert!(
        hits[0].contains("ca=processor") || hits[0].contains("ca=platform"),
        "{hits:?}"
    );
    assert!(hits[1].starts_with("fmspc="), "{hits:?}");

    // The dstack provider with a PCCS refuses to sign a quote that is not Intel-signed
    // (here, the fake agent's TDX-shaped quote): nothing unverifiable gets attested.
    let tmp = tempfile::tempdir().unwrap();
    let (sock, _) = start_unix_agent(tmp.path(), Mode::Honest).await;
    let with_pccs = provider(&sock).with_collateral(Some(base), quote::TcbPolicy::default());
    let err = sign_statement(sample_statement(tree()), &Signer::generate(), &with_pccs)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            skill_verifier::attest::AttestError::Quote(QuoteError::Malformed(_))
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_legacy_tappd_agent_is_refused_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tappd.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let app = Router::new().route(
        "/prpc/Tappd.TdxQuote",
        post(|| async { Json(json!({"quote": "00"})) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let err = provider(&path).quote(&[1u8; 64]).await.unwrap_err();
    assert!(matches!(err, QuoteError::LegacyTappd { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("Tappd") && msg.contains("not supported"),
        "{msg}"
    );
}
