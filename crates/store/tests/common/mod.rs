//! Sample requests shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use clawkeep_store::{NewApproval, NewDecision, Store};

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

pub fn ask(agent: &str, session: &str, command: &str, a: &[&str]) -> NewApproval {
    NewApproval {
        agent: agent.into(),
        session: session.into(),
        command: command.into(),
        args: args(a),
        cwd: "/work".into(),
        uid: 1000,
        rule: Some(3),
        reason: "rule 3 asks for network tools".into(),
    }
}

pub fn decision(agent: &str, command: &str, outcome: &str) -> NewDecision {
    NewDecision {
        agent: agent.into(),
        session: "s1".into(),
        command: command.into(),
        args: args(&["-x", "a b"]),
        cwd: "/work".into(),
        uid: 1000,
        rule: None,
        decision: if outcome == "allowed" { "allow" } else { "ask" }.into(),
        outcome: outcome.into(),
        approved_by: None,
        scope: None,
        reason: "test".into(),
    }
}

/// A fresh store file in its own tempdir (keep the dir alive).
pub fn temp_store() -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clawkeep.db");
    let store = Store::open(&path).unwrap();
    (dir, path, store)
}
