//! Several engines, one of them a second `dockerd` on a loopback TCP port with mutual TLS
//! (started by the harness, certificates made by the test): our client is accepted and
//! clients without the right certificate are refused; images are prepared on each engine
//! and share one identity; a daemon spreads jobs over both, records which engine ran each,
//! reports both in `/health`, passes over an engine that died, and leaves nothing behind; a
//! daemon on the other engine serves the same result from the shared cache.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dockerd::TlsDockerd;
use common::{shell_skill, TestServer};
use serde_json::Value;
use skill_verifier::package::Runtime;
use skill_verifier::sandbox::images::default_image;
use skill_verifier::sandbox::{DockerRunner, EngineTarget, Engines, Runner, SandboxError};

/// The host engine under a name of our own; `None` (outside CI) when it does not answer.
async fn local(name: &str, capacity: usize) -> Option<DockerRunner> {
    common::engine::connect().await?;
    let mut target = EngineTarget::from_env(capacity);
    target.name = name.into();
    Some(DockerRunner::connect_to(target).await.unwrap())
}

/// Containers on the TLS engine (it runs nothing but ours), through the docker CLI.
fn containers_on(engine: &TlsDockerd) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .envs(engine.target("tls", 1).docker_cli_env())
        .args(["ps", "-aq"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_engine_accepts_our_client_and_refuses_any_other() {
    if local("local", 1).await.is_none() {
        return;
    }
    let engine = TlsDockerd::start().await;

    let ours = DockerRunner::connect_to(engine.target("tls", 1))
        .await
        .expect("our client is accepted");
    ours.ping().await.unwrap();
    assert!(ours
        .oci_runtimes()
        .await
        .unwrap()
        .iter()
        .any(|r| r == "runc"));

    // Refusals are prompt: well inside the connect deadline.
    let refused = |what: &'static str, target: EngineTarget| async move {
        let started = Instant::now();
        let e = DockerRunner::connect_to(target).await.expect_err(what);
        eprintln!("{what}: {e} ({} ms)", started.elapsed().as_millis());
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "{what}: slow refusal"
        );
        e
    };
    let e = refused(
        "a client certificate from another CA",
        engine.target_with("rogue", 1, &engine.rogue_client),
    )
    .await;
    assert!(matches!(e, SandboxError::Connect(_)), "{e:?}");
    let e = refused(
        "a client that trusts another CA for the engine",
        engine.target_with("wrong-ca", 1, &engine.wrong_ca_client),
    )
    .await;
    assert!(matches!(e, SandboxError::Connect(_)), "{e:?}");
    let e = refused(
        "plain HTTP to the TLS port",
        EngineTarget {
            tls: None,
            ..engine.target("plain", 1)
        },
    )
    .await;
    assert!(matches!(e, SandboxError::Connect(_)), "{e:?}");

    // A client with no certificate at all (it trusts the engine's CA): refused in the
    // handshake, while the same client with our certificate gets the engine's answer.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(engine.client.join("ca.pem")).unwrap())
        .unwrap();
    let ping = engine.host.replacen("tcp://", "https://", 1) + "/_ping";
    let bare = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    let e = bare
        .get(&ping)
        .send()
        .await
        .expect_err("no client certificate");
    eprintln!("no client certificate: {e:?}");
    let with_cert = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(
            reqwest::Identity::from_pkcs8_pem(
                &std::fs::read(engine.client.join("cert.pem")).unwrap(),
                &pkcs8_key(&engine.client.join("key.pem")),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let answer = with_cert.get(&ping).send().await.unwrap();
    assert_eq!(answer.text().await.unwrap(), "OK");

    // A missing key is named before any connection is tried.
    let partial = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "cert.pem"] {
        std::fs::copy(engine.client.join(f), partial.path().join(f)).unwrap();
    }
    let e = refused(
        "no client key",
        engine.target_with("nokey", 1, partial.path()),
    )
    .await;
    let text = e.to_string();
    assert!(
        matches!(e, SandboxError::EngineTls { .. }) && text.contains("key.pem"),
        "{text}"
    );

    // The engine itself logged the refused handshakes (it saw them, not just our client).
    assert!(
        engine.log().to_lowercase().contains("tls"),
        "dockerd log: {}",
        engine.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_spreads_jobs_over_two_engines_and_the_cache_spans_them() {
    let Some(host_engine) = local("local", 1).await else {
        return;
    };
    let mut remote = TlsDockerd::start().await;
    // The shell runner image, built on the TLS engine by the recipe (images prepare's path).
    let tls = remote.prepare_shell_image().await;
    let image = default_image(Runtime::Shell);
    let (id_local, id_remote) = (
        host_engine.image_digest(&image).await.unwrap(),
        tls.image_digest(&image).await.unwrap(),
    );
    assert_ne!(id_local, id_remote, "two local builds, two image IDs");
    let identity = host_engine.image_identity(&image).await.unwrap();
    assert!(identity.starts_with("recipe:"), "{identity}");
    assert_eq!(identity, tls.image_identity(&image).await.unwrap());

    // One data dir for both daemons below: the store, and so the result cache, is shared.
    let data = tempfile::tempdir().unwrap();
    let configure = |data: std::path::PathBuf| {
        move |s: &mut skill_verifier::config::Settings| {
            s.data_dir = Some(data);
            s.sandbox.network = "none".into();
        }
    };

    // Daemon A: both engines, one slot each.
    let engines = Arc::new(Engines::new(vec![
        host_engine.with_background_removal(),
        tls.with_background_removal(),
    ]));
    let a = TestServer::start(engines.clone(), configure(data.path().into())).await;
    let health = a.get_json("/health").await;
    let names: Vec<&str> = health["engines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["reachable"], true, "{health}");
            assert_eq!(e["capacity"], 1, "{health}");
            e["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(names, ["local", "remote"]);
    assert_eq!(health["engines"][1]["transport"], "tls");

    let mut jobs = Vec::new();
    for i in 0..6 {
        let archive = shell_skill(&format!("spread-{i}"), &format!("sleep 1; echo job {i}"));
        let body: Value = a.submit(archive.clone()).await.json().await.unwrap();
        jobs.push((body["id"].as_str().unwrap().to_string(), archive));
    }
    let mut used = BTreeSet::new();
    let mut ran_locally = None;
    for (id, archive) in &jobs {
        let job = a.wait(id, 120).await;
        assert_eq!(job.status.as_str(), "passed", "{id}: {job:?}");
        let statement = a.statement(id).await;
        let engine = statement["predicate"]["environment"]["engine"]
            .as_str()
            .unwrap()
            .to_string();
        if engine == "local" {
            ran_locally = Some((id.clone(), archive.clone()));
        }
        used.insert(engine);
    }
    assert_eq!(
        used,
        BTreeSet::from(["local".to_string(), "remote".to_string()]),
        "both engines ran jobs"
    );
    a.stop().await;
    assert_eq!(
        containers_on(&remote),
        Vec::<String>::new(),
        "nothing left on the TLS engine"
    );

    // Daemon B: the TLS engine only, the same store. A package that ran on the local engine
    // is served from the result cache: the same job, not a new run.
    let only_tls = Arc::new(Engines::new(vec![DockerRunner::connect_to(engine_target(
        &remote,
    ))
    .await
    .unwrap()
    .with_background_removal()]));
    let b = TestServer::start(only_tls, configure(data.path().into())).await;
    let (id, archive) = ran_locally.expect("a job ran on the local engine");
    let body: Value = b.submit(archive).await.json().await.unwrap();
    assert_eq!(
        body["id"].as_str().unwrap(),
        id,
        "served from the cache: {body}"
    );
    b.stop().await;

    // Daemon C: both engines again; the TLS engine dies. /health says which engine is
    // gone, and every job still passes on the one that answers.
    let engines = Arc::new(Engines::new(vec![
        local("local", 1).await.unwrap().with_background_removal(),
        DockerRunner::connect_to(engine_target(&remote))
            .await
            .unwrap()
            .with_background_removal(),
    ]));
    let c = TestServer::start(engines, configure(data.path().into())).await;
    remote.kill();
    let health = c.get_json("/health").await;
    assert_eq!(health["docker"]["reachable"], true, "{health}");
    assert_eq!(health["engines"][0]["reachable"], true, "{health}");
    assert_eq!(health["engines"][1]["reachable"], false, "{health}");
    assert!(health["engines"][1]["error"].is_string(), "{health}");
    for i in 0..3 {
        let body: Value = c
            .submit(shell_skill(
                &format!("after-{i}"),
                &format!("echo after {i}"),
            ))
            .await
            .json()
            .await
            .unwrap();
        let job = c.wait(body["id"].as_str().unwrap(), 120).await;
        assert_eq!(job.status.as_str(), "passed", "{job:?}");
    }
    c.stop().await;
}

fn engine_target(remote: &TlsDockerd) -> EngineTarget {
    remote.target("remote", 1)
}

/// The key in PKCS#8 PEM (native-tls wants it so; openssl's EC keys are SEC1).
fn pkcs8_key(path: &std::path::Path) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
