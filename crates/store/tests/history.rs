//! Decision history: record, finish, filters, paging, concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use clawkeep_store::{HistoryFilter, Store, StoreError};
use common::{args, decision, temp_store};

#[test]
fn record_then_finish() {
    let (_dir, _path, store) = temp_store();
    let mut d = decision("agent", "curl", "approved");
    d.rule = Some(7);
    d.approved_by = Some("alice".into());
    d.scope = Some("session".into());
    let id = store.record(&d).unwrap();

    let rec = store.history(&HistoryFilter::default()).unwrap().items.remove(0);
    assert_eq!(rec.id, id);
    assert_eq!((rec.agent.as_str(), rec.command.as_str(), rec.args.clone()), ("agent", "curl", args(&["-x", "a b"])));
    assert_eq!((rec.decision.as_str(), rec.outcome.as_str(), rec.rule), ("ask", "approved", Some(7)));
    assert_eq!((rec.approved_by.as_deref(), rec.scope.as_deref()), (Some("alice"), Some("session")));
    assert_eq!((rec.exit_code, rec.duration_ms, rec.bytes_out), (None, None, None));

    store.finish(id, Some(3), 1250, Some(4096)).unwrap();
    let rec = store.history(&HistoryFilter::default()).unwrap().items.remove(0);
    assert_eq!((rec.exit_code, rec.duration_ms, rec.bytes_out), (Some(3), Some(1250), Some(4096)));

    // Killed by a signal: no exit code; huge sizes saturate instead of failing.
    store.finish(id, None, u64::MAX, None).unwrap();
    let rec = store.history(&HistoryFilter::default()).unwrap().items.remove(0);
    assert_eq!((rec.exit_code, rec.duration_ms, rec.bytes_out), (None, Some(i64::MAX as u64), None));

    assert!(matches!(store.finish(id + 1, Some(0), 1, None).unwrap_err(), StoreError::NotFound { .. }));
}

#[test]
fn filters_select_matching_rows() {
    let store = Store::open_in_memory().unwrap();
    store.record(&decision("a1", "ls", "allowed")).unwrap();
    store.record(&decision("a1", "curl", "denied")).unwrap();
    store.record(&decision("a2", "curl", "approved")).unwrap();
    store.record(&decision("a2", "ls", "allowed")).unwrap();

    let q = |f: HistoryFilter| {
        let page = store.history(&f).unwrap();
        assert_eq!(page.total as usize, page.items.len());
        page.items.iter().map(|r| format!("{}:{}:{}", r.agent, r.command, r.outcome)).collect::<Vec<_>>()
    };
    assert_eq!(q(HistoryFilter { agent: Some("a1".into()), ..Default::default() }), ["a1:curl:denied", "a1:ls:allowed"]);
    assert_eq!(q(HistoryFilter { command: Some("curl".into()), ..Default::default() }), ["a2:curl:approved", "a1:curl:denied"]);
    assert_eq!(q(HistoryFilter { outcome: Some("allowed".into()), ..Default::default() }), ["a2:ls:allowed", "a1:ls:allowed"]);
    assert_eq!(q(HistoryFilter { agent: Some("a2".into()), command: Some("ls".into()), ..Default::default() }), ["a2:ls:allowed"]);
    assert!(q(HistoryFilter { agent: Some("nobody".into()), ..Default::default() }).is_empty());
    assert!(q(HistoryFilter { agent: Some("' OR 1=1 --".into()), ..Default::default() }).is_empty());
}

