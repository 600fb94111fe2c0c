//! The hash chain end to end: append through the public API, tamper with the
//! file as an attacker or a crash would, and check what `verify` reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clawkeep_audit::{hash_line, verify, AuditError, AuditLog, Broken, GENESIS_PREV};
use serde_json::{json, Value};

fn new_log(n: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).expect("open");
    for i in 0..n {
        let event = log.append("tool.call", json!({"cmd": format!("echo {i}"), "i": i})).expect("append");
        assert_eq!(event.seq, i);
    }
    (dir, path)
}

fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path).expect("read log").lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.join("\n") + "\n").expect("rewrite log");
}

fn first_broken(path: &Path) -> Broken {
    verify(path).expect("verify runs").first_broken.expect("tampering detected")
}

#[test]
fn three_events_chain_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).expect("open");
    let hashes: Vec<String> =
        ["run.start", "tool.call", "run.end"].iter().map(|kind| log.append(kind, json!({"agent": "a1"})).expect("append").hash).collect();

    let report = verify(&path).expect("verify");
    assert_eq!(report.lines, 3);
    assert_eq!(report.first_broken, None);
    assert_eq!(fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);

    let lines = lines_of(&path);
    let mut prev = GENESIS_PREV.to_owned();
    for (i, line) in lines.iter().enumerate() {
        let value: Value = serde_json::from_str(line).expect("json line");
        assert_eq!(value["seq"], i as u64);
        assert_eq!(value["prev"], prev.as_str());
        assert_eq!(value["agent"], "a1");
        assert!(value["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
        assert_eq!(hash_line(line.as_bytes()), hashes[i]);
        prev = hashes[i].clone();
    }
    // The header keys come first, in this order.
    assert!(lines[0].starts_with("{\"seq\":0,\"ts\":\""));
    assert!(lines[0].contains(&format!("\"prev\":\"{GENESIS_PREV}\",\"kind\":\"run.start\"")));
}

/// An edit that leaves line 2 a well-formed record is caught at line 3: the
/// chain only knows line 2 changed because line 3 recorded its old hash.
#[test]
fn edited_middle_line_breaks_at_the_next_line() {
    let (_dir, path) = new_log(3);
    let mut lines = lines_of(&path);
    lines[1] = lines[1].replace("echo 1", "rm -rf");
    assert!(lines[1].contains("rm -rf"));
    write_lines(&path, &lines);
    let broken = first_broken(&path);
    assert_eq!(broken.line, 3);
    assert_eq!(broken.reason, "prev hash does not match line 2");
}

#[test]
fn edit_that_breaks_json_is_caught_on_that_line() {
    let (_dir, path) = new_log(3);
    let mut lines = lines_of(&path);
    lines[1].pop();
    write_lines(&path, &lines);
    let broken = first_broken(&path);
    assert_eq!(broken.line, 2);
    assert!(broken.reason.starts_with("not valid JSON"), "{}", broken.reason);
}

#[test]
fn deleted_line_is_caught_where_it_was() {
    let (_dir, path) = new_log(5);
    let mut lines = lines_of(&path);
    lines.remove(2);
    write_lines(&path, &lines);
    assert_eq!(first_broken(&path), Broken { line: 3, reason: "seq is 3, expected 2".to_owned() });
    assert_eq!(verify(&path).expect("verify").lines, 4);
}

#[test]
fn deleted_first_line_is_caught() {
    let (_dir, path) = new_log(3);
    let mut lines = lines_of(&path);
    lines.remove(0);
    write_lines(&path, &lines);
    assert_eq!(first_broken(&path).line, 1);
}

#[test]
fn reordered_lines_are_caught_at_the_first_swap() {
    let (_dir, path) = new_log(4);
    let mut lines = lines_of(&path);
    lines.swap(1, 2);
    write_lines(&path, &lines);
    assert_eq!(first_broken(&path), Broken { line: 2, reason: "seq is 2, expected 1".to_owned() });
}

/// Even with seq rewritten to hide the swap, the hashes give it away.
#[test]
fn reordered_lines_with_fixed_seq_are_caught_by_hash() {
    let (_dir, path) = new_log(4);
    let mut lines = lines_of(&path);
    lines.swap(1, 2);
    lines[1] = lines[1].replacen("\"seq\":2", "\"seq\":1", 1);
    lines[2] = lines[2].replacen("\"seq\":1", "\"seq\":2", 1);
    write_lines(&path, &lines);
    assert_eq!(first_broken(&path), Broken { line: 2, reason: "prev hash does not match line 1".to_owned() });
}

#[test]
fn truncated_last_line_is_caught() {
    let (_dir, path) = new_log(3);
    let text = fs::read(&path).expect("read");
    fs::write(&path, &text[..text.len() - 10]).expect("truncate");
    let report = verify(&path).expect("verify");
    assert_eq!(report.lines, 3);
    assert_eq!(report.first_broken, Some(Broken { line: 3, reason: "truncated: no trailing newline".to_owned() }));
}

#[test]
fn torn_tail_blocks_append() {
    let (_dir, path) = new_log(2);
    let text = fs::read(&path).expect("read");
    fs::write(&path, &text[..text.len() - 5]).expect("tear");
    let log = AuditLog::open(&path).expect("open");
    let err = log.append("next", json!({})).expect_err("must refuse");
    match &err {
        AuditError::TornTail { path: p, line } => {
            assert_eq!(p, &path);
            assert_eq!(*line, 2);
        }
        other => panic!("expected TornTail, got {other:?}"),
    }
    assert!(err.to_string().contains("clawkeep audit verify"));
    // Nothing was chained onto the torn line.
    assert_eq!(fs::read(&path).expect("read"), &text[..text.len() - 5]);
}

#[test]
fn torn_first_line_blocks_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    fs::write(&path, "{\"seq\":0,").expect("write");
    let err = AuditLog::open(&path).expect("open").append("k", json!({})).expect_err("must refuse");
    assert!(matches!(err, AuditError::TornTail { line: 1, .. }), "{err:?}");
}

