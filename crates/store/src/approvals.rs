//! The approval queue: "ask" decisions waiting for a human.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::db::{decode_args, encode_args, get_unsigned, rule_to_sql, Store};
use crate::error::StoreError;
use crate::sessions::insert_grant;

/// A request the policy answered with "ask".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewApproval {
    pub agent: String,
    pub session: String,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    /// Index of the policy rule that asked, if one did.
    pub rule: Option<usize>,
    pub reason: String,
}

/// A queued request and, once decided, its decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Approval {
    pub id: i64,
    pub agent: String,
    pub session: String,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub rule: Option<usize>,
    pub reason: String,
    pub status: ApprovalStatus,
    pub scope: Option<Scope>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub created_at: String,
    pub decided_at: Option<String>,
}

/// Where an approval is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    /// The waiting shim went away before anyone decided.
    Abandoned,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Abandoned => "abandoned",
        }
    }
}

/// How far an approval reaches.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This request only.
    Once,
    /// The same agent + session + command + exact args, for the rest of the
    /// session (the store records a session grant).
    Session,
    /// From now on; the caller writes a policy rule, the store only records
    /// the scope.
    Always,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Once => "once",
            Scope::Session => "session",
            Scope::Always => "always",
        }
    }
}

/// A string that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}`; use one of: once, session, always")]
pub struct ParseScopeError(pub String);

impl FromStr for Scope {
    type Err = ParseScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "once" => Ok(Scope::Once),
            "session" => Ok(Scope::Session),
            "always" => Ok(Scope::Always),
            other => Err(ParseScopeError(other.to_string())),
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for ApprovalStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ApprovalStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "pending" => Ok(ApprovalStatus::Pending),
            "approved" => Ok(ApprovalStatus::Approved),
            "denied" => Ok(ApprovalStatus::Denied),
            "abandoned" => Ok(ApprovalStatus::Abandoned),
            other => Err(FromSqlError::Other(format!("unknown approval status `{other}`").into())),
        }
    }
}

impl ToSql for Scope {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Scope {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_str()?.parse().map_err(|e: ParseScopeError| FromSqlError::Other(Box::new(e)))
    }
}

/// A human's answer to a pending approval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resolution {
    pub approve: bool,
    pub scope: Scope,
    /// Who decided (operator name, "cli", "web", ...).
    pub by: String,
    pub reason: Option<String>,
}

macro_rules! select_approval {
    () => {
        "SELECT id, agent, session, command, args, cwd, uid, rule, reason, status, scope, \
         decided_by, decision_reason, created_at, decided_at FROM approvals"
    };
}

fn approval_from_row(row: &Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        id: row.get(0)?,
        agent: row.get(1)?,
        session: row.get(2)?,
        command: row.get(3)?,
        args: decode_args(row, 4)?,
        cwd: row.get(5)?,
        uid: row.get(6)?,
        rule: get_unsigned(row, 7)?,
        reason: row.get(8)?,
        status: row.get(9)?,
        scope: row.get(10)?,
        decided_by: row.get(11)?,
        decision_reason: row.get(12)?,
        created_at: row.get(13)?,
        decided_at: row.get(14)?,
    })
}

fn get_in(conn: &Connection, id: i64) -> Result<Option<Approval>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(select_approval!(), " WHERE id = ?1"))?;
    Ok(stmt.query_row([id], approval_from_row).optional()?)
}

/// The approval, if it exists and is still pending.
fn pending_in(conn: &Connection, id: i64) -> Result<Approval, StoreError> {
    let approval = get_in(conn, id)?.ok_or(StoreError::NotFound { id })?;
    match approval.status {
        ApprovalStatus::Pending => Ok(approval),
        status => Err(StoreError::NotPending { id, status }),
    }
}

fn resolve_in(conn: &Connection, id: i64, res: &Resolution, now: &str) -> Result<Approval, StoreError> {
    let mut approval = pending_in(conn, id)?;
    let grant_session = res.approve && res.scope == Scope::Session;
    if grant_session && approval.session.is_empty() {
        return Err(StoreError::NoSession { agent: approval.agent });
    }
    let status = if res.approve { ApprovalStatus::Approved } else { ApprovalStatus::Denied };
    conn.prepare_cached(
        "UPDATE approvals SET status = ?2, scope = ?3, decided_by = ?4, decision_reason = ?5, decided_at = ?6 \
         WHERE id = ?1 AND status = 'pending'",
    )?
    .execute(params![id, status, res.scope, res.by, res.reason, now])?;
    if grant_session {
        insert_grant(conn, &approval.agent, &approval.session, &approval.command, &approval.args, now)?;
    }
    approval.status = status;
    approval.scope = Some(res.scope);
    approval.decided_by = Some(res.by.clone());
    approval.decision_reason.clone_from(&res.reason);
    approval.decided_at = Some(now.to_string());
    Ok(approval)
}

