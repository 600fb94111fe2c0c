//! The approval queue and session grants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clawkeep_store::{ApprovalStatus, Resolution, Scope, Store, StoreError};
use common::{args, ask, temp_store};

fn res(approve: bool, scope: Scope) -> Resolution {
    Resolution { approve, scope, by: "alice".into(), reason: Some("looked fine".into()) }
}

#[test]
fn enqueue_fills_in_the_pending_item() {
    let store = Store::open_in_memory().unwrap();
    let a = store.enqueue(&ask("agent", "s1", "curl", &["-s", "https://x"])).unwrap();
    assert!(a.id > 0);
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!((a.scope, a.decided_by.as_deref(), a.decided_at.as_deref()), (None, None, None));
    assert_eq!(a.args, args(&["-s", "https://x"]));
    assert_eq!((a.cwd.as_str(), a.uid, a.rule), ("/work", 1000, Some(3)));
    assert!(a.created_at.ends_with('Z') && a.created_at.len() == 24, "{}", a.created_at);
    assert_eq!(store.get(a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.get(a.id + 100).unwrap(), None);
}

#[test]
fn resolve_with_each_scope_and_outcome() {
    let (_dir, _path, store) = temp_store();
    for scope in [Scope::Once, Scope::Session, Scope::Always] {
        for approve in [true, false] {
            let tag = format!("{scope}-{approve}");
            let a = store.enqueue(&ask("agent", "s1", "curl", &[&tag])).unwrap();
            let done = store.resolve(a.id, &res(approve, scope)).unwrap();
            let want = if approve { ApprovalStatus::Approved } else { ApprovalStatus::Denied };
            assert_eq!(done.status, want);
            assert_eq!(done.scope, Some(scope));
            assert_eq!(done.decided_by.as_deref(), Some("alice"));
            assert_eq!(done.decision_reason.as_deref(), Some("looked fine"));
            assert!(done.decided_at.is_some());
            assert_eq!(store.get(a.id).unwrap(), Some(done), "returned value equals the stored row");
            // Only an approved session-scoped item grants the session.
            let granted = store.session_allows("agent", "s1", "curl", &args(&[&tag])).unwrap();
            assert_eq!(granted, approve && scope == Scope::Session, "{scope} approve={approve}");
        }
    }
    assert!(store.pending().unwrap().is_empty());
}

#[test]
fn resolving_twice_is_not_pending_and_unknown_is_not_found() {
    let store = Store::open_in_memory().unwrap();
    let a = store.enqueue(&ask("agent", "s1", "curl", &[])).unwrap();
    store.resolve(a.id, &res(false, Scope::Once)).unwrap();
    let err = store.resolve(a.id, &res(true, Scope::Always)).unwrap_err();
    assert!(matches!(err, StoreError::NotPending { id, status: ApprovalStatus::Denied } if id == a.id), "{err:?}");
    assert!(err.to_string().contains("already denied"), "{err}");
    // The first decision stands.
    assert_eq!(store.get(a.id).unwrap().unwrap().status, ApprovalStatus::Denied);

    let err = store.resolve(9999, &res(true, Scope::Once)).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { id: 9999 }), "{err:?}");
}

#[test]
fn resolve_many_is_all_or_nothing() {
    let (_dir, _path, store) = temp_store();
    let ids: Vec<i64> = (0..3).map(|i| store.enqueue(&ask("agent", "s1", "ls", &[&i.to_string()])).unwrap().id).collect();

    // One unknown id: nothing changes.
    let mut with_bad = ids.clone();
    with_bad.push(424242);
    let err = store.resolve_many(&with_bad, &res(true, Scope::Session)).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { id: 424242 }), "{err:?}");
    assert_eq!(store.pending().unwrap().len(), 3);
    assert!(!store.session_allows("agent", "s1", "ls", &args(&["0"])).unwrap(), "grant rolled back too");

    // One already-decided id: nothing changes either.
    store.resolve(ids[2], &res(false, Scope::Once)).unwrap();
    let err = store.resolve_many(&ids, &res(true, Scope::Once)).unwrap_err();
    assert!(matches!(err, StoreError::NotPending { status: ApprovalStatus::Denied, .. }), "{err:?}");
    assert_eq!(store.pending().unwrap().len(), 2);

    // A repeated id counts as not pending the second time.
    let err = store.resolve_many(&[ids[0], ids[0]], &res(true, Scope::Once)).unwrap_err();
    assert!(matches!(err, StoreError::NotPending { .. }), "{err:?}");
    assert_eq!(store.pending().unwrap().len(), 2);

    // All good: all change.
    let done = store.resolve_many(&ids[..2], &res(true, Scope::Session)).unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|a| a.status == ApprovalStatus::Approved));
    assert!(store.pending().unwrap().is_empty());
    assert!(store.session_allows("agent", "s1", "ls", &args(&["1"])).unwrap());
}

