//! The jail's executor: runs commands the gate approved *inside* the jail.
//!
//! Init forks it when the first job arrives (a run that gates nothing never
//! has one), and it keeps five of init's capabilities
//! inside the jail's user namespace (never more than the jail's root; its
//! only input is the launcher's channel, it is non-dumpable, and with a
//! root caller it is not the agent's uid). Each job gets a *runner*
//! process, forked from here, which unshares a mount namespace of its own
//! and uncovers there the real binary of the job's own command (and only
//! that command: every other gated command stays the shim, so whatever the
//! approved command starts — an npm script, a build script, git's fsmonitor
//! hook — reaches the gate again). The command's own child then takes
//! exactly the agent's restrictions (uid 1000, no capabilities,
//! no_new_privs, landlock, seccomp) before it execs.
//!
//! The runner keeps the executor's privilege, so the agent cannot stop or
//! kill it. It starts the command in its own process group with the shim's
//! stdin, relays its stdout/stderr to the shim's descriptors while counting
//! bytes, forwards signals, enforces the rule's timeout, kills whatever
//! the command left behind (it is a subreaper) and reports one outcome. A
//! slow reader therefore stalls only its own runner.

use crate::error::{SetupFailure, Step};
use crate::shims::Mask;
use crate::{caps, init, seccomp, sys};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Launcher → executor. `Run` carries the shim's stdin, stdout, stderr.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToExec {
    Run {
        id: u64,
        command: String,
        args: Vec<String>,
        cwd: String,
        env: Vec<(String, String)>,
        timeout_ms: Option<u64>,
        relay: bool,
    },
    Signal {
        id: u64,
        signal: i32,
    },
    /// The command may exec now (the gate's decision record is durable);
    /// until then it waits, set up, just before execve.
    Release {
        id: u64,
    },
}

/// Executor → launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromExec {
    Started { id: u64 },
    Failed { id: u64, message: String },
    Exited { id: u64, code: Option<i32>, signal: Option<i32>, timed_out: bool, bytes_out: Option<u64> },
}

/// What the executor reports for one job, as its runner saw it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct RunnerReport {
    code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    bytes_out: Option<u64>,
}

const MAX_PACKET: usize = 256 * 1024;

/// What a runner needs: a mount namespace of its own (SYS_ADMIN), the
/// agent's ids and an empty bounding set for the command (SETUID, SETGID,
/// SETPCAP), and signals to the command, which runs as the agent (KILL).
pub const EXECUTOR_CAPS: [u32; 5] = [caps::CAP_KILL, caps::CAP_SETGID, caps::CAP_SETUID, caps::CAP_SETPCAP, caps::CAP_SYS_ADMIN];

/// Never returns. `masks` are what the shim covers in the agent's mount
/// namespace; `path` is the agent's PATH without the shims directory.
///
/// Nothing costly happens at jail start-up: the seccomp program is compiled
/// at the first request, and each job's mount namespace is made (and torn
/// down) by its own runner, off every run's start and exit.
pub fn run(chan: OwnedFd, masks: Vec<Mask>, path: String, can_setgroups: bool, landlock_on: bool) -> ! {
    set_name(c"clawkeep-exec");
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    // If the others cannot be dropped, every job is refused (by `prepare`).
    let refused = caps::keep_only(&EXECUTOR_CAPS).err().map(|e| format!("it could not drop its other capabilities: {e}"));
    let confine = Confine { masks, can_setgroups, landlock_on, refused, filters: std::cell::OnceCell::new() };
    serve(chan, &path, &confine);
    // SAFETY: _exit in a forked child.
    unsafe { libc::_exit(0) }
}

/// How a runner takes the agent's restrictions for its job.
struct Confine {
    masks: Vec<Mask>,
    can_setgroups: bool,
    landlock_on: bool,
    /// Why no job may run: the executor kept what it must not.
    refused: Option<String>,
    /// The encoded seccomp program, compiled once, at the first job.
    filters: std::cell::OnceCell<Vec<u8>>,
}

