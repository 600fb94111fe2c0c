//! The usage ledger: one SQLite row per proxied request, in the proxy's own
//! database file (0600, WAL). Rows are only ever inserted.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LedgerError {
    #[error("cannot open usage database {path}: {source}; check the directory exists and is writable")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create usage database {path}: {source}; check the directory exists and is writable")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot take the usage database's lock {path}: {source}; {}", clawkeep_core::lock::advice(source))]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("cannot set permissions on usage database {path}: {source}")]
    Permissions { path: PathBuf, source: std::io::Error },
    #[error("usage database query failed: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("usage database writer: {0}")]
    Writer(String),
}

/// One recorded request. `at` is UTC, `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    pub agent: String,
    pub model: String,
    pub provider: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub latency_ms: u64,
    pub status: u16,
    pub at: String,
}

/// Reads go through `conn`; rows are written by one writer thread that
/// commits whatever has queued up in one transaction (group commit), so
/// a request never waits for an fsync and a burst costs one. The writer
/// gathers rows for up to [`GATHER`] before it commits: under load each
/// commit's fsync (most of the writer's CPU, on a virtual disk above all)
/// is shared by many more rows.
#[derive(Debug)]
pub struct Ledger {
    conn: Mutex<Connection>,
    queue: Arc<Queue>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    rows: Vec<(UsageRow, u64)>,
    submitted: u64,
    written: u64,
    closed: bool,
    /// Readers waiting in [`Ledger::flush`]: the writer commits at once.
    flushing: usize,
}

/// How long the writer gathers rows before it commits them, at most.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);
/// A batch this large is committed without waiting out [`GATHER`].
const GATHER_ROWS: usize = 512;

const INSERT: &str =
    "INSERT INTO proxy_usage (agent, model, provider, input_tokens, output_tokens, cost_usd, latency_ms, status, at, at_unix)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS proxy_usage (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_ms INTEGER NOT NULL,
    status INTEGER NOT NULL,
    at TEXT NOT NULL,
    at_unix INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS proxy_usage_agent_at ON proxy_usage(agent, at_unix);
";

