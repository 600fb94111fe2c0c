//! Commands the host runs in the guest: fork/exec with pipes or a
//! terminal (`stdio.rs`), exit reports, signals, resizes, and pid 1's duty
//! of reaping every zombie.
//!
//! One reaper thread owns `waitpid(-1)`; the forking thread holds the table
//! lock from fork until the pid is registered, so no exit is ever reaped
//! before its owner is known. A child only calls async-signal-safe
//! functions between fork and exec (the process is multi-threaded).
//!
//! Stdin reaches a command through a flow-controlled queue (`stdin.rs`).

use crate::stdin::StdinQueue;
use crate::stdio::Stdio;
use crate::tty;
use clawkeep_guest::proto::{self, ExecRequest, ExitStatus, Message, TtySize};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type Out = Arc<Mutex<File>>;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Sends one frame; a failed write is dropped (the host is gone).
pub fn send(out: &Out, stream: u32, msg: Message) {
    let frame = msg.into_frame(stream);
    if let Ok(mut w) = out.lock() {
        let _ = proto::write_frame(&mut *w, &frame);
    }
}

struct Proc {
    pid: i32,
    stdin: Option<StdinQueue>,
    /// The command's terminal (its pty's master), when it has one.
    tty: Option<File>,
}

#[derive(Default)]
struct Inner {
    exits: HashMap<i32, Sender<ExitStatus>>,
    streams: HashMap<u32, Proc>,
}

/// Every command started over the channel.
#[derive(Clone)]
pub struct Table {
    inner: Arc<Mutex<Inner>>,
    wake: Sender<()>,
}

impl Table {
    /// The table and its reaper thread.
    pub fn start() -> Table {
        let (wake, rx) = mpsc::channel();
        let t = Table { inner: Arc::default(), wake };
        let inner = t.inner.clone();
        std::thread::spawn(move || reap(inner, rx));
        t
    }

    pub fn running(&self) -> u32 {
        self.inner.lock().map(|i| i.streams.len() as u32).unwrap_or(0)
    }

    pub fn stdin(&self, stream: u32, data: Vec<u8>) {
        let Ok(mut i) = self.inner.lock() else { return };
        let Some(p) = i.streams.get_mut(&stream) else { return };
        let eof = data.is_empty();
        if let Some(q) = &p.stdin {
            q.push(stream, data);
        }
        if eof {
            p.stdin = None;
        }
    }

    /// Resizes the command's terminal; a command without one (or one that
    /// is gone) has nothing to resize.
    pub fn resize(&self, stream: u32, size: TtySize) {
        let Ok(i) = self.inner.lock() else { return };
        if let Some(master) = i.streams.get(&stream).and_then(|p| p.tty.as_ref()) {
            if let Err(e) = tty::set_size(master, size) {
                eprintln!("clawkeep-guest: stream {stream}: resize the terminal: {e}");
            }
        }
    }

    /// Signals the command's process group (it leads its own session).
    pub fn signal(&self, stream: u32, signo: i32) {
        let pid = self.inner.lock().ok().and_then(|i| i.streams.get(&stream).map(|p| p.pid));
        if let Some(pid) = pid {
            // SAFETY: kill has no memory preconditions.
            if unsafe { libc::kill(-pid, signo) } != 0 {
                // SAFETY: as above.
                unsafe { libc::kill(pid, signo) };
            }
        }
    }

