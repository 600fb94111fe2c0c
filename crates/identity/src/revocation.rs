//! Revoked token ids, persisted beside the keys in `revoked.log` (0600):
//! one `<jti> <exp>` line per revocation, appended and fdatasync'd.
//!
//! Guarantee: once `revoke` returns Ok, the jti is refused by `verify` in
//! this process and in any process that opens the ring later, however many
//! processes revoke at the same time (each appends its own line; a rewrite
//! of a shared file would keep only the last writer's view). An entry is
//! dropped when its token could no longer verify anyway (exp + leeway):
//! the log is compacted, under an exclusive lock, once it is past
//! `COMPACT_MIN_BYTES` and its middle line is expired (compaction writes
//! the lines in order of expiry and appends come later, so that says about
//! half are). A torn last line (a crash mid-append) is skipped.
//!
//! The log is read when a token is first checked against it, not when the
//! ring opens: most processes open the ring only to issue or revoke one
//! token, and a busy host's log holds thousands of lines. A process that
//! keeps checking tokens looks at the file again at most every
//! [`REFRESH`] and re-reads it when it changed, so another process's
//! revocation takes effect there within that time.
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
use std::time::{Duration, Instant, SystemTime};

const MAX_JTI_LEN: usize = 128;
/// The log is compacted past this size (about 1500 lines) when at least
/// about half of it is expired.
const COMPACT_MIN_BYTES: u64 = 64 << 10;
/// How often a loaded list compares the log with what it read.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

pub(crate) struct RevocationList {
    log: PathBuf,
    legacy: PathBuf,
    /// jti → the token's exp, in seconds since the epoch; None until first
    /// needed. A log that cannot be read then refuses every token.
    revoked: Option<Result<BTreeMap<String, u64>, ()>>,
    /// The log's (device, inode, length) when `revoked` was read.
    read_from: Option<(u64, u64, u64)>,
    /// When the log was last compared with `read_from`.
    compared: Option<Instant>,
    /// Compact past this size (when about half is expired).
    compact_min: u64,
}

/// The log's (device, inode, length), if it exists.
fn stamp(log: &Path) -> Option<(u64, u64, u64)> {
    std::fs::metadata(log).ok().map(|m| (m.dev(), m.ino(), m.len()))
}

#[derive(Deserialize)]
struct LegacyFile {
    revoked: BTreeMap<String, u64>,
}

/// Reads the complete lines of the log (a line is complete once its
/// newline is written: an unfinished one was never acknowledged).
fn parse_log(bytes: &[u8], into: &mut BTreeMap<String, u64>) {
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(&bytes[..0], |end| &bytes[..end]);
    for line in complete.split(|b| *b == b'\n') {
        if let Some((jti, exp)) = parse_line(line) {
            into.insert(jti.to_string(), exp);
        }
    }
}

fn parse_line(line: &[u8]) -> Option<(&str, u64)> {
    let (jti, exp) = std::str::from_utf8(line).ok()?.split_once(' ')?;
    let exp = exp.parse::<u64>().ok()?;
    (!jti.is_empty() && jti.len() <= MAX_JTI_LEN && !jti.contains(char::is_whitespace)).then_some((jti, exp))
}

fn read_all(log: &Path, legacy: &Path) -> Result<BTreeMap<String, u64>, IdentityError> {
    let mut revoked = BTreeMap::new();
    if let Some(bytes) = private_file::read(legacy)? {
        let file: LegacyFile =
            serde_json::from_slice(&bytes).map_err(|source| IdentityError::BadStateFile { path: legacy.to_path_buf(), source })?;
        revoked.extend(file.revoked);
    }
    if let Some(bytes) = private_file::read(log)? {
        parse_log(&bytes, &mut revoked);
    }
    Ok(revoked)
}

