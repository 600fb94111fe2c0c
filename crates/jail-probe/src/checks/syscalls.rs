//! Privileged or attack-surface syscalls the jail must refuse: mounts, new
//! namespaces, BPF, the kernel keyring and io_uring.

use std::ptr;

use super::{attempt, attempt_in_child};
use crate::child;
use crate::errno;
use crate::report::{Findings, Outcome};

/// No new mounts and no removing the jail's own mounts.
pub fn mount() -> Outcome {
    let mut f = Findings::new();
    // SAFETY: all strings are NUL-terminated literals; a null `data` is
    // allowed for tmpfs.
    let ret = unsafe { libc::mount(c"none".as_ptr(), c"/tmp".as_ptr(), c"tmpfs".as_ptr(), 0, ptr::null()) };
    let ret = errno::check(ret);
    attempt(&mut f, "mount(tmpfs on /tmp)", ret);
    if ret.is_ok() {
        // Put the jail's /tmp back for whatever runs after us.
        // SAFETY: NUL-terminated literal path.
        unsafe {
            libc::umount2(c"/tmp".as_ptr(), libc::MNT_DETACH);
        }
    }
    // SAFETY: NUL-terminated literal path.
    let ret = unsafe { libc::umount2(c"/workspace".as_ptr(), libc::MNT_DETACH) };
    attempt(&mut f, "umount2(/workspace, MNT_DETACH)", errno::check(ret));
    f.finish("mount")
}

/// No new user or mount namespace, by `unshare` or by raw `clone`. Each
/// `unshare` runs in its own child so a success cannot leak into the probe.
pub fn unshare_user() -> Outcome {
    let mut f = Findings::new();
    for (label, flag) in [("unshare(CLONE_NEWUSER)", libc::CLONE_NEWUSER), ("unshare(CLONE_NEWNS)", libc::CLONE_NEWNS)] {
        // SAFETY: unshare takes only a flag word.
        attempt_in_child(&mut f, label, || i64::from(unsafe { libc::unshare(flag) }));
    }
    raw_clone_newuser(&mut f);
    f.finish("unshare-user")
}

/// `clone(CLONE_NEWUSER|SIGCHLD)` straight through `syscall`, bypassing any
/// libc wrapper a filter might only be matching on.
fn raw_clone_newuser(f: &mut Findings) {
    const LABEL: &str = "clone(CLONE_NEWUSER)";
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a null stack gives fork semantics (the child runs on a copy of
    // our stack); the probe is single-threaded, and the child does nothing
    // but `_exit` below.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match ret {
        0 => {
            // SAFETY: we are the clone child: leave at once, touching nothing.
            unsafe { libc::_exit(0) }
        }
        ret if ret > 0 => {
            let pid = ret as libc::pid_t;
            let _ = child::reap(pid);
            f.escaped(format!("{LABEL} succeeded"));
        }
        _ => f.held(format!("{LABEL} -> {}", errno::name(errno::last()))),
    }
}

/// `BPF_PROG_LOAD` with an all-zero attribute: any failure is a pass, but the
/// errno tells whether the filter (EPERM) or the kernel's argument check
/// (EINVAL) stopped it.
pub fn bpf() -> Outcome {
    const BPF_PROG_LOAD: libc::c_long = 5;
    let mut f = Findings::new();
    let attr = [0u64; 16];
    // SAFETY: `attr` is readable for `size_of_val(&attr)` bytes; the kernel
    // only reads it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), std::mem::size_of_val(&attr)) };
    let ret = errno::check(ret);
    attempt(&mut f, "bpf(BPF_PROG_LOAD)", ret);
    close_if_fd(ret);
    f.finish("bpf")
}

/// The kernel keyring is not namespaced; neither lookup nor add may work.
pub fn keyctl() -> Outcome {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
    let mut f = Findings::new();
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1 as libc::c_long) };
    attempt(&mut f, "keyctl(GET_KEYRING_ID, session)", errno::check(ret));
    let payload = b"y";
    // SAFETY: type and description are NUL-terminated literals; `payload`
    // is readable for the length passed.
    let ret = unsafe {
        libc::syscall(libc::SYS_add_key, c"user".as_ptr(), c"x".as_ptr(), payload.as_ptr(), payload.len(), KEY_SPEC_PROCESS_KEYRING)
    };
    attempt(&mut f, "add_key(user, process keyring)", errno::check(ret));
    f.finish("keyctl")
}

/// io_uring reaches most of the kernel outside the seccomp filter's view.
pub fn io_uring() -> Outcome {
    let mut f = Findings::new();
    // Larger than `struct io_uring_params` (120 bytes), all zero.
    let mut params = [0u64; 16];
    // SAFETY: `params` is writable and larger than the struct the kernel
    // fills in.
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4 as libc::c_long, params.as_mut_ptr()) };
    let ret = errno::check(ret);
    attempt(&mut f, "io_uring_setup(4)", ret);
    close_if_fd(ret);
    f.finish("io-uring")
}

/// Closes a descriptor an escape attempt unexpectedly handed us.
pub(super) fn close_if_fd(ret: Result<i64, i32>) {
    if let Ok(fd) = ret.and_then(|fd| i32::try_from(fd).map_err(|_| 0)) {
        // SAFETY: `fd` was just returned to us by the kernel and is not
        // owned by anything else.
        unsafe {
            libc::close(fd);
        }
    }
}
