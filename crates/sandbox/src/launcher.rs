//! The launcher side: starts the helper, forwards signals to it, collects
//! its report. Safe to call from a multi-threaded program: the helper is
//! started with posix_spawn (glibc: clone with CLONE_VM|CLONE_VFORK, then
//! only the listed dup2 calls before exec), so no fork copies the
//! launcher's address space and no Rust code runs in the child.

use crate::error::SandboxError;
use crate::protocol::{
    write_frame, HelperConfig, JailReport, CALL_OFF, CONFIG_FD, ETC_FD, EXEC_FD, HELPER_ARG, KILL, PROCEED, PROMPT_FD, PROXY_FD, REPORT_FD,
};
use crate::{init::FORWARDED, sys};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

static HELPER_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = HELPER_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// A running jail, seen from the launcher.
#[derive(Debug)]
pub struct Launched {
    child: Child,
    /// Held open for the helper's whole life; closing it (or dying) tells
    /// the helper to tear the jail down.
    lifeline: OwnedFd,
    report: OwnedFd,
}

fn high_fd(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    sys::dup_at_least(fd.as_raw_fd(), 10)
}

/// A helper that is starting up and waits for its config. Spawning it
/// before the run is planned overlaps its exec with the launcher's work.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    lifeline: OwnedFd,
    report: OwnedFd,
}

impl Spawned {
    /// Sends the config: from here on the jail is being built.
    pub fn configure(self, cfg: &HelperConfig) -> Result<Launched, SandboxError> {
        write_frame(self.lifeline.as_raw_fd(), cfg).map_err(SandboxError::HelperIo)?;
        Ok(Launched { child: self.child, lifeline: self.lifeline, report: self.report })
    }

    /// Sends the helper away before it did anything.
    pub fn abort(mut self) {
        drop(self.lifeline);
        let _ = self.child.wait();
        HELPER_PID.store(0, Ordering::SeqCst);
    }
}

/// Starts `exe __sandbox-helper` and sends it `cfg`.
pub fn launch(exe: &Path, cfg: &HelperConfig) -> Result<Launched, SandboxError> {
    spawn(exe, Channels::default())?.configure(cfg)
}

/// The optional channels a run hands the helper (see `protocol`).
#[derive(Debug, Default)]
pub struct Channels {
    /// fd 5: the in-jail executor of gated commands.
    pub exec: Option<OwnedFd>,
    /// fd 6: approval prompts at the user's terminal.
    pub prompt: Option<OwnedFd>,
    /// fd 7: receives the proxy's listening socket from inside the jail.
    pub proxy: Option<OwnedFd>,
    /// fd 8: sends the jail's /etc, made outside, to init.
    pub etc: Option<OwnedFd>,
}

/// Starts `exe __sandbox-helper` with fd 3 for its config and lifeline and
/// fd 4 for its report, and installs signal forwarding to it.
pub fn spawn(exe: &Path, chans: Channels) -> Result<Spawned, SandboxError> {
    let Channels { exec: exec_chan, prompt: prompt_chan, proxy: proxy_chan, etc: etc_chan } = chans;
    let io = SandboxError::HelperIo;
    let (cfg_r, cfg_w) = sys::pipe().map_err(io)?;
    let (rep_r, rep_w) = sys::pipe().map_err(io)?;
    // Above 10 so that dup2 onto 3 and 4 can never clobber each other.
    let (cfg_r, rep_w) = (high_fd(cfg_r).map_err(io)?, high_fd(rep_w).map_err(io)?);
    // The optional channels, each moved above 10 too; -1 where absent.
    let high = |c: Option<OwnedFd>| c.map(high_fd).transpose().map_err(io);
    let (exec_chan, prompt_chan, proxy_chan, etc_chan) = (high(exec_chan)?, high(prompt_chan)?, high(proxy_chan)?, high(etc_chan)?);
    let raw = |c: &Option<OwnedFd>| c.as_ref().map_or(-1, |f| f.as_raw_fd());
    let maps = [
        (cfg_r.as_raw_fd(), CONFIG_FD),
        (rep_w.as_raw_fd(), REPORT_FD),
        (raw(&exec_chan), EXEC_FD),
        (raw(&prompt_chan), PROMPT_FD),
        (raw(&proxy_chan), PROXY_FD),
        (raw(&etc_chan), ETC_FD),
    ];
    let pid = posix_spawn(exe, &maps).map_err(|source| SandboxError::SpawnHelper { exe: exe.to_path_buf(), source })?;
    let child = Child { pid, reaped: false };
    drop((cfg_r, rep_w, exec_chan, prompt_chan, proxy_chan, etc_chan));
    HELPER_PID.store(pid, Ordering::SeqCst);
    for sig in FORWARDED {
        // SAFETY: installing an async-signal-safe handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(*sig, &sa, std::ptr::null_mut());
        }
    }
    Ok(Spawned { child, lifeline: cfg_w, report: rep_r })
}

/// A helper started ahead of its config (see [`start`]). Dropped without
/// [`Starting::take`], it sends the helper away and reaps it.
#[derive(Debug)]
pub struct Starting(Option<Result<Spawned, SandboxError>>);

