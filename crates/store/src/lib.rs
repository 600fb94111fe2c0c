//! The gate's durable state in one SQLite file.
//!
//! * [`Store`] — one connection behind a mutex (one writer), shared via
//!   `Arc`; opened with mode 0600, WAL, `synchronous=FULL`.
//! * Approval queue — an "ask" decision becomes a pending [`Approval`] that
//!   survives a restart until it is resolved ([`Resolution`]) or abandoned.
//! * Session grants — an approval with [`Scope::Session`] lets the same
//!   agent + session + command + exact args through for the rest of that
//!   session.
//! * Decision history — every gate decision as a [`DecisionRecord`],
//!   queried with a [`HistoryFilter`] one [`HistoryPage`] at a time.
//!
//! Every statement is prepared with parameters; no value is ever spliced
//! into SQL text.

mod approvals;
mod db;
mod error;
mod history;
mod sessions;

pub use approvals::{Approval, ApprovalStatus, NewApproval, ParseScopeError, Resolution, Scope};
pub use db::Store;
pub use error::StoreError;
pub use history::{DecisionRecord, HistoryFilter, HistoryPage, NewDecision};
