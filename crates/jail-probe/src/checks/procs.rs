//! Process checks: no tracing or reading other processes' memory, and the
//! jail's pids and memory limits actually stop a runaway agent.

use std::ptr;
use std::time::{Duration, Instant};

use super::attempt_in_child;
use crate::child;
use crate::errno;
use crate::report::{Findings, Outcome};

/// A word whose address is the same in the forked child (fork copies the
/// address space), so `process_vm_readv` has a valid target.
static PROBE_WORD: u64 = 0x636c_6177_6b65_6570;

/// No `ptrace` in either direction and no `process_vm_readv`, even on our
/// own child — the case Yama's default scope still allows.
pub fn ptrace() -> Outcome {
    let mut f = Findings::new();
    let pid = match child::spawn_sleeper() {
        Ok(pid) => pid,
        Err(code) => {
            f.escaped(format!("fork -> {}, cannot tell", errno::name(code)));
            return f.finish("ptrace");
        }
    };

    let mut local = [0u8; 8];
    let local_iov = libc::iovec { iov_base: local.as_mut_ptr().cast(), iov_len: local.len() };
    let remote_iov = libc::iovec { iov_base: ptr::addr_of!(PROBE_WORD).cast_mut().cast(), iov_len: std::mem::size_of::<u64>() };
    // SAFETY: both iovecs describe memory valid for their lengths: `local`
    // is ours and writable; the remote address is only read in the child.
    let ret = unsafe { libc::process_vm_readv(pid, &local_iov, 1, &remote_iov, 1, 0) };
    match errno::check(ret as i64) {
        Ok(n) => f.escaped(format!("process_vm_readv(child) read {n} bytes")),
        Err(code) => f.held(format!("process_vm_readv(child) -> {}", errno::name(code))),
    }

    let null = ptr::null_mut::<libc::c_void>();
    // SAFETY: PTRACE_ATTACH takes a pid and ignores addr/data.
    let ret = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, null, null) };
    match errno::check(ret) {
        Ok(_) => f.escaped("ptrace(PTRACE_ATTACH, child) succeeded"),
        Err(code) => f.held(format!("ptrace(PTRACE_ATTACH, child) -> {}", errno::name(code))),
    }
    // SIGKILL works on a stopped tracee too.
    child::kill_and_reap(pid);

    attempt_in_child(&mut f, "ptrace(PTRACE_TRACEME)", || {
        // SAFETY: PTRACE_TRACEME ignores pid/addr/data.
        unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, null, null) }
    });
    f.finish("ptrace")
}

/// Upper bound on how long `forkbomb` keeps forking.
const FORKBOMB_WALL: Duration = Duration::from_secs(10);

/// Forks sleeping children until fork fails or `attempts` is reached; the
/// pids limit holds if fork fails first. All children are killed and reaped
/// before returning.
pub fn forkbomb(attempts: u32) -> Outcome {
    let mut f = Findings::new();
    let deadline = Instant::now() + FORKBOMB_WALL;
    let mut children = Vec::new();
    let mut stopped_by = None;
    for _ in 0..attempts {
        if Instant::now() >= deadline {
            break;
        }
        match child::spawn_sleeper() {
            Ok(pid) => children.push(pid),
            Err(code) => {
                stopped_by = Some(code);
                break;
            }
        }
    }
    let forked = children.len();
    for pid in children {
        child::kill_and_reap(pid);
    }
    match stopped_by {
        Some(code) => f.held(format!("fork -> {} after {forked} children (of {attempts} attempts)", errno::name(code))),
        None if forked as u64 >= u64::from(attempts) => {
            f.escaped(format!("forked all {forked} children without hitting a limit"));
        }
        None => f.escaped(format!("forked {forked} children in {}s without hitting a limit", FORKBOMB_WALL.as_secs())),
    }
    f.finish("forkbomb")
}

const MIB: usize = 1 << 20;
/// How often `memhog` reports progress on stderr.
const PROGRESS_EVERY_MIB: u64 = 64;

/// Allocates and touches `mb` MiB, 1 MiB at a time. With a working memory
/// limit the kernel OOM-kills us before the end (exit 137 from `clawkeep
/// run`); getting to the end means the limit did not bite.
pub fn memhog(mb: u64) -> Outcome {
    let mut f = Findings::new();
    let page = page_size();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for done in 1..=mb {
        let mut chunk = Vec::new();
        if chunk.try_reserve_exact(MIB).is_err() {
            f.held(format!("allocation refused after {} MiB", done - 1));
            return f.finish("memhog");
        }
        chunk.resize(MIB, 0);
        for offset in (0..MIB).step_by(page) {
            // SAFETY: `offset < MIB == chunk.len()`, so the pointer is in
            // bounds; volatile so the store (which faults the page in) is
            // not optimised away.
            unsafe { ptr::write_volatile(chunk.as_mut_ptr().add(offset), 0xA5) };
        }
        chunks.push(chunk);
        if done % PROGRESS_EVERY_MIB == 0 {
            eprintln!("memhog: {done} MiB touched");
        }
    }
    f.escaped(format!("allocated {mb} MiB without being killed"));
    f.finish("memhog")
}

fn page_size() -> usize {
    // SAFETY: sysconf takes an integer name and has no side effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}
