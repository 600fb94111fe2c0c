//! The jail's pid 1.
//!
//! It finishes set-up from inside the new namespaces (cgroup namespace,
//! mounts, hostname, loopback), starts the agent as pid 2, drops its own
//! privileges to the agent's (in a gated run: once it has forked the
//! executor, at the first job; see `Pending`), and then only forwards
//! signals to the agent and reaps. When the agent exits, init exits with the agent's status and
//! the kernel kills whatever the agent left behind in the pid namespace.

use crate::error::{SetupFailure, Step};
use crate::idmap::WorkspaceMount;
use crate::mounts::{self, RootSource};
use crate::protocol::{ChildMsg, HelperConfig};
use crate::{caps, exec, exec_server, net, pty, sys};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Signals init forwards to the agent; blocked in the helper before clone so
/// init receives them synchronously (sigwaitinfo, or a signalfd while the
/// executor is pending).
pub const FORWARDED: &[libc::c_int] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

#[derive(Debug)]
pub struct InitArgs<'a> {
    pub cfg: &'a HelperConfig,
    pub has_root: bool,
    pub can_setgroups: bool,
    pub go: OwnedFd,
    pub workspace: WorkspaceMount,
    /// Where the pty master goes to the helper (when `cfg.tty` is set).
    pub console: OwnedFd,
    /// The agent reads one byte here before exec (see `Launched::proceed`).
    pub exec_gate: OwnedFd,
    /// The executor's channel to the launcher (gated runs only).
    pub exec_chan: Option<OwnedFd>,
    /// Detached mounts of the shim and the gate socket (root callers).
    pub gate_trees: Option<(OwnedFd, OwnedFd)>,
    /// Where the helper sends what the shim must cover (gated runs only).
    pub coverage: Option<OwnedFd>,
    /// Where the proxy's listening socket goes (proxied runs only).
    pub proxy_chan: Option<OwnedFd>,
    /// Born in the network namespace the helper made and entered,
    /// loopback up (root only); else init brings up the loopback of its
    /// own, new one.
    pub net_ready: bool,
    /// Where the launcher sends the default root's /etc, made outside
    /// (root callers without --rootfs; see `mounts::PreparedEtc`).
    pub etc_chan: Option<OwnedFd>,
}

/// Never returns: exits with the agent's status (128+signal when killed).
/// `status` carries set-up failures and the agent's exit to the helper.
pub fn run(args: InitArgs<'_>, status: OwnedFd) -> ! {
    let status_fd = status.as_raw_fd();
    let code = match setup_and_supervise(args, status_fd) {
        Ok(code) => code,
        Err(failure) => {
            ChildMsg::Setup { failure }.send(status_fd);
            1
        }
    };
    // SAFETY: _exit skips destructors, which is what a forked child wants.
    unsafe { libc::_exit(code) }
}

