//! The vm backend: one microVM per agent, booted from a verified image.
//!
//! Guarantees, once [`Vm::start`] returns: the guest booted the image's
//! kernel and initramfs, mapped the root disk through dm-verity (every
//! block read is hash-checked; the kernel fails a read that does not
//! match), and its agent answered Ready on the channel. No host directory
//! is shared with the guest: the workspace travels as an ext4 disk image
//! ([`disk`]). Every file a VM uses lives in its own run directory, which
//! [`Vm::shutdown`] and [`Vm::kill`] (and `Drop`) remove with the process.
//!
//! Modules: `qemu` (command line, process), `channel` (host end of the
//! guest protocol), `credit` (its stdin flow control), `disk` (runtime
//! and workspace disks), `kvm` (whether KVM can boot a guest here),
//! `firecracker` (the Firecracker driver), `fc_boot` (a clawkeep image
//! under it, channel on vsock) and `gate_relay` (the host end of a guest
//! shim's gate requests).

pub mod channel;
pub mod console;
mod credit;
pub mod disk;
pub mod fc_boot;
pub mod firecracker;
pub mod gate_relay;
pub mod kvm;
pub mod qemu;
mod relay;

use channel::{Channel, ChannelError};
/// The guest protocol, for hosts that drive gated commands.
pub use clawkeep_guest::proto as guest_proto;
pub use clawkeep_guest::proto::Service;
use clawkeep_guest::proto::{Message, ReadyInfo};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_qemu(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Which VMM boots the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    #[default]
    Qemu,
    Firecracker,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what} {path} is missing; rebuild the image with `clawkeep image build`")]
    Missing { what: &'static str, path: PathBuf },
    #[error("{binary} was not found; install qemu-system-x86 (Debian) or set CLAWKEEP_QEMU")]
    NoVmm { binary: &'static str },
    #[error("cannot create the VM's run directory {path}: {source}")]
    RunDir { path: PathBuf, source: std::io::Error },
    #[error("cannot start {binary}: {source}")]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("the VM exited before it was ready ({status}{qemu}); console:\n{console}")]
    DiedBooting { status: String, qemu: String, console: String },
    #[error("the guest was not ready within {timeout:?}; the VM was killed; console:\n{console}")]
    NotReady { timeout: Duration, console: String },
    #[error("the boot was cancelled")]
    Cancelled,
    #[error("guest channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("disk: {0}")]
    Disk(#[from] disk::DiskError),
    #[error(transparent)]
    Firecracker(#[from] firecracker::FirecrackerError),
}

/// One VM to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub cmdline: String,
    pub memory_mib: u64,
    pub cpus: u32,
    pub accel: Accel,
    /// Size of the per-run writable disk at /var (sparse).
    pub runtime_disk_mib: u64,
    /// An ext4 image attached at /workspace ([`disk::workspace_image`]).
    pub workspace_disk: Option<PathBuf>,
    /// Parent of the run directory (socket, console log, runtime disk).
    pub run_root: PathBuf,
    pub ready_timeout: Duration,
    /// Host Unix sockets the guest may reach through relays.
    pub relays: HashMap<Service, PathBuf>,
    /// Set from another thread to abandon a boot (e.g. on Ctrl-C).
    pub cancel: Option<Arc<AtomicBool>>,
    pub vmm: Vmm,
}

#[derive(Debug)]
enum Process {
    /// QEMU, and the copy of its console into the run's console.log.
    Qemu(Child, console::ConsoleLog),
    Firecracker(Box<firecracker::FirecrackerVm>),
}

/// A booted VM whose guest said Ready.
#[derive(Debug)]
pub struct Vm {
    process: Option<Process>,
    pub channel: Channel,
    pub ready: ReadyInfo,
    /// From spawning QEMU to the guest's Ready.
    pub boot_time: Duration,
    pub run_dir: PathBuf,
}

fn alive(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// The last lines of a console log, for an error message.
pub fn console_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Vm {
    /// Boots `cfg` and waits (bounded) for the guest's Ready. On any
    /// failure QEMU is killed and the run directory removed.
    pub fn start(cfg: &VmConfig) -> Result<Vm, VmError> {
        for (what, p) in [("kernel", &cfg.kernel), ("initramfs", &cfg.initramfs), ("root disk", &cfg.rootfs)] {
            if !p.is_file() {
                return Err(VmError::Missing { what, path: p.clone() });
            }
        }
        let binary = match cfg.vmm {
            Vmm::Qemu => Some(qemu::find_binary().ok_or(VmError::NoVmm { binary: qemu::BINARY })?),
            Vmm::Firecracker => None,
        };
        disk::sweep_stale(&cfg.run_root);
        let run_dir = disk::private_dir(&cfg.run_root, "vm").map_err(|e| VmError::RunDir { path: cfg.run_root.clone(), source: e })?;
        let result = match binary {
            Some(b) => Self::boot(cfg, b, &run_dir),
            None => Self::boot_firecracker(cfg, &run_dir),
        };
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        result
    }

    fn boot_firecracker(cfg: &VmConfig, run_dir: &Path) -> Result<Vm, VmError> {
        let runtime = run_dir.join("runtime.img");
        disk::runtime_image(&runtime, cfg.runtime_disk_mib)?;
        let t0 = Instant::now();
        let (fc, channel, ready) = fc_boot::boot(cfg, run_dir, &runtime)?;
        let process = Some(Process::Firecracker(Box::new(fc)));
        Ok(Vm { process, channel, ready, boot_time: t0.elapsed(), run_dir: run_dir.to_path_buf() })
    }

    fn boot(cfg: &VmConfig, binary: PathBuf, run_dir: &Path) -> Result<Vm, VmError> {
        let runtime = run_dir.join("runtime.img");
        disk::runtime_image(&runtime, cfg.runtime_disk_mib)?;
        let qc = qemu::QemuConfig {
            binary: binary.clone(),
            kernel: cfg.kernel.clone(),
            initramfs: cfg.initramfs.clone(),
            rootfs: cfg.rootfs.clone(),
            cmdline: cfg.cmdline.clone(),
            memory_mib: cfg.memory_mib,
            cpus: cfg.cpus,
            runtime_disk: Some(runtime),
            workspace_disk: cfg.workspace_disk.clone(),
            socket: run_dir.join("channel.sock"),
            console_log: run_dir.join("console.log"),
            accel: cfg.accel,
        };
        let t0 = Instant::now();
        let (mut child, console) = qemu::spawn(&qc, &run_dir.join("qemu.log")).map_err(|e| VmError::Spawn { binary, source: e })?;
        let console = std::cell::RefCell::new(console);
        let deadline = t0 + cfg.ready_timeout;
        let cancelled = || cfg.cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst));
        let fail = |child: &mut Child, timed_out: bool| -> VmError {
            let _ = child.kill();
            if cancelled() {
                let _ = child.wait();
                return VmError::Cancelled;
            }
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            // QEMU is gone: its last words are in the log once the copy ends.
            console.borrow_mut().finish();
            let console = console_tail(&qc.console_log, 15);
            let qemu_err = console_tail(&run_dir.join("qemu.log"), 3).replace('\n', "; ");
            if timed_out {
                VmError::NotReady { timeout: cfg.ready_timeout, console }
            } else {
                let qemu = if qemu_err.is_empty() { String::new() } else { format!("; qemu: {qemu_err}") };
                VmError::DiedBooting { status, qemu, console }
            }
        };
        let ch = {
            let alive_check = || !cancelled();
            match Channel::connect(&qc.socket, deadline.min(t0 + Duration::from_secs(10)), alive_check, cfg.relays.clone()) {
                Ok(c) => c,
                Err(_) => {
                    let dead = !alive(&mut child);
                    return Err(fail(&mut child, !dead));
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let child_cell = std::cell::RefCell::new(child);
        let ready = ch.wait_ready(left, || !cancelled() && alive(&mut child_cell.borrow_mut()));
        let mut child = child_cell.into_inner();
        match ready {
            Ok(ready) => Ok(Vm {
                process: Some(Process::Qemu(child, console.into_inner())),
                channel: ch,
                ready,
                boot_time: t0.elapsed(),
                run_dir: run_dir.to_path_buf(),
            }),
            Err(ChannelError::Timeout(_)) => Err(fail(&mut child, true)),
            Err(_) => Err(fail(&mut child, false)),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self.process.as_ref()? {
            Process::Qemu(c, _) => Some(c.id()),
            Process::Firecracker(f) => Some(f.pid()),
        }
    }

    pub fn console_log(&self) -> PathBuf {
        match &self.process {
            Some(Process::Firecracker(f)) => f.log_path(),
            _ => self.run_dir.join("console.log"),
        }
    }

    /// Asks the guest to sync, unmount and power off; kills QEMU if it has
    /// not exited within `grace`. Removes the run directory either way.
    pub fn shutdown(mut self, grace: Duration) -> Result<(), VmError> {
        let _ = self.channel.send(0, Message::Shutdown);
        match self.process.take() {
            Some(Process::Qemu(mut c, mut console)) => {
                let end = Instant::now() + grace;
                while alive(&mut c) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
                console.finish();
            }
            // Its own bounded stop (the guest is already resetting).
            Some(Process::Firecracker(f)) => {
                let _ = f.shutdown();
            }
            None => {}
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
        Ok(())
    }

    /// Kills QEMU at once and removes the run directory.
    pub fn kill(mut self) {
        self.reap();
    }

    fn reap(&mut self) {
        match self.process.take() {
            Some(Process::Qemu(mut c, mut console)) => {
                let _ = c.kill();
                let _ = c.wait();
                console.finish();
            }
            // Dropping it kills the VMM and removes its chroot and cgroups.
            Some(Process::Firecracker(f)) => drop(f),
            None => {}
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.reap();
    }
}
