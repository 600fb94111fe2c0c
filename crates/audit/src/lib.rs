//! Tamper-evident, crash-safe, append-only audit log.
//!
//! The log is a JSONL file: one event per line, each line carrying its
//! 0-based `seq` and the SHA-256 of the previous line (`prev`), so editing,
//! deleting or reordering any line but the last breaks the chain where
//! [`verify`] can see it. [`AuditLog::append`] returns only after the event
//! is fsynced, so an action that waits for it is always on record.
//!
//! This crate writes nothing but the log itself: it never logs, and it
//! records only the fields callers hand it, so secrets stay out unless a
//! caller puts them in.

mod error;
mod group;
mod line;
mod lock;
mod log;
mod tail;
mod verify;

pub use error::AuditError;
pub use group::{Done, GroupWriter};
pub use line::{hash_line, GENESIS_PREV};
pub use log::{AppendedEvent, AuditLog};
pub use verify::{verify, verify_anchored, Anchor, Broken, Head, VerifyReport};