/// The exp of the first complete line at or after the middle of `f`
/// (`len` bytes), when there is one.
fn middle_exp(f: &File, len: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 2 * MAX_JTI_LEN + 64];
    let n = f.read_at(&mut buf, len / 2).ok()?;
    let buf = &buf[..n];
    let start = buf.iter().position(|b| *b == b'\n')? + 1;
    let end = start + buf[start..].iter().position(|b| *b == b'\n')?;
    parse_line(&buf[start..end]).map(|(_, exp)| exp)
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
    /// Nothing is read yet, but a log others may read is refused now.
    pub(crate) fn open(log: PathBuf, legacy: PathBuf) -> Result<RevocationList, IdentityError> {
        for p in [&log, &legacy] {
            private_file::check(p)?;
        }
        Ok(RevocationList { log, legacy, revoked: None, read_from: None, compared: None, compact_min: COMPACT_MIN_BYTES })
    }

    /// The live entries, read on first use and again when the log changed
    /// (looked at every [`REFRESH`] at most).
    fn entries(&mut self) -> Option<&mut BTreeMap<String, u64>> {
        if self.revoked.is_some() && self.compared.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.compared = Some(Instant::now());
            if stamp(&self.log) != self.read_from {
                self.revoked = None;
            }
        }
        if self.revoked.is_none() {
            // Taken before the read: a change during it shows next time.
            self.read_from = stamp(&self.log);
            self.compared = Some(Instant::now());
            let now = unix_secs(SystemTime::now());
            let read = read_all(&self.log, &self.legacy).map(|mut all| {
                all.retain(|_, exp| exp.saturating_add(LEEWAY.as_secs()) > now);
                all
            });
            self.revoked = Some(read.map_err(drop));
        }
        self.revoked.as_mut().and_then(|r| r.as_mut().ok())
    }

    /// Whether `jti` is revoked; every jti is when the log cannot be read.
    fn contains(&mut self, jti: &str) -> bool {
        self.entries().is_none_or(|all| all.contains_key(jti))
    }

    fn insert(&mut self, jti: &str, exp: u64, now: u64) -> Result<(), IdentityError> {
        let len = {
            let mut f = open_locked(&self.log, libc::LOCK_SH)?;
            // After a crash mid-append the log may end in half a line: ours
            // starts on a line of its own.
            let torn = !ends_with_newline(&f).map_err(IdentityError::io("read", &self.log))?;
            let line = format!("{}{jti} {exp}\n", if torn { "\n" } else { "" });
            f.write_all(line.as_bytes()).map_err(IdentityError::io("append", &self.log))?;
            f.sync_data().map_err(IdentityError::io("fsync", &self.log))?;
            let len = f.metadata().map_err(IdentityError::io("stat", &self.log))?.len();
            let expired = |e: u64| e.saturating_add(LEEWAY.as_secs()) <= now;
            (len > self.compact_min && middle_exp(&f, len).is_some_and(expired)).then_some(len)
        };
        if let Some(Ok(all)) = &mut self.revoked {
            all.insert(jti.to_string(), exp);
        }
        if len.is_some() || self.legacy.exists() {
            self.compact(now)?;
        }
        Ok(())
    }

    /// Rewrites the log with the live entries only (every process's,
    /// re-read under the lock), earliest expiry first, and drops the legacy
    /// file.
    fn compact(&mut self, now: u64) -> Result<(), IdentityError> {
        let _held = open_locked(&self.log, libc::LOCK_EX)?;
        let mut all = read_all(&self.log, &self.legacy)?;
        all.retain(|_, exp| exp.saturating_add(LEEWAY.as_secs()) > now);
        let mut by_exp: Vec<(&String, &u64)> = all.iter().collect();
        by_exp.sort_by_key(|(jti, exp)| (**exp, jti.as_str()));
        let text: String = by_exp.iter().map(|(jti, exp)| format!("{jti} {exp}\n")).collect();
        private_file::write(&self.log, text.as_bytes())?;
        private_file::remove(&self.legacy)?;
        self.revoked = Some(Ok(all));
        self.read_from = stamp(&self.log);
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
        self.revoked.lock().unwrap_or_else(PoisonError::into_inner).contains(jti)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(dir: &Path) -> RevocationList {
        RevocationList::open(dir.join("revoked.log"), dir.join("revoked.json")).unwrap()
    }

    fn live(dir: &Path) -> BTreeMap<String, u64> {
        list(dir).entries().unwrap().clone()
    }

    #[test]
    fn appends_survive_each_other() {
        let t = tempfile::tempdir().unwrap();
        // Two processes' views, opened before either revoked anything.
        let (mut a, mut b) = (list(t.path()), list(t.path()));
        a.insert("from-a", u64::MAX, 10).unwrap();
        b.insert("from-b", u64::MAX, 10).unwrap();
        let reopened = live(t.path());
        assert!(reopened.contains_key("from-a") && reopened.contains_key("from-b"));
        let log = t.path().join("revoked.log");
        assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
        // A log others could read is refused when the ring opens.
        std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        assert!(matches!(RevocationList::open(log, t.path().join("revoked.json")), Err(IdentityError::TooOpen { .. })));
    }

    /// A process that already read the log sees another's revocation
    /// once it looks again (every REFRESH), without reopening the ring.
    #[test]
    fn a_loaded_list_sees_revocations_made_elsewhere() {
        let t = tempfile::tempdir().unwrap();
        let (mut reader, mut other) = (list(t.path()), list(t.path()));
        assert!(!reader.contains("late"));
        other.insert("late", u64::MAX, 10).unwrap();
        assert!(!reader.contains("late"), "looked again before REFRESH passed");
        reader.compared = Instant::now().checked_sub(REFRESH);
        assert!(reader.contains("late"), "another process's revocation was never seen");
        // And after a compaction replaced the file.
        other.insert("later", u64::MAX, 10).unwrap();
        other.compact(10).unwrap();
        reader.compared = Instant::now().checked_sub(REFRESH);
        assert!(reader.contains("later") && reader.contains("late"));
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
                    l.compact_min = 256;
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
        let lines = std::fs::read_to_string(dir.join("revoked.log")).unwrap().lines().count();
        assert!(lines < 400, "compactions ran: {lines} lines left");
        let all = live(&dir);
        let live: Vec<_> = all.keys().filter(|k| k.starts_with("live-")).collect();
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
        assert_eq!(live(t.path()).keys().collect::<Vec<_>>(), ["whole"]);
        a.insert("after", 4_000_000_077, 10).unwrap();
        std::fs::OpenOptions::new().append(true).open(t.path().join("revoked.log")).unwrap().write_all(b"\xff\xfe 12\nno-exp\n").unwrap();
        let reopened = live(t.path());
        assert_eq!(reopened.keys().collect::<Vec<_>>(), ["after", "torn", "whole"]);
        assert_eq!(reopened["after"], 4_000_000_077);
        assert_eq!(reopened["torn"], 4_000_000_000);
    }

    #[test]
    fn compaction_keeps_live_entries_and_folds_in_the_legacy_file() {
        let t = tempfile::tempdir().unwrap();
        private_file::write(&t.path().join("revoked.json"), br#"{"revoked":{"legacy-live":4000000000,"legacy-dead":5}}"#).unwrap();
        let mut a = list(t.path());
        assert!(a.contains("legacy-live") && !a.contains("legacy-dead"));
        a.insert("new", 4_000_000_000, 1000).unwrap();
        assert!(!t.path().join("revoked.json").exists(), "the legacy file is folded in");
        let text = std::fs::read_to_string(t.path().join("revoked.log")).unwrap();
        assert_eq!(text, "legacy-live 4000000000\nnew 4000000000\n");
        // Many expired lines: an append past the size threshold compacts.
        a.compact_min = 4096;
        for i in 0..400 {
            a.insert(&format!("dead-{i}"), 1, 1000).unwrap();
        }
        let text = std::fs::read_to_string(t.path().join("revoked.log")).unwrap();
        assert!(text.len() < 4096 && text.contains("legacy-live 4000000000") && text.contains("new 4000000000"), "{text}");
        // Compaction writes the earliest expiry first.
        a.insert("later", 4_000_000_500, 1000).unwrap();
        a.insert("sooner", 4_000_000_100, 1000).unwrap();
        a.compact(1000).unwrap();
        let text = std::fs::read_to_string(t.path().join("revoked.log")).unwrap();
        assert_eq!(text, "legacy-live 4000000000\nnew 4000000000\nsooner 4000000100\nlater 4000000500\n");
    }
}
