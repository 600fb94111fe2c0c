//! The checks, grouped by the restriction they attack. Each returns one
//! [`Outcome`]; none panics or exits on its own.

pub mod fs;
pub mod identity;
pub mod net;
pub mod procs;
pub mod syscalls;

use std::net::SocketAddr;

use crate::child::{self, ChildEnd};
use crate::errno;
use crate::report::{Findings, Outcome};

/// Checks that take no argument, by name.
pub fn simple(name: &str) -> Option<fn() -> Outcome> {
    let check: fn() -> Outcome = match name {
        "shadow" => fs::shadow,
        "write-outside" => fs::write_outside,
        "mknod" => fs::mknod,
        "proc" => fs::proc,
        "dev" => fs::dev,
        "mount" => syscalls::mount,
        "unshare-user" => syscalls::unshare_user,
        "bpf" => syscalls::bpf,
        "keyctl" => syscalls::keyctl,
        "io-uring" => syscalls::io_uring,
        "ptrace" => procs::ptrace,
        "raw-socket" => net::raw_socket,
        "net-config" => net::config,
        "netns-owner" => net::netns_owner,
        "status" => identity::status,
        "uid" => identity::uid,
        "env" => identity::env,
        _ => return None,
    };
    Some(check)
}

/// Every check except `forkbomb` and `memhog` (those end the jail's budget
/// or the probe itself). `mount` runs last: if it does get through, it has
/// changed the jail's shared mount table under the other checks.
pub fn all(host_addr: SocketAddr, host_name: &str) -> Vec<Outcome> {
    vec![
        fs::shadow(),
        fs::write_outside(),
        syscalls::unshare_user(),
        procs::ptrace(),
        syscalls::bpf(),
        syscalls::keyctl(),
        fs::mknod(),
        net::raw_socket(),
        syscalls::io_uring(),
        identity::status(),
        identity::uid(),
        identity::env(),
        fs::proc(),
        fs::dev(),
        net::connect(host_addr),
        net::hostname(host_name),
        // Late: if lo does go down, the connect above has had its turn.
        net::config(),
        syscalls::mount(),
    ]
}

/// Runs `call` in a throwaway child and records whether it was stopped.
/// `call` returns the raw syscall result; the child reports 0 for success or
/// the errno. Anything we cannot interpret counts as not held: a probe that
/// cannot tell must not say PASS.
fn attempt_in_child(findings: &mut Findings, label: &str, call: impl FnOnce() -> i64) {
    let result = child::run_in_child(|| match errno::check(call()) {
        Ok(_) => 0,
        Err(code) => child::errno_exit_code(code),
    });
    match result {
        Ok(ChildEnd::Exited(0)) => findings.escaped(format!("{label} succeeded")),
        Ok(ChildEnd::Exited(code)) if code < 254 => {
            findings.held(format!("{label} -> {}", errno::name(code)));
        }
        Ok(ChildEnd::Exited(code)) => {
            findings.escaped(format!("{label}: child exited {code}, cannot tell"));
        }
        Ok(ChildEnd::Signaled(sig)) => findings.held(format!("{label} -> killed by signal {sig}")),
        Err(code) => findings.escaped(format!("{label}: fork -> {}, cannot tell", errno::name(code))),
    }
}

/// Records a direct (in-process) attempt given its raw return value.
fn attempt(findings: &mut Findings, label: &str, ret: Result<i64, i32>) {
    match ret {
        Ok(_) => findings.escaped(format!("{label} succeeded")),
        Err(code) => findings.held(format!("{label} -> {}", errno::name(code))),
    }
}
