//! Where a live run's sockets live.
//!
//! `<state>/agents/<agent>/` holds a live run's `gate.sock` and `api.sock`:
//! the documented path, and the one every command uses. A run makes its
//! dir, binds both sockets and removes all three at its end (a default run
//! has a name of its own), and on a journalling file system the audit
//! log's fsyncs then wait for that metadata too: 0.1-0.3 ms a run on this
//! project's ext4 test host. So where the host has a tmpfs for runtime
//! files, `<state>/agents` is a symlink, made once, to a dir of ours there:
//!
//! - `/run/clawkeep/agents-<random>` when /run is a tmpfs (as root);
//! - `$XDG_RUNTIME_DIR/clawkeep/agents-<random>` when that is a tmpfs;
//! - `/dev/shm/clawkeep-<uid>/agents-<random>` otherwise;
//!
//! and a plain dir when there is none, or when a plain one is in use. The
//! random name keeps state dirs apart and stays with the link; the dir is
//! made again when it is gone (after a reboot, or once the last run of the
//! state dir removed it, see `clawkeep_sandbox::agent_dir::remove`).
//!
//! A base dir (`/run/clawkeep`, ...) is chosen only in a dir whose entries
//! its owner alone (us or root) can change, and must be a dir, not a link,
//! owned by us and closed to everyone else: that it still is is checked at
//! every run (/dev/shm is writable by all, and a name there can be taken
//! first). A link whose base is gone (a logout removes `$XDG_RUNTIME_DIR`)
//! or fails the check is pointed elsewhere, or replaced by a plain dir.

use crate::Failure;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub use clawkeep_sandbox::agent_dir::RUNTIME_PREFIX;

/// `<state>/agents` as a run uses it: the runtime dir it links to, or
/// itself when it is a plain dir. Makes the link when there is none (see
/// the module docs), and again when the base it points into is gone (a
/// logout removes `$XDG_RUNTIME_DIR`) or no longer a private dir of ours.
/// The runtime dir itself is made by the caller (with the agent's dir in
/// it, mode 0700).
///
/// A link into a base that is fine is used as it is; any change is made
/// by one run at a time, under `<state>/.agents.lock`, on what it reads
/// there: two runs never both replace a link, so none moves the link away
/// from a run that has just taken it.
pub fn agents_root(state: &Path) -> Result<PathBuf, Failure> {
    let link = state.join("agents");
    if let Ok(target) = std::fs::read_link(&link) {
        check_target(&link, &target)?;
        if base_is_ours(&target) {
            return Ok(target);
        }
    }
    let _turn = clawkeep_core::lock_beside(&link, std::time::Duration::from_secs(5)).map_err(|e| {
        Failure::usage(format!("cannot take {}: {e}; {}", clawkeep_core::lock::lock_path(&link).display(), clawkeep_core::lock::advice(&e)))
    })?;
    let made = |e: std::io::Error| {
        Failure::usage(format!("cannot make {}: {e}; check that the state dir is writable by this user", link.display()))
    };
    match std::fs::read_link(&link) {
        Ok(target) => {
            check_target(&link, &target)?;
            if base_is_ours(&target) {
                return Ok(target);
            }
            // Gone, or not ours: no run of ours is in it. A new link is
            // renamed over it, so a run reading it sees one or the other.
            match runtime_base() {
                Some(base) => {
                    let target = new_target(&base);
                    let tmp = link.with_file_name(format!(".agents-{}", clawkeep_sandbox::sys::random_hex()));
                    std::os::unix::fs::symlink(&target, &tmp).map_err(made)?;
                    std::fs::rename(&tmp, &link).inspect_err(|_| drop(std::fs::remove_file(&tmp))).map_err(made)?;
                    Ok(target)
                }
                None => {
                    std::fs::remove_file(&link).map_err(made)?;
                    plain(&link)
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match runtime_base() {
            Some(base) => {
                let target = new_target(&base);
                std::os::unix::fs::symlink(&target, &link).map_err(made)?;
                Ok(target)
            }
            None => plain(&link),
        },
        // A plain dir (made by an older version, or when there was no
        // runtime dir): it gives way to the link once no run uses it.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let Some(base) = runtime_base() else { return Ok(link) };
            if std::fs::remove_dir(&link).is_err() {
                // In use by a run: it stays for now.
                return Ok(link);
            }
            let target = new_target(&base);
            std::os::unix::fs::symlink(&target, &link).map_err(made)?;
            Ok(target)
        }
        Err(e) => Err(Failure::runtime(format!("cannot read {}: {e}; check the state dir's permissions", link.display()))),
    }
}

/// Whether the base of the runtime dir `target` is (still) a private dir
/// of ours, made again when it is gone but its place is fine.
fn base_is_ours(target: &Path) -> bool {
    target.parent().is_some_and(|base| make_base(base).is_ok())
}

fn new_target(base: &Path) -> PathBuf {
    base.join(format!("{RUNTIME_PREFIX}{}", clawkeep_sandbox::sys::random_hex()))
}

/// `<state>/agents` as a plain dir (no runtime dir is usable).
fn plain(link: &Path) -> Result<PathBuf, Failure> {
    match std::fs::DirBuilder::new().mode(0o700).create(link) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Failure::usage(format!("cannot create {}: {e}", link.display()))),
        _ => Ok(link.to_path_buf()),
    }
}

