//! Opening: file modes, WAL, and what survives a restart or a crash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use clawkeep_store::{ApprovalStatus, Store, StoreError};
use common::{ask, decision, temp_store};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn side(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

#[test]
fn new_file_and_its_wal_are_mode_0600() {
    let (_dir, path, store) = temp_store();
    store.record(&decision("a", "ls", "allowed")).unwrap();
    assert_eq!(mode(&path), 0o600);
    let wal = side(&path, "-wal");
    assert!(wal.exists(), "WAL file should exist while the store is open");
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(mode(&side(&path, "-shm")), 0o600);
}

#[test]
fn existing_loose_file_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loose.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn journal_mode_is_wal_on_disk() {
    let (_dir, path, store) = temp_store();
    drop(store);
    // WAL is a property of the file: a separate plain connection sees it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let jm: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(jm, "wal");
}

#[test]
fn missing_directory_is_an_open_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/s.db");
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("no/such/dir/s.db") && msg.contains("check that its directory exists"), "{msg}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.db");
    std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::OpenDb { .. }), "{err:?}");
    assert!(err.to_string().contains("move it aside"), "{err}");
}

#[test]
fn pending_queue_survives_restart() {
    let (_dir, path, store) = temp_store();
    let a = store.enqueue(&ask("agent-1", "s1", "curl", &["https://example.com"])).unwrap();
    let b = store.enqueue(&ask("agent-2", "s9", "rm", &["-rf", "build"])).unwrap();
    drop(store);

    let store = Store::open(&path).unwrap();
    let pending = store.pending().unwrap();
    assert_eq!(pending, vec![a.clone(), b.clone()], "same items, oldest first");
    assert_eq!(pending[0].status, ApprovalStatus::Pending);
    assert_eq!(pending[0].args, vec!["https://example.com".to_string()]);
    assert_eq!(pending[0].rule, Some(3));
    // ...and it can still be resolved after the restart.
    store
        .resolve(a.id, &clawkeep_store::Resolution { approve: true, scope: clawkeep_store::Scope::Once, by: "op".into(), reason: None })
        .unwrap();
    assert_eq!(store.pending().unwrap(), vec![b]);
}

#[test]
fn data_survives_drop_without_close() {
    let (_dir, path, store) = temp_store();
    let id = store.record(&decision("a", "ls", "allowed")).unwrap();
    store.enqueue(&ask("a", "s", "curl", &[])).unwrap();
    // No close, no checkpoint: the connection is leaked, as if the process
    // had stopped here. The committed rows live only in the WAL.
    std::mem::forget(store);
    let store = Store::open(&path).unwrap();
    let page = store.history(&Default::default()).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, id);
    assert_eq!(store.pending().unwrap().len(), 1);
}

const CRASH_ENV: &str = "CLAWKEEP_STORE_CRASH_CHILD_DB";

/// Runs only as the child of `data_survives_process_abort`: writes, then
/// aborts the process without any cleanup.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_ENV) else { return };
    let store = Store::open(Path::new(&path)).unwrap();
    for _ in 0..10 {
        store.record(&decision("crasher", "make", "allowed")).unwrap();
    }
    store.enqueue(&ask("crasher", "s", "curl", &["x"])).unwrap();
    std::process::abort();
}

#[test]
fn data_survives_process_abort() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, &path)
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have aborted");
    assert!(side(&path, "-wal").exists(), "abort leaves the WAL behind");

    let store = Store::open(&path).unwrap();
    let page = store.history(&Default::default()).unwrap();
    assert_eq!(page.total, 10, "every acknowledged record is there");
    let pending = store.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].agent, "crasher");
}

/// The gate's services create the store while an operator's `clawkeep
/// approvals` may open it: whoever comes second must find the schema made,
/// not fail on it (a gate that lost this race served nothing).
#[test]
fn first_opens_racing_on_a_new_file_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let path = dir.path().join(format!("race-{round}.db"));
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    Store::open(&path).map(|s| s.pending().unwrap().len())
                })
            })
            .collect();
        for o in opens {
            assert_eq!(o.join().unwrap().unwrap_or_else(|e| panic!("round {round}: {e}")), 0);
        }
    }
}

/// The POSIX locks this process holds on `path`'s inode (/proc/locks).
fn posix_locks_on(path: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).unwrap().ino();
    let pid = std::process::id().to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "1: POSIX  ADVISORY  READ 1234 fd:01:5678 ..." (a blocked
            // waiter's line has "->" first).
            f.get(1) == Some(&"POSIX")
                && f.get(4) == Some(&pid.as_str())
                && f.get(5).and_then(|d| d.rsplit(':').next()) == Some(ino.to_string().as_str())
        })
        .count()
}

/// SQLite keeps a lock on an open WAL database; opening (the store, or
/// another store on the same file) must not drop it, as closing a second
/// descriptor of the file would: another process could then checkpoint
/// and remove the WAL under the live connection.
#[test]
fn opening_keeps_sqlites_own_locks_on_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // What SQLite itself holds here, opened directly.
    let bare = dir.path().join("bare.db");
    let conn = rusqlite::Connection::open(&bare).unwrap();
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    let baseline = posix_locks_on(&bare);
    assert!(baseline > 0, "SQLite holds no lock on an open WAL database on this host");
    drop(conn);

    let path = dir.path().join("clawkeep.db");
    let store = Store::open(&path).unwrap();
    store.record(&decision("a", "ls", "allowed")).unwrap();
    assert!(posix_locks_on(&path) >= baseline, "opening the store dropped SQLite's locks on it");
    let again = Store::open(&path).unwrap();
    assert!(posix_locks_on(&path) >= baseline, "a second open dropped the first connection's locks");
    drop(again);
    store.record(&decision("a", "ls", "allowed")).unwrap();
    assert!(posix_locks_on(&path) >= baseline, "closing the second store dropped the first one's locks");
    assert!(side(&path, "-wal").exists());
}
