//! The gate end to end, inside the jail: shims, allow/deny/ask, the
//! approval queue through the CLI and the API, scopes, timeouts, the kill
//! switch, and no way around the shim.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{jail_available, wait_for, Env};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::Duration;

const POLICY: &str = r#"
default_action: deny
allowed_paths: ["/workspace", "/workspace/**", "/tmp", "/tmp/**"]
rules:
  - command: uname
    action: allow
    reason: harmless
  - command: env
    action: allow
    reason: runs other commands, which are gated in turn
  - command: touch
    action: deny
    reason: no touching here
  - command: date
    action: ask
    reason: dates need a human
  - command: sleep
    args: ["5"]
    action: allow
    timeout: 1s
"#;

fn env_with_policy() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    let p = env.state.path().join("policy.yaml");
    std::fs::write(&p, POLICY).unwrap();
    (env, p)
}

fn run_gated(env: &Env, policy: &std::path::Path, agent: &str, script: &str) -> std::process::Output {
    env.std_run(&["--policy", policy.to_str().unwrap(), "--agent", agent], &["sh", "-c", script]).output().unwrap()
}

fn spawn_gated(env: &Env, policy: &std::path::Path, agent: &str, script: &str) -> Child {
    env.std_run(&["--policy", policy.to_str().unwrap(), "--agent", agent], &["sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn pending(env: &Env) -> Vec<serde_json::Value> {
    let out = env.cmd().args(["approvals", "--json"]).output().unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default().as_array().cloned().unwrap_or_default()
}

/// The first queued approval's id; when none comes, ends the run and
/// shows what it said.
fn wait_pending(env: &Env, child: &mut Child) -> i64 {
    let mut id = None;
    let queued = wait_for(
        || {
            id = pending(env).first().and_then(|a| a["id"].as_i64());
            id.is_some()
        },
        20,
    );
    if !queued {
        let _ = child.kill();
        let mut said = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut said));
        panic!("no request reached the approval queue; the run said: {said}");
    }
    id.unwrap()
}

