//! Revoked token ids, persisted beside the keys in `revoked.log` (0600):
//! one `<jti> <exp>` line per revocation, appended and fdatasync'd.
//!
//! Guarantee: once `revoke` returns Ok, the jti is refused by `verify` in
//! this process and in any process that opens the ring later, however many
//! processes revoke at the same time (each appends its own line; a rewrite
//! of a shared file would keep only the last writer's view). An entry is
//! dropped when its token could no longer verify anyway (exp + leeway):
//! the log is compacted, under an exclusive lock, once most of its lines
//! are expired. A torn last line (a crash mid-append) is skipped.
//!
//! `revoked.json`, the whole-file format of earlier versions, is still
//! read; the first compaction folds it into the log and removes it.

use crate::keys::unix_secs;
use crate::{private_file, IdentityError, KeyRing, LEEWAY};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::time::SystemTime;

const MAX_JTI_LEN: usize = 128;
/// The log is compacted when it holds more lines than this and more than
/// twice as many as are live.
const COMPACT_MIN_LINES: usize = 1024;

pub(crate) struct RevocationList {
    log: PathBuf,
    legacy: PathBuf,
    /// jti → the token's exp, in seconds since the epoch.
    revoked: BTreeMap<String, u64>,
    /// Lines in the log when it was last read or written by us.
    lines: usize,
    /// Compact past this many lines (when most are expired).
    compact_min: usize,
}

#[derive(Deserialize)]
struct LegacyFile {
    revoked: BTreeMap<String, u64>,
}

/// Reads the complete lines of the log (a line is complete once its
/// newline is written: an unfinished one was never acknowledged).
fn parse_log(bytes: &[u8], into: &mut BTreeMap<String, u64>) -> usize {
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(&bytes[..0], |end| &bytes[..end]);
    let mut lines = 0;
    for line in complete.split(|b| *b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else { continue };
        let Some((jti, exp)) = line.split_once(' ') else { continue };
        let Ok(exp) = exp.parse::<u64>() else { continue };
        if jti.is_empty() || jti.len() > MAX_JTI_LEN || jti.contains(char::is_whitespace) {
            continue;
        }
        lines += 1;
        into.insert(jti.to_string(), exp);
    }
    lines
}

fn read_all(log: &Path, legacy: &Path) -> Result<(BTreeMap<String, u64>, usize), IdentityError> {
    let mut revoked = BTreeMap::new();
    if let Some(bytes) = private_file::read(legacy)? {
        let file: LegacyFile =
            serde_json::from_slice(&bytes).map_err(|source| IdentityError::BadStateFile { path: legacy.to_path_buf(), source })?;
        revoked.extend(file.revoked);
    }
    let lines = match private_file::read(log)? {
        Some(bytes) => parse_log(&bytes, &mut revoked),
        None => 0,
    };
    Ok((revoked, lines))
}

/// Takes `op` (LOCK_SH or LOCK_EX) on `f`, waiting for it.
fn lock(f: &File, op: libc::c_int, path: &Path) -> Result<(), IdentityError> {
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(IdentityError::Io { op: "lock", path: path.to_path_buf(), source: e });
        }
    }
}

/// The log, opened for appending and locked with `op`: the file that is at
/// `path` now, not one a compaction has since renamed away.
fn open_locked(path: &Path, op: libc::c_int) -> Result<File, IdentityError> {
    loop {
        let f = OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path).map_err(IdentityError::io("open", path))?;
        lock(&f, op, path)?;
        let ours = f.metadata().map_err(IdentityError::io("stat", path))?;
        match std::fs::metadata(path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => return Ok(f),
            // Replaced (or removed) between our open and our lock: again.
            _ => continue,
        }
    }
}

