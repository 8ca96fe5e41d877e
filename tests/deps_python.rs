//! Python requirements against the real engine and the real index (PyPI through this
//! machine's proxy): fetched through the sink's allowlisted egress, cached by content,
//! installed offline before the test, attested file by file; every bad input ends as the
//! issue says, and nothing partial reaches the cache.

mod common;

use std::path::Path;
use std::process::Command;

use common::{skill_md, tar_gz, TestServer};
use serde_json::Value;

/// Two small pure-python distributions, pinned.
const PINS: &str = "idna==3.7\nsix==1.16.0\n";
const TEST: &str = "python3 -c \"import idna, six; assert idna.__version__ == '3.7'; assert six.__version__ == '1.16.0'; print('imports ok')\"";

fn python_skill(name: &str, requirements: &str, test: &str) -> Vec<u8> {
    let md = skill_md(name, &[("verify-test", test), ("verify-runtime", "python")]);
    tar_gz(
        None,
        &[
            ("SKILL.md", &md, false),
            ("requirements.txt", requirements, false),
        ],
    )
}

async fn submit(server: &TestServer, archive: Vec<u8>) -> String {
    let resp = server.submit(archive).await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// What pip on this host downloads for the same pins: file name -> SHA-256.
fn host_pip_download(dir: &Path) -> Vec<(String, String)> {
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(dir)
        .args(["idna==3.7", "six==1.16.0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let (sha, _) = skill_verifier::deps::cache::hash_file(&e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), sha)
        })
        .collect();
    files.sort();
    files
}

fn sets_in(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("sets")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_requirements_install_offline_are_attested_and_served_from_the_cache() {
    let Some(runner) = common::docker().await else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_path_buf();
    let server = TestServer::start(runner.clone(), |s| {
        s.deps.cache_dir = Some(cache_dir.clone());
    })
    .await;
    let id = submit(&server, python_skill("deps-ok", PINS, TEST)).await;
    server.wait(&id, 300).await;
    let job = server.get_json(&format!("/verify/{id}")).await;
    assert_eq!(job["status"], "passed", "{job}");
    let st = server.statement(&id).await;
    let p = &st["predicate"];
    let deps = p["dependencies"].as_array().unwrap();
    let mut attested: Vec<(String, String)> = deps
        .iter()
        .map(|d| {
            assert_eq!(d["ecosystem"], "pypi");
            (
                d["filename"].as_str().unwrap().to_string(),
                d["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    attested.sort();
    let names: Vec<&str> = deps.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"idna") && names.contains(&"six"),
        "{deps:?}"
    );
    // The attested digests are those of the files pip downloads for the same pins.
    let host = tempfile::tempdir().unwrap();
    assert_eq!(attested, host_pip_download(host.path()));
    assert_eq!(p["install"]["exit_code"], 0, "{}", p["install"]);
    assert_eq!(p["install"]["cached"], false);
    assert_eq!(p["install"]["requirements"], "requirements.txt");
    assert!(p["install"]["duration_ms"].as_u64().unwrap() > 0);
    assert!(p["install"]["limits"]["max_download_bytes"]
        .as_u64()
        .is_some());
    assert_eq!(sets_in(&cache_dir), 1);
    server.stop().await;

    // A new daemon whose index cannot be reached still passes the same skill: the
    // distributions come from the cache, by content.
    let cache_dir2 = cache_dir.clone();
    let offline = TestServer::start(runner, |s| {
        s.deps.cache_dir = Some(cache_dir2);
        s.deps.python_index = "https://index.invalid/simple".into();
    })
    .await;
    let id = submit(&offline, python_skill("deps-ok", PINS, TEST)).await;
    let job = offline.wait(&id, 300).await;
    let view = offline.get_json(&format!("/verify/{id}")).await;
    assert_eq!(job.status.as_str(), "passed", "{view}");
    let st = offline.statement(&id).await;
    assert_eq!(st["predicate"]["install"]["cached"], true);
    assert_eq!(st["predicate"]["install"]["fetch_ms"], 0);
    let again: Vec<(String, String)> = {
        let mut v: Vec<(String, String)> = st["predicate"]["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["filename"].as_str().unwrap().to_string(),
                    d["sha256"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(again, attested);
    offline.stop().await;
}

/// Each bad requirement ends `failed` with a message naming it; an unreachable index ends
/// `error` naming the index and the setting; nothing reaches the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requirements_fail_and_an_unreachable_index_is_an_error() {
    let Some(runner) = common::docker().await else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_path_buf();
    let c = cache_dir.clone();
    let server = TestServer::start(runner.clone(), move |s| {
        s.deps.cache_dir = Some(c);
        // idna 3.7's wheel is ~66 kB, six's ~11 kB.
        s.deps.max_download_bytes = 40_000;
    })
    .await;
    let zeros = "0".repeat(64);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown-dist",
            "skill-verifier-no-such-distribution-4711==1.0\n".to_string(),
            "skill-verifier-no-such-distribution-4711",
        ),
        ("unknown-version", "six==99.0.0\n".to_string(), "six"),
        (
            "conflict",
            "six==1.16.0 ; python_version >= \"3\"\nsix==1.15.0 ; python_version >= \"3\"\n"
                .to_string(),
            "six",
        ),
        ("too-large", "idna==3.7\n".to_string(), "idna-3.7"),
        (
            "hash-mismatch",
            format!("six==1.16.0 --hash=sha256:{zeros}\n"),
            "six",
        ),
    ];
    let mut ids = Vec::new();
    for (name, req, _) in &cases {
        ids.push(submit(&server, python_skill(&format!("bad-{name}"), req, "true")).await);
    }
    for ((name, _, needle), id) in cases.iter().zip(&ids) {
        let job = server.wait(id, 300).await;
        let view = server.get_json(&format!("/verify/{id}")).await;
        assert_eq!(job.status.as_str(), "failed", "{name}: {view}");
        let st = server.statement(id).await;
        let p = &st["predicate"];
        let error = p["install"]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{name}: the message names {needle:?}: {error}"
        );
        assert_eq!(p["result"]["exit_code"], -1, "{name}: the test did not run");
        let codes: Vec<&str> = p["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&"dependencies_failed"), "{name}: {codes:?}");
        assert_eq!(p["verdict"]["status"], "FAILED");
    }
    assert_eq!(sets_in(&cache_dir), 0, "no failed fetch reaches the cache");
    assert_eq!(
        std::fs::read_dir(cache_dir.join("tmp")).map_or(0, |d| d.count()),
        0,
        "no scratch is left"
    );
    server.stop().await;

    let c = cache_dir.clone();
    let offline = TestServer::start(runner, move |s| {
        s.deps.cache_dir = Some(c);
        s.deps.python_index = "https://index.invalid/simple".into();
    })
    .await;
    let id = submit(
        &offline,
        python_skill("unreachable", "six==1.16.0\n", "true"),
    )
    .await;
    let job = offline.wait(&id, 300).await;
    let view = offline.get_json(&format!("/verify/{id}")).await;
    assert_eq!(job.status.as_str(), "error", "{view}");
    assert_eq!(view["error"]["code"], "dependencies_unavailable", "{view}");
    let message = view["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("https://index.invalid/simple"),
        "{message}"
    );
    assert!(
        message.contains("SKILL_VERIFIER_DEPS__PYTHON_INDEX"),
        "{message}"
    );
    assert_eq!(sets_in(&cache_dir), 0);
    // The daemon is still up.
    let health = offline.get_json("/health").await;
    assert!(health.is_object());
    offline.stop().await;
}

/// During the test the network is off: a test that tries the index gets nothing, and the
/// attempt is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_cannot_reach_the_index_and_its_attempt_is_recorded() {
    let Some(runner) = common::docker().await else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_path_buf();
    let server = TestServer::start(runner, move |s| s.deps.cache_dir = Some(c)).await;
    let test = "python3 -c \"import six, urllib.request\ntry:\n    urllib.request.urlopen('https://pypi.org/simple/six/', timeout=5)\n    print('REACHED')\nexcept Exception as e:\n    print('BLOCKED', type(e).__name__)\"";
    let id = submit(&server, python_skill("deps-net", "six==1.16.0\n", test)).await;
    let job = server.wait(&id, 300).await;
    let view = server.get_json(&format!("/verify/{id}")).await;
    assert_ne!(job.status.as_str(), "error", "{view}");
    let st = server.statement(&id).await;
    let p = &st["predicate"];
    assert_eq!(p["install"]["exit_code"], 0, "{}", p["install"]);
    let stdout = p["result"]["stdout_excerpt"].as_str().unwrap();
    assert!(stdout.contains("BLOCKED"), "{stdout}");
    let observed = p["observed"]["network"].as_array().unwrap();
    assert!(
        observed
            .iter()
            .any(|o| o["host"] == "pypi.org" && o["allowed"] == false),
        "{observed:?}"
    );
    server.stop().await;
}

/// A requirements file that chooses its own source is an invalid package (422).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requirement_with_its_own_source_makes_the_package_invalid() {
    let server = TestServer::start(std::sync::Arc::new(common::InstantRunner), |_| {}).await;
    for req in [
        "-e git+https://example.com/x.git#egg=x\n",
        "--index-url https://evil.example/simple\nsix\n",
        "six @ https://evil.example/six.whl\n",
    ] {
        let resp = server.submit(python_skill("bad-source", req, "true")).await;
        assert_eq!(resp.status(), 422, "{req}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_requirements", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("requirements.txt line"),
            "{body}"
        );
    }
    server.assert_nothing_accepted().await;
}

/// Packages vendored in `node_modules` work offline: nothing is fetched for Node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendored_node_modules_work_offline() {
    let Some(runner) = common::docker().await else {
        return;
    };
    let server = TestServer::start(runner, |_| {}).await;
    let md = skill_md(
        "node-vendored",
        &[
            (
                "verify-test",
                "node -e \"const pad = require('left-pad-lite'); if (pad('7', 3) !== '007') process.exit(1); console.log('vendored ok')\"",
            ),
            ("verify-runtime", "node"),
        ],
    );
    let archive = tar_gz(
        None,
        &[
            ("SKILL.md", &md, false),
            (
                "node_modules/left-pad-lite/package.json",
                "{\"name\": \"left-pad-lite\", \"version\": \"1.0.0\", \"main\": \"index.js\"}\n",
                false,
            ),
            (
                "node_modules/left-pad-lite/index.js",
                "module.exports = (s, n) => String(s).padStart(n, '0');\n",
                false,
            ),
        ],
    );
    let id = submit(&server, archive).await;
    let job = server.wait(&id, 120).await;
    let view = server.get_json(&format!("/verify/{id}")).await;
    assert_eq!(job.status.as_str(), "passed", "{view}");
    let st = server.statement(&id).await;
    assert!(st["predicate"].get("dependencies").is_none());
    server.stop().await;
}

/// `inspect` shows the declared requirements; `scan` reports unpinned ones as low findings.
#[test]
fn inspect_shows_requirements_and_scan_reports_unpinned_ones() {
    let dir = tempfile::tempdir().unwrap();
    let skill = dir.path().join("unpinned");
    std::fs::create_dir(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        skill_md(
            "unpinned",
            &[("verify-test", "true"), ("verify-runtime", "python")],
        ),
    )
    .unwrap();
    std::fs::write(skill.join("requirements.txt"), "six>=1.0\nidna==3.7\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_skill-verifier");
    let out = Command::new(bin)
        .args(["inspect", "--no-scan"])
        .arg(&skill)
        .output()
        .unwrap();
    assert!(out.status.success());
    let facts: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &facts["requirements"];
    assert_eq!(r["path"], "requirements.txt");
    assert_eq!(r["all_pinned"], false);
    assert_eq!(r["items"][0]["name"], "six");
    assert_eq!(r["items"][0]["pinned"], false);
    assert_eq!(r["items"][1]["pinned"], true);
    let out = Command::new(bin)
        .args(["scan", "--format", "json"])
        .arg(&skill)
        .env("SKILL_VERIFIER_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let unpinned: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "requirements_unpinned")
        .collect();
    assert_eq!(unpinned.len(), 1, "{report}");
    assert_eq!(unpinned[0]["severity"], "low");
    assert_eq!(unpinned[0]["category"], "dependencies");
    assert_eq!(unpinned[0]["line"], 1);
}

/// The result cache serves a package whose requirements are all exact pins, and never one
/// with an unpinned requirement: that one is resolved again every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_fully_pinned_requirements_are_served_from_the_result_cache() {
    let Some(runner) = common::docker().await else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_path_buf();
    let server = TestServer::start(runner, move |s| s.deps.cache_dir = Some(c)).await;
    for (name, requirements, cached) in [
        ("deps-pinned", "six==1.16.0\n", true),
        ("deps-unpinned", "six>=1.15\n", false),
    ] {
        let first = submit(
            &server,
            python_skill(name, requirements, "python3 -c 'import six'"),
        )
        .await;
        let job = server.wait(&first, 300).await;
        assert_eq!(job.status.as_str(), "passed", "{name}");
        let resp = server
            .submit(python_skill(name, requirements, "python3 -c 'import six'"))
            .await;
        let body: Value = resp.json().await.unwrap();
        let second = body["id"].as_str().unwrap().to_string();
        assert_eq!(second == first, cached, "{name}: {body}");
        let job = server.wait(&second, 300).await;
        assert_eq!(job.status.as_str(), "passed", "{name}");
    }
    server.stop().await;
}
