//! User-id mapping: who the agent is, inside and outside.
//!
//! Guarantees:
//! - host root (uid 0) is never mapped into the jail's user namespace;
//! - as root, the jail's root is host uid `JAIL_UID_BASE` and the agent
//!   (uid/gid 1000 inside) is host uid `JAIL_UID_BASE + 1000`, ids that own
//!   nothing on the host;
//! - the workspace is attached through an idmapped mount, so files the agent
//!   writes there belong on disk to the workspace's owner.
//!
//! Without root, the agent is the caller's own uid (the only mapping an
//! unprivileged user may write).

use crate::error::{SetupFailure, Step};
use crate::sys;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// First host id of the jail's range (inside 0 maps here).
pub const JAIL_UID_BASE: u32 = 2_000_000_000;
/// The agent's uid and gid inside the jail.
pub const AGENT_ID: u32 = 1000;

/// The maps written for the jail's user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    pub uid_map: String,
    pub gid_map: String,
    /// Whether inside-root (0) is mapped, so init takes uid 0 for set-up.
    pub has_root: bool,
    /// Unprivileged writers must deny setgroups before writing gid_map.
    pub deny_setgroups: bool,
}

/// The calling thread's file-system uid and gid switched to those the
/// jail's root has on the host, until dropped (root only). Per thread: the
/// helper has no other, the launcher takes them on a thread of their own.
#[derive(Debug)]
#[must_use = "the identity lasts until dropped"]
pub struct FsIdentity {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl FsIdentity {
    /// Fails (with the old ids back) unless the switch took and left this
    /// thread no way around file permissions: setfsuid reports no error,
    /// and under SECBIT_NO_SETUID_FIXUP the DAC capabilities would stay.
    pub fn jail_root() -> io::Result<FsIdentity> {
        // SAFETY: setfsuid/setfsgid change only this thread's fs ids and
        // return the previous ones; an invalid id (-1) changes nothing.
        let (id, now) = unsafe {
            let gid = libc::setfsgid(JAIL_UID_BASE) as libc::gid_t;
            let uid = libc::setfsuid(JAIL_UID_BASE) as libc::uid_t;
            (FsIdentity { uid, gid }, (libc::setfsuid(u32::MAX) as u32, libc::setfsgid(u32::MAX) as u32))
        };
        if now != (JAIL_UID_BASE, JAIL_UID_BASE) {
            return Err(io::Error::other("the file-system ids of the jail's root did not take"));
        }
        if crate::caps::bypasses_file_permissions()? {
            return Err(io::Error::other("file permissions are still bypassed under the jail root's ids"));
        }
        Ok(id)
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        // SAFETY: as above, back to the ids we had.
        unsafe {
            libc::setfsuid(self.uid);
            libc::setfsgid(self.gid);
        }
    }
}

impl IdMaps {
    /// Maps for a root caller: inside 0 and 1000 map to the dedicated range,
    /// or the agent maps to `agent_host` when the workspace is attached
    /// without an idmapped mount.
    pub fn privileged(agent_host_uid: u32, agent_host_gid: u32) -> Self {
        Self {
            uid_map: format!("0 {JAIL_UID_BASE} 1\n{AGENT_ID} {agent_host_uid} 1\n"),
            gid_map: format!("0 {JAIL_UID_BASE} 1\n{AGENT_ID} {agent_host_gid} 1\n"),
            has_root: true,
            deny_setgroups: false,
        }
    }

    pub fn unprivileged(uid: u32, gid: u32) -> Self {
        Self { uid_map: format!("{AGENT_ID} {uid} 1\n"), gid_map: format!("{AGENT_ID} {gid} 1\n"), has_root: false, deny_setgroups: true }
    }

