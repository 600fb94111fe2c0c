//! Gated commands in the guest: pid 1's side.
//!
//! After GateConfig, the gated names are masked (`masks.rs`) and pid 1
//! serves `/run/clawkeep/gate.sock`. Each shim connection keeps its three
//! descriptors here and becomes a `gate` relay stream: its frames go to
//! the host's gate verbatim, bytes only. When the gate approves, the host
//! sends GatedExec on that stream: the real binary is found in the
//! root-only pristine root, and a child forked with the shim's descriptors
//! as stdio unshares a mount namespace, lifts there the masks of the job's
//! own command (no other: whatever else gated it starts reaches the gate
//! again), becomes uid 1000, and execs on GatedRelease; its exit goes back
//! as GatedExit. Commands never see the pristine root.

use crate::exec::{pipe, send, Out, Table};
use crate::masks;
use crate::relay::{self, Relays};
use clawkeep_guest::proto::{GateSetup, GatedExitStatus, GatedJob, Message, Service};
use clawkeep_shim::{fdpass, frame};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The uid/gid approved commands run as (the agent's).
const AGENT_ID: u32 = 1000;

#[derive(Clone)]
pub struct Gate {
    out: Out,
    relays: Relays,
    table: Table,
    /// The shim's stdin/stdout/stderr, by relay stream.
    stdio: Arc<Mutex<HashMap<u32, [OwnedFd; 3]>>>,
    /// The write end a prepared child waits on, by relay stream.
    release: Arc<Mutex<HashMap<u32, OwnedFd>>>,
    configured: Arc<AtomicBool>,
    /// What the masks cover, once configured.
    plan: Arc<std::sync::OnceLock<masks::Plan>>,
}

impl Gate {
    pub fn new(out: Out, relays: Relays, table: Table) -> Gate {
        Gate { out, relays, table, stdio: Arc::default(), release: Arc::default(), configured: Arc::default(), plan: Arc::default() }
    }

    /// Masks the gated commands and starts serving the gate socket; once.
    pub fn configure(&self, setup: &GateSetup) -> Result<u32, String> {
        if self.configured.swap(true, Ordering::SeqCst) {
            return Err("the gate is already configured".into());
        }
        let plan = masks::apply(&setup.commands)?;
        let n = (plan.files.len() + plan.dirs.len()) as u32;
        let _ = self.plan.set(plan);
        let _ = std::fs::remove_file(clawkeep_shim::JAIL_GATE_SOCKET);
        let l =
            UnixListener::bind(clawkeep_shim::JAIL_GATE_SOCKET).map_err(|e| format!("bind {}: {e}", clawkeep_shim::JAIL_GATE_SOCKET))?;
        // Commands (uid 1000) connect; the socket is the only door.
        std::fs::set_permissions(clawkeep_shim::JAIL_GATE_SOCKET, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("chmod {}: {e}", clawkeep_shim::JAIL_GATE_SOCKET))?;
        let me = self.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.serve_shim(conn));
            }
        });
        Ok(n)
    }

    /// Reads the shim's first frame and its descriptors, then relays.
    fn serve_shim(&self, conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = Vec::new();
        let mut fds = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match frame::needed(&buf) {
                Some(n) if n > frame::MAX_FRAME + 4 => return,
                Some(n) if buf.len() >= n => break,
                _ => {}
            }
            match fdpass::recv_with_fds(conn.as_raw_fd(), &mut chunk) {
                Ok((0, _)) | Err(_) => return,
                Ok((n, got)) => {
                    fds.extend(got);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        let Ok(stdio) = <[OwnedFd; 3]>::try_from(fds) else { return };
        let _ = conn.set_read_timeout(None);
        let stream = relay::next_stream();
        if let Ok(mut s) = self.stdio.lock() {
            s.insert(stream, stdio);
        }
        self.relays.relay_unix(conn, &self.out, stream, Service::Gate, buf);
        // The shim is gone: a command that never started never will.
        if let Ok(mut s) = self.stdio.lock() {
            s.remove(&stream);
        }
        if let Ok(mut r) = self.release.lock() {
            r.remove(&stream);
        }
    }

    /// Prepares an approved job; it execs on [`Gate::release`].
    pub fn exec(&self, stream: u32, job: GatedJob) {
        if let Err(message) = self.try_exec(stream, &job) {
            send(&self.out, stream, Message::Error { message: format!("{}: {message}", job.command) });
            let st = GatedExitStatus { code: Some(126), signal: None, timed_out: false, bytes_out: None };
            send(&self.out, stream, Message::GatedExit(st));
        }
    }

    fn try_exec(&self, stream: u32, job: &GatedJob) -> Result<(), String> {
        let stdio = self.stdio.lock().ok().and_then(|mut s| s.remove(&stream)).ok_or("no waiting shim on this stream")?;
        let real = masks::real_binary(&job.command).ok_or("not found in the image")?;
        let own = self.plan.get().map(|p| p.owned_by(&job.command)).unwrap_or_default();
        let p = Prepared::new(job, &real, &own)?;
        let [rel_r, rel_w] = pipe()?;
        let (stdio_raw, rel_raw) = ([stdio[0].as_raw_fd(), stdio[1].as_raw_fd(), stdio[2].as_raw_fd()], rel_r.as_raw_fd());
        let (_pid, exit) = self.table.fork_on(stream, || child(&p, stdio_raw, rel_raw))?;
        drop((stdio, rel_r));
        if let Ok(mut r) = self.release.lock() {
            r.insert(stream, rel_w);
        }
        let (out, table, release) = (self.out.clone(), self.table.clone(), self.release.clone());
        std::thread::spawn(move || {
            let st = exit.recv().unwrap_or(clawkeep_guest::proto::ExitStatus { code: None, signal: Some(libc::SIGKILL) });
            table.forget(stream);
            if let Ok(mut r) = release.lock() {
                r.remove(&stream);
            }
            let st = GatedExitStatus { code: st.code, signal: st.signal, timed_out: false, bytes_out: None };
            send(&out, stream, Message::GatedExit(st));
        });
        Ok(())
    }

    /// Lets the prepared command exec (the gate's record is on disk).
    pub fn release(&self, stream: u32) {
        if let Some(w) = self.release.lock().ok().and_then(|mut r| r.remove(&stream)) {
            // SAFETY: one byte from our stack to a pipe we own.
            unsafe { libc::write(w.as_raw_fd(), b"r".as_ptr().cast(), 1) };
        }
    }

    pub fn signal(&self, stream: u32, signo: i32) {
        self.table.signal(stream, signo);
    }
}

/// Everything the child needs, allocated before fork.
struct Prepared {
    /// The binary's path in the guest root, where the child's own mount
    /// namespace shows it unmasked (a script works too, as by name).
    exe: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    failed: CString,
    /// The job's own command's masks, lifted in its mount namespace: what
    /// it starts of itself (git's own sub-commands) is real, every other
    /// gated command it starts reaches the gate.
    uncover: Vec<CString>,
}

impl Prepared {
    fn new(job: &GatedJob, real: &std::path::Path, own: &[std::path::PathBuf]) -> Result<Prepared, String> {
        let c = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
        let inside = real.strip_prefix(masks::REAL_ROOT).map_err(|_| format!("{} is outside the root", real.display()))?;
        let exe = CString::new(std::path::Path::new("/").join(inside).into_os_string().into_encoded_bytes())
            .map_err(|_| "NUL byte in the path")?;
        // argv[0] is the command's name: a multi-call binary picks by it.
        let argv = std::iter::once(&job.command).chain(&job.args).map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
        let envp = job.env.iter().map(|(k, v)| c(&format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
        let cwd = c(&job.cwd)?;
        let failed = c(&format!("clawkeep: {}: cannot start the approved command\n", job.command))?;
        let uncover = own.iter().map(|p| c(&p.to_string_lossy())).collect::<Result<Vec<_>, _>>()?;
        let mut p = Prepared { exe, argv, argv_ptrs: Vec::new(), envp, envp_ptrs: Vec::new(), cwd, failed, uncover };
        p.argv_ptrs = p.argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        p.envp_ptrs = p.envp.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        Ok(p)
    }
}

/// The child between fork and exec: async-signal-safe calls only.
fn child(p: &Prepared, stdio: [i32; 3], release: i32) -> ! {
    let fail = |code: i32| -> ! {
        // SAFETY: write and _exit are async-signal-safe; the message was
        // allocated before fork.
        unsafe {
            libc::write(2, p.failed.as_ptr().cast(), p.failed.as_bytes().len());
            libc::_exit(code)
        }
    };
    // SAFETY: plain syscalls on fds and ids we own; every pointer comes
    // from `Prepared`, allocated before fork and NUL-terminated.
    unsafe {
        libc::setsid();
        for (i, fd) in stdio.iter().enumerate() {
            if libc::dup2(*fd, i as i32) < 0 {
                libc::_exit(126);
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            fail(126);
        }
        for path in &p.uncover {
            if libc::umount2(path.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) != 0 {
                fail(126);
            }
        }
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(AGENT_ID) != 0 || libc::setuid(AGENT_ID) != 0 {
            fail(126);
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        // A domain of its own, not nested in the agent's: the agent cannot
        // enter this job's namespace through /proc.
        crate::exec::own_landlock_domain();
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(126);
        }
        // Wait for the gate's go: its decision record is on disk first.
        let mut b = 0u8;
        loop {
            let n = libc::read(release, (&mut b as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(126);
        }
        libc::execve(p.exe.as_ptr(), p.argv_ptrs.as_ptr().cast(), p.envp_ptrs.as_ptr().cast());
    }
    fail(126)
}
