//! The host tools that read a disk the guest wrote (e2fsck, debugfs): as
//! root they run as a uid of their own that owns only that disk and the
//! scratch directory, and debugfs's rdump is stopped before it can fill
//! the host's disk.

use super::{io_err, DiskError};
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The uid and gid e2fsck and debugfs run as on a guest-written disk
/// (root callers): owns nothing on the host but that disk and the scratch
/// directory of one copy-back.
pub const DISK_TOOL_ID: u32 = crate::idmap::JAIL_UID_BASE + 3;

/// The disk, opened for the confined tools; `None` when not root.
pub(super) struct Confinement {
    _disk: fs::File,
    pub(super) disk_arg: PathBuf,
}

impl Confinement {
    pub(super) fn prepare(img: &Path, scratch: &Path, out: &Path) -> Result<Option<Confinement>, DiskError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        for p in [img, scratch, out] {
            std::os::unix::fs::lchown(p, Some(DISK_TOOL_ID), Some(DISK_TOOL_ID)).map_err(io_err("chown", p))?;
        }
        let disk = fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(img).map_err(io_err("open", img))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&disk);
        // SAFETY: F_SETFD on a descriptor we own: the tools inherit it.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(DiskError::Io { op: "keep open", path: img.into(), source: io::Error::last_os_error() });
        }
        Ok(Some(Confinement { _disk: disk, disk_arg: PathBuf::from(format!("/proc/self/fd/{fd}")) }))
    }
}

/// Drops the child to [`DISK_TOOL_ID`] with no supplementary groups and
/// no_new_privs, after std changed into its working directory.
pub(super) fn confine(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setgroups, setresgid, setresuid and prctl are async-signal-safe
    // and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let id = DISK_TOOL_ID;
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(id, id, id) != 0
                || libc::setresuid(id, id, id) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Confines a tool that reads the guest's disk, root or not, to writing
/// only beneath `scratch` and to the disk image itself: debugfs's rdump
/// joins the names it finds on the disk to its output directory as they
/// are, so a crafted entry named `../../x` (or a symlink the guest made)
/// would otherwise write wherever the caller can. `None` without Landlock.
pub(super) fn write_boundary(img: &Path, scratch: &Path) -> Option<std::os::fd::OwnedFd> {
    let why = match crate::landlock::write_boundary(&[scratch], &[img]) {
        Ok(Some(fd)) => return Some(fd),
        Ok(None) => "this kernel has no Landlock".to_string(),
        Err(e) => e,
    };
    eprintln!(
        "clawkeep: warning: the workspace is copied back without a write boundary ({why}); a crafted guest disk could write outside it"
    );
    None
}

/// Applies `boundary` (see [`write_boundary`]) in the child before exec.
pub(super) fn bound(cmd: &mut Command, boundary: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = boundary.as_raw_fd();
    // SAFETY: restrict_with makes two syscalls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || crate::landlock::restrict_with(fd));
    }
}

/// Runs `debugfs rdump` while watching the scratch filesystem: rdump
/// writes sparse files out in full, so a guest's `truncate -s 10T` would
/// otherwise fill the host disk. More than `limit` bytes (the disk's own
/// size: no honest content is larger) kills it.
pub(super) fn bounded_rdump(mut cmd: Command, img: &Path, scratch: &Path, limit: u64) -> Result<String, DiskError> {
    use std::process::Stdio;
    let free = |p: &Path| -> Option<u64> {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: statvfs is plain data; zeroed is valid and the call fills it.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid C string and st a valid out-pointer.
        (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail * st.f_frsize)
    };
    let start = free(scratch);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DiskError::ToolMissing { tool: "debugfs" },
        _ => DiskError::ToolFailed { tool: "debugfs", path: img.into(), detail: e.to_string() },
    })?;
    let mut stderr_pipe = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = stderr_pipe.as_mut() {
            let _ = io::Read::read_to_string(p, &mut s);
        }
        s
    });
    let too_large = loop {
        match child.try_wait() {
            Ok(Some(_)) => break false,
            Ok(None) => {}
            Err(e) => return Err(DiskError::ToolFailed { tool: "debugfs", path: img.into(), detail: e.to_string() }),
        }
        if let (Some(a), Some(b)) = (start, free(scratch)) {
            if a.saturating_sub(b) > limit {
                let _ = child.kill();
                let _ = child.wait();
                break true;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap_or_default();
    if too_large {
        return Err(DiskError::TooLarge { path: img.into(), limit });
    }
    let status = child.wait().map_err(|e| DiskError::ToolFailed { tool: "debugfs", path: img.into(), detail: e.to_string() })?;
    if !status.success() {
        let detail = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message").to_string();
        return Err(DiskError::ToolFailed { tool: "debugfs", path: img.into(), detail });
    }
    Ok(stderr)
}
