//! Bad input: one line that names the problem and what to do, exit code 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::Env;
use std::os::unix::fs::PermissionsExt;

fn one_line_error(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(err.starts_with("clawkeep: "), "{err}");
}

#[test]
fn unknown_flag() {
    let env = Env::new();
    let out = env.cmd().args(["run", "--frobnicate", "--", "true"]).output().unwrap();
    one_line_error(&out, "--frobnicate");
}

#[test]
fn bad_log_filter() {
    let env = Env::new();
    let out = env.cmd().env("CLAWKEEP_LOG", "clawkeep_proxy=loudest").args(["usage"]).output().unwrap();
    one_line_error(&out, "invalid CLAWKEEP_LOG 'clawkeep_proxy=loudest'");
    env.cmd().env("CLAWKEEP_LOG", "info").args(["usage"]).assert().success();
    // `run` installs its logging late, but checks a filter it was given first.
    let out = env.run(&[], &["true"]).env("CLAWKEEP_LOG", "clawkeep_proxy=loudest").output().unwrap();
    one_line_error(&out, "invalid CLAWKEEP_LOG");
}

#[test]
fn missing_workspace() {
    let env = Env::new();
    let out = env.cmd().args(["run", "--workspace", "/nonexistent/ck-ws", "--", "true"]).output().unwrap();
    one_line_error(&out, "does not exist");
}

#[test]
fn workspace_is_a_file() {
    let env = Env::new();
    let f = env.workspace.path().join("file");
    std::fs::write(&f, "x").unwrap();
    let out = env.cmd().arg("run").arg("--workspace").arg(&f).args(["--", "true"]).output().unwrap();
    one_line_error(&out, "not a directory");
}

#[test]
fn invalid_size_and_duration_and_cpus() {
    let env = Env::new();
    one_line_error(&env.run(&["--memory", "12XB"], &["true"]).output().unwrap(), "12XB");
    one_line_error(&env.run(&["--timeout", "5x"], &["true"]).output().unwrap(), "5x");
    one_line_error(&env.run(&["--cpus", "lots"], &["true"]).output().unwrap(), "lots");
    one_line_error(&env.run(&["--pids", "0"], &["true"]).output().unwrap(), "0");
    one_line_error(&env.run(&["--pids", "2"], &["true"]).output().unwrap(), "at least 4");
    one_line_error(&env.run(&["--pids", "many"], &["true"]).output().unwrap(), "many");
}

#[test]
fn empty_command() {
    let env = Env::new();
    let out = env.cmd().arg("run").arg("--workspace").arg(env.workspace.path()).output().unwrap();
    one_line_error(&out, "no command given");
    one_line_error(&env.run(&[], &[""]).output().unwrap(), "empty string");
}

#[test]
fn bad_env_name() {
    let env = Env::new();
    one_line_error(&env.run(&["--env", "1X=2"], &["true"]).output().unwrap(), "invalid --env name");
}

#[test]
fn state_dir_under_a_file_is_unwritable() {
    let env = Env::new();
    let f = env.state.path().join("plainfile");
    std::fs::write(&f, "x").unwrap();
    let out = env
        .cmd()
        .env("CLAWKEEP_STATE_DIR", f.join("state"))
        .arg("run")
        .arg("--workspace")
        .arg(env.workspace.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    one_line_error(&out, "--state-dir");
}

/// As an unprivileged user (setpriv), a root-owned workspace and state dir
/// are unwritable; root would pass every permission check.
#[test]
fn unwritable_workspace_and_state_dir_as_unprivileged_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/usr/bin/setpriv").exists() {
        println!("skipped: needs root and setpriv to act as another user");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = base.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755)).unwrap();
    let open_state = base.path().join("state-open");
    std::fs::create_dir(&open_state).unwrap();
    std::fs::set_permissions(&open_state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |state: &std::path::Path, ws: &std::path::Path| {
        std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(common::bin())
            .arg("--state-dir")
            .arg(state)
            .arg("run")
            .arg("--workspace")
            .arg(ws)
            .args(["--", "true"])
            .env_clear()
            .output()
            .unwrap()
    };
    let bin_dir = common::bin();
    let readable =
        bin_dir.ancestors().all(|p| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o005 == 0o005 || p == bin_dir).unwrap_or(false));
    if !readable {
        println!("skipped: the clawkeep binary is not reachable by an unprivileged user here");
        return;
    }
    one_line_error(&as_nobody(&open_state.join("s"), &ws), "not writable");
    one_line_error(&as_nobody(&base.path().join("state-root-owned"), &open_state), "state directory");
}

