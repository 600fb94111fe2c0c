//! The jail backend as the binary uses it: validate, plan (cgroups, what
//! degrades), launch, wait, clean up.

use crate::cgroup::{self, CgroupSet, Degraded, HostCgroups};
use crate::error::SandboxError;
use crate::launcher::{self, Launched, Spawned};
use crate::protocol::HelperConfig;
use crate::{landlock, sys};
use clawkeep_core::RunSpec;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};

/// A validated run, with its cgroups created and its isolation level known.
#[derive(Debug)]
pub struct JailPlan {
    pub cfg: HelperConfig,
    pub degraded: Vec<Degraded>,
    pub landlock_abi: u32,
    host: HostCgroups,
}

fn check_workspace(p: &Path) -> Result<PathBuf, SandboxError> {
    let bad = |why: &str| SandboxError::Workspace { path: p.to_path_buf(), why: why.to_string() };
    let meta = fs::metadata(p).map_err(|_| bad("does not exist; create it or pass an existing --workspace DIR"))?;
    if !meta.is_dir() {
        return Err(bad("is not a directory; pass a directory as --workspace"));
    }
    let canon = fs::canonicalize(p).map_err(|e| bad(&format!("cannot be resolved: {e}")))?;
    if canon == Path::new("/") {
        return Err(bad("is the host's root; pass a dedicated --workspace DIR"));
    }
    let c = sys::cpath(&canon).map_err(|_| bad("contains a NUL byte"))?;
    // SAFETY: c is a valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(bad(&format!("is not writable ({e}); fix its permissions or pass another --workspace DIR")));
    }
    Ok(canon)
}

fn check_rootfs(p: &Path) -> Result<PathBuf, SandboxError> {
    let bad = |why: &str| SandboxError::Rootfs { path: p.to_path_buf(), why: why.to_string() };
    let meta = fs::metadata(p).map_err(|_| bad("does not exist; pass a prepared root tree as --rootfs DIR"))?;
    if !meta.is_dir() {
        return Err(bad("is not a directory; pass a prepared root tree as --rootfs DIR"));
    }
    let canon = fs::canonicalize(p).map_err(|e| bad(&format!("cannot be resolved: {e}")))?;
    if canon == Path::new("/") {
        return Err(bad("is the host's root; omit --rootfs to use the host's system directories read-only"));
    }
    if fs::read_dir(&canon).map(|mut d| d.next().is_none()).unwrap_or(true) {
        return Err(bad("is empty or unreadable; it must hold a root tree (bin, lib, usr, ...)"));
    }
    Ok(canon)
}

/// Validates the spec's paths (bad input → `Workspace`/`Rootfs` errors),
/// then creates the run's cgroups with the spec's limits, and works out
/// what does not hold on this host. Called on the launcher's main thread
/// while the helper starts: on a thread of its own the work waited for a
/// CPU as long as it took.
pub fn plan(mut spec: RunSpec, audit_path: Option<PathBuf>) -> Result<JailPlan, SandboxError> {
    spec.workspace = check_workspace(&spec.workspace)?;
    if let Some(r) = &spec.rootfs {
        spec.rootfs = Some(check_rootfs(r)?);
    }
    let host = HostCgroups::detect();
    let name = cgroup::run_cgroup_name(std::process::id(), &spec.run_id);
    let (cgroups, mut degraded) = CgroupSet::create(&host, &name, &spec.limits);
    let landlock_abi = landlock::kernel_abi();
    if landlock_abi == 0 {
        degraded.push(Degraded {
            guarantee: "landlock".into(),
            reason: "the kernel offers no landlock; writes outside /workspace and /tmp are stopped only by read-only mounts".into(),
        });
    }
    // SAFETY: getters without preconditions.
    let root = unsafe { libc::geteuid() == 0 };
    let tty = crate::pty::terminal_size(0);
    if !root {
        degraded.push(Degraded {
            guarantee: "dedicated_uid".into(),
            reason: "not running as root: the agent runs as your own uid, supplementary groups are kept".into(),
        });
    }
    let cfg = HelperConfig {
        spec,
        cgroups,
        landlock: landlock_abi > 0,
        tty,
        audit_path,
        kill_grace_ms: 2000,
        gate: None,
        proxy_port: None,
        prepared_etc: false,
        plan_cache: None,
    };
    Ok(JailPlan { cfg, degraded, landlock_abi, host })
}

impl JailPlan {
    /// "full" when every guarantee holds, else "degraded".
    pub fn level(&self) -> &'static str {
        if self.degraded.is_empty() {
            "full"
        } else {
            "degraded"
        }
    }

    /// The isolation facts recorded in the run's start event.
    pub fn isolation(&self) -> serde_json::Value {
        let cg = |slot: &Option<(cgroup::Version, PathBuf)>| slot.as_ref().map(|(v, _)| json!(v));
        json!({
            "backend": "jail",
            "level": self.level(),
            "namespaces": ["user", "mount", "pid", "net", "ipc", "uts", "cgroup"],
            "seccomp": true,
            "no_new_privs": true,
            "capabilities": "none",
            "landlock_abi": self.landlock_abi,
            "cgroup": {"memory": cg(&self.cfg.cgroups.memory), "pids": cg(&self.cfg.cgroups.pids), "cpu": cg(&self.cfg.cgroups.cpu)},
            "degraded": self.degraded,
        })
    }

    pub fn launch(&self, helper_exe: &Path) -> Result<Launched, SandboxError> {
        launcher::launch(helper_exe, &self.cfg)
    }

    /// Configures a helper started early with `launcher::spawn`.
    pub fn launch_spawned(&self, helper: Spawned) -> Result<Launched, SandboxError> {
        helper.configure(&self.cfg)
    }

    /// Removes the cgroups of runs whose launcher and helper were both
    /// killed before they could (the name holds the launcher's pid; a live
    /// launcher's and a non-empty cgroup are kept). Housekeeping, not set-up:
    /// `clawkeep run` calls it once the agent is released, off the start-up
    /// path (listing v1 hierarchies' roots costs ~40 us).
    pub fn sweep_stale_cgroups(&self) -> Vec<PathBuf> {
        cgroup::sweep_stale(&self.host)
    }

    /// Removes the run's cgroups (the helper normally has already). Call
    /// after the run, also when the helper died.
    pub fn cleanup(&self) {
        self.cfg.cgroups.kill_all();
        let _ = self.cfg.cgroups.remove();
    }
}