fn setup_and_supervise(args: InitArgs<'_>, status_fd: i32) -> Result<i32, SetupFailure> {
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        .map_err(|e| SetupFailure::new(Step::CloneNamespaces, "pdeathsig", &e))?;
    // The helper writes our id maps and joins us to the cgroups, then says go.
    // End of file instead means the helper died: stop here.
    let mut b = [0u8; 1];
    if sys::read_some(args.go.as_raw_fd(), &mut b).unwrap_or(0) == 0 {
        // SAFETY: see run().
        unsafe { libc::_exit(1) };
    }
    if args.has_root {
        // SAFETY: id syscalls; the maps make 0 valid in this namespace.
        if unsafe { libc::setresgid(0, 0, 0) } < 0 || unsafe { libc::setresuid(0, 0, 0) } < 0 {
            return Err(SetupFailure::new(Step::SetIds, "inside root", &io::Error::last_os_error()));
        }
    }
    set_name(c"clawkeep-init");
    // A session of our own, with no controlling terminal: nothing in the
    // jail (the agent without a jail pty, the executor's commands) can
    // open the operator's terminal as /dev/tty or take its foreground.
    // Terminal signals reach the agent through the helper's forwarding.
    // SAFETY: setsid has no preconditions; init leads no process group.
    if unsafe { libc::setsid() } < 0 {
        return Err(SetupFailure::new(Step::Terminal, "setsid", &io::Error::last_os_error()));
    }

    let spec = &args.cfg.spec;
    let source = spec.rootfs.clone().map_or(RootSource::Host, RootSource::Tree);
    // The root is built with the modes it names, whatever the caller's
    // umask (under 077 the agent could not read /etc/passwd); the agent
    // and the executor get the caller's back.
    // SAFETY: umask has no preconditions; init is single-threaded.
    let caller_umask = unsafe { libc::umask(0) };
    let masks = mounts::build_root(
        &source,
        args.workspace,
        spec.limits.memory_bytes,
        args.cfg.gate.as_ref(),
        args.gate_trees,
        args.coverage,
        args.etc_chan,
    )?;
    // SAFETY: as above.
    unsafe { libc::umask(caller_umask) };
    // SAFETY: the name is a valid buffer of the given length.
    if unsafe { libc::sethostname(c"clawkeep".as_ptr(), 8) } < 0 {
        return Err(SetupFailure::new(Step::Hostname, "clawkeep", &io::Error::last_os_error()));
    }
    if !args.net_ready {
        net::loopback_up().map_err(|e| SetupFailure::new(Step::Loopback, "lo", &e))?;
    }
    if let (Some(port), Some(chan)) = (args.cfg.proxy_port, args.proxy_chan) {
        // Listening before the agent exists: its first request waits in the
        // backlog until the host accepts.
        let listener = net::listen_loopback(port).map_err(|e| SetupFailure::new(Step::Loopback, "proxy listener", &e))?;
        pty::send_fd(chan.as_raw_fd(), listener.as_raw_fd()).map_err(|e| SetupFailure::new(Step::Loopback, "proxy socket", &e))?;
    }

    // The helper moves us into the run's cgroups while we built the root;
    // nothing is forked, and the cgroup namespace (rooted where we are) is
    // not entered, before it says we are in. End of file: it died.
    if sys::read_some(args.go.as_raw_fd(), &mut b).unwrap_or(0) == 0 {
        // SAFETY: see run().
        unsafe { libc::_exit(1) };
    }
    drop(args.go);
    // SAFETY: unshare with a namespace flag has no memory-safety preconditions.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
        return Err(SetupFailure::new(Step::UnshareCgroup, "cgroup namespace", &io::Error::last_os_error()));
    }
    let slave = match args.cfg.tty {
        Some(size) => {
            let (master, slave) = pty::open(size).map_err(|e| SetupFailure::new(Step::Terminal, "/dev/ptmx", &e))?;
            pty::send_fd(args.console.as_raw_fd(), master.as_raw_fd())
                .map_err(|e| SetupFailure::new(Step::Terminal, "console socket", &e))?;
            Some(slave)
        }
        None => None,
    };
    drop(args.console);
    // The bounding set the executor and the agent inherit: all but what
    // the executor keeps is dropped once here, not by each (they still
    // drop what is left, so this failing leaves them no less confined).
    let _ = caps::drop_bounding_set(&exec_server::EXECUTOR_CAPS);
    // SAFETY: init is single-threaded; the child execs or _exits.
    let agent = unsafe { libc::fork() };
    if agent < 0 {
        return Err(SetupFailure::new(Step::Exec, "fork", &io::Error::last_os_error()));
    }
    if agent == 0 {
        // The executor's channel is not the agent's, not even until exec.
        drop(args.exec_chan);
        exec::agent_main(args.cfg, status_fd, args.can_setgroups, slave, args.exec_gate);
    }
    drop((slave, args.exec_gate));
    // The jail's pid 1 keeps no handle on the user's terminal either.
    if let Ok(null) = sys::open_path(std::path::Path::new("/dev/null"), libc::O_RDWR) {
        for fd in 0..3 {
            // SAFETY: isatty/dup2 on our own descriptors.
            unsafe {
                if libc::isatty(fd) == 1 {
                    libc::dup2(null.as_raw_fd(), fd);
                }
            }
        }
    }
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    // The executor (it runs approved gated commands) is forked when the
    // first job arrives on its channel: most runs never send one, and a
    // fork, the executor's set-up and its end cost every run ~0.3 ms.
    // Until then init holds exactly the executor's privileges (its uid,
    // its five capabilities: see `exec_server`), no more than the executor
    // held for the whole run before; then it drops to the agent's.
    let pending = match args.exec_chan {
        Some(chan) => {
            if let Err(f) = caps::keep_only(&exec_server::EXECUTOR_CAPS) {
                // SAFETY: agent is our child.
                unsafe { libc::kill(agent, libc::SIGKILL) };
                return Err(f);
            }
            let path = spec.env.iter().find(|(k, _)| k == "PATH").map_or(String::new(), |(_, v)| v.clone());
            let path = path.split(':').filter(|d| *d != clawkeep_shim::JAIL_SHIM_DIR).collect::<Vec<_>>().join(":");
            Some(Pending { chan, masks, path, landlock: args.cfg.landlock })
        }
        None => {
            become_agent(args.can_setgroups, agent)?;
            None
        }
    };
    arm_parent_death(status_fd, agent);
    Ok(supervise(agent, status_fd, pending, args.can_setgroups))
}

