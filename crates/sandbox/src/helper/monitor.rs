//! The helper's watch over a running jail: the jail's messages, the
//! forwarded signals, the timeout, the launcher's lifeline and, at the end,
//! how the jail's command ended.

use crate::protocol::{ChildMsg, HelperConfig, Outcome, CALL_OFF, CONFIG_FD, KILL, PROCEED};
use crate::{pty, sys};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub(super) struct Monitored {
    pub(super) msgs: Vec<ChildMsg>,
    pub(super) timed_out: bool,
    pub(super) parent_gone: bool,
    /// The launcher said it called the run off before it went (`CALL_OFF`).
    pub(super) called_off: bool,
    pub(super) wait_status: i32,
    /// The agent's exit was reported while the jail's pid 1 was still
    /// ending: the caller reaps it (see `monitor`).
    pub(super) init_running: bool,
}

pub(super) fn monitor(
    cfg: &HelperConfig,
    pid: libc::pid_t,
    sigfd: RawFd,
    status_fd: RawFd,
    mut relay: Option<pty::Relay>,
    mut gate: Option<(OwnedFd, Vec<u8>)>,
) -> Monitored {
    let mut m =
        Monitored { msgs: Vec::new(), timed_out: false, parent_gone: false, called_off: false, wait_status: 0, init_running: false };
    let deadline = cfg.spec.timeout.map(|t| Instant::now() + t);
    let mut kill_at: Option<Instant> = None;
    let mut status_open = true;
    let mut lifeline_open = true;
    let mut buf = Vec::new();
    loop {
        let now = Instant::now();
        let next = [deadline.filter(|_| !m.timed_out), kill_at].into_iter().flatten().min();
        let timeout_ms = next.map_or(-1, |t| t.saturating_duration_since(now).as_millis().min(60_000) as i32);
        let [tty_in, tty_master, prompts] =
            relay.as_ref().map_or([libc::pollfd { fd: -1, events: 0, revents: 0 }; 3], pty::Relay::poll_fds);
        let mut fds = [
            libc::pollfd { fd: sigfd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if status_open { status_fd } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if lifeline_open { CONFIG_FD } else { -1 }, events: libc::POLLIN, revents: 0 },
            tty_in,
            tty_master,
            prompts,
        ];
        // SAFETY: fds is a valid array of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if let Some(r) = relay.as_mut() {
            r.handle(&[fds[3], fds[4], fds[5]]);
        }
        if fds[1].revents != 0 {
            let mut chunk = [0u8; 4096];
            match sys::read_some(status_fd, &mut chunk) {
                Ok(0) | Err(_) => status_open = false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if fds[2].revents != 0 {
            let mut chunk = [0u8; 64];
            let got = sys::read_some(CONFIG_FD, &mut chunk);
            if let Ok(n @ 1..) = got {
                m.called_off |= chunk[..n].contains(&CALL_OFF[0]);
                if chunk[..n].contains(&KILL[0]) {
                    // The kill switch: pid 1 dies, and the kernel kills the rest.
                    signal_jail(cfg, pid, libc::SIGKILL);
                }
                if chunk[..n].contains(&PROCEED[0]) {
                    if let Some((g, msg)) = gate.take() {
                        let _ = sys::write_all(g.as_raw_fd(), &msg);
                    }
                }
            }
            if matches!(got, Ok(0) | Err(_)) {
                // The launcher is gone: the sandbox dies with its parent.
                lifeline_open = false;
                m.parent_gone = true;
                signal_jail(cfg, pid, libc::SIGKILL);
            }
        }
        if fds[0].revents != 0 {
            for sig in drain_signals(sigfd) {
                if sig == libc::SIGWINCH {
                    if let Some(r) = &relay {
                        r.resize();
                    }
                } else if sig == libc::SIGCHLD {
                    let mut st = 0;
                    // SAFETY: st is a valid out-pointer; pid is our child.
                    if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
                        if let Some(r) = relay.as_mut() {
                            r.drain();
                        }
                        m.wait_status = st;
                        m.msgs = parse_msgs(&buf);
                        return m;
                    }
                } else {
                    // SAFETY: pid is our child.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
        let now = Instant::now();
        if let Some(d) = deadline {
            if !m.timed_out && now >= d {
                m.timed_out = true;
                // Init forwards SIGTERM to the agent.
                signal_jail(cfg, pid, libc::SIGTERM);
                kill_at = Some(now + Duration::from_millis(cfg.kill_grace_ms));
            }
        }
        if kill_at.is_some_and(|k| now >= k) {
            // Killing pid 1 kills its whole namespace.
            signal_jail(cfg, pid, libc::SIGKILL);
            kill_at = None;
        }
        // Init sends the agent's exit as its last word, once it has killed
        // every other process of the jail, then ends, and the kernel tears
        // the namespaces down (~0.3 ms here). The exit is reported now, so
        // the launcher records it meanwhile; the caller reaps pid 1 before
        // it removes the cgroups. Checked last, so a lifeline that closed
        // in the same turn is seen first. Not with a terminal: the relay
        // drains the agent's output once pid 1 is gone, as before.
        if fds[1].revents != 0 && relay.is_none() && !m.timed_out && !m.parent_gone {
            let msgs = parse_msgs(&buf);
            if msgs.iter().any(|x| matches!(x, ChildMsg::Exit { .. })) {
                m.msgs = msgs;
                m.init_running = true;
                return m;
            }
        }
    }
}

/// Ends the run: a jail the kill switch froze is thawed first (frozen
/// tasks do not act on a signal, SIGKILL included on a v1 freezer, until
/// thawed), or a lost launcher would leave it frozen forever.
fn signal_jail(cfg: &HelperConfig, pid: libc::pid_t, sig: i32) {
    if cfg.cgroups.freezer.is_some() {
        let _ = cfg.cgroups.freeze(false);
    }
    // SAFETY: pid is our child (the jail's init).
    unsafe { libc::kill(pid, sig) };
}

fn drain_signals(sigfd: RawFd) -> Vec<i32> {
    let mut out = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: info is valid for `size` bytes.
        let n = unsafe { libc::read(sigfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
        if n != size as isize {
            return out;
        }
        out.push(info.ssi_signo as i32);
    }
}

pub(super) fn parse_msgs(buf: &[u8]) -> Vec<ChildMsg> {
    buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).filter_map(|l| serde_json::from_slice(l).ok()).collect()
}

pub(super) fn outcome(msgs: &[ChildMsg], timed_out: bool, wait_status: i32) -> Outcome {
    for m in msgs {
        match m {
            ChildMsg::Setup { failure } => return Outcome::SetupFailed { failure: failure.clone() },
            ChildMsg::ExecFailed { path, errno, message } => {
                return Outcome::ExecFailed { path: path.clone(), errno: *errno, message: message.clone() }
            }
            _ => {}
        }
    }
    if timed_out {
        return Outcome::TimedOut;
    }
    for m in msgs {
        if let ChildMsg::Exit { code, signal } = m {
            return match (code, signal) {
                (Some(c), _) => Outcome::Exited { code: *c },
                (None, Some(s)) => Outcome::Signaled { signal: *s },
                (None, None) => Outcome::Exited { code: 0 },
            };
        }
    }
    if libc::WIFSIGNALED(wait_status) {
        Outcome::Signaled { signal: libc::WTERMSIG(wait_status) }
    } else {
        Outcome::Exited { code: libc::WEXITSTATUS(wait_status) }
    }
}

pub(super) fn reap(pid: libc::pid_t) {
    let mut st = 0;
    // SAFETY: pid is our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}