#[test]
fn since_compares_timestamps() {
    let store = Store::open_in_memory().unwrap();
    store.record(&decision("a", "old", "allowed")).unwrap();
    thread::sleep(Duration::from_millis(5));
    store.record(&decision("a", "new", "allowed")).unwrap();
    let all = store.history(&HistoryFilter::default()).unwrap().items;
    let (new_at, old_at) = (all[0].at.clone(), all[1].at.clone());
    assert!(old_at < new_at, "{old_at} < {new_at}");

    let since = |s: &str| {
        let f = HistoryFilter { since: Some(s.into()), ..Default::default() };
        store.history(&f).unwrap().items.into_iter().map(|r| r.command).collect::<Vec<_>>()
    };
    assert_eq!(since(&new_at), ["new"], "at or after");
    assert_eq!(since(&old_at), ["new", "old"]);
    assert_eq!(since("2000-01-01"), ["new", "old"], "date prefix");
    assert_eq!(since(&old_at[..4]), ["new", "old"], "year prefix");
    assert!(since("9999").is_empty());
}

#[test]
fn paging_is_newest_first_with_total() {
    let (_dir, _path, store) = temp_store();
    let ids: Vec<i64> = (0..25).map(|i| store.record(&decision("a", &format!("c{i}"), "allowed")).unwrap()).collect();
    store.record(&decision("other", "x", "denied")).unwrap();

    let page = |limit, offset| {
        let f = HistoryFilter { agent: Some("a".into()), limit, offset, ..Default::default() };
        store.history(&f).unwrap()
    };
    let p = page(Some(10), None);
    assert_eq!((p.total, p.offset, p.limit, p.items.len()), (25, 0, 10, 10));
    assert_eq!(p.items[0].id, ids[24], "newest first");
    assert!(p.items.windows(2).all(|w| w[0].id > w[1].id));

    let p2 = page(Some(10), Some(10));
    assert_eq!(p2.items[0].id, ids[14]);
    let p3 = page(Some(10), Some(20));
    assert_eq!((p3.total, p3.items.len()), (25, 5));
    assert_eq!(p3.items.last().unwrap().id, ids[0]);
    let past = page(Some(10), Some(100));
    assert_eq!((past.total, past.items.len()), (25, 0));

    let mut seen: Vec<i64> = [p, p2, p3].into_iter().flat_map(|p| p.items).map(|r| r.id).collect();
    seen.sort();
    assert_eq!(seen, ids, "pages cover every row exactly once");

    assert_eq!(page(None, None).limit, 50, "default limit");
    assert_eq!(page(Some(5000), None).limit, 1000, "limit capped");
    assert_eq!(page(None, None).items.len(), 25);
}

#[test]
fn concurrent_records_from_eight_threads() {
    let (_dir, path, store) = temp_store();
    let store = Arc::new(store);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..100 {
                    let id = store.record(&decision(&format!("agent-{t}"), &format!("cmd-{i}"), "allowed")).unwrap();
                    if i % 10 == 0 {
                        store.finish(id, Some(0), i, Some(1)).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.history(&HistoryFilter::default()).unwrap().total, 800);
    let per_agent = HistoryFilter { agent: Some("agent-3".into()), ..Default::default() };
    assert_eq!(store.history(&per_agent).unwrap().total, 100);
    drop(store);
    assert_eq!(Store::open(&path).unwrap().history(&HistoryFilter::default()).unwrap().total, 800);
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn record_finished_stores_the_outcome_in_one_row() {
    let store = clawkeep_store::Store::open_in_memory().unwrap();
    let d = clawkeep_store::NewDecision {
        agent: "a".into(),
        session: "s".into(),
        command: "git".into(),
        args: vec!["status".into()],
        cwd: "/workspace".into(),
        uid: 1000,
        rule: Some(2),
        decision: "allow".into(),
        outcome: "allowed".into(),
        approved_by: None,
        scope: None,
        reason: "r".into(),
    };
    let id = store.record_finished(&d, Some(3), 12, Some(40)).unwrap();
    let page = store.history(&clawkeep_store::HistoryFilter::default()).unwrap();
    let row = page.items.iter().find(|r| r.id == id).unwrap();
    assert_eq!((row.exit_code, row.duration_ms, row.bytes_out), (Some(3), Some(12), Some(40)));
    assert_eq!(row.args, ["status"]);
}
