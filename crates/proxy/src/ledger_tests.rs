use super::{format_utc, Ledger, UsageRow};

#[test]
fn formats_utc() {
    assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_utc(1_795_910_400), "2026-11-29T00:00:00Z");
    assert_eq!(format_utc(951_782_400 + 3661), "2000-02-29T01:01:01Z");
}

#[test]
fn records_and_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.db");
    let ledger = Ledger::open(&path).expect("open");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
    let row = |agent: &str, at: u64| UsageRow {
        agent: agent.into(),
        model: "m".into(),
        provider: "p".into(),
        input_tokens: 10,
        output_tokens: 5,
        cost_usd: 0.5,
        latency_ms: 3,
        status: 200,
        at: format_utc(at),
    };
    ledger.record(&row("a", 1000), 1000).expect("record");
    ledger.record(&row("b", 2000), 2000).expect("record");
    ledger.record(&row("a", 3000), 3000).expect("record");
    assert_eq!(ledger.usage(None, None).expect("all").len(), 3);
    assert_eq!(ledger.usage(Some("a"), None).expect("a").len(), 2);
    assert_eq!(ledger.usage(Some("a"), Some(&format_utc(2000))).expect("since").len(), 1);
    assert_eq!(ledger.spent_since("a", 0).expect("spent"), (30, 1.0));
}

fn row(agent: &str) -> UsageRow {
    UsageRow {
        agent: agent.into(),
        model: "m".into(),
        provider: "p".into(),
        input_tokens: 1,
        output_tokens: 1,
        cost_usd: 0.0,
        latency_ms: 1,
        status: 200,
        at: format_utc(1_000),
    }
}

#[test]
#[allow(clippy::unwrap_used)]
fn rows_from_many_threads_are_all_committed_and_survive_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let ledger = std::sync::Arc::new(Ledger::open(&path).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let l = ledger.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let mut r = row(&format!("agent-{t}"));
                    r.input_tokens = i;
                    l.record(&r, 1_000 + i).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // A read sees every row recorded before it.
    assert_eq!(ledger.usage(None, None).unwrap().len(), 400);
    ledger.record(&row("late"), 2_000).unwrap();
    drop(ledger);
    // Dropping the ledger committed the queued row.
    let reopened = Ledger::open(&path).unwrap();
    assert_eq!(reopened.usage(Some("late"), None).unwrap().len(), 1);
}

/// A row is committed on its own, without anyone flushing: another
/// connection (another process) sees it within a bounded wait.
#[test]
#[allow(clippy::unwrap_used)]
fn a_row_is_committed_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.db");
    let ledger = Ledger::open(&path).unwrap();
    ledger.record(&row("alone"), 1_000).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    let count = || other.query_row("SELECT COUNT(*) FROM proxy_usage", [], |r| r.get::<_, i64>(0)).unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while count() == 0 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(count(), 1, "the row was not committed within 5 s");
}

/// A run's proxy makes the ledger while `clawkeep usage` may open it: every
/// first open racing on a new file succeeds.
#[test]
fn first_opens_racing_on_a_new_file_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..20 {
        let path = dir.path().join(format!("race-{round}.db"));
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    Ledger::open(&path).map(drop).map_err(|e| e.to_string())
                })
            })
            .collect();
        for o in opens {
            o.join().expect("thread").unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
}

/// Opening the ledger again (as `clawkeep usage` does beside a run's
/// proxy, in its own process; here in ours) leaves SQLite's locks on the
/// file in place: no descriptor of it is opened and closed beside SQLite's.
#[test]
fn opening_keeps_sqlites_own_locks_on_the_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let first = Ledger::open(&path).expect("open");
    let ino = std::fs::metadata(&path).expect("meta").ino().to_string();
    let pid = std::process::id().to_string();
    let locks = || {
        std::fs::read_to_string("/proc/locks")
            .expect("/proc/locks")
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1) == Some(&"POSIX")
                    && f.get(4) == Some(&pid.as_str())
                    && f.get(5).and_then(|d| d.rsplit(':').next()) == Some(ino.as_str())
            })
            .count()
    };
    let held = locks();
    assert!(held > 0, "an open WAL ledger holds SQLite's lock on its file");
    drop(Ledger::open(&path).expect("again"));
    assert!(locks() > 0, "opening and closing a second ledger dropped the first one's locks");
    drop(first);
}
