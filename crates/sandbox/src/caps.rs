//! Privilege drop.
//!
//! Guarantee: after `drop_to_agent()` returns Ok, the process runs as the
//! agent uid/gid with no supplementary groups, an empty capability bounding
//! set, empty permitted/effective/inheritable/ambient sets, and
//! no_new_privs set (so no setuid binary or file capability can give
//! anything back; see prctl(2) PR_SET_NO_NEW_PRIVS).

use crate::error::{SetupFailure, Step};
use crate::idmap::AGENT_ID;
use crate::sys;
use std::io;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability but `keep` from the bounding set. Needs
/// CAP_SETPCAP, so it runs before the uid change. Only what is still in
/// the set is dropped (reading is a plain lookup; each drop prepares and
/// commits new credentials): init drops all but the executor's before it
/// forks, so the executor and the agent find little left to drop. The
/// kernel's last capability is where reading fails (EINVAL).
pub fn drop_bounding_set(keep: &[u32]) -> Result<(), SetupFailure> {
    for cap in 0..64u32 {
        // SAFETY: PR_CAPBSET_READ takes a capability number and nothing else.
        let held = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if held < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // Past the last capability this kernel knows.
                Some(libc::EINVAL) => Ok(()),
                _ => Err(SetupFailure::new(Step::DropCapabilities, format!("reading bounding set cap {cap}"), &e)),
            };
        }
        if held == 1 && !keep.contains(&cap) {
            sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong)
                .map_err(|e| SetupFailure::new(Step::DropCapabilities, format!("bounding set cap {cap}"), &e))?;
        }
    }
    Ok(())
}

/// Capabilities by number (linux/capability.h).
pub const CAP_KILL: u32 = 5;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_SYS_ADMIN: u32 = 21;

/// Keeps only `keep` (each below 32) in the bounding, permitted and
/// effective sets; the inheritable and ambient sets end empty.
pub fn keep_only(keep: &[u32]) -> Result<(), SetupFailure> {
    let f = |what: &'static str| move |e: io::Error| SetupFailure::new(Step::DropCapabilities, what, &e);
    drop_bounding_set(keep)?;
    let mask = keep.iter().filter(|c| **c < 32).fold(0u32, |m, c| m | 1 << c);
    set_sets(mask).map_err(f("capset"))
}

/// Whether this thread can bypass file permission checks now:
/// CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH in its effective set.
pub fn bypasses_file_permissions() -> io::Result<bool> {
    const CAP_DAC_OVERRIDE: u32 = 1;
    const CAP_DAC_READ_SEARCH: u32 = 2;
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: header and data are valid v3 capability structs (two data words).
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data[0].effective & (1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH) != 0)
}

fn clear_all_sets() -> io::Result<()> {
    set_sets(0)
}

fn set_sets(low: u32) -> io::Result<()> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [CapData { effective: low, permitted: low, inheritable: 0 }, CapData { effective: 0, permitted: 0, inheritable: 0 }];
    // SAFETY: header and data are valid v3 capability structs (two data words).
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    sys::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong)
}

/// Becomes the agent. `can_setgroups` is false when the user namespace was
/// set up by an unprivileged caller (setgroups is denied there).
pub fn drop_to_agent(can_setgroups: bool) -> Result<(), SetupFailure> {
    let f = |what: &'static str| move |e: io::Error| SetupFailure::new(Step::DropCapabilities, what, &e);
    drop_bounding_set(&[])?;
    if can_setgroups {
        // SAFETY: an empty group list is valid.
        if unsafe { libc::setgroups(0, std::ptr::null()) } < 0 {
            return Err(f("setgroups")(io::Error::last_os_error()));
        }
    }
    // SAFETY: plain id-changing syscalls.
    unsafe {
        if libc::setresgid(AGENT_ID, AGENT_ID, AGENT_ID) < 0 {
            return Err(SetupFailure::new(Step::SetIds, "setresgid", &io::Error::last_os_error()));
        }
        if libc::setresuid(AGENT_ID, AGENT_ID, AGENT_ID) < 0 {
            return Err(SetupFailure::new(Step::SetIds, "setresuid", &io::Error::last_os_error()));
        }
    }
    // The uid change already cleared the sets when we were inside-root; an
    // unprivileged caller's jail never was root, so clear them explicitly.
    clear_all_sets().map_err(f("capset"))?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| SetupFailure::new(Step::NoNewPrivs, "prctl", &e))
}
