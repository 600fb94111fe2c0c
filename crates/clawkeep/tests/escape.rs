//! The escape suite: every probe runs *inside* the jail (the probe binary
//! refuses to run anywhere else) and tries to break one restriction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{jail_available, Env};
use std::net::TcpListener;

fn probe(env: &Env, extra: &[&str], args: &[&str]) -> std::process::Output {
    let path = env.install_probe();
    let mut full = vec!["--env", "CLAWKEEP_JAIL=1"];
    full.extend_from_slice(extra);
    let mut argv = vec![path];
    argv.extend_from_slice(args);
    env.std_run(&full, &argv).env("ANTHROPIC_API_KEY", "sk-ant-host-secret-must-not-leak").output().unwrap()
}

fn assert_pass(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(!stdout.contains("FAIL"), "an escape worked:\n{stdout}\n{stderr}");
    assert!(stdout.contains("PASS"), "the probe reported nothing:\n{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
}

#[test]
fn every_restriction_holds_inside_the_jail() {
    if !jail_available("escape suite") {
        return;
    }
    let env = Env::new();
    // A service on the host's loopback: the jail must not reach it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let out = probe(&env, &[], &["all", &addr, &host]);
    assert_pass(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for check in [
        "shadow",
        "write-outside",
        "connect",
        "net-config",
        "mount",
        "unshare-user",
        "ptrace",
        "bpf",
        "keyctl",
        "mknod",
        "status",
        "env",
        "proc",
    ] {
        assert!(stdout.contains(&format!("PASS {check}")), "{check} did not report:\n{stdout}");
    }
}

/// As root the helper makes the jail's network namespace before it clones
/// init: it belongs to the host's user namespace, so the jail cannot even
/// name its owner.
#[test]
fn the_jails_network_namespace_is_owned_outside_the_jail() {
    if !jail_available("netns owner") {
        return;
    }
    let env = Env::new();
    let out = probe(&env, &[], &["netns-owner"]);
    assert_pass(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("PASS netns-owner"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    if !jail_available("fork bomb") {
        return;
    }
    let env = Env::new();
    let out = probe(&env, &["--pids", "40"], &["forkbomb", "400"]);
    assert_pass(&out);
    let exit = env.audit().into_iter().rfind(|e| e["kind"] == "run.exit").unwrap();
    let peak = exit["peak_pids"].as_u64().unwrap();
    assert!(peak <= 40, "peak pids {peak} above the limit");
}

#[test]
fn memory_hog_is_killed_at_the_memory_limit() {
    if !jail_available("memory hog") {
        return;
    }
    let env = Env::new();
    let out = probe(&env, &["--memory", "64M"], &["memhog", "512"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert_eq!(out.status.code(), Some(137), "expected SIGKILL from the OOM killer: {stdout}");
    let exit = env.audit().into_iter().rfind(|e| e["kind"] == "run.exit").unwrap();
    assert_eq!(exit["oom_killed"], true, "{exit}");
    assert!(exit["peak_memory_bytes"].as_u64().unwrap() <= 64 << 20);
}

#[test]
fn host_secret_is_absent_even_when_set_on_the_host() {
    if !jail_available("secret env") {
        return;
    }
    let env = Env::new();
    let out = probe(&env, &[], &["env"]);
    assert_pass(&out);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("sk-ant-host-secret"), "{text}");
    let audit = std::fs::read_to_string(env.state.path().join("audit.jsonl")).unwrap();
    assert!(!audit.contains("sk-ant-host-secret"));
}

#[test]
fn agent_is_unprivileged_and_not_host_root() {
    if !jail_available("uid") {
        return;
    }
    let env = Env::new();
    let out = probe(&env, &[], &["uid"]);
    assert_pass(&out);
}
