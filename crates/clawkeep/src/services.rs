//! A jail run's services: the gate's supervisor, the operator API and the
//! inference proxy, in a `clawkeep-full` process of their own.
//!
//! The launcher (`clawkeep`) binds their sockets and issues the agent's
//! token before the jail starts, but holds none of their code: the async
//! runtime, HTTP, TLS and SQLite are `clawkeep-full`'s, and a static PIE
//! pays for every pointer it holds at each exec. A thread of the launcher
//! waits until something connects (a shim, the operator, the agent's first
//! model call, each waiting in its socket's backlog meanwhile) and only
//! then starts `clawkeep-full __run-services` with the sockets; most short
//! runs never start it at all.
//!
//! Between the two, on descriptors set up at the services' start (their
//! numbers are in the config; the config pipe's is the argument after
//! `SERVICES_ARG`):
//! - the config (`ServicesConfig`, JSON, read to its end), with the texts
//!   of the policy and proxy config files the launcher checked, so the
//!   services enforce what the run started with (an edit since is then
//!   seen by the policy's watch);
//! - the kill switch: the services ask (`freeze`/`thaw`/`kill`, one line),
//!   the launcher applies it (it owns the cgroups and the helper's
//!   lifeline) and answers `ok` or `err <why>`;
//! - the end: the launcher closes a pipe when the agent has exited; the
//!   services then record what is still in flight (the last gated
//!   command's records, the proxy's open requests and usage rows) and
//!   exit, and only then does the launcher write the run's exit event.
//!
//! The services die with the launcher (a parent-death signal), which
//! removes their sockets.

use crate::gate_run;
use crate::proxy_run::{self, ProxyServe};
use crate::Failure;
use clawkeep_gate::Switch;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `clawkeep-full`'s first argument for a run's services.
pub const SERVICES_ARG: &str = "__run-services";

/// How long the end of a run waits for the services to record what is
/// in flight (they give up on their own after the gate's 5 s drain and
/// the proxy's 2 s settle).
const FINISH_LIMIT: Duration = Duration::from_secs(10);

/// How long the end of a run lets the API finish its answers (an event
/// stream a dashboard holds open would keep it forever).
const API_STOP_LIMIT: Duration = Duration::from_secs(1);

/// What the services are told. Sent on a pipe, never in argv: it holds
/// the API's bearer token (and so has no `Debug`).
#[derive(Serialize, Deserialize)]
pub struct ServicesConfig {
    pub state: PathBuf,
    pub audit: PathBuf,
    pub agent: String,
    /// The run's id: the gate's session and the proxy's binding.
    pub session: String,
    pub gate_socket: PathBuf,
    /// The run's policy file and the text the launcher compiled; none:
    /// the built-in policy.
    pub policy: Option<(PathBuf, String)>,
    /// The operator API on loopback TCP, with its bearer token.
    pub api_tcp: Option<(std::net::SocketAddr, String)>,
    /// The inference proxy; absent when the run has none.
    pub proxy: Option<ProxySource>,
    /// The descriptors' numbers in the services (set by `spawn`).
    #[serde(default)]
    pub(crate) fds: Fds,
}

/// Where a run's proxy config comes from.
#[derive(Debug, Serialize, Deserialize)]
pub enum ProxySource {
    Builtin,
    /// A file and the text the launcher checked.
    File(PathBuf, String),
}

/// The services' descriptors by number (see the module docs).
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Fds {
    control: RawFd,
    finish: RawFd,
    gate: RawFd,
    api: RawFd,
    exec: RawFd,
    prompt: Option<RawFd>,
    proxy: Option<RawFd>,
}

/// The sockets the services serve and the channels they use.
#[derive(Debug)]
pub struct ServiceFds {
    pub gate: OwnedFd,
    pub api: OwnedFd,
    /// The in-jail executor's channel.
    pub exec: OwnedFd,
    /// Approval prompts at the user's terminal.
    pub prompt: Option<OwnedFd>,
    /// Where the jail's init sends the proxy's listener (proxied runs).
    pub proxy_chan: Option<OwnedFd>,
}

/// The kill switch as the launcher applies it.
pub type Kill = Arc<dyn Fn(Switch) -> Result<(), String> + Send + Sync>;