/// The first runtime base the module docs name that is on a tmpfs, in a
/// dir only its owner (us or root) can change entries of, and ours (made
/// if need be).
fn runtime_base() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let mut bases = Vec::new();
    if euid == 0 {
        bases.push(PathBuf::from("/run/clawkeep"));
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|p| p.is_absolute()) {
        bases.push(x.join("clawkeep"));
    }
    bases.push(PathBuf::from(format!("/dev/shm/clawkeep-{euid}")));
    bases.into_iter().find(|b| b.parent().is_some_and(|p| is_tmpfs(p) && guards_its_entries(p, euid)) && make_base(b).is_ok())
}

/// Whether only its owner, us or root, can remove or rename what is in
/// `dir`: not writable by others, or sticky (/dev/shm).
fn guards_its_entries(dir: &Path, euid: u32) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| {
        let sticky = m.mode() & libc::S_ISVTX != 0;
        m.is_dir() && (m.uid() == euid || m.uid() == 0) && (m.mode() & 0o022 == 0 || sticky)
    })
}

fn is_tmpfs(p: &Path) -> bool {
    clawkeep_sandbox::sys::fs_type(p) == Some(clawkeep_sandbox::sys::TMPFS_MAGIC)
}

/// Makes `base` (mode 0700) when it is not there and checks it is ours.
fn make_base(base: &Path) -> Result<(), Failure> {
    match std::fs::DirBuilder::new().mode(0o700).create(base) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Failure::runtime(format!("cannot create {}: {e}", base.display())))
        }
        _ => {}
    }
    let meta = std::fs::symlink_metadata(base).map_err(|e| Failure::runtime(format!("cannot read {}: {e}", base.display())))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.file_type().is_dir() || meta.uid() != euid || meta.mode() & 0o077 != 0 {
        return Err(Failure::runtime(format!(
            "{} is not a private dir of this user (owner uid {}, mode {:o})",
            base.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// `link` must name a runtime dir of ours: `<base>/agents-<random>`.
fn check_target(link: &Path, target: &Path) -> Result<(), Failure> {
    let named = target.file_name().is_some_and(|n| n.to_string_lossy().starts_with(RUNTIME_PREFIX));
    match target.parent() {
        Some(_) if target.is_absolute() && named => Ok(()),
        _ => Err(Failure::usage(format!(
            "{} links to {}, which is not a runtime dir of clawkeep; remove the link and run again",
            link.display(),
            target.display()
        ))),
    }
}

#[cfg(test)]
#[path = "agents_dir_tests.rs"]
mod tests;