    /// Ends every process but pid 1: TERM, a grace period, then KILL.
    pub fn kill_all(&self, grace: Duration) {
        // SAFETY: kill(-1) signals every process we may signal but ourselves.
        unsafe { libc::kill(-1, libc::SIGTERM) };
        let end = Instant::now() + grace;
        while self.running() > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-1, libc::SIGKILL) };
    }

    /// Forks a child that runs `child` (async-signal-safe calls only; it
    /// must exec or `_exit`) and registers it on `stream` like a command:
    /// [`Table::signal`] reaches it and its exit arrives on the receiver.
    pub fn fork_on(&self, stream: u32, child: impl FnOnce()) -> Result<(i32, Receiver<ExitStatus>), String> {
        self.fork_registered(stream, child, |pid| Proc { pid, stdin: None, tty: None })
    }

    /// Forks `child` once `stream` is known to be free (async-signal-safe
    /// calls only; it must exec or `_exit`) and registers it as `make(pid)`
    /// under the same lock, so the reaper never sees an unknown pid.
    fn fork_registered(
        &self,
        stream: u32,
        child: impl FnOnce(),
        make: impl FnOnce(i32) -> Proc,
    ) -> Result<(i32, Receiver<ExitStatus>), String> {
        let (exit_tx, exit_rx) = mpsc::channel();
        let mut inner = self.inner.lock().map_err(|_| "table poisoned")?;
        if inner.streams.contains_key(&stream) {
            return Err(format!("stream {stream} is already running a command"));
        }
        // SAFETY: fork in a multi-threaded process: the child only runs
        // `child`, which calls async-signal-safe functions and execs or exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            child();
            // SAFETY: _exit is async-signal-safe; `child` should not return.
            unsafe { libc::_exit(126) };
        }
        inner.exits.insert(pid, exit_tx);
        inner.streams.insert(stream, make(pid));
        drop(inner);
        let _ = self.wake.send(());
        Ok((pid, exit_rx))
    }

    /// Drops `stream` from the table once its command was reaped.
    pub fn forget(&self, stream: u32) {
        if let Ok(mut i) = self.inner.lock() {
            i.streams.remove(&stream);
        }
    }

    /// Starts `req` on `stream`; every outcome, even a failed exec, ends in
    /// one Exit frame on that stream.
    pub fn exec(&self, out: &Out, stream: u32, req: ExecRequest) {
        if let Err(message) = self.try_exec(out, stream, req) {
            send(out, stream, Message::Error { message });
            send(out, stream, Message::Exit(ExitStatus { code: Some(126), signal: None }));
        }
    }

    fn try_exec(&self, out: &Out, stream: u32, req: ExecRequest) -> Result<(), String> {
        let argv0 = req.argv.first().filter(|a| !a.is_empty()).ok_or("empty argv")?.clone();
        let prepared = Prepared::new(&req)?;
        let stdio = Stdio::new(req.tty, req.uid, req.gid)?;
        let [st_r, st_w] = pipe()?;
        let Stdio { fds, ctty, child: child_ends, stdin, outputs, master } = stdio;
        let (pid, exit_rx) = self.fork_registered(
            stream,
            || child(&prepared, fds, ctty, raw(&st_w)),
            |pid| Proc { pid, stdin: Some(StdinQueue::start(out.clone(), stream, stdin, req.stdin_credit)), tty: master },
        )?;
        drop((child_ends, st_w));
        let mut report = [0u8; 8];
        match File::from(st_r).read(&mut report) {
            Ok(8) => {
                let (step, errno) = (
                    i32::from_ne_bytes([report[0], report[1], report[2], report[3]]),
                    i32::from_ne_bytes([report[4], report[5], report[6], report[7]]),
                );
                let step = STEPS.get(step as usize).unwrap_or(&"exec");
                let e = std::io::Error::from_raw_os_error(errno);
                send(out, stream, Message::Error { message: format!("{argv0}: {step}: {e}") });
            }
            _ => send(out, stream, Message::Started { pid }),
        }
        let (done_tx, done_rx) = mpsc::channel();
        for (from, is_stdout) in outputs {
            pump(out.clone(), stream, from, is_stdout, done_tx.clone());
        }
        drop(done_tx);
        let (out, inner) = (out.clone(), self.inner.clone());
        std::thread::spawn(move || supervise(out, inner, stream, exit_rx, done_rx));
        Ok(())
    }
}

pub(crate) fn raw(fd: &OwnedFd) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(fd)
}

/// A close-on-exec pipe, [read, write].
pub fn pipe() -> Result<[OwnedFd; 2], String> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is valid for two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two fresh fds that nothing else owns.
    Ok(unsafe { [OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])] })
}

/// Everything the child needs, allocated before fork.
struct Prepared {
    path: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    uid: u32,
    gid: u32,
}

impl Prepared {
    fn new(req: &ExecRequest) -> Result<Prepared, String> {
        let c = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
        let path_var = req.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH);
        let path = c(&resolve(&req.argv[0], path_var))?;
        let argv = req.argv.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
        let envp = req.env.iter().map(|(k, v)| c(&format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
        let cwd = c(req.cwd.as_deref().unwrap_or("/workspace"))?;
        let mut p = Prepared { path, argv, argv_ptrs: Vec::new(), envp, envp_ptrs: Vec::new(), cwd, uid: req.uid, gid: req.gid };
        p.argv_ptrs = p.argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        p.envp_ptrs = p.envp.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        Ok(p)
    }
}

/// argv[0] against PATH, like execvp; unresolved names fail at exec (ENOENT).
pub fn resolve(cmd: &str, path: &str) -> String {
    if cmd.contains('/') {
        return cmd.to_string();
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(cmd);
        if std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0) {
            return p.to_string_lossy().into_owned();
        }
    }
    cmd.to_string()
}

/// The child's steps as numbered in its status report (see `child`).
const STEPS: [&str; 7] = ["setsid", "setgroups", "setgid", "setuid", "chdir", "exec", "controlling terminal"];

