//! The Firecracker driver: one jailed `firecracker` process per microVM,
//! configured over its API socket, reached through its hybrid vsock.
//!
//! Lifecycle (`FirecrackerVm::spawn`): check the binary and /dev/kvm; build
//! the chroot (`jailer`); create the VM's cgroups; start firecracker with
//! `--api-sock` under the jailer's pre-exec steps; wait (bounded) for the API
//! socket to answer `GET /`; send the boot plan (boot source, drives `vda`
//! rootfs read-only, `vdb` runtime, `vdc` workspace, machine config, network,
//! vsock); `InstanceStart`. `shutdown` sends Ctrl-Alt-Del, waits (bounded),
//! then SIGKILLs; the cgroups and the VM directory are always removed, also
//! on `Drop`.
//!
//! Firecracker boots an uncompressed ELF kernel (`vmlinux`), not a bzImage.
//! This module is self-contained: `sandbox::Backend` wraps it.

pub mod api;
pub mod config;
pub mod error;
pub mod http;
pub mod jailer;
pub mod vsock;

#[cfg(test)]
mod fake_api;

pub use api::{ActionType, ApiClient, BootPlan, BootSource, Drive, InstanceInfo, MachineConfig, NetworkInterface, Vsock};
pub use config::{boot_plan, FirecrackerConfig, Tap, VmmPaths, DEFAULT_BOOT_ARGS};
pub use error::{FirecrackerError, JailStep, Result};
pub use jailer::{Chroot, VmmIds, FIRECRACKER_UID_BASE};

use super::console::{self, ConsoleLog};
use crate::cgroup::{run_cgroup_name, CgroupSet, Degraded, HostCgroups};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The API socket and the vsock socket, relative to the chroot.
const API_SOCK: &str = "run/firecracker.socket";
const VSOCK_SOCK: &str = "run/vsock.sock";

/// Finds `binary` (a path, or a bare name on PATH).
pub fn resolve_binary(binary: &Path) -> Result<PathBuf> {
    let not_found = || FirecrackerError::BinaryNotFound { binary: binary.to_path_buf() };
    let is_exe =
        |p: &Path| fs::metadata(p).is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0);
    if binary.components().count() > 1 {
        return if is_exe(binary) { Ok(binary.to_path_buf()) } else { Err(not_found()) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(binary)).find(|p| is_exe(p)).ok_or_else(not_found)
}

/// Whether /dev/kvm can be opened read-write (what Firecracker needs).
pub fn check_kvm() -> Result<()> {
    fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map(drop).map_err(|source| FirecrackerError::KvmUnavailable { source })
}

/// One running Firecracker microVM.
#[derive(Debug)]
pub struct FirecrackerVm {
    child: Child,
    /// The copy of its stdout and stderr into the log (see `console`).
    console: ConsoleLog,
    chroot: Chroot,
    cgroups: CgroupSet,
    api: ApiClient,
    vsock_uds: PathBuf,
    degraded: Vec<Degraded>,
    listeners: Vec<(u32, UnixListener)>,
    api_timeout: Duration,
    stop_timeout: Duration,
    torn_down: bool,
}

