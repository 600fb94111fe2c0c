#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hot reload: a good file replaces the policy, a broken one never does.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clawkeep_policy::{Action, Policy, PolicyHandle, ReloadEvent};

const ALLOW_LS: &str = "default_action: deny\nrules:\n  - command: ls\n    action: allow\n";
const ASK_ALL: &str = "default_action: ask\nrules:\n  - command: ls\n    action: ask\n  - command: cat\n    action: ask\n";
const BROKEN: &str = "default_action: deny\nrules:\n  - command: ls\n    action: perhaps\n";

fn write(path: &Path, text: &str) {
    // Write-then-rename, as editors and config tools do, so the watcher never
    // sees a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn reload_from_swaps_on_success_and_keeps_the_old_policy_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    write(&path, ALLOW_LS);
    let handle = PolicyHandle::new(Policy::load(&path).unwrap());
    assert_eq!(handle.current().default_action(), Action::Deny);

    write(&path, ASK_ALL);
    handle.reload_from(&path).unwrap();
    let good = handle.current();
    assert_eq!((good.default_action(), good.rules().len()), (Action::Ask, 2));

    write(&path, BROKEN);
    let err = handle.reload_from(&path).unwrap_err();
    assert!(err.to_string().contains(":3: rules[0] (`ls`): unknown action `perhaps`"), "{err}");
    assert_eq!(*handle.current(), *good, "the old policy stays in force");

    std::fs::remove_file(&path).unwrap();
    assert!(handle.reload_from(&path).is_err());
    assert_eq!(*handle.current(), *good);
}

/// Waits up to 2 s for the next event.
fn next(rx: &mpsc::Receiver<ReloadEvent>) -> ReloadEvent {
    rx.recv_timeout(Duration::from_secs(2)).expect("no reload event within 2 s")
}

#[test]
fn watch_picks_up_good_changes_and_rejects_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    write(&path, ALLOW_LS);
    let handle = PolicyHandle::new(Policy::load(&path).unwrap());
    let (tx, rx) = mpsc::channel();
    let watcher = handle.watch(path.clone(), Duration::from_millis(20), move |e| {
        let _ = tx.send(e);
    });

    // Nothing changed yet: no event.
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());

    let started = Instant::now();
    write(&path, ASK_ALL);
    assert_eq!(next(&rx), ReloadEvent::Reloaded { rules: 2 });
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(handle.current().default_action(), Action::Ask);

    write(&path, BROKEN);
    match next(&rx) {
        ReloadEvent::Rejected { error } => assert!(error.contains("unknown action `perhaps`"), "{error}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(handle.current().default_action(), Action::Ask, "the old policy stays");
    assert_eq!(handle.current().rules().len(), 2);

    // The same broken content again is not a change; a fix is.
    write(&path, BROKEN);
    write(&path, ALLOW_LS);
    let mut last = next(&rx);
    while last != (ReloadEvent::Reloaded { rules: 1 }) {
        // A rewrite of the broken file may be seen first (new mtime).
        assert!(matches!(last, ReloadEvent::Rejected { .. }), "{last:?}");
        last = next(&rx);
    }
    assert_eq!(handle.current().default_action(), Action::Deny);

    drop(handle);
    let stop = Instant::now();
    while !watcher.is_finished() {
        assert!(stop.elapsed() < Duration::from_secs(2), "watcher outlived its handle");
        std::thread::sleep(Duration::from_millis(10));
    }
    watcher.join().unwrap();
}

/// A file written in place is put in force only once it stays the same for
/// a poll: a prefix that happens to parse (here: one rule, before the rest
/// is written) is never in force, even for a moment.
#[test]
fn a_file_being_written_is_not_reloaded_half_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    write(&path, ALLOW_LS);
    let handle = PolicyHandle::new(Policy::load(&path).unwrap());
    let (tx, rx) = mpsc::channel();
    let interval = Duration::from_millis(100);
    let _watcher = handle.watch(path.clone(), interval, move |e| {
        let _ = tx.send(e);
    });
    let prefix = "default_action: ask\nrules:\n  - command: cat\n    action: allow\n";
    for round in 0..3 {
        let full = format!("{prefix}  - command: ls{round}\n    action: deny\n  - command: rm\n    action: deny\n");
        // In place, as `cat > policy.yaml` writes: the prefix first, across
        // a poll (the last event came right after one).
        std::thread::sleep(interval * 7 / 10);
        std::fs::write(&path, prefix).unwrap();
        std::thread::sleep(interval / 2);
        std::fs::write(&path, &full).unwrap();
        assert_eq!(next(&rx), ReloadEvent::Reloaded { rules: 3 }, "round {round}");
        assert_eq!(handle.current().rules().len(), 3);
    }
}

/// An edit made between the first load and the start of the watch is
/// picked up when the watch starts.
#[test]
fn an_edit_before_the_watch_starts_is_not_missed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    write(&path, ALLOW_LS);
    let handle = PolicyHandle::new(Policy::load(&path).unwrap());
    write(&path, ASK_ALL);
    let (tx, rx) = mpsc::channel();
    let _watcher = handle.watch(path.clone(), Duration::from_millis(20), move |e| {
        let _ = tx.send(e);
    });
    assert_eq!(next(&rx), ReloadEvent::Reloaded { rules: 2 });
    assert_eq!(handle.current().default_action(), Action::Ask);
}
