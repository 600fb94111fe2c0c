//! The jail's seccomp filter, written out explicitly and reviewed like code.
//!
//! Policy: allow by default, deny (EPERM) the families an agent never needs
//! and an escape usually does. Guarantee, once installed (irrevocably, for
//! the process and all its descendants):
//! - mount/umount, pivot_root, chroot and the new mount API fail;
//! - unshare, setns, and clone with any namespace flag fail; clone3 reports
//!   ENOSYS so libc falls back to clone, whose flags the filter can see;
//! - ptrace, process_vm_readv/writev, pidfd_getfd fail;
//! - bpf, perf_event_open, keyctl/add_key/request_key, module loading,
//!   kexec, reboot, swapon/swapoff, userfaultfd, open_by_handle_at,
//!   io_uring, acct, syslog, iopl/ioperm fail;
//! - mknod of character or block devices fails (FIFOs and files are fine);
//! - AF_PACKET sockets and SOCK_RAW sockets of any family fail;
//! - ioctl TIOCSTI/TIOCLINUX (terminal input injection, CVE-2017-5226) fail;
//! - x32 syscalls fail, and any non-native architecture kills the process,
//!   so a denied call cannot be reached through another syscall table.

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

const NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

/// Syscalls denied whatever their arguments.
pub const DENIED: &[(&str, i64)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("acct", libc::SYS_acct),
    ("syslog", libc::SYS_syslog),
    ("quotactl", libc::SYS_quotactl),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("vhangup", libc::SYS_vhangup),
];

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn rule(conds: Vec<Cond>) -> SeccompRule {
    SeccompRule::new(conds).expect("conditions are non-empty")
}

fn masked(arg: u8, mask: u64, value: u64) -> Cond {
    Cond::new(arg, Len::Qword, Op::MaskedEq(mask), value).expect("valid condition")
}

fn eq(arg: u8, len: Len, value: u64) -> Cond {
    Cond::new(arg, len, Op::Eq, value).expect("valid condition")
}

fn arch() -> TargetArch {
    std::env::consts::ARCH.try_into().expect("clawkeep supports x86_64, aarch64 and riscv64")
}

/// Linux's obsolete packet-socket type (libc marks it deprecated: it is
/// exactly what must not be usable).
pub(crate) const SOCK_PACKET: u64 = 10;

/// The syscalls denied for some arguments only, with their rules.
fn argument_rules() -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut rules = BTreeMap::new();
    // clone(flags, ...): deny when any namespace flag is set.
    rules.insert(libc::SYS_clone, NS_FLAGS.iter().map(|f| rule(vec![masked(0, *f, *f)])).collect());
    let dev_kinds = [libc::S_IFCHR as u64, libc::S_IFBLK as u64];
    let ifmt = libc::S_IFMT as u64;
    rules.insert(libc::SYS_mknodat, dev_kinds.iter().map(|k| rule(vec![masked(2, ifmt, *k)])).collect());
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_mknod, dev_kinds.iter().map(|k| rule(vec![masked(1, ifmt, *k)])).collect());
    rules.insert(
        libc::SYS_socket,
        // SOCK_PACKET (the obsolete type 10) is a packet socket under
        // another family's name: the kernel turns it into PF_PACKET.
        vec![
            rule(vec![eq(0, Len::Dword, libc::AF_PACKET as u64)]),
            rule(vec![masked(1, 0xf, libc::SOCK_RAW as u64)]),
            rule(vec![masked(1, 0xf, SOCK_PACKET)]),
        ],
    );
    rules.insert(libc::SYS_ioctl, vec![rule(vec![eq(1, Len::Dword, libc::TIOCSTI)]), rule(vec![eq(1, Len::Dword, libc::TIOCLINUX)])]);
    rules
}

/// seccompiler's program for `rules` (EPERM on match, else allow).
fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<BpfProgram, seccompiler::BackendError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch())?;
    filter.try_into()
}

/// The main filter (EPERM on match): the prefix, a binary search over
/// every listed number that denies the unconditional ones at its leaves
/// and allows the unlisted at once, then seccompiler's program for the
/// few calls whose arguments decide. The kernel converts and JIT-compiles
/// the whole program when the agent installs it, right before exec: with
/// every denial in seccompiler's chain it was 450 instructions and took
/// ~0.1 ms of each start.
pub fn deny_filter() -> Result<BpfProgram, seccompiler::BackendError> {
    let rules = argument_rules();
    let by_args: Vec<u32> = rules.keys().map(|nr| *nr as u32).collect();
    let denied: Vec<u32> = DENIED.iter().map(|(_, nr)| *nr as u32).collect();
    let mut prog = compile(rules)?;
    let mut head = prefix();
    head.extend(search_tree(&denied, &by_args));
    prog.splice(0..0, head);
    Ok(prog)
}

const BPF_JGE_K: u16 = 0x35;

