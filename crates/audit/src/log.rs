//! The writer. Guarantees, when `append` returns `Ok`:
//!
//! - the event is one complete line on disk (written with one `write_all` on
//!   an `O_APPEND` descriptor, then `fdatasync`), so the action it records
//!   may proceed;
//! - its `seq` is one more than the previous line's and its `prev` is the
//!   SHA-256 of the previous line's bytes, even with other processes
//!   appending to the same file (all appends hold `flock(LOCK_EX)`);
//! - it was not chained onto a torn line: a log that ends mid-line refuses
//!   appends until an operator has looked at it.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value;

use crate::error::AuditError;
use crate::line::{self, hash_line, GENESIS_PREV};
use crate::lock::Flock;
use crate::tail::{self, Tail};

/// Owner read/write only: events name agents, commands and paths.
const MODE: u32 = 0o600;

/// An open, append-only audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    /// The mutex serializes threads sharing this handle; `flock` alone would
    /// not, because they share one open file description.
    file: Mutex<File>,
}

/// An event's kind and its fields, checked by [`line::check_fields`].
pub(crate) type Checked = (String, serde_json::Map<String, Value>);

/// Where an event landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppendedEvent {
    /// 0-based line index of the event.
    pub seq: u64,
    /// Lowercase hex SHA-256 of the line written (the next line's `prev`).
    /// Keep the latest one outside the log to detect edits to its last line.
    pub hash: String,
}

impl AuditLog {
    /// Opens the log at `path`, creating it with mode 0600 if it is missing.
    /// Refuses a symlink or anything but a regular file. The parent directory
    /// must exist; its permissions are the caller's business.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let owned = || path.to_path_buf();
        // Checked before opening so a FIFO or device is never opened; the
        // `O_NOFOLLOW` and `fstat` below close the race with a swap.
        match fs::symlink_metadata(path) {
            Ok(meta) => check_file_type(path, &meta)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(AuditError::Open { path: owned(), source }),
        }
        let file = match options().create_new(true).open(path) {
            Ok(file) => {
                finish_create(path, &file)?;
                file
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options().open(path).map_err(|e| open_error(path, e))?,
            Err(e) => return Err(open_error(path, e)),
        };
        let meta = file.metadata().map_err(|source| AuditError::Open { path: owned(), source })?;
        check_file_type(path, &meta)?;
        // A log someone else may read (or write) is brought back to 0600.
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(Permissions::from_mode(0o600)).map_err(|source| AuditError::Open { path: owned(), source })?;
        }
        Ok(AuditLog { path: owned(), file: Mutex::new(file) })
    }

    /// The path the log was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event of `kind` with the caller's `fields` (a JSON object
    /// without the keys `seq`, `ts`, `prev`, `kind`) and returns once it is
    /// on disk. On error the action the event records must not proceed.
    pub fn append(&self, kind: &str, fields: Value) -> Result<AppendedEvent, AuditError> {
        self.write_event(kind, fields, true)
    }

    /// Appends like [`append`](Self::append) but returns before the line is
    /// durable, so the caller can overlap the fsync with preparation work.
    /// The event is *not* acknowledged until [`sync`](Self::sync) returns Ok:
    /// the action it records must wait for that.
    pub fn append_deferred(&self, kind: &str, fields: Value) -> Result<AppendedEvent, AuditError> {
        self.write_event(kind, fields, false)
    }

    /// Makes every line written so far durable.
    pub fn sync(&self) -> Result<(), AuditError> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.sync_data().map_err(|source| AuditError::Sync { path: self.path.clone(), source })
    }

    /// Appends `events` in order, as one write and one fdatasync, and
    /// returns once all of them are on disk: what a group of callers pays
    /// for one fsync. All or none: nothing is written if any event's fields
    /// are refused.
    pub fn append_all(&self, events: Vec<(String, Value)>) -> Result<Vec<AppendedEvent>, AuditError> {
        let checked =
            events.into_iter().map(|(kind, fields)| Ok((kind, line::check_fields(fields)?))).collect::<Result<_, AuditError>>()?;
        self.write_events(checked, true)
    }

    /// [`append_all`](Self::append_all) for events whose fields were checked
    /// already (the group writer checks each as it is submitted).
    pub(crate) fn append_checked(&self, events: Vec<Checked>) -> Result<Vec<AppendedEvent>, AuditError> {
        self.write_events(events, true)
    }

    fn write_event(&self, kind: &str, fields: Value, sync: bool) -> Result<AppendedEvent, AuditError> {
        let written = self.write_events(vec![(kind.to_owned(), line::check_fields(fields)?)], sync)?;
        written
            .into_iter()
            .next()
            .ok_or_else(|| AuditError::CorruptTail { path: self.path.clone(), reason: "nothing was written".to_owned() })
    }

    fn write_events(&self, events: Vec<Checked>, sync: bool) -> Result<Vec<AppendedEvent>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // A poisoned mutex only means another thread panicked mid-append;
        // the file itself is re-read under the flock, so it is safe to go on.
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let _flock = Flock::exclusive(&file).map_err(|source| AuditError::Lock { path: self.path.clone(), source })?;
        let len = file.metadata().map_err(|e| self.read_error(e))?.len();
        let (mut seq, mut prev) = self.next_link(&file, len)?;

        let mut text = String::new();
        let mut appended = Vec::with_capacity(events.len());
        for (i, (kind, fields)) in events.iter().enumerate() {
            if i > 0 {
                seq = seq
                    .checked_add(1)
                    .ok_or_else(|| AuditError::CorruptTail { path: self.path.clone(), reason: "seq is at its maximum".to_owned() })?;
            }
            let line = line::encode(seq, &clawkeep_core::time::now_rfc3339(), &prev, kind, fields);
            prev = hash_line(line.as_bytes());
            text.push_str(&line);
            text.push('\n');
            appended.push(AppendedEvent { seq, hash: prev.clone() });
        }
        if let Err(source) = (&*file).write_all(text.as_bytes()) {
            // A short write (e.g. ENOSPC) would leave a torn line that blocks
            // every later append; cut it off while we still hold the lock.
            // If that fails too, the next append reports TornTail.
            let _ = file.set_len(len);
            return Err(AuditError::Write { path: self.path.clone(), source });
        }
        if sync {
            file.sync_data().map_err(|source| AuditError::Sync { path: self.path.clone(), source })?;
        }
        Ok(appended)
    }

    /// `seq` and `prev` for a line appended after the first `len` bytes.
    fn next_link(&self, file: &File, len: u64) -> Result<(u64, String), AuditError> {
        match tail::read_tail(file, len).map_err(|e| self.read_error(e))? {
            Tail::Empty => Ok((0, GENESIS_PREV.to_owned())),
            Tail::Complete(last) => {
                let seq = self.seq_of(&last)?;
                let next = seq
                    .checked_add(1)
                    .ok_or_else(|| AuditError::CorruptTail { path: self.path.clone(), reason: "seq is at its maximum".to_owned() })?;
                Ok((next, hash_line(&last)))
            }
            Tail::Torn(last_complete) => {
                let line = match last_complete {
                    None => 1,
                    // The torn line is 1-based line seq + 2.
                    Some(last) => self.seq_of(&last)?.saturating_add(2),
                };
                Err(AuditError::TornTail { path: self.path.clone(), line })
            }
        }
    }

    fn seq_of(&self, line: &[u8]) -> Result<u64, AuditError> {
        line::parse_seq(line).map_err(|reason| AuditError::CorruptTail { path: self.path.clone(), reason })
    }

    fn read_error(&self, source: io::Error) -> AuditError {
        AuditError::Read { path: self.path.clone(), source }
    }
}

fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    // O_NOFOLLOW: a symlink planted at the log path must not redirect
    // writes to another file (open(2), CWE-59).
    options.read(true).append(true).mode(MODE).custom_flags(libc::O_NOFOLLOW);
    options
}

/// Makes a newly created log's mode and directory entry durable.
fn finish_create(path: &Path, file: &File) -> Result<(), AuditError> {
    // The umask may have cleared bits of MODE at creation; set it exactly.
    file.set_permissions(Permissions::from_mode(MODE)).map_err(|source| AuditError::SetMode { path: path.to_path_buf(), source })?;
    file.sync_all().map_err(|source| AuditError::Sync { path: path.to_path_buf(), source })?;
    // Without this a crash can lose the new file's directory entry, and
    // with it every event fsynced into the file (fsync(2), NOTES).
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent).and_then(|dir| dir.sync_all()).map_err(|source| AuditError::SyncDir { path: parent.to_path_buf(), source })
}

fn check_file_type(path: &Path, meta: &fs::Metadata) -> Result<(), AuditError> {
    if meta.file_type().is_symlink() {
        Err(AuditError::Symlink { path: path.to_path_buf() })
    } else if !meta.is_file() {
        Err(AuditError::NotRegularFile { path: path.to_path_buf() })
    } else {
        Ok(())
    }
}

fn open_error(path: &Path, source: io::Error) -> AuditError {
    // O_NOFOLLOW on a symlink fails with ELOOP.
    if source.raw_os_error() == Some(libc::ELOOP) {
        AuditError::Symlink { path: path.to_path_buf() }
    } else {
        AuditError::Open { path: path.to_path_buf(), source }
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
