//! What this host can enforce: the facts behind `clawkeep doctor` and the
//! "degraded" list of a run's start event.

use crate::cgroup::{HostCgroups, Version};
use crate::landlock;
use serde::Serialize;
use std::fs;
use std::path::Path;
use std::process::Command;

/// The argv[1] that turns the binary into the namespace probe.
pub const PROBE_ARG: &str = "__sandbox-probe";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Missing,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What is lost when this does not hold.
    pub cost: Option<String>,
    /// Whether the jail cannot run at all without it.
    pub required: bool,
}

const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("user", libc::CLONE_NEWUSER),
    ("mount", libc::CLONE_NEWNS),
    ("pid", libc::CLONE_NEWPID),
    ("net", libc::CLONE_NEWNET),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("cgroup", libc::CLONE_NEWCGROUP),
];

/// Entry point of `clawkeep __sandbox-probe`: tries each namespace in a
/// throw-away child and prints `name ok|errno` lines.
pub fn probe_main() -> i32 {
    for (name, flag) in NAMESPACES {
        // SAFETY: the probe process is single-threaded; the child only unshares and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain syscalls then _exit in the child.
            unsafe {
                let flags = if *flag == libc::CLONE_NEWUSER { *flag } else { *flag | libc::CLONE_NEWUSER };
                let r = libc::unshare(flags);
                libc::_exit(if r == 0 { 0 } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(1).min(255) });
            }
        }
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        let code = libc::WEXITSTATUS(st);
        println!("{name} {}", if code == 0 { "ok".to_string() } else { std::io::Error::from_raw_os_error(code).to_string() });
    }
    0
}

fn on_path(bin: &str) -> Option<String> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(bin)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].iter().map(|d| Path::new(d).join(bin)))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

