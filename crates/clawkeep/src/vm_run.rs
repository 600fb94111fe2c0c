//! `clawkeep run --backend vm --image NAME`: one command in one microVM,
//! behaving like the command (stdio streamed, its exit code, 128+N when
//! killed by signal N, SIGINT/SIGTERM/SIGHUP forwarded, 124 on --timeout).
//!
//! When clawkeep's stdin is a terminal the command gets one too, as in
//! the jail: a pty in the guest of the user's size, following it on
//! SIGWINCH. The user's terminal is in raw mode while the command runs
//! (restored on every way out of [`run_in_vm`] but SIGKILL), so its keys
//! reach the guest as bytes: Ctrl-C is the guest terminal's SIGINT for
//! the command's foreground process group, not this process's.
//!
//! The image is verified (and its signature checked when a key is
//! trusted) before anything boots; the run is recorded as `run.start` /
//! `run.exit`; the VM, its socket, its disks and every temp file are gone
//! when this returns.
//!
//! Gated commands work as in the jail: the policy (`--policy FILE` or the
//! built-in default) names them, the guest masks them with its shim before
//! the command starts, and the agent's gate (same Gate, store and operator
//! API as a jail agent) decides; approved ones run in the guest through
//! [`vm_gate::VmExecutor`].

#[path = "vm_gate.rs"]
mod vm_gate;

use crate::cli::RunArgs;
use crate::gate_run;
use crate::proxy_run::{ProxyPrep, PROXY_PORT};
use crate::vm_signals::{block_taken, take_signals, Signals};
use crate::Failure;
use clawkeep_audit::AuditLog;
use clawkeep_core::AgentEnv;
use clawkeep_image::{trust, ImageError, ImageStore};
use clawkeep_sandbox::backend::{AgentSpec, Backend, BackendError, Event, ExecSpec, ProcessControl, VmBackend};
use clawkeep_sandbox::pty;
use clawkeep_sandbox::vm::{disk, kvm, Accel, Service, VmConfig, VmError, Vmm};
use serde_json::json;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The uid/gid commands run as inside the guest.
const AGENT_ID: u32 = 1000;

/// After --timeout, how long the command has to die on the channel's
/// SIGKILL before the VMM itself is killed.
const TIMEOUT_GRACE: Duration = Duration::from_secs(3);

fn ready_timeout(accel: Accel) -> Duration {
    let secs = std::env::var("CLAWKEEP_VM_READY_TIMEOUT").ok().and_then(|v| v.parse::<u64>().ok());
    Duration::from_secs(secs.unwrap_or(match accel {
        Accel::Kvm => 20,
        Accel::Tcg => 60,
    }))
}

fn image_failure(e: ImageError) -> Failure {
    match e {
        ImageError::NotFound { .. } => Failure::usage(format!("{e}; build one with `clawkeep image build --name NAME`")),
        other if other.is_usage() => Failure::usage(format!("the image cannot be used: {other}")),
        other => Failure::runtime(format!("the image cannot be used: {other}")),
    }
}

