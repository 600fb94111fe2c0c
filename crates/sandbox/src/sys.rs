//! Thin, checked wrappers over the system calls the jail needs.
//!
//! Every wrapper returns `io::Result` with the kernel's errno; callers attach
//! the step and the path (see `error::Step`). Nothing here allocates after a
//! fork except `CString` construction, which the single-threaded helper
//! tolerates.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const AT_RECURSIVE: libc::c_uint = 0x8000;
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn mount(src: Option<&CStr>, target: &CStr, fstype: Option<&CStr>, flags: libc::c_ulong, data: Option<&CStr>) -> io::Result<()> {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: all pointers are valid NUL-terminated strings or null, as mount(2) allows.
    check(unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) })?;
    Ok(())
}

pub fn umount_detach(target: &CStr) -> io::Result<()> {
    // SAFETY: target is a valid C string.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })?;
    Ok(())
}

pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both arguments are valid C strings; pivot_root has no wrapper in libc.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })?;
    Ok(())
}

/// `open_tree(dirfd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH)`, with
/// `AT_RECURSIVE` when `recursive`: a detached copy of the mount (tree) at
/// `dirfd`, private, with `attrs` (MOUNT_ATTR_*) set on every mount of it.
pub fn open_tree_clone(dirfd: RawFd, recursive: bool, attrs: u64) -> io::Result<OwnedFd> {
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 } | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: "" is a valid C string; the kernel validates dirfd.
    let fd = check_long(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, c"".as_ptr(), flags) })?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    make_private(&tree, attrs)?;
    Ok(tree)
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE)`: a detached bind of one
/// file or directory, attachable in another mount namespace; private.
pub fn open_tree_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: c is a valid C string.
    let fd = check_long(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })?;
    // SAFETY: open_tree returned a new descriptor.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    make_private(&tree, 0)?;
    Ok(tree)
}

/// Makes every mount of the detached tree `tree` private and sets `set`
/// on each. Every clone this crate makes goes through here: a clone of a
/// shared mount (systemd mounts / shared) is in the peer group of what it
/// was cloned from, and whatever init later mounts on it would appear
/// there too, on the host, and stay.
fn make_private(tree: &OwnedFd, set: u64) -> io::Result<()> {
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: libc::MS_PRIVATE, userns_fd: 0 };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE;
    // SAFETY: attr is a properly laid-out struct mount_attr that outlives the call; "" is a valid C string.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// `flock(2)` on `fd`, retried when a signal interrupts it.
pub fn flock(fd: &OwnedFd, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(fd.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// 16 random hex digits (run ids, temporary names); from the time and pid
/// should getrandom fail.
pub fn random_hex() -> String {
    let mut b = [0u8; 8];
    // SAFETY: b is valid for 8 bytes; getrandom fills at most that.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sets mount attributes on the mount at `dirfd`/`path`.
pub fn mount_setattr(dirfd: RawFd, path: &CStr, flags: libc::c_uint, set: u64, userns: Option<RawFd>) -> io::Result<()> {
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: userns.map_or(0, |fd| fd as u64) };
    // SAFETY: attr is a properly laid-out struct mount_attr that outlives the call.
    check_long(unsafe {
        libc::syscall(libc::SYS_mount_setattr, dirfd, path.as_ptr(), flags, &attr as *const MountAttr, std::mem::size_of::<MountAttr>())
    })?;
    Ok(())
}

/// A new tmpfs that is mounted nowhere (fsopen, fsconfig, fsmount): a
/// detached mount to fill by name relative to the returned descriptor
/// (openat, mkdirat, symlinkat) and attach later with
/// [`move_mount_to`], in another mount namespace too. `options` are the
/// mount's string options; `attrs` its MOUNT_ATTR_* flags. Nothing of it
/// outlives its last descriptor until it is attached.
pub fn fsmount_tmpfs(options: &[(&CStr, &CStr)], attrs: u64) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // SAFETY: "tmpfs" is a valid C string.
    let fs = check_long(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fsopen returned a new descriptor that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    for (key, value) in options {
        // SAFETY: valid descriptor and C strings; aux is unused for strings.
        check_long(unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), FSCONFIG_SET_STRING, key.as_ptr(), value.as_ptr(), 0) })?;
    }
    // SAFETY: valid descriptor; CMD_CREATE takes no key or value.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: valid descriptor; attrs are mount attribute flags.
    let mnt = check_long(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs as libc::c_uint) })?;
    // SAFETY: fsmount returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as RawFd) })
}

/// Attaches the detached mount `from` at `to`.
pub fn move_mount_to(from: &OwnedFd, to: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and C strings; MOVE_MOUNT_F_EMPTY_PATH makes "" refer to `from`.
    check_long(unsafe {
        libc::syscall(libc::SYS_move_mount, from.as_raw_fd(), c"".as_ptr(), libc::AT_FDCWD, to.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH)
    })?;
    Ok(())
}

pub fn open_path(p: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cpath(p)?;
    // SAFETY: c is a valid C string; the returned fd is owned by us.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: open returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `O_PATH` descriptor of the directory `p`, refusing to follow a
/// symlink in any component (openat2's RESOLVE_NO_SYMLINKS): for a path
/// that was canonical when checked, a symlink now means someone swapped a
/// component since. Kernels before 5.6 check the last component only.
pub fn open_dir_nofollow(p: &Path) -> io::Result<OwnedFd> {
    let c = cpath(p)?;
    // SAFETY: open_how is plain data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: c is a valid C string, how a valid open_how of the size given.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, c.as_ptr(), &how, std::mem::size_of::<libc::open_how>()) };
    if fd >= 0 {
        // SAFETY: openat2 returned a fresh descriptor.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    open_path(p, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
}

/// A pipe whose ends are both close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads once into `buf`, retrying on EINTR. Returns 0 at end of file.
pub fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn read_exact(fd: RawFd, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = read_some(fd, buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
    }
    Ok(())
}

/// Reads up to and without the first newline, or to end of file.
pub fn read_line(fd: RawFd) -> io::Result<Vec<u8>> {
    read_until(fd, Some(b'\n'))
}

pub fn read_to_end(fd: RawFd) -> io::Result<Vec<u8>> {
    read_until(fd, None)
}

/// Reads to end of file, or up to (without) `stop`.
fn read_until(fd: RawFd, stop: Option<u8>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = read_some(fd, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        if let Some(i) = stop.and_then(|c| buf[..n].iter().position(|b| *b == c)) {
            out.extend_from_slice(&buf[..i]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// A fork-like clone(2) into new namespaces. Returns 0 in the child.
///
/// # Safety
/// The calling process must be single-threaded: the child continues on a
/// copy of the caller's stack and may only use what a forked child may.
pub unsafe fn clone_fork(flags: libc::c_ulong) -> io::Result<libc::pid_t> {
    // SAFETY: a null stack makes clone behave like fork; the caller upholds
    // single-threadedness.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    Ok(check_long(pid)? as libc::pid_t)
}

/// `struct clone_args` of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like [`clone_fork`], with the child born in the cgroup v2 directory
/// `cgroup` (an open descriptor): clone3's CLONE_INTO_CGROUP, so no
/// process ever migrates (a migration waits out an RCU grace period).
/// Errors (ENOSYS before Linux 5.7, E2BIG/EINVAL on older ABIs) leave
/// nothing behind; the caller then clones and moves the child itself.
///
/// # Safety
/// As for [`clone_fork`].
pub unsafe fn clone_into_cgroup(flags: libc::c_ulong, cgroup: RawFd) -> io::Result<libc::pid_t> {
    let args =
        CloneArgs { flags: flags | CLONE_INTO_CGROUP, exit_signal: libc::SIGCHLD as u64, cgroup: cgroup as u64, ..CloneArgs::default() };
    // SAFETY: args is a valid clone_args of the size given; a zero stack
    // makes the child run on a copy of ours, like fork; the caller upholds
    // single-threadedness.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    Ok(check_long(pid)? as libc::pid_t)
}

pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd has no memory-safety preconditions.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    Ok(())
}

pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here take integer arguments only.
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) })?;
    Ok(())
}

pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// A close-on-exec SOCK_SEQPACKET pair: one message per send, descriptors
/// can ride along (the console, executor and prompt channels).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Closes every descriptor from 3 up but those in `keep` (close_range(2)
/// over the gaps; one close(2) each up to the descriptor limit on kernels
/// before 5.9, which lack it: a descriptor left open here could reach a
/// process that must not have it).
pub fn close_all_but(keep: &[RawFd]) {
    close_gaps(keep, |from, end| {
        // SAFETY: closing descriptors this process owns; none is in use elsewhere.
        if unsafe { libc::syscall(libc::SYS_close_range, from, end - 1, 0u32) } < 0 {
            close_each(from, end);
        }
    });
}

/// Calls `close(from, end)` for each range of descriptors from 3 up that
/// holds none of `keep`.
fn close_gaps(keep: &[RawFd], close: impl Fn(u32, u32)) {
    let mut keep: Vec<u32> = keep.iter().filter(|fd| **fd > 2).map(|fd| *fd as u32).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 3u32;
    for k in keep.into_iter().chain([u32::MAX]) {
        if k > from {
            close(from, k);
        }
        from = k.saturating_add(1);
    }
}

/// close(2) on each descriptor in `from..end`, stopping at the descriptor
/// limit (no descriptor is open at or above it).
fn close_each(from: u32, end: u32) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: lim is a valid rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let end = u32::try_from(lim.rlim_cur).unwrap_or(u32::MAX).min(end);
    for fd in from..end {
        // SAFETY: closing descriptors this process owns; EBADF for one not open is harmless.
        unsafe { libc::close(fd as RawFd) };
    }
}

/// `statfs`'s `f_type` of a tmpfs.
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The type (`statfs`'s `f_type`) of the file system `p` is on.
pub fn fs_type(p: &Path) -> Option<i64> {
    let c = cpath(p).ok()?;
    // SAFETY: a zeroed statfs is a valid out-buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

/// A close-on-exec copy of `fd` numbered `min` or above.
pub fn dup_at_least(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on an integer fd has no memory-safety preconditions.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from fcntl.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

#[cfg(test)]
mod close_tests {
    use super::*;

    /// In a forked child (the test harness keeps its own descriptors):
    /// opens descriptors, closes all but some with `close`, and exits with
    /// a bit set for each descriptor left open, of the ones it opened.
    fn left_open(close: fn(&[RawFd])) -> i32 {
        // SAFETY: the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain syscalls on descriptors this child owns.
            unsafe {
                let fds: Vec<RawFd> = (0..6).map(|_| libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY)).collect();
                close(&[fds[1], fds[4], 1]);
                let mut open = 0;
                for (i, fd) in fds.iter().enumerate() {
                    if libc::fcntl(*fd, libc::F_GETFD) >= 0 {
                        open |= 1 << i;
                    }
                }
                if libc::fcntl(1, libc::F_GETFD) < 0 {
                    open |= 1 << 6;
                }
                libc::_exit(open);
            }
        }
        let mut st = 0;
        // SAFETY: reaping the child forked above.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        libc::WEXITSTATUS(st)
    }

    #[test]
    fn only_the_kept_descriptors_and_stdio_stay_open() {
        assert_eq!(left_open(close_all_but), 0b01_0010);
    }

    #[test]
    fn the_fallback_closes_the_same_ones() {
        assert_eq!(left_open(|keep| close_gaps(keep, close_each)), 0b01_0010);
    }
}
