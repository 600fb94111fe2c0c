//! Unit tests for `cgroup.rs`: the v1/v2 hierarchy chosen from sample
//! mountinfo and /proc/self/cgroup, dirty pages and counters read from a
//! v1 memory.stat,
//! a missing controller reported as degraded, and clone3 into a v2 cgroup.

use super::*;

const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
30 29 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 29 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 29 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 29 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const OWN: &str = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

#[test]
fn dirty_pages_are_seen_in_v1_memory_stat() {
    let clean = "cache 21061632\nrss 0\ndirty 0\nwriteback 0\ntotal_cache 21061632\ntotal_dirty 0\ntotal_writeback 0\n";
    assert!(!has_dirty_pages(clean));
    assert!(has_dirty_pages(&clean.replace("total_dirty 0", "total_dirty 4096")));
    assert!(has_dirty_pages(&clean.replace("writeback 0\ntotal_cache", "writeback 8192\ntotal_cache")));
    assert!(!has_dirty_pages("mapped_file 0\ndirtyish 5\n"));
    assert_eq!(stat_value(clean, "total_cache"), Some(21_061_632));
    assert_eq!(stat_value("cache 5\ntotal_cache 24576\n", "cache"), Some(5));
    assert_eq!(stat_value("total_cache_x 1\n", "total_cache"), None);
}

#[test]
fn v1_fallback_when_v2_is_empty() {
    let host = HostCgroups::parse(MOUNTINFO, OWN, |_| Some(String::new()));
    let mem = host.for_controller("memory").unwrap();
    assert_eq!(mem.version, Version::V1);
    assert_eq!(mem.own_dir, PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"));
    assert_eq!(host.for_controller("pids").unwrap().own_dir, PathBuf::from("/sys/fs/cgroup/pids"));
    assert!(host.for_controller("io").is_none());
}

#[test]
fn v2_preferred_when_it_offers_the_controller() {
    let host = HostCgroups::parse(MOUNTINFO, OWN, |_| Some("cpu memory pids\n".into()));
    assert_eq!(host.for_controller("memory").unwrap().version, Version::V2);
    assert_eq!(host.for_controller("memory").unwrap().own_dir, PathBuf::from("/sys/fs/cgroup/unified"));
}

#[test]
fn missing_controller_is_reported_not_dropped() {
    let host = HostCgroups::parse("", "", |_| None);
    let limits = Limits { memory_bytes: Some(1 << 20), pids: Some(10), cpus: Some(0.5) };
    let (set, degraded) = CgroupSet::create(&host, "x", &limits);
    assert!(set.dirs.is_empty());
    let names: Vec<_> = degraded.iter().map(|d| d.guarantee.as_str()).collect();
    assert_eq!(names, ["cgroup.memory", "cgroup.pids", "cgroup.cpu"]);
}

/// clone3's CLONE_INTO_CGROUP, as the helper uses it on v2: the child is a
/// member of the directory from its first instruction. Runs on the host's
/// cgroup2 mount (it needs no controllers), as root.
#[test]
fn a_child_cloned_into_a_v2_cgroup_is_born_there() {
    use std::os::fd::AsRawFd;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: a_child_cloned_into_a_v2_cgroup_is_born_there: needs root");
        return;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(mount) = mountinfo.lines().find(|l| l.contains(" - cgroup2 ")).and_then(|l| l.split_whitespace().nth(4)) else {
        println!("skipped: a_child_cloned_into_a_v2_cgroup_is_born_there: no cgroup2 mount");
        return;
    };
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").trim_start_matches('/').to_string();
    let name = format!("clawkeep-clone3-test-{}", std::process::id());
    let dir = Path::new(mount).join(&own).join(&name);
    if let Err(e) = fs::create_dir(&dir) {
        println!("skipped: a_child_cloned_into_a_v2_cgroup_is_born_there: cannot create {}: {e}", dir.display());
        return;
    }
    let fd = crate::sys::open_path(&dir, libc::O_PATH | libc::O_DIRECTORY).unwrap();
    let (r, w) = crate::sys::pipe().unwrap();
    // SAFETY: the child only calls close, read and _exit (async-signal-safe).
    let pid = unsafe { crate::sys::clone_into_cgroup(0, fd.as_raw_fd()) }.unwrap();
    if pid == 0 {
        let mut b = [0u8; 1];
        // SAFETY: plain syscalls on descriptors this process holds.
        unsafe {
            libc::close(w.as_raw_fd());
            libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    let member = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    drop(w);
    let mut st = 0;
    // SAFETY: pid is our child; st is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    let removed = fs::remove_dir(&dir);
    assert!(member.lines().any(|l| l.starts_with("0::") && l.trim_end().ends_with(&format!("/{name}"))), "{member}");
    removed.unwrap();
}