pub fn run(state_dir: Option<PathBuf>, args: RunArgs) -> Result<u8, Failure> {
    let name = args.image.clone().ok_or_else(|| Failure::usage("--backend vm needs --image NAME (see 'clawkeep image list')"))?;
    // Jail-only options are refused rather than silently ignored.
    if args.rootfs.is_some() {
        return Err(Failure::usage("--rootfs does not apply to --backend vm (the VM's root is its image); drop it or use --backend jail"));
    }
    let api_tcp = crate::run::api_tcp_arg(args.api_tcp)?;
    // Signals are taken by one thread (sigwait) and forwarded to the
    // guest; blocked before any other thread exists (the proxy's, the
    // channel's) so none of those gets one. One that arrives before the
    // command runs abandons the boot (SIGWINCH never does: it is a resize).
    block_taken();
    let policy_load = gate_run::PolicyLoad::start(args.policy.clone());
    let signals = Arc::new(Signals::default());
    take_signals(signals.clone());
    let env = AgentEnv::build(|k| std::env::var(k).ok(), &args.env, &args.allow_secret_env).map_err(|e| Failure::usage(e.to_string()))?;
    let state = crate::audit_cmd::state_root(state_dir)?;
    clawkeep_core::state_dir(&state).map_err(|e| Failure::usage(e.to_string()))?;
    let log = Arc::new(AuditLog::open(&state.join("audit.jsonl")).map_err(|e| Failure::usage(e.to_string()))?);
    if let Some(w) = &args.workspace {
        if !w.is_dir() {
            return Err(Failure::usage(format!("--workspace {} is not a directory", w.display())));
        }
    }

    // A broken policy file fails before anything boots.
    let (policy, _) = policy_load.join()?;
    let key = trust::configured_pubkey(&state).map_err(image_failure)?;
    let image = ImageStore::new(&state).open(&name).and_then(|i| i.verify(key.as_ref())).map_err(image_failure)?;
    let mut cfg = VmConfig {
        // The uncompressed ELF boots through PVH without decompressing
        // itself: seconds faster under TCG.
        kernel: image.vmlinux.clone().unwrap_or_else(|| image.kernel.clone()),
        initramfs: image.initramfs.clone(),
        rootfs: image.rootfs.clone(),
        cmdline: image.cmdline.clone(),
        memory_mib: args.memory.map(|b| (b >> 20).max(128)).unwrap_or(512),
        cpus: args.cpus.map(|c| c.ceil() as u32).unwrap_or(1).max(1),
        accel: Accel::Tcg,
        runtime_disk_mib: 256,
        workspace_disk: None,
        run_root: state.join("vm").join("run"),
        ready_timeout: Duration::ZERO,
        relays: HashMap::new(),
        cancel: None,
        vmm: Vmm::Qemu,
    };
    // CLAWKEEP_VMM=firecracker boots the same image under Firecracker
    // (KVM only, the image's vmlinux, the channel on vsock).
    let accel = match std::env::var("CLAWKEEP_VMM").as_deref() {
        Ok("firecracker") => {
            if image.vmlinux.is_none() {
                return Err(Failure::usage(format!("image {name} has no vmlinux, which Firecracker needs; rebuild it")));
            }
            cfg.vmm = Vmm::Firecracker;
            Accel::Kvm
        }
        Ok("qemu") | Ok("") | Err(_) => {
            let (accel, verdict) = kvm::choose(&state, &VmConfig { ready_timeout: kvm::BOOT_TEST_TIMEOUT, ..cfg.clone() });
            if accel == Accel::Tcg {
                let why = if verdict.detail.len() > 80 { "see 'clawkeep doctor'" } else { verdict.detail.as_str() };
                eprintln!("clawkeep: warning: KVM is not usable here ({why}); booting under TCG emulation, start-up takes several seconds");
            }
            accel
        }
        Ok(other) => return Err(Failure::usage(format!("CLAWKEEP_VMM={other} is not a VMM; use qemu or firecracker"))),
    };
    cfg.accel = accel;
    cfg.ready_timeout = ready_timeout(accel);

    let run_id = crate::run::run_id();
    let agent = args.agent.clone().unwrap_or_else(|| format!("run-{}", &run_id[..8]));
    let mut env_names = env.names();
    let mut env = env.into_pairs();
    // The proxy: the guest's 127.0.0.1:PROXY_PORT is relayed over the
    // channel to a host Unix socket this process serves; the agent gets its
    // own token and the proxy's URL, never a provider key.
    let proxy = if args.no_proxy {
        None
    } else {
        // Its token is bound to this run: valid at this run's proxy only.
        let prep = ProxyPrep::prepare(&state, &agent, &run_id, args.proxy_config.as_deref(), args.timeout, None)?;
        prep.apply_env(&mut env, &mut env_names);
        let dir = disk::private_dir(&cfg.run_root, "px").map_err(|e| Failure::runtime(format!("proxy socket directory: {e}")))?;
        Some((prep.describe(), dir, prep))
    };
    if let Some((_, dir, _)) = &proxy {
        cfg.cmdline = format!("{} clawkeep.proxyport={PROXY_PORT}", cfg.cmdline);
        cfg.relays.insert(Service::Proxy, dir.join("proxy.sock"));
    }
    // The gate: the agent's sockets (so `clawkeep approvals` and friends
    // find it) and the policy; the guest's `gate` relay reaches gate.sock.
    let gate = match gate_run::prepare(&state, &agent, args.policy.clone()) {
        Ok(mut g) => {
            g.policy = Some(policy);
            g
        }
        Err(f) => {
            if let Some((_, dir, _)) = &proxy {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(f);
        }
    };
    let gated = gate.policy.as_ref().map(|p| p.gated_commands()).unwrap_or_default();
    cfg.relays.insert(Service::Gate, gate.gate_socket.clone());
    let start = json!({
        "run_id": run_id,
        "backend": "vm",
        "accel": accel,
        "vmm": cfg.vmm,
        "image": name,
        "root_hash": image.manifest.rootfs.root_hash,
        "signed": key.is_some(),
        "argv": args.command,
        "env_names": env_names,
        "workspace": args.workspace,
        "memory_mib": cfg.memory_mib,
        "cpus": cfg.cpus,
        "timeout_ms": args.timeout.map(|t| t.as_millis() as u64),
        "agent": agent,
        "policy": args.policy,
        "gated": gated,
        "proxy": proxy.as_ref().map(|p| &p.0),
        "isolation": "vm",
    });
    let gate_dir = gate.dir.clone();
    let mut gate = gate;
    // The agent's name is the run's until its sockets are removed.
    let agent_lock = gate.take_lock();
    let (proxy_dir, usage_ledger) = match proxy {
        Some((_, dir, prep)) => {
            let ledger = match prep.serve_unix(&state, agent.clone(), run_id.clone(), log.clone(), &dir.join("proxy.sock")) {
                Ok(l) => l,
                Err(f) => {
                    gate_run::cleanup(&gate_dir);
                    return Err(f);
                }
            };
            (Some(dir), Some(ledger))
        }
        None => (None, None),
    };
    let started = log.append("run.start", start);
    if let Err(e) = started {
        proxy_dir.map(std::fs::remove_dir_all);
        gate_run::cleanup(&gate_dir);
        return Err(Failure::runtime(format!("{e}; the command was not started")));
    }
    let executor = vm_gate::VmExecutor::default();
    let inflight: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    // The kill switch: kill ends the agent's command (the VM goes down with
    // it); freeze and thaw stop and resume the whole VM.
    let kill: Arc<dyn Fn(clawkeep_gate::Switch) -> Result<(), String> + Send + Sync> = {
        let signals = signals.clone();
        Arc::new(move |s| match s {
            clawkeep_gate::Switch::Kill => {
                // A frozen guest would never read the kill off the channel.
                let _ = signals.pause_vmm(false);
                signals.deliver(libc::SIGKILL);
                Ok(())
            }
            clawkeep_gate::Switch::Freeze => signals.pause_vmm(true),
            clawkeep_gate::Switch::Thaw => signals.pause_vmm(false),
        })
    };
    let services = gate_run::Services { api_tcp, prompt: None, proxy: None, stop: None };
    if let Err(f) = gate_run::start(gate, &state, run_id.clone(), Arc::new(executor.clone()), kill, log.clone(), inflight.clone(), services)
    {
        eprintln!("clawkeep: warning: {}; gated commands will fail", f.message);
    }

    cfg.cancel = Some(signals.cancel.clone());
    let t0 = Instant::now();
    let mut backend = VmBackend::new(cfg);
    let gating = vm_gate::Gating { commands: gated, executor };
    let result = run_in_vm(&mut backend, &args, env, &signals, &gating);
    // The last gated command's records are written after its shim got
    // the answer: wait for them before the run's own exit record.
    gate_run::drain(&inflight, Duration::from_secs(5));
    gate_run::cleanup(&gate_dir);
    drop(agent_lock);
    let stopped = backend.stop();
    let _ = backend.destroy();
    // The guest's connections are closed now: its last requests settle.
    if let Some(l) = &usage_ledger {
        l.flush();
    }
    if let Some(dir) = proxy_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let duration_ms = t0.elapsed().as_millis() as u64;

    let (code, fields) = match (&result, &stopped) {
        (Ok(r), Ok(())) => (
            r.code,
            json!({"run_id": run_id, "exit_code": r.code, "signal": r.signal, "timed_out": r.timed_out, "boot_ms": r.boot_ms, "duration_ms": duration_ms}),
        ),
        (Ok(r), Err(e)) => {
            (1, json!({"run_id": run_id, "exit_code": 1, "command_exit_code": r.code, "error": e.to_string(), "duration_ms": duration_ms}))
        }
        (Err(f), _) => (1, json!({"run_id": run_id, "exit_code": 1, "error": f.message, "duration_ms": duration_ms})),
    };
    if let Err(e) = log.append("run.exit", fields) {
        eprintln!("clawkeep: warning: the exit event could not be recorded: {e}");
    }
    let r = result?;
    if let Err(e) = stopped {
        return Err(Failure::runtime(format!("the command exited {} but the workspace could not be brought back: {e}", r.code)));
    }
    if r.timed_out {
        eprintln!("clawkeep: timed out after {:?}; the command was killed", args.timeout.unwrap_or_default());
    }
    Ok(code.clamp(0, 255) as u8)
}

struct RunResult {
    code: i32,
    signal: Option<i32>,
    timed_out: bool,
    boot_ms: u64,
}

fn run_in_vm(
    backend: &mut VmBackend,
    args: &RunArgs,
    env: Vec<(String, String)>,
    signals: &Signals,
    gating: &vm_gate::Gating,
) -> Result<RunResult, Failure> {
    let spec = AgentSpec { name: "run".into(), workspace: args.workspace.clone() };
    backend.create(&spec).map_err(|e| Failure::runtime(e.to_string()))?;
    match backend.start() {
        Ok(()) => {}
        Err(BackendError::Vm(VmError::Cancelled)) => {
            let sig = signals.early.load(Ordering::SeqCst);
            eprintln!("clawkeep: interrupted (signal {sig}) while the VM was booting; nothing ran");
            return Ok(RunResult { code: 128 + sig, signal: Some(sig), timed_out: false, boot_ms: 0 });
        }
        Err(e) => return Err(Failure::runtime(e.to_string())),
    }
    let boot_ms = backend.vm().map(|v| v.boot_time.as_millis() as u64).unwrap_or(0);
    if let Some(pid) = backend.vm().and_then(|v| v.pid()) {
        signals.vmm.store(pid as i32, Ordering::SeqCst);
    }
    // Fail closed: no command runs before its gated commands are masked.
    gating.setup(backend.vm().ok_or_else(|| Failure::runtime("the VM is not running"))?).map_err(Failure::runtime)?;
    let tty = pty::terminal_size(0);
    let cmd = ExecSpec { argv: args.command.clone(), env, cwd: Some("/workspace".into()), uid: AGENT_ID, gid: AGENT_ID, tty };
    let mut proc = backend.exec(&cmd).map_err(|e| Failure::runtime(e.to_string()))?;
    if tty.is_some() && !proc.tty() {
        let image = args.image.as_deref().unwrap_or_default();
        eprintln!("clawkeep: warning: image {image}'s guest predates terminals, so the command runs without one; rebuild the image");
    }
    // Held to the end of this function: every return restores the terminal.
    let raw = if proc.tty() { pty::RawMode::enter(0) } else { None };
    let control: Arc<dyn ProcessControl> = Arc::from(proc.control());
    forward_stdin(control.clone());
    signals.attach(control.clone());
    let timed_out = Arc::new(AtomicBool::new(false));
    if let Some(t) = args.timeout {
        let (c, flag) = (control.clone(), timed_out.clone());
        let vmm = signals.vmm.load(Ordering::SeqCst);
        std::thread::spawn(move || {
            std::thread::sleep(t);
            flag.store(true, Ordering::SeqCst);
            // The kill travels on the channel, which the guest can jam; if
            // the command is not gone soon after, the VMM itself is killed.
            std::thread::spawn(move || {
                let _ = c.signal(libc::SIGKILL);
            });
            std::thread::sleep(TIMEOUT_GRACE);
            if vmm > 0 {
                // SAFETY: kill has no memory-safety preconditions. After
                // a normal exit the run is over and this process gone.
                unsafe { libc::kill(vmm, libc::SIGKILL) };
            }
        });
    }
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    loop {
        let next = match proc.next() {
            Ok(ev) => ev,
            // The VMM was killed on purpose: the run ends as the command would have.
            Err(_) if timed_out.load(Ordering::SeqCst) => return Ok(RunResult { code: 124, signal: None, timed_out: true, boot_ms }),
            Err(_) if signals.hard_killed.load(Ordering::SeqCst) != 0 => {
                let sig = signals.hard_killed.load(Ordering::SeqCst);
                return Ok(RunResult { code: 128 + sig, signal: Some(sig), timed_out: false, boot_ms });
            }
            Err(e) => return Err(Failure::runtime(format!("the VM stopped answering: {e}"))),
        };
        match next {
            Event::Started { .. } => {}
            Event::Stdout(d) => {
                let _ = out.write_all(&d).and_then(|_| out.flush());
            }
            Event::Stderr(d) => {
                let _ = err.write_all(&d);
            }
            // A raw terminal moves down on \n without going back to the start of the line.
            Event::Error(m) => eprint!("clawkeep: {m}{}", if raw.is_some() { "\r\n" } else { "\n" }),
            Event::Exit { code, signal } => {
                let timed_out = timed_out.load(Ordering::SeqCst);
                // Never trust the guest's numbers with arithmetic that can overflow.
                let code = if timed_out { 124 } else { code.unwrap_or_else(|| signal.unwrap_or(0).clamp(0, 127) + 128) };
                return Ok(RunResult { code, signal, timed_out, boot_ms });
            }
        }
    }
}

fn forward_stdin(control: Arc<dyn ProcessControl>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = control.stdin(&[]);
                    return;
                }
                Ok(n) => {
                    if control.stdin(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}
