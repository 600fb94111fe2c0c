//! The probe must refuse to run its escape attempts on the host. This test
//! only exercises the refusal path; no probe ever runs here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn refuses_outside_a_jail() {
    let bin = env!("CARGO_BIN_EXE_clawkeep-jail-probe");
    let guard = Command::new(bin).arg("selftest-guard").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&guard.stdout).trim(), "outside");
    for check in ["mount", "shadow", "all"] {
        let out = Command::new(bin).arg(check).env("CLAWKEEP_JAIL", "1").output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{check} was not refused");
        assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run outside a clawkeep jail"));
        assert!(out.stdout.is_empty(), "{check} printed a result on the host");
    }
}
