//! The gate of a run: the agent's sockets (bound by the launcher), the
//! supervisor and the operator API on a runtime thread of their own (in a
//! jail run's services process, see `services`; in the vm run's own
//! process), and the executor adapter that sends approved commands into
//! the jail (the VM run brings its own executor, `vm_gate.rs`).

use crate::gate_cmd::{agent_dir, gate_db};
use crate::proxy_run::ProxyServe;
use crate::Failure;
use clawkeep_audit::AuditLog;
use clawkeep_gate::{Executor, Gate, GateConfig, Job, Outcome, RunningJob};
use clawkeep_policy::{Policy, PolicyHandle, ReloadEvent};
/// Removes the agent's sockets and dir after the run.
pub use clawkeep_sandbox::agent_dir::remove as cleanup;
use clawkeep_sandbox::agent_dir::{is_there, lock as lock_agent};
use clawkeep_sandbox::exec_client::{ExecClient, ExecJob, JobHandle};
use clawkeep_store::Store;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Sockets bound and the policy loaded; nothing runs yet.
pub struct GatePrep {
    pub agent: String,
    pub dir: PathBuf,
    pub gate_socket: PathBuf,
    gate_listener: UnixListener,
    api_listener: UnixListener,
    /// Set once the policy thread joined (see `PolicyLoad`).
    pub policy: Option<RunPolicy>,
    policy_path: Option<PathBuf>,
    /// The text `policy` was compiled from (a file's), for the services.
    pub policy_text: Option<String>,
    /// Held while the run lives: what tells a live agent from a stale one.
    _lock: Option<std::fs::File>,
}

/// The policy of a run, as far as start-up needs it.
pub enum RunPolicy {
    /// A policy file, compiled (and so checked) before the run started.
    Compiled(Policy),
    /// The built-in policy: only its command names are read at start-up;
    /// it is compiled when the gate first wakes (most runs never do).
    Builtin,
}

impl RunPolicy {
    /// The command names the jail covers with the shim.
    pub fn gated_commands(&self) -> Vec<String> {
        match self {
            RunPolicy::Compiled(p) => p.gated_commands(),
            RunPolicy::Builtin => Policy::builtin_gated_commands(),
        }
    }
}

/// Loads a policy file on its own thread (compiling its patterns overlaps
/// the rest of start-up; a bad file still stops the run before it starts);
/// join it with [`PolicyLoad::join`].
pub enum PolicyLoad {
    File(std::thread::JoinHandle<Result<(Policy, String), String>>),
    Builtin,
}

impl PolicyLoad {
    pub fn start(path: Option<PathBuf>) -> PolicyLoad {
        match path {
            Some(p) => PolicyLoad::File(std::thread::spawn(move || {
                let text = std::fs::read_to_string(&p)
                    .map_err(|source| clawkeep_policy::PolicyError::Io { path: p.clone(), source }.to_string())?;
                let policy = Policy::parse(&text, &p.display().to_string()).map_err(|e| e.to_string())?;
                Ok((policy, text))
            })),
            None => PolicyLoad::Builtin,
        }
    }

    /// The compiled policy and the text it was compiled from (none: the
    /// built-in policy).
    pub fn join(self) -> Result<(RunPolicy, Option<String>), Failure> {
        match self {
            PolicyLoad::Builtin => Ok((RunPolicy::Builtin, None)),
            PolicyLoad::File(t) => {
                let (policy, text) = t.join().map_err(|_| Failure::runtime("loading the policy panicked"))?.map_err(Failure::usage)?;
                Ok((RunPolicy::Compiled(policy), Some(text)))
            }
        }
    }
}

/// Makes the agent's dir and takes its lock for the run. Another run's
/// sweep holds the lock for a moment and may remove the dir between our
/// making and locking it: the lock must be on the dir that is there, and a
/// busy lock means a live run only once it stays busy.
fn claim_agent_dir(dir: &Path, agent: &str) -> Result<std::fs::File, Failure> {
    // Whether the last attempt found the name held (else the dir kept
    // going away under another run's sweep).
    let mut held = false;
    for attempt in 0..10 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // The runtime dir it is in may be removed by the last other run's
        // end meanwhile (see `cleanup`): made again on the next attempt.
        match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                held = false;
                continue;
            }
            Err(e) => return Err(Failure::usage(format!("cannot create {}: {e}; check the state dir's permissions", dir.display()))),
            Ok(()) => {}
        }
        match lock_agent(dir) {
            // A run of an older version held no lock: its API socket answers.
            Ok(Some(lock)) if is_there(&lock, dir) => match std::os::unix::net::UnixStream::connect(dir.join("api.sock")) {
                Ok(_) => {
                    held = true;
                    break;
                }
                Err(_) => return Ok(lock),
            },
            Ok(None) => held = true,
            Ok(Some(_)) => held = false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => held = false,
            Err(e) => return Err(Failure::usage(format!("cannot lock {}: {e}", dir.display()))),
        }
    }
    match held {
        true => Err(Failure::usage(format!("an agent named '{agent}' is already running; pick another --agent NAME"))),
        false => {
            Err(Failure::runtime(format!("{} kept being removed by other runs' clean-up while this one started; run again", dir.display())))
        }
    }
}