/// The launcher's handle on a run's services, started or not.
#[derive(Debug)]
pub struct Services {
    /// Closed at the end of the run (see the module docs).
    finish: Option<OwnedFd>,
    done: std::sync::mpsc::Receiver<()>,
    /// The services' pid while they are not reaped (0 otherwise); the
    /// watcher clears it, under the lock, before it reaps them.
    pid: Arc<std::sync::Mutex<libc::pid_t>>,
}

/// `clawkeep-full`, beside this binary.
fn full_exe() -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::runtime(format!("cannot find the clawkeep binary: {e}")))?;
    full_beside(&exe)
}

/// `clawkeep-full`, beside `exe` (the running `clawkeep`).
pub fn full_beside(exe: &Path) -> Result<PathBuf, Failure> {
    exe.parent()
        .map(|d| d.join("clawkeep-full"))
        .filter(|p| p.is_file())
        .ok_or_else(|| Failure::runtime("clawkeep-full was not found beside the clawkeep binary; install both together"))
}

/// Replaces this process with `clawkeep-full` and the same arguments.
pub fn exec_full() -> Result<u8, Failure> {
    let full = full_exe()?;
    let e = std::process::Command::new(&full).args(std::env::args_os().skip(1)).exec();
    Err(Failure::runtime(format!("cannot run {}: {e}", full.display())))
}

fn io_failure(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::runtime(format!("{what}: {e}"))
}

/// A copy of `fd` at 100 or above, close-on-exec until the services' child
/// clears the flag on it (see `spawn`).
fn high(fd: RawFd) -> std::io::Result<OwnedFd> {
    clawkeep_sandbox::sys::dup_at_least(fd, 100)
}

impl Services {
    /// Starts the launcher's watcher thread: it receives the proxy's
    /// listener, waits for a first connection and then starts the
    /// services (see the module docs).
    /// `full` is `clawkeep-full` (see `full_exe`).
    pub fn start(full: PathBuf, config: ServicesConfig, fds: ServiceFds, kill: Kill) -> Result<Services, Failure> {
        let (finish_r, finish_w) = clawkeep_sandbox::sys::pipe().map_err(io_failure("pipe"))?;
        let (done_tx, done) = std::sync::mpsc::channel();
        let pid: Arc<std::sync::Mutex<libc::pid_t>> = Arc::default();
        let child_pid = pid.clone();
        std::thread::Builder::new()
            .name("clawkeep-services".into())
            .spawn(move || {
                watch(full, config, fds, finish_r, kill, &child_pid);
                let _ = done_tx.send(());
            })
            .map_err(|e| Failure::runtime(format!("cannot start the services' watcher thread: {e}")))?;
        Ok(Services { finish: Some(finish_w), done, pid })
    }

    /// Ends the services: they record what is in flight and exit (see
    /// the module docs); waits for that, at most `FINISH_LIMIT`.
    pub fn finish(mut self) {
        drop(self.finish.take());
        if self.done.recv_timeout(FINISH_LIMIT).is_err() {
            let pid = self.pid.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *pid > 0 {
                eprintln!("clawkeep: warning: the run's gate and proxy did not finish recording in time; stopped");
                // SAFETY: pid is our child and not reaped: the watcher
                // clears it under this lock before it reaps.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
                drop(pid);
                let _ = self.done.recv_timeout(FINISH_LIMIT);
            }
        }
    }
}

/// The watcher thread: see `Services::start`.
fn watch(full: PathBuf, config: ServicesConfig, fds: ServiceFds, finish: OwnedFd, kill: Kill, pid: &std::sync::Mutex<libc::pid_t>) {
    // The jail's init opens the proxy's listener while it sets up.
    let proxy = fds.proxy_chan.as_ref().and_then(|c| proxy_run::recv_listener(c.as_raw_fd()));
    let mut config = config;
    if proxy.is_none() {
        // None came: the jail failed first (its own report says why).
        config.proxy = None;
    }
    if config.api_tcp.is_none() {
        let mut watched = vec![fds.gate.as_raw_fd(), fds.api.as_raw_fd(), finish.as_raw_fd()];
        watched.extend(proxy.as_ref().map(|l| l.as_raw_fd()));
        if gate_run::wait_any_readable(&watched) == Some(finish.as_raw_fd()) {
            // The run ended with nothing to serve.
            return;
        }
    }
    let spawned = spawn(&full, &mut config, &fds, &finish, proxy.as_ref().map(|l| l.as_raw_fd()));
    // The services hold their own copies now.
    drop((fds, proxy, finish));
    let (mut child, control) = match spawned {
        Ok(c) => c,
        Err(e) => {
            return eprintln!("clawkeep: warning: cannot start the run's gate and proxy ({e}); gated commands and model calls will fail")
        }
    };
    *pid.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = child.id() as libc::pid_t;
    serve_switch(control, &kill);
    // Waited for without reaping, so `finish` never signals a reused pid.
    // SAFETY: a zeroed siginfo_t is a valid out-buffer for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with a valid out-pointer.
    while unsafe { libc::waitid(libc::P_PID, child.id(), &mut info, libc::WEXITED | libc::WNOWAIT) } < 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
    *pid.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = 0;
    let _ = child.wait();
}

