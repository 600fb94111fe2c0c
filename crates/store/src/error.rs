//! The store's one error type.

use std::path::PathBuf;

use crate::approvals::ApprovalStatus;

/// What went wrong in the store; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating, opening or restricting the database file itself failed.
    #[error("cannot create or open the store file {}: {source}; check that its directory exists and is writable by this user", path.display())]
    Open { path: PathBuf, source: std::io::Error },

    /// The lock opens take turns under (see `Store::open`) was not had.
    #[error("cannot take the store's lock {}: {source}; {}", path.display(), clawkeep_core::lock::advice(source))]
    Lock { path: PathBuf, source: std::io::Error },

    /// SQLite could not open the file or set it up (pragmas).
    #[error("cannot open the SQLite store {}: {source}; if the file is not a clawkeep database, move it aside", path.display())]
    OpenDb { path: PathBuf, source: rusqlite::Error },

    /// A statement failed after the store was open.
    #[error("store database error: {0}; check free disk space and the permissions of the state directory")]
    Sqlite(#[from] rusqlite::Error),

    /// The schema could not be brought to this version.
    #[error("cannot migrate the store schema: {0}; the file may come from a newer clawkeep, so upgrade or move the file aside")]
    Migration(String),

    /// No approval (or decision, for `finish`) has this id.
    #[error("no approval or decision with id {id}; use an id from the pending list or the history")]
    NotFound { id: i64 },

    /// The approval was already approved, denied or abandoned.
    #[error("approval {id} is already {status}; only pending approvals can be resolved or abandoned")]
    NotPending { id: i64, status: ApprovalStatus },

    /// A session grant was asked for a request that carries no session id.
    #[error("approval for agent `{agent}` has no session id, so it cannot be granted for the session; approve it with scope `once` or `always` instead")]
    NoSession { agent: String },
}

impl From<rusqlite_migration::Error> for StoreError {
    fn from(e: rusqlite_migration::Error) -> Self {
        StoreError::Migration(e.to_string())
    }
}
