//! Session grants: "approve for this session" remembered per agent, session,
//! command and exact argument list.

use rusqlite::{params, Connection};

use crate::db::{encode_args, Store};
use crate::error::StoreError;

/// Records a grant; granting the same thing twice is not an error.
pub(crate) fn insert_grant(
    conn: &Connection,
    agent: &str,
    session: &str,
    command: &str,
    args: &[String],
    now: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO session_grants (agent, session, command, args, granted_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![agent, session, command, encode_args(args)?, now])?;
    Ok(())
}

impl Store {
    /// Lets `command` with exactly `args` through for the rest of this
    /// agent's session. An empty session id is refused: the grant would
    /// never end.
    pub fn grant_session(&self, agent: &str, session: &str, command: &str, args: &[String]) -> Result<(), StoreError> {
        if session.is_empty() {
            return Err(StoreError::NoSession { agent: agent.to_string() });
        }
        insert_grant(&self.conn(), agent, session, command, args, &clawkeep_core::time::now_rfc3339())
    }

    /// Whether a session grant covers exactly this request. Never true for
    /// an empty session id.
    pub fn session_allows(&self, agent: &str, session: &str, command: &str, args: &[String]) -> Result<bool, StoreError> {
        if session.is_empty() {
            return Ok(false);
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM session_grants \
             WHERE agent = ?1 AND session = ?2 AND command = ?3 AND args = ?4)",
        )?;
        Ok(stmt.query_row(params![agent, session, command, encode_args(args)?], |r| r.get(0))?)
    }

    /// Forgets every grant of this agent's session.
    pub fn end_session(&self, agent: &str, session: &str) -> Result<(), StoreError> {
        self.conn().prepare_cached("DELETE FROM session_grants WHERE agent = ?1 AND session = ?2")?.execute(params![agent, session])?;
        Ok(())
    }
}
