//! Per-run cgroups: memory, pids and cpu limits, peak figures, teardown.
//!
//! cgroup v2 is used for a controller when the unified hierarchy offers it;
//! otherwise the v1 hierarchy for that controller is used (this is what the
//! development hosts have: v1 controllers and an empty v2 tree). A limit
//! that cannot be enforced is returned as a `Degraded` entry, never
//! silently dropped.
//!
//! Guarantee: after `CgroupSet::remove()` returns Ok, no directory created
//! by `CgroupSet::create` exists. Directories are named
//! `clawkeep-<launcher pid>-<run id>` so a later run can sweep the ones a
//! killed launcher could not remove (`sweep_stale`).

use clawkeep_core::Limits;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A guarantee that does not hold on this host, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degraded {
    pub guarantee: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

#[path = "cgroup_host.rs"]
mod host;
pub use host::{Hierarchy, HostCgroups};

/// The cgroups created for one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupSet {
    /// Every directory created, each joined by the jail's init.
    pub dirs: Vec<PathBuf>,
    pub memory: Option<(Version, PathBuf)>,
    pub pids: Option<(Version, PathBuf)>,
    pub cpu: Option<(Version, PathBuf)>,
    /// Where the kill switch freezes the run (v1 freezer, or v2's cgroup.freeze).
    pub freezer: Option<(Version, PathBuf)>,
}

const CPU_PERIOD_US: u64 = 100_000;

impl CgroupSet {
    /// Creates the run's cgroups and writes the limits. Memory and pids
    /// cgroups are always made (they give peak figures and a reliable kill);
    /// cpu only when a CPU limit is asked for.
    pub fn create(host: &HostCgroups, name: &str, limits: &Limits) -> (CgroupSet, Vec<Degraded>) {
        let mut set = CgroupSet::default();
        let mut degraded = Vec::new();
        let wanted: [(&str, bool); 3] = [("memory", true), ("pids", true), ("cpu", limits.cpus.is_some())];
        for (ctrl, needed) in wanted {
            if !needed {
                continue;
            }
            let limit_asked = match ctrl {
                "memory" => limits.memory_bytes.is_some(),
                "pids" => limits.pids.is_some(),
                _ => true,
            };
            let Some(h) = host.for_controller(ctrl) else {
                if limit_asked {
                    degraded.push(Degraded {
                        guarantee: format!("cgroup.{ctrl}"),
                        reason: format!("no cgroup v1 or v2 hierarchy offers the {ctrl} controller; the {ctrl} limit is not enforced"),
                    });
                }
                continue;
            };
            let result = set.make_dir(h, name).and_then(|dir| {
                write_limits(h.version, ctrl, &dir, limits)?;
                Ok(dir)
            });
            match result {
                Ok(dir) => {
                    let slot = (h.version, dir);
                    match ctrl {
                        "memory" => set.memory = Some(slot),
                        "pids" => set.pids = Some(slot),
                        _ => set.cpu = Some(slot),
                    }
                }
                Err(e) if limit_asked => degraded.push(Degraded {
                    guarantee: format!("cgroup.{ctrl}"),
                    reason: format!("cannot set up a {ctrl} cgroup under {}: {e}; the {ctrl} limit is not enforced", h.own_dir.display()),
                }),
                Err(_) => {}
            }
        }
        set.freezer = match &set.memory {
            Some((Version::V2, d)) => Some((Version::V2, d.clone())),
            _ => host
                .for_controller("freezer")
                .filter(|h| h.version == Version::V1)
                .and_then(|h| set.make_dir(h, name).ok().map(|d| (Version::V1, d))),
        };
        (set, degraded)
    }

    fn make_dir(&mut self, h: &Hierarchy, name: &str) -> io::Result<PathBuf> {
        let dir = h.own_dir.join(name);
        if self.dirs.contains(&dir) {
            return Ok(dir);
        }
        if h.version == Version::V2 {
            // Delegate the controllers to children; fails when our own
            // cgroup has processes (the no-internal-process rule).
            let want: Vec<String> =
                ["memory", "pids", "cpu"].iter().filter(|c| h.controllers.iter().any(|x| x == *c)).map(|c| format!("+{c}")).collect();
            fs::write(h.own_dir.join("cgroup.subtree_control"), want.join(" "))?;
        }
        fs::create_dir(&dir)?;
        self.dirs.push(dir.clone());
        Ok(dir)
    }