    /// Writes the maps for process `pid` (its user namespace must be new).
    pub fn write(&self, pid: libc::pid_t) -> Result<(), SetupFailure> {
        let proc = format!("/proc/{pid}");
        let w = |file: &str, data: &str| {
            fs::write(format!("{proc}/{file}"), data).map_err(|e| SetupFailure::new(Step::WriteIdMap, format!("{proc}/{file}"), &e))
        };
        if self.deny_setgroups {
            w("setgroups", "deny")?;
        }
        w("uid_map", &self.uid_map)?;
        w("gid_map", &self.gid_map)
    }
}

/// The default agent host id for a root caller.
pub fn agent_host_id() -> u32 {
    JAIL_UID_BASE + AGENT_ID
}

/// How the workspace gets into the jail.
#[derive(Debug)]
pub enum WorkspaceMount {
    /// A detached, idmapped clone of the workspace, attached by init.
    Idmapped(OwnedFd),
    /// An idmapped clone the helper makes after the jail is cloned, in
    /// parallel with init's set-up; init receives it on this socket.
    Deferred(std::os::fd::RawFd),
    /// A plain bind of this host path, opened by init in its own mount
    /// namespace (a mount from the helper's namespace cannot be bound there).
    Bind(std::path::PathBuf),
}

/// Prepares the workspace for a root caller: an idmapped mount that shows
/// the owner's files as the agent's. Falls back to mapping the agent onto a
/// non-root owner when the filesystem cannot idmap.
pub fn prepare_workspace_as_root(ws: &Path) -> Result<(WorkspaceMount, IdMaps), SetupFailure> {
    let (fd, meta) = open_workspace(ws)?;
    let agent = agent_host_id();
    match idmapped_clone(&fd, meta.uid(), meta.gid(), agent) {
        Ok(tree) => Ok((WorkspaceMount::Idmapped(tree), IdMaps::privileged(agent, agent))),
        // No idmapped mounts here (e.g. the filesystem lacks support): map
        // the agent onto the workspace's (unprivileged) owner instead.
        Err(_) if meta.uid() != 0 && meta.gid() != 0 => {
            Ok((WorkspaceMount::Bind(ws.to_path_buf()), IdMaps::privileged(meta.uid(), meta.gid())))
        }
        Err(e) => Err(SetupFailure::msg(
            Step::IdmapMount,
            ws.display().to_string(),
            format!(
                "{}; the workspace is owned by root and its filesystem cannot do idmapped mounts, \
                 so the agent could not write to it without being host root. chown the workspace \
                 to an unprivileged user, or use a workspace on ext4, xfs, btrfs or tmpfs",
                e.message
            ),
        )),
    }
}

/// Whether the workspace's filesystem is one that supports idmapped
/// mounts, so the helper may build the mount in parallel with init.
pub fn idmap_expected(ws: &Path) -> bool {
    const KNOWN: &[i64] = &[0xEF53, 0x5846_5342, 0x9123_683E, sys::TMPFS_MAGIC, 0x794C_7630, 0xF2F5_2010];
    sys::fs_type(ws).is_some_and(|t| KNOWN.contains(&t))
}

/// The idmapped workspace tree for a root caller whose filesystem was
/// expected to support it (see `idmap_expected`).
pub fn idmapped_tree(ws: &Path) -> Result<OwnedFd, SetupFailure> {
    let (fd, meta) = open_workspace(ws)?;
    idmapped_clone(&fd, meta.uid(), meta.gid(), agent_host_id())
}

/// The workspace (a canonical path) opened without following a symlink
/// anywhere in it, and its owner read from that descriptor: a directory
/// swapped for a symlink (to /etc, say) after the path was checked is
/// refused rather than mapped to the agent.
pub fn open_workspace(ws: &Path) -> Result<(OwnedFd, fs::Metadata), SetupFailure> {
    let shown = ws.display().to_string();
    let fd = sys::open_dir_nofollow(ws).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => SetupFailure::msg(
            Step::OpenSource,
            shown.clone(),
            "the workspace path now goes through a symlink (it was swapped while the run started); nothing was mounted".to_string(),
        ),
        _ => SetupFailure::new(Step::OpenSource, shown.clone(), &e),
    })?;
    let meta = fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| SetupFailure::new(Step::OpenSource, shown, &e))?;
    Ok((fd, meta))
}

fn idmapped_clone(ws: &OwnedFd, owner_uid: u32, owner_gid: u32, agent: u32) -> Result<OwnedFd, SetupFailure> {
    let userns = mapping_userns(owner_uid, owner_gid, agent)?;
    let tree = sys::open_tree_clone(ws.as_raw_fd(), true, 0).map_err(|e| SetupFailure::new(Step::IdmapMount, "open_tree", &e))?;
    sys::mount_setattr(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint | sys::AT_RECURSIVE,
        sys::MOUNT_ATTR_IDMAP,
        Some(userns.as_raw_fd()),
    )
    .map_err(|e| SetupFailure::new(Step::IdmapMount, "mount_setattr(MOUNT_ATTR_IDMAP)", &e))?;
    Ok(tree)
}

