//! A directory given to the CLI, read through the same [`TreeSink`] as an archive: the same
//! name, depth, entry and byte rules, links and special files refused, nothing written.
//! This is the one tree walker.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{StreamErrors, TreeSink};
use crate::package::path::ArchivePath;
use crate::package::PackageError;

/// Names a file type that is neither file, directory nor symlink.
pub fn special_kind(ft: &std::fs::FileType) -> &'static str {
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

/// Walks `dir` depth first, feeding every entry to `sink`. Entries within a directory are
/// taken in name order so refusals are deterministic.
pub(crate) fn read_dir_tree(dir: &Path, sink: &mut TreeSink<'_>) -> Result<(), PackageError> {
    let limits = sink.limits;
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((current, prefix)) = pending.pop() {
        let mut items = Vec::new();
        for item in std::fs::read_dir(&current).map_err(PackageError::io(&current))? {
            items.push(item.map_err(PackageError::io(&current))?);
            // Bound the listing itself, before the sink counts what it accepts.
            if items.len() as u64 > limits.entries {
                return Err(PackageError::TooManyEntries {
                    limit: limits.entries,
                });
            }
        }
        items.sort_by_key(|i| i.file_name());
        for item in items.into_iter().rev() {
            let name = item.file_name();
            let rel_bytes = [prefix.as_bytes(), name.as_encoded_bytes()].concat();
            let rel = ArchivePath::parse(&rel_bytes, limits)?
                .path
                .ok_or(PackageError::EmptyPath)?;
            let full = item.path();
            let meta = std::fs::symlink_metadata(&full).map_err(PackageError::io(&full))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                sink.add_dir(&rel)?;
                pending.push((full, format!("{}/", rel.as_str())));
            } else if ft.is_file() {
                // O_NOFOLLOW: a file swapped for a link since the listing is refused.
                let mut file = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&full)
                    .map_err(PackageError::io(&full))?;
                let errors = StreamErrors {
                    input: full.clone(),
                    state: None,
                };
                let executable = meta.permissions().mode() & 0o111 != 0;
                sink.add_file(&rel, executable, &mut file, None, &errors)?;
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
    Ok(())
}
