//! Boots a real Firecracker microVM from an image directory and waits for
//! the guest agent's Ready frame on the vsock channel.
//!
//! Needs: `firecracker` on PATH, a usable /dev/kvm on which the image's
//! kernel boots, root (the VMM is jailed), and `CLAWKEEP_TEST_IMAGE_DIR`
//! holding `vmlinux` (ELF) and `rootfs.ext4` (or `rootfs.img`), optionally
//! `initrd.img`. Skips with the reason otherwise.
//!
//! The guest is reached host-initiated on vsock port
//! `CLAWKEEP_GUEST_VSOCK_PORT` (default 1024); its first frame must be
//! Ready: `u32 BE length | u8 kind 0x81 | u32 BE stream 0 | JSON`.

use clawkeep_sandbox::vm::firecracker::{check_kvm, resolve_binary, FirecrackerConfig, FirecrackerVm};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const READY: u8 = 0x81;

fn skip(reason: &str) {
    eprintln!("skipped: {reason}");
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

fn sparse_disk(path: &Path, bytes: u64) {
    fs::File::create(path).and_then(|f| f.set_len(bytes)).expect("create disk");
}

#[test]
fn firecracker_boots_and_the_guest_reports_ready() {
    if resolve_binary(Path::new("firecracker")).is_err() {
        return skip("firecracker not on PATH");
    }
    if let Err(e) = check_kvm() {
        return skip(&format!("KVM not usable: {e}"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root to jail the VMM");
    }
    let Some(image) = std::env::var_os("CLAWKEEP_TEST_IMAGE_DIR").map(PathBuf::from) else {
        return skip("CLAWKEEP_TEST_IMAGE_DIR is not set (an image dir with vmlinux and rootfs.ext4)");
    };
    let kernel = image.join("vmlinux");
    let Some(rootfs) = first_existing(&image, &["rootfs.ext4", "rootfs.img"]) else {
        panic!("{} has no rootfs.ext4 or rootfs.img", image.display());
    };
    assert!(kernel.exists(), "{} has no vmlinux (Firecracker boots the ELF kernel)", image.display());
    let port: u32 = std::env::var("CLAWKEEP_GUEST_VSOCK_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(1024);

    let tmp = tempfile::tempdir().expect("tempdir");
    let (runtime, workspace) = (tmp.path().join("runtime.img"), tmp.path().join("workspace.img"));
    sparse_disk(&runtime, 64 << 20);
    sparse_disk(&workspace, 64 << 20);
    let mut config = FirecrackerConfig::new(format!("boot-test-{}", std::process::id()), kernel, rootfs, tmp.path().join("state"));
    config.initrd = first_existing(&image, &["initrd.img", "initramfs.img"]);
    config.runtime_disk = Some(runtime);
    config.workspace_disk = Some(workspace);

    let started = Instant::now();
    let vm = FirecrackerVm::spawn(&config).expect("spawn");
    let deadline = started + Duration::from_secs(60);
    let mut stream = vm.connect_vsock_until(port, deadline).unwrap_or_else(|e| panic!("{e}\nVMM log:\n{}", vm.log_tail()));
    stream.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)))).expect("timeout");
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).unwrap_or_else(|e| panic!("no frame from the guest: {e}\nVMM log:\n{}", vm.log_tail()));
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    assert_eq!((head[4], stream_id), (READY, 0), "first frame must be Ready on stream 0");
    assert!((5..=1 << 20).contains(&len), "frame length {len}");
    let mut payload = vec![0; len - 5];
    stream.read_exact(&mut payload).expect("ready payload");
    let info: serde_json::Value = serde_json::from_slice(&payload).expect("Ready payload is JSON");
    eprintln!("guest ready in {:?}: {info}", started.elapsed());

    let state_dir = config.state_dir.join(&config.id);
    vm.shutdown().expect("shutdown");
    assert!(!state_dir.exists(), "VM directory removed");
}