/// The executor not forked yet: what it will be given.
struct Pending {
    chan: OwnedFd,
    masks: Vec<crate::shims::Mask>,
    path: String,
    landlock: bool,
}

impl Pending {
    /// Forks the executor (it never returns) and gives up init's
    /// privileges; the channel's data waits for the executor to read it.
    fn start(self, agent: libc::pid_t, can_setgroups: bool) -> Result<(), SetupFailure> {
        // SAFETY: init is single-threaded; the executor never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(SetupFailure::new(Step::Exec, "fork executor", &io::Error::last_os_error()));
        }
        if pid == 0 {
            exec_server::run(self.chan, self.masks, self.path, can_setgroups, self.landlock);
        }
        drop(self.chan);
        become_agent(can_setgroups, agent)
    }
}

/// Init keeps nothing the agent lacks: same uid, no capabilities. On
/// failure the agent is killed (the caller reports why).
fn become_agent(can_setgroups: bool, agent: libc::pid_t) -> Result<(), SetupFailure> {
    caps::drop_to_agent(can_setgroups).inspect_err(|_| {
        // SAFETY: agent is our child.
        unsafe { libc::kill(agent, libc::SIGKILL) };
    })?;
    // The uid change made us dumpable again (commit_creds sets it from
    // fs.suid_dumpable): not dumpable, /proc/1 stays out of the agent's
    // reach.
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    Ok(())
}

/// Every change of our uid (inside root, then the agent's) cleared the
/// parent-death signal (the kernel's commit_creds does): arm it again,
/// then look whether the helper died before it was armed.
fn arm_parent_death(status_fd: i32, agent: libc::pid_t) {
    let armed = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).is_ok();
    if !armed || reader_gone(status_fd) {
        // SAFETY: agent is our child; _exit as in run().
        unsafe {
            libc::kill(agent, libc::SIGKILL);
            libc::_exit(1)
        };
    }
}

/// Whether nobody reads `fd` (a pipe's write end) any more: the helper,
/// which holds the only read end, is gone.
fn reader_gone(fd: i32) -> bool {
    let mut p = libc::pollfd { fd, events: 0, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0 }
}

fn set_name(name: &std::ffi::CStr) {
    let _ = sys::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong);
}