fn finish(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn allowed_runs_and_denied_prints_the_reason() {
    if !jail_available("gate allow/deny") {
        return;
    }
    let (env, policy) = env_with_policy();
    // The agent's own proxy token on a command line is redacted in every
    // record (the command itself would get it unchanged).
    let out = run_gated(&env, &policy, "t-allow", "uname -s; touch /workspace/x \"Bearer $OPENAI_API_KEY\"; echo touch=$?");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "Linux\ntouch=126\n", "{stderr}");
    assert!(stderr.contains("denied: no touching here"), "{stderr}");
    assert!(!env.workspace.path().join("x").exists());
    let hist = env.cmd().args(["history", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    let outcomes: Vec<&str> = v["items"].as_array().unwrap().iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert!(outcomes.contains(&"allowed") && outcomes.contains(&"denied"), "{v}");
    let audit = std::fs::read_to_string(env.state.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"kind\":\"gate.decision\"") && audit.contains("\"kind\":\"gate.exit\""));
    assert!(audit.contains("Bearer [redacted token]") && !audit.contains("Bearer eyJ"), "{audit}");
    assert!(v.to_string().contains("Bearer [redacted token]") && !v.to_string().contains("Bearer eyJ"), "{v}");
    env.cmd().args(["audit", "verify"]).assert().success();
}

#[test]
fn the_real_binary_cannot_be_reached() {
    if !jail_available("gate bypass") {
        return;
    }
    let (env, policy) = env_with_policy();
    let script = "for t in /usr/bin/touch /bin/touch 'sh -c touch' /tmp/link /tmp/copy; do \
        case $t in /tmp/link) ln -s /usr/bin/touch /tmp/link;; /tmp/copy) cp /usr/bin/touch /tmp/copy;; esac; \
        $t /workspace/bypass 2>/dev/null; echo \"$t=$?\"; done";
    let out = run_gated(&env, &policy, "t-bypass", script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        assert!(line.ends_with("=126"), "bypass worked: {line}\n{stdout}");
    }
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    assert!(!env.workspace.path().join("bypass").exists());
}

/// An allowed command that starts another gated command, by name or by
/// its full path (as an npm script, a build script or git's fsmonitor hook
/// would): only the approved command's own binary is real in its job, so
/// the other one reaches the gate again and is decided on its own.
#[test]
fn a_command_started_by_an_approved_one_is_gated_again() {
    if !jail_available("nested gated commands") {
        return;
    }
    let (env, policy) = env_with_policy();
    // The executor keeps five capabilities (KILL, SETGID, SETUID, SETPCAP,
    // SYS_ADMIN: 0x2001e0) and no more, in every set.
    let script = "env /usr/bin/touch /workspace/nested; echo touch=$?; env PATH=/usr/bin /usr/bin/uname -s; echo uname=$?; \
        for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = clawkeep-exec ] && grep -q '^PPid:[[:space:]]1$' $p/status \
          && grep -E '^Cap(Eff|Prm|Bnd|Inh|Amb)' $p/status; done";
    let out = run_gated(&env, &policy, "t-nested", script);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let caps = "CapInh:\t0000000000000000\nCapPrm:\t00000000002001e0\nCapEff:\t00000000002001e0\nCapBnd:\t00000000002001e0\nCapAmb:\t0000000000000000\n";
    assert_eq!(stdout, format!("touch=126\nLinux\nuname=0\n{caps}"), "stderr: {stderr}");
    assert!(stderr.contains("denied: no touching here"), "{stderr}");
    assert!(!env.workspace.path().join("nested").exists());
    // Four decisions: env, touch inside it, env again, uname inside it.
    let hist = env.cmd().args(["history", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    let mut seen: Vec<(String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["command"].as_str().unwrap_or_default().to_string(), d["outcome"].as_str().unwrap_or_default().to_string()))
        .collect();
    seen.sort();
    let want = [("env", "allowed"), ("env", "allowed"), ("touch", "denied"), ("uname", "allowed")];
    assert_eq!(seen, want.map(|(c, o)| (c.to_string(), o.to_string())), "{v}");
}

/// The executor is forked at the first job, not at every run's start:
/// until then there is none, and init holds exactly the executor's
/// privileges; from then on init is the agent (its uid, no capabilities).
#[test]
fn the_executor_starts_with_the_first_job_and_init_then_drops_to_the_agent() {
    if !jail_available("lazy executor") {
        return;
    }
    let (env, policy) = env_with_policy();
    let script = "st() { echo \"$1 $(awk '/^Uid:/{print $2} /^CapEff:/{print $2}' $2/status | tr '\\n' ' ')\"; }; \
        ex() { for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = clawkeep-exec ] && grep -q '^PPid:[[:space:]]1$' $p/status && st exec $p; done; }; \
        st init /proc/1; ex; env true; echo ran=$?; st init /proc/1; ex; st self /proc/self";
    let out = run_gated(&env, &policy, "t-lazy", script);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 5, "stdout: {stdout}\nstderr: {stderr}");
    let (init_before, ran, init_after, exec, me) = (&lines[0], &lines[1], &lines[2], &lines[3], &lines[4]);
    assert_eq!((init_before[0], ran[0], init_after[0], exec[0], me[0]), ("init", "ran=0", "init", "exec", "self"), "{stdout}");
    // Before the first job no executor exists (the next line is the job's;
    // its runners, children of the executor, are not counted).
    assert_eq!(exec[2], "00000000002001e0", "the executor keeps its five capabilities: {stdout}");
    assert_eq!(init_before[1..], exec[1..], "init held the executor's privileges, no more: {stdout}");
    assert_eq!(me[2], "0000000000000000");
    assert_eq!(init_after[1..], me[1..], "after the job init is the agent: {stdout}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(exec[1], me[1], "with a root caller the executor is not the agent's uid: {stdout}");
    }
}

/// The run's gate is served by `clawkeep-full`, started beside the
/// launcher at the first connection. Ctrl-C at the terminal reaches the
/// launcher's whole process group: it goes on to the agent (which here
/// ignores it) and must not end the gate mid-run, so the queued request is
/// still answered and its command still runs.
#[test]
fn ctrl_c_at_the_terminal_does_not_end_the_runs_gate() {
    if !jail_available("services and Ctrl-C") {
        return;
    }
    let (env, policy) = env_with_policy();
    let mut cmd =
        env.std_run(&["--policy", policy.to_str().unwrap(), "--agent", "t-ctrlc"], &["sh", "-c", "trap '' INT; date +%Y; echo date=$?"]);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let id = wait_pending(&env, &mut child);
    // Ctrl-C, as the terminal sends it: to every process of the group.
    // SAFETY: the group is the run's own (process_group(0) above).
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    env.cmd().args(["approve", &id.to_string()]).assert().success();
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.ends_with("date=0\n") && stdout.starts_with("20"), "stdout: {stdout}\nstderr: {stderr}");
}

