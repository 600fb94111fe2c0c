//! Nothing is left behind: no process, mount, cgroup or temp dir, whether
//! the command ends, is killed, or clawkeep itself is killed with -9.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{cgroups_of, host_mounts_with, jail_available, processes_with, wait_for, Env};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

fn tmp_entries() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("clawkeep"))
        .collect();
    v.sort();
    v
}

/// A run whose agent sleeps (`marker` is in the argv of both the shell and
/// its sleeping child), once the agent is up.
fn running_agent(env: &Env, marker: &str) -> std::process::Child {
    running_agent_with(env, &[], marker)
}

/// `running_agent` with `clawkeep run` flags.
fn running_agent_with(env: &Env, flags: &[&str], marker: &str) -> std::process::Child {
    let script = format!("{marker} & echo started; wait");
    let mut child = env.std_run(flags, &["sh", "-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    assert!(wait_for(|| !processes_with(marker).is_empty(), 5), "the agent's process never appeared");
    child
}

/// The live runs' socket dirs of `env`'s state dir (through the link to
/// the runtime dir; none once that is gone).
fn socket_dirs(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.state.path().join("agents"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn assert_nothing_left(env: &Env, launcher: u32, marker: &str, tmp_before: &[String]) {
    assert!(wait_for(|| processes_with(marker).is_empty(), 10), "processes left: {:?}", processes_with(marker));
    assert!(wait_for(|| cgroups_of(launcher).is_empty(), 10), "cgroups left: {:?}", cgroups_of(launcher));
    assert!(host_mounts_with(env.workspace.path().to_str().unwrap()).is_empty(), "host mounts left");
    assert_eq!(tmp_entries(), tmp_before, "temp dirs left");
    assert!(wait_for(|| socket_dirs(env).is_empty(), 10), "socket dirs left: {:?}", socket_dirs(env));
}

#[test]
fn command_killed_leaves_nothing() {
    if !jail_available("teardown: command killed") {
        return;
    }
    let env = Env::new();
    let before = tmp_entries();
    // A background child the command leaves behind, then the command is killed.
    let child = env.std_run(&[], &["sh", "-c", "sleep 3017 & kill -KILL $$"]).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137));
    assert_nothing_left(&env, pid, "sleep 3017", &before);
}

/// The helper reports the agent's exit before the jail's pid 1 has ended;
/// still, by the time clawkeep returns, the processes the agent left and
/// the run's cgroups are gone (checked at once, not waited for).
#[test]
fn command_exits_leaving_a_child_and_nothing_outlives_the_run() {
    if !jail_available("teardown: command exits, child left") {
        return;
    }
    let env = Env::new();
    let before = tmp_entries();
    let child = env.std_run(&[], &["sh", "-c", "sleep 3029 & exit 7"]).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(processes_with("sleep 3029"), Vec::<i32>::new(), "a process outlived the run");
    assert_eq!(cgroups_of(pid), Vec::<std::path::PathBuf>::new(), "a cgroup outlived the run");
    assert_nothing_left(&env, pid, "sleep 3029", &before);
    let exit = env.audit().into_iter().find(|e| e["kind"] == "run.exit").expect("an exit event");
    assert_eq!(exit["exit_code"], 7, "{exit}");
}

#[test]
fn clawkeep_killed_with_sigkill_leaves_nothing() {
    if !jail_available("teardown: clawkeep -9") {
        return;
    }
    let env = Env::new();
    let before = tmp_entries();
    let marker = "sleep 3019";
    let mut child = running_agent(&env, marker);
    let pid = child.id();
    assert!(!cgroups_of(pid).is_empty(), "the run has cgroups while it runs");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_nothing_left(&env, pid, marker, &before);
    // The helper records what happened to the run it was watching.
    assert!(wait_for(|| env.audit().iter().any(|e| e["kind"] == "run.abort"), 5), "no run.abort event");
}

/// The launcher's children (its helper), from /proc.
fn children_of(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out
}

/// Both the launcher and its helper killed with -9 (`killall -9`): the
/// jail still dies with them (its init's parent-death signal survives the
/// uid changes), and the next run sweeps the empty cgroups they left.
#[test]
fn launcher_and_helper_killed_together_leave_nothing() {
    if !jail_available("teardown: launcher and helper -9") {
        return;
    }
    let env = Env::new();
    let before = tmp_entries();
    let marker = "sleep 3023";
    let mut child = running_agent(&env, marker);
    let pid = child.id();
    let helpers = children_of(pid);
    assert!(!helpers.is_empty(), "the launcher has no helper");
    for h in &helpers {
        // SAFETY: kill on a pid we just read; a gone process is ESRCH.
        unsafe { libc::kill(*h, libc::SIGKILL) };
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(wait_for(|| processes_with(marker).is_empty(), 10), "the jail outlived its helper: {:?}", processes_with(marker));
    env.run(&[], &["true"]).assert().success();
    assert_nothing_left(&env, pid, marker, &before);
}

/// Cgroups left by a run whose launcher and helper were both killed (named
/// for a launcher pid that is gone, and empty, in each hierarchy a run
/// makes cgroups in) are swept by the next run; those named for a live
/// launcher are kept.
#[test]
fn the_next_run_sweeps_the_cgroups_killed_runs_left() {
    if !jail_available("teardown: stale cgroups swept") {
        return;
    }
    use clawkeep_sandbox::cgroup::{run_cgroup_name, HostCgroups, RUN_CONTROLLERS};
    let mut host = HostCgroups::detect();
    host.hierarchies.retain(|h| h.controllers.iter().any(|c| RUN_CONTROLLERS.contains(&c.as_str())));
    assert!(!host.hierarchies.is_empty(), "no cgroup hierarchy a run uses found");
    // A pid that is gone: a child already reaped.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let tag = format!("sweep{}", std::process::id());
    let in_each = |pid: u32| host.hierarchies.iter().map(|h| h.own_dir.join(run_cgroup_name(pid, &tag))).collect::<Vec<_>>();
    let (stale, live) = (in_each(dead_pid), in_each(std::process::id()));
    for d in stale.iter().chain(&live) {
        std::fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    let out = Env::new().run(&[], &["true"]).output().unwrap();
    let left: Vec<_> = stale.iter().filter(|d| d.exists()).collect();
    let kept: Vec<_> = live.iter().filter(|d| d.exists()).collect();
    for d in stale.iter().chain(&live) {
        let _ = std::fs::remove_dir(d);
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(left.is_empty(), "stale cgroups were not swept: {left:?}");
    assert_eq!(kept.len(), live.len(), "a live launcher's cgroups were removed");
}

/// A run's services (its gate, API and proxy: a `clawkeep-full` the
/// launcher started at the first connection) die with the launcher too.
#[test]
fn clawkeep_killed_with_sigkill_while_its_gate_serves_leaves_nothing() {
    if !jail_available("teardown: clawkeep -9 with services") {
        return;
    }
    let env = Env::new();
    let before = tmp_entries();
    let policy = env.state.path().join("policy.yaml");
    std::fs::write(&policy, "default_action: deny\nrules:\n  - command: date\n    action: ask\n").unwrap();
    let marker = "sleep 3037";
    let script = format!("{marker} & date; wait");
    let mut child = env.std_run(&["--policy", policy.to_str().unwrap()], &["sh", "-c", &script]).stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    let services = || {
        children_of(pid)
            .into_iter()
            .filter(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "clawkeep-full"))
            .collect::<Vec<_>>()
    };
    // `date` waits for an operator: the services serve it.
    assert!(wait_for(|| !services().is_empty() && !processes_with(marker).is_empty(), 10), "the run's services never started");
    let started = services();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        wait_for(|| started.iter().all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()), 10),
        "the services outlived the launcher"
    );
    assert_nothing_left(&env, pid, marker, &before);
}

/// A live run's agent name is taken, and telling so does not start that
/// run's services (its API socket is not connected to); a killed run's
/// agent dir is swept by the next run.
#[test]
fn a_live_agent_name_is_taken_without_waking_its_services_and_a_dead_ones_is_swept() {
    if !jail_available("agent names: live and stale") {
        return;
    }
    let env = Env::new();
    let stale = env.state.path().join("agents").join("t-stale");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("api.sock"), "").unwrap();
    let marker = "sleep 3041";
    let mut live = running_agent_with(&env, &["--agent", "t-live"], marker);
    assert!(!stale.exists(), "the killed run's agent dir was not swept");
    let again = env.run(&["--agent", "t-live"], &["true"]).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("an agent named 't-live' is already running"));
    let services = children_of(live.id())
        .into_iter()
        .filter(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "clawkeep-full"))
        .count();
    assert_eq!(services, 0, "checking the name started the live run's services");
    live.kill().unwrap();
    live.wait().unwrap();
    assert!(wait_for(|| processes_with(marker).is_empty(), 10));
}

