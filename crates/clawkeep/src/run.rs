//! `clawkeep run`: one command in one jail, behaving like the command.

use crate::audit_cmd::audit_path;
use crate::cli::RunArgs;
use crate::gate_run;
use crate::proxy_run::{ProxyPrep, PROXY_PORT};
use crate::Failure;
use clawkeep_audit::AuditLog;
use clawkeep_core::{AgentEnv, Limits, RunSpec};
use clawkeep_sandbox::launcher::{Channels, Starting};
use clawkeep_sandbox::shims::GateMounts;
use clawkeep_sandbox::{Outcome, SandboxError};
use serde_json::json;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn run_id() -> String {
    clawkeep_sandbox::sys::random_hex()
}

/// The sandbox helper being started, and the launcher's ends of the
/// channels it was handed: the in-jail executor's, the terminal's
/// approval prompts (with a terminal on stdin), the proxy's listener.
pub struct HelperStart {
    exe: PathBuf,
    starting: Starting,
    exec_ours: OwnedFd,
    prompt_ours: Option<OwnedFd>,
    proxy_ours: OwnedFd,
    /// As root: where init gets the jail's /etc, made by us (see `send_etc`).
    etc_ours: Option<OwnedFd>,
}

impl HelperStart {
    /// Spawns the helper (the small `clawkeep-jail` beside us when it is
    /// installed, else this binary). `main` calls
    /// it for `clawkeep run` before the command line is parsed; dropped
    /// unused (a bad flag, `--help`, the vm backend), it sends the helper
    /// away.
    pub fn begin() -> Result<HelperStart, Failure> {
        let exe = std::env::current_exe().map_err(|e| Failure::runtime(format!("cannot find the clawkeep binary: {e}")))?;
        let io = |e: std::io::Error| Failure::runtime(e.to_string());
        let (exec_ours, exec_jail) = clawkeep_sandbox::exec_client::channel_pair().map_err(io)?;
        // With a terminal, a queued approval can also be answered there.
        let (prompt_ours, prompt_jail) = match clawkeep_sandbox::pty::terminal_size(0) {
            Some(_) => clawkeep_sandbox::exec_client::channel_pair().map(|(a, b)| (Some(a), Some(b))).map_err(io)?,
            None => (None, None),
        };
        // The jail's init sends the proxy's listener on this channel.
        let (proxy_ours, proxy_jail) = clawkeep_sandbox::sys::seqpacket_pair().map_err(io)?;
        // Only root can make a tmpfs outside the jail.
        // SAFETY: geteuid has no preconditions.
        let (etc_ours, etc_jail) = match unsafe { libc::geteuid() } == 0 {
            true => clawkeep_sandbox::sys::seqpacket_pair().map(|(a, b)| (Some(a), Some(b))).map_err(io)?,
            false => (None, None),
        };
        let helper_exe = exe.parent().map(|d| d.join("clawkeep-jail")).filter(|p| p.is_file()).unwrap_or_else(|| exe.clone());
        let chans = Channels { exec: Some(exec_jail), prompt: prompt_jail, proxy: Some(proxy_jail), etc: etc_jail };
        let starting = clawkeep_sandbox::launcher::start(&helper_exe, chans);
        Ok(HelperStart { exe, starting, exec_ours, prompt_ours, proxy_ours, etc_ours })
    }
}

/// A run's command must name something.
pub fn check_command(command: &[String]) -> Result<(), Failure> {
    match command.first() {
        None => Err(Failure::usage("no command given; usage: clawkeep run [OPTIONS] -- CMD [ARGS...]")),
        Some(c) if c.is_empty() => Err(Failure::usage("the command is an empty string; usage: clawkeep run [OPTIONS] -- CMD [ARGS...]")),
        Some(_) => Ok(()),
    }
}

