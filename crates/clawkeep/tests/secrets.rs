//! `clawkeep secret`: values from stdin or a named variable, never argv;
//! names only in listings; nothing readable on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::Env;

const VALUE: &str = "sk-test-0123456789abcdef-never-print-me";

fn files_contain(dir: &std::path::Path, needle: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else { return false };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            files_contain(&p, needle)
        } else {
            std::fs::read(&p).map(|b| String::from_utf8_lossy(&b).contains(needle)).unwrap_or(false)
        }
    })
}

#[test]
fn set_list_rm_without_leaking_the_value() {
    let env = Env::new();
    let out =
        env.cmd().env_remove("CLAWKEEP_MASTER_KEY").args(["secret", "set", "openai"]).write_stdin(format!("{VALUE}\n")).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out2 = env
        .cmd()
        .env_remove("CLAWKEEP_MASTER_KEY")
        .env("MY_KEY", VALUE)
        .args(["secret", "set", "anthropic", "--from-env", "MY_KEY"])
        .output()
        .unwrap();
    assert!(out2.status.success(), "{out2:?}");
    let list = env.cmd().env_remove("CLAWKEEP_MASTER_KEY").args(["secret", "list", "--json"]).output().unwrap();
    let names: Vec<String> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(names, ["anthropic", "openai"]);
    for o in [&out, &out2, &list] {
        assert!(!String::from_utf8_lossy(&o.stdout).contains(VALUE) && !String::from_utf8_lossy(&o.stderr).contains(VALUE));
    }
    assert!(!files_contain(env.state.path(), VALUE), "a plaintext secret is on disk");
    use std::os::unix::fs::PermissionsExt;
    let key = env.state.path().join("identity/master.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    env.cmd().env_remove("CLAWKEEP_MASTER_KEY").args(["secret", "rm", "openai"]).assert().success();
    let out = env.cmd().env_remove("CLAWKEEP_MASTER_KEY").args(["secret", "rm", "openai"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_input_is_refused_in_one_line() {
    let env = Env::new();
    // A value on the command line is not accepted at all.
    let out = env.cmd().args(["secret", "set", "openai", VALUE]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("never-print-me") && err.contains("stdin"), "{err}");
    let out = env.cmd().args(["secret", "set", "bad/name"]).write_stdin("x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = env.cmd().env("CLAWKEEP_MASTER_KEY", "abc123").args(["secret", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CLAWKEEP_MASTER_KEY") && !err.contains("abc123"), "{err}");
    let out = env.cmd().args(["secret", "set", "empty"]).write_stdin("\n").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
