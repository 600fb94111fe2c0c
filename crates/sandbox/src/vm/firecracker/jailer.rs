//! A jailer for one Firecracker process, modelled on Firecracker's own
//! `jailer` (docs/jailer.md), done in-process so clawkeep needs one binary
//! less on the host.
//!
//! Guarantees, when jailed (`owner` is `Some`, needs root):
//! - the VMM runs as a dedicated unprivileged uid/gid with no supplementary
//!   groups, chrooted in `<vm dir>/root`, which holds only its own copy of the
//!   firecracker binary, the kernel, the drives, `/dev/kvm`, `/dev/urandom`,
//!   `/dev/net/tun` (only with a network interface) and `/run` for its
//!   sockets;
//! - read-only inputs (firecracker, kernel, initrd, rootfs) are hard-linked
//!   when the VMM can read but not alter them, and copied otherwise, so their
//!   owner and mode on the host are never changed; writable drives are hard-linked (same inode, so the
//!   guest's writes land in the caller's file), chowned to the VMM's uid for
//!   the VM's life and given back to their owner by `remove`;
//! - the process is in the VM's cgroups before it executes anything, has
//!   no_new_privs, and gets SIGKILL when the thread that spawned it dies
//!   (PR_SET_PDEATHSIG; spawn from a long-lived thread);
//! - Firecracker installs its own seccomp filters per thread at start-up
//!   (docs/seccomp.md); clawkeep never passes `--no-seccomp`.
//!
//! Unjailed (`owner` is `None`, development only), the VMM runs as the
//! caller and sees host paths; only `/run` for its sockets is created.

use super::error::{FirecrackerError, JailStep, Result};
use crate::idmap::JAIL_UID_BASE;
use crate::sys::cpath;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// First uid/gid of the Firecracker range, beside the jail's range: ids that
/// own nothing on the host.
pub const FIRECRACKER_UID_BASE: u32 = JAIL_UID_BASE + 100_000;

/// The VMM's identity. One uid per concurrently running VM, so that one
/// VMM escaped into its process cannot signal or read another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmmIds {
    pub uid: u32,
    pub gid: u32,
}

impl VmmIds {
    pub fn dedicated(slot: u16) -> Self {
        let id = FIRECRACKER_UID_BASE + u32::from(slot);
        Self { uid: id, gid: id }
    }
}

/// A writable file whose owner and mode were changed for the VM's life.
#[derive(Debug)]
struct Lent {
    path: PathBuf,
    uid: u32,
    gid: u32,
    mode: u32,
}

/// The per-VM directory: `<dir>/root` is the chroot, `<dir>/firecracker.log`
/// (outside it) takes the VMM's stdout and stderr (its log and the guest's
/// serial console).
#[derive(Debug)]
pub struct Chroot {
    dir: PathBuf,
    root: PathBuf,
    owner: Option<VmmIds>,
    lent: Vec<Lent>,
}

impl Chroot {
    /// Creates `dir` (0700) and an empty chroot in it; a stale one from a
    /// killed run is removed first.
    pub fn create(dir: &Path, owner: Option<VmmIds>) -> Result<Self> {
        let root = dir.join("root");
        if root.exists() {
            fs::remove_dir_all(&root).map_err(FirecrackerError::jail(JailStep::RemoveChroot, &root))?;
        }
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(FirecrackerError::jail(JailStep::CreateDir, dir))?;
        fs::DirBuilder::new().mode(0o755).create(&root).map_err(FirecrackerError::jail(JailStep::CreateDir, &root))?;
        let c = Self { dir: dir.to_path_buf(), root, owner, lent: Vec::new() };
        // Firecracker creates its API socket and the vsock socket here.
        let run = c.run_dir();
        fs::DirBuilder::new().mode(0o700).create(&run).map_err(FirecrackerError::jail(JailStep::CreateDir, &run))?;
        c.give(&run)?;
        Ok(c)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn owner(&self) -> Option<VmmIds> {
        self.owner
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("firecracker.log")
    }

    /// Host path of the VMM's socket directory.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `host` (a path under the chroot) as the VMM sees it.
    pub fn vmm_path(&self, host: &Path) -> PathBuf {
        match (self.owner, host.strip_prefix(&self.root)) {
            (Some(_), Ok(rel)) => Path::new("/").join(rel),
            _ => host.to_path_buf(),
        }
    }

    /// Puts the firecracker binary where the VMM can execute it; returns the
    /// path to execute (inside the chroot when jailed). Firecracker is
    /// static (musl), so the chroot needs no libraries.
    pub fn install_binary(&mut self, src: &Path) -> Result<PathBuf> {
        let Some(owner) = self.owner else { return Ok(src.to_path_buf()) };
        let dst = self.root.join("firecracker");
        let meta = fs::metadata(src).map_err(FirecrackerError::jail(JailStep::LinkFile, src))?;
        if shareable(&meta, owner) {
            link_or_copy(src, &dst)?;
        } else {
            fs::copy(src, &dst).map_err(FirecrackerError::jail(JailStep::CopyFile, &dst))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).map_err(FirecrackerError::jail(JailStep::Chmod, &dst))?;
        }
        Ok(self.vmm_path(&dst))
    }

