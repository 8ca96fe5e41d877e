//! Key files: creation with the right modes, reuse, refusal of readable private keys, and no
//! secret in Debug or errors.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use skill_verifier::attest::keys::{self, KeyError, Signer};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn load_or_create_makes_a_0600_key_and_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/keys");
    let first = Signer::load_or_create(&dir).unwrap();
    assert_eq!(mode(&dir.join("signing.key")), 0o600);
    assert_eq!(mode(&dir.join("signing.pub")), 0o644);
    assert_eq!(mode(&dir), 0o700);
    let public = std::fs::read_to_string(dir.join("signing.pub")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    let private = std::fs::read_to_string(dir.join("signing.key")).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));

    let second = Signer::load_or_create(&dir).unwrap();
    assert_eq!(first.key_id(), second.key_id());
    assert_eq!(
        keys::load_public_key(&dir.join("signing.pub")).unwrap(),
        first.verifying_key()
    );

    // A deleted public key is written again from the private one.
    std::fs::remove_file(dir.join("signing.pub")).unwrap();
    let third = Signer::load_or_create(&dir).unwrap();
    assert_eq!(third.key_id(), first.key_id());
    assert_eq!(
        std::fs::read_to_string(dir.join("signing.pub")).unwrap(),
        public
    );
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn racing_first_starts_agree_on_one_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| Signer::load_or_create(&dir).unwrap().key_id()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

#[test]
fn group_or_world_readable_private_keys_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let signer = Signer::load_or_create(&dir).unwrap();
    let key = dir.join("signing.key");
    for bad in [0o640, 0o604, 0o660, 0o644, 0o700 | 0o004] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(bad)).unwrap();
        match Signer::load(&key) {
            Err(KeyError::InsecurePermissions { mode, .. }) => assert_eq!(mode, bad),
            other => panic!("mode {bad:o}: want InsecurePermissions, got {other:?}"),
        }
        // The daemon path refuses too rather than silently making a new key.
        assert!(matches!(
            Signer::load_or_create(&dir),
            Err(KeyError::InsecurePermissions { .. })
        ));
    }
    for ok in [0o600, 0o400] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(ok)).unwrap();
        assert_eq!(Signer::load(&key).unwrap().key_id(), signer.key_id());
    }
}

#[test]
fn errors_and_debug_carry_no_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let signer = Signer::load_or_create(&dir).unwrap();
    let pem = std::fs::read_to_string(dir.join("signing.key")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();

    assert!(!format!("{signer:?}").contains(&body[..20]));

    // A corrupted key: the error names the file, not its content.
    let broken = dir.join("broken.key");
    std::fs::write(&broken, pem.replace('A', "*")).unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Signer::load(&broken).unwrap_err();
    assert!(matches!(err, KeyError::ParsePrivate { .. }));
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&body[..20]), "{shown}");

    // Loading a private key as the public one fails without echoing it either.
    let err = keys::load_public_key(&dir.join("signing.key")).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(&body[..20]));
}

#[test]
fn a_directory_or_missing_file_is_not_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        Signer::load(&tmp.path().join("nope")),
        Err(KeyError::Read { .. })
    ));
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(matches!(
        Signer::load(tmp.path()),
        Err(KeyError::NotAKeyFile { .. })
    ));
}

#[test]
fn write_to_refuses_to_overwrite_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Signer::generate();
    first.write_to(tmp.path()).unwrap();
    let second = Signer::generate();
    assert!(matches!(
        second.write_to(tmp.path()),
        Err(KeyError::AlreadyExists { .. })
    ));
    assert_eq!(
        Signer::load(&tmp.path().join("signing.key"))
            .unwrap()
            .key_id(),
        first.key_id()
    );
}