/// The child between fork and exec: async-signal-safe calls only. With
/// `ctty`, `stdio[0]` (a pty's slave) becomes the controlling terminal of
/// the new session, its process group the terminal's foreground group,
/// which gets the signals the terminal's keys raise (Ctrl-C: SIGINT).
fn child(p: &Prepared, stdio: [i32; 3], ctty: bool, status: i32) -> ! {
    let fail = |step: i32| -> ! {
        // SAFETY: errno location is thread-local and valid; write and _exit
        // are async-signal-safe; the buffer is on our stack.
        unsafe {
            let errno = *libc::__errno_location();
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&step.to_ne_bytes());
            b[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(status, b.as_ptr().cast(), 8);
            libc::_exit(if step == 5 && errno == libc::ENOENT { 127 } else { 126 })
        }
    };
    // SAFETY: plain syscalls on fds and ids we own; every pointer comes
    // from `Prepared`, allocated before fork and NUL-terminated.
    unsafe {
        if libc::setsid() < 0 {
            fail(0);
        }
        if ctty && libc::ioctl(stdio[0], libc::TIOCSCTTY, 0) < 0 {
            fail(6);
        }
        for (i, fd) in stdio.iter().enumerate() {
            libc::dup2(*fd, i as i32);
        }
        // pid 1 ignores SIGPIPE (Rust's runtime does); commands expect the
        // default, and an ignored disposition survives exec.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        if libc::setgroups(0, std::ptr::null()) != 0 {
            fail(1);
        }
        if libc::setgid(p.gid) != 0 {
            fail(2);
        }
        if libc::setuid(p.uid) != 0 {
            fail(3);
        }
        // Nothing the command runs gains privileges (setuid binaries).
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        own_landlock_domain();
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(4);
        }
        libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
    }
    fail(5)
}

/// Puts the caller (after no_new_privs) in a Landlock domain of its own
/// that restricts nothing a uid-1000 process could do (making block
/// devices). The point is the boundary: Landlock refuses ptrace-mode access
/// between processes whose domains are not nested, so the agent cannot
/// reach an approved command's mount namespace (its own binary unmasked)
/// through /proc/PID/root or /proc/PID/exe. Best effort: a kernel without
/// Landlock leaves it out. Async-signal-safe (syscalls only).
pub(crate) fn own_landlock_domain() {
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
    }
    const LANDLOCK_ACCESS_FS_MAKE_BLOCK: u64 = 1 << 11;
    let attr = RulesetAttr { handled_access_fs: LANDLOCK_ACCESS_FS_MAKE_BLOCK };
    // SAFETY: attr is a valid ruleset attribute of the given size; the fd
    // returned is closed below.
    unsafe {
        let fd = libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, std::mem::size_of::<RulesetAttr>(), 0u32);
        if fd >= 0 {
            libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32);
            libc::close(fd as i32);
        }
    }
}

/// Sends what `from` yields until its end: EOF on a pipe, EIO on a
/// terminal's master once no slave is open (after the output still
/// buffered in it).
fn pump(out: Out, stream: u32, mut from: File, stdout: bool, done: Sender<()>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let d = buf[..n].to_vec();
                    send(&out, stream, if stdout { Message::Stdout(d) } else { Message::Stderr(d) });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

/// Waits for the exit, then for every output pump to drain (bounded: a
/// daemon the command left behind may hold the pipes or the terminal; each
/// pump's sender is dropped when it ends, so the wait ends with the last
/// one), then reports.
fn supervise(out: Out, inner: Arc<Mutex<Inner>>, stream: u32, exit: Receiver<ExitStatus>, done: Receiver<()>) {
    let status = exit.recv().unwrap_or(ExitStatus { code: None, signal: Some(libc::SIGKILL) });
    let end = Instant::now() + Duration::from_secs(2);
    while done.recv_timeout(end.saturating_duration_since(Instant::now())).is_ok() {}
    if let Ok(mut i) = inner.lock() {
        i.streams.remove(&stream);
    }
    send(&out, stream, Message::Exit(status));
}

fn reap(inner: Arc<Mutex<Inner>>, wake: Receiver<()>) {
    loop {
        let mut st = 0;
        // SAFETY: st is a valid int for the status.
        let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
        if pid > 0 {
            let status = if libc::WIFSIGNALED(st) {
                ExitStatus { code: None, signal: Some(libc::WTERMSIG(st)) }
            } else {
                ExitStatus { code: Some(libc::WEXITSTATUS(st)), signal: None }
            };
            if let Some(tx) = inner.lock().ok().and_then(|mut i| i.exits.remove(&pid)) {
                let _ = tx.send(status);
            }
            continue;
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // No children: sleep until the next fork.
        let _ = wake.recv_timeout(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_execvp() {
        assert_eq!(resolve("/bin/x", "/nope"), "/bin/x");
        assert_eq!(resolve("sh", "/nonexistent:/bin"), "/bin/sh");
        assert_eq!(resolve("no-such-cmd-xyz", "/bin"), "no-such-cmd-xyz");
    }
}
