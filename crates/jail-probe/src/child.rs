//! Forked helpers: run one attempt in a throwaway child, or park children
//! that only wait to be killed.
//!
//! The probe is single-threaded (no runtime, no helper threads), so `fork`
//! gives the child a consistent copy of the process; children never return
//! into the probe's own code — they always leave through `_exit`.

use std::panic::{self, AssertUnwindSafe};

use crate::errno;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(i32),
    Signaled(i32),
}

/// Exit code a child uses when its attempt panicked.
const PANICKED: u8 = 254;

/// Runs `attempt` in a forked child and returns how the child ended; the
/// child exits with the code `attempt` returns. Attempts that change the
/// process (`unshare`, `PTRACE_TRACEME`) run here so the probe itself, and any
/// later check, stays in the jail's original state. `Err` carries fork's errno.
pub fn run_in_child(attempt: impl FnOnce() -> u8) -> Result<ChildEnd, i32> {
    // SAFETY: the probe is single-threaded, so the child's copy of the
    // process has no locks held by vanished threads; the child only runs
    // `attempt` and then `_exit`s.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(errno::last()),
        0 => {
            let code = panic::catch_unwind(AssertUnwindSafe(attempt)).unwrap_or(PANICKED);
            // SAFETY: `_exit` ends the child without running the parent's
            // atexit handlers or unwinding back into the probe's main.
            unsafe { libc::_exit(i32::from(code)) }
        }
        pid => reap(pid),
    }
}

/// Errno as a child exit code: 0 is reserved for "the call succeeded".
pub fn errno_exit_code(code: i32) -> u8 {
    u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(u8::MAX)
}

/// Forks a child that does nothing but wait to be killed; it also dies if the
/// probe dies, so no sleeper outlives a crashed probe. `Err` carries errno.
pub fn spawn_sleeper() -> Result<libc::pid_t, i32> {
    // SAFETY: getpid cannot fail and takes no arguments.
    let parent = unsafe { libc::getpid() };
    // SAFETY: single-threaded process (see module docs); the child only
    // calls async-signal-safe functions and never returns.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(errno::last()),
        0 => {
            // SAFETY: prctl/getppid/pause/_exit are async-signal-safe and
            // take no pointers.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The probe died before PDEATHSIG was armed.
                if libc::getppid() != parent {
                    libc::_exit(0);
                }
                loop {
                    libc::pause();
                }
            }
        }
        pid => Ok(pid),
    }
}

/// Sends SIGKILL to `pid` and waits for it.
pub fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: `pid` is our own child, not yet reaped, so the id cannot have
    // been reused by an unrelated process.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    // Only fails if the child is already gone; nothing more to do then.
    let _ = reap(pid);
}

/// Waits until child `pid` has ended, retrying on EINTR. Stops are skipped:
/// a child we managed to ptrace-attach reports its stop before its death.
pub fn reap(pid: libc::pid_t) -> Result<ChildEnd, i32> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable c_int for waitpid to fill.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            if libc::WIFSIGNALED(status) {
                return Ok(ChildEnd::Signaled(libc::WTERMSIG(status)));
            }
            if libc::WIFEXITED(status) {
                return Ok(ChildEnd::Exited(libc::WEXITSTATUS(status)));
            }
            continue;
        }
        let code = errno::last();
        if code != libc::EINTR {
            return Err(code);
        }
    }
}