fn supervise(agent: libc::pid_t, status_fd: i32, mut pending: Option<Pending>, can_setgroups: bool) -> i32 {
    let set = signal_set(FORWARDED.iter().copied().chain([libc::SIGCHLD]));
    // While the executor is pending, a job on its channel wakes us too.
    let mut sigfd = pending.as_ref().and_then(|_| {
        // SAFETY: set is initialised; the signals are blocked (see FORWARDED).
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        // SAFETY: a fresh descriptor when non-negative.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    });
    loop {
        let woke = match (&pending, &sigfd) {
            (Some(p), Some(fd)) => next_wake(fd.as_raw_fd(), p.chan.as_raw_fd()),
            // Without a signalfd, nothing would wake us for a job: it
            // starts now, as it would at the first job.
            (Some(_), None) => Wake::Job { data: true },
            // SAFETY: set is initialised; a null info pointer is allowed.
            (None, _) => Wake::Signal(unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) }),
        };
        let sig = match woke {
            Wake::Signal(sig) => sig,
            Wake::Job { data } => {
                // Signals that come meanwhile stay pending for sigwaitinfo;
                // the executor inherits no signalfd.
                sigfd = None;
                if let Some(p) = pending.take() {
                    // Closed with nothing sent: no executor is needed.
                    let started = if data { p.start(agent, can_setgroups) } else { become_agent(can_setgroups, agent) };
                    if let Err(failure) = started {
                        ChildMsg::Setup { failure }.send(status_fd);
                        return 1;
                    }
                    arm_parent_death(status_fd, agent);
                }
                continue;
            }
        };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: agent is our child.
            unsafe { libc::kill(agent, sig) };
            continue;
        }
        loop {
            let mut st = 0;
            // SAFETY: st is a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == agent {
                let (code, signal) =
                    if libc::WIFEXITED(st) { (Some(libc::WEXITSTATUS(st)), None) } else { (None, Some(libc::WTERMSIG(st))) };
                // Whatever the agent left running dies before its exit is
                // told: the helper reports it at once, and the launcher then
                // records it, so nothing the agent started may still reach
                // the gate or the proxy after. (Pid 1's own end would kill
                // them too, a little later.)
                // SAFETY: kill(-1) signals every process of this pid
                // namespace that we may signal, never pid 1 itself.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                ChildMsg::Exit { code, signal }.send(status_fd);
                return code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
            }
        }
    }
}

/// What woke init while the executor was pending.
enum Wake {
    Signal(libc::c_int),
    /// The executor's channel: a job (`data`), or its end closed.
    Job {
        data: bool,
    },
}

/// Waits for a signal on `sigfd` or for `chan` to be readable.
fn next_wake(sigfd: i32, chan: i32) -> Wake {
    let mut fds =
        [libc::pollfd { fd: sigfd, events: libc::POLLIN, revents: 0 }, libc::pollfd { fd: chan, events: libc::POLLIN, revents: 0 }];
    // SAFETY: fds is a valid array of two pollfd; -1 waits without a timeout.
    if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
        return Wake::Signal(-1);
    }
    if fds[0].revents & libc::POLLIN != 0 {
        // SAFETY: signalfd_siginfo is plain data, read whole or not at all.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: info is valid for `size` bytes.
        let n = unsafe { libc::read(sigfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
        return Wake::Signal(if n == size as isize { info.ssi_signo as libc::c_int } else { -1 });
    }
    if fds[1].revents != 0 {
        // A closed socket pair is readable too: is a job there, or only
        // the end of the channel? (The next packet's length, read without
        // touching the descriptors it carries; unsure counts as a job.)
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let asked = unsafe { libc::ioctl(chan, libc::FIONREAD, &mut queued) };
        return Wake::Job { data: asked < 0 || queued > 0 };
    }
    Wake::Signal(-1)
}

pub fn signal_set(sigs: impl Iterator<Item = libc::c_int>) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}