fn on_tmpfs(p: &std::path::Path) -> bool {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a zeroed statfs is a valid out-buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) }) == 0 && st.f_type == 0x0102_1994
}

/// A live run's sockets are under `<state>/agents/<agent>/`, which on a
/// host with a tmpfs for runtime files is a link into a private dir there
/// (no state-dir metadata per run); the run takes its dir with it.
#[test]
fn a_runs_sockets_are_on_the_runtime_tmpfs_and_go_with_the_run() {
    if !jail_available("agent sockets on the runtime tmpfs") {
        return;
    }
    let env = Env::new();
    let marker = "sleep 3043";
    let mut live = running_agent_with(&env, &["--agent", "t-rt"], marker);
    let link = env.state.path().join("agents");
    let dir = link.join("t-rt");
    assert!(dir.join("api.sock").exists() && dir.join("gate.sock").exists(), "the run's sockets are not in {}", dir.display());
    let target = std::fs::read_link(&link).ok();
    if on_tmpfs(std::path::Path::new("/dev/shm")) {
        let target = target.clone().expect("<state>/agents is a link to the runtime tmpfs");
        assert!(on_tmpfs(&target), "{} is not on a tmpfs", target.display());
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(target.parent().unwrap()).unwrap();
        assert!(meta.is_dir() && meta.mode() & 0o077 == 0 && meta.uid() == 0, "the runtime base is not private: {meta:?}");
    } else {
        println!("no tmpfs at /dev/shm: checked the plain dir only");
    }
    // SAFETY: the run's own launcher; SIGTERM reaches its agent.
    assert_eq!(unsafe { libc::kill(live.id() as i32, libc::SIGTERM) }, 0);
    live.wait().unwrap();
    assert!(wait_for(|| processes_with(marker).is_empty(), 10));
    assert!(!dir.exists(), "the run's socket dir outlived it");
    if let Some(t) = target {
        assert!(!t.exists(), "the state dir's runtime dir outlived its last run: {}", t.display());
    }
}