#[test]
fn bad_fields_are_refused_and_nothing_is_written() {
    let (_dir, path) = new_log(1);
    let log = AuditLog::open(&path).expect("open");
    let before = fs::read(&path).expect("read");
    assert!(matches!(log.append("k", json!(["not", "an", "object"])), Err(AuditError::FieldsNotObject { found: "an array" })));
    assert!(matches!(log.append("k", json!("text")), Err(AuditError::FieldsNotObject { found: "a string" })));
    for key in ["seq", "ts", "prev", "kind"] {
        match log.append("k", json!({ key: 0, "ok": 1 })) {
            Err(AuditError::ReservedField { key: got }) => assert_eq!(got, key),
            other => panic!("expected ReservedField for {key}, got {other:?}"),
        }
    }
    assert_eq!(fs::read(&path).expect("read"), before);
}

#[test]
fn concurrent_handles_on_one_path_keep_the_chain() {
    const THREADS: u64 = 8;
    const EACH: u64 = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let path = &path;
            scope.spawn(move || {
                // Its own handle, so its own open file description: the
                // threads exclude each other through flock, like processes.
                let log = AuditLog::open(path).expect("open");
                for i in 0..EACH {
                    log.append("tick", json!({"thread": t, "i": i})).expect("append");
                }
            });
        }
    });

    let report = verify(&path).expect("verify");
    assert_eq!(report.first_broken, None);
    assert_eq!(report.lines, THREADS * EACH);
    let lines = lines_of(&path);
    let mut per_thread = vec![0u64; THREADS as usize];
    for (i, line) in lines.iter().enumerate() {
        let value: Value = serde_json::from_str(line).expect("json");
        assert_eq!(value["seq"], i as u64);
        let t = value["thread"].as_u64().expect("thread") as usize;
        // Each thread's own events stay in its order.
        assert_eq!(value["i"], per_thread[t]);
        per_thread[t] += 1;
    }
    assert!(per_thread.iter().all(|&n| n == EACH));
}

#[test]
fn verify_handles_empty_missing_and_non_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    assert!(matches!(verify(&path), Err(AuditError::NotFound { .. })));
    AuditLog::open(&path).expect("create");
    let report = verify(&path).expect("verify empty");
    assert_eq!((report.lines, report.first_broken), (0, None));
    assert!(matches!(verify(dir.path()), Err(AuditError::NotRegularFile { .. })));
}
