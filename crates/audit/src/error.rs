//! The one error type of this crate. Each message says what failed, on which
//! path, and what the operator should do next.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {}: {source}; check that its directory exists and is writable by this user", .path.display())]
    Open { path: PathBuf, source: io::Error },

    #[error("audit log {} does not exist; check the path (or the state directory) and try again", .path.display())]
    NotFound { path: PathBuf },

    #[error("audit log {} is a symlink; refusing to follow it, replace it with a regular file", .path.display())]
    Symlink { path: PathBuf },

    #[error("audit log {} is not a regular file; move it aside so a new log can be created", .path.display())]
    NotRegularFile { path: PathBuf },

    #[error("cannot set mode 0600 on new audit log {}: {source}; check the filesystem supports Unix permissions", .path.display())]
    SetMode { path: PathBuf, source: io::Error },

    #[error("cannot fsync {} after creating the audit log: {source}; check the filesystem is healthy", .path.display())]
    SyncDir { path: PathBuf, source: io::Error },

    #[error("cannot lock audit log {}: {source}; check the filesystem supports flock (not NFS without locking)", .path.display())]
    Lock { path: PathBuf, source: io::Error },

    #[error("cannot read audit log {}: {source}; check the disk and run `clawkeep audit verify`", .path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write audit log {}: {source}; free disk space or fix permissions, the recorded action must not proceed", .path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("cannot fsync audit log {}: {source}; the event may not be on disk, the recorded action must not proceed", .path.display())]
    Sync { path: PathBuf, source: io::Error },

    #[error("audit log {} ends with a partial line {line} (a crash during a write?); refusing to append, run `clawkeep audit verify` and repair the log", .path.display())]
    TornTail { path: PathBuf, line: u64 },

    #[error("last line of audit log {} is unreadable ({reason}); refusing to append, run `clawkeep audit verify`", .path.display())]
    CorruptTail { path: PathBuf, reason: String },

    #[error(
        "the audit writer thread stopped (it panicked; see above); the event was not recorded, and none will be until the run is restarted"
    )]
    WriterGone,

    #[error("audit event fields must be a JSON object, got {found}; this is a bug in the caller")]
    FieldsNotObject { found: &'static str },

    #[error("audit event field {key:?} is reserved (seq, ts, prev and kind are written by the log); rename the field")]
    ReservedField { key: String },
}
