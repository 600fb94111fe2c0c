#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every example in deploy/policies/ loads, and decides as its comments say.

use std::path::{Path, PathBuf};

use clawkeep_policy::{Action, Policy, Request};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policies")
}

fn example(name: &str) -> Policy {
    Policy::load(&examples_dir().join(name)).unwrap()
}

fn act(p: &Policy, command: &str, args: &[&str], cwd: &str) -> Action {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    p.evaluate(&Request { command, args: &args, cwd: Path::new(cwd) }).action
}

#[test]
fn every_example_policy_loads() {
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let p = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!p.rules().is_empty(), "{}", path.display());
            loaded.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    loaded.sort();
    assert_eq!(loaded, ["clawrden-compat.yaml", "coding-agent.yaml", "read-only-explorer.yaml"]);
}

#[test]
fn example_rules_all_carry_a_reason_except_in_the_clawrden_file() {
    for name in ["coding-agent.yaml", "read-only-explorer.yaml"] {
        for r in example(name).rules() {
            assert!(r.reason.is_some(), "{name}: {r} has no reason");
        }
    }
}

#[test]
fn clawrden_file_loads_with_patterns_as_args() {
    let p = example("clawrden-compat.yaml");
    assert_eq!(p.default_action(), Action::Deny);
    assert!(p.rules().iter().any(|r| !r.spec().args.is_empty()), "patterns were read");
    let app = "/app/project";
    assert_eq!(act(&p, "rm", &["-rf", "build"], app), Action::Deny);
    assert_eq!(act(&p, "git", &["push", "--force"], app), Action::Deny);
    assert_eq!(act(&p, "git", &["push", "origin"], app), Action::Ask);
    assert_eq!(act(&p, "git", &["status"], "/app"), Action::Allow, "/app/* covers /app itself, as in Clawrden");
    assert_eq!(act(&p, "test-unit", &[], app), Action::Allow);
    assert_eq!(act(&p, "ls", &[], "/home/agent"), Action::Deny, "outside allowed_paths");
    assert_eq!(act(&p, "make", &[], app), Action::Deny);
}

#[test]
fn coding_agent_policy_decides_as_documented() {
    let p = example("coding-agent.yaml");
    let ws = "/workspace/proj";
    assert_eq!(act(&p, "git", &["status"], ws), Action::Allow);
    assert_eq!(act(&p, "git", &["commit", "-m", "fix"], ws), Action::Allow);
    assert_eq!(act(&p, "git", &["push", "origin", "main"], ws), Action::Ask);
    assert_eq!(act(&p, "git", &["push", "-f"], ws), Action::Deny);
    assert_eq!(act(&p, "git", &["reset", "--hard", "HEAD~1"], ws), Action::Ask);
    assert_eq!(act(&p, "git", &["-c", "core.fsmonitor=x", "status"], ws), Action::Ask);
    assert_eq!(act(&p, "cargo", &["test", "--workspace"], ws), Action::Allow);
    assert_eq!(act(&p, "cargo", &["install", "x", "--features", "test"], ws), Action::Ask);
    assert_eq!(act(&p, "cargo", &["publish"], ws), Action::Deny);
    assert_eq!(act(&p, "npm", &["test"], ws), Action::Allow);
    assert_eq!(act(&p, "npm", &["install", "left-pad"], ws), Action::Ask);
    assert_eq!(act(&p, "pip3", &["install", "requests"], ws), Action::Ask);
    assert_eq!(act(&p, "rm", &["-rf", "/"], ws), Action::Deny);
    assert_eq!(act(&p, "rm", &["-rf", "/workspace"], ws), Action::Deny);
    assert_eq!(act(&p, "rm", &["-rf", "/workspace/proj/target"], ws), Action::Ask);
    assert_eq!(act(&p, "find", &[".", "-name", "*.rs"], ws), Action::Allow);
    assert_eq!(act(&p, "find", &[".", "-delete"], ws), Action::Deny);
    assert_eq!(act(&p, "make", &[], ws), Action::Deny, "default");
    assert_eq!(act(&p, "git", &["status"], "/etc"), Action::Deny, "outside allowed_paths");
}

#[test]
fn read_only_explorer_allows_reading_and_nothing_else() {
    let p = example("read-only-explorer.yaml");
    let ws = "/workspace";
    for (cmd, args) in [
        ("ls", &["-la"][..]),
        ("cat", &["README.md"]),
        ("grep", &["-rn", "TODO", "."]),
        ("find", &[".", "-name", "*.rs"]),
        ("rg", &["fn main"]),
        ("git", &["log", "--oneline"]),
        ("git", &["show", "HEAD"]),
        ("git", &["diff"]),
        ("git", &["status"]),
    ] {
        assert_eq!(act(&p, cmd, args, ws), Action::Allow, "{cmd} {args:?}");
    }
    for (cmd, args) in [
        ("rm", &["x"][..]),
        ("mv", &["a", "b"]),
        ("find", &[".", "-delete"]),
        ("find", &[".", "-exec", "rm", "{}", ";"]),
        ("rg", &["--pre", "sh", "x"]),
        ("git", &["commit", "-m", "x"]),
        ("git", &["rm", "log"]),
        ("git", &["diff", "--output=/workspace/x"]),
        ("git", &["-c", "core.pager=sh", "log"]),
        ("touch", &["x"]),
        ("python3", &["-c", "print(1)"]),
    ] {
        assert_eq!(act(&p, cmd, args, ws), Action::Deny, "{cmd} {args:?}");
    }
}