/// A jail run (the vm backend is `vm_run`'s, in `clawkeep-full`).
pub fn run(state_dir: Option<PathBuf>, args: RunArgs, early: Option<HelperStart>) -> Result<u8, Failure> {
    check_command(&args.command)?;
    // Started before the command line was parsed (see `HelperStart`), or
    // now; either way its exec overlaps the launcher's own start-up.
    let HelperStart { exe, starting, exec_ours, prompt_ours, proxy_ours, etc_ours } = match early {
        Some(h) => h,
        None => HelperStart::begin()?,
    };
    // A run without the proxy hands the helper no port: it closes its end.
    let proxy_ours = (!args.no_proxy).then_some(proxy_ours);
    let run_id = run_id();
    let limits = Limits { memory_bytes: args.memory, pids: Some(args.pids), cpus: args.cpus };

    let policy_load = gate_run::PolicyLoad::start(args.policy.clone());
    let env = AgentEnv::build(|k| std::env::var(k).ok(), &args.env, &args.allow_secret_env).map_err(|e| Failure::usage(e.to_string()))?;
    let audit_file = audit_path(state_dir)?;
    let dir = audit_file.parent().map(PathBuf::from).unwrap_or_default();
    clawkeep_core::state_dir(&dir).map_err(|e| Failure::usage(e.to_string()))?;
    let log = Arc::new(AuditLog::open(&audit_file).map_err(|e| Failure::usage(e.to_string()))?);
    let api_tcp = api_tcp_arg(args.api_tcp)?;

    let workspace = match args.workspace {
        Some(w) => w,
        None => {
            std::env::current_dir().map_err(|e| Failure::usage(format!("cannot read the current directory ({e}); pass --workspace DIR")))?
        }
    };
    let agent = args.agent.clone().unwrap_or_else(|| format!("run-{}", &run_id[..8]));
    let mut gate = gate_run::prepare(&dir, &agent, args.policy.clone())?;
    let mut proxy = match args.no_proxy {
        true => None,
        false => match ProxyPrep::prepare(&dir, &agent, &run_id, args.proxy_config.as_deref(), args.timeout, proxy_ours) {
            Ok(p) => Some(p),
            Err(f) => {
                gate_run::cleanup(&gate.dir);
                return Err(f);
            }
        },
    };
    let mut env_names = env.names();
    let mut env = env.into_pairs();
    for (k, v) in env.iter_mut() {
        if k == "PATH" {
            *v = format!("{}:{v}", clawkeep_shim::JAIL_SHIM_DIR);
        }
    }
    if let Some(p) = &proxy {
        p.apply_env(&mut env, &mut env_names);
    }
    let spec = RunSpec { run_id: run_id.clone(), argv: args.command, env, workspace, rootfs: args.rootfs, limits, timeout: args.timeout };
    let shim_binary = exe.parent().map(|d| d.join("clawkeep-shim")).filter(|p| p.is_file()).ok_or_else(|| {
        gate_run::cleanup(&gate.dir);
        Failure::runtime("clawkeep-shim was not found beside the clawkeep binary; install both together")
    })?;
    // The run's gate and proxy are served by it (see `services`).
    let full = crate::services::full_beside(&exe).inspect_err(|_| gate_run::cleanup(&gate.dir))?;
    let helper = starting.take().map_err(|e| {
        gate_run::cleanup(&gate.dir);
        Failure::runtime(e.to_string())
    })?;
    let plan = match clawkeep_sandbox::plan(spec, Some(audit_file.clone())) {
        Ok(mut p) => {
            // Compiled on its own thread while the helper started.
            let (policy, policy_text) = match policy_load.join() {
                Ok(pol) => pol,
                Err(f) => {
                    gate_run::cleanup(&gate.dir);
                    helper.abort();
                    p.cleanup();
                    return Err(f);
                }
            };
            p.cfg.gate = Some(GateMounts { shim_binary, socket: gate.gate_socket.clone(), commands: policy.gated_commands() });
            // A --rootfs tree brings its own /etc.
            p.cfg.prepared_etc = etc_ours.is_some() && p.cfg.spec.rootfs.is_none();
            p.cfg.plan_cache = Some(dir.join("plan-cache"));
            p.cfg.proxy_port = proxy.as_ref().map(|_| PROXY_PORT);
            gate.policy = Some(policy);
            gate.policy_text = policy_text;
            p
        }
        Err(e) => {
            gate_run::cleanup(&gate.dir);
            helper.abort();
            return Err(match e {
                SandboxError::Workspace { .. } | SandboxError::Rootfs { .. } => Failure::usage(e.to_string()),
                other => Failure::runtime(other.to_string()),
            });
        }
    };
    for d in &plan.degraded {
        eprintln!("clawkeep: warning: {} does not hold: {}", d.guarantee, d.reason);
    }
    let spec = &plan.cfg.spec;
    // The helper gets its config first, so the jail is set up while the
    // start event is written and fsync'd; the command itself execs only
    // once the event is on disk, so an operator can always see what ran.
    let launch = plan.launch_spawned(helper);
    let start = log.append_deferred(
        "run.start",
        json!({
            "run_id": spec.run_id,
            "argv": spec.argv,
            "env_names": env_names,
            "workspace": spec.workspace,
            "rootfs": spec.rootfs,
            "limits": spec.limits,
            "timeout_ms": spec.timeout.map(|t| t.as_millis() as u64),
            "uid": unsafe_uid(),
            "isolation": plan.isolation(),
            "agent": agent,
            "policy": args.policy,
            "gated": gate.policy.as_ref().map(|p| p.gated_commands()),
            "proxy": proxy.as_ref().map(ProxyPrep::describe),
        }),
    );
    if let Err(e) = start {
        if let Ok(launched) = launch {
            launched.abort();
        }
        gate_run::cleanup(&gate.dir);
        plan.cleanup();
        return Err(Failure::runtime(format!("{e}; the command was not started")));
    }
    // Made on a thread of its own while this one waits on the start
    // event's fsync: the exec waits for that fsync, init for the /etc.
    let etc_thread = spawn_etc(etc_ours.filter(|_| plan.cfg.prepared_etc && launch.is_ok()), dir.join("etc-cache"));
    // The kept /etc's lock, held until the run ends.
    let mut _etc_held = None;

    let t0 = Instant::now();
    let gate_dir = gate.dir.clone();
    // Reaped after the exit event: the helper removes the cgroups meanwhile.
    let mut ending = None;
    // The gate, the API and the proxy (started on the first connection).
    let mut services = None;
    let result = match launch {
        Err(e) => Err(e),
        Ok(mut launched) => match log.sync() {
            Err(e) => {
                launched.abort();
                gate_run::cleanup(&gate_dir);
                plan.cleanup();
                return Err(Failure::runtime(format!("{e}; the command was not started")));
            }
            // A helper that already failed set-up reports why in wait().
            Ok(()) => {
                let cgroups = plan.cfg.cgroups.clone();
                let killer = launched.killer().ok();
                let kill: crate::services::Kill = Arc::new(move |s| match s {
                    clawkeep_gate::Switch::Freeze => cgroups.freeze(true).map_err(|e| format!("cannot freeze: {e}")),
                    clawkeep_gate::Switch::Thaw => cgroups.freeze(false).map_err(|e| format!("cannot thaw: {e}")),
                    clawkeep_gate::Switch::Kill => {
                        // Frozen tasks do not die until thawed.
                        let _ = cgroups.freeze(false);
                        killer.as_ref().map(|k| k()).ok_or_else(|| "the jail's lifeline is gone".to_string())
                    }
                });
                let _ = launched.proceed();
                // Shims that connect before the services are up wait in the
                // socket's backlog; starting them after the agent keeps them
                // off the start-up path (see `services`).
                match start_services(full, &gate, &dir, &audit_file, &run_id, api_tcp, proxy.as_mut(), exec_ours, prompt_ours, kill) {
                    Ok(s) => services = Some(s),
                    Err(f) => eprintln!("clawkeep: warning: {}; gated commands will fail", f.message),
                }
                // Cgroups that killed runs left behind, swept while the agent runs.
                plan.sweep_stale_cgroups();
                let report = launched.wait();
                if let Some(t) = etc_thread {
                    _etc_held = t.join().ok().flatten();
                }
                ending = Some(launched);
                report
            }
        },
    };
    // The last gated command's records are written after its shim got
    // the answer, and the proxy's open requests settle: the services end
    // once they are recorded, before the run's own exit record.
    if let Some(s) = services {
        s.finish();
    }
    // The helper removes the cgroups before it reports; without a report
    // (it died), the launcher does.
    if result.is_err() {
        plan.cleanup();
    }
    let duration_ms = t0.elapsed().as_millis() as u64;

    let (code, exit_fields) = match &result {
        Ok(report) => {
            let code = report.outcome.exit_code();
            let fields = json!({
                "run_id": spec.run_id,
                "outcome": report.outcome,
                "exit_code": code,
                "duration_ms": duration_ms,
                "peak_memory_bytes": report.peak_memory_bytes,
                "peak_pids": report.peak_pids,
                "oom_killed": report.oom_killed,
                "landlock": report.landlock,
            });
            (code, fields)
        }
        Err(e) => (1, json!({"run_id": spec.run_id, "error": e.to_string(), "exit_code": 1, "duration_ms": duration_ms})),
    };
    if let Err(e) = log.append("run.exit", exit_fields) {
        eprintln!("clawkeep: warning: the exit event could not be recorded: {e}");
    }
    // Removed after the exit event is on disk: the fsync commits the
    // file system's journal, which would otherwise carry these too.
    gate_run::cleanup(&gate_dir);
    if let Some(helper) = ending {
        helper.reap();
    }
    match result {
        Err(e) => Err(Failure::runtime(e.to_string())),
        Ok(report) => {
            match &report.outcome {
                Outcome::SetupFailed { failure } => {
                    return Err(Failure::runtime(format!("{failure}; run 'clawkeep doctor' to see what this host supports")))
                }
                Outcome::ExecFailed { path, errno, message } => {
                    let what = if *errno == libc::ENOENT { "command not found in the jail".to_string() } else { message.clone() };
                    eprintln!("clawkeep: {path}: {what}");
                }
                Outcome::TimedOut => eprintln!("clawkeep: timed out after {:?}; the command was killed", spec.timeout.unwrap_or_default()),
                Outcome::Signaled { signal: 9 } if report.oom_killed => {
                    eprintln!("clawkeep: the command was killed at its memory limit")
                }
                _ => {}
            }
            Ok(code.clamp(0, 255) as u8)
        }
    }
}

