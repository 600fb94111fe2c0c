//! The shim outside a jail: it refuses clearly (and this builds the shim
//! binary that the end-to-end tests install into jails).

use std::process::Command;

#[test]
fn unknown_command_name_is_refused_with_126() {
    let out = Command::new(env!("CARGO_BIN_EXE_clawkeep-shim")).arg("x").output().unwrap();
    assert_eq!(out.status.code(), Some(126));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a gated command"), "{err}");
}
