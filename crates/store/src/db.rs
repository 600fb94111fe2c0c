//! Opening the database: file mode, pragmas, migrations, the one connection.

use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{Migrations, M};

use crate::error::StoreError;

/// Owner read/write only: the store holds commands, arguments and who
/// approved them.
const FILE_MODE: u32 = 0o600;

/// How long a statement waits for another process (e.g. a CLI reading the
/// history) to release its lock before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Version 1: approval queue, session grants, decision history.
const SCHEMA_V1: &str = "
CREATE TABLE approvals (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    agent           TEXT    NOT NULL,
    session         TEXT    NOT NULL,
    command         TEXT    NOT NULL,
    args            TEXT    NOT NULL,            -- JSON array of strings
    cwd             TEXT    NOT NULL,
    uid             INTEGER NOT NULL,
    rule            INTEGER,
    reason          TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'denied', 'abandoned')),
    scope           TEXT    CHECK (scope IS NULL OR scope IN ('once', 'session', 'always')),
    decided_by      TEXT,
    decision_reason TEXT,
    created_at      TEXT    NOT NULL,
    decided_at      TEXT
);
CREATE INDEX approvals_by_status ON approvals (status, id);

CREATE TABLE session_grants (
    agent      TEXT NOT NULL,
    session    TEXT NOT NULL,
    command    TEXT NOT NULL,
    args       TEXT NOT NULL,                    -- JSON array of strings
    granted_at TEXT NOT NULL,
    PRIMARY KEY (agent, session, command, args)
) WITHOUT ROWID;

CREATE TABLE decisions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent       TEXT    NOT NULL,
    session     TEXT    NOT NULL,
    command     TEXT    NOT NULL,
    args        TEXT    NOT NULL,                -- JSON array of strings
    cwd         TEXT    NOT NULL,
    uid         INTEGER NOT NULL,
    rule        INTEGER,
    decision    TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    approved_by TEXT,
    scope       TEXT,
    reason      TEXT    NOT NULL,
    exit_code   INTEGER,
    duration_ms INTEGER,
    bytes_out   INTEGER,
    at          TEXT    NOT NULL
);
CREATE INDEX decisions_by_agent   ON decisions (agent, id);
CREATE INDEX decisions_by_command ON decisions (command, id);
CREATE INDEX decisions_by_outcome ON decisions (outcome, id);
CREATE INDEX decisions_by_at      ON decisions (at);
";

/// Every schema version, oldest first. Append; never edit a released one.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(SCHEMA_V1)])
}

/// The gate's SQLite store: one connection, one writer at a time.
///
/// `Send + Sync`; share it with `Arc<Store>`.
pub struct Store {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.as_deref().map_or_else(|| "(in memory)".to_string(), |p| p.display().to_string());
        f.debug_struct("Store").field("path", &path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`, mode 0600, and brings
    /// its schema up to date.
    ///
    /// Opens take turns while they do (the gate's services make the file
    /// while an operator's `clawkeep approvals` may open it): under a lock
    /// file beside it (`clawkeep_core::lock_beside`), so the second finds
    /// the schema made instead of failing on `CREATE TABLE`. No descriptor
    /// of the database itself is opened but SQLite's: closing one would
    /// drop SQLite's own locks on it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_private_file(path)?;
        let _turn = clawkeep_core::lock_beside(path, BUSY_TIMEOUT)
            .map_err(|source| StoreError::Lock { path: clawkeep_core::lock::lock_path(path), source })?;
        let open_err = |source| StoreError::OpenDb { path: path.to_path_buf(), source };
        // No URI flag: the path is the file we just created, even if it starts
        // with `file:`.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        configure(&conn, true).map_err(open_err)?;
        migrations().to_latest(&mut conn)?;
        Ok(Store { conn: Mutex::new(conn), path: Some(path.to_path_buf()) })
    }

    /// A private store that lives only as long as this value (for tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let open_err = |source| StoreError::OpenDb { path: path.clone(), source };
        let mut conn = Connection::open_in_memory().map_err(open_err)?;
        configure(&conn, false).map_err(open_err)?;
        migrations().to_latest(&mut conn)?;
        Ok(Store { conn: Mutex::new(conn), path: None })
    }

    /// The connection, exclusively. A panic in another thread while it held
    /// the lock cannot leave SQLite half-written (an open transaction is
    /// rolled back when it is dropped), so a poisoned lock is still usable.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates the file with mode 0600 before SQLite sees it (SQLite would use
/// 0644), and resets an existing file with any other mode to 0600, by path:
/// a descriptor of a database this process has open, closed again, would
/// drop SQLite's locks on it. SQLite gives new `-wal` and `-shm` files the
/// mode of the database; leftover ones that others can read are tightened
/// too.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let io_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    match OpenOptions::new().read(true).write(true).create_new(true).mode(FILE_MODE).open(path) {
        // New: no connection has it open yet.
        Ok(file) => drop(file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = fs::metadata(path).map_err(io_err)?.permissions().mode();
            if mode & 0o7777 != FILE_MODE {
                fs::set_permissions(path, Permissions::from_mode(FILE_MODE)).map_err(io_err)?;
            }
        }
        Err(e) => return Err(io_err(e)),
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if let Ok(meta) = fs::symlink_metadata(&side) {
            if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(&side, Permissions::from_mode(FILE_MODE)).map_err(io_err)?;
            }
        }
    }
    Ok(())
}

/// Per-connection settings. The busy timeout comes first so the switch to
/// WAL waits for another process instead of failing.
fn configure(conn: &Connection, wal: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if wal {
        // Persistent in the file; answers the mode in effect.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    }
    // FULL: a commit is on disk (the WAL is fsynced) before it returns, so
    // nothing the gate acknowledged is lost on a power cut.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Arguments are stored as a JSON array; equal argument lists give equal
/// text, which the session-grant lookup relies on.
pub(crate) fn encode_args(args: &[String]) -> rusqlite::Result<String> {
    serde_json::to_string(args).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

pub(crate) fn decode_args(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e)))
}

/// Saturates instead of failing: SQLite integers are signed 64-bit.
pub(crate) fn u64_to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A rule index as an SQLite integer (saturating).
pub(crate) fn rule_to_sql(rule: Option<usize>) -> Option<i64> {
    rule.map(|r| i64::try_from(r).unwrap_or(i64::MAX))
}

/// A nullable non-negative integer column, checked on the way out.
pub(crate) fn get_unsigned<T: TryFrom<i64>>(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(v) => T::try_from(v).map(Some).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn pragmas_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let conn = store.conn();
        let get = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(get("synchronous"), 2, "synchronous=FULL");
        assert_eq!(get("foreign_keys"), 1);
        assert_eq!(get("busy_timeout"), 5000);
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn args_round_trip_and_are_exact() {
        let a = vec!["-la".to_string(), "x y".to_string(), "\"q\"".to_string()];
        let text = encode_args(&a).unwrap();
        assert_eq!(text, r#"["-la","x y","\"q\""]"#);
        assert_ne!(encode_args(&["a b".into()]).unwrap(), encode_args(&["a".into(), "b".into()]).unwrap());
    }
}
