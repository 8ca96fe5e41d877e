//! The `keygen` and `attestation verify` commands, run as the real binary.

mod attest_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use attest_support::*;
use base64::Engine as _;
use skill_verifier::attest::dsse::Envelope;
use skill_verifier::attest::keys::Signer;
use skill_verifier::attest::sign_statement;
use skill_verifier::digest::Sha256Digest;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skill-verifier"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Runs the binary; returns (exit code, stdout, stderr).
fn run(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verify(file: &Path, key: &Path, package: Option<&Path>) -> (i32, String, String) {
    let mut args = vec![
        "attestation".as_ref(),
        "verify".as_ref(),
        file.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ];
    if let Some(p) = package {
        args.push("--package".as_ref());
        args.push(p.as_os_str());
    }
    run(&args)
}

fn keygen(dir: &Path) -> (i32, String, String) {
    run(&["keygen".as_ref(), "--out".as_ref(), dir.as_os_str()])
}

#[test]
fn keygen_writes_a_0600_private_key_and_a_public_pem_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let (code, out, err) = keygen(&dir);
    assert_eq!(code, 0, "{out}{err}");
    let private = dir.join("signing.key");
    let public = dir.join("signing.pub");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&private), 0o600);
    assert!(std::fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    let signer = Signer::load(&private).unwrap();
    assert!(
        out.contains(&format!("key id:      {}", signer.key_id())),
        "{out}"
    );
    // Nothing secret on the terminal.
    let pem = std::fs::read_to_string(&private).unwrap();
    let secret_line = pem.lines().nth(1).unwrap();
    assert!(!out.contains(secret_line) && !err.contains(secret_line));

    let (code, out, err) = keygen(&dir);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(Signer::load(&private).unwrap().key_id(), signer.key_id());
}

#[tokio::test]
async fn verify_reports_valid_and_invalid_with_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    assert_eq!(keygen(&keys).0, 0);
    let signer = Signer::load(&keys.join("signing.key")).unwrap();
    let public = keys.join("signing.pub");
    let env = sign_statement(sample_statement(tree()), &signer, &simulated())
        .await
        .unwrap();
    let att = tmp.path().join("att.json");
    write_envelope(&att, &env);

    let (code, out, err) = verify(&att, &public, None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("attestation: VALID"), "{out}");
    assert!(out.contains("signature: ok"), "{out}");
    assert!(out.contains("report_data binding: ok"), "{out}");
    assert!(out.contains("quote: SIMULATED"), "{out}");
    assert!(out.contains("package digest: not checked"), "{out}");
    assert!(
        out.contains("hello-skill") && out.contains("Passed"),
        "{out}"
    );

    // One signature byte flipped: invalid, with the reason.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut tampered = env.clone();
    let mut sig = b64.decode(&tampered.signatures[0].sig).unwrap();
    sig[0] ^= 1;
    tampered.signatures[0].sig = b64.encode(sig);
    let bad = tmp.path().join("bad.json");
    write_envelope(&bad, &tampered);
    let (code, out, _) = verify(&bad, &public, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("INVALID") && out.contains("bad signature"),
        "{out}"
    );

    // Another verifier's key.
    let other = tmp.path().join("other");
    assert_eq!(keygen(&other).0, 0);
    let (code, out, _) = verify(&att, &other.join("signing.pub"), None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("wrong key"), "{out}");
}

#[test]
fn unreadable_inputs_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    assert_eq!(keygen(&keys).0, 0);
    let public = keys.join("signing.pub");

    let (code, _, err) = verify(&tmp.path().join("missing.json"), &public, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.json"), "{err}");

    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, "this is not json").unwrap();
    let (code, _, err) = verify(&junk, &public, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a DSSE envelope"), "{err}");

    let env = Envelope::sign("x", b"y", &Signer::generate());
    let att = tmp.path().join("att.json");
    write_envelope(&att, &env);
    let bad_key = tmp.path().join("bad.pub");
    std::fs::write(&bad_key, "not a key").unwrap();
    let (code, _, err) = verify(&att, &bad_key, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an Ed25519 public key"), "{err}");
}

fn write_skill(root: &Path, script: &str) {
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    std::fs::write(
        root.join("SKILL.md"),
        "---\nname: hello-skill\ndescription: Says hello.\n---\n# Hello\n",
    )
    .unwrap();
    std::fs::write(root.join("scripts/hello.sh"), script).unwrap();
}

/// `--package` recomputes the tree digest with the package stage.
#[tokio::test]
async fn package_flag_checks_the_tree_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let skill = tmp.path().join("hello-skill");
    write_skill(&skill, "echo hello\n");
    let limits = skill_verifier::package::Limits::default();
    let tree: Sha256Digest = skill_verifier::package::inspect(&skill, &limits)
        .unwrap()
        .tree_sha256;

    let keys = tmp.path().join("keys");
    assert_eq!(keygen(&keys).0, 0);
    let signer = Signer::load(&keys.join("signing.key")).unwrap();
    let mut statement = sample_statement(tree);
    statement.predicate.package.archive_sha256 = None;
    let statement = skill_verifier::attest::statement::Statement::new(statement.predicate);
    let env = sign_statement(statement, &signer, &simulated())
        .await
        .unwrap();
    let att = tmp.path().join("att.json");
    write_envelope(&att, &env);
    let public = keys.join("signing.pub");

    let (code, out, err) = verify(&att, &public, Some(&skill));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("package digest: ok (tree sha256 {tree})")),
        "{out}"
    );

    // The same skill as a tar archive has the same tree digest.
    let tar_path = tmp.path().join("hello-skill.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    builder.append_dir_all("hello-skill", &skill).unwrap();
    builder.finish().unwrap();
    drop(builder);
    let (code, out, err) = verify(&att, &public, Some(&tar_path));
    assert_eq!(code, 0, "{out}{err}");

    // A different package: one changed script.
    let other = tmp.path().join("other/hello-skill");
    write_skill(&other, "echo goodbye\n");
    let (code, out, err) = verify(&att, &public, Some(&other));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("package digest mismatch"), "{out}");

    // A package that cannot be read at all is unreadable input.
    let (code, _, err) = verify(&att, &public, Some(&tmp.path().join("absent")));
    assert_eq!(code, 2, "{err}");
}
