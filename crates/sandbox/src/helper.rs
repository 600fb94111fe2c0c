//! The sandbox helper: a small, single-threaded process that the (possibly
//! multi-threaded) launcher re-executes, so no fork or clone ever happens
//! inside an async runtime (the pattern of Codex's linux-sandbox).
//!
//! It stays in the host's namespaces as the jail's monitor (all but the
//! network's: as root it makes the jail's first and enters it, see
//! `main`): it clones the jail's init into new user, mount, pid, ipc, uts
//! and (without root) net namespaces, writes its id maps,
//! joins it to the run's cgroups, forwards signals, enforces the timeout
//! and, whatever happens, tears down: when the launcher dies (its
//! lifeline pipe closes) the jail is killed and its cgroups removed
//! before the helper exits.

use crate::error::{SetupFailure, Step};
use crate::idmap::{self, IdMaps, WorkspaceMount};
use crate::init::{self, InitArgs, FORWARDED};
use crate::mounts::RootSource;
use crate::protocol::{
    read_frame, ChildMsg, HelperConfig, JailReport, Outcome, CONFIG_FD, ETC_FD, EXEC_FD, PROMPT_FD, PROXY_FD, REPORT_FD,
};
use crate::shims::KeptPlan;
use crate::{net, pty, seccomp, sys};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

mod monitor;
use monitor::{monitor, outcome, parse_msgs, reap};

const NS_FLAGS: libc::c_int =
    libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

/// Entry point of `clawkeep __sandbox-helper`. Returns the process exit code.
pub fn main() -> i32 {
    // While the launcher prepares the config.
    let net = net::enter_new_namespace();
    let cfg: HelperConfig = match read_frame(CONFIG_FD) {
        Ok(c) => c,
        // The launcher called the run off before configuring us.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return 0,
        Err(e) => {
            eprintln!("clawkeep: the sandbox helper is started by `clawkeep run`, not by hand ({e})");
            return 2;
        }
    };
    let _ = sys::set_cloexec(CONFIG_FD);
    let _ = sys::set_cloexec(REPORT_FD);
    // SAFETY: adopting fd 5 when the launcher passed one (gated runs only).
    let exec_chan = cfg.gate.as_ref().filter(|_| sys::set_cloexec(EXEC_FD).is_ok()).map(|_| unsafe { OwnedFd::from_raw_fd(EXEC_FD) });
    // SAFETY: adopting fd 6 when the launcher passed one (terminal + gate).
    let prompt_chan = cfg
        .gate
        .as_ref()
        .filter(|_| cfg.tty.is_some() && sys::set_cloexec(PROMPT_FD).is_ok())
        .map(|_| unsafe { OwnedFd::from_raw_fd(PROMPT_FD) });
    // SAFETY: adopting fd 7 when the launcher passed one (proxied runs only).
    let proxy_chan = cfg.proxy_port.filter(|_| sys::set_cloexec(PROXY_FD).is_ok()).map(|_| unsafe { OwnedFd::from_raw_fd(PROXY_FD) });
    if proxy_chan.is_none() {
        // A run without the proxy: the launcher may still have passed the
        // channel (it starts us before it knows); nothing in the jail keeps it.
        // SAFETY: fd 7 is the launcher's channel or unused; nothing here owns it.
        unsafe { libc::close(PROXY_FD) };
    }
    // SAFETY: adopting fd 8 when the launcher sends the jail's /etc on it.
    let etc_chan = (cfg.prepared_etc && sys::set_cloexec(ETC_FD).is_ok()).then(|| unsafe { OwnedFd::from_raw_fd(ETC_FD) });
    if etc_chan.is_none() {
        // SAFETY: fd 8 is the launcher's channel or unused; nothing here owns it.
        unsafe { libc::close(ETC_FD) };
    }
    let (report, launcher, ending) = run(&cfg, net, exec_chan, prompt_chan, proxy_chan, etc_chan);
    if launcher != Launcher::Stayed {
        finish(&cfg);
        if launcher == Launcher::Died {
            // Its gate's sockets would wait for the state dir's next run.
            if let Some(dir) = cfg.gate.as_ref().and_then(|g| g.socket.parent()) {
                crate::agent_dir::remove_unheld(dir);
            }
            record_abort(&cfg, &report);
        }
    } else {
        // Reported first: the launcher records the exit while the jail's
        // pid 1 ends and the cgroups are removed, and waits for this
        // process to end before it does.
        if let Ok(mut line) = serde_json::to_vec(&report) {
            line.push(b'\n');
            let _ = sys::write_all(REPORT_FD, &line);
        }
        if let Some(pid) = ending {
            // Frozen tasks do not die until thawed: a kill switch thrown
            // after the exit must not hold pid 1's end, and this process.
            if cfg.cgroups.freezer.is_some() {
                let _ = cfg.cgroups.freeze(false);
            }
            reap(pid);
        }
        finish(&cfg);
    }
    0
}

