//! Booting a clawkeep image under Firecracker (the driver in
//! `firecracker.rs`): the same guest, its channel on vsock instead of
//! virtio-serial (`clawkeep.vsock=PORT` on the kernel command line).
//!
//! Untested end to end on the development machines (no Firecracker binary,
//! and KVM does not boot a stock kernel there); the pieces it joins are
//! tested on their own. Firecracker boots the image's `vmlinux`, and the
//! guest needs the vsock modules (`vsock.ko`,
//! `vmw_vsock_virtio_transport_common.ko`, `vmw_vsock_virtio_transport.ko`)
//! in its module list.

use super::channel::{Channel, ChannelError};
use super::firecracker::{FirecrackerConfig, FirecrackerVm, VmmIds};
use super::{VmConfig, VmError};
use clawkeep_guest::proto::ReadyInfo;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The guest's vsock port for the channel.
pub const VSOCK_PORT: u32 = 1024;

/// What Firecracker is started with for `cfg`.
pub fn config(cfg: &VmConfig, run_dir: &Path, runtime_disk: &Path) -> FirecrackerConfig {
    let id = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "clawkeep-vm".into());
    let mut fc = FirecrackerConfig::new(id, &cfg.kernel, &cfg.rootfs, run_dir);
    fc.initrd = Some(cfg.initramfs.clone());
    // reboot=k: the guest's reset (its power-off without ACPI) ends the VMM.
    fc.boot_args = format!("{} reboot=k pci=off clawkeep.vsock={VSOCK_PORT}", cfg.cmdline.trim());
    fc.runtime_disk = Some(runtime_disk.to_path_buf());
    fc.workspace_disk = cfg.workspace_disk.clone();
    fc.vcpus = cfg.cpus.clamp(1, 32) as u8;
    fc.mem_mib = cfg.memory_mib.min(u64::from(u32::MAX)) as u32;
    // One uid per running VM, so VMMs cannot reach each other.
    let slots = run_dir.parent().unwrap_or(run_dir).join("slots");
    fc.jail = Some(VmmIds::dedicated(claim_slot(&slots).unwrap_or((std::process::id() % SLOTS) as u16)));
    fc
}

/// Distinct VMM uids available (`VmmIds::dedicated(0..SLOTS)`).
const SLOTS: u32 = 50_000;

/// A VMM uid slot no other live clawkeep process holds: an exclusive
/// `flock` on `<slots>/<n>`, kept until this process exits (one process
/// runs one VM). Two runs whose pids agree modulo SLOTS still differ.
fn claim_slot(slots: &Path) -> Option<u16> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(slots).ok()?;
    let start = std::process::id() % SLOTS;
    (0..SLOTS).map(|i| (start + i) % SLOTS).find_map(|n| {
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(slots.join(n.to_string())).ok()?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return None;
        }
        // Held (open, locked) for the rest of this process's life.
        std::mem::forget(f);
        Some(n as u16)
    })
}

/// Starts Firecracker and waits (bounded) for the guest's Ready.
pub fn boot(cfg: &VmConfig, run_dir: &Path, runtime_disk: &Path) -> Result<(FirecrackerVm, Channel, ReadyInfo), VmError> {
    let t0 = Instant::now();
    let deadline = t0 + cfg.ready_timeout;
    let vm = FirecrackerVm::spawn(&config(cfg, run_dir, runtime_disk))?;
    let cancelled = || cfg.cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst));
    let pid = vm.pid();
    let alive = || !cancelled() && Path::new("/proc").join(pid.to_string()).exists();
    let not_ready = |vm: &FirecrackerVm| {
        if cancelled() {
            VmError::Cancelled
        } else {
            VmError::NotReady { timeout: cfg.ready_timeout, console: vm.log_tail() }
        }
    };
    // The guest listens on its port only once it has booted; until then
    // Firecracker refuses the connection and we retry.
    let stream = match vm.connect_vsock_until(VSOCK_PORT, deadline) {
        Ok(s) => s,
        Err(_) => return Err(not_ready(&vm)),
    };
    let ch = Channel::from_stream(stream, cfg.relays.clone()).map_err(|e| VmError::Channel(ChannelError::Write(e)))?;
    match ch.wait_ready(deadline.saturating_duration_since(Instant::now()), alive) {
        Ok(ready) => Ok((vm, ch, ready)),
        Err(_) => Err(not_ready(&vm)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Accel;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn slots_held_by_a_live_process_are_skipped() {
        use std::os::fd::AsRawFd;
        let t = tempfile::tempdir().unwrap();
        let slots = t.path().join("slots");
        std::fs::create_dir(&slots).unwrap();
        // Another process (simulated by another open file description)
        // holds the slot this pid would pick first.
        let first = std::process::id() % SLOTS;
        let other = std::fs::File::create(slots.join(first.to_string())).unwrap();
        // SAFETY: flock on our own descriptor.
        assert_eq!(unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        let got = claim_slot(&slots).unwrap();
        assert_ne!(u32::from(got), first);
        let again = claim_slot(&slots).unwrap();
        assert_ne!(again, got, "a slot stays claimed while its holder lives");
    }

    #[test]
    fn firecracker_gets_the_image_the_disks_and_the_vsock_switch() {
        let cfg = VmConfig {
            kernel: "/i/vmlinux".into(),
            initramfs: "/i/initramfs.cpio".into(),
            rootfs: "/i/rootfs.img".into(),
            cmdline: "console=ttyS0 panic=-1 rdinit=/init clawkeep.roothash=ab".into(),
            memory_mib: 512,
            cpus: 2,
            accel: Accel::Kvm,
            runtime_disk_mib: 64,
            workspace_disk: Some("/r/ws.img".into()),
            run_root: "/r".into(),
            ready_timeout: Duration::from_secs(5),
            relays: HashMap::new(),
            cancel: None,
            vmm: crate::vm::Vmm::Firecracker,
        };
        let fc = config(&cfg, Path::new("/r/vm-1-0"), Path::new("/r/vm-1-0/runtime.img"));
        assert!(fc.validate().is_ok());
        assert_eq!(fc.id, "vm-1-0");
        assert_eq!(fc.boot_args, "console=ttyS0 panic=-1 rdinit=/init clawkeep.roothash=ab reboot=k pci=off clawkeep.vsock=1024");
        assert_eq!(fc.initrd.as_deref(), Some(Path::new("/i/initramfs.cpio")));
        assert_eq!(fc.workspace_disk.as_deref(), Some(Path::new("/r/ws.img")));
        assert_eq!((fc.vcpus, fc.mem_mib), (2, 512));
    }
}