/// A user namespace whose only mapping is `owner -> agent`, used as the
/// idmap of the workspace mount. Made by a short-lived child born in it
/// that waits while we write its maps, and is killed afterwards.
///
/// The child shares our memory (CLONE_VM) and runs on a small stack of its
/// own: a fork would copy the helper's page tables and cost every page the
/// helper writes afterwards a copy-on-write fault, for a child that only
/// blocks. It blocks in `read` on a pipe whose write end its own copy of
/// our descriptors also holds, so only the SIGKILL below ends it. Sharing
/// our memory, it also shares our thread's TLS: glibc's `read` would set
/// errno there only on a failure, and the one failure it could meet, EINTR,
/// cannot happen: the helper installs no signal handler (it takes its
/// signals on a signalfd, with them blocked; the rest are ignored or
/// fatal), so nothing runs a handler on the child's stack either.
fn mapping_userns(owner_uid: u32, owner_gid: u32, agent: u32) -> Result<OwnedFd, SetupFailure> {
    let fail = |e: &io::Error| SetupFailure::new(Step::IdmapUserns, "mapping user namespace", e);
    let (hold_r, hold_w) = sys::pipe().map_err(|e| fail(&e))?;
    /// Blocks until it is killed (see above).
    extern "C" fn hold(fd: *mut libc::c_void) -> libc::c_int {
        let mut b = 0u8;
        // SAFETY: a one-byte read into our own stack frame.
        unsafe { libc::read(fd as usize as libc::c_int, (&raw mut b).cast(), 1) };
        0
    }
    const STACK: usize = 64 * 1024;
    let mut stack = vec![0u8; STACK];
    // The stack grows down from its (16-byte aligned) top.
    let top = (stack.as_mut_ptr() as usize + STACK) & !15;
    // SAFETY: the child runs `hold` on `stack`, which outlives it (it is
    // reaped below before `stack` drops); it shares our memory but writes
    // only its own frame; the helper is single-threaded.
    let pid = unsafe {
        libc::clone(
            hold,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_NEWUSER | libc::SIGCHLD,
            hold_r.as_raw_fd() as usize as *mut libc::c_void,
        )
    };
    if pid < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EINVAL) | Some(libc::ENOSPC) | Some(libc::EUSERS) => {
                SetupFailure::msg(Step::IdmapUserns, "clone(CLONE_NEWUSER)", format!("the kernel refused a new user namespace: {e}"))
            }
            _ => fail(&e),
        });
    }
    let result = (|| {
        fs::write(format!("/proc/{pid}/uid_map"), format!("{owner_uid} {agent} 1\n")).map_err(|e| fail(&e))?;
        fs::write(format!("/proc/{pid}/gid_map"), format!("{owner_gid} {agent} 1\n")).map_err(|e| fail(&e))?;
        sys::open_path(Path::new(&format!("/proc/{pid}/ns/user")), libc::O_RDONLY).map_err(|e| fail(&e))
    })();
    drop(hold_w);
    // SAFETY: pid is our own child; reaped before its stack is freed.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        while libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {
        }
    }
    drop(stack);
    drop(hold_r);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_root_never_mapped() {
        for maps in [IdMaps::privileged(agent_host_id(), agent_host_id()), IdMaps::privileged(1234, 1234), IdMaps::unprivileged(1000, 1000)]
        {
            for line in maps.uid_map.lines().chain(maps.gid_map.lines()) {
                let outside: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                assert_ne!(outside, 0, "{line}");
            }
        }
    }

    /// A workspace whose path went through a symlink when it was opened
    /// (a component swapped after the check) is refused, last component
    /// or not; the real directory opens and reports its own owner.
    #[test]
    fn a_workspace_swapped_for_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir_all(real.join("inner")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        for swapped in [dir.path().join("link"), dir.path().join("link/inner")] {
            let err = open_workspace(&swapped).unwrap_err();
            assert!(err.to_string().contains("through a symlink"), "{swapped:?}: {err}");
        }
        let (_, meta) = open_workspace(&real.join("inner")).unwrap();
        assert_eq!(meta.ino(), fs::metadata(real.join("inner")).unwrap().ino());
    }

    /// Under the jail root's file-system ids this thread reads what others
    /// may, not what host root may; dropped, host root's ids are back.
    #[test]
    fn the_jail_roots_file_system_ids_read_no_more_than_others_may() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: needs root");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (private, public) = (dir.path().join("private"), dir.path().join("public"));
        for (p, mode) in [(&private, 0o600), (&public, 0o644)] {
            fs::write(p, b"x").unwrap();
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        }
        {
            let _id = FsIdentity::jail_root().unwrap();
            assert_eq!(fs::read(&private).unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
            assert_eq!(fs::read(&public).unwrap(), b"x");
        }
        assert_eq!(fs::read(&private).unwrap(), b"x");
    }
}