/// The run's services (see `services`): what they serve and where.
#[allow(clippy::too_many_arguments)] // each is one distinct piece the run owns
fn start_services(
    full: PathBuf,
    gate: &gate_run::GatePrep,
    state: &std::path::Path,
    audit: &std::path::Path,
    run_id: &str,
    api_tcp: Option<(std::net::SocketAddr, String)>,
    proxy: Option<&mut ProxyPrep>,
    exec: OwnedFd,
    prompt: Option<OwnedFd>,
    kill: crate::services::Kill,
) -> Result<crate::services::Services, Failure> {
    let (gate_fd, api_fd) = gate.listeners();
    let copy = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map_err(|e| Failure::runtime(format!("the gate's socket: {e}")));
    let config = crate::services::ServicesConfig {
        state: state.to_path_buf(),
        audit: audit.to_path_buf(),
        agent: gate.agent.clone(),
        session: run_id.to_string(),
        gate_socket: gate.gate_socket.clone(),
        policy: gate.policy_path().map(std::path::Path::to_path_buf).zip(gate.policy_text.clone()),
        api_tcp,
        proxy: proxy.as_ref().map(|p| match &p.file {
            Some((path, text)) => crate::services::ProxySource::File(path.clone(), text.clone()),
            None => crate::services::ProxySource::Builtin,
        }),
        fds: Default::default(),
    };
    let fds = crate::services::ServiceFds {
        gate: copy(gate_fd)?,
        api: copy(api_fd)?,
        exec,
        prompt,
        proxy_chan: proxy.and_then(ProxyPrep::take_chan),
    };
    crate::services::Services::start(full, config, fds, kill)
}

