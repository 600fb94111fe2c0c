//! The vm backend's part of `clawkeep doctor`: which VMMs are installed
//! and whether KVM boots a guest here.

use clawkeep_image::{trust, ImageStore, VerifiedImage};
use clawkeep_sandbox::vm::{kvm, Accel, VmConfig, Vmm};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;

/// The vm backend's part of `clawkeep doctor`: which VMMs are installed
/// and whether KVM boots a guest (from the cached verdict, or a bounded
/// boot test of an image when there is one; never slow without one).
pub fn doctor_report(state_dir: Option<PathBuf>) -> serde_json::Value {
    let qemu = clawkeep_sandbox::vm::qemu::find_binary();
    let firecracker = clawkeep_sandbox::vm::qemu::find_on_path("firecracker");
    let dev_kvm = std::path::Path::new("/dev/kvm").exists();
    let state = crate::audit_cmd::state_root(state_dir).ok();
    let verdict = match (&state, &qemu) {
        (None, _) => Err("no state directory".to_string()),
        (_, None) => Err("qemu-system-x86_64 is not installed".to_string()),
        (Some(s), Some(_)) => match kvm::cached(s) {
            Some(v) => Ok(v),
            None => match boot_test_image(s) {
                // The image stays open (its paths are /proc/self/fd/N) until the test ends.
                Some((cfg, _image)) => Ok(kvm::boot_test(s, &cfg)),
                None => Err("no image to boot-test; run `clawkeep image build --name base`".to_string()),
            },
        },
    };
    let (usable, detail) = match &verdict {
        Ok(v) => (Some(v.usable), v.detail.clone()),
        Err(why) => (None, why.clone()),
    };
    json!({
        "qemu": qemu,
        "firecracker": firecracker,
        "dev_kvm": dev_kvm,
        "kvm_usable": usable,
        "kvm_detail": detail,
    })
}

pub fn print_doctor(v: &serde_json::Value) {
    let path = |k: &str| v[k].as_str().map(str::to_string).unwrap_or_else(|| "not installed".into());
    println!("\nvm backend:");
    println!("  qemu-system-x86_64  {}", path("qemu"));
    println!("  firecracker         {}", path("firecracker"));
    println!("  /dev/kvm            {}", if v["dev_kvm"] == true { "present" } else { "absent" });
    let usable = match v["kvm_usable"].as_bool() {
        Some(true) => "yes",
        Some(false) => "no (VMs boot under TCG emulation: seconds, not milliseconds)",
        None => "unknown",
    };
    println!("  KVM usable          {usable} ({})", v["kvm_detail"].as_str().unwrap_or_default());
}

/// The image the KVM boot test uses: `base` when it exists, else the
/// first image that verifies. The config's paths name the image's open
/// descriptors: they hold only while the returned image lives.
fn boot_test_image(state: &std::path::Path) -> Option<(VmConfig, VerifiedImage)> {
    let store = ImageStore::new(state);
    let mut names: Vec<String> = store.list().ok()?.into_iter().filter(|i| i.error.is_none()).map(|i| i.name).collect();
    names.sort_by_key(|n| n != "base");
    let key = trust::configured_pubkey(state).ok()?;
    let image = names.iter().find_map(|n| store.open(n).and_then(|i| i.verify(key.as_ref())).ok())?;
    let cfg = VmConfig {
        kernel: image.vmlinux.clone().unwrap_or_else(|| image.kernel.clone()),
        initramfs: image.initramfs.clone(),
        rootfs: image.rootfs.clone(),
        cmdline: image.cmdline.clone(),
        memory_mib: 256,
        cpus: 1,
        accel: Accel::Kvm,
        runtime_disk_mib: 16,
        workspace_disk: None,
        run_root: state.join("vm").join("run"),
        ready_timeout: kvm::BOOT_TEST_TIMEOUT,
        relays: HashMap::new(),
        cancel: None,
        vmm: Vmm::Qemu,
    };
    Some((cfg, image))
}