fn spawn(
    full: &Path,
    config: &mut ServicesConfig,
    fds: &ServiceFds,
    finish: &OwnedFd,
    proxy: Option<RawFd>,
) -> std::io::Result<(std::process::Child, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    let (config_r, config_w) = clawkeep_sandbox::sys::pipe()?;
    let opt = |fd: Option<RawFd>| fd.map(high).transpose();
    let (config_fd, control, finish, gate, api, exec) = (
        high(config_r.as_raw_fd())?,
        high(theirs.as_raw_fd())?,
        high(finish.as_raw_fd())?,
        high(fds.gate.as_raw_fd())?,
        high(fds.api.as_raw_fd())?,
        high(fds.exec.as_raw_fd())?,
    );
    let (prompt, proxy) = (opt(fds.prompt.as_ref().map(|f| f.as_raw_fd()))?, opt(proxy)?);
    drop((config_r, theirs));
    let raw = |f: &OwnedFd| f.as_raw_fd();
    config.fds = Fds {
        control: raw(&control),
        finish: raw(&finish),
        gate: raw(&gate),
        api: raw(&api),
        exec: raw(&exec),
        prompt: prompt.as_ref().map(raw),
        proxy: proxy.as_ref().map(raw),
    };
    let passed: Vec<RawFd> =
        [&config_fd, &control, &finish, &gate, &api, &exec].into_iter().chain(prompt.iter()).chain(proxy.iter()).map(raw).collect();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut cmd = std::process::Command::new(full);
    cmd.arg(SERVICES_ARG).arg(raw(&config_fd).to_string()).stdin(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls (no allocation) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Ours alone stay open across the exec, at their numbers.
            for fd in &passed {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // With the launcher: this thread lives until the services end,
            // and the launcher's death (even -9) ends them.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            // The signals the launcher forwards to the agent (Ctrl-C at the
            // terminal reaches the whole process group) must not end the
            // services mid-run: they end when the run does.
            for sig in clawkeep_sandbox::init::FORWARDED {
                libc::signal(*sig, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop((config_fd, control, finish, gate, api, exec, prompt, proxy));
    let sent = serde_json::to_vec(&*config).map_err(std::io::Error::other).and_then(|text| std::fs::File::from(config_w).write_all(&text));
    if let Err(e) = sent {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok((child, ours))
}

/// Applies the services' kill-switch requests until they end.
fn serve_switch(control: UnixStream, kill: &Kill) {
    let Ok(mut reply) = control.try_clone() else { return };
    for line in BufReader::new(control).lines() {
        let Ok(line) = line else { return };
        let answer = match serde_json::from_str::<Switch>(&line) {
            Ok(s) => match kill(s) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("err {}", e.replace('\n', " ")),
            },
            Err(_) => "err unknown switch".to_string(),
        };
        if writeln!(reply, "{answer}").is_err() {
            return;
        }
    }
}

// ---- the services' side, in `clawkeep-full` ----

/// Takes a descriptor the launcher passed at `fd`.
fn adopt(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl on an integer fd has no memory-safety preconditions.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    let _ = clawkeep_sandbox::sys::set_cloexec(fd);
    // SAFETY: the launcher passed this descriptor for us alone.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Entry point of `clawkeep-full __run-services FD`.
pub fn services_main() -> u8 {
    crate::logging::init_default();
    match serve() {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("clawkeep: gate and proxy: {}; gated commands and model calls will fail", f.message);
            f.code
        }
    }
}

fn serve() -> Result<(), Failure> {
    let missing = |what: &str| Failure::runtime(format!("started without its {what} (it is started by `clawkeep run`)"));
    let config_fd = std::env::args().nth(2).and_then(|a| a.parse::<RawFd>().ok()).and_then(adopt).ok_or_else(|| missing("config"))?;
    let mut text = Vec::new();
    std::fs::File::from(config_fd).read_to_end(&mut text).map_err(io_failure("reading its config"))?;
    // The error names where, never what: the config holds a bearer token.
    let config: ServicesConfig = serde_json::from_slice(&text).map_err(|e| {
        Failure::runtime(format!(
            "its config is not what this clawkeep-full reads ({:?} at column {}); clawkeep and clawkeep-full come from different versions: install both from one build",
            e.classify(),
            e.column()
        ))
    })?;
    let fds = config.fds;
    let control = adopt(fds.control).ok_or_else(|| missing("control channel"))?;
    let finish = adopt(fds.finish).ok_or_else(|| missing("end pipe"))?;
    let gate_l = adopt(fds.gate).map(std::os::unix::net::UnixListener::from).ok_or_else(|| missing("gate socket"))?;
    let api_l = adopt(fds.api).map(std::os::unix::net::UnixListener::from).ok_or_else(|| missing("API socket"))?;
    let exec = adopt(fds.exec).ok_or_else(|| missing("executor channel"))?;
    let prompt = fds.prompt.and_then(adopt);
    let proxy_l = fds.proxy.and_then(adopt).map(std::net::TcpListener::from);

    let audit = Arc::new(clawkeep_audit::AuditLog::open(&config.audit).map_err(|e| Failure::runtime(e.to_string()))?);
    // What the launcher compiled, from the same text.
    let policy = match &config.policy {
        Some((path, text)) => gate_run::RunPolicy::Compiled(
            clawkeep_policy::Policy::parse(text, &path.display().to_string()).map_err(|e| Failure::usage(e.to_string()))?,
        ),
        None => gate_run::RunPolicy::Builtin,
    };
    let proxy = match (&config.proxy, proxy_l) {
        (Some(ProxySource::Builtin), Some(l)) => Some(ProxyServe::open(&config.state, None, l)?),
        (Some(ProxySource::File(path, text)), Some(l)) => Some(ProxyServe::open(&config.state, Some(&(path.clone(), text.clone())), l)?),
        _ => None,
    };
    let ledger = proxy.as_ref().map(ProxyServe::ledger);
    let kill = switch_client(control);
    let inflight: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let policy_path = config.policy.as_ref().map(|(p, _)| p.clone());
    let prep =
        gate_run::GatePrep::from_listeners(&config.state, &config.agent, config.gate_socket.clone(), gate_l, api_l, policy, policy_path)?;
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    let services = gate_run::Services { api_tcp: config.api_tcp.clone(), prompt, proxy, stop: Some((stop_rx, stopped_tx)) };
    let executor = gate_run::jail_executor(exec);
    gate_run::start(prep, &config.state, config.session.clone(), executor, kill, audit, inflight.clone(), services)?;
    // The end of the run: record what is in flight, let the API answer
    // what it is answering (the kill that ended the run, say), then exit
    // (the runtime's threads with us).
    let mut b = [0u8; 1];
    while clawkeep_sandbox::sys::read_some(finish.as_raw_fd(), &mut b).unwrap_or(0) > 0 {}
    gate_run::drain(&inflight, Duration::from_secs(5));
    if let Some(l) = ledger {
        l.flush();
    }
    let _ = stop.send(());
    let _ = stopped.recv_timeout(API_STOP_LIMIT);
    Ok(())
}

/// The kill switch as the services see it: a request to the launcher.
fn switch_client(control: OwnedFd) -> Kill {
    let stream = UnixStream::from(control);
    let reader = stream.try_clone().map(BufReader::new);
    let chan = std::sync::Mutex::new((stream, reader));
    Arc::new(move |s: Switch| {
        let mut guard = chan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (w, r) = &mut *guard;
        let r = r.as_mut().map_err(|e| format!("the launcher's channel: {e}"))?;
        let line = serde_json::to_string(&s).map_err(|e| e.to_string())?;
        writeln!(w, "{line}").map_err(|e| format!("the launcher is gone: {e}"))?;
        let mut answer = String::new();
        r.read_line(&mut answer).map_err(|e| format!("the launcher is gone: {e}"))?;
        match answer.trim_end() {
            "ok" => Ok(()),
            other => Err(other.strip_prefix("err ").unwrap_or("the launcher is gone").to_string()),
        }
    })
}