#[test]
fn abandon_moves_pending_to_abandoned_only() {
    let store = Store::open_in_memory().unwrap();
    let a = store.enqueue(&ask("agent", "s1", "curl", &[])).unwrap();
    store.abandon(a.id, "shim disconnected").unwrap();
    let got = store.get(a.id).unwrap().unwrap();
    assert_eq!(got.status, ApprovalStatus::Abandoned);
    assert_eq!(got.decision_reason.as_deref(), Some("shim disconnected"));
    assert!(got.decided_at.is_some() && got.scope.is_none() && got.decided_by.is_none());
    assert!(store.pending().unwrap().is_empty());

    let err = store.abandon(a.id, "again").unwrap_err();
    assert!(matches!(err, StoreError::NotPending { status: ApprovalStatus::Abandoned, .. }), "{err:?}");
    let err = store.resolve(a.id, &res(true, Scope::Once)).unwrap_err();
    assert!(matches!(err, StoreError::NotPending { .. }), "{err:?}");
    assert!(matches!(store.abandon(777, "x").unwrap_err(), StoreError::NotFound { id: 777 }));
}

#[test]
fn abandon_all_pending_counts_and_leaves_decided_alone() {
    let store = Store::open_in_memory().unwrap();
    let a = store.enqueue(&ask("agent", "s1", "a", &[])).unwrap();
    store.enqueue(&ask("agent", "s1", "b", &[])).unwrap();
    store.enqueue(&ask("agent", "s1", "c", &[])).unwrap();
    store.resolve(a.id, &res(true, Scope::Once)).unwrap();
    assert_eq!(store.abandon_all_pending("operator cleared the queue").unwrap(), 2);
    assert!(store.pending().unwrap().is_empty());
    assert_eq!(store.get(a.id).unwrap().unwrap().status, ApprovalStatus::Approved);
    assert_eq!(store.abandon_all_pending("again").unwrap(), 0);
}

#[test]
fn session_grants_match_exactly() {
    let store = Store::open_in_memory().unwrap();
    let a = args(&["-la", "/tmp"]);
    assert!(!store.session_allows("agent", "s1", "ls", &a).unwrap());
    store.grant_session("agent", "s1", "ls", &a).unwrap();
    store.grant_session("agent", "s1", "ls", &a).unwrap(); // idempotent
    assert!(store.session_allows("agent", "s1", "ls", &a).unwrap());

    assert!(!store.session_allows("agent", "s1", "ls", &args(&["-la"])).unwrap(), "fewer args");
    assert!(!store.session_allows("agent", "s1", "ls", &args(&["-la", "/tmp", "x"])).unwrap(), "more args");
    assert!(!store.session_allows("agent", "s1", "ls", &args(&["/tmp", "-la"])).unwrap(), "reordered");
    assert!(!store.session_allows("agent", "s1", "ls", &args(&["-la /tmp"])).unwrap(), "joined");
    assert!(!store.session_allows("agent", "s2", "ls", &a).unwrap(), "other session");
    assert!(!store.session_allows("other", "s1", "ls", &a).unwrap(), "other agent");
    assert!(!store.session_allows("agent", "s1", "cat", &a).unwrap(), "other command");

    store.grant_session("agent", "s2", "ls", &a).unwrap();
    store.end_session("agent", "s1").unwrap();
    assert!(!store.session_allows("agent", "s1", "ls", &a).unwrap(), "ended");
    assert!(store.session_allows("agent", "s2", "ls", &a).unwrap(), "other session untouched");
}

#[test]
fn empty_session_never_grants() {
    let store = Store::open_in_memory().unwrap();
    let err = store.grant_session("agent", "", "ls", &[]).unwrap_err();
    assert!(matches!(err, StoreError::NoSession { .. }), "{err:?}");
    assert!(!store.session_allows("agent", "", "ls", &[]).unwrap());

    let a = store.enqueue(&ask("agent", "", "ls", &[])).unwrap();
    let err = store.resolve(a.id, &res(true, Scope::Session)).unwrap_err();
    assert!(matches!(err, StoreError::NoSession { .. }), "{err:?}");
    assert_eq!(store.get(a.id).unwrap().unwrap().status, ApprovalStatus::Pending, "left pending");
    store.resolve(a.id, &res(true, Scope::Once)).unwrap();
}

#[test]
fn session_grants_survive_restart() {
    let (_dir, path, store) = temp_store();
    store.grant_session("agent", "s1", "ls", &args(&["x"])).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert!(store.session_allows("agent", "s1", "ls", &args(&["x"])).unwrap());
}

#[test]
fn hostile_strings_are_data_not_sql() {
    let store = Store::open_in_memory().unwrap();
    let evil = "x'); DROP TABLE approvals; --";
    let a = store.enqueue(&ask(evil, evil, evil, &[evil, "\"]"])).unwrap();
    let got = store.get(a.id).unwrap().unwrap();
    assert_eq!((got.agent.as_str(), got.args.clone()), (evil, args(&[evil, "\"]"])));
    assert_eq!(store.pending().unwrap().len(), 1);
}
