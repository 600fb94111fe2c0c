//! Where clawkeep keeps its state.
//!
//! Guarantee: `state_dir()` returns a directory that exists, is owned by the
//! caller and has mode 0700, or an error that says how to fix it.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StateDirError {
    #[error("cannot create state directory {path}: {source}; pass --state-dir DIR or set CLAWKEEP_STATE_DIR")]
    Create { path: PathBuf, source: io::Error },
    #[error("state directory {path} is not writable: {source}; pass --state-dir DIR or set CLAWKEEP_STATE_DIR")]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("state directory {path} is owned by uid {owner}, not by you (uid {me}); pass --state-dir DIR")]
    WrongOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("no state directory: HOME and XDG_STATE_HOME are unset; pass --state-dir DIR")]
    NoHome,
}

/// The default state directory: /var/lib/clawkeep for root, else
/// `$XDG_STATE_HOME/clawkeep` (or `~/.local/state/clawkeep`).
pub fn default_state_dir(env: impl Fn(&str) -> Option<String>) -> Result<PathBuf, StateDirError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/clawkeep"));
    }
    if let Some(x) = env("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(x).join("clawkeep"));
    }
    let home = env("HOME").filter(|s| !s.is_empty()).ok_or(StateDirError::NoHome)?;
    Ok(PathBuf::from(home).join(".local/state/clawkeep"))
}

/// Ensures `path` exists with mode 0700 and belongs to the caller.
pub fn state_dir(path: &Path) -> Result<PathBuf, StateDirError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| StateDirError::Create { path: path.to_path_buf(), source })?;
    let meta = fs::metadata(path).map_err(|source| StateDirError::Create { path: path.to_path_buf(), source })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(StateDirError::WrongOwner { path: path.to_path_buf(), owner: meta.uid(), me });
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|source| StateDirError::NotWritable { path: path.to_path_buf(), source })?;
    }
    // Root passes every DAC check, but access(2) still reports a read-only
    // mount (EROFS) or an immutable directory (EPERM): found here, not
    // halfway through a run.
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| StateDirError::NotWritable { path: path.to_path_buf(), source: io::Error::from(io::ErrorKind::InvalidInput) })?;
    // SAFETY: c is a valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(StateDirError::NotWritable { path: path.to_path_buf(), source: io::Error::last_os_error() });
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0700() {
        let t = std::env::temp_dir().join(format!("ck-core-{}", std::process::id()));
        let p = state_dir(&t.join("a/b")).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o700);
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn under_a_file_fails() {
        let t = std::env::temp_dir().join(format!("ck-core-file-{}", std::process::id()));
        fs::write(&t, b"x").unwrap();
        let err = state_dir(&t.join("sub")).unwrap_err();
        assert!(err.to_string().contains("--state-dir"), "{err}");
        fs::remove_file(&t).unwrap();
    }
}