/// Removes the sockets of agents whose run was killed (-9) before it could
/// clean up: nobody holds their dir's lock, and (for a run of an older
/// version, which held none) nobody accepts on their API socket.
fn sweep_stale_agents(state: &Path) {
    let Ok(rd) = std::fs::read_dir(state.join("agents")) else { return };
    for e in rd.flatten() {
        let dir = e.path();
        let Ok(Some(held)) = lock_agent(&dir) else { continue };
        if !is_there(&held, &dir) {
            continue;
        }
        let api = dir.join("api.sock");
        if !api.exists() || std::os::unix::net::UnixStream::connect(&api).is_err() {
            cleanup(&dir);
        }
    }
}

impl GatePrep {
    /// The run's services rebuild it from the launcher's sockets.
    pub fn from_listeners(
        state: &Path,
        agent: &str,
        gate_socket: PathBuf,
        gate_listener: UnixListener,
        api_listener: UnixListener,
        policy: RunPolicy,
        policy_path: Option<PathBuf>,
    ) -> Result<GatePrep, Failure> {
        // Non-blocking already: the launcher's, shared through the exec.
        let listeners = (gate_listener, api_listener);
        Ok(GatePrep::assemble(agent, agent_dir(state, agent), gate_socket, listeners, Some(policy), policy_path, None))
    }

    fn assemble(
        agent: &str,
        dir: PathBuf,
        gate_socket: PathBuf,
        (gate_listener, api_listener): (UnixListener, UnixListener),
        policy: Option<RunPolicy>,
        policy_path: Option<PathBuf>,
        lock: Option<std::fs::File>,
    ) -> GatePrep {
        GatePrep {
            agent: agent.to_string(),
            dir,
            gate_socket,
            gate_listener,
            api_listener,
            policy,
            policy_path,
            policy_text: None,
            _lock: lock,
        }
    }

    /// The gate's and the API's listening sockets, for the run's services.
    pub fn listeners(&self) -> (std::os::fd::BorrowedFd<'_>, std::os::fd::BorrowedFd<'_>) {
        use std::os::fd::AsFd;
        (self.gate_listener.as_fd(), self.api_listener.as_fd())
    }

    /// The agent dir's lock, for a caller that hands the rest to `start`
    /// and must hold it until the run ends.
    pub fn take_lock(&mut self) -> Option<std::fs::File> {
        self._lock.take()
    }

    /// The policy file the run was given (none: the built-in policy).
    pub fn policy_path(&self) -> Option<&Path> {
        self.policy_path.as_deref()
    }
}

pub fn prepare(state: &Path, agent: &str, policy_path: Option<PathBuf>) -> Result<GatePrep, Failure> {
    sweep_stale_agents(state);
    let dir = crate::agents_dir::agents_root(state)?.join(agent);
    let api = dir.join("api.sock");
    let lock = claim_agent_dir(&dir, agent)?;
    let gate_socket = dir.join("gate.sock");
    for p in [&gate_socket, &api] {
        let _ = std::fs::remove_file(p);
    }
    let bind = |p: &Path, mode: u32| -> Result<UnixListener, Failure> {
        let l = UnixListener::bind(p).map_err(|e| Failure::runtime(format!("cannot bind {}: {e}", p.display())))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| Failure::runtime(e.to_string()))?;
        l.set_nonblocking(true).map_err(|e| Failure::runtime(e.to_string()))?;
        Ok(l)
    };
    // The jail's agent (another uid) must connect to gate.sock; the 0700
    // directory keeps everyone else out. api.sock is the operator's.
    let listeners = (bind(&gate_socket, 0o666)?, bind(&api, 0o600)?);
    Ok(GatePrep::assemble(agent, dir, gate_socket, listeners, None, policy_path, Some(lock)))
}

