//! The per-file facts of a validated tree and the canonical tree digest (algorithm in the
//! parent module's docs).

use sha2::{Digest, Sha256};

use super::plan::Probe;
use crate::digest::Sha256Digest;

/// The header that starts the digested text; bump the version if the record format changes.
pub const TREE_DIGEST_HEADER: &str = "skill-verifier tree v1\n";

/// One regular file of a validated tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    /// Path relative to the tree's base (after [`skill_root`]: to the skill root).
    pub path: String,
    /// Any executable bit set.
    pub executable: bool,
    /// Size in bytes.
    pub len: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// Where the file's bytes start in the package's normalised tar (`None` when no tar was
    /// written, as for `inspect`): a scanner reads `len` bytes from there.
    pub tar_offset: Option<u64>,
    /// What the test plan learned of the content while it streamed past (Python test files
    /// and a root `package.json` only).
    pub probe: Option<Probe>,
}

/// The canonical tree digest over `files` (any order; they are sorted here).
pub fn digest(files: &[FileRecord]) -> Sha256Digest {
    let mut sorted: Vec<&FileRecord> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut hasher = Sha256::new();
    hasher.update(TREE_DIGEST_HEADER.as_bytes());
    for f in sorted {
        let mode = if f.executable { "755" } else { "644" };
        hasher
            .update(format!("{mode} {} {} {}\n", hex::encode(f.sha256), f.len, f.path).as_bytes());
    }
    Sha256Digest::finish(hasher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, executable: bool, content: &[u8]) -> FileRecord {
        FileRecord {
            path: path.into(),
            executable,
            len: content.len() as u64,
            sha256: Sha256::digest(content).into(),
            tar_offset: None,
            probe: None,
        }
    }

    #[test]
    fn digest_is_order_independent_and_mode_sensitive() {
        let a = rec("a.txt", false, b"a");
        let b = rec("b/run.sh", true, b"#!/bin/sh\n");
        assert_eq!(
            digest(&[a.clone(), b.clone()]),
            digest(&[b.clone(), a.clone()])
        );
        let mut b2 = b.clone();
        b2.executable = false;
        assert_ne!(digest(&[a.clone(), b]), digest(&[a, b2]));
    }

    #[test]
    fn digest_matches_the_documented_text() {
        let a = rec("SKILL.md", false, b"x");
        let text = format!(
            "{TREE_DIGEST_HEADER}644 {} 1 SKILL.md\n",
            hex::encode(Sha256::digest(b"x"))
        );
        assert_eq!(digest(&[a]), Sha256Digest::of(text.as_bytes()));
    }
}
