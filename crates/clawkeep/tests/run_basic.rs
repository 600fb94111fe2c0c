//! `clawkeep run` behaves like the command itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{jail_available, Env};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn stdio_and_exit_code_pass_through() {
    if !jail_available("stdio") {
        return;
    }
    let env = Env::new();
    let out = env.run(&[], &["sh", "-c", "read line; echo \"out:$line\"; echo err >&2; exit 42"]).write_stdin("hello\n").output().unwrap();
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out:hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

/// Every namespace the jail names is its own, the network one included
/// (as root the launcher makes it, and the helper joins it before it
/// clones init), and its loopback is up: nothing of the host's shows.
#[test]
fn every_namespace_is_the_jails_own_and_its_loopback_is_up() {
    if !jail_available("namespaces") {
        return;
    }
    let env = Env::new();
    let kinds = ["net", "mnt", "pid", "ipc", "uts", "user", "cgroup"];
    // Last: a TCP connection to the proxy's listener on the jail's own
    // 127.0.0.1, which needs the loopback up.
    let script = format!(
        "for n in {}; do readlink /proc/self/ns/$n; done; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,; echo; \
         exec 3<>/dev/tcp/127.0.0.1/4141 && echo connected",
        kinds.join(" ")
    );
    let out = env.run(&[], &["bash", "-c", &script]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), kinds.len() + 2, "{stdout}");
    for (kind, inside) in kinds.iter().zip(&lines) {
        let host = std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        assert!(inside.starts_with(&format!("{kind}:[")), "{kind}: {inside}");
        assert_ne!(*inside, host.to_string_lossy(), "the jail shares the host's {kind} namespace");
    }
    assert_eq!(lines[kinds.len()], "lo,", "the jail's network has one interface, lo: {stdout}");
    assert_eq!(lines[kinds.len() + 1], "connected", "{stdout}");
}

#[test]
fn killed_command_exits_128_plus_signal() {
    if !jail_available("signal exit") {
        return;
    }
    let env = Env::new();
    let out = env.run(&[], &["sh", "-c", "kill -TERM $$"]).output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 15));
}

#[test]
fn workspace_is_home_and_cwd_and_owned_by_its_owner() {
    if !jail_available("workspace") {
        return;
    }
    let env = Env::new();
    let out = env.run(&[], &["sh", "-c", "pwd; echo $HOME; id -u; echo data > made-inside; touch /tmp/t && echo tmp-ok"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/workspace\n/workspace\n1000\ntmp-ok\n");
    let made = env.workspace.path().join("made-inside");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "data\n");
    let ws_owner = std::fs::metadata(env.workspace.path()).unwrap().uid();
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), ws_owner, "files the agent writes belong to the workspace owner");
}

#[test]
fn environment_is_an_allowlist() {
    if !jail_available("env") {
        return;
    }
    let env = Env::new();
    let out = env
        .run(&["--env", "FOO=bar", "--env", "PASSED"], &["sh", "-c", "env | cut -d= -f1 | sort | tr '\\n' ' '; echo; echo $FOO $PASSED"])
        .env("PASSED", "yes")
        .env("HOST_ONLY", "x")
        .env("OPENAI_API_KEY", "sk-host")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let names: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    // The proxy's URLs and the agent's own token (see tests/proxy.rs) are
    // the only additions; the host's key value never enters.
    let proxy = ["OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"];
    for n in &names {
        assert!(
            ["FOO", "HOME", "LANG", "PASSED", "PATH", "PWD", "SHLVL", "TERM", "_"].contains(n) || proxy.contains(n),
            "unexpected variable {n}"
        );
    }
    assert!(!names.contains(&"HOST_ONLY"));
    assert!(stdout.contains("bar yes"));
    let values = env.run(&[], &["sh", "-c", "echo \"$OPENAI_API_KEY\""]).env("OPENAI_API_KEY", "sk-host").output().unwrap();
    let token = String::from_utf8_lossy(&values.stdout);
    assert!(!token.contains("sk-host") && token.trim().split('.').count() == 3, "{token}");
}