/// The jail's executor: approved commands go to the in-jail executor on
/// the helper's exec channel `exec`.
pub fn jail_executor(exec: OwnedFd) -> Arc<dyn Executor> {
    Arc::new(JailExec(ExecClient::new(exec)))
}

struct JailExec(ExecClient);
struct JobAdapter(JobHandle);

impl Executor for JailExec {
    fn submit(&self, job: &Job, stdio: [OwnedFd; 3]) -> Result<Box<dyn RunningJob>, String> {
        let ej = ExecJob {
            command: job.command.clone(),
            args: job.args.clone(),
            cwd: job.cwd.clone(),
            env: job.env.clone(),
            timeout_ms: job.timeout_ms,
            relay: job.relay,
        };
        let h = self.0.submit(&ej, [stdio[0].as_raw_fd(), stdio[1].as_raw_fd(), stdio[2].as_raw_fd()]).map_err(|e| e.to_string())?;
        Ok(Box::new(JobAdapter(h)))
    }
}

impl RunningJob for JobAdapter {
    fn release(&self) {
        self.0.release();
    }

    fn signaller(&self) -> Box<dyn Fn(i32) + Send + Sync> {
        Box::new(self.0.signaller())
    }

    fn wait(self: Box<Self>) -> Result<Outcome, String> {
        let o = self.0.wait()?;
        Ok(Outcome { exit_code: o.exit_code(), timed_out: o.timed_out, bytes_out: o.bytes_out })
    }
}

/// What else the run's runtime thread serves besides the gate.
pub struct Services {
    /// The operator API on loopback TCP, with its bearer token.
    pub api_tcp: Option<(std::net::SocketAddr, String)>,
    /// Approval prompts at the user's terminal.
    pub prompt: Option<OwnedFd>,
    /// The inference proxy, served on the jail's own loopback.
    pub proxy: Option<ProxyServe>,
    /// Ends the operator API gracefully (requests being answered, such as
    /// a kill that ended the run, get their answers); the sender is told
    /// when it has. None: it ends with the process.
    pub stop: Option<(tokio::sync::oneshot::Receiver<()>, std::sync::mpsc::Sender<()>)>,
}

/// Starts the supervisor, the API and the proxy on their own runtime thread.
#[allow(clippy::too_many_arguments)] // each is one distinct piece the run owns
pub fn start(
    prep: GatePrep,
    state: &Path,
    session: String,
    executor: Arc<dyn Executor>,
    kill: Arc<dyn Fn(clawkeep_gate::Switch) -> Result<(), String> + Send + Sync>,
    audit: Arc<AuditLog>,
    inflight: Arc<std::sync::atomic::AtomicUsize>,
    services: Services,
) -> Result<(), Failure> {
    let Services { api_tcp, prompt, proxy, stop } = services;
    let state_dir = state.to_path_buf();
    let db = gate_db(state);
    let GatePrep { agent, gate_socket, gate_listener, api_listener, policy, policy_path, .. } = prep;
    let policy = policy.ok_or_else(|| Failure::runtime("the gate started without a policy"))?;
    std::thread::Builder::new()
        .name("clawkeep-gate".into())
        .spawn(move || {
            let compiled = match policy {
                RunPolicy::Compiled(p) => Some(Arc::new(PolicyHandle::new(p))),
                RunPolicy::Builtin => None,
            };
            // A file is watched from the start, so an edit made before the
            // gate wakes is still seen as a change.
            if let (Some(handle), Some(p)) = (&compiled, &policy_path) {
                let shown = p.display().to_string();
                let _watch = handle.watch(p.clone(), Duration::from_millis(500), move |ev| {
                    if let ReloadEvent::Rejected { error } = ev {
                        eprintln!("clawkeep: policy {shown} not reloaded, the previous one stays: {error}");
                    }
                });
            }
            // Nothing else starts until someone waits on a socket: a shim,
            // the operator (each waits in its listen backlog meanwhile).
            // Most short runs never need any of it. (A jail run's services
            // start only once something waits; see `services`.)
            if api_tcp.is_none() {
                let mut fds = vec![gate_listener.as_raw_fd(), api_listener.as_raw_fd()];
                fds.extend(proxy.as_ref().map(ProxyServe::listener_fd));
                wait_any_readable(&fds);
            }
            // Someone is waiting: the runtime starts, and with it the
            // logging its proxy and gate warn through.
            crate::logging::init_default();
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return eprintln!("clawkeep: gate: cannot start its runtime: {e}"),
            };
            if let Some(p) = proxy {
                p.spawn(&rt, &state_dir, agent.clone(), session.clone(), audit.clone());
            }
            let store = match Store::open(&db) {
                Ok(s) => Arc::new(s),
                Err(e) => return eprintln!("clawkeep: gate: {e}; gated commands will fail"),
            };
            let handle = compiled.unwrap_or_else(|| Arc::new(PolicyHandle::new(Policy::builtin_default())));
            let gate = Gate::new(GateConfig {
                agent,
                session,
                socket: gate_socket,
                policy: handle,
                policy_path,
                store,
                audit: Some(audit),
                executor,
                request_timeout: Duration::from_secs(5),
                kill,
                inflight,
            });
            if let Some(p) = prompt {
                terminal_prompts(&rt, gate.clone(), p);
            }
            rt.block_on(async move {
                let Ok(gl) = tokio::net::UnixListener::from_std(gate_listener) else { return };
                let Ok(al) = tokio::net::UnixListener::from_std(api_listener) else { return };
                let g = gate.clone();
                tokio::spawn(async move { g.serve(gl).await });
                if let Some((addr, token)) = api_tcp {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(tl) => {
                            let app = clawkeep_gate::api::router(gate.clone(), Some(token));
                            tokio::spawn(async move { axum::serve(tl, app).await });
                        }
                        Err(e) => eprintln!("clawkeep: cannot serve the API on {addr}: {e}"),
                    }
                }
                let api = axum::serve(al, clawkeep_gate::api::router(gate, None));
                match stop {
                    Some((stop, stopped)) => {
                        let _ = api
                            .with_graceful_shutdown(async move {
                                let _ = stop.await;
                            })
                            .await;
                        let _ = stopped.send(());
                    }
                    None => {
                        let _ = api.await;
                    }
                }
            });
        })
        .map_err(|e| Failure::runtime(format!("cannot start the gate thread: {e}")))?;
    Ok(())
}

