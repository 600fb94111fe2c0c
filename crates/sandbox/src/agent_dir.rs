//! A live run's socket dir on the host, `<state>/agents/<agent>/` (its
//! gate's and operator API's sockets; clawkeep's `agents_dir` says where
//! `<state>/agents` is): the lock a live run holds on it, and its removal.
//! Here because the helper removes it too when the launcher was killed.

use std::os::fd::AsRawFd;
use std::path::Path;

/// The name prefix of the runtime dirs `<state>/agents` links to.
pub const RUNTIME_PREFIX: &str = "agents-";

/// Takes the lock a live run holds on its agent dir (a flock on the dir
/// itself) without waiting: None when a live run holds it. (Asking a run's
/// sockets instead would start its services.)
pub fn lock(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(dir)?;
    // SAFETY: flock on our own open file.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Whether `lock` is on the directory at `dir` now (a sweep may have
/// removed the one it was opened on, and a new run made another).
pub fn is_there(lock: &std::fs::File, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (lock.metadata(), std::fs::metadata(dir)) {
        (Ok(h), Ok(t)) => (h.dev(), h.ino()) == (t.dev(), t.ino()),
        _ => false,
    }
}

/// Removes an agent's sockets and dir; and the state dir's runtime dir it
/// is in once that is empty (the next run makes it again).
pub fn remove(dir: &Path) {
    for s in ["gate.sock", "api.sock"] {
        let _ = std::fs::remove_file(dir.join(s));
    }
    let _ = std::fs::remove_dir(dir);
    let runtime = |p: &&Path| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(RUNTIME_PREFIX));
    if let Some(root) = dir.parent().filter(runtime) {
        let _ = std::fs::remove_dir(root);
    }
}

/// Removes `dir` as `remove` does unless a live run holds it: what the
/// helper does for a launcher that was killed (its lock went with it; a
/// new run of the same agent may hold the name already).
pub fn remove_unheld(dir: &Path) {
    if let Ok(Some(held)) = lock(dir) {
        if is_there(&held, dir) {
            remove(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{lock, remove, remove_unheld, RUNTIME_PREFIX};

    #[test]
    fn a_held_dir_stays_and_an_unheld_one_goes_with_its_empty_runtime_dir() {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join(format!("{RUNTIME_PREFIX}0123"));
        let (a, b) = (root.join("a"), root.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::write(d.join("api.sock"), "").expect("write");
            std::fs::write(d.join("gate.sock"), "").expect("write");
        }
        let held = lock(&a).expect("lock").expect("free");
        assert!(lock(&a).expect("lock").is_none(), "a second lock is refused while one is held");
        remove_unheld(&a);
        assert!(a.join("api.sock").exists(), "a held dir was removed");
        remove_unheld(&b);
        assert!(!b.exists() && root.exists(), "b goes, its runtime dir stays while a is in it");
        drop(held);
        remove(&a);
        assert!(!root.exists(), "the runtime dir goes with its last agent");
        // A plain `<state>/agents` stays.
        let plain = base.path().join("agents").join("c");
        std::fs::create_dir_all(&plain).expect("mkdir");
        remove(&plain);
        assert!(!plain.exists() && base.path().join("agents").exists());
    }
}