#[test]
fn edited_audit_file_is_found() {
    let env = Env::new();
    let path = env.state.path().join("audit.jsonl");
    let log = clawkeep_audit::AuditLog::open(&path).unwrap();
    for code in [0, 0, 0] {
        log.append("run.exit", serde_json::json!({ "exit_code": code })).unwrap();
    }
    env.cmd().args(["audit", "verify"]).assert().success();
    let text = std::fs::read_to_string(&path).unwrap();
    // Someone rewrites the outcome recorded on line 2.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = lines[1].replace("\"exit_code\":0", "\"exit_code\":1");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("BROKEN") && stdout.contains("line 3"), "{stdout}");
    let json = env.cmd().args(["audit", "verify", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_broken"]["line"], 3);
}

/// The head a check prints, passed back later, finds the log cut short:
/// a chain still consistent after its last line was removed.
#[test]
fn an_anchor_finds_a_log_cut_short() {
    let env = Env::new();
    let path = env.state.path().join("audit.jsonl");
    let log = clawkeep_audit::AuditLog::open(&path).unwrap();
    for code in [0, 1, 2] {
        log.append("run.exit", serde_json::json!({ "exit_code": code })).unwrap();
    }
    drop(log);
    let out = env.cmd().args(["audit", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let head = stdout.lines().find_map(|l| l.strip_prefix("head ")).and_then(|l| l.split_whitespace().next()).unwrap().to_string();
    assert!(head.starts_with("3:"), "{stdout}");
    let ok = env.cmd().args(["audit", "verify", "--anchor", &head]).output().unwrap();
    assert!(ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("1 anchor held"));
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    env.cmd().args(["audit", "verify"]).assert().success();
    let out = env.cmd().args(["audit", "verify", "--anchor", &head, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["first_broken"]["line"], 3, "{v}");
    assert!(v["first_broken"]["reason"].as_str().unwrap().contains("ends at line 2"), "{v}");
    one_line_error(&env.cmd().args(["audit", "verify", "--anchor", "3:xyz"]).output().unwrap(), "LINE:SHA256");
}

#[test]
fn missing_audit_file_is_usage_error() {
    let env = Env::new();
    one_line_error(&env.cmd().args(["audit", "verify"]).output().unwrap(), "no audit log");
}

#[test]
fn doctor_reports_every_guarantee() {
    let env = Env::new();
    let out = env.cmd().args(["doctor", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<String> = v["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    for must in ["user namespace", "seccomp filter", "landlock", "cgroup v2", "cgroup v1", "/dev/kvm", "qemu-system-x86_64", "nft"] {
        assert!(names.iter().any(|n| n == must), "{must} missing from {names:?}");
    }
    let can_run = v["jail_can_run"].as_bool().unwrap();
    assert_eq!(out.status.code(), Some(if can_run { 0 } else { 1 }));
    let human = env.cmd().arg("doctor").output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("jail:"));
}

#[test]
fn help_and_version_exit_zero() {
    let env = Env::new();
    env.cmd().arg("--help").assert().success();
    env.cmd().args(["run", "--help"]).assert().success().stdout(predicates::str::contains("--workspace"));
    env.cmd().arg("--version").assert().success();
}

/// `clawkeep` is the small launcher: every other command, and a jail run's
/// gate and proxy, are `clawkeep-full`'s. Installed without it, each says
/// what is missing, in one line, and a run starts nothing.
#[test]
fn the_launcher_without_clawkeep_full_says_so() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    for b in ["clawkeep", "clawkeep-jail", "clawkeep-shim"] {
        let from = common::bin().with_file_name(b);
        let to = dir.path().join(b);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let lone = dir.path().join("clawkeep");
    let run = |args: &[&str]| std::process::Command::new(&lone).env("CLAWKEEP_STATE_DIR", env.state.path()).args(args).output().unwrap();
    let ws = env.workspace.path().to_str().unwrap().to_string();
    for out in [run(&["doctor"]), run(&["run", "--workspace", &ws, "--", "sh", "-c", "touch /workspace/ran"])] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stderr: {err}");
        assert_eq!(err.trim_end(), "clawkeep: clawkeep-full was not found beside the clawkeep binary; install both together");
    }
    assert!(!env.workspace.path().join("ran").exists(), "the run started without its gate and proxy");
    // What needs no more than the launcher still works.
    let help = run(&["run", "--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--workspace"));
}