/// Blocks until one of `fds` is readable (a connection waits on it, or a
/// pipe's writer is gone); returns the first such, None if poll failed.
pub fn wait_any_readable(fds: &[std::os::fd::RawFd]) -> Option<std::os::fd::RawFd> {
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    loop {
        // SAFETY: pfds is a valid array of pollfd; -1 waits without a timeout.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) } >= 0 {
            return pfds.iter().find(|p| p.revents != 0).map(|p| p.fd);
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// Shows queued approvals at the user's terminal (through the helper,
/// which owns the terminal while it relays the agent's pty) and applies the
/// answers typed there.
fn terminal_prompts(rt: &tokio::runtime::Runtime, gate: Gate, chan: OwnedFd) {
    use clawkeep_gate::{GateEvent, Resolve};
    use clawkeep_sandbox::protocol::PromptMsg;
    let chan = Arc::new(chan);
    let send = {
        let chan = chan.clone();
        move |m: &PromptMsg| {
            if let Ok(bytes) = serde_json::to_vec(m) {
                // SAFETY: bytes is valid; one packet per message.
                unsafe { libc::send(chan.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
            }
        }
    };
    let mut events = gate.subscribe();
    rt.spawn(async move {
        while let Ok(ev) = events.recv().await {
            match ev {
                GateEvent::Queued { approval: a } => {
                    let cmd = clawkeep_gate::shown::command_line(&a.command, &a.args);
                    send(&PromptMsg::Ask { id: a.id, text: format!("{cmd} ({})", clawkeep_gate::shown::for_terminal(&a.reason)) });
                }
                GateEvent::Resolved { approval: a } => send(&PromptMsg::Cancel { id: a.id }),
                _ => {}
            }
        }
    });
    let _ = std::thread::Builder::new().name("clawkeep-prompts".into()).spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: buf is valid; one packet per message.
            let n = unsafe { libc::recv(chan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return;
            }
            if let Ok(PromptMsg::Answer { id, key }) = serde_json::from_slice(&buf[..n as usize]) {
                let scope = if key == 's' { clawkeep_store::Scope::Session } else { clawkeep_store::Scope::Once };
                let reason = (key == 'n').then(|| "denied at the terminal".to_string());
                let _ = gate.resolve(id, &Resolve { approve: key != 'n', scope, by: "terminal".into(), reason });
            }
        }
    });
}

/// Waits (up to `max`) for requests still being recorded.
pub fn drain(inflight: &std::sync::atomic::AtomicUsize, max: Duration) {
    let end = std::time::Instant::now() + max;
    while inflight.load(std::sync::atomic::Ordering::SeqCst) > 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}
