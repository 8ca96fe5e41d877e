//! `skill-verifier inspect` as a user runs it: the built binary, real files, exit codes.

mod package_support;

use std::path::Path;
use std::process::{Command, Output};

use package_support::*;

/// Runs `inspect` with a private TMPDIR so the test can prove nothing is written there.
fn inspect(path: &Path, tmp: &Path) -> Output {
    inspect_with(&[], path, tmp)
}

fn inspect_with(flags: &[&str], path: &Path, tmp: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skill-verifier"))
        .arg("inspect")
        .args(flags)
        .arg(path)
        .env("TMPDIR", tmp)
        .env("SKILL_VERIFIER_DATA_DIR", tmp.join("data"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

fn fixture() -> (World, std::path::PathBuf) {
    let world = World::new();
    let tmp = world.root().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    (world, tmp)
}

#[test]
fn valid_package_prints_its_facts_as_json() {
    let (world, tmp) = fixture();
    let md = b"---\nname: hello\ndescription: Says hello.\nmetadata:\n  verify-test: sh run.sh\n  verify-timeout: \"60\"\n---\n# hello\n";
    let bytes = gz(&Tar::new()
        .file("hello/SKILL.md", md)
        .exec("hello/run.sh", b"echo hello\n")
        .finish());
    let input = world.archive(&bytes);
    let out = inspect_with(&["--no-scan"], &input, &tmp);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "hello");
    assert_eq!(json["description"], "Says hello.");
    assert_eq!(json["format"], "targz");
    assert_eq!(json["files"], 2);
    assert_eq!(json["bytes"], md.len() as u64 + 11);
    assert_eq!(
        json["archive_sha256"],
        skill_verifier::digest::Sha256Digest::of(&bytes).to_hex()
    );
    assert_eq!(json["tree_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(json["test"]["command"], "sh run.sh");
    assert_eq!(json["test"]["runtime"], "shell");
    assert_eq!(json["test"]["timeout_secs"], 60);
    assert_eq!(json["test"]["source"], "declared");
    // Nothing was written: `inspect --no-scan` reads and hashes, it makes no tar and no spool.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn a_directory_is_inspected_in_place() {
    let (world, tmp) = fixture();
    let dir = world.root().join("my-skill");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("SKILL.md"), skill_md("my-skill")).unwrap();
    let out = inspect(&dir, &tmp);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["format"], "directory");
    assert!(json["archive_sha256"].is_null());
    assert_eq!(json["test"]["source"], "smoke");
}

#[test]
fn invalid_package_exits_2_with_one_specific_line() {
    let (world, tmp) = fixture();
    let bytes = Tar::new()
        .file("SKILL.md", &skill_md("x"))
        .link("evil", kind::SYMLINK, "/etc/passwd")
        .finish();
    let input = world.archive(&bytes);
    let out = inspect(&input, &tmp);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "invalid package (symlink): evil: symlinks are not allowed"
    );
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn garbage_and_missing_paths_exit_2() {
    let (world, tmp) = fixture();
    let out = inspect(&world.archive(b"not an archive"), &tmp);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "invalid package (unsupported_format): unsupported archive format"
    );
    let out = inspect(&world.root().join("missing.zip"), &tmp);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("invalid package (unreadable_input)"));
}

#[test]
fn inspect_no_scan_needs_no_writable_temporary_directory() {
    let (world, _tmp) = fixture();
    let input = world.archive(&Tar::new().file("SKILL.md", &skill_md("x")).finish());
    // A TMPDIR that does not exist: `inspect --no-scan` writes nothing, so it does not care.
    let before = world.snapshot();
    let out = inspect_with(&["--no-scan"], &input, &world.root().join("no-such-tmp"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(world.snapshot(), before);
}

#[test]
fn our_own_io_failure_exits_3() {
    let (world, _tmp) = fixture();
    let input = world.archive(&Tar::new().file("SKILL.md", &skill_md("x")).finish());
    // The scan reads content from the normalised tar in a private temporary directory: with
    // no usable TMPDIR that is the verifier's failure (3), not the package's (2).
    let out = inspect(&input, &world.root().join("no-such-tmp"));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
