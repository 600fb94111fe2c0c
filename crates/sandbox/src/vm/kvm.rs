//! Whether KVM can actually boot a guest here, decided by booting one.
//!
//! `/dev/kvm` existing is not enough: under nested virtualization (a PVM
//! host, as on clawkeep's development machines) a stock kernel hangs
//! early. So the verdict comes from a bounded boot test of a real image,
//! and is cached per host kernel in `<state>/vm/kvm.json`; a host whose
//! kernel changes is tested again.

use super::{Accel, Vm, VmConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a KVM guest may take to say Ready (it takes well under a
/// second where KVM works).
pub const BOOT_TEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub usable: bool,
    /// What the test saw, e.g. "guest ready in 412 ms" or "no Ready in 10s".
    pub detail: String,
    /// The host kernel the verdict holds for.
    pub host_kernel: String,
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

pub fn cache_path(state: &Path) -> PathBuf {
    state.join("vm").join("kvm.json")
}

/// The cached verdict, if it was made on this host kernel.
pub fn cached(state: &Path) -> Option<Verdict> {
    let v: Verdict = serde_json::from_slice(&std::fs::read(cache_path(state)).ok()?).ok()?;
    (v.host_kernel == host_kernel()).then_some(v)
}

fn store(state: &Path, v: &Verdict) {
    let p = cache_path(state);
    if let Some(d) = p.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    if let Ok(b) = serde_json::to_vec_pretty(v) {
        let tmp = p.with_extension("tmp");
        if std::fs::write(&tmp, b).is_ok() {
            let _ = std::fs::rename(&tmp, &p);
        }
    }
}

/// Boots `cfg` under KVM with a short timeout and caches what happened.
pub fn boot_test(state: &Path, cfg: &VmConfig) -> Verdict {
    let v = if !Path::new("/dev/kvm").exists() {
        Verdict { usable: false, detail: "no /dev/kvm".into(), host_kernel: host_kernel() }
    } else {
        let cfg =
            VmConfig { accel: Accel::Kvm, ready_timeout: BOOT_TEST_TIMEOUT, workspace_disk: None, runtime_disk_mib: 16, ..cfg.clone() };
        match Vm::start(&cfg) {
            Ok(vm) => {
                let ms = vm.boot_time.as_millis();
                let _ = vm.shutdown(Duration::from_secs(5));
                Verdict { usable: true, detail: format!("boot test: guest ready in {ms} ms"), host_kernel: host_kernel() }
            }
            Err(e) => {
                let first = e.to_string().lines().next().unwrap_or_default().trim_end_matches("; console:").to_string();
                Verdict { usable: false, detail: format!("boot test failed: {first}"), host_kernel: host_kernel() }
            }
        }
    };
    store(state, &v);
    v
}

/// The accelerator to use: `CLAWKEEP_VM_ACCEL=kvm|tcg` when set, else the
/// cached verdict, else a boot test now (`cfg` is the image to test with).
pub fn choose(state: &Path, cfg: &VmConfig) -> (Accel, Verdict) {
    match std::env::var("CLAWKEEP_VM_ACCEL").as_deref() {
        Ok("kvm") => {
            return (Accel::Kvm, Verdict { usable: true, detail: "forced by CLAWKEEP_VM_ACCEL".into(), host_kernel: host_kernel() })
        }
        Ok("tcg") => {
            return (Accel::Tcg, Verdict { usable: false, detail: "forced by CLAWKEEP_VM_ACCEL".into(), host_kernel: host_kernel() })
        }
        _ => {}
    }
    let v = cached(state).unwrap_or_else(|| boot_test(state, cfg));
    (if v.usable { Accel::Kvm } else { Accel::Tcg }, v)
}
