//! Signed webhooks from the PostgreSQL outbox, over real sockets: a receiver that refuses
//! twice gets the same delivery (same `webhook-id`) until it accepts; both signatures (`v1`
//! HMAC with the configured secret, `v1a` Ed25519 with the key `GET /keys` publishes) verify
//! over `id.timestamp.body`; a callback to a private range is refused with no job created.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::Value;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A receiver on 127.0.0.1:0 that answers 503 to the first `refuse` requests, then 200.
async fn receiver(refuse: usize) -> (String, Received) {
    let got: Received = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push((headers, body.to_vec()));
                if seen.len() <= refuse {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).unwrap().to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_retried_until_accepted_and_both_signatures_verify() {
    let Some(db) = common::pg::fresh_database().await else {
        return;
    };
    let server = common::TestServer::start(Arc::new(common::InstantRunner), |s| {
        s.store.url = Some(db.clone());
        s.webhooks.secret = Some(SECRET.into());
        // The receiver is on loopback.
        s.webhooks.allow_private = true;
    })
    .await;
    let (hook, got) = receiver(2).await;
    let resp = server
        .client
        .post(format!("{}/verify?callback_url={hook}", server.url))
        .body(common::shell_skill("hooked", "true"))
        .send()
        .await
        .unwrap();
    let id = common::accepted_id(resp).await;
    server.wait(&id, 60).await;

    // Two refusals, backoff 1 s then 2 s, then accepted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the webhook was not retried until accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = got.clone();
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "no delivery after the receiver accepted");
    let webhook_id = header(&got[0].0, "webhook-id").to_string();
    assert!(webhook_id.starts_with("msg_"));

    use ed25519_dalek::pkcs8::DecodePublicKey;
    let keys = server.get_json("/keys").await;
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(
        keys["keys"][0]["public_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let hmac_key = b64.decode(SECRET.strip_prefix("whsec_").unwrap()).unwrap();
    for (headers, body) in &got {
        assert_eq!(
            header(headers, "webhook-id"),
            webhook_id,
            "one idempotency key"
        );
        let ts = header(headers, "webhook-timestamp");
        let age = time::OffsetDateTime::now_utc().unix_timestamp() - ts.parse::<i64>().unwrap();
        assert!((0..60).contains(&age), "a fresh timestamp: {ts}");
        let mut signed = format!("{webhook_id}.{ts}.").into_bytes();
        signed.extend_from_slice(body);
        let sigs: Vec<&str> = header(headers, "webhook-signature").split(' ').collect();
        let v1 = sigs.iter().find_map(|s| s.strip_prefix("v1,")).unwrap();
        assert_eq!(
            b64.decode(v1).unwrap(),
            skill_verifier::api::webhooks::hmac_sha256(&hmac_key, &signed),
            "v1 (HMAC) verifies"
        );
        let v1a = sigs.iter().find_map(|s| s.strip_prefix("v1a,")).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&b64.decode(v1a).unwrap()).unwrap();
        key.verify_strict(&signed, &sig)
            .expect("v1a (Ed25519) verifies under the published key");
        let job: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(job["id"], id.as_str());
        assert_eq!(job["status"], "passed");
    }
    let metrics = server
        .client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("skill_verifier_webhook_deliveries_total 1"),
        "{metrics}"
    );
    // The same skill again: answered from the cache (already terminal), so its callback is
    // queued at once, as a new delivery of the same job.
    let resp = server
        .client
        .post(format!("{}/verify?callback_url={hook}", server.url))
        .body(common::shell_skill("hooked", "true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a cache hit");
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the cached job's callback was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (headers, body) = received.lock().unwrap()[3].clone();
    assert_ne!(header(&headers, "webhook-id"), webhook_id, "a new delivery");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["id"],
        id.as_str()
    );
    assert!(
        metrics.contains("skill_verifier_webhook_delivery_failures_total 2"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_range_callback_is_refused_and_creates_no_job() {
    let Some(db) = common::pg::fresh_database().await else {
        return;
    };
    let server = common::TestServer::start(Arc::new(common::InstantRunner), |s| {
        s.store.url = Some(db.clone());
    })
    .await;
    for callback in [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
        "http://[::1]/hook",
        "http://localhost/hook",
        "file:///etc/passwd",
    ] {
        let resp = server
            .client
            .post(format!("{}/verify", server.url))
            .query(&[("callback_url", callback)])
            .body(common::shell_skill("refused", "true"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{callback}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "callback_refused",
            "{callback}: {body}"
        );
    }
    server.assert_nothing_accepted().await;
    server.stop().await;
}

#[tokio::test]
async fn callbacks_on_sqlite_are_refused_plainly() {
    let server = common::TestServer::start(Arc::new(common::InstantRunner), |_| {}).await;
    let resp = server
        .client
        .post(format!(
            "{}/verify?callback_url=https://example.com/hook",
            server.url
        ))
        .body(common::shell_skill("sqlite-hook", "true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "webhooks_unavailable", "{body}");
    server.assert_nothing_accepted().await;
    server.stop().await;
}

/// `callback_url` as a multipart field (before or after `file`) works as the query
/// parameter does: delivered when allowed, refused by the SSRF guard with no job created,
/// and refused when both are given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_callback_url_is_delivered_or_refused_like_the_query_one() {
    let Some(db) = common::pg::fresh_database().await else {
        return;
    };
    let form = |callback: &str, first: bool, name: &str| {
        let file = reqwest::multipart::Part::bytes(common::shell_skill(name, "true"))
            .file_name("skill.tar.gz");
        let text = reqwest::multipart::Part::text(callback.to_string());
        if first {
            reqwest::multipart::Form::new()
                .part("callback_url", text)
                .part("file", file)
        } else {
            reqwest::multipart::Form::new()
                .part("file", file)
                .part("callback_url", text)
        }
    };

    // Allowed (the receiver is on loopback): delivered once accepted, field after the file.
    let d = db.clone();
    let open = common::TestServer::start(Arc::new(common::InstantRunner), move |s| {
        s.store.url = Some(d);
        s.webhooks.allow_private = true;
    })
    .await;
    let (hook, got) = receiver(0).await;
    let resp = open
        .client
        .post(format!("{}/verify", open.url))
        .multipart(form(&hook, false, "multipart-hooked"))
        .send()
        .await
        .unwrap();
    let id = common::accepted_id(resp).await;
    open.wait(&id, 60).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the multipart callback was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body: Value = serde_json::from_slice(&got.lock().unwrap()[0].1).unwrap();
    assert_eq!(body["id"], id.as_str());
    open.stop().await;

    // Refused: the SSRF guard (field before or after the file), and both places at once.
    let other = common::pg::fresh_database().await.unwrap();
    let guarded = common::TestServer::start(Arc::new(common::InstantRunner), move |s| {
        s.store.url = Some(other);
    })
    .await;
    for first in [true, false] {
        let resp = guarded
            .client
            .post(format!("{}/verify", guarded.url))
            .multipart(form(
                "http://169.254.169.254/latest/meta-data/",
                first,
                "m-refused",
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "callback_refused", "{body}");
    }
    let resp = guarded
        .client
        .post(format!(
            "{}/verify?callback_url=https://93.184.215.14/a",
            guarded.url
        ))
        .multipart(form("https://93.184.215.14/b", true, "m-twice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    guarded.assert_nothing_accepted().await;
    // No upload is left behind in the blob directory's scratch.
    let leftovers: Vec<_> = walk(guarded.data_dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .filter(|p| p.is_file())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    guarded.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