impl Confine {
    /// Compiles what every runner installs; before the first fork.
    fn prepare(&self) -> Result<(), String> {
        if let Some(why) = &self.refused {
            return Err(why.clone());
        }
        if self.filters.get().is_none() {
            let f = seccomp::compile_encoded().map_err(|e| e.to_string())?;
            let _ = self.filters.set(f);
        }
        Ok(())
    }

    /// In the runner: a mount namespace where `command`'s own masks (and
    /// no other) are lifted: hidden directories first, then the files (a
    /// covered file may sit in a hidden directory).
    fn isolate(&self, command: &str) -> Result<(), String> {
        // SAFETY: unshare of a mount namespace; we hold CAP_SYS_ADMIN in the jail's user namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } < 0 {
            return Err(SetupFailure::new(Step::MountPrivate, "job mount namespace", &io::Error::last_os_error()).to_string());
        }
        let own = |dir: bool| self.masks.iter().filter(move |m| m.dir == dir && m.commands.contains(command));
        for m in own(true).chain(own(false)) {
            let c = sys::cpath(&m.path).map_err(|e| e.to_string())?;
            sys::umount_detach(&c).map_err(|e| SetupFailure::new(Step::UmountOldRoot, m.path.display().to_string(), &e).to_string())?;
        }
        Ok(())
    }

    /// In the command's child, before exec: exactly the agent's
    /// restrictions. The runner itself keeps the executor's privilege, so
    /// the agent can neither stop it (and its timeout) nor kill it.
    fn drop_privileges(&self) -> Result<(), String> {
        caps::drop_to_agent(self.can_setgroups).map_err(|f| f.to_string())?;
        let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
        if self.landlock_on {
            crate::landlock::apply()?;
        }
        seccomp::install_encoded(self.filters.get().ok_or("the seccomp program was not compiled")?)
    }
}

fn set_name(name: &std::ffi::CStr) {
    let _ = sys::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong);
}

fn send(fd: RawFd, msg: &FromExec) {
    if let Ok(bytes) = serde_json::to_vec(msg) {
        // SAFETY: bytes is valid for its length; one packet per message.
        unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
    }
}

struct Job {
    runner: libc::pid_t,
    report: OwnedFd,
    release: Option<OwnedFd>,
}

