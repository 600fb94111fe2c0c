//! Gate overhead inside one jail: the median time to run `true` through the
//! shim and the gate (allowed by policy, executed by the in-jail executor)
//! beside `true` run directly in the same jail, measured in one run.
//! Target (issue 3): overhead <= 2 ms median.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const RUNS: &str = "50";

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("gate_overhead: skipped: needs root for the jail (CI runs as root)");
        return;
    }
    // The build just before this bench leaves its output's pages dirty;
    // their writeback would run into the gate's fsync'd history rows.
    // Written back first.
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let clawkeep = env!("CARGO_BIN_EXE_clawkeep");
    let dir = std::path::Path::new(clawkeep).parent().unwrap();
    let probe = dir.join("clawkeep-jail-probe");
    if !probe.exists() || !dir.join("clawkeep-shim").exists() {
        println!("gate_overhead: skipped: build every binary first (cargo build --release --workspace --bins)");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::copy(&probe, ws.path().join("probe")).unwrap();
    let policy = state.path().join("policy.yaml");
    std::fs::write(&policy, "default_action: deny\nrules:\n  - command: \"true\"\n    action: allow\n").unwrap();
    std::fs::write(state.path().join("ungated.yaml"), "default_action: deny\nrules: []\n").unwrap();
    let median = |prog: &str, gated: bool| -> f64 {
        let mut c = Command::new(clawkeep);
        c.env("CLAWKEEP_STATE_DIR", state.path()).arg("run").arg("--workspace").arg(ws.path()).args(["--env", "CLAWKEEP_JAIL=1"]);
        if gated {
            c.arg("--policy").arg(&policy);
        } else {
            c.arg("--policy").arg(state.path().join("ungated.yaml"));
        }
        let out = c.args(["--", "/workspace/probe", "time-exec", RUNS, prog]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap() / 1000.0
    };
    let direct = median("/usr/bin/true", false);
    let gated = median("true", true);
    println!("gate_overhead: median of {RUNS} runs each, inside one jail, same run (dirty pages written back first)");
    println!("  true, run directly in the jail    {direct:>7.2} ms");
    println!("  true, through shim + gate         {gated:>7.2} ms");
    println!("  gate overhead                     {:>7.2} ms   (target <= 2 ms)", gated - direct);
}
