//! The one place that creates private files and directories and makes them durable: blobs,
//! uploads, keys and the database all go through it, so modes and fsyncs are decided once.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates a directory (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates a new file with exactly `mode` (the umask cannot widen or narrow it); fails if
/// the path exists, so an existing file (or a planted symlink) is never written through.
pub fn create_new_file(path: &Path, mode: u32) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Creates a new file with mode 0600 (fails if it exists).
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    create_new_file(path, 0o600)
}

/// Writes `bytes` to a new file with exactly `mode` and fsyncs it.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = create_new_file(path, mode)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// fsyncs a directory, so a rename or create inside it survives power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_get_exactly_their_mode_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_new_file(&path, b"x", 0o600).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = write_new_file(&path, b"y", 0o600).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"x");
    }
}