impl FirecrackerVm {
    /// Starts and boots the VM. On error nothing is left behind.
    ///
    /// The VMM gets SIGKILL when the *thread* that called `spawn` exits
    /// (PR_SET_PDEATHSIG follows the thread): call it from a thread that
    /// lives as long as the VM, not from a pool thread that may retire
    /// (e.g. tokio's `spawn_blocking`).
    pub fn spawn(config: &FirecrackerConfig) -> Result<Self> {
        config.validate()?;
        let binary = resolve_binary(&config.binary)?;
        check_kvm()?;
        // SAFETY: geteuid has no preconditions.
        if config.jail.is_some() && unsafe { libc::geteuid() } != 0 {
            return Err(FirecrackerError::NeedsRoot);
        }
        let mut chroot = Chroot::create(&config.state_dir.join(&config.id), config.jail)?;
        let (cgroups, degraded) =
            CgroupSet::create(&HostCgroups::detect(), &run_cgroup_name(std::process::id(), &format!("fc-{}", config.id)), &config.limits);
        let started =
            prepare_paths(config, &mut chroot).and_then(|paths| Ok((start_process(config, &binary, &mut chroot, &cgroups)?, paths)));
        let ((child, console), paths) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = cgroups.remove();
                let _ = chroot.remove();
                return Err(e);
            }
        };
        let mut vm = Self {
            api: ApiClient::new(chroot.root().join(API_SOCK), config.api_timeout),
            vsock_uds: chroot.root().join(VSOCK_SOCK),
            child,
            console,
            chroot,
            cgroups,
            degraded,
            listeners: Vec::new(),
            api_timeout: config.api_timeout,
            stop_timeout: config.stop_timeout,
            torn_down: false,
        };
        // On error `vm` drops here, which kills the VMM and cleans up.
        vm.wait_api(config.start_timeout)?;
        vm.api.configure(&boot_plan(config, &paths)?)?;
        for &port in &config.vsock_listen_ports {
            let l = vm.listen_vsock(port)?;
            vm.listeners.push((port, l));
        }
        vm.api.action(ActionType::InstanceStart)?;
        Ok(vm)
    }

    /// Polls `GET /` until it answers, the VMM exits, or `timeout` passes.
    fn wait_api(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().map_err(|source| FirecrackerError::Stop { pid: self.child.id(), source })? {
                // Its last words are in the log once the copy ends.
                self.console.finish();
                return Err(FirecrackerError::Exited { step: "its API socket answered", status, log_tail: self.log_tail() });
            }
            if self.api.socket().exists() && self.api.instance_info().is_ok() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(FirecrackerError::ApiSocketTimeout {
                    socket: self.api.socket().to_path_buf(),
                    waited: timeout,
                    log_tail: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// Host path of the vsock Unix socket.
    pub fn vsock_uds(&self) -> &Path {
        &self.vsock_uds
    }

    /// The VMM's log and the guest's serial console.
    pub fn log_path(&self) -> PathBuf {
        self.chroot.log_path()
    }

    /// Guarantees this host could not give (e.g. a missing cgroup controller).
    pub fn degraded(&self) -> &[Degraded] {
        &self.degraded
    }

    /// Opens a stream to guest vsock `port` (host-initiated).
    pub fn connect_vsock(&self, port: u32) -> Result<UnixStream> {
        vsock::connect(&self.vsock_uds, port, self.api_timeout)
    }

    /// `connect_vsock`, retried until the guest listens or `deadline` passes.
    pub fn connect_vsock_until(&self, port: u32, deadline: Instant) -> Result<UnixStream> {
        vsock::connect_until(&self.vsock_uds, port, deadline)
    }

    /// Listens for guest-initiated connections to host `port`.
    pub fn listen_vsock(&self, port: u32) -> Result<UnixListener> {
        let l = vsock::listen(&self.vsock_uds, port)?;
        self.chroot.give(&vsock::listener_path(&self.vsock_uds, port))?;
        Ok(l)
    }

    /// The last 4 KiB of the VMM's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.chroot.log_path(), 4096)
    }

    /// Asks the guest to power off, waits up to the stop timeout, then
    /// SIGKILLs; always removes the cgroups and the VM directory.
    pub fn shutdown(mut self) -> Result<ExitStatus> {
        let _ = self.api.action(ActionType::SendCtrlAltDel);
        let deadline = Instant::now() + self.stop_timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Ok(s),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => break self.kill(),
                Err(source) => break Err(FirecrackerError::Stop { pid: self.child.id(), source }),
            }
        };
        let cleaned = self.teardown();
        let status = status?;
        cleaned.map(|()| status)
    }

    /// The listener bound at spawn for `vsock_listen_ports` entry `port`.
    pub fn take_vsock_listener(&mut self, port: u32) -> Option<UnixListener> {
        let i = self.listeners.iter().position(|(p, _)| *p == port)?;
        Some(self.listeners.swap_remove(i).1)
    }

    fn kill(&mut self) -> Result<ExitStatus> {
        let pid = self.child.id();
        let _ = self.child.kill();
        self.child.wait().map_err(|source| FirecrackerError::Stop { pid, source })
    }

    fn teardown(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Ok(());
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.kill();
        }
        self.cgroups.kill_all();
        // The VMM is reaped; if a process it left still held the pipe, the
        // cgroup kill has ended it too.
        self.console.finish();
        let _ = self.cgroups.remove();
        self.chroot.remove()
    }
}

impl Drop for FirecrackerVm {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// Puts the kernel and drives where the VMM sees them.
fn prepare_paths(config: &FirecrackerConfig, c: &mut Chroot) -> Result<VmmPaths> {
    Ok(VmmPaths {
        kernel: c.add_read_only(&config.kernel, "vmlinux")?,
        initrd: config.initrd.as_deref().map(|i| c.add_read_only(i, "initrd")).transpose()?,
        rootfs: c.add_read_only(&config.rootfs, "rootfs")?,
        runtime: config.runtime_disk.as_deref().map(|d| c.add_writable(d, "runtime")).transpose()?,
        workspace: config.workspace_disk.as_deref().map(|d| c.add_writable(d, "workspace")).transpose()?,
        vsock_uds: c.vmm_path(&c.root().join(VSOCK_SOCK)),
    })
}

fn start_process(config: &FirecrackerConfig, binary: &Path, chroot: &mut Chroot, cgroups: &CgroupSet) -> Result<(Child, ConsoleLog)> {
    let exe = chroot.install_binary(binary)?;
    chroot.make_devices(config.tap.is_some())?;
    let log_path = chroot.log_path();
    // The VMM's log and the guest's serial console, bounded (see `console`).
    let (log, console) =
        ConsoleLog::start(&log_path, console::MAX_BYTES).map_err(FirecrackerError::jail(JailStep::CreateDir, &log_path))?;
    let log2 = log.try_clone().map_err(FirecrackerError::jail(JailStep::CreateDir, &log_path))?;
    let api_sock = chroot.vmm_path(&chroot.root().join(API_SOCK));
    let pre = jailer::PreExec::new(chroot, &cgroups.dirs).map_err(|source| FirecrackerError::Spawn { binary: binary.into(), source })?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--api-sock").arg(&api_sock).arg("--id").arg(&config.id);
    cmd.env_clear().stdin(Stdio::null()).stdout(log).stderr(log2);
    // SAFETY: `apply` only makes system calls on data prepared before the
    // fork; it neither allocates nor takes locks.
    unsafe { cmd.pre_exec(move || pre.apply()) };
    // Dropped with `cmd`, the write ends are the VMM's alone: the copy
    // ends when it does.
    cmd.spawn().map(|child| (child, console)).map_err(|source| FirecrackerError::Spawn { binary: binary.into(), source })
}

fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

#[cfg(test)]
#[path = "firecracker/firecracker_tests.rs"]
mod tests;
