//! The guest's filesystems, in the order boot needs them: the kernel's
//! pseudo filesystems, the verified root, the runtime and workspace disks,
//! then the switch into the root (the initramfs cannot be pivot_root'ed
//! away, so the root is moved over `/` and chroot'ed into, as
//! switch_root(8) does).

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

pub const NEW_ROOT: &str = "/mnt/root";
/// The uid/gid the agent's commands run as; the workspace is handed to it.
pub const AGENT_ID: u32 = 1000;

#[derive(Debug)]
pub struct MountError {
    pub step: &'static str,
    pub target: String,
    pub source: io::Error,
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.step, self.target, self.source)
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn err(step: &'static str, target: &str) -> MountError {
    MountError { step, target: target.to_string(), source: io::Error::last_os_error() }
}

pub fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str, step: &'static str) -> Result<(), MountError> {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f, d) = (cstr(src), cstr(target), cstr(fstype), cstr(data));
    let fptr = if fstype.is_empty() { std::ptr::null() } else { f.as_ptr() };
    // SAFETY: all pointers are NUL-terminated strings (or null for fstype)
    // that live across the call.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), fptr, flags, d.as_ptr().cast()) };
    if r != 0 {
        return Err(err(step, target));
    }
    Ok(())
}

/// /dev, /proc and /sys of the initramfs.
pub fn early() -> Result<(), MountError> {
    let nosuid = libc::MS_NOSUID | libc::MS_NOEXEC;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755", "mount devtmpfs")?;
    mount("proc", "/proc", "proc", nosuid | libc::MS_NODEV, "", "mount proc")?;
    mount("sysfs", "/sys", "sysfs", nosuid | libc::MS_NODEV, "", "mount sysfs")?;
    Ok(())
}

/// Waits for a block device node to appear (drivers probe asynchronously).
pub fn wait_for(dev: &str, wait: Duration) -> bool {
    let end = Instant::now() + wait;
    while !Path::new(dev).exists() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The verified root (read-only), then the writable disks when present.
pub fn root(verity_dev: &str) -> Result<(), MountError> {
    // noload: never replay a journal on the read-only, hash-checked root.
    mount(verity_dev, NEW_ROOT, "ext4", libc::MS_RDONLY | libc::MS_NODEV, "noload", "mount verified root")?;
    let rw = libc::MS_NOSUID | libc::MS_NODEV;
    if wait_for("/dev/vdb", Duration::from_millis(200)) {
        mount("/dev/vdb", &format!("{NEW_ROOT}/var"), "ext4", rw, "", "mount runtime disk")?;
    }
    if wait_for("/dev/vdc", Duration::from_millis(200)) {
        let ws = format!("{NEW_ROOT}/workspace");
        mount("/dev/vdc", &ws, "ext4", rw, "", "mount workspace disk")?;
        give_to_agent(Path::new(&ws));
    }
    Ok(())
}

/// The workspace disk holds the host's files with the host's owners; the
/// agent's uid takes them over (the host copies content back, not owners).
fn give_to_agent(dir: &Path) {
    let Ok(c) = CString::new(dir.as_os_str().as_encoded_bytes()) else { return };
    // SAFETY: c is a NUL-terminated path; lchown never follows a symlink.
    unsafe { libc::lchown(c.as_ptr(), AGENT_ID, AGENT_ID) };
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            give_to_agent(&e.path());
        } else if let Ok(c) = CString::new(e.path().as_os_str().as_encoded_bytes()) {
            // SAFETY: as above.
            unsafe { libc::lchown(c.as_ptr(), AGENT_ID, AGENT_ID) };
        }
    }
}

/// Moves /dev, /proc and /sys into the new root, gives it a private /tmp
/// and /run, and makes it `/` for this process and its children.
pub fn switch_root() -> Result<(), MountError> {
    for d in ["/dev", "/proc", "/sys"] {
        let target = format!("{NEW_ROOT}{d}");
        if Path::new(&target).is_dir() {
            mount(d, &target, "", libc::MS_MOVE, "", "move into new root")?;
        }
    }
    for d in ["/tmp", "/run"] {
        let target = format!("{NEW_ROOT}{d}");
        if Path::new(&target).is_dir() {
            mount("tmpfs", &target, "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=1777", "mount tmpfs")?;
        }
    }
    let shm = format!("{NEW_ROOT}/dev/shm");
    let _ = mount("tmpfs", &shm, "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=1777", "mount /dev/shm");
    let pts = format!("{NEW_ROOT}/dev/pts");
    let _ = mount("devpts", &pts, "devpts", libc::MS_NOSUID | libc::MS_NOEXEC, "newinstance,ptmxmode=0666", "mount devpts");
    std::env::set_current_dir(NEW_ROOT).map_err(|e| MountError { step: "chdir", target: NEW_ROOT.into(), source: e })?;
    mount(".", "/", "", libc::MS_MOVE, "", "move new root over /")?;
    let dot = cstr(".");
    // SAFETY: dot is a NUL-terminated path.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(err("chroot", NEW_ROOT));
    }
    std::env::set_current_dir("/").map_err(|e| MountError { step: "chdir", target: "/".into(), source: e })?;
    Ok(())
}

/// Unmounts the writable disks so their filesystems are clean on the host;
/// a disk still busy (a process not yet gone) is retried, then remounted
/// read-only, then detached (the host replays its journal either way).
pub fn unmount_writable() {
    for t in ["/workspace", "/var"] {
        let c = cstr(t);
        let mut busy = false;
        for _ in 0..20 {
            // SAFETY: c is a NUL-terminated path.
            let r = unsafe { libc::umount2(c.as_ptr(), 0) };
            busy = r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY);
            if !busy {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if busy {
            let _ = mount("", t, "", libc::MS_REMOUNT | libc::MS_RDONLY, "", "remount read-only");
            // SAFETY: as above.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Brings up the loopback interface (relays listen on 127.0.0.1).
pub fn loopback_up() {
    // SAFETY: a plain socket(2) call; the fd is closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return;
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: s is a socket, ifr a valid ifreq naming "lo"; SIOCGIFFLAGS
    // fills the flags union member that SIOCSIFFLAGS then reads.
    unsafe {
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
        }
        libc::close(s);
    }
}