    /// Makes `src` readable by the VMM as `name`; returns the VMM's path.
    pub fn add_read_only(&mut self, src: &Path, name: &str) -> Result<PathBuf> {
        let Some(owner) = self.owner else { return Ok(src.to_path_buf()) };
        let dst = self.root.join(name);
        let meta = fs::metadata(src).map_err(FirecrackerError::jail(JailStep::LinkFile, src))?;
        if shareable(&meta, owner) {
            link_or_copy(src, &dst)?;
        } else {
            // A private copy, so the original keeps its owner and mode.
            fs::copy(src, &dst).map_err(FirecrackerError::jail(JailStep::CopyFile, &dst))?;
            std::os::unix::fs::chown(&dst, Some(owner.uid), Some(owner.gid)).map_err(FirecrackerError::jail(JailStep::Chown, &dst))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o400)).map_err(FirecrackerError::jail(JailStep::Chmod, &dst))?;
        }
        Ok(self.vmm_path(&dst))
    }

    /// Makes `src` writable by the VMM as `name` (a hard link: the guest's
    /// writes must land in `src`); returns the VMM's path.
    pub fn add_writable(&mut self, src: &Path, name: &str) -> Result<PathBuf> {
        let Some(owner) = self.owner else { return Ok(src.to_path_buf()) };
        let dst = self.root.join(name);
        let meta = fs::metadata(src).map_err(FirecrackerError::jail(JailStep::LinkFile, src))?;
        match fs::hard_link(src, &dst) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => return Err(FirecrackerError::CrossDevice { path: src.to_path_buf() }),
            Err(e) => return Err(FirecrackerError::jail(JailStep::LinkFile, &dst)(e)),
        }
        self.lent.push(Lent { path: src.to_path_buf(), uid: meta.uid(), gid: meta.gid(), mode: meta.mode() & 0o7777 });
        std::os::unix::fs::chown(&dst, Some(owner.uid), Some(owner.gid)).map_err(FirecrackerError::jail(JailStep::Chown, &dst))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o600)).map_err(FirecrackerError::jail(JailStep::Chmod, &dst))?;
        Ok(self.vmm_path(&dst))
    }

    /// Creates `/dev/kvm`, `/dev/urandom` and, for networking, `/dev/net/tun`,
    /// owned by the VMM (as Firecracker's jailer does).
    pub fn make_devices(&self, tun: bool) -> Result<()> {
        if self.owner.is_none() {
            return Ok(());
        }
        let mut nodes = vec![("dev/kvm", 10, 232), ("dev/urandom", 1, 9)];
        if tun {
            nodes.push(("dev/net/tun", 10, 200));
        }
        for (rel, major, minor) in nodes {
            let path = self.root.join(rel);
            if let Some(parent) = path.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(FirecrackerError::jail(JailStep::CreateDir, parent))?;
            }
            let c = cpath(&path).map_err(FirecrackerError::jail(JailStep::MakeDevice, &path))?;
            // SAFETY: c is a valid C string; mknod does not retain it.
            let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(major, minor)) };
            if rc != 0 {
                return Err(FirecrackerError::jail(JailStep::MakeDevice, &path)(io::Error::last_os_error()));
            }
            self.give(&path)?;
        }
        Ok(())
    }

    /// Chowns a path inside the chroot to the VMM (no-op unjailed).
    pub fn give(&self, path: &Path) -> Result<()> {
        match self.owner {
            Some(o) => std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid)).map_err(FirecrackerError::jail(JailStep::Chown, path)),
            None => Ok(()),
        }
    }

    /// Gives lent files back to their owners and removes the VM directory
    /// (chroot, sockets, log). Idempotent.
    pub fn remove(&mut self) -> Result<()> {
        let mut first_err = None;
        for l in self.lent.drain(..) {
            let r = std::os::unix::fs::chown(&l.path, Some(l.uid), Some(l.gid))
                .and_then(|()| fs::set_permissions(&l.path, fs::Permissions::from_mode(l.mode)))
                .map_err(FirecrackerError::jail(JailStep::RestoreOwner, &l.path));
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first_err.get_or_insert(FirecrackerError::jail(JailStep::RemoveChroot, &self.dir)(e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Whether the VMM may share `meta`'s inode: it can read it and can change
/// neither its content nor its mode (world-writable, or owned by the VMM's
/// uid or gid, would let an escaped VMM alter a host file).
fn shareable(meta: &fs::Metadata, owner: VmmIds) -> bool {
    meta.mode() & 0o004 != 0 && meta.mode() & 0o002 == 0 && meta.uid() != owner.uid && meta.gid() != owner.gid
}

fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            fs::copy(src, dst).map(drop).map_err(FirecrackerError::jail(JailStep::CopyFile, dst))
        }
        Err(e) => Err(FirecrackerError::jail(JailStep::LinkFile, dst)(e)),
    }
}

/// What the child does between fork and exec. Everything is computed
/// before the fork: `apply` makes system calls only, no allocation, since
/// the parent may be multi-threaded.
#[derive(Debug)]
pub struct PreExec {
    parent: libc::pid_t,
    cgroup_procs: Vec<CString>,
    chroot: Option<(CString, VmmIds)>,
}

impl PreExec {
    pub fn new(chroot: &Chroot, cgroup_dirs: &[PathBuf]) -> io::Result<Self> {
        let cgroup_procs = cgroup_dirs.iter().map(|d| cpath(&d.join("cgroup.procs"))).collect::<io::Result<_>>()?;
        let chroot = match chroot.owner {
            Some(ids) => Some((cpath(&chroot.root)?, ids)),
            None => None,
        };
        // SAFETY: getpid has no preconditions.
        Ok(Self { parent: unsafe { libc::getpid() }, cgroup_procs, chroot })
    }

    /// Runs in the forked child. Order matters: cgroups are joined by host
    /// path before the chroot; the death signal is set after the id change,
    /// which would clear it (prctl(2)).
    pub fn apply(&self) -> io::Result<()> {
        for procs in &self.cgroup_procs {
            // SAFETY: procs is a valid C string; the fd is closed below.
            let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: writes 1 byte from a static buffer to the fd just opened. "0" means "this process".
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            let err = io::Error::last_os_error();
            // SAFETY: fd is ours and open.
            unsafe { libc::close(fd) };
            if n != 1 {
                return Err(err);
            }
        }
        // Descriptors a library opened without O_CLOEXEC must not reach the
        // VMM. CLOSE_RANGE_CLOEXEC (Linux 5.11) marks rather than closes, so
        // std's exec-error pipe keeps working; older kernels skip this.
        // SAFETY: close_range takes plain integers.
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) };
        if let Some((root, ids)) = &self.chroot {
            // SAFETY: root is a valid C string.
            check(unsafe { libc::chroot(root.as_ptr()) })?;
            // SAFETY: "/" is a valid C string.
            check(unsafe { libc::chdir(c"/".as_ptr()) })?;
            // SAFETY: an empty list: a null pointer with size 0 is allowed.
            check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
            // SAFETY: setresgid/setresuid take plain integers.
            check(unsafe { libc::setresgid(ids.gid, ids.gid, ids.gid) })?;
            // SAFETY: as above.
            check(unsafe { libc::setresuid(ids.uid, ids.uid, ids.uid) })?;
        }
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
        // The parent may have died before the death signal was armed.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != self.parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[path = "jailer_tests.rs"]
mod tests;
