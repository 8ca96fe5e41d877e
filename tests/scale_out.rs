//! Several daemons on one PostgreSQL database, as real `serve` processes over real sockets
//! and the real Docker engine: a SIGKILLed daemon's jobs are rescued by the others after its
//! leases expire, every job ends passed with one attestation per attempt that verifies
//! against any surviving daemon's `GET /keys`; a paused daemon (SIGSTOP) that wakes after
//! losing its lease cannot write its result; a live daemon's heartbeat keeps a job that runs
//! longer than the lease.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skill_verifier::store::JobStatus;

/// One `serve` process on the shared database, with short leases so a test sees expiry.
struct Node {
    child: Child,
    url: String,
    data: tempfile::TempDir,
}

impl Node {
    fn spawn(db: &str, lease_secs: u64, heartbeat_secs: u64) -> Node {
        let data = tempfile::tempdir().unwrap();
        let (child, url) = Self::start(db, data.path(), lease_secs, heartbeat_secs);
        Node { child, url, data }
    }

    /// A `serve` process on `data`, and its URL (a port of its own, see `spawn_serve`).
    fn start(db: &str, data: &Path, lease_secs: u64, heartbeat_secs: u64) -> (Child, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skill-verifier"));
        cmd.args(["serve", "--no-prepare", "--workers", "2", "--store", db])
            .arg("--data-dir")
            .arg(data)
            .env("SKILL_VERIFIER_STORE__LEASE_SECS", lease_secs.to_string())
            .env(
                "SKILL_VERIFIER_STORE__HEARTBEAT_SECS",
                heartbeat_secs.to_string(),
            )
            .env("SKILL_VERIFIER_SERVER__WARM_CONTAINERS", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        common::spawn_serve(cmd)
    }

    fn instance(&self) -> String {
        std::fs::read_to_string(self.data.path().join("instance-id"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_healthy(client: &reqwest::Client, url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{url}/health")).send().await {
            if r.status() == 200 {
                return r.json().await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("daemon at {url} never became healthy");
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// A Prometheus sample's value (`name` without labels) from `GET /metrics`.
async fn metric(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn status_of(job: &Value) -> JobStatus {
    JobStatus::parse(job["status"].as_str().unwrap()).unwrap()
}

fn labelled_containers(instance: &str) -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=dev.skill-verifier.instance={instance}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Every signed attempt of every job, straight from the database: job id -> attempts.
async fn attestation_rows(db: &str) -> HashMap<String, Vec<u32>> {
    let (client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut rows: HashMap<String, Vec<u32>> = HashMap::new();
    for row in client
        .query(
            "SELECT job_id, attempt FROM attestations ORDER BY attempt",
            &[],
        )
        .await
        .unwrap()
    {
        rows.entry(row.get(0))
            .or_default()
            .push(row.get::<_, i32>(1) as u32);
    }
    rows
}

/// Verifies a job's envelope (fetched from `url`) against the key set `keys` (a `GET /keys`
/// answer), picking the key the envelope names; returns the attested attempt.
async fn verify_against(client: &reqwest::Client, url: &str, id: &str, keys: &Value) -> u32 {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let resp = client
        .get(format!("{url}/verify/{id}/attestation"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "attestation of {id} from {url}");
    let env: skill_verifier::attest::dsse::Envelope =
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let keyid = env.signatures[0].keyid.clone();
    let pem = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["keyid"] == keyid.as_str())
        .unwrap_or_else(|| panic!("key {keyid} is not published: {keys}"))["public_key_pem"]
        .as_str()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem).unwrap();
    let verified = skill_verifier::attest::verify::verify_envelope(&env, &key, None)
        .expect("the attestation verifies under the published key");
    verified.statement.predicate.job.attempt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_finish_thirty_jobs_when_one_is_sigkilled_mid_run() {
    if common::docker().await.is_none() {
        return;
    }
    let Some(db) = common::pg::fresh_database().await else {
        return;
    };
    let client = reqwest::Client::new();
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::spawn(&db, 6, 2)).collect();
    for n in &nodes {
        let health = wait_healthy(&client, &n.url).await;
        assert_eq!(health["store"]["kind"], "postgres", "{health}");
        assert_eq!(health["store"]["reachable"], true, "{health}");
    }

    // 30 distinct skills (no cache hits), round-robin over the three daemons.
    let mut ids = Vec::new();
    for i in 0..30 {
        let url = &nodes[i % 3].url;
        let archive = common::shell_skill(&format!("scale-{i}"), "sleep 2; echo done");
        let resp = client
            .post(format!("{url}/verify"))
            .body(archive)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let v: Value = resp.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }

    // Kill daemon 0 while it holds leases on running jobs.
    let victim_url = nodes[0].url.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if metric(&client, &victim_url, "skill_verifier_leases_held").await >= 1.0
            && metric(&client, &victim_url, "skill_verifier_claims_total").await >= 3.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "the victim never held a lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let victim_instance = nodes[0].instance();
    nodes[0].child.kill().unwrap(); // SIGKILL
    nodes[0].child.wait().unwrap();
    assert!(
        labelled_containers(&victim_instance) >= 1,
        "the killed daemon left its containers behind"
    );

    // Every job ends passed, asked of the survivors (any daemon answers for any job).
    let survivors = [nodes[1].url.clone(), nodes[2].url.clone()];
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut finished = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let url = &survivors[i % 2];
        loop {
            let j = get_json(&client, &format!("{url}/verify/{id}")).await;
            if status_of(&j).is_finished() {
                assert_eq!(status_of(&j), JobStatus::Passed, "{j}");
                finished.push(j);
                break;
            }
            assert!(Instant::now() < deadline, "job {id} never finished: {j}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(finished.len(), 30);

    // Each final attestation verifies against a survivor's GET /keys, which publishes the
    // keys of all three daemons (the dead one's included: it signed some of these).
    let keys = get_json(&client, &format!("{}/keys", survivors[0])).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 3, "{keys}");
    let rows = attestation_rows(&db).await;
    let mut rescued = 0;
    for (i, j) in finished.iter().enumerate() {
        let id = j["id"].as_str().unwrap();
        let attempt = j["attempt"].as_u64().unwrap() as u32;
        if attempt > 1 {
            rescued += 1;
        }
        let attested = verify_against(&client, &survivors[(i + 1) % 2], id, &keys).await;
        assert_eq!(
            attested, attempt,
            "the job serves its final attempt's attestation"
        );
        // One signed result per attempt: the killed attempts never signed, so exactly one.
        assert_eq!(rows.get(id), Some(&vec![attempt]), "job {id}");
    }
    assert!(rescued >= 1, "the killed daemon's running jobs ran again");
    let mut rescues = 0.0;
    for url in &survivors {
        rescues += metric(&client, url, "skill_verifier_rescues_total").await;
    }
    assert_eq!(
        rescues as usize, rescued,
        "every re-run is a rescue by a survivor"
    );

    // The dead daemon's containers (running and pooled, with their sinks) were removed by
    // the survivors that took its jobs over, before anyone restarted it.
    assert_eq!(
        labelled_containers(&nodes[0].instance()),
        0,
        "the survivors removed the dead daemon's containers"
    );
    let (child, url) = Node::start(&db, nodes[0].data.path(), 6, 2);
    let victim = Node {
        child,
        url,
        data: tempfile::tempdir().unwrap(),
    };
    wait_healthy(&client, &victim.url).await;
    victim.stop();
    let instances: Vec<String> = nodes.iter().map(Node::instance).collect();
    for n in nodes.drain(1..) {
        n.stop();
    }
    for instance in instances {
        assert_eq!(labelled_containers(&instance), 0, "no container remains");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_daemon_that_lost_its_lease_cannot_write_its_result() {
    if common::docker().await.is_none() {
        return;
    }
    let Some(db) = common::pg::fresh_database().await else {
        return;
    };
    let client = reqwest::Client::new();
    let a = Node::spawn(&db, 3, 1);
    wait_healthy(&client, &a.url).await;
    let archive = common::shell_skill("paused-daemon", "sleep 5; echo done");
    let resp = client
        .post(format!("{}/verify", a.url))
        .body(archive)
        .send()
        .await
        .unwrap();
    let id = common::accepted_id(resp).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_json(&client, &format!("{}/verify/{id}", a.url)).await["phase"] != "running" {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A freezes mid-run; B starts on the same database and, once A's lease expired, takes
    // the job over as attempt 2 and finishes it.
    a.signal(libc::SIGSTOP);
    let b = Node::spawn(&db, 3, 1);
    wait_healthy(&client, &b.url).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let j = get_json(&client, &format!("{}/verify/{id}", b.url)).await;
        if status_of(&j).is_finished() {
            break j;
        }
        assert!(Instant::now() < deadline, "B never finished the job: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status_of(&done), JobStatus::Passed, "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(
        metric(&client, &b.url, "skill_verifier_rescues_total").await,
        1.0
    );

    // A wakes up, finishes its attempt 1 and is refused by the fence.
    a.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&client, &a.url, "skill_verifier_results_fenced_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "A's late result was never refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = get_json(&client, &format!("{}/verify/{id}", a.url)).await;
    assert_eq!(after["attempt"], 2, "{after}");
    assert_eq!(
        after["finished_at"], done["finished_at"],
        "nothing overwrote B's result"
    );
    assert_eq!(attestation_rows(&db).await.get(&id), Some(&vec![2]));
    // The job's attestation is B's, and A publishes B's key too.
    let keys = get_json(&client, &format!("{}/keys", a.url)).await;
    assert_eq!(verify_against(&client, &a.url, &id, &keys).await, 2);
    let instances = [a.instance(), b.instance()];
    a.stop();
    b.stop();
    for instance in instances {
        assert_eq!(labelled_containers(&instance), 0, "no container remains");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_daemons_heartbeat_keeps_a_job_longer_than_its_lease() {
    if common::docker().await.is_none() {
        return;
    }
    let Some(db) = common::pg::fresh_database().await else {
        return;
    };
    let client = reqwest::Client::new();
    // 3 s leases, a job of 8 s: only the heartbeat keeps it from being rescued by B.
    let a = Node::spawn(&db, 3, 1);
    let b = Node::spawn(&db, 3, 1);
    wait_healthy(&client, &a.url).await;
    wait_healthy(&client, &b.url).await;
    // Whichever daemon claims the job runs it to the end; the other must not take it over.
    let resp = client
        .post(format!("{}/verify", a.url))
        .body(common::shell_skill("long-job", "sleep 8; echo done"))
        .send()
        .await
        .unwrap();
    let id = common::accepted_id(resp).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let j = get_json(&client, &format!("{}/verify/{id}", b.url)).await;
        if status_of(&j).is_finished() {
            break j;
        }
        assert!(Instant::now() < deadline, "the job never finished: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status_of(&done), JobStatus::Passed, "{done}");
    assert_eq!(done["attempt"], 1, "never taken over: {done}");
    let mut renewals = 0.0;
    for n in [&a, &b] {
        assert_eq!(
            metric(&client, &n.url, "skill_verifier_rescues_total").await,
            0.0
        );
        renewals += metric(&client, &n.url, "skill_verifier_lease_renewals_total").await;
    }
    assert!(
        renewals >= 5.0,
        "the lease was renewed while the job ran: {renewals}"
    );
    assert_eq!(attestation_rows(&db).await.get(&id), Some(&vec![1]));
    let instances = [a.instance(), b.instance()];
    a.stop();
    b.stop();
    for instance in instances {
        assert_eq!(labelled_containers(&instance), 0, "no container remains");
    }
}
