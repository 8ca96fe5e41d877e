//! The unpacked tree: the skill root, the canonical tree digest (algorithm in the parent
//! module's docs), and validation of a plain directory given to the CLI.

use std::fs::FileType;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::path::ArchivePath;
use super::{Limits, PackageError};
use crate::digest::Sha256Digest;

/// The header that starts the digested text; bump the version if the record format changes.
pub const TREE_DIGEST_HEADER: &str = "skill-verifier tree v1\n";

/// One regular file of a validated tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Path relative to the tree's base (after [`skill_root`]: to the skill root).
    pub path: String,
    /// Any executable bit set.
    pub executable: bool,
    /// Size in bytes.
    pub len: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
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

/// Finds the skill root under `base`: its single top-level entry when that is a folder
/// holding `SKILL.md`, otherwise `base` itself. Returns the folder's name (if any) and the
/// files re-rooted to the skill root.
pub fn skill_root(
    base: &Path,
    files: Vec<FileRecord>,
) -> Result<(Option<String>, Vec<FileRecord>), PackageError> {
    let mut top = Vec::new();
    for item in std::fs::read_dir(base).map_err(PackageError::io(base))? {
        let item = item.map_err(PackageError::io(base))?;
        top.push(item);
        if top.len() > 1 {
            break;
        }
    }
    if let [only] = top.as_slice() {
        let is_dir = item_is_dir(only)?;
        if let (true, Some(name)) = (is_dir, only.file_name().to_str()) {
            let skill_md = format!("{name}/SKILL.md");
            if files.iter().any(|f| f.path == skill_md) {
                let prefix = format!("{name}/");
                let files = files
                    .into_iter()
                    .map(|mut f| {
                        f.path = f.path[prefix.len()..].to_string();
                        f
                    })
                    .collect();
                return Ok((Some(name.to_string()), files));
            }
        }
    }
    if files.iter().any(|f| f.path == "SKILL.md") {
        Ok((None, files))
    } else {
        Err(PackageError::MissingSkillMd)
    }
}

fn item_is_dir(item: &std::fs::DirEntry) -> Result<bool, PackageError> {
    // DirEntry::file_type does not follow symlinks.
    Ok(item
        .file_type()
        .map_err(PackageError::io(&item.path()))?
        .is_dir())
}

