//! Landlock: the filesystem write boundary.
//!
//! Guarantee: once applied, the process and its descendants may read and
//! execute anywhere in the (already read-only) jail root, but may write,
//! create, remove, rename or truncate only beneath /workspace and /tmp, and
//! write only to the terminal and sink devices (/dev/null, zero, full, tty,
//! pts). With ABI >= 6 it also cannot signal processes or reach abstract
//! Unix sockets outside its domain. Applied best-effort: the returned status
//! says how much the kernel enforced.

use landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use std::os::fd::OwnedFd;
use std::path::Path;

const WRITABLE_DIRS: &[&str] = &["/workspace", "/tmp"];
const WRITABLE_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts", "/dev/ptmx"];

/// The ABI the running kernel offers (0 = none).
pub fn kernel_abi() -> u32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attr only queries.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    if v < 0 {
        0
    } else {
        v as u32
    }
}

/// Applies the ruleset to the calling process. Returns the enforcement
/// status as a stable string.
pub fn apply() -> Result<String, String> {
    apply_inner().map_err(|e| e.to_string())
}

fn apply_inner() -> Result<String, Box<dyn std::error::Error>> {
    let dirs: Vec<&Path> = WRITABLE_DIRS.iter().map(Path::new).collect();
    let devices: Vec<&Path> = WRITABLE_DEVICES.iter().map(Path::new).collect();
    let ruleset = writes_only_beneath(&dirs, &devices, true)?;
    let status = ruleset.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "fully_enforced",
        RulesetStatus::PartiallyEnforced => "partially_enforced",
        RulesetStatus::NotEnforced => "not_enforced",
    }
    .to_string())
}

/// The ruleset both boundaries share: reads and execution anywhere, every
/// write right only beneath `dirs` (which must exist) and on `files` (those
/// that exist); with `scoped`, signals and abstract sockets kept in the
/// domain too. Asks for exactly what this kernel can enforce, so "fully
/// enforced" means every right the kernel knows is handled.
fn writes_only_beneath(dirs: &[&Path], files: &[&Path], scoped: bool) -> Result<RulesetCreated, Box<dyn std::error::Error>> {
    let abi = ABI::from(kernel_abi() as i32);
    let ruleset = Ruleset::default().set_compatibility(CompatLevel::BestEffort).handle_access(AccessFs::from_all(abi))?;
    let ruleset = if scoped { ruleset.scope(Scope::from_all(abi))? } else { ruleset };
    let mut ruleset = ruleset.create()?.add_rule(PathBeneath::new(PathFd::new("/")?, AccessFs::from_read(abi)))?;
    for dir in dirs {
        ruleset = ruleset.add_rule(PathBeneath::new(PathFd::new(dir)?, AccessFs::from_all(abi)))?;
    }
    for file in files {
        if let Ok(fd) = PathFd::new(file) {
            ruleset = ruleset.add_rule(PathBeneath::new(fd, AccessFs::from_file(abi)))?;
        }
    }
    Ok(ruleset)
}

/// A ruleset, not applied yet: reads and execution anywhere, writes only
/// beneath `dirs` and to the files `files`. `None` when the kernel has no
/// Landlock. For a host tool that reads untrusted input (the e2fsprogs
/// that read a disk the guest wrote): the child applies it with
/// [`restrict_with`] between fork and exec.
pub fn write_boundary(dirs: &[&Path], files: &[&Path]) -> Result<Option<OwnedFd>, String> {
    writes_only_beneath(dirs, files, false).map(Into::into).map_err(|e| e.to_string())
}

/// Puts the calling process under the ruleset `fd` (from
/// [`write_boundary`]), with no_new_privs as Landlock requires.
///
/// # Safety
/// Two raw syscalls and nothing allocated: safe between fork and exec.
pub unsafe fn restrict_with(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: plain syscalls on our own process.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
