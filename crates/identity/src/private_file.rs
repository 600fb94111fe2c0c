//! Private files: 0600, written atomically, refused when others can read them.
//!
//! A write goes to a fresh temp file in the same directory, is fsync'd,
//! renamed over the target, and the directory is fsync'd, so a crash leaves
//! either the old or the new content, never a torn file (rename(2)).

use crate::{random, IdentityError};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Ensures `dir` exists, is ours and is 0700.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), IdentityError> {
    clawkeep_core::state_dir(dir)?;
    Ok(())
}

/// Replaces `path` with `bytes` atomically; the file is 0600.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = write_temp(path, bytes)?;
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(IdentityError::Io { op: "rename into place", path: path.to_path_buf(), source });
    }
    sync_parent(path)
}

/// Creates `path` with `bytes` atomically unless it exists. Returns false,
/// leaving the existing file alone, when another writer got there first:
/// link(2) fails on an existing target where rename(2) would overwrite it.
pub(crate) fn create_new(path: &Path, bytes: &[u8]) -> Result<bool, IdentityError> {
    let tmp = write_temp(path, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_parent(path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(IdentityError::Io { op: "create", path: path.to_path_buf(), source }),
    }
}

/// Reads a private file; `None` if it does not exist. Refuses symlinks and
/// files that group or others may read, because they may have leaked.
pub(crate) fn read(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, IdentityError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IdentityError::Io { op: "stat", path: path.to_path_buf(), source }),
        Ok(m) if !m.file_type().is_file() => return Err(IdentityError::NotRegular { path: path.to_path_buf() }),
        Ok(_) => {}
    }
    let mut file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(IdentityError::io("open", path))?,
    };
    // Check the mode on the open descriptor, not the path, so a swap between
    // the check and the read cannot slip a different file in.
    let meta = file.metadata().map_err(IdentityError::io("stat", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::TooOpen { path: path.to_path_buf(), mode });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
    file.read_to_end(&mut buf).map_err(IdentityError::io("read", path))?;
    Ok(Some(buf))
}

/// What `read` checks before reading, without reading: a missing file
/// passes; a symlink, a non-file or one others may read does not.
pub(crate) fn check(path: &Path) -> Result<(), IdentityError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(IdentityError::Io { op: "stat", path: path.to_path_buf(), source }),
        Ok(m) if !m.file_type().is_file() => Err(IdentityError::NotRegular { path: path.to_path_buf() }),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            Err(IdentityError::TooOpen { path: path.to_path_buf(), mode: m.permissions().mode() & 0o777 })
        }
        Ok(_) => Ok(()),
    }
}

/// Removes `path`; false if it was already gone.
pub(crate) fn remove(path: &Path) -> Result<bool, IdentityError> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(IdentityError::Io { op: "remove", path: path.to_path_buf(), source }),
    }
}

fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, IdentityError> {
    let suffix = random::bytes::<8>()?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The leading dot and the ".tmp-" infix keep temp files out of every
    // listing, which matches on the ".key" / ".sealed" suffix.
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", hex::encode(*suffix)));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(IdentityError::Io { op: "write", path: tmp, source });
    }
    Ok(tmp)
}

fn sync_parent(path: &Path) -> Result<(), IdentityError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(IdentityError::io("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replace_and_create_new() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!create_new(&p, b"three").unwrap());
        assert_eq!(read(&p).unwrap().unwrap().as_slice(), b"two");
        let names: Vec<_> = fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")], "no temp file left behind");
        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
        assert!(read(&p).unwrap().is_none());
    }

    #[test]
    fn refuses_symlink() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("real"), b"x").unwrap();
        std::os::unix::fs::symlink("real", t.path().join("link")).unwrap();
        assert!(matches!(read(&t.path().join("link")), Err(IdentityError::NotRegular { .. })));
    }
}