/// What an approved command leaves running ends with it, even a daemon in
/// a session of its own (its runner is a subreaper), and the agent cannot
/// stop a runner (or the executor) to escape the job's timeout.
#[test]
fn a_job_leaves_nothing_behind_and_its_runner_cannot_be_stopped() {
    if !jail_available("job leftovers") {
        return;
    }
    let (env, policy) = env_with_policy();
    let script = "env sh -c 'setsid python3 -c \"import time; open(\\\"/tmp/up\\\", \\\"w\\\"); time.sleep(30)\" </dev/null >/dev/null 2>&1 & \
            while [ ! -e /tmp/up ]; do :; done; echo started'; \
        for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = python3 ] && echo alive; done; \
        env sh -c 'for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = clawkeep-exec ] && kill -STOP ${p#/proc/} 2>/dev/null && { echo stopped; kill -CONT ${p#/proc/}; }; done; echo tried'";
    let out = run_gated(&env, &policy, "t-leftovers", script);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "started\ntried\n", "stderr: {stderr}");
}

/// A running job's mount namespace (where its own command is real) is out
/// of the agent's reach through /proc: the job's landlock domain is not
/// nested in the agent's, so /proc/PID/root and /proc/PID/exe are refused.
#[test]
fn a_running_job_cannot_be_entered_through_proc() {
    if !jail_available("job through /proc") {
        return;
    }
    let (env, policy) = env_with_policy();
    // `sleep 5` is allowed (and killed at its 1 s timeout); `sleep 0` is not.
    let script = "sleep 5 & i=0; while [ $i -lt 200 ]; do \
          for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = sleep ] && [ \"$(cat $p/status | grep ^Uid | cut -f2)\" = 1000 ] \
            && [ \"$(readlink $p/ns/mnt)\" != \"$(readlink /proc/self/ns/mnt)\" ] && job=$p; done; \
          [ -n \"$job\" ] && break; i=$((i+1)); done; \
        echo found=${job:+yes}; $job/root/usr/bin/sleep 0; echo root=$?; $job/exe 0; echo exe=$?; wait";
    let out = run_gated(&env, &policy, "t-procroot", script);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "found=yes\nroot=126\nexe=126\n", "stderr: {stderr}");
    assert_eq!(stderr.matches("Permission denied").count(), 2, "{stderr}");
}