    /// Moves `pid` into the set's v1 cgroups (when `v1`) and its v2 one
    /// (when `v2`): those it was not born in (see `visit_v1`).
    pub fn join(&self, pid: libc::pid_t, v1: bool, v2: bool) -> io::Result<()> {
        for d in self.dirs.iter().filter(|d| if self.is_v2(d) { v2 } else { v1 }) {
            fs::write(d.join("cgroup.procs"), pid.to_string())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.join("cgroup.procs").display())))?;
        }
        Ok(())
    }

    /// Moves the calling thread, and only it, into every v1 cgroup of the
    /// set; a child it clones before `Visit::leave` is born inside them.
    ///
    /// Why: moving a whole process (`cgroup.procs`, or another task's id)
    /// takes the kernel's global threadgroup lock, whose first writer waits
    /// out a full RCU grace period (about 7 ms here, more than bwrap's whole
    /// run). A thread moving itself (`0` into `tasks`) skips that lock and
    /// costs some 0.1 ms each way. v2 directories are left to clone3's
    /// CLONE_INTO_CGROUP (or `join`).
    ///
    /// On error the thread is already back where it started.
    pub fn visit_v1(&self) -> io::Result<Visit> {
        let mut visit = Visit { back: Vec::new() };
        for d in self.dirs.iter().filter(|d| !self.is_v2(d)) {
            // Our cgroup in this hierarchy is the set's parent directory:
            // `create` makes every directory under our own cgroup.
            let Some(parent) = d.parent() else { continue };
            if let Err(e) = fs::write(d.join("tasks"), "0") {
                let _ = visit.leave();
                return Err(io::Error::new(e.kind(), format!("{}: {e}", d.join("tasks").display())));
            }
            visit.back.push(parent.to_path_buf());
        }
        Ok(visit)
    }

    /// The set's v2 directory, if one of its controllers lives on v2.
    pub fn v2_dir(&self) -> Option<&Path> {
        self.dirs.iter().find(|d| self.is_v2(d)).map(PathBuf::as_path)
    }

    fn is_v2(&self, d: &Path) -> bool {
        [&self.memory, &self.pids, &self.cpu, &self.freezer].into_iter().flatten().any(|(v, x)| *v == Version::V2 && x == d)
    }

    pub fn peak_memory(&self) -> Option<u64> {
        let (v, d) = self.memory.as_ref()?;
        let file = if *v == Version::V1 { "memory.max_usage_in_bytes" } else { "memory.peak" };
        read_u64(&d.join(file))
    }

    pub fn peak_pids(&self) -> Option<u64> {
        let (_, d) = self.pids.as_ref()?;
        read_u64(&d.join("pids.peak"))
    }

    pub fn oom_killed(&self) -> bool {
        let Some((v, d)) = self.memory.as_ref() else { return false };
        let file = if *v == Version::V1 { "memory.oom_control" } else { "memory.events" };
        fs::read_to_string(d.join(file))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok())))
            .is_some_and(|n| n > 0)
    }

    /// Freezes (or thaws) every process of the run at once.
    pub fn freeze(&self, frozen: bool) -> io::Result<()> {
        match &self.freezer {
            Some((Version::V1, d)) => fs::write(d.join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" }),
            Some((Version::V2, d)) => fs::write(d.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
            None => Err(io::Error::new(io::ErrorKind::Unsupported, "no freezer cgroup on this host")),
        }
    }

    /// SIGKILLs every process left in the set.
    pub fn kill_all(&self) {
        for d in &self.dirs {
            kill_procs(d);
        }
    }

    /// Removes every directory. A group that still has tasks (a jail whose
    /// pid 1 did not die cleanly) is killed and retried briefly.
    pub fn remove(&self) -> io::Result<()> {
        // v1 keeps a removed memory cgroup alive while page cache is still
        // charged to it; thousands of runs would pile up dying cgroups and
        // slow every later mkdir. force_empty reclaims the clean cache
        // (about 2 ms for 20 MB). Dirty pages it cannot reclaim: it throttles
        // on writeback, up to 100 ms a try, so a run that wrote a file
        // skips it and its cgroup dies once the flusher has written the
        // pages and reclaim takes them (what runc and systemd always do).
        // Nor is it worth it for a few pages: it drains every CPU's LRU
        // caches and retries, 0.4-0.7 ms here for the 24 KiB a short run
        // leaves, and after 100 such runs without it no dying cgroup was
        // left 3 s later.
        if let Some((Version::V1, d)) = &self.memory {
            let worth_it = fs::read_to_string(d.join("memory.stat"))
                .is_ok_and(|s| !has_dirty_pages(&s) && stat_value(&s, "total_cache").is_none_or(|c| c >= FORCE_EMPTY_MIN_CACHE));
            if worth_it {
                let _ = fs::write(d.join("memory.force_empty"), "0");
            }
        }
        let mut last = Ok(());
        for d in &self.dirs {
            last = remove_dir_retry(d);
        }
        last
    }
}

/// Page cache below which a v1 memory cgroup is removed without
/// force_empty (see `CgroupSet::remove`).
const FORCE_EMPTY_MIN_CACHE: u64 = 256 << 10;

/// A counter of a v1 memory.stat.
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Whether a v1 memory.stat shows pages waiting for, or under, writeback.
fn has_dirty_pages(stat: &str) -> bool {
    ["total_dirty", "total_writeback", "dirty", "writeback"].iter().any(|k| stat_value(stat, k).is_some_and(|v| v != 0))
}

fn remove_dir_retry(d: &Path) -> io::Result<()> {
    let mut delay = Duration::from_micros(200);
    for _ in 0..40 {
        match fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                kill_procs(d);
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
    fs::remove_dir(d)
}

fn kill_procs(d: &Path) {
    if fs::write(d.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..50 {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn write_limits(v: Version, ctrl: &str, dir: &Path, l: &Limits) -> io::Result<()> {
    let w = |file: &str, val: String| {
        fs::write(dir.join(file), &val).map_err(|e| io::Error::new(e.kind(), format!("writing {val} to {file}: {e}")))
    };
    match (ctrl, v) {
        ("memory", Version::V1) => {
            if let Some(m) = l.memory_bytes {
                w("memory.limit_in_bytes", m.to_string())?;
                // Without swap accounting the limit could be dodged by swapping.
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    w("memory.memsw.limit_in_bytes", m.to_string())?;
                }
            }
        }
        ("memory", Version::V2) => {
            if let Some(m) = l.memory_bytes {
                w("memory.max", m.to_string())?;
                if dir.join("memory.swap.max").exists() {
                    w("memory.swap.max", "0".into())?;
                }
            }
        }
        ("pids", _) => {
            if let Some(p) = l.pids {
                w("pids.max", p.to_string())?;
            }
        }
        ("cpu", v) => {
            if let Some(c) = l.cpus {
                let quota = ((c * CPU_PERIOD_US as f64) as u64).max(1000);
                if v == Version::V1 {
                    w("cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                    w("cpu.cfs_quota_us", quota.to_string())?;
                } else {
                    w("cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The calling thread's stay in a run's v1 cgroups (see
/// `CgroupSet::visit_v1`).
#[derive(Debug)]
#[must_use = "the thread stays in the run's cgroups until `leave`"]
pub struct Visit {
    back: Vec<PathBuf>,
}

impl Visit {
    /// Moves the calling thread back to the cgroups it came from. Tries
    /// every hierarchy and reports the first failure.
    pub fn leave(self) -> io::Result<()> {
        let mut first = Ok(());
        for d in &self.back {
            if let Err(e) = fs::write(d.join("tasks"), "0") {
                if first.is_ok() {
                    first = Err(io::Error::new(e.kind(), format!("{}: {e}", d.join("tasks").display())));
                }
            }
        }
        first
    }
}

pub fn run_cgroup_name(launcher_pid: u32, run_id: &str) -> String {
    format!("clawkeep-{launcher_pid}-{run_id}")
}

/// The controllers a run makes cgroups for (see `CgroupSet::create`):
/// the only hierarchies where one can be left behind.
pub const RUN_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];

/// Removes cgroups left by launchers that died (e.g. SIGKILL of both the
/// launcher and its helper). Only empty groups of dead launchers are touched.
pub fn sweep_stale(host: &HostCgroups) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for h in host.hierarchies.iter().filter(|h| h.controllers.iter().any(|c| RUN_CONTROLLERS.contains(&c.as_str()))) {
        let Ok(entries) = fs::read_dir(&h.own_dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("clawkeep-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            // SAFETY: kill with signal 0 only checks for existence.
            let alive = unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            if alive {
                continue;
            }
            let empty = fs::read_to_string(e.path().join("cgroup.procs")).map(|s| s.trim().is_empty()).unwrap_or(false);
            if empty && fs::remove_dir(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    removed
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
