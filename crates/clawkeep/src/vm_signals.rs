//! Signals during a `--backend vm` run: SIGINT, SIGTERM and SIGHUP are
//! forwarded to the command in the guest, SIGWINCH resizes its terminal.
//! They are blocked in every thread and taken by one (sigwait); before the
//! command runs, the first forwarded one cancels the boot, and a second
//! interrupt kills the VMM outright.

use clawkeep_sandbox::backend::ProcessControl;
use clawkeep_sandbox::pty;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        // SIGWINCH too: the user's terminal changed size, which resizes
        // the command's (it is never forwarded as a signal).
        for s in FORWARDED.into_iter().chain([libc::SIGWINCH]) {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks every signal the sigwait thread takes.
pub(crate) fn block_taken() {
    let set = signal_set();
    // SAFETY: set is initialised; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Where forwarded signals go: the command once it runs; before that, the
/// first one is remembered and cancels the boot. SIGWINCH resizes the
/// command's terminal (a no-op for a command without one); one before the
/// command runs is remembered, never cancels anything.
#[derive(Default)]
pub(crate) struct Signals {
    target: Mutex<Option<Arc<dyn ProcessControl>>>,
    pub(crate) early: AtomicI32,
    /// The user's terminal changed size before the command ran.
    winch: AtomicBool,
    pub(crate) cancel: Arc<AtomicBool>,
    /// The VMM, killed outright on a second interrupt: the channel a signal
    /// travels on can be jammed by what runs in the guest.
    pub(crate) vmm: AtomicI32,
    interrupts: std::sync::atomic::AtomicU32,
    /// Set when the VMM was killed from here (signal number).
    pub(crate) hard_killed: AtomicI32,
}

impl Signals {
    /// The command started: it gets the signals, including one that
    /// arrived between the boot and now, and the size the user's terminal
    /// took meanwhile (under the lock [`Signals::resize`] takes, so none is
    /// lost).
    pub(crate) fn attach(&self, control: Arc<dyn ProcessControl>) {
        if let Ok(mut t) = self.target.lock() {
            let early = self.early.load(Ordering::SeqCst);
            if early != 0 {
                let _ = control.signal(early);
            }
            if self.winch.load(Ordering::SeqCst) {
                follow_terminal(&*control);
            }
            *t = Some(control);
        }
    }

    /// The user's terminal changed size: the command's follows, now or
    /// when it starts.
    fn resize(&self) {
        let Ok(t) = self.target.lock() else { return };
        match &*t {
            Some(c) => follow_terminal(&**c),
            None => self.winch.store(true, Ordering::SeqCst),
        }
    }

    /// Kills the VMM process itself (never through the channel).
    fn kill_vmm(&self, why: i32) {
        let pid = self.vmm.load(Ordering::SeqCst);
        if pid > 0 {
            self.hard_killed.store(why, Ordering::SeqCst);
            // SAFETY: kill has no memory-safety preconditions; pid is our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the VMM process. Every vCPU
    /// is one of its threads, so the guest stops whole, as the jail's
    /// cgroup freezer stops every process in it; the host side of the
    /// channel just sees no traffic meanwhile.
    pub(crate) fn pause_vmm(&self, stop: bool) -> Result<(), String> {
        let pid = self.vmm.load(Ordering::SeqCst);
        if pid <= 0 {
            return Err("the VM is still starting; try again once its command runs".into());
        }
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill has no memory-safety preconditions; pid is our child.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(format!("cannot {} the VM: {}", if stop { "freeze" } else { "thaw" }, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub(crate) fn deliver(&self, sig: i32) {
        if sig == libc::SIGWINCH {
            self.resize();
            return;
        }
        if FORWARDED.contains(&sig) && self.interrupts.fetch_add(1, Ordering::SeqCst) >= 1 {
            eprintln!("clawkeep: second interrupt: killing the VM");
            self.kill_vmm(sig);
            return;
        }
        let Ok(t) = self.target.lock() else { return };
        match &*t {
            Some(c) => {
                let _ = c.signal(sig);
            }
            None => {
                let _ = self.early.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
                self.cancel.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Gives the command's terminal the size of the user's (stdin's).
fn follow_terminal(control: &dyn ProcessControl) {
    if let Some(size) = pty::terminal_size(0) {
        let _ = control.resize(size);
    }
}

pub(crate) fn take_signals(signals: Arc<Signals>) {
    std::thread::spawn(move || loop {
        let set = signal_set();
        let mut sig = 0;
        // SAFETY: set is initialised and blocked in every thread; sig is a
        // valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            signals.deliver(sig);
        }
    });
}
