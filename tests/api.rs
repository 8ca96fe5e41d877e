//! The HTTP API over a real socket: error paths with a runner double, whole jobs against the
//! real Docker engine.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{shell_skill, skill_md, tar_gz, zip, InstantRunner, TestServer};
use serde_json::Value;
use skill_verifier::attest::statement::Status;
use skill_verifier::store::{JobStatus, Phase};

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("errors are JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_string();
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    (status, code)
}

/// POSTs `chunks` chunks of `size` bytes with chunked encoding and no Content-Length, ignoring
/// write errors once the server has answered; returns (status, body text).
async fn raw_chunked_upload(
    addr: std::net::SocketAddr,
    chunks: usize,
    size: usize,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /verify HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![7u8; size];
    for _ in 0..chunks {
        let frame = [format!("{size:x}\r\n").as_bytes(), &chunk, b"\r\n"].concat();
        if sock.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_requests_with_specific_errors() {
    let server = TestServer::start_paused(Arc::new(InstantRunner), |s| {
        s.package.archive_bytes = 64 * 1024;
    })
    .await;
    let url = &server.url;
    let c = &server.client;

    // Not an archive.
    assert_eq!(
        error_code(server.submit(b"hello, not an archive".to_vec()).await).await,
        (415, "unsupported_format".into())
    );
    // An archive without SKILL.md.
    let no_manifest = tar_gz(None, &[("README.md", "hi", false)]);
    let (status, _) = error_code(server.submit(no_manifest).await).await;
    assert_eq!(status, 422);
    // Empty body.
    assert_eq!(
        error_code(server.submit(Vec::new()).await).await,
        (400, "empty_body".into())
    );
    // Too large with Content-Length.
    assert_eq!(
        error_code(server.submit(vec![0u8; 200 * 1024]).await).await,
        (413, "payload_too_large".into())
    );
    // Too large without Content-Length (chunked stream), over a raw socket: the server
    // answers and closes mid-upload, which an HTTP client library reports as a broken pipe.
    let (status, body) = raw_chunked_upload(server.addr, 20, 8192).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    // Wrong method, unknown route, bad and unknown ids.
    let resp = c.put(format!("{url}/verify")).send().await.unwrap();
    assert_eq!(error_code(resp).await, (405, "method_not_allowed".into()));
    let resp = c.get(format!("{url}/nope")).send().await.unwrap();
    assert_eq!(error_code(resp).await, (404, "not_found".into()));
    let resp = c
        .get(format!("{url}/verify/not-a-uuid"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (400, "invalid_job_id".into()));
    let unknown = uuid::Uuid::new_v4();
    for path in ["", "/attestation", "/logs"] {
        let resp = c
            .get(format!("{url}/verify/{unknown}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(resp).await,
            (404, "job_not_found".into()),
            "{path}"
        );
    }
    let resp = c
        .delete(format!("{url}/verify/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "job_not_found".into()));
    let resp = c
        .get(format!("{url}/jobs?status=bogus"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (400, "invalid_query".into()));

    // Nothing above created a job or left a partial upload.
    server.assert_nothing_accepted().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_answers_429_with_retry_after_and_unfinished_is_409() {
    let server = TestServer::start_paused(Arc::new(InstantRunner), |s| {
        s.server.queue_capacity = 1;
    })
    .await;
    let first = server.submit(shell_skill("one", "true")).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("location").is_some());
    let job: Value = first.json().await.unwrap();
    assert_eq!(job["status"], "queued");
    let id = job["id"].as_str().unwrap().to_string();
    uuid::Uuid::parse_str(&id).expect("job ids are UUIDs");

    let second = server.submit(shell_skill("two", "true")).await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "5");
    assert_eq!(error_code(second).await.1, "queue_full");

    for path in ["attestation", "logs"] {
        let resp = server
            .client
            .get(format!("{}/verify/{id}/{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(resp).await, (409, "not_finished".into()));
    }
    // DELETE of a queued job removes it.
    let resp = server
        .client
        .delete(format!("{}/verify/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = server
        .client
        .get(format!("{}/verify/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_writes_and_optionally_reads() {
    let server = TestServer::start_paused(Arc::new(InstantRunner), |s| {
        s.server.tokens = vec!["s3cret".into()];
        s.server.auth_reads = true;
    })
    .await;
    let (url, c) = (&server.url, &server.client);
    let resp = server.submit(shell_skill("a", "true")).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("www-authenticate").is_some());
    assert_eq!(error_code(resp).await.1, "unauthorized");
    let resp = c
        .post(format!("{url}/verify"))
        .bearer_auth("wrong")
        .body(shell_skill("a", "true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = c
        .post(format!("{url}/verify"))
        .bearer_auth("s3cret")
        .body(shell_skill("a", "true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        c.get(format!("{url}/jobs")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        c.get(format!("{url}/jobs"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Operational routes stay open.
    for path in ["/health", "/keys", "/metrics", "/openapi.json"] {
        assert_eq!(
            c.get(format!("{url}{path}")).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_cache_hits_and_listing() {
    let server = TestServer::start(Arc::new(InstantRunner), |_| {}).await;
    let (url, c) = (&server.url, &server.client);
    let archive = zip(&[(
        "SKILL.md",
        &skill_md(
            "zipped",
            &[("verify-test", "true"), ("verify-runtime", "shell")],
        ),
        false,
    )]);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(archive.clone()).file_name("zipped.skill"),
    );
    let resp = c
        .post(format!("{url}/verify"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let done = server.wait(&id, 30).await;
    assert_eq!(done.status, JobStatus::Passed);
    assert_eq!(done.attempt, 1);

    // Identical package, identical policy: the earlier job, at once.
    let again = server.submit(archive.clone()).await;
    assert_eq!(again.status(), 200);
    let cached: Value = again.json().await.unwrap();
    assert_eq!(cached["id"], id.as_str());
    assert_eq!(cached["cached"], true);
    // fresh=true forces a new run.
    let fresh = c
        .post(format!("{url}/verify?fresh=true"))
        .body(archive)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 202);
    let fresh: Value = fresh.json().await.unwrap();
    assert_ne!(fresh["id"], id.as_str());
    server.wait(fresh["id"].as_str().unwrap(), 30).await;

    let page: Value = server.get_json("/jobs?limit=1").await;
    assert_eq!(page["jobs"][0]["id"], fresh["id"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2: Value = server
        .get_json(&format!("/jobs?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page2["jobs"][0]["id"], id.as_str());
    assert!(page2.get("next_cursor").is_none());
    let passed: Value = server.get_json("/jobs?status=passed").await;
    assert_eq!(passed["jobs"].as_array().unwrap().len(), 2);

    let metrics = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "skill_verifier_jobs{status=\"passed\"} 2",
        "skill_verifier_queue_depth 0",
        "skill_verifier_cache_hits_total 1",
        "skill_verifier_stage_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    let doc: Value = server.get_json("/openapi.json").await;
    for path in [
        "/verify",
        "/verify/{id}",
        "/verify/{id}/attestation",
        "/verify/{id}/logs",
        "/jobs",
        "/keys",
        "/health",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    let health: Value = server.get_json("/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["docker"]["reachable"], true);
    server.stop().await;
}

// ---- against the real Docker engine ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_and_failing_skills_end_to_end_with_verifiable_attestations() {
    let Some(docker) = common::docker().await else {
        return;
    };
    let server = TestServer::start(docker, |_| {}).await;
    let pass = server
        .submit(shell_skill(
            "passes",
            "echo hello from the sandbox; test \"$(id -u)\" != 0",
        ))
        .await;
    assert_eq!(pass.status(), 202);
    let pass: Value = pass.json().await.unwrap();
    let fail = server
        .submit(shell_skill("fails", "echo boom >&2; exit 3"))
        .await;
    assert_eq!(fail.status(), 202);
    let fail: Value = fail.json().await.unwrap();

    let pass = server.wait(pass["id"].as_str().unwrap(), 60).await;
    let fail = server.wait(fail["id"].as_str().unwrap(), 60).await;
    assert_eq!(pass.status, JobStatus::Passed, "{pass:?}");
    assert_eq!(pass.result.as_ref().unwrap().status, Status::Passed);
    // The job view carries the network mode and what the sink saw (nothing, here).
    let network = pass.result.as_ref().unwrap().network.as_ref().unwrap();
    assert_eq!(network.mode, "observe");
    assert!(network.observed.is_empty(), "{network:?}");
    assert_eq!(fail.status, JobStatus::Failed, "{fail:?}");
    assert_eq!(fail.result.as_ref().unwrap().exit_code, 3);

    for (job, status) in [(&pass, "PASSED"), (&fail, "FAILED")] {
        let resp = server
            .client
            .get(format!("{}/verify/{}/attestation", server.url, job.id))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let envelope = resp.bytes().await.unwrap();
        let statement = common::verify_with_published_key(&server, &envelope).await;
        let p = &statement["predicate"];
        assert_eq!(p["result"]["status"], status);
        assert_eq!(p["job"]["id"], job.id.as_str());
        assert_eq!(
            p["package"]["tree_sha256"],
            job.package.tree_sha256.as_str()
        );
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            job.package.tree_sha256.as_str()
        );
        assert_eq!(p["environment"]["network"], "observe");
        assert!(p["observed"]["network"].is_array(), "{p}");
        assert_eq!(p["tee"]["provider"], "simulated");
    }
    let logs: Value = server.get_json(&format!("/verify/{}/logs", pass.id)).await;
    assert!(logs["stdout"]
        .as_str()
        .unwrap()
        .contains("hello from the sandbox"));
    let logs: Value = server.get_json(&format!("/verify/{}/logs", fail.id)).await;
    assert!(logs["stderr"].as_str().unwrap().contains("boom"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_kills_its_container_quickly() {
    let Some(docker) = common::docker().await else {
        return;
    };
    let server = TestServer::start(docker, |_| {}).await;
    let job: Value = server
        .submit(shell_skill("sleeper", "sleep 120"))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = server.job(&id).await;
        if j.status == JobStatus::Running && j.phase == Some(Phase::Running) {
            break;
        }
        assert!(Instant::now() < deadline, "job never started: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give the container a moment to really be up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let clock = Instant::now();
    let resp = server
        .client
        .delete(format!("{}/verify/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let done = server.wait(&id, 10).await;
    let took = clock.elapsed();
    assert_eq!(done.status, JobStatus::Cancelled);
    assert!(took < Duration::from_secs(2), "cancel took {took:?}");
    let resp = server
        .client
        .get(format!("{}/verify/{id}/attestation", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "no_attestation".into()));
    // DELETE again removes the finished record.
    let resp = server
        .client
        .delete(format!("{}/verify/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_cut_off_and_the_daemon_stays_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_paused(Arc::new(InstantRunner), |s| {
        s.server.request_timeout_secs = 2;
    })
    .await;
    let mut sock = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /verify HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\r\n",
        server.addr
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&[0x1f, 0x8b, 0x08, 0x00]).await.unwrap(); // then nothing more
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes instead of waiting forever")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    // Still serving; no job was created and the partial upload was removed.
    server.assert_nothing_accepted().await;
    server.stop().await;
}