/// Makes the jail's /etc (see `mounts::PreparedEtc`) while the helper
/// clones the jail and init starts its root, and sends it to init. If it
/// cannot be made, nothing is sent: the channel closes and init writes
/// /etc itself (and says what failed, if it fails there too). Returns the
/// kept generation's lock, to hold until the run ends.
fn send_etc(chan: OwnedFd, cache: PathBuf) -> Option<OwnedFd> {
    let sent = clawkeep_sandbox::mounts::prepare_etc(Some(&cache)).map_err(|f| f.to_string()).and_then(|etc| {
        clawkeep_sandbox::mounts::send_prepared_etc(chan.as_raw_fd(), &etc).map(|()| etc.into_held()).map_err(|e| e.to_string())
    });
    sent.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "the jail's /etc was not made outside the jail; init writes it");
        None
    })
}

/// Runs [`send_etc`] on a thread of its own: the file-system ids it takes
/// are that thread's alone. If no thread can start, the channel closes
/// unused and init writes /etc itself. `cache` is where /etc is kept
/// between runs (`etc-cache` in the state dir).
fn spawn_etc(chan: Option<OwnedFd>, cache: PathBuf) -> Option<std::thread::JoinHandle<Option<OwnedFd>>> {
    let chan = chan?;
    std::thread::Builder::new().name("clawkeep-etc".into()).spawn(move || send_etc(chan, cache)).ok()
}

/// `--api-tcp ADDR` checked: loopback only, and CLAWKEEP_API_TOKEN (at
/// least 16 characters) is the bearer token it will demand.
pub(crate) fn api_tcp_arg(addr: Option<std::net::SocketAddr>) -> Result<Option<(std::net::SocketAddr, String)>, Failure> {
    match addr {
        None => Ok(None),
        Some(addr) if !addr.ip().is_loopback() => {
            Err(Failure::usage(format!("--api-tcp {addr} is not a loopback address; the API only listens on 127.0.0.1 or ::1")))
        }
        Some(addr) => match std::env::var("CLAWKEEP_API_TOKEN") {
            Ok(t) if t.len() >= 16 => Ok(Some((addr, t))),
            _ => Err(Failure::usage("--api-tcp needs CLAWKEEP_API_TOKEN set to a token of at least 16 characters")),
        },
    }
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}