/// Where a jump of the search tree goes, before it is laid out.
#[derive(Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// Instruction `n` of the tree.
    At(usize),
    /// `RET ALLOW`, right after the tree.
    Allow,
    /// `RET ERRNO(EPERM)`, after that.
    Deny,
    /// Past both: seccompiler's program, which decides by the arguments.
    ByArgs,
}

/// A binary search over the sorted listed syscall numbers (the
/// accumulator holds the number): a number in `denied` fails with EPERM,
/// one in `by_args` goes on to seccompiler's program, and any other is
/// allowed at once. seccompiler tests the numbers one after the other, so
/// an unlisted call walked the whole chain; and on install the kernel runs
/// the filter for every syscall number to find those it may always allow,
/// which took ~0.25 ms of every jail's start. With the tree, an unlisted
/// number costs about log2(listed) comparisons.
fn search_tree(denied: &[u32], by_args: &[u32]) -> Vec<sock_filter> {
    fn tree(nrs: &[u32], denied: &[u32], out: &mut Vec<(u16, u32, Target, Target)>) {
        if nrs.len() <= 3 {
            for (i, nr) in nrs.iter().enumerate() {
                let hit = if denied.contains(nr) { Target::Deny } else { Target::ByArgs };
                let miss = if i + 1 == nrs.len() { Target::Allow } else { Target::Next };
                out.push((BPF_JEQ_K, *nr, hit, miss));
            }
            return;
        }
        let mid = nrs.len() / 2;
        let at = out.len();
        out.push((BPF_JGE_K, nrs[mid], Target::Next, Target::Next));
        tree(&nrs[..mid], denied, out);
        let right = out.len();
        out[at].2 = Target::At(right);
        tree(&nrs[mid..], denied, out);
    }
    let mut sorted: Vec<u32> = denied.iter().chain(by_args).copied().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut code = Vec::new();
    tree(&sorted, denied, &mut code);
    let allow = code.len();
    let offset = |from: usize, to: Target| -> u8 {
        let to = match to {
            Target::Next => from + 1,
            Target::At(n) => n,
            Target::Allow => allow,
            Target::Deny => allow + 1,
            Target::ByArgs => allow + 2,
        };
        u8::try_from(to - (from + 1)).expect("the search tree spans fewer than 256 instructions")
    };
    let mut out: Vec<sock_filter> = code
        .iter()
        .enumerate()
        .map(|(i, (op, k, jt, jf))| sock_filter { code: *op, jt: offset(i, *jt), jf: offset(i, *jf), k: *k })
        .collect();
    out.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    out.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
    out
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH: u32 = 0xC000_00F3;

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

/// Runs before seccompiler's program (which reloads what it needs):
/// - a foreign architecture kills the process (no second syscall table);
/// - x32 syscall numbers fail with EPERM (x86_64 only);
/// - clone3 fails with ENOSYS: its flags sit in memory a filter cannot
///   read, and ENOSYS makes libc fall back to clone, whose flags the main
///   filter inspects.
///
/// One program instead of two: the kernel emulates each filter for every
/// syscall number when it is installed, so each extra filter costs.
fn prefix() -> Vec<sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, 4), // seccomp_data.arch
        sock_filter { code: BPF_JEQ_K, jt: 1, jf: 0, k: AUDIT_ARCH },
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, 0), // seccomp_data.nr
    ];
    if cfg!(target_arch = "x86_64") {
        p.push(sock_filter { code: BPF_JSET_K, jt: 0, jf: 1, k: X32_SYSCALL_BIT });
        p.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
    }
    p.push(sock_filter { code: BPF_JEQ_K, jt: 0, jf: 1, k: libc::SYS_clone3 as u32 });
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    p
}

/// The filter, compiled and serialised. The helper
/// compiles them while the jail's root is being built and hands the bytes
/// to the agent with its exec gate, keeping compilation off the critical
/// path.
pub fn compile_encoded() -> Result<Vec<u8>, seccompiler::BackendError> {
    let mut out = Vec::new();
    for prog in [deny_filter()?] {
        out.extend_from_slice(&(prog.len() as u32).to_le_bytes());
        for ins in prog {
            out.extend_from_slice(&ins.code.to_le_bytes());
            out.extend_from_slice(&[ins.jt, ins.jf]);
            out.extend_from_slice(&ins.k.to_le_bytes());
        }
    }
    Ok(out)
}

fn decode(mut bytes: &[u8]) -> Option<Vec<BpfProgram>> {
    let mut progs = Vec::new();
    while !bytes.is_empty() {
        let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        bytes = &bytes[4..];
        let body = bytes.get(..n.checked_mul(8)?)?;
        bytes = &bytes[n * 8..];
        let prog = body
            .chunks_exact(8)
            .map(|c| sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        progs.push(prog);
    }
    (progs.len() == 1).then_some(progs)
}

/// Installs the filters from `compile_encoded` on the calling thread.
/// no_new_privs must be set.
pub fn install_encoded(bytes: &[u8]) -> Result<(), String> {
    let progs = decode(bytes).ok_or("malformed filter bytes")?;
    for prog in &progs {
        seccompiler::apply_filter(prog).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