/// [`spawn`], called first thing by a launcher that has its config still
/// to prepare: the helper's exec and its own first steps then overlap that
/// work. Called on the launcher's main thread, not a thread of its own: on
/// a busy two-core host a new thread waited up to 0.5 ms for a CPU.
/// posix_spawn returns once the helper has exec'd; where the scheduler
/// packs woken tasks onto one busy CPU (this development host), that is
/// when the helper first blocks, after its network namespace (~0.8 ms; a
/// fork instead, which returns at once, measured 0.5 ms slower overall).
pub fn start(exe: &Path, chans: Channels) -> Starting {
    Starting(Some(spawn(exe, chans)))
}

impl Starting {
    /// The started helper, or why it could not be started.
    pub fn take(mut self) -> Result<Spawned, SandboxError> {
        self.0.take().unwrap_or_else(|| Err(SandboxError::HelperIo(io::Error::other("no sandbox helper was started"))))
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(Ok(helper)) = self.0.take() {
            helper.abort();
        }
    }
}

/// The helper process; waited for once.
#[derive(Debug)]
struct Child {
    pid: libc::pid_t,
    reaped: bool,
}

impl Child {
    fn id(&self) -> u32 {
        self.pid as u32
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        if self.reaped {
            return Err(io::Error::from_raw_os_error(libc::ECHILD));
        }
        let mut st = 0;
        loop {
            // SAFETY: pid is our child, not yet reaped; st is a valid out-pointer.
            if unsafe { libc::waitpid(self.pid, &mut st, 0) } >= 0 {
                self.reaped = true;
                return Ok(ExitStatus::from_raw(st));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Starts `exe __sandbox-helper` with an empty environment, the default
/// signal mask and SIGPIPE at its default, and each `(from, to)` of `maps`
/// (from >= 0) dup2'd into place.
fn posix_spawn(exe: &Path, maps: &[(RawFd, RawFd)]) -> io::Result<libc::pid_t> {
    let path = sys::cpath(exe)?;
    let arg = CString::new(HELPER_ARG).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let argv = [path.as_ptr().cast_mut(), arg.as_ptr().cast_mut(), std::ptr::null_mut()];
    let envp = [std::ptr::null_mut()];
    let rc_err = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) };
    // SAFETY: the actions and attributes are initialised before use and
    // destroyed after; argv and envp are NULL-terminated arrays of valid
    // C strings that outlive the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        rc_err(libc::posix_spawn_file_actions_init(&mut actions))?;
        rc_err(libc::posix_spawnattr_init(&mut attr))?;
        let mut pid = 0;
        let result = (|| {
            for &(from, to) in maps.iter().filter(|(from, _)| *from >= 0) {
                rc_err(libc::posix_spawn_file_actions_adddup2(&mut actions, from, to))?;
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            let mut pipe_only: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe_only);
            libc::sigaddset(&mut pipe_only, libc::SIGPIPE);
            rc_err(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
            rc_err(libc::posix_spawnattr_setsigdefault(&mut attr, &pipe_only))?;
            rc_err(libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
            rc_err(libc::posix_spawn(&mut pid, path.as_ptr(), &actions, &attr, argv.as_ptr(), envp.as_ptr()))
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result.map(|()| pid)
    }
}

impl Launched {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the agent's command exec. Until this is called the jail is set
    /// up but the command does not run: call it once the run's start event
    /// is durable.
    pub fn proceed(&self) -> Result<(), SandboxError> {
        sys::write_all(self.lifeline.as_raw_fd(), PROCEED).map_err(SandboxError::HelperIo)
    }

    /// A kill switch usable from any thread while another waits: the
    /// helper kills the jail's pid 1, so the whole sandbox dies.
    pub fn killer(&self) -> std::io::Result<impl Fn() + Send + Sync + 'static> {
        let fd = Arc::new(self.lifeline.try_clone()?);
        Ok(move || {
            let _ = sys::write_all(fd.as_raw_fd(), KILL);
        })
    }

    /// Tears the jail down without running the command (see `CALL_OFF`).
    pub fn abort(mut self) {
        let _ = sys::write_all(self.lifeline.as_raw_fd(), CALL_OFF);
        drop(self.lifeline);
        let _ = self.child.wait();
        HELPER_PID.store(0, Ordering::SeqCst);
    }

    /// Waits for the jail to end and returns the helper's report. The
    /// helper is then still removing the run's cgroups: `reap` waits for it.
    pub fn wait(&mut self) -> Result<JailReport, SandboxError> {
        let line = sys::read_line(self.report.as_raw_fd()).map_err(SandboxError::HelperIo)?;
        if let Ok(report) = serde_json::from_slice(&line) {
            return Ok(report);
        }
        let status = self.child.wait().map_err(SandboxError::HelperIo)?;
        HELPER_PID.store(0, Ordering::SeqCst);
        Err(SandboxError::HelperDied { status: status.to_string() })
    }

    /// Waits for the helper to exit; after it nothing of the jail remains.
    pub fn reap(mut self) {
        let _ = self.child.wait();
        HELPER_PID.store(0, Ordering::SeqCst);
    }
}