#[test]
fn secret_env_needs_explicit_allow() {
    let env = Env::new();
    let out = env.run(&["--env", "GITHUB_TOKEN=ghp_value"], &["true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-secret-env GITHUB_TOKEN") && !err.contains("ghp_value"), "{err}");
    if !jail_available("allowed secret env") {
        return;
    }
    let out = env
        .run(&["--env", "GITHUB_TOKEN=ghp_value", "--allow-secret-env", "GITHUB_TOKEN"], &["sh", "-c", "echo $GITHUB_TOKEN"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ghp_value\n");
}

#[test]
fn timeout_kills_and_exits_124() {
    if !jail_available("timeout") {
        return;
    }
    let env = Env::new();
    let out = env.run(&["--timeout", "300ms"], &["sleep", "30"]).timeout(Duration::from_secs(20)).output().unwrap();
    assert_eq!(out.status.code(), Some(124));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
}

#[test]
fn missing_command_exits_127_with_a_message() {
    if !jail_available("missing command") {
        return;
    }
    let env = Env::new();
    let out = env.run(&[], &["no-such-command-xyz"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found in the jail"));
}

fn signal_reaches_command(sig: i32, name: &str) {
    let env = Env::new();
    let script = format!("trap 'echo got-{name}; exit 7' {name}; echo ready; while :; do sleep 0.05; done");
    let mut child = env.std_run(&[], &["sh", "-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
    let status = child.wait().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, format!("got-{name}\n"));
    assert_eq!(status.code(), Some(7));
}

#[test]
fn sigterm_reaches_the_command() {
    if jail_available("sigterm") {
        signal_reaches_command(libc::SIGTERM, "TERM");
    }
}

#[test]
fn sigint_reaches_the_command() {
    if jail_available("sigint") {
        signal_reaches_command(libc::SIGINT, "INT");
    }
}

#[test]
fn a_tty_passes_through() {
    if !jail_available("tty") {
        return;
    }
    if !std::path::Path::new("/usr/bin/script").exists() {
        println!("skipped: tty: util-linux `script` not installed");
        return;
    }
    let env = Env::new();
    let mut child = env.in_terminal("", "tty; test -t 0 && test -t 1 && echo both-tty");
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/") && text.contains("both-tty"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
}

/// Without a terminal on stdin the agent gets no jail pty, and it must not
/// reach the operator's own terminal through /dev/tty either (the jail is
/// a session of its own, without a controlling terminal).
#[test]
fn the_operators_terminal_is_out_of_reach_without_a_tty() {
    if !jail_available("no controlling terminal") {
        return;
    }
    if !std::path::Path::new("/usr/bin/script").exists() {
        println!("skipped: no controlling terminal: util-linux `script` not installed");
        return;
    }
    let env = Env::new();
    let probe = "if echo INJECTED-3049 > /dev/tty; then echo tty-open; else echo tty-refused; fi; test -t 0 || echo stdin-not-tty";
    let mut child = env.in_terminal("< /dev/null", probe);
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stdin-not-tty"), "{text}");
    assert!(text.contains("tty-refused") && !text.contains("INJECTED-3049"), "the agent wrote to the operator's terminal: {text}");
}

#[test]
fn audit_records_start_and_exit_and_verifies() {
    if !jail_available("audit") {
        return;
    }
    let env = Env::new();
    env.run(&["--memory", "128M"], &["sh", "-c", "exit 5"]).assert().code(5);
    let events = env.audit();
    let start = events.iter().find(|e| e["kind"] == "run.start").unwrap();
    assert_eq!(start["isolation"]["backend"], "jail");
    assert!(start["isolation"]["degraded"].is_array());
    assert!(start["isolation"]["level"].is_string());
    let exit = events.iter().find(|e| e["kind"] == "run.exit").unwrap();
    assert_eq!(exit["exit_code"], 5);
    assert!(exit["duration_ms"].is_u64());
    assert!(exit["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(exit["peak_pids"].as_u64().unwrap() >= 1);
    assert_eq!(start["run_id"], exit["run_id"]);
    env.cmd().args(["audit", "verify"]).assert().success().stdout(predicates::str::contains("hash chain intact"));
    use std::os::unix::fs::PermissionsExt;
    let dir_mode = std::fs::metadata(env.state.path()).unwrap().permissions().mode() & 0o777;
    let file_mode = std::fs::metadata(env.state.path().join("audit.jsonl")).unwrap().permissions().mode() & 0o777;
    assert_eq!((dir_mode, file_mode), (0o700, 0o600));
}

#[test]
fn rootfs_uses_a_prepared_tree() {
    if !jail_available("rootfs") {
        return;
    }
    let env = Env::new();
    let root = tempfile::tempdir().unwrap();
    common::copy_with_libs("/bin/dash", root.path());
    common::copy_with_libs("/usr/bin/cat", root.path());
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/marker"), "prepared\n").unwrap();
    let script = "cat /etc/marker; if test -e /usr/bin/ls; then echo host-visible; else echo host-hidden; fi; echo x > /etc/y || echo ro";
    let out = env.run(&["--rootfs", root.path().to_str().unwrap()], &["/bin/dash", "-c", script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "prepared\nhost-hidden\nro\n", "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

/// `clawkeep run -- CMD...` as uid 65534 (setpriv) under `umask`, with a workspace
/// (`ws`) and a state dir (`state`) of its own under the returned dir;
/// None, saying why, where that cannot run here.
fn run_unprivileged(test: &str, cmd: &[&str], umask: libc::mode_t) -> Option<(std::process::Output, tempfile::TempDir)> {
    if !std::path::Path::new("/usr/bin/setpriv").exists() || !common::reachable_by_others(&common::bin()) {
        println!("skipped: {test}: needs setpriv and a binary other users can execute");
        return None;
    }
    let base = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ws, state) = (base.path().join("ws"), base.path().join("state"));
    for d in [&ws, &state] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let mut setpriv = std::process::Command::new("setpriv");
    // SAFETY: umask is async-signal-safe; it changes only the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut setpriv, move || {
            libc::umask(umask);
            Ok(())
        })
    };
    let out = setpriv
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(common::bin())
        .arg("--state-dir")
        .arg(&state)
        .arg("run")
        .arg("--workspace")
        .arg(&ws)
        .arg("--")
        .args(cmd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    Some((out, base))
}

/// Without root the jail still runs: the agent is the caller's own uid,
/// cgroup limits are reported as not enforced, and the start event says
/// "degraded".
#[test]
fn unprivileged_caller_runs_degraded() {
    if !jail_available("unprivileged") {
        return;
    }
    let script = "id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '; echo hi > /workspace/f";
    let Some((out, base)) = run_unprivileged("unprivileged", &["sh", "-c", script], 0o022) else { return };
    let (ws, state) = (base.path().join("ws"), base.path().join("state"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "1000\nCapEff: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\n", "{stderr}");
    assert!(stderr.contains("dedicated_uid does not hold"), "{stderr}");
    assert_eq!(std::fs::metadata(ws.join("f")).unwrap().uid(), 65534);
    let audit = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let start: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(start["isolation"]["level"], "degraded");
}

/// As root the launcher makes the jail's /etc outside the jail, kept in the
/// state dir between runs (see `etc_cache`); without root init writes it
/// itself. Both are the same /etc: the same names, kinds, link targets,
/// modes and contents as the host's listed entries, read-only, whatever
/// the caller's umask (077 here, which the agent keeps).
#[test]
fn etc_made_outside_the_jail_is_the_etc_init_writes() {
    if !jail_available("etc: made outside vs by init") {
        return;
    }
    let list = r#"cd /etc && for f in *; do
        if [ -L "$f" ]; then echo "L $f $(readlink "$f")";
        elif [ -d "$f" ]; then echo "D $f $(ls "$f" | wc -l)";
        else echo "F $f $(stat -c %a "$f") $(cksum < "$f")"; fi; done; touch /etc/x 2>/dev/null || echo read-only"#;
    let tail = r#"; grep -c ' /etc ' /proc/self/mountinfo || true; umask"#;
    let script = format!("{list}{tail}");
    let env = Env::new();
    let as_root = || {
        use std::os::unix::process::CommandExt;
        let mut c = env.std_run(&[], &["sh", "-c", &script]);
        // SAFETY: umask is async-signal-safe; it changes only the child.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0o077);
                Ok(())
            })
        };
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = as_root();
    let mut lines: Vec<&str> = text.lines().collect();
    let (umask, mounts) = (lines.pop().unwrap(), lines.pop().unwrap());
    let listing = lines.join("\n");
    // As root /etc is a mount of its own: the one made outside was attached.
    assert_eq!(mounts, "1", "no mount of its own at /etc:\n{text}");
    assert_eq!(umask, "0077", "the agent keeps the caller's umask");
    assert!(listing.lines().any(|l| l == "read-only"), "{listing}");
    // Every copied host file is the host's, bit for bit and mode.
    let identity = ["passwd", "group", "hosts", "hostname", "resolv.conf"];
    let mut copied = 0;
    for line in listing.lines().filter(|l| l.starts_with("F ")) {
        let name = line.split(' ').nth(1).unwrap();
        if identity.contains(&name) {
            assert!(line.starts_with(&format!("F {name} 644 ")), "{line}");
            continue;
        }
        let host = std::process::Command::new("sh")
            .args(["-c", &format!("cd /etc && echo \"F {name} $(stat -c %a {name}) $(cksum < {name})\"")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&host.stdout).trim_end(), line);
        copied += 1;
    }
    assert!(copied > 3 && listing.contains("F passwd ") && listing.contains("\nD "), "{listing}");
    // Kept in the state dir (the host's /etc has not changed in seconds),
    // and the next run binds the same generation instead of building one.
    let cache = env.state.path().join("etc-cache");
    let generations = || -> Vec<(String, u64)> {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().into_string().unwrap(), e.metadata().unwrap().ino()))
            .collect()
    };
    let kept = generations();
    assert!(kept.len() == 1 && kept[0].0.len() == 32, "{kept:?}");
    assert_eq!(as_root(), text);
    assert_eq!(generations(), kept);
    let Some((out, _base)) = run_unprivileged("etc: made outside vs by init", &["sh", "-c", &script], 0o077) else { return };
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Without root init wrote it into the root's own tmpfs.
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{listing}\n0\n0077\n"));
}

/// On a host whose mounts are shared (systemd makes / shared), what init
/// mounts on the jail's /etc (host /etc dirs), on the shim or under
/// /workspace must not propagate back: run in a mount namespace of the
/// test's own, with the binaries, the state dir and the workspace on a
/// shared tmpfs, no mount in the jail is shared, and two runs leave no
/// mount under it (the kept /etc is bound from the state dir).
#[test]
fn nothing_the_jail_mounts_propagates_to_a_shared_host_mount() {
    if !jail_available("shared mounts") {
        return;
    }
    if !std::path::Path::new("/usr/bin/unshare").exists() {
        println!("skipped: shared mounts: needs unshare(1) (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The second run binds the /etc the first one kept.
    let script = r#"mount -t tmpfs shared-test "$1" && mount --make-shared "$1" && mkdir "$1/state" "$1/ws" "$1/bin" &&
        for b in clawkeep clawkeep-full clawkeep-jail clawkeep-shim; do cp "$(dirname "$2")/$b" "$1/bin/" || exit 1; done &&
        for i in 1 2; do CLAWKEEP_STATE_DIR="$1/state" "$1/bin/clawkeep" run --workspace "$1/ws" -- sh -c 'grep -c shared: /proc/self/mountinfo; touch /workspace/f' || exit 1; done;
        ls "$1/state/etc-cache" | grep -c '^[0-9a-f]\{32\}$'; grep -c " $1/" /proc/self/mountinfo; true"#;
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(dir.path())
        .arg(common::bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout,
        "0\n0\n1\n0\n",
        "no shared mount in either jail, a kept /etc, no mount left under the shared tmpfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With a terminal, Ctrl-C typed by the user reaches the command through
/// the jail's own pty.
#[test]
fn ctrl_c_on_a_tty_reaches_the_command() {
    if !jail_available("tty ctrl-c") {
        return;
    }
    if !std::path::Path::new("/usr/bin/script").exists() {
        println!("skipped: tty ctrl-c: util-linux `script` not installed");
        return;
    }
    let env = Env::new();
    let mut child = env.in_terminal("", "trap \"echo got-int; exit 9\" INT; echo ready; sleep 20 & wait");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no 'ready' before EOF: {seen}");
        seen.push_str(&line);
    }
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(rest.contains("got-int"), "{seen}{rest}");
    assert_eq!(status.code(), Some(9), "{seen}{rest}");
}