impl Store {
    /// Queues a request for a human decision; it stays pending across
    /// restarts until resolved or abandoned.
    pub fn enqueue(&self, req: &NewApproval) -> Result<Approval, StoreError> {
        let conn = self.conn();
        let now = clawkeep_core::time::now_rfc3339();
        conn.prepare_cached(
            "INSERT INTO approvals (agent, session, command, args, cwd, uid, rule, reason, status, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
        )?
        .execute(params![
            req.agent,
            req.session,
            req.command,
            encode_args(&req.args)?,
            req.cwd,
            req.uid,
            rule_to_sql(req.rule),
            req.reason,
            now
        ])?;
        let id = conn.last_insert_rowid();
        get_in(&conn, id)?.ok_or(StoreError::NotFound { id })
    }

    /// Every pending approval, oldest first.
    pub fn pending(&self) -> Result<Vec<Approval>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!(select_approval!(), " WHERE status = 'pending' ORDER BY id"))?;
        let rows = stmt.query_map([], approval_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One approval in any state.
    pub fn get(&self, id: i64) -> Result<Option<Approval>, StoreError> {
        get_in(&self.conn(), id)
    }

    /// Approves or denies a pending approval. Approving with
    /// [`Scope::Session`] also records the session grant, in the same
    /// transaction.
    pub fn resolve(&self, id: i64, res: &Resolution) -> Result<Approval, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let approval = resolve_in(&tx, id, res, &clawkeep_core::time::now_rfc3339())?;
        tx.commit()?;
        Ok(approval)
    }

    /// Resolves several approvals the same way, all or nothing: if any id is
    /// unknown or not pending (a repeated id counts), none changes.
    pub fn resolve_many(&self, ids: &[i64], res: &Resolution) -> Result<Vec<Approval>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = clawkeep_core::time::now_rfc3339();
        let done = ids.iter().map(|&id| resolve_in(&tx, id, res, &now)).collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(done)
    }

    /// The shim that waited for this approval disconnected: Pending ->
    /// Abandoned, with `why` as the decision reason.
    pub fn abandon(&self, id: i64, why: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        pending_in(&tx, id)?;
        tx.prepare_cached(
            "UPDATE approvals SET status = 'abandoned', decision_reason = ?2, decided_at = ?3 \
             WHERE id = ?1 AND status = 'pending'",
        )?
        .execute(params![id, why, clawkeep_core::time::now_rfc3339()])?;
        tx.commit()?;
        Ok(())
    }

    /// Abandons every pending approval and says how many. Not called on
    /// open: the queue survives a restart unless an operator clears it.
    pub fn abandon_all_pending(&self, why: &str) -> Result<usize, StoreError> {
        let conn = self.conn();
        let n = conn
            .prepare_cached(
                "UPDATE approvals SET status = 'abandoned', decision_reason = ?1, decided_at = ?2 \
                 WHERE status = 'pending'",
            )?
            .execute(params![why, clawkeep_core::time::now_rfc3339()])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn scope_parses_and_lists_valid_ones() {
        assert_eq!("once".parse::<Scope>().unwrap(), Scope::Once);
        assert_eq!("session".parse::<Scope>().unwrap(), Scope::Session);
        assert_eq!("always".parse::<Scope>().unwrap(), Scope::Always);
        let err = "forever".parse::<Scope>().unwrap_err().to_string();
        assert!(err.contains("forever") && err.contains("once, session, always"), "{err}");
    }

    #[test]
    fn enums_serialize_lowercase() {
        assert_eq!(serde_json::to_string(&ApprovalStatus::Abandoned).unwrap(), "\"abandoned\"");
        assert_eq!(serde_json::to_string(&Scope::Session).unwrap(), "\"session\"");
        assert_eq!(serde_json::from_str::<Scope>("\"always\"").unwrap(), Scope::Always);
    }
}
