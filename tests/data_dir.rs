//! What a job leaves on the host: during and after a run the data directory holds only the
//! database, the keys, the instance id and content-addressed blobs. No file of the package
//! is ever created on the host: its tree exists only inside the normalised tar blob.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{docker, skill_md, tar_gz, TestServer};
use skill_verifier::store::JobStatus;

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let ft = entry.file_type().unwrap();
        assert!(
            !ft.is_symlink(),
            "symlink in the data dir: {}",
            entry.path().display()
        );
        if ft.is_dir() {
            walk(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

/// Every file under `data` is one the daemon itself owns; none holds the package's marker
/// file as a file of its own.
fn assert_only_own_files(data: &Path, marker: &[u8]) {
    let mut files = Vec::new();
    walk(data, &mut files);
    for file in &files {
        let rel = file.strip_prefix(data).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let own = match first {
            "skill-verifier.db" | "skill-verifier.db-wal" | "skill-verifier.db-shm" => true,
            "instance-id" => true,
            "keys" => true,
            // Blobs are named by their digest (or a private temp name while being written).
            "blobs" => {
                let name = rel.file_name().unwrap().to_str().unwrap();
                name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
                    || name.starts_with(".tmp-")
            }
            _ => false,
        };
        assert!(own, "unexpected file in the data dir: {}", rel.display());
        let bytes = std::fs::read(file).unwrap();
        assert_ne!(
            bytes,
            marker,
            "a file of the package on the host: {}",
            rel.display()
        );
    }
}

#[tokio::test]
async fn during_and_after_a_job_the_data_dir_holds_only_the_database_keys_and_blobs() {
    let Some(runner) = docker().await else { return };
    let server = TestServer::start(runner, |_| {}).await;
    let marker = b"marker file of the package: it must not appear on the host\n";
    let md = skill_md(
        "data-dir-check",
        &[
            ("verify-test", "test -f scripts/marker.txt && sleep 2"),
            ("verify-runtime", "shell"),
        ],
    );
    let archive = tar_gz(
        Some("data-dir-check"),
        &[
            ("SKILL.md", &md, false),
            (
                "scripts/marker.txt",
                std::str::from_utf8(marker).unwrap(),
                false,
            ),
        ],
    );
    let resp = server.submit(archive).await;
    assert_eq!(resp.status(), 202);
    let job: serde_json::Value = resp.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();

    // While it runs (checked several times), then once it has finished.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut checked_while_running = 0;
    loop {
        let current = server.job(&id).await;
        if current.status.is_finished() {
            assert_eq!(current.status, JobStatus::Passed, "{current:?}");
            break;
        }
        if current.status == JobStatus::Running {
            assert_only_own_files(server.data_dir.path(), marker);
            checked_while_running += 1;
        }
        assert!(tokio::time::Instant::now() < deadline, "job never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(checked_while_running > 0, "the job was never seen running");
    assert_only_own_files(server.data_dir.path(), marker);
    server.stop().await;
}
