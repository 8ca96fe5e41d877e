//! Coverage-guided fuzzing of the one-pass package reader (`package::read`).
//!
//! Any input bytes are written to a file on a tmpfs and read as a package with small limits.
//! libFuzzer reports a panic, a hang (`-timeout`) or memory beyond `-rss_limit_mb`; on top,
//! these properties are asserted for every input:
//! - a refusal leaves nothing behind (no output tar; the spool is an unnamed file);
//! - an accepted package's tar holds exactly its files, and reading that tar again gives the
//!   same tree digest and byte-identical tar bytes.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run package_read -s none -- -max_total_time=600`
//! (see docs/packages.md).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skill_verifier::package::{self, Limits};

fn limits() -> Limits {
    Limits {
        unpacked_bytes: 4 << 20,
        entries: 200,
        ..Limits::default()
    }
}

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix("skill-verifier-fuzz-")
            .tempdir_in(base)
            .expect("scratch dir")
            .keep()
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let input = dir.join("input");
    let out = dir.join("out.tar");
    let again = dir.join("again.tar");
    std::fs::write(&input, data).expect("write input");
    match package::read(&input, &out, &limits()) {
        Ok(pkg) => {
            let tar = std::fs::read(&out).expect("output tar");
            assert_eq!(tar.len() as u64, pkg.tar.len);
            assert_eq!(
                skill_verifier::digest::Sha256Digest::of(&tar),
                pkg.tar.sha256
            );
            for fact in &pkg.file_facts {
                let at = fact.tar_offset.expect("offset") as usize;
                let body = &tar[at..at + fact.len as usize];
                assert_eq!(
                    *skill_verifier::digest::Sha256Digest::of(body).as_bytes(),
                    fact.sha256
                );
            }
            let second = package::read(&out, &again, &limits()).expect("the tar reads again");
            assert_eq!(second.tree_sha256, pkg.tree_sha256);
            assert_eq!(second.tar.sha256, pkg.tar.sha256);
            std::fs::remove_file(&out).expect("remove output");
            std::fs::remove_file(&again).expect("remove second output");
        }
        Err(_) => {
            assert!(!out.exists(), "a refusal left its output behind");
        }
    }
    // Only the input is left in the scratch dir, whatever happened.
    let left = std::fs::read_dir(dir).expect("scratch").count();
    assert_eq!(left, 1, "something besides the input was left");
});