fn kvm_usable() -> Result<String, String> {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    let fd = crate::sys::open_path(Path::new("/dev/kvm"), libc::O_RDWR).map_err(|e| format!("present but cannot be opened: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: KVM ioctls on a /dev/kvm descriptor with integer arguments.
    let api = unsafe { libc::ioctl(fd.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if api != 12 {
        return Err(format!("present but reports API version {api}, expected 12"));
    }
    // SAFETY: as above; the returned VM descriptor is closed at once.
    let vm = unsafe { libc::ioctl(fd.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Err(format!("present but KVM_CREATE_VM fails: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: vm is a descriptor we own.
    unsafe { libc::close(vm) };
    Ok("present; KVM_CREATE_VM works (whether a guest really boots: see 'vm backend' below)".into())
}

fn check(name: &str, status: Status, detail: impl Into<String>, cost: Option<&str>, required: bool) -> Check {
    Check { name: name.into(), status, detail: detail.into(), cost: cost.map(str::to_owned), required }
}

/// Every guarantee and whether it holds. `exe` is the clawkeep binary,
/// re-executed for the namespace probe.
pub fn host_checks(exe: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let ns =
        Command::new(exe).arg(PROBE_ARG).env_clear().output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let max_userns = fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default().trim().to_string();
    for (name, _) in NAMESPACES {
        let line = ns.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or("not probed");
        let (status, cost) = if line == "ok" {
            (Status::Ok, None)
        } else if *name == "cgroup" {
            (Status::Warn, Some("the agent would see the host's cgroup paths"))
        } else {
            (Status::Missing, Some("the jail cannot run without it"))
        };
        let detail = if *name == "user" { format!("{line} (max_user_namespaces={max_userns})") } else { line.to_string() };
        out.push(check(&format!("{name} namespace"), status, detail, cost, *name != "cgroup"));
    }
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0;
    let actions = fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    out.push(if seccomp {
        check("seccomp filter", Status::Ok, format!("available (actions: {})", actions.trim()), None, true)
    } else {
        check(
            "seccomp filter",
            Status::Missing,
            "the kernel has no seccomp filter support",
            Some("dangerous syscalls cannot be blocked; the jail refuses to run"),
            true,
        )
    });
    let abi = landlock::kernel_abi();
    out.push(if abi > 0 {
        check(
            "landlock",
            Status::Ok,
            format!("ABI {abi}{}", if abi >= 6 { " (with signal and abstract-socket scoping)" } else { "" }),
            None,
            false,
        )
    } else {
        check(
            "landlock",
            Status::Warn,
            "not available (kernel without landlock or not in the lsm= list)",
            Some(
                "writes outside /workspace and /tmp are stopped only by the read-only mounts, and the agent can enter a running \
                 gated command's namespace through /proc (the real binary of that command)",
            ),
            false,
        )
    });
    let host = HostCgroups::detect();
    let v2: Vec<_> = host.hierarchies.iter().filter(|h| h.version == Version::V2).collect();
    let v1: Vec<String> = host.hierarchies.iter().filter(|h| h.version == Version::V1).flat_map(|h| h.controllers.clone()).collect();
    out.push(match v2.first() {
        Some(h) if !h.controllers.is_empty() => {
            check("cgroup v2", Status::Ok, format!("{} (controllers: {})", h.mount.display(), h.controllers.join(" ")), None, false)
        }
        Some(h) => check(
            "cgroup v2",
            Status::Warn,
            format!("{} has no controllers", h.mount.display()),
            Some("limits fall back to cgroup v1 where it has the controller"),
            false,
        ),
        None => check("cgroup v2", Status::Warn, "not mounted", Some("limits fall back to cgroup v1 where it has the controller"), false),
    });
    out.push(if v1.is_empty() {
        check("cgroup v1", Status::Warn, "no v1 controllers mounted", None, false)
    } else {
        check("cgroup v1", Status::Ok, format!("controllers: {}", v1.join(" ")), None, false)
    });
    for ctrl in ["memory", "pids", "cpu"] {
        out.push(match host.for_controller(ctrl) {
            Some(h) => check(
                &format!("limit: {ctrl}"),
                Status::Ok,
                format!("enforced via cgroup {:?} at {}", h.version, h.own_dir.display()).to_lowercase(),
                None,
                false,
            ),
            None => check(
                &format!("limit: {ctrl}"),
                Status::Missing,
                "no hierarchy offers this controller",
                Some("--memory/--pids/--cpus for this resource are not enforced"),
                false,
            ),
        });
    }
    out.push(match fs::metadata("/dev/kvm") {
        Err(_) => check("/dev/kvm", Status::Missing, "absent", Some("no microVM backend; the jail is the strongest boundary here"), false),
        Ok(_) => match kvm_usable() {
            Ok(d) => check("/dev/kvm", Status::Ok, d, None, false),
            Err(d) => check("/dev/kvm", Status::Warn, d, Some("microVMs would need TCG emulation (slow start-up)"), false),
        },
    });
    for (bin, cost) in [
        ("qemu-system-x86_64", "the QEMU microVM backend cannot run (apt-get install qemu-system-x86)"),
        ("nft", "per-agent egress filtering cannot be installed (apt-get install nftables)"),
    ] {
        out.push(match on_path(bin) {
            Some(p) => check(bin, Status::Ok, p, None, false),
            None => check(bin, Status::Missing, "not found on PATH", Some(cost), false),
        });
    }
    let shim = exe.parent().map(|d| d.join("clawkeep-shim"));
    out.push(match shim.filter(|p| p.is_file()) {
        Some(p) => check("clawkeep-shim", Status::Ok, p.display().to_string(), None, false),
        None => check(
            "clawkeep-shim",
            Status::Missing,
            "not found beside the clawkeep binary",
            Some("'clawkeep run' refuses to start: gated commands need it; install both binaries together"),
            false,
        ),
    });
    // SAFETY: getter without preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    out.push(if root {
        check("dedicated agent uid", Status::Ok, format!("agent runs as host uid {}", crate::idmap::agent_host_id()), None, false)
    } else {
        check(
            "dedicated agent uid",
            Status::Warn,
            "not root: the agent runs as your own uid",
            Some("an escape would act as you; cgroup limits need root or a delegated cgroup"),
            false,
        )
    });
    out
}

/// The jail runs when every required check holds.
pub fn jail_can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| !c.required || c.status == Status::Ok)
}
