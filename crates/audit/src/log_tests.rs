//! Unit tests for `log.rs`: opening, creation mode, and in-process locking.

use super::*;
use serde_json::json;
use std::os::unix::fs::{symlink, MetadataExt};
use std::sync::Arc;

#[test]
fn creates_file_0600_and_chains_from_genesis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).expect("open");
    assert_eq!(log.path(), path);
    assert_eq!(fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);

    let first = log.append("run.start", json!({"agent": "a1"})).expect("append");
    assert_eq!(first.seq, 0);
    let text = fs::read_to_string(&path).expect("read");
    let value: Value = serde_json::from_str(text.trim_end()).expect("json");
    assert_eq!(value["prev"], GENESIS_PREV);
    assert_eq!(value["kind"], "run.start");
    assert_eq!(value["agent"], "a1");
    assert_eq!(first.hash, hash_line(text.trim_end().as_bytes()));
}

#[test]
fn an_existing_log_readable_by_others_is_made_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    fs::write(&path, "").expect("write");
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    AuditLog::open(&path).expect("open");
    assert_eq!(fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let first = AuditLog::open(&path).expect("open").append("a", json!({})).expect("append");
    let second = AuditLog::open(&path).expect("reopen").append("b", json!({})).expect("append");
    assert_eq!(second.seq, 1);
    let text = fs::read_to_string(&path).expect("read");
    let last: Value = serde_json::from_str(text.lines().nth(1).expect("line 2")).expect("json");
    assert_eq!(last["prev"], first.hash.as_str());
}

#[test]
fn refuses_symlinks_and_non_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("target");
    fs::write(&target, "").expect("write");
    let link = dir.path().join("link");
    symlink(&target, &link).expect("symlink");
    assert!(matches!(AuditLog::open(&link), Err(AuditError::Symlink { .. })));
    let dangling = dir.path().join("dangling");
    symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
    assert!(matches!(AuditLog::open(&dangling), Err(AuditError::Symlink { .. })));
    assert!(!dir.path().join("nowhere").exists(), "followed a dangling symlink");
    assert!(matches!(AuditLog::open(dir.path()), Err(AuditError::NotRegularFile { .. })));
}

#[test]
fn missing_parent_is_an_open_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = AuditLog::open(&dir.path().join("no/such/audit.jsonl")).expect_err("no parent");
    assert!(matches!(err, AuditError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("no/such/audit.jsonl"));
}

#[test]
fn threads_sharing_one_handle_are_serialized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let log = Arc::new(AuditLog::open(&path).expect("open"));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..25 {
                    log.append("tick", json!({"t": t, "i": i})).expect("append");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let report = crate::verify(&path).expect("verify");
    assert_eq!(report.lines, 100);
    assert_eq!(report.first_broken, None);
}

#[test]
fn unparseable_last_line_is_corrupt_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    fs::write(&path, "not json\n").expect("write");
    let log = AuditLog::open(&path).expect("open");
    let err = log.append("k", json!({})).expect_err("corrupt");
    assert!(matches!(err, AuditError::CorruptTail { .. }), "{err:?}");
    assert!(err.to_string().contains("clawkeep audit verify"));
}

#[test]
fn deferred_append_chains_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let a = log.append_deferred("run.start", serde_json::json!({"n": 1})).unwrap();
    log.sync().unwrap();
    let b = log.append("run.exit", serde_json::json!({"n": 2})).unwrap();
    assert_eq!((a.seq, b.seq), (0, 1));
    let report = crate::verify(&path).unwrap();
    assert!(report.is_ok());
    assert_eq!(report.lines, 2);
}
