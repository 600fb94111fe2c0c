//! A lock file beside a file, for a short critical section among the
//! processes that share that file (the first opens of a state dir's SQLite
//! files, which make their schema).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file of `path`: `.<name>.lock` beside it.
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.lock"))
}

/// Takes an exclusive flock on `path`'s lock file (made when it is not
/// there; it holds no data), waiting at most `limit` for another holder;
/// released when the returned file is dropped. Opened read-only and made
/// 0644: a lock file another user made (root, on a state dir of a user's)
/// locks that user out of nothing. Its dir keeps others out.
///
/// Beside `path`, never on it: closing any descriptor of a file drops every
/// POSIX (fcntl) lock this process holds on that file, SQLite's included,
/// and a database whose lock is gone can be checkpointed and its WAL
/// removed by another process under a live connection.
pub fn lock_beside(path: &Path, limit: Duration) -> io::Result<File> {
    let at = lock_path(path);
    // O_CREAT without write access: std's OpenOptions wants one for create.
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(at.as_os_str()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the lock file's path"))?;
    // SAFETY: c is a valid C string; the descriptor is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o644 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor of ours.
    let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let start = Instant::now();
    loop {
        // SAFETY: flock on a descriptor we own; released when it closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(2)),
            Some(libc::EWOULDBLOCK) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("another process held it for {} ms", limit.as_millis())))
            }
            _ => return Err(e),
        }
    }
}

/// What to do about an error of [`lock_beside`]: a lock held too long is
/// another process's (a stopped clawkeep, say); anything else is the
/// directory's.
pub fn advice(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::TimedOut => "wait for the other clawkeep using it to end, or stop it (a stopped one holds it)",
        _ => "check that its directory exists and is writable by this user (the lock file holds no data)",
    }
}

#[cfg(test)]
mod tests {
    use super::{lock_beside, lock_path};
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_its_limit_and_the_lock_is_beside_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let db = dir.join("gate.db");
        assert_eq!(lock_path(&db), dir.join(".gate.db.lock"));
        let held = lock_beside(&db, Duration::from_millis(10)).expect("free");
        assert!(!db.exists(), "the file itself is never opened");
        let e = lock_beside(&db, Duration::from_millis(30)).expect_err("held");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(super::advice(&e).contains("stop it"), "{e}");
        drop(held);
        lock_beside(&db, Duration::from_millis(10)).expect("free again");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(lock_path(&db)).expect("made").permissions().mode() & 0o7777;
        assert_eq!(mode & 0o022, 0, "only its owner may write it: {mode:o}");
    }
}
