//! Advisory `flock(2)` on the log file, held for the lifetime of a guard.
//!
//! `flock` locks belong to the open file description, so two `AuditLog`
//! handles (or two processes) on the same path exclude each other, but two
//! threads sharing one handle do not; `AuditLog` adds a mutex for that case.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

#[derive(Debug)]
pub(crate) struct Flock<'a> {
    file: &'a File,
}

impl<'a> Flock<'a> {
    /// Blocks until this open file description holds the exclusive lock.
    pub(crate) fn exclusive(file: &'a File) -> io::Result<Self> {
        Self::acquire(file, libc::LOCK_EX)
    }

    /// Blocks until no writer holds the lock; writers wait while it is held.
    pub(crate) fn shared(file: &'a File) -> io::Result<Self> {
        Self::acquire(file, libc::LOCK_SH)
    }

    fn acquire(file: &'a File, op: libc::c_int) -> io::Result<Self> {
        loop {
            // SAFETY: flock only reads its integer arguments; the fd is
            // valid because `file` is borrowed for the guard's lifetime.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Self { file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // Unlocking a held flock cannot fail on a valid fd; if it somehow
        // did, closing the file releases the lock anyway (flock(2)).
        // SAFETY: as in `acquire`, the fd is valid while `self.file` is borrowed.
        let _ = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn try_lock(file: &File, op: libc::c_int) -> bool {
        // SAFETY: flock only reads its integer arguments; `file` is open.
        unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) == 0 }
    }

    #[test]
    fn exclusive_excludes_other_descriptions_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let a = OpenOptions::new().create(true).append(true).open(&path).expect("open a");
        let b = File::open(&path).expect("open b");

        let guard = Flock::exclusive(&a).expect("lock");
        assert!(!try_lock(&b, libc::LOCK_SH), "shared lock granted during exclusive");
        drop(guard);
        assert!(try_lock(&b, libc::LOCK_SH), "lock not released on drop");
        // A reader's shared lock holds a writer off.
        assert!(!try_lock(&a, libc::LOCK_EX));
        let _ = try_lock(&b, libc::LOCK_UN);

        let shared = Flock::shared(&b).expect("shared");
        assert!(!try_lock(&a, libc::LOCK_EX));
        drop(shared);
        assert!(try_lock(&a, libc::LOCK_EX));
    }
}