fn serve(chan: OwnedFd, path: &str, confine: &Confine) {
    let fd = chan.as_raw_fd();
    // SIGCHLD stays blocked (inherited from init's mask) and is drained by
    // waitpid whenever a report arrives; runners report before they exit.
    let mut jobs: HashMap<u64, Job> = HashMap::new();
    let mut buf = vec![0u8; MAX_PACKET];
    // Runners that reported and are exiting, not yet reaped.
    let mut exited: Vec<libc::pid_t> = Vec::new();
    loop {
        // SAFETY: reaping our own runners, without waiting.
        exited.retain(|r| unsafe { libc::waitpid(*r, std::ptr::null_mut(), libc::WNOHANG) } == 0);
        let mut pfds = vec![libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
        let ids: Vec<u64> = jobs.keys().copied().collect();
        pfds.extend(ids.iter().map(|id| libc::pollfd { fd: jobs[id].report.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        // SAFETY: pfds is a valid array.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) } < 0 {
            continue;
        }
        for (i, id) in ids.iter().enumerate() {
            if pfds[i + 1].revents == 0 {
                continue;
            }
            if let Some(job) = jobs.remove(id) {
                let mut raw = [0u8; 512];
                let n = sys::read_some(job.report.as_raw_fd(), &mut raw).unwrap_or(0);
                let report: Option<RunnerReport> = serde_json::from_slice(&raw[..n]).ok();
                let msg = match report {
                    Some(r) => FromExec::Exited { id: *id, code: r.code, signal: r.signal, timed_out: r.timed_out, bytes_out: r.bytes_out },
                    None => FromExec::Failed { id: *id, message: "the command's runner died".into() },
                };
                // The outcome first: the runner's exit (its mount namespace
                // torn down) is reaped later, off the shim's wait.
                send(fd, &msg);
                exited.push(job.runner);
            }
        }
        if pfds[0].revents == 0 {
            continue;
        }
        let (n, fds) = match clawkeep_shim::fdpass::recv_with_fds(fd, &mut buf) {
            Ok(x) => x,
            Err(_) => return,
        };
        if n == 0 {
            return; // the launcher is gone
        }
        match serde_json::from_slice::<ToExec>(&buf[..n]) {
            Ok(ToExec::Release { id }) => {
                if let Some(r) = jobs.get_mut(&id).and_then(|j| j.release.take()) {
                    let _ = sys::write_all(r.as_raw_fd(), b"x");
                }
            }
            Ok(ToExec::Signal { id, signal }) => {
                if let Some(job) = jobs.get(&id) {
                    // SAFETY: signalling our own runner, which forwards it.
                    unsafe { libc::kill(job.runner, signal) };
                }
            }
            Ok(ToExec::Run { id, command, args, cwd, env, timeout_ms, relay }) => {
                if let Err(e) = confine.prepare() {
                    send(fd, &FromExec::Failed { id, message: format!("the executor cannot confine a job: {e}") });
                    continue;
                }
                if fds.len() != 3 {
                    send(fd, &FromExec::Failed { id, message: "expected stdin, stdout and stderr descriptors".into() });
                    continue;
                }
                match start(&command, &args, &cwd, &env, path, timeout_ms, relay, &fds, confine) {
                    Ok(job) => {
                        jobs.insert(id, job);
                        send(fd, &FromExec::Started { id });
                    }
                    Err(message) => send(fd, &FromExec::Failed { id, message }),
                }
            }
            Err(e) => send(fd, &FromExec::Failed { id: 0, message: format!("bad request: {e}") }),
        }
    }
}

fn resolve(command: &str, path: &str) -> Option<String> {
    if command.contains('/') {
        return Some(command.to_string());
    }
    path.split(':').filter(|d| !d.is_empty()).map(|d| format!("{d}/{command}")).find(|p| {
        let Ok(c) = CString::new(p.as_str()) else { return false };
        // SAFETY: c is a valid C string.
        unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
    })
}

#[allow(clippy::too_many_arguments)]
fn start(
    command: &str,
    args: &[String],
    cwd: &str,
    env: &[(String, String)],
    path: &str,
    timeout_ms: Option<u64>,
    relay: bool,
    fds: &[OwnedFd],
    confine: &Confine,
) -> Result<Job, String> {
    let exe = resolve(command, path).ok_or_else(|| format!("{command}: command not found in the jail"))?;
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("{command}: argument contains a NUL byte"));
    let exe_c = cstr(&exe)?;
    let mut argv: Vec<CString> = vec![cstr(command)?];
    for a in args {
        argv.push(cstr(a)?);
    }
    let envp: Vec<CString> = env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect::<Result<_, _>>()?;
    let cwd_c = cstr(cwd)?;
    let (report_r, report_w) = sys::pipe().map_err(|e| e.to_string())?;
    let (hold_r, hold_w) = sys::pipe().map_err(|e| e.to_string())?;
    // SAFETY: the executor is single-threaded; the runner only makes syscalls.
    let runner = unsafe { libc::fork() };
    if runner < 0 {
        return Err(io::Error::last_os_error().to_string());
    }
    if runner == 0 {
        drop((report_r, hold_w));
        // Nothing of the executor's stays open here: its channel, and other
        // jobs' descriptors (whose end of file means "never run").
        let keep = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd(), hold_r.as_raw_fd(), report_w.as_raw_fd()];
        sys::close_all_but(&keep);
        if let Err(e) = confine.isolate(command) {
            let msg = format!("clawkeep: {command}: the approved command could not be confined: {e}\n");
            let _ = sys::write_all(fds[2].as_raw_fd(), msg.as_bytes());
            // SAFETY: _exit in a forked child; no report means "the runner died".
            unsafe { libc::_exit(1) };
        }
        let spec = Spawn {
            confine,
            hold: hold_r.as_raw_fd(),
            exe: &exe_c,
            argv: &argv,
            envp: &envp,
            cwd: &cwd_c,
            stdio: [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()],
        };
        let report = runner_main(&spec, timeout_ms.map(Duration::from_millis), relay);
        if let Ok(bytes) = serde_json::to_vec(&report) {
            let _ = sys::write_all(report_w.as_raw_fd(), &bytes);
        }
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(0) };
    }
    drop(hold_r);
    Ok(Job { runner, report: report_r, release: Some(hold_w) })
}