/// Names a file type that is neither file, directory nor symlink.
pub fn special_kind(ft: &FileType) -> &'static str {
    if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Validates a directory in place under the same rules as an archive (names, depth,
/// component length, no links or special files, entry and byte budgets) and hashes every
/// file. Nothing is written.
pub fn scan_directory(dir: &Path, limits: &Limits) -> Result<Vec<FileRecord>, PackageError> {
    let mut files = Vec::new();
    let mut entries: u64 = 0;
    let mut bytes: u64 = 0;
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    let mut buf = vec![0u8; 256 * 1024];
    while let Some((current, prefix)) = pending.pop() {
        for item in std::fs::read_dir(&current).map_err(PackageError::io(&current))? {
            let item = item.map_err(PackageError::io(&current))?;
            let name = item.file_name();
            let rel_bytes = [prefix.as_bytes(), name.as_encoded_bytes()].concat();
            let rel = ArchivePath::parse(&rel_bytes, limits)?
                .path
                .ok_or(PackageError::EmptyPath)?;
            entries = entries.saturating_add(1);
            if entries > limits.entries {
                return Err(PackageError::TooManyEntries {
                    limit: limits.entries,
                });
            }
            let full = item.path();
            let meta = std::fs::symlink_metadata(&full).map_err(PackageError::io(&full))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                pending.push((full, format!("{}/", rel.as_str())));
            } else if ft.is_file() {
                let file = std::fs::File::open(&full).map_err(PackageError::io(&full))?;
                let mut hasher = Sha256::new();
                let mut len: u64 = 0;
                let mut reader = file;
                loop {
                    let n = reader.read(&mut buf).map_err(PackageError::io(&full))?;
                    if n == 0 {
                        break;
                    }
                    len = len.saturating_add(n as u64);
                    bytes = bytes.saturating_add(n as u64);
                    if bytes > limits.unpacked_bytes {
                        return Err(PackageError::UnpackedTooLarge {
                            limit: limits.unpacked_bytes,
                        });
                    }
                    hasher.update(&buf[..n]);
                }
                files.push(FileRecord {
                    path: rel.as_str().to_string(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                    len,
                    sha256: hasher.finalize().into(),
                });
            } else if ft.is_symlink() {
                return Err(PackageError::Symlink {
                    path: rel.as_str().to_string(),
                });
            } else {
                return Err(PackageError::SpecialFile {
                    path: rel.as_str().to_string(),
                    kind: special_kind(&ft),
                });
            }
        }
    }
    Ok(files)
}

/// Writes a validated tree as a tar into `out` and returns `out`: the one tar writer for a
/// tree leaving the host (the sandbox's copy into a container, `submit`'s upload of a
/// directory). Entries are in `entries`' canonical order with fixed metadata (GNU headers,
/// mtime 0, owner 0, modes 0755/0644 by the executable bit), so the same tree always makes
/// the same bytes whatever the host's clock and umask.
///
/// Files are opened with `O_NOFOLLOW` and must still be the regular file of the length
/// `entries` recorded: a tree that changed since it was walked is refused, never followed.
/// Errors from reading the tree carry its path; errors from `out` come back unchanged, so a
/// caller can recognise its own sink's errors.
pub fn write_tar<W: std::io::Write>(
    root: &Path,
    entries: &[super::TreeEntry],
    out: W,
) -> std::io::Result<W> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let read_err = |path: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
    let mut builder = tar::Builder::new(out);
    for entry in entries {
        let host_path = root.join(&entry.path);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry.kind {
            super::EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, &entry.path, std::io::empty())?;
            }
            super::EntryKind::File => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&host_path)
                    .map_err(|e| read_err(&host_path, e))?;
                let meta = file.metadata().map_err(|e| read_err(&host_path, e))?;
                if !meta.is_file() || meta.len() != entry.len {
                    return Err(std::io::Error::other(format!(
                        "{}: changed while being copied",
                        host_path.display()
                    )));
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if entry.executable { 0o755 } else { 0o644 });
                header.set_size(entry.len);
                builder.append_data(&mut header, &entry.path, file.take(entry.len))?;
            }
        }
    }
    builder.finish()?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_tar_is_deterministic_and_round_trips_to_the_same_tree_digest() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        std::fs::write(
            src.path().join("SKILL.md"),
            "---\nname: round-trip\ndescription: d\n---\n",
        )
        .unwrap();
        std::fs::create_dir(src.path().join("scripts")).unwrap();
        let script = src.path().join("scripts/run.sh");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();

        let entries = crate::package::tree_entries(src.path()).unwrap();
        let one = write_tar(src.path(), &entries, Vec::new()).unwrap();
        let two = write_tar(src.path(), &entries, Vec::new()).unwrap();
        assert_eq!(one, two, "same tree, same bytes");

        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("skill.tar");
        std::fs::write(&archive, &one).unwrap();
        let limits = crate::package::Limits::default();
        let from_dir = crate::package::load(src.path(), &work.path().join("a"), &limits).unwrap();
        let from_tar = crate::package::load(&archive, &work.path().join("b"), &limits).unwrap();
        assert_eq!(from_dir.tree_sha256, from_tar.tree_sha256);
    }

    #[test]
    fn write_tar_refuses_a_tree_that_changed_since_it_was_walked() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.txt"), "short").unwrap();
        let entries = crate::package::tree_entries(src.path()).unwrap();
        std::fs::write(src.path().join("a.txt"), "much longer now").unwrap();
        let err = write_tar(src.path(), &entries, Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("changed while being copied"),
            "{err}"
        );
    }

    fn rec(path: &str, executable: bool, content: &[u8]) -> FileRecord {
        FileRecord {
            path: path.into(),
            executable,
            len: content.len() as u64,
            sha256: Sha256::digest(content).into(),
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
