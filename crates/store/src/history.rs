//! Decision history: one row per gate decision, newest first when read.

use rusqlite::{params, Row};
use serde::{Deserialize, Serialize};

use crate::db::{decode_args, encode_args, get_unsigned, rule_to_sql, u64_to_sql, Store};
use crate::error::StoreError;

/// Page size when the filter names none.
const DEFAULT_LIMIT: u32 = 50;
/// Largest page a caller may ask for.
const MAX_LIMIT: u32 = 1000;

/// A gate decision to record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewDecision {
    pub agent: String,
    pub session: String,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub rule: Option<usize>,
    /// What the policy said: "allow", "deny" or "ask".
    pub decision: String,
    /// What happened: "allowed", "denied", "approved", "rejected" or
    /// "abandoned".
    pub outcome: String,
    pub approved_by: Option<String>,
    pub scope: Option<String>,
    pub reason: String,
}

/// A recorded decision and, once the command ran, how it went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionRecord {
    pub id: i64,
    pub agent: String,
    pub session: String,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub rule: Option<usize>,
    pub decision: String,
    pub outcome: String,
    pub approved_by: Option<String>,
    pub scope: Option<String>,
    pub reason: String,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    pub bytes_out: Option<u64>,
    pub at: String,
}

/// Which decisions to list; every field that is set must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HistoryFilter {
    pub agent: Option<String>,
    pub command: Option<String>,
    pub outcome: Option<String>,
    /// Decisions at or after this RFC 3339 time; a prefix such as
    /// "2026-05-01" works because timestamps compare as text.
    pub since: Option<String>,
    /// Page size: 50 when unset, at most 1000.
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// One page of history, newest first, with the total that matched.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryPage {
    pub items: Vec<DecisionRecord>,
    pub total: u64,
    pub offset: u32,
    pub limit: u32,
}

/// Unset filters are NULL and match everything, so one prepared statement
/// serves every combination.
macro_rules! filter {
    () => {
        " WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR command = ?2) \
         AND (?3 IS NULL OR outcome = ?3) AND (?4 IS NULL OR at >= ?4)"
    };
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<DecisionRecord> {
    Ok(DecisionRecord {
        id: row.get(0)?,
        agent: row.get(1)?,
        session: row.get(2)?,
        command: row.get(3)?,
        args: decode_args(row, 4)?,
        cwd: row.get(5)?,
        uid: row.get(6)?,
        rule: get_unsigned(row, 7)?,
        decision: row.get(8)?,
        outcome: row.get(9)?,
        approved_by: row.get(10)?,
        scope: row.get(11)?,
        reason: row.get(12)?,
        exit_code: row.get(13)?,
        duration_ms: get_unsigned(row, 14)?,
        bytes_out: get_unsigned(row, 15)?,
        at: row.get(16)?,
    })
}

impl Store {
    /// Records one gate decision and returns its id (for [`Store::finish`]).
    pub fn record(&self, d: &NewDecision) -> Result<i64, StoreError> {
        self.insert(d, None, None, None)
    }

    /// Records a decision whose command already ran, outcome included, in
    /// one transaction (one fsync instead of `record` + `finish`'s two).
    pub fn record_finished(
        &self,
        d: &NewDecision,
        exit_code: Option<i32>,
        duration_ms: u64,
        bytes_out: Option<u64>,
    ) -> Result<i64, StoreError> {
        self.insert(d, exit_code, Some(duration_ms), bytes_out)
    }

    fn insert(&self, d: &NewDecision, exit_code: Option<i32>, duration_ms: Option<u64>, bytes_out: Option<u64>) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO decisions (agent, session, command, args, cwd, uid, rule, decision, outcome, \
             approved_by, scope, reason, at, exit_code, duration_ms, bytes_out) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?
        .execute(params![
            d.agent,
            d.session,
            d.command,
            encode_args(&d.args)?,
            d.cwd,
            d.uid,
            rule_to_sql(d.rule),
            d.decision,
            d.outcome,
            d.approved_by,
            d.scope,
            d.reason,
            clawkeep_core::time::now_rfc3339(),
            exit_code,
            duration_ms.map(u64_to_sql),
            bytes_out.map(u64_to_sql)
        ])?;
        Ok(conn.last_insert_rowid())
    }

    /// Fills in how an executed command ended. Byte counts and durations
    /// beyond `i64::MAX` are stored as `i64::MAX`.
    pub fn finish(&self, id: i64, exit_code: Option<i32>, duration_ms: u64, bytes_out: Option<u64>) -> Result<(), StoreError> {
        let n = self
            .conn()
            .prepare_cached("UPDATE decisions SET exit_code = ?2, duration_ms = ?3, bytes_out = ?4 WHERE id = ?1")?
            .execute(params![id, exit_code, u64_to_sql(duration_ms), bytes_out.map(u64_to_sql)])?;
        if n == 0 {
            return Err(StoreError::NotFound { id });
        }
        Ok(())
    }

    /// One page of matching decisions, newest first, and how many match.
    pub fn history(&self, f: &HistoryFilter) -> Result<HistoryPage, StoreError> {
        let limit = f.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        let offset = f.offset.unwrap_or(0);
        let filter = params![f.agent, f.command, f.outcome, f.since];
        let conn = self.conn();
        let total: i64 = conn.prepare_cached(concat!("SELECT COUNT(*) FROM decisions", filter!()))?.query_row(filter, |r| r.get(0))?;
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT id, agent, session, command, args, cwd, uid, rule, decision, outcome, approved_by, scope, \
             reason, exit_code, duration_ms, bytes_out, at FROM decisions",
            filter!(),
            " ORDER BY id DESC LIMIT ?5 OFFSET ?6"
        ))?;
        let items = stmt
            .query_map(params![f.agent, f.command, f.outcome, f.since, limit, offset], record_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(HistoryPage { items, total: u64::try_from(total).unwrap_or(0), offset, limit })
    }
}