struct Spawn<'a> {
    confine: &'a Confine,
    /// Read before execve: one byte means go, end of file means never.
    hold: RawFd,
    exe: &'a CString,
    argv: &'a [CString],
    envp: &'a [CString],
    cwd: &'a CString,
    stdio: [RawFd; 3],
}

/// The per-job runner: starts the command, relays, forwards, times out.
fn runner_main(s: &Spawn<'_>, timeout: Option<Duration>, relay: bool) -> RunnerReport {
    let sigs = init::signal_set(crate::init::FORWARDED.iter().copied().chain([libc::SIGCHLD]));
    // SAFETY: signalfd on a valid set; the set is already blocked (inherited).
    let sigfd = unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &sigs, std::ptr::null_mut());
        libc::signalfd(-1, &sigs, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    // Whatever the command leaves behind when it exits (a daemon that left
    // its process group too) is reparented here, and killed at the end.
    let _ = sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    let pipes = if relay { Some((sys::pipe().ok(), sys::pipe().ok())) } else { None };
    let (out, err) = match pipes {
        Some((Some(o), Some(e))) => (Some(o), Some(e)),
        _ => (None, None),
    };
    let child_out = out.as_ref().map_or(s.stdio[1], |(_, w)| w.as_raw_fd());
    let child_err = err.as_ref().map_or(s.stdio[2], |(_, w)| w.as_raw_fd());
    // SAFETY: the runner is single-threaded; the child only makes syscalls and execs.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain syscalls in the child before execve.
        unsafe {
            libc::setpgid(0, 0);
            libc::dup2(s.stdio[0], 0);
            libc::dup2(child_out, 1);
            libc::dup2(child_err, 2);
            let empty = init::signal_set(std::iter::empty());
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if let Err(e) = s.confine.drop_privileges() {
                let msg = format!("clawkeep: {}: the approved command could not be confined: {e}\n", s.exe.to_string_lossy());
                let _ = sys::write_all(2, msg.as_bytes());
                libc::_exit(126);
            }
            // After the uid change, which clears it: dies with its runner.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            let mut go = [0u8; 1];
            if sys::read_some(s.hold, &mut go).unwrap_or(0) != 1 {
                libc::_exit(126);
            }
            libc::close(s.hold);
            if libc::chdir(s.cwd.as_ptr()) < 0 {
                let msg = format!("clawkeep: cannot enter {}: {}\n", s.cwd.to_string_lossy(), io::Error::last_os_error());
                let _ = sys::write_all(2, msg.as_bytes());
                libc::_exit(126);
            }
            // The policy judged the directory by its name: the command runs
            // only where that name really is (no symlink, no `..` on the way),
            // as the shim, which sends getcwd(), always asks.
            let mut here = [0u8; 4096];
            let real = !libc::getcwd(here.as_mut_ptr().cast(), here.len()).is_null()
                && std::ffi::CStr::from_ptr(here.as_ptr().cast()) == s.cwd.as_c_str();
            if !real {
                let msg = format!(
                    "clawkeep: {} is not the real path of a directory (a symlink or `..` in it); nothing was run\n",
                    s.cwd.to_string_lossy()
                );
                let _ = sys::write_all(2, msg.as_bytes());
                libc::_exit(126);
            }
            let mut argv: Vec<*const libc::c_char> = s.argv.iter().map(|a| a.as_ptr()).collect();
            argv.push(std::ptr::null());
            let mut envp: Vec<*const libc::c_char> = s.envp.iter().map(|a| a.as_ptr()).collect();
            envp.push(std::ptr::null());
            libc::execve(s.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let e = io::Error::last_os_error();
            let msg = format!("clawkeep: {}: {e}\n", s.exe.to_string_lossy());
            let _ = sys::write_all(2, msg.as_bytes());
            libc::_exit(if e.raw_os_error() == Some(libc::ENOENT) { 127 } else { 126 });
        }
    }
    // Only the child keeps the write ends.
    let mut sources: Vec<(OwnedFd, RawFd)> = Vec::new();
    if let (Some((or, ow)), Some((er, ew))) = (out, err) {
        drop((ow, ew));
        sources.push((or, s.stdio[1]));
        sources.push((er, s.stdio[2]));
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut bytes: u64 = 0;
    let mut timed_out = false;
    let mut status: Option<i32> = None;
    let mut buf = [0u8; 16384];
    while status.is_none() || !sources.is_empty() {
        let mut pfds: Vec<libc::pollfd> =
            sources.iter().map(|(r, _)| libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        pfds.push(libc::pollfd { fd: sigfd, events: libc::POLLIN, revents: 0 });
        let wait = match (deadline, timed_out) {
            (Some(d), false) => d.saturating_duration_since(Instant::now()).as_millis().min(60_000) as i32,
            _ if status.is_some() => 100, // child gone: drain what its children still write, briefly
            _ => -1,
        };
        // SAFETY: pfds is a valid array.
        let ready = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait) };
        if ready == 0 && status.is_some() {
            break;
        }
        let mut closed = Vec::new();
        for (i, (r, dst)) in sources.iter().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            match sys::read_some(r.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => closed.push(i),
                Ok(n) => {
                    bytes += n as u64;
                    let _ = sys::write_all(*dst, &buf[..n]);
                }
            }
        }
        for i in closed.into_iter().rev() {
            sources.remove(i);
        }
        if pfds.last().is_some_and(|p| p.revents != 0) {
            loop {
                // SAFETY: signalfd_siginfo is plain data.
                let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                // SAFETY: info is valid for its size.
                let n = unsafe {
                    libc::read(sigfd, (&mut info as *mut libc::signalfd_siginfo).cast(), std::mem::size_of::<libc::signalfd_siginfo>())
                };
                if n <= 0 {
                    break;
                }
                if info.ssi_signo as i32 != libc::SIGCHLD {
                    // SAFETY: the command's process group is ours.
                    unsafe { libc::kill(-pid, info.ssi_signo as i32) };
                }
            }
            let mut st = 0;
            // SAFETY: reaping our own child.
            if status.is_none() && unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
                status = Some(st);
            }
        }
        if let (Some(d), false, None) = (deadline, timed_out, status) {
            if Instant::now() >= d {
                timed_out = true;
                // SAFETY: as above.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
    }
    let st = status.unwrap_or(0);
    // Whatever the command left running, in its group or not, ends with it.
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    kill_descendants();
    RunnerReport {
        code: libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st)),
        signal: libc::WIFSIGNALED(st).then(|| libc::WTERMSIG(st)),
        timed_out,
        bytes_out: relay.then_some(bytes),
    }
}

/// Kills and reaps every process left under the runner (a subreaper):
/// each one killed hands its own children to the runner, so the loop goes
/// until none is left (bounded, and the jail's pids limit bounds a race).
fn kill_descendants() {
    for _ in 0..1000 {
        // SAFETY: getpid has no preconditions; the runner is single-threaded.
        let me = unsafe { libc::getpid() };
        let kids = std::fs::read_to_string(format!("/proc/self/task/{me}/children")).unwrap_or_default();
        let kids: Vec<libc::pid_t> = kids.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if kids.is_empty() {
            return;
        }
        for k in kids {
            // SAFETY: k is our child: killing and reaping it.
            unsafe {
                libc::kill(k, libc::SIGKILL);
                libc::waitpid(k, std::ptr::null_mut(), 0);
            }
        }
    }
}