/// Whether the file is empty or its last byte is a newline.
fn ends_with_newline(f: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

impl RevocationList {
    /// `log` is `revoked.log`; `legacy` the `revoked.json` of old versions.
    pub(crate) fn load(log: PathBuf, legacy: PathBuf) -> Result<RevocationList, IdentityError> {
        let (mut revoked, lines) = read_all(&log, &legacy)?;
        let now = unix_secs(SystemTime::now());
        revoked.retain(|_, exp| exp.saturating_add(LEEWAY.as_secs()) > now);
        Ok(RevocationList { log, legacy, revoked, lines, compact_min: COMPACT_MIN_LINES })
    }

    fn insert(&mut self, jti: &str, exp: u64, now: u64) -> Result<(), IdentityError> {
        let live = |exp: &u64| exp.saturating_add(LEEWAY.as_secs()) > now;
        {
            let mut f = open_locked(&self.log, libc::LOCK_SH)?;
            // After a crash mid-append the log may end in half a line: ours
            // starts on a line of its own.
            let torn = !ends_with_newline(&f).map_err(IdentityError::io("read", &self.log))?;
            let line = format!("{}{jti} {exp}\n", if torn { "\n" } else { "" });
            f.write_all(line.as_bytes()).map_err(IdentityError::io("append", &self.log))?;
            f.sync_data().map_err(IdentityError::io("fsync", &self.log))?;
        }
        self.revoked.insert(jti.to_string(), exp);
        self.revoked.retain(|_, e| live(e));
        self.lines += 1;
        let legacy_left = self.legacy.exists();
        if legacy_left || (self.lines > self.compact_min && self.lines > 2 * self.revoked.len()) {
            self.compact(now)?;
        }
        Ok(())
    }

    /// Rewrites the log with the live entries only (every process's,
    /// re-read under the lock) and drops the legacy file.
    fn compact(&mut self, now: u64) -> Result<(), IdentityError> {
        let _held = open_locked(&self.log, libc::LOCK_EX)?;
        let (mut all, _) = read_all(&self.log, &self.legacy)?;
        all.retain(|_, exp| exp.saturating_add(LEEWAY.as_secs()) > now);
        let text: String = all.iter().map(|(jti, exp)| format!("{jti} {exp}\n")).collect();
        private_file::write(&self.log, text.as_bytes())?;
        private_file::remove(&self.legacy)?;
        self.lines = all.len();
        self.revoked = all;
        Ok(())
    }
}

impl KeyRing {
    /// Revokes the token with this `jti`; `exp` is its expiry (from its
    /// claims), after which the entry is forgotten.
    pub fn revoke(&self, jti: &str, exp: u64) -> Result<(), IdentityError> {
        if jti.is_empty() || jti.len() > MAX_JTI_LEN || jti.contains(char::is_whitespace) {
            return Err(IdentityError::BadJti);
        }
        let mut list = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        list.insert(jti, exp, unix_secs(SystemTime::now()))
    }

    /// Whether `jti` has been revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.lock().unwrap_or_else(PoisonError::into_inner).revoked.contains_key(jti)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(dir: &Path) -> RevocationList {
        RevocationList::load(dir.join("revoked.log"), dir.join("revoked.json")).unwrap()
    }

    #[test]
    fn appends_survive_each_other() {
        let t = tempfile::tempdir().unwrap();
        // Two processes' views, opened before either revoked anything.
        let (mut a, mut b) = (list(t.path()), list(t.path()));
        a.insert("from-a", u64::MAX, 10).unwrap();
        b.insert("from-b", u64::MAX, 10).unwrap();
        let reopened = list(t.path());
        assert!(reopened.revoked.contains_key("from-a") && reopened.revoked.contains_key("from-b"));
        let mode = std::fs::metadata(t.path().join("revoked.log")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn concurrent_appends_and_compactions_lose_nothing_live() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().to_path_buf();
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    // Each its own view, as separate processes have.
                    let mut l = list(&dir);
                    l.compact_min = 16;
                    for i in 0..400 {
                        // Mostly expired entries, so compactions run meanwhile.
                        let (jti, exp) = if i % 40 == 0 { (format!("live-{n}-{i}"), 4_000_000_000) } else { (format!("dead-{n}-{i}"), 1) };
                        l.insert(&jti, exp, 1000).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = list(&dir);
        assert!(all.lines < 100, "compactions ran: {} lines left", all.lines);
        let live: Vec<_> = all.revoked.keys().filter(|k| k.starts_with("live-")).collect();
        assert_eq!(live.len(), 40, "{live:?}");
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_one_kept() {
        let t = tempfile::tempdir().unwrap();
        let mut a = list(t.path());
        a.insert("whole", u64::MAX, 10).unwrap();
        let mut f = OpenOptions::new().append(true).open(t.path().join("revoked.log")).unwrap();
        // A crash in the middle of an append: the exp is cut short.
        f.write_all(b"torn 4000000000").unwrap();
        assert_eq!(list(t.path()).revoked.keys().collect::<Vec<_>>(), ["whole"]);
        a.insert("after", 4_000_000_077, 10).unwrap();
        std::fs::OpenOptions::new().append(true).open(t.path().join("revoked.log")).unwrap().write_all(b"\xff\xfe 12\nno-exp\n").unwrap();
        let reopened = list(t.path());
        assert_eq!(reopened.revoked.keys().collect::<Vec<_>>(), ["after", "torn", "whole"]);
        assert_eq!(reopened.revoked["after"], 4_000_000_077);
        assert_eq!(reopened.revoked["torn"], 4_000_000_000);
    }

    #[test]
    fn compaction_keeps_live_entries_and_folds_in_the_legacy_file() {
        let t = tempfile::tempdir().unwrap();
        private_file::write(&t.path().join("revoked.json"), br#"{"revoked":{"legacy-live":4000000000,"legacy-dead":5}}"#).unwrap();
        let mut a = list(t.path());
        assert!(a.revoked.contains_key("legacy-live"));
        a.insert("new", 4_000_000_000, 1000).unwrap();
        assert!(!t.path().join("revoked.json").exists(), "the legacy file is folded in");
        let text = std::fs::read_to_string(t.path().join("revoked.log")).unwrap();
        assert_eq!(text, "legacy-live 4000000000\nnew 4000000000\n");
        // Many expired lines: the next append past the threshold compacts.
        for i in 0..COMPACT_MIN_LINES {
            a.insert(&format!("dead-{i}"), 1, 1000).unwrap();
        }
        let text = std::fs::read_to_string(t.path().join("revoked.log")).unwrap();
        assert!(text.lines().count() < 10 && text.contains("legacy-live 4000000000") && text.contains("new 4000000000"), "{text}");
    }
}
