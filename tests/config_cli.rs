//! A bad configuration stops `serve` and `verify` at start with exit 3 (the verifier cannot
//! do its job; 2 stays "invalid package") and a message naming the key.

use std::process::Command;

fn run(args: &[&str], env: (&str, &str)) -> (Option<i32>, String) {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skill-verifier"))
        .args(args)
        .arg("--data-dir")
        .arg(data.path())
        .env(env.0, env.1)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_and_verify_refuse_a_bad_sandbox_before_doing_anything() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-world");
    let cases = [
        ("SKILL_VERIFIER_SANDBOX__NETWORK", "host", "sandbox.network"),
        ("SKILL_VERIFIER_SANDBOX__USER", "00", "sandbox.user"),
        ("SKILL_VERIFIER_SANDBOX__USER", "root", "sandbox.user"),
        (
            "SKILL_VERIFIER_SANDBOX__MEMORY_BYTES",
            "0",
            "sandbox.memory_bytes",
        ),
        ("SKILL_VERIFIER_SANDBOX__PIDS", "-1", "sandbox.pids"),
        ("SKILL_VERIFIER_SANDBOX__IMAGES__NODE", "", "sandbox.images"),
    ];
    for (var, value, key) in cases {
        for args in [
            &["serve", "--listen", "127.0.0.1:0"][..],
            &["verify", example][..],
        ] {
            let (code, stderr) = run(args, (var, value));
            assert_eq!(code, Some(3), "{args:?} {var}={value}: {stderr}");
            assert!(stderr.contains(key), "{args:?} {var}={value}: {stderr}");
        }
    }
}

#[test]
fn serve_refuses_a_bad_store_naming_the_key() {
    let cases = [
        ("SKILL_VERIFIER_STORE", "mysql://db/sv", "`store`"),
        ("SKILL_VERIFIER_STORE__LEASE_SECS", "0", "store.lease_secs"),
        (
            "SKILL_VERIFIER_STORE__HEARTBEAT_SECS",
            "29",
            "store.heartbeat_secs",
        ),
        ("SKILL_VERIFIER_WEBHOOKS__URL", "ftp://x", "webhooks.url"),
    ];
    for (var, value, key) in cases {
        let (code, stderr) = run(&["serve", "--listen", "127.0.0.1:0"], (var, value));
        assert_eq!(code, Some(3), "{var}={value}: {stderr}");
        assert!(stderr.contains(key), "{var}={value}: {stderr}");
    }
    // The flag is checked the same way, and an unreachable database stops start-up with its
    // address and no password.
    let (code, stderr) = run(
        &["serve", "--listen", "127.0.0.1:0", "--store", "sqlite3://x"],
        ("RUST_LOG", "off"),
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("`store`"), "{stderr}");
    let (code, stderr) = run(
        &[
            "serve",
            "--no-prepare",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "postgres://sv:hunter2@127.0.0.1:1/sv",
        ],
        ("RUST_LOG", "off"),
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