/// What `run` ends with: the jail's report, whether the launcher is gone,
/// and the jail's pid 1 when it was still ending at the report (to be
/// reaped).
type Ran = (JailReport, Launcher, Option<libc::pid_t>);

/// Whether the launcher stayed for the whole run, and if not, how it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launcher {
    Stayed,
    Died,
    /// It called the run off itself (`protocol::CALL_OFF`).
    CalledOff,
}

/// A run whose set-up failed (the launcher still there, nothing to reap).
fn setup_failed(failure: SetupFailure) -> Ran {
    let report = JailReport {
        outcome: Outcome::SetupFailed { failure },
        peak_memory_bytes: None,
        peak_pids: None,
        oom_killed: false,
        landlock: None,
    };
    (report, Launcher::Stayed, None)
}

fn run(
    cfg: &HelperConfig,
    net: io::Result<bool>,
    exec_chan: Option<OwnedFd>,
    prompt_chan: Option<OwnedFd>,
    proxy_chan: Option<OwnedFd>,
    etc_chan: Option<OwnedFd>,
) -> Ran {
    let blocked = init::signal_set(FORWARDED.iter().copied().chain([libc::SIGCHLD, libc::SIGWINCH]));
    // SAFETY: blocking signals for this single-threaded process; signalfd gets a valid set.
    let sigfd = unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut());
        libc::signalfd(-1, &blocked, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if sigfd < 0 {
        return setup_failed(SetupFailure::new(Step::CloneNamespaces, "signalfd", &io::Error::last_os_error()));
    }
    // SAFETY: signalfd returned a fresh descriptor.
    let sigfd = unsafe { OwnedFd::from_raw_fd(sigfd) };
    let net_ready = match net {
        Ok(made) => made,
        Err(e) => return setup_failed(SetupFailure::new(Step::CloneNamespaces, "the jail's network namespace", &e)),
    };

    // SAFETY: getters without preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (console_h, console_i) = match sys::seqpacket_pair() {
        Ok(p) => p,
        Err(e) => return setup_failed(SetupFailure::new(Step::Terminal, "socketpair", &e)),
    };
    let deferred_idmap = euid == 0 && idmap::idmap_expected(&cfg.spec.workspace);
    let gate_trees = match cfg.gate.as_ref().filter(|_| euid == 0).map(crate::shims::clone_trees).transpose() {
        Ok(t) => t,
        Err(f) => return setup_failed(f),
    };
    let prepared = if deferred_idmap {
        let agent = idmap::agent_host_id();
        Ok((WorkspaceMount::Deferred(console_i.as_raw_fd()), IdMaps::privileged(agent, agent)))
    } else if euid == 0 {
        idmap::prepare_workspace_as_root(&cfg.spec.workspace)
    } else {
        Ok((WorkspaceMount::Bind(cfg.spec.workspace.clone()), IdMaps::unprivileged(euid, egid)))
    };
    let (workspace, maps) = match prepared {
        Ok(p) => p,
        Err(f) => return setup_failed(f),
    };
    let pipes = sys::pipe().and_then(|go| sys::pipe().map(|st| (go, st)));
    let ((go_r, go_w), (status_r, status_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return setup_failed(SetupFailure::new(Step::CloneNamespaces, "pipe", &e)),
    };
    // Gated runs: the helper plans what the shim covers while init builds
    // the root, and sends it here.
    let coverage = match cfg.gate.as_ref().map(|_| sys::pipe()).transpose() {
        Ok(p) => p,
        Err(e) => return setup_failed(SetupFailure::new(Step::CloneNamespaces, "pipe", &e)),
    };
    let (coverage_r, coverage_w) = coverage.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    // The agent blocks on this pipe right before exec until the launcher
    // says its start event is on disk (set-up overlaps the fsync).
    let (gate_r, gate_w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => return setup_failed(SetupFailure::new(Step::CloneNamespaces, "pipe", &e)),
    };

    // Init is born in the run's cgroups, so no process ever migrates (a
    // migration waits out an RCU grace period): cloned from inside the v1
    // ones (see `CgroupSet::visit_v1`) and, on v2, straight into its
    // directory (clone3's CLONE_INTO_CGROUP). Whatever fails here is made
    // up for after the clone, the slow way.
    let visit = cfg.cgroups.visit_v1().ok();
    let v2 = cfg.cgroups.v2_dir().and_then(|d| sys::open_path(d, libc::O_PATH | libc::O_DIRECTORY).ok());
    let ns_flags = (if net_ready { NS_FLAGS & !libc::CLONE_NEWNET } else { NS_FLAGS }) as libc::c_ulong;
    let clone_plain = || {
        // SAFETY: the helper is single-threaded (it never starts a thread).
        unsafe { sys::clone_fork(ns_flags) }
    };
    let (cloned, born_in_v2) = match &v2 {
        // SAFETY: as above; the descriptor is open.
        Some(fd) => match unsafe { sys::clone_into_cgroup(ns_flags, fd.as_raw_fd()) } {
            Ok(p) => (Ok(p), true),
            Err(_) => (clone_plain(), false),
        },
        None => (clone_plain(), false),
    };
    drop(v2);
    let came_back = match visit {
        Some(v) if !matches!(cloned, Ok(0)) => Some(v.leave()),
        // The child stays: it is the jail's init.
        _ => None,
    };
    let pid = match cloned {
        Ok(p) => p,
        Err(e) => return setup_failed(SetupFailure::new(Step::CloneNamespaces, "clone", &e)),
    };
    if pid == 0 {
        drop((go_w, status_r, sigfd, console_h, gate_w, prompt_chan, coverage_w));
        // SAFETY: closing the launcher's descriptors in the child; they are not used there.
        unsafe {
            libc::close(CONFIG_FD);
            libc::close(REPORT_FD);
        }
        init::run(
            InitArgs {
                cfg,
                has_root: maps.has_root,
                can_setgroups: !maps.deny_setgroups,
                go: go_r,
                workspace,
                console: console_i,
                exec_gate: gate_r,
                exec_chan,
                gate_trees,
                coverage: coverage_r,
                proxy_chan,
                net_ready,
                etc_chan,
            },
            status_w,
        );
    }
    drop((go_r, status_w, workspace, console_i, gate_r, exec_chan, gate_trees, proxy_chan, coverage_r, etc_chan));

    // Set-up failed after the clone: the jail dies, nothing is left.
    let kill_jail = || {
        // SAFETY: pid is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reap(pid);
        finish(cfg);
    };
    let abort = |f: SetupFailure| {
        kill_jail();
        setup_failed(f)
    };
    if let Some(Err(e)) = &came_back {
        // Still inside the run's cgroups, the helper would be killed with
        // the jail and keep its cgroups from being removed.
        return abort(SetupFailure::new(Step::JoinCgroup, "leaving the run's cgroups", e));
    }
    if let Err(f) = maps.write(pid) {
        return abort(f);
    }
    let _ = sys::write_all(go_w.as_raw_fd(), b"g");
    // Planned here, beside init's first steps of the root, and from the
    // same directories the root binds: see
    // `shims::plan`. A write that fails means init is gone; its own
    // report says why.
    if let (Some(g), Some(w)) = (&cfg.gate, coverage_w) {
        let source = cfg.spec.rootfs.clone().map_or(RootSource::Host, RootSource::Tree);
        // The plan kept from an earlier run, for the host's root only
        // (read as ourselves: the state dir is the caller's).
        let cache = cfg.plan_cache.as_deref().filter(|_| matches!(source, RootSource::Host));
        let exe = cache.and_then(|_| KeptPlan::this_exe());
        let kept = cache.and_then(|d| KeptPlan::read(d, &g.commands, exe));
        // With the file-system identity of the jail's root (which init
        // would have looked with), not the host root's: the plan holds
        // nothing the jail could not reach.
        let as_jail_root = match maps.has_root.then(idmap::FsIdentity::jail_root).transpose() {
            Ok(id) => id,
            Err(e) => return abort(SetupFailure::new(Step::SetIds, "the jail root's file-system ids (to plan the gated commands)", &e)),
        };
        let in_jail = |rel: &std::path::Path| source.in_jail(rel);
        let (cov, to_keep) = match (kept.and_then(KeptPlan::check), cache) {
            (Some(cov), _) => (cov, None),
            (None, Some(_)) => KeptPlan::plan(source.dir(), &g.commands, in_jail, crate::etc_cache::FRESH, exe),
            (None, None) => (crate::shims::plan(source.dir(), &g.commands, in_jail), None),
        };
        drop(as_jail_root);
        let _ = crate::protocol::write_frame(w.as_raw_fd(), &cov);
        // Kept after init has it: off its path.
        if let (Some(dir), Some(k)) = (cache, to_keep) {
            let _ = k.write(dir);
        }
    }
    // Built while init sets up; init waits for it only when it attaches
    // /workspace.
    if deferred_idmap {
        let sent = idmap::idmapped_tree(&cfg.spec.workspace).and_then(|tree| {
            pty::send_fd(console_h.as_raw_fd(), tree.as_raw_fd()).map_err(|e| SetupFailure::new(Step::IdmapMount, "workspace socket", &e))
        });
        if let Err(f) = sent {
            // Init may have failed first (that is why the socket is closed):
            // its own report names the real cause.
            kill_jail();
            let msgs = parse_msgs(&sys::read_to_end(status_r.as_raw_fd()).unwrap_or_default());
            let first = msgs.into_iter().find_map(|m| match m {
                ChildMsg::Setup { failure } => Some(failure),
                _ => None,
            });
            return setup_failed(first.unwrap_or(f));
        }
    }
    // Joined while init builds the root: a process migration waits out an
    // RCU grace period (about 7 ms here). Init forks nothing (and enters no
    // cgroup namespace) before the second byte on the go pipe says it is in.
    if let Err(e) = cfg.cgroups.join(pid, came_back.is_none(), !born_in_v2) {
        return abort(SetupFailure::new(Step::JoinCgroup, "cgroup.procs", &e));
    }
    let _ = sys::write_all(go_w.as_raw_fd(), b"j");
    drop(go_w);
    // Compiled while init builds the root; sent with the exec gate.
    let filters = match seccomp::compile_encoded() {
        Ok(f) => f,
        Err(e) => {
            return abort(SetupFailure::msg(Step::Seccomp, "compile", e.to_string()));
        }
    };
    let mut gate_msg = (filters.len() as u32).to_le_bytes().to_vec();
    gate_msg.extend_from_slice(&filters);
    // Init sends the jail's pty master once its /dev is built; None means
    // set-up failed first, which the status pipe reports.
    let relay = cfg.tty.and_then(|_| pty::recv_fd(console_h.as_raw_fd()).ok().flatten()).map(|m| pty::Relay::new(m, prompt_chan));
    drop(console_h);

    let mon = monitor(cfg, pid, sigfd.as_raw_fd(), status_r.as_raw_fd(), relay, Some((gate_w, gate_msg)));
    let mut msgs = mon.msgs;
    if !mon.init_running {
        msgs.extend(parse_msgs(&sys::read_to_end(status_r.as_raw_fd()).unwrap_or_default()));
    }
    let report = JailReport {
        outcome: outcome(&msgs, mon.timed_out, mon.wait_status),
        peak_memory_bytes: cfg.cgroups.peak_memory(),
        peak_pids: cfg.cgroups.peak_pids(),
        oom_killed: cfg.cgroups.oom_killed(),
        landlock: msgs.iter().find_map(|m| match m {
            ChildMsg::Landlock { status } => Some(status.clone()),
            _ => None,
        }),
    };
    let launcher = match (mon.parent_gone, mon.called_off) {
        (false, _) => Launcher::Stayed,
        (true, false) => Launcher::Died,
        (true, true) => Launcher::CalledOff,
    };
    (report, launcher, mon.init_running.then_some(pid))
}

/// Nothing outlives the run: kill stragglers, remove the cgroups.
fn finish(cfg: &HelperConfig) {
    let _ = cfg.cgroups.remove();
}

/// Says what the jail ran as well as how it ended: a launcher killed
/// between sending the config and writing its start event leaves no
/// `run.start` for this run, and the abort must then stand on its own.
fn record_abort(cfg: &HelperConfig, report: &JailReport) {
    let Some(path) = &cfg.audit_path else { return };
    if let Ok(log) = clawkeep_audit::AuditLog::open(path) {
        let _ = log.append(
            "run.abort",
            serde_json::json!({
                "run_id": cfg.spec.run_id,
                "argv": cfg.spec.argv,
                "workspace": cfg.spec.workspace,
                "reason": "the launcher died; the jail was killed and its cgroups removed",
                "peak_memory_bytes": report.peak_memory_bytes,
                "peak_pids": report.peak_pids,
            }),
        );
    }
}