impl Ledger {
    /// Opens (creating 0600 if needed) the ledger at `path`.
    ///
    /// Opens take turns while they switch it to WAL and make the schema (a
    /// run's proxy makes it while `clawkeep usage` may open it), under a
    /// lock file beside it (`clawkeep_core::lock_beside`). No descriptor of
    /// the database itself is opened but SQLite's: closing one would drop
    /// SQLite's own locks on it.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        use std::os::unix::fs::OpenOptionsExt;
        // Made 0600 before SQLite sees it (it would make it 0644); an
        // existing one is left to SQLite (and `set_private`, by path).
        match std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path) {
            Ok(new) => drop(new),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(LedgerError::Create { path: path.to_path_buf(), source }),
        }
        let _turn = clawkeep_core::lock_beside(path, std::time::Duration::from_secs(5))
            .map_err(|source| LedgerError::Lock { path: clawkeep_core::lock::lock_path(path), source })?;
        let open_err = |source| LedgerError::Open { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        set_private(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", path.display()));
            if side.exists() {
                set_private(&side)?;
            }
        }
        let wconn = Connection::open(path).map_err(open_err)?;
        wconn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        let writer = std::thread::Builder::new()
            .name("clawkeep-ledger".into())
            .spawn(move || write_loop(wconn, &q))
            .map_err(|e| LedgerError::Writer(e.to_string()))?;
        Ok(Ledger { conn: Mutex::new(conn), queue, writer: Mutex::new(Some(writer)) })
    }

    /// Waits until every row recorded so far is committed.
    pub fn flush(&self) {
        let mut st = self.queue.state.lock().unwrap_or_else(PoisonError::into_inner);
        let target = st.submitted;
        st.flushing += 1;
        self.queue.changed.notify_all();
        while st.written < target && !st.closed {
            st = self.queue.changed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.flushing -= 1;
    }

    /// Queues `row`; the writer commits it within milliseconds (see
    /// [`GATHER`]). Reads through this ledger wait for it, so they never
    /// miss a row.
    pub fn record(&self, row: &UsageRow, at_unix: u64) -> Result<(), LedgerError> {
        let mut st = self.queue.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.closed {
            return Err(LedgerError::Writer("the ledger is closed".into()));
        }
        st.rows.push((row.clone(), at_unix));
        st.submitted += 1;
        // The writer waits for a first row, or gathers until a full batch:
        // a wake-up per row would cost a context switch per request.
        if st.rows.len() == 1 || st.rows.len() == GATHER_ROWS {
            self.queue.changed.notify_all();
        }
        Ok(())
    }

    /// Rows for `agent` (all agents if `None`) at or after `since`
    /// (a timestamp in the `at` format or a prefix of one, e.g. `2026-11-22`).
    pub fn usage(&self, agent: Option<&str>, since: Option<&str>) -> Result<Vec<UsageRow>, LedgerError> {
        self.flush();
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stmt = conn.prepare(
            "SELECT agent, model, provider, input_tokens, output_tokens, cost_usd, latency_ms, status, at FROM proxy_usage
             WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR at >= ?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![agent, since], |r| {
            Ok(UsageRow {
                agent: r.get(0)?,
                model: r.get(1)?,
                provider: r.get(2)?,
                input_tokens: r.get::<_, i64>(3)?.max(0) as u64,
                output_tokens: r.get::<_, i64>(4)?.max(0) as u64,
                cost_usd: r.get(5)?,
                latency_ms: r.get::<_, i64>(6)?.max(0) as u64,
                status: r.get(7)?,
                at: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Tokens and USD `agent` spent at or after `since_unix`.
    pub fn spent_since(&self, agent: &str, since_unix: u64) -> Result<(u64, f64), LedgerError> {
        self.flush();
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let row = conn
            .query_row(
                "SELECT COALESCE(SUM(input_tokens + output_tokens), 0), COALESCE(SUM(cost_usd), 0.0) FROM proxy_usage
                 WHERE agent = ?1 AND at_unix >= ?2",
                params![agent, to_i64(since_unix)],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?)),
            )
            .optional()?;
        Ok(row.map(|(t, usd)| (t.max(0) as u64, usd)).unwrap_or((0, 0.0)))
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        {
            let mut st = self.queue.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.closed = true;
            self.queue.changed.notify_all();
        }
        // The writer commits what is queued before it stops.
        if let Some(w) = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = w.join();
        }
    }
}

/// Closes the queue however the writer's thread ends, a panic included:
/// a flush (and the budget reads behind it) never waits for a writer that
/// is gone, and later rows are refused with an error.
struct Closed<'a>(&'a Queue);

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.closed = true;
        self.0.changed.notify_all();
    }
}

fn write_loop(mut conn: Connection, q: &Queue) {
    let _closed = Closed(q);
    loop {
        let batch = {
            let mut st = q.state.lock().unwrap_or_else(PoisonError::into_inner);
            while st.rows.is_empty() && !st.closed {
                st = q.changed.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            let until = std::time::Instant::now() + GATHER;
            while !st.closed && st.flushing == 0 && st.rows.len() < GATHER_ROWS {
                let Some(left) = until.checked_duration_since(std::time::Instant::now()) else { break };
                st = q.changed.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
            }
            if st.rows.is_empty() {
                return;
            }
            std::mem::take(&mut st.rows)
        };
        if let Err(e) = insert_batch(&mut conn, &batch) {
            tracing::error!(error = %e, rows = batch.len(), "could not record usage");
        }
        let mut st = q.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.written += batch.len() as u64;
        q.changed.notify_all();
    }
}

fn insert_batch(conn: &mut Connection, batch: &[(UsageRow, u64)]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for (row, at_unix) in batch {
            stmt.execute(params![
                row.agent,
                row.model,
                row.provider,
                to_i64(row.input_tokens),
                to_i64(row.output_tokens),
                row.cost_usd,
                to_i64(row.latency_ms),
                row.status,
                row.at,
                to_i64(*at_unix)
            ])?;
        }
    }
    tx.commit()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn set_private(path: &Path) -> Result<(), LedgerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| LedgerError::Permissions { path: path.to_path_buf(), source })
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (proleptic Gregorian, UTC).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