/// A gated binary with hard links under other names: beside it, in another
/// PATH dir, and in a libexec dir, and a separate copy where packages keep
/// private helpers (as Debian's /usr/lib/git-core/git). Each PATH link and
/// the copy reach the gate; the libexec dir is hidden.
#[test]
fn every_hard_link_of_a_gated_binary_is_covered() {
    if !jail_available("hard links") {
        return;
    }
    let (env, policy) = env_with_policy();
    let root = tempfile::tempdir().unwrap();
    common::copy_with_libs("/bin/dash", root.path());
    // The shim runs in this root too: its libraries come along.
    common::copy_with_libs(common::bin().with_file_name("clawkeep-shim").to_str().unwrap(), root.path());
    let r = root.path();
    for d in ["usr/bin", "usr/sbin", "usr/libexec/touch-core", "usr/lib/touch-core"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    // `touch` (denied by the policy) is a shell here: a bypass would print.
    std::fs::copy("/bin/dash", r.join("usr/bin/touch")).unwrap();
    std::fs::copy("/bin/dash", r.join("usr/lib/touch-core/touch")).unwrap();
    for link in ["usr/bin/touch-alias", "usr/sbin/touch-admin", "usr/libexec/touch-core/touch-sub"] {
        std::fs::hard_link(r.join("usr/bin/touch"), r.join(link)).unwrap();
    }
    // The private copy has a hard link of its own beside it (git built with
    // NO_CROSS_DIRECTORY_HARDLINKS): that directory is hidden, copy and all.
    std::fs::hard_link(r.join("usr/lib/touch-core/touch"), r.join("usr/lib/touch-core/touch-push")).unwrap();
    let script = "for t in /usr/bin/touch /usr/bin/touch-alias /usr/sbin/touch-admin; do $t -c 'echo escaped'; echo \"$t=$?\"; done; \
        for t in /usr/lib/touch-core/touch /usr/lib/touch-core/touch-push /usr/libexec/touch-core/touch-sub; do \
          $t -c 'echo escaped' 2>/dev/null; echo \"$t=$?\"; done";
    let out = env
        .std_run(
            &["--rootfs", r.to_str().unwrap(), "--policy", policy.to_str().unwrap(), "--agent", "t-links"],
            &["/bin/dash", "-c", script],
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "/usr/bin/touch=126\n/usr/bin/touch-alias=126\n/usr/sbin/touch-admin=126\n\
         /usr/lib/touch-core/touch=127\n/usr/lib/touch-core/touch-push=127\n/usr/libexec/touch-core/touch-sub=127\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The helper plans the shim's coverage from the host's directories;
/// in the jail, every gated name under every PATH spelling, and every
/// hard link to the file it names in those directories, must be the
/// shim (the same inode as /run/clawkeep/shim). Checked on this host's
/// own files, with the built-in policy, and with a policy gating names
/// Debian resolves through /etc/alternatives (awk, editor, pager).
#[test]
fn every_gated_name_and_its_links_on_this_host_reach_the_shim() {
    if !jail_available("host coverage") {
        return;
    }
    let env = Env::new();
    assert_host_coverage(&env, &[], "built-in policy");
    let p = env.state.path().join("alternatives.yaml");
    let rules: String =
        ["awk", "editor", "pager"].iter().map(|c| format!("  - command: {c}\n    action: deny\n    reason: gated\n")).collect();
    std::fs::write(&p, format!("default_action: deny\nrules:\n{rules}")).unwrap();
    assert_host_coverage(&env, &["--policy", p.to_str().unwrap()], "names through /etc/alternatives");
}

fn assert_host_coverage(env: &Env, extra: &[&str], what: &str) {
    use std::os::unix::fs::MetadataExt;
    const DIRS: [&str; 6] = ["/usr/local/bin", "/usr/local/sbin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"];
    let run = |agent: &str, argv: &[&str]| env.std_run(&[extra, &["--agent", agent]].concat(), argv).output().unwrap();
    let names = run("t-cover-names", &["ls", "/run/clawkeep/shims"]);
    let names: Vec<String> = String::from_utf8_lossy(&names.stdout).split_whitespace().map(String::from).collect();
    assert!(!names.is_empty(), "{what}: no gated names");
    // The plan is kept (this host's PATH dirs last changed seconds ago),
    // and the run checked below takes it as kept: planned again, it
    // would be written anew (a new inode).
    let kept = || -> std::collections::BTreeSet<(std::ffi::OsString, u64)> {
        std::fs::read_dir(env.state.path().join("plan-cache"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name(), e.metadata().unwrap().ino()))
            .collect()
    };
    let before = kept();
    assert!(!before.is_empty(), "{what}: no plan was kept");
    // On the host: each name's spellings, and the hard links (in the
    // same directories) to the file each resolves to.
    let mut paths = std::collections::BTreeSet::new();
    let mut inodes = std::collections::BTreeSet::new();
    for n in &names {
        for d in DIRS {
            let p = std::path::Path::new(d).join(n);
            if let Ok(m) = std::fs::metadata(&p) {
                paths.insert(p);
                inodes.insert((m.dev(), m.ino()));
            }
        }
    }
    for d in DIRS {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if std::fs::metadata(e.path()).is_ok_and(|m| m.is_file() && inodes.contains(&(m.dev(), m.ino()))) {
                paths.insert(e.path());
            }
        }
    }
    if paths.is_empty() {
        println!("skipped: host coverage ({what}): none of {names:?} is installed here");
        return;
    }
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let script = "shim=$(stat -L -c %d:%i /run/clawkeep/shim); for p in \"$@\"; do \
        [ \"$(stat -L -c %d:%i \"$p\" 2>&1)\" = \"$shim\" ] && echo \"shim $p\" || echo \"REAL $p\"; done";
    let mut argv = vec!["sh", "-c", script, "sh"];
    argv.extend(list.iter().map(String::as_str));
    let out = run("t-cover", &argv);
    assert_eq!(kept(), before, "{what}: the kept plan was not taken");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want: String = list.iter().map(|p| format!("shim {p}\n")).collect();
    assert_eq!(stdout, want, "{what}; stderr: {}", String::from_utf8_lossy(&out.stderr));
    println!("host coverage ({what}): {} paths of {} gated names reach the shim", list.len(), names.len());
}

/// Without --policy the built-in policy gates (compiled only once the
/// gate first wakes): `su` is denied with the built-in reason.
#[test]
fn the_builtin_policy_gates_without_a_policy_file() {
    if !jail_available("built-in policy") {
        return;
    }
    if !std::path::Path::new("/usr/bin/su").exists() {
        println!("skipped: built-in policy: no /usr/bin/su on this host");
        return;
    }
    let env = Env::new();
    let out = env.std_run(&["--agent", "t-builtin"], &["sh", "-c", "su -c id; echo \"su=$?\""]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "su=126\n", "stderr: {stderr}");
    assert!(stderr.contains("never gets more privilege"), "{stderr}");
}

#[test]
fn ask_waits_for_the_cli_and_session_scope_covers_repeats() {
    if !jail_available("gate ask via cli") {
        return;
    }
    let (env, policy) = env_with_policy();
    let mut child = spawn_gated(&env, &policy, "t-ask-cli", "date +%Y; date +%Y; echo done");
    let id = wait_pending(&env, &mut child);
    let listed = env.cmd().arg("approvals").output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("date"), "{listed:?}");
    env.cmd().args(["approve", &id.to_string(), "--scope", "session"]).assert().success();
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    let year = stdout.lines().next().unwrap().to_string();
    assert_eq!(stdout, format!("{year}\n{year}\ndone\n"), "{stderr}");
    assert!(year.len() == 4, "{stdout}");
    // The second date never reached the queue.
    assert!(pending(&env).is_empty());
}

#[test]
fn ask_can_be_approved_through_the_api_and_denied_with_a_reason() {
    if !jail_available("gate ask via api") {
        return;
    }
    let (env, policy) = env_with_policy();
    let mut child = spawn_gated(&env, &policy, "t-ask-api", "date +%Y >/dev/null; echo first=$?; date; echo second=$?");
    let id = wait_pending(&env, &mut child);
    let sock = env.state.path().join("agents/t-ask-api/api.sock");
    let queue = http(&sock, "GET /api/queue", "");
    assert!(queue.starts_with("HTTP/1.1 200") && queue.contains(&format!("\"id\":{id}")) && queue.contains("date"), "{queue}");
    let status = http(&sock, "GET /api/status", "");
    assert!(status.contains("\"pending\":1") && status.contains("t-ask-api"), "{status}");
    let bad = http(&sock, &format!("POST /api/queue/{id}/approve"), r#"{"scope":"forever"}"#);
    assert!(bad.starts_with("HTTP/1.1 400") && bad.contains("unknown scope"), "{bad}");
    let missing = http(&sock, "POST /api/queue/999999/approve", "{}");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let body = r#"{"scope":"once","by":"test"}"#;
    let resp = http(&sock, &format!("POST /api/queue/{id}/approve"), body);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let id2 = {
        let mut next = None;
        assert!(wait_for(
            || {
                next = pending(&env).first().and_then(|a| a["id"].as_i64()).filter(|n| *n != id);
                next.is_some()
            },
            20
        ));
        next.unwrap()
    };
    // Asked while the run still waits on id2 (once it is denied the run
    // ends, and its API socket with it). The approved command's history row
    // is written just after it ran.
    let mut history = String::new();
    let recorded = wait_for(
        || {
            history = http(&sock, "GET /api/history?outcome=approved&limit=5", "");
            history.starts_with("HTTP/1.1 200") && history.contains("\"approved_by\":\"test\"")
        },
        10,
    );
    assert!(recorded, "{history}");
    let again = http(&sock, &format!("POST /api/queue/{id}/approve"), body);
    assert!(again.starts_with("HTTP/1.1 409"), "approving twice is a conflict: {again}");
    env.cmd().args(["deny", &id2.to_string(), "--reason", "not today"]).assert().success();
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "first=0\nsecond=126\n", "{stderr}");
    assert!(stderr.contains("not today"), "{stderr}");
}

#[test]
fn a_rule_timeout_kills_the_command_with_124() {
    if !jail_available("gate timeout") {
        return;
    }
    let (env, policy) = env_with_policy();
    let out = run_gated(&env, &policy, "t-timeout", "sleep 5; echo rc=$?");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "rc=124\n", "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_kill_switch_stops_the_agent() {
    if !jail_available("gate kill switch") {
        return;
    }
    let (env, policy) = env_with_policy();
    let child = spawn_gated(&env, &policy, "t-kill", "echo up; exec tail -f /dev/null");
    assert!(wait_for(|| env.state.path().join("agents/t-kill/api.sock").exists(), 10));
    std::thread::sleep(Duration::from_millis(200));
    env.cmd().args(["kill", "t-kill"]).assert().success();
    let (code, _, stderr) = finish(child);
    assert_eq!(code, 137, "{stderr}");
}

#[test]
fn bad_policy_is_refused_with_file_and_line() {
    let env = Env::new();
    let p = env.state.path().join("bad.yaml");
    std::fs::write(&p, "default_action: deny\nrules:\n  - command: ls\n    action: maybe\n").unwrap();
    let out = env.cmd().arg("policy").arg("check").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:3") || err.contains("bad.yaml:4"), "{err}");
    std::fs::write(&p, "default_action: deny\nrules:\n  - command: ls\n    args: [\"re:([\"]\n    action: allow\n").unwrap();
    let out = env.cmd().arg("policy").arg("check").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml:"), "{out:?}");
    let out = env.cmd().args(["run", "--policy"]).arg(&p).args(["--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn policy_explain_and_show_default() {
    let env = Env::new();
    let p = env.state.path().join("p.yaml");
    std::fs::write(&p, POLICY).unwrap();
    let out = env.cmd().arg("policy").arg("explain").arg(&p).args(["--", "touch", "x"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("deny") && text.contains("no touching here"), "{text}");
    let def = env.cmd().args(["policy", "show-default"]).output().unwrap();
    assert!(def.status.success() && String::from_utf8_lossy(&def.stdout).contains("default_action"));
}

fn http(sock: &std::path::Path, line: &str, body: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    let req = format!(
        "{line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn batch_approve_and_the_event_stream() {
    if !jail_available("gate batch + sse") {
        return;
    }
    let (env, policy) = env_with_policy();
    let child = spawn_gated(&env, &policy, "t-batch", "date +%Y > /tmp/a & date +%Y > /tmp/b & wait; cat /tmp/a /tmp/b | wc -l");
    let sock = env.state.path().join("agents/t-batch/api.sock");
    assert!(wait_for(|| sock.exists(), 10));
    // Subscribe before the second request can be queued.
    let mut sse = UnixStream::connect(&sock).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sse.write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The response's headers come once the stream is subscribed: only then
    // can no event be missed, however the server schedules the requests.
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\r\n\r\n") {
        match sse.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(wait_for(|| pending(&env).len() == 2, 20), "both requests should wait: {:?}", pending(&env));
    let ids: Vec<String> = pending(&env).iter().map(|a| a["id"].as_i64().unwrap().to_string()).collect();
    let mut args = vec!["approve".to_string()];
    args.extend(ids);
    env.cmd().args(&args).assert().success();
    let (code, stdout, stderr) = finish(child);
    assert_eq!((code, stdout.trim()), (0, "2"), "{stderr}");
    while !(seen.contains("event: resolved") && seen.matches("event: queued").count() >= 1) {
        match sse.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains("event: resolved"), "{seen}");
}

#[test]
fn the_tcp_api_needs_the_bearer_token() {
    if !jail_available("gate tcp api") {
        return;
    }
    let (env, policy) = env_with_policy();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let token = "test-token-0123456789abcdef";
    let child = env
        .std_run(&["--policy", policy.to_str().unwrap(), "--agent", "t-tcp", "--api-tcp", &addr], &["sh", "-c", "exec tail -f /dev/null"])
        .env("CLAWKEEP_API_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let get = |auth: Option<&str>| -> String {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let h = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        s.write_all(format!("GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{h}\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(wait_for(|| std::net::TcpStream::connect(&addr).is_ok(), 10), "the TCP API never came up");
    assert!(get(None).starts_with("HTTP/1.1 401"));
    assert!(get(Some("wrong-token-0123456789abcdef")).starts_with("HTTP/1.1 401"));
    let ok = get(Some(token));
    assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("t-tcp"), "{ok}");
    env.cmd().args(["kill", "t-tcp"]).assert().success();
    let _ = finish(child);
    // Refused outright: a non-loopback address, or no token.
    let out = env.run(&["--api-tcp", "0.0.0.0:1"], &["true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["--api-tcp", "127.0.0.1:1"], &["true"]).env_remove("CLAWKEEP_API_TOKEN").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_kill_switch_can_freeze_and_thaw() {
    if !jail_available("gate freeze") {
        return;
    }
    let (env, policy) = env_with_policy();
    let child = spawn_gated(&env, &policy, "t-freeze", "i=0; while :; do i=$((i+1)); echo $i > /workspace/n; done");
    let counter = env.workspace.path().join("n");
    let read = || std::fs::read_to_string(&counter).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
    assert!(wait_for(|| read() > 10, 10), "the loop never ran");
    env.cmd().args(["kill", "t-freeze", "--freeze"]).assert().success();
    std::thread::sleep(Duration::from_millis(200));
    let frozen_at = read();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(read(), frozen_at, "the sandbox kept running while frozen");
    env.cmd().args(["kill", "t-freeze", "--thaw"]).assert().success();
    assert!(wait_for(|| read() > frozen_at, 10), "the sandbox did not resume");
    env.cmd().args(["kill", "t-freeze", "--freeze"]).assert().success();
    env.cmd().args(["kill", "t-freeze"]).assert().success();
    let (code, _, stderr) = finish(child);
    assert_eq!(code, 137, "{stderr}");
}

/// A request forged without the shim, naming a working directory through
/// a symlink (`/workspace/l/..` with `l -> /etc` is "/workspace" by name,
/// "/" in fact): the executor runs nothing there. The same request from
/// the real directory runs.
#[test]
fn a_forged_cwd_through_a_symlink_runs_nothing() {
    if !jail_available("forged cwd") {
        return;
    }
    let (env, policy) = env_with_policy();
    std::os::unix::fs::symlink("/etc", env.workspace.path().join("l")).unwrap();
    let forge = r#"
import json, socket, struct, sys
def ask(cwd):
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/clawkeep/gate.sock")
    body = json.dumps({"type": "exec", "version": 1, "command": "uname", "args": [], "cwd": cwd, "env": [], "tty": False}).encode()
    socket.send_fds(s, [struct.pack(">I", len(body)) + body], [0, 1, 2])
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    out = []
    while len(data) >= 4:
        n = struct.unpack(">I", data[:4])[0]
        out.append(json.loads(data[4:4 + n]))
        data = data[4 + n:]
    return out
for cwd in ["/workspace/l/..", "/workspace"]:
    replies = ask(cwd)
    code = [r.get("code") for r in replies if r.get("type") == "exit"]
    print(cwd, "exit", code[0] if code else replies, flush=True)
"#;
    std::fs::write(env.workspace.path().join("forge.py"), forge).unwrap();
    let out = run_gated(&env, &policy, "t-forge", "python3 /workspace/forge.py");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("/workspace/l/.. exit 126"), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("is not the real path of a directory"), "{stderr}");
    assert!(stdout.contains("/workspace exit 0"), "stdout: {stdout}\nstderr: {stderr}");
}

/// A frozen jail whose launcher is killed with -9 is thawed and killed by
/// its helper, which then removes its cgroups: frozen tasks ignore even
/// SIGKILL on a v1 freezer until thawed.
#[test]
fn a_frozen_jail_dies_with_its_launcher() {
    if !jail_available("gate freeze then launcher -9") {
        return;
    }
    let (env, policy) = env_with_policy();
    let marker = "frozen-lifeline-3041";
    let mut child =
        spawn_gated(&env, &policy, "t-frozen", &format!("i=0; while :; do i=$((i+1)); echo $i > /workspace/n; done # {marker}"));
    let counter = env.workspace.path().join("n");
    assert!(wait_for(|| counter.exists(), 10), "the loop never ran");
    env.cmd().args(["kill", "t-frozen", "--freeze"]).assert().success();
    let pid = child.id();
    child.kill().unwrap(); // SIGKILL: the helper's lifeline closes
    child.wait().unwrap();
    assert!(wait_for(|| common::processes_with(marker).is_empty(), 10), "the frozen jail outlived its launcher");
    assert!(wait_for(|| common::cgroups_of(pid).is_empty(), 10), "cgroups left: {:?}", common::cgroups_of(pid));
}

/// With a terminal, the operator can answer at the prompt the run shows.
#[test]
fn an_ask_can_be_answered_at_the_terminal() {
    if !terminal_available("gate terminal prompt") {
        return;
    }
    let (env, policy) = env_with_policy();
    let extra = format!("--policy {} --agent t-tty", policy.display());
    let mut child = env.in_terminal(&extra, "date +%Y; echo rc=$?");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("[y] once") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "no prompt before EOF: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("approve #") && seen.contains("dates need a human"), "{seen}");
    stdin.write_all(b"y").unwrap();
    stdin.flush().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(rest.contains("rc=0"), "{seen}{rest}");
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    let hist = env.cmd().args(["history", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert!(v["items"].as_array().unwrap().iter().any(|d| d["approved_by"] == "terminal"), "{v}");
}

/// A jail, and util-linux `script` to give the run a terminal.
fn terminal_available(test: &str) -> bool {
    if !jail_available(test) {
        return false;
    }
    if !std::path::Path::new("/usr/bin/script").exists() {
        println!("skipped: {test}: util-linux `script` not installed");
        return false;
    }
    true
}

/// Runs `script` at a terminal until the approval prompt shows, waits
/// `wait`, answers `y`, and returns everything the terminal showed.
fn answer_in_terminal(env: &Env, extra: &str, script: &str, wait: Duration) -> String {
    let mut child = env.in_terminal(extra, script);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("leave queued: ") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "no prompt before EOF: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    std::thread::sleep(wait);
    stdin.write_all(b"y").unwrap();
    stdin.flush().unwrap();
    out.read_to_end(&mut seen).unwrap();
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", String::from_utf8_lossy(&seen));
    String::from_utf8_lossy(&seen).into_owned()
}

/// While a prompt is shown the agent's output waits: what it prints in
/// the meantime can neither cover the prompt nor pose as one, and terminal
/// modes it set (invisible text, another character set) are reset first.
#[test]
fn the_agent_cannot_print_over_a_terminal_prompt() {
    if !terminal_available("gate prompt held output") {
        return;
    }
    let (env, policy) = env_with_policy();
    let ticker = "import sys, time\nsys.stdout.write(\"\\x1b[8m\")\nfor i in range(200):\n    print(\"tick\", flush=True)\n    if i == 5:\n        open(\"/tmp/ticking\", \"w\").close()\n    time.sleep(0.01)\n";
    std::fs::write(env.workspace.path().join("ticker.py"), ticker).unwrap();
    let extra = format!("--policy {} --agent t-tty-hold", policy.display());
    let script = "python3 /workspace/ticker.py & while [ ! -e /tmp/ticking ]; do :; done; date +%Y; echo rc=$?; wait";
    // The ticker prints every 10 ms: a relay that kept copying would show
    // some of it before the answer.
    let all = answer_in_terminal(&env, &extra, script, Duration::from_millis(300));
    let marker = "leave queued: ";
    let at = all.find(marker).unwrap();
    assert!(all[at + marker.len()..].starts_with("y\r\n"), "agent output between the prompt and its answer: {all:?}");
    assert!(all[..at].contains("\x1b[?25h\x1b[?7h\x1b[4l\r\n[clawkeep] approve #"), "{all:?}");
    assert!(all[..at].contains("\x1b[0m\x1b]110\x1b\\\x1b]111\x1b\\"), "{all:?}");
    assert!(all[..at].contains("tick") && all[at..].contains("tick") && all.contains("rc=0"), "{all:?}");
}

/// The agent prints a fake prompt while the real one is shown and then
/// closes every handle on its terminal: the hang-up does not flush the
/// held output over the prompt; it appears after the answer.
#[test]
fn a_hang_up_during_a_prompt_keeps_the_output_held() {
    if !terminal_available("gate prompt hang-up") {
        return;
    }
    let (env, policy) = env_with_policy();
    let fake = "import time\ntime.sleep(0.4)\nprint(\"FAKE approve #9: ls? [y] once\", flush=True)\n";
    std::fs::write(env.workspace.path().join("fake.py"), fake).unwrap();
    let extra = format!("--policy {} --agent t-tty-hup", policy.display());
    let script = "date +%Y </dev/null >/dev/null 2>&1 & python3 /workspace/fake.py; exec </dev/null >/dev/null 2>&1; wait";
    // The fake line is printed 0.4 s after start, and the terminal then
    // closed, while the prompt waits.
    let all = answer_in_terminal(&env, &extra, script, Duration::from_millis(1200));
    let answered = all.find("leave queued: y").unwrap_or_else(|| panic!("{all:?}"));
    let fake_at = all.find("FAKE approve").unwrap_or_else(|| panic!("the held output was lost: {all:?}"));
    assert!(fake_at > answered, "the fake prompt was shown before the answer: {all:?}");
}

#[test]
fn always_shows_the_rule_then_writes_it_to_the_policy() {
    if !jail_available("gate always") {
        return;
    }
    let (env, policy) = env_with_policy();
    let mut child = spawn_gated(&env, &policy, "t-always", "date +%Y >/dev/null; echo rc=$?");
    let id = wait_pending(&env, &mut child);
    // Without --yes and without a terminal, nothing is saved.
    let refused = env.cmd().args(["approve", &id.to_string(), "--scope", "always"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("argv"), "the rule is shown first: {refused:?}");
    let out = env.cmd().args(["approve", &id.to_string(), "--scope", "always", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, stdout, stderr) = finish(child);
    assert_eq!((code, stdout.as_str()), (0, "rc=0\n"), "{stderr}");
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(text.contains("argv") && text.contains("+%Y"), "{text}");
    env.cmd().arg("policy").arg("check").arg(&policy).assert().success();
    // The next run allows exactly that command without asking.
    let out = run_gated(&env, &policy, "t-always-2", "date +%Y >/dev/null; echo rc=$?");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "rc=0\n");
}

#[test]
fn a_changed_policy_is_reloaded_and_a_broken_one_keeps_the_last_good() {
    if !jail_available("gate hot reload") {
        return;
    }
    let env = Env::new();
    let policy = env.state.path().join("live.yaml");
    std::fs::write(&policy, "default_action: deny\nrules:\n  - command: date\n    action: deny\n    reason: v1\n").unwrap();
    let script = "date >/dev/null 2>&1; echo first=$?; \
        while [ ! -e /workspace/go ]; do sleep 0.05; done; date >/dev/null 2>&1; echo second=$?; \
        while [ ! -e /workspace/go2 ]; do sleep 0.05; done; date >/dev/null 2>&1; echo third=$?";
    let child = spawn_gated(&env, &policy, "t-reload", script);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&policy, "default_action: deny\nrules:\n  - command: date\n    action: allow\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(env.workspace.path().join("go"), "").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&policy, "default_action: deny\nrules:\n  - command: date\n    action: perhaps\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(env.workspace.path().join("go2"), "").unwrap();
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "first=126\nsecond=0\nthird=0\n", "{stderr}");
    assert!(stderr.contains("not reloaded") && stderr.contains("live.yaml:"), "{stderr}");
}
