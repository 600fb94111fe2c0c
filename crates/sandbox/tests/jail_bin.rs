//! The helper binary refuses to be run by hand (it needs its config on
//! fd 3 from `clawkeep run`). This also builds it for the other tests.

#[test]
fn refuses_without_a_launcher() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawkeep-jail")).output().expect("run clawkeep-jail");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("started by `clawkeep run`"), "{out:?}");
}
