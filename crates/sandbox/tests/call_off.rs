//! How the helper ends a run its launcher left before the command ran: a
//! launcher that calls the run off (its start event could not be written)
//! leaves no `run.abort` in the audit log, since it reports the failure
//! itself; a launcher that dies leaves one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clawkeep_core::{Limits, RunSpec};
use std::path::Path;
use std::time::{Duration, Instant};

fn launched(dir: &Path, run_id: &str) -> (clawkeep_sandbox::JailPlan, clawkeep_sandbox::launcher::Launched) {
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let spec = RunSpec {
        run_id: run_id.into(),
        argv: vec!["/bin/true".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        workspace: ws,
        rootfs: None,
        limits: Limits { memory_bytes: None, pids: Some(64), cpus: None },
        timeout: None,
    };
    let plan = clawkeep_sandbox::plan(spec, Some(dir.join("audit.jsonl"))).unwrap();
    let helper = Path::new(env!("CARGO_BIN_EXE_clawkeep-jail"));
    let launched = plan.launch(helper).unwrap();
    (plan, launched)
}

fn audit(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default()
}

#[test]
fn a_called_off_run_records_no_abort_and_a_dead_launcher_does() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: call off: needs root (CI runs as root)");
        return;
    }
    let called_off = tempfile::tempdir().unwrap();
    let (plan, l) = launched(called_off.path(), "calledoff01");
    // Waits for the helper to end: whatever it records is written by then.
    l.abort();
    plan.cleanup();
    assert!(!audit(called_off.path()).contains("run.abort"), "{}", audit(called_off.path()));

    let died = tempfile::tempdir().unwrap();
    let (plan, l) = launched(died.path(), "launcherdied01");
    // The lifeline closes with no word first, as when the launcher dies.
    drop(l);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !audit(died.path()).contains("run.abort") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    plan.cleanup();
    let text = audit(died.path());
    let abort: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["kind"] == "run.abort")
        .unwrap_or_else(|| panic!("no abort recorded: {text}"));
    // No start event was written for this run: the abort names what ran.
    assert!(!text.contains("run.start"), "{text}");
    assert_eq!(abort["run_id"], "launcherdied01", "{abort}");
    assert_eq!(abort["argv"], serde_json::json!(["/bin/true"]), "{abort}");
    assert_eq!(abort["workspace"], serde_json::json!(died.path().join("ws")), "{abort}");
}
