//! Unit tests for `seccomp.rs`: the filter compiles within BPF limits and
//! round-trips its encoding, the required families are listed, and the
//! search tree in front decides exactly as the plain chain (checked by
//! emulating the program, never by installing it on the host).

use super::*;

#[test]
fn filters_compile_and_stay_within_bpf_limits() {
    let deny = deny_filter().unwrap();
    assert!(deny.len() < 4096, "BPF_MAXINSNS");
    assert_eq!(deny[1].k, AUDIT_ARCH);
    assert!(deny.iter().any(|i| i.code == BPF_JEQ_K && i.k == libc::SYS_clone3 as u32));
}

/// Runs a classic BPF seccomp program on `seccomp_data` (nr, arch,
/// args) the way the kernel does, for the instructions our filter uses:
/// the verdict and how many instructions ran.
fn exec(prog: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> (u32, usize) {
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&nr.to_le_bytes());
    data.extend_from_slice(&arch.to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes());
    for a in args {
        data.extend_from_slice(&a.to_le_bytes());
    }
    let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0);
    loop {
        let i = &prog[pc];
        pc += 1;
        steps += 1;
        let jump = |taken: bool| if taken { i.jt as usize } else { i.jf as usize };
        match i.code {
            0x20 => acc = u32::from_le_bytes(data[i.k as usize..i.k as usize + 4].try_into().unwrap()),
            0x54 => acc &= i.k,
            0x05 => pc += i.k as usize,
            0x15 => pc += jump(acc == i.k),
            0x25 => pc += jump(acc > i.k),
            0x35 => pc += jump(acc >= i.k),
            0x45 => pc += jump(acc & i.k != 0),
            0x06 => return (i.k, steps),
            other => panic!("instruction {other:#x} is not emulated"),
        }
    }
}

fn run(prog: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    exec(prog, nr, arch, args).0
}

/// seccompiler's program for every listed call, the unconditional
/// denials included, behind the same prefix: what the filter replaces.
fn plain_chain() -> BpfProgram {
    let mut rules = argument_rules();
    for (_, nr) in DENIED {
        rules.entry(*nr).or_default();
    }
    let mut prog = compile(rules).unwrap();
    prog.splice(0..0, prefix());
    prog
}

/// The search tree in front, with the unconditional denials at its
/// leaves, changes no decision: for every syscall number (native and
/// x32), foreign architectures, and the arguments the rules look at, the
/// filter decides as seccompiler's program for every listed call (behind
/// the same prefix) does. And it is shorter than that program, whose
/// length is what its install costs.
#[test]
fn the_search_tree_decides_as_the_plain_chain() {
    let full = deny_filter().unwrap();
    let plain = plain_chain();
    assert!(full.len() * 3 < plain.len() * 2, "{} instructions against {}", full.len(), plain.len());
    let flag_args: Vec<[u64; 6]> = [0u64, libc::CLONE_NEWUSER as u64, libc::CLONE_NEWNET as u64, 0x80, libc::SIGCHLD as u64]
        .iter()
        .flat_map(|f| {
            [
                [*f, 0, 0, 0, 0, 0],
                [libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0, 0, 0, 0],
                [libc::AF_INET as u64, libc::SOCK_STREAM as u64, libc::S_IFCHR as u64, 0, 0, 0],
                [0, libc::TIOCSTI, libc::S_IFBLK as u64, 0, 0, 0],
                [0, libc::S_IFCHR as u64, libc::S_IFIFO as u64, 0, 0, 0],
                [libc::AF_INET as u64, SOCK_PACKET, 0, 0, 0, 0],
                [0, libc::TIOCLINUX, 0, 0, 0, 0],
                // The high halves set: rules that read one word only.
                [*f | 1 << 32, libc::SOCK_RAW as u64 | 1 << 40, libc::S_IFBLK as u64 | 1 << 33, 0, 0, 0],
                [libc::AF_PACKET as u64 | 1 << 32, libc::TIOCSTI | 1 << 35, 0, 0, 0, 0],
            ]
        })
        .collect();
    let mut decided = 0;
    for nr in (0u32..1024).chain((0u32..1024).map(|n| n | X32_SYSCALL_BIT)) {
        for arch in [AUDIT_ARCH, 0x4000_0003] {
            for args in &flag_args {
                assert_eq!(run(&full, nr, arch, *args), run(&plain, nr, arch, *args), "nr {nr} arch {arch:#x} args {args:?}");
                decided += 1;
            }
        }
    }
    assert!(decided > 10_000);
    // And the decisions are the intended ones.
    let native = |nr: i64, args: [u64; 6]| run(&full, nr as u32, AUDIT_ARCH, args);
    let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    assert_eq!(native(libc::SYS_mount, [0; 6]), eperm);
    assert_eq!(native(libc::SYS_read, [0; 6]), SECCOMP_RET_ALLOW);
    assert_eq!(native(libc::SYS_clone, [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]), eperm);
    assert_eq!(native(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), SECCOMP_RET_ALLOW);
    assert_eq!(native(libc::SYS_clone3, [0; 6]), SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    assert_eq!(native(libc::SYS_socket, [libc::AF_PACKET as u64, 0, 0, 0, 0, 0]), eperm);
    let inet = libc::AF_INET as u64;
    assert_eq!(native(libc::SYS_socket, [inet, SOCK_PACKET, 0, 0, 0, 0]), eperm);
    assert_eq!(native(libc::SYS_socket, [inet, SOCK_PACKET | libc::SOCK_CLOEXEC as u64, 0, 0, 0, 0]), eperm);
    assert_eq!(native(libc::SYS_socket, [inet, libc::SOCK_STREAM as u64, 0, 0, 0, 0]), SECCOMP_RET_ALLOW);
    assert_eq!(run(&full, libc::SYS_read as u32, 0x4000_0003, [0; 6]), SECCOMP_RET_KILL_PROCESS);
}

/// A number in both lists would be denied outright by the tree, its
/// argument rules never reached: the lists stay apart.
#[test]
fn unconditional_and_argument_rules_are_disjoint() {
    let by_args = argument_rules();
    for (name, nr) in DENIED {
        assert!(!by_args.contains_key(nr), "{name} is in both lists");
    }
}

#[test]
fn unlisted_numbers_are_allowed_within_a_few_comparisons() {
    let full = deny_filter().unwrap();
    for nr in [libc::SYS_read, libc::SYS_write, libc::SYS_openat, libc::SYS_futex, libc::SYS_execve] {
        let (verdict, steps) = exec(&full, nr as u32, AUDIT_ARCH, [0; 6]);
        assert_eq!(verdict, SECCOMP_RET_ALLOW);
        assert!(steps < 20, "{nr}: {steps} instructions");
    }
}

#[test]
fn encoding_roundtrips() {
    let bytes = compile_encoded().unwrap();
    let progs = decode(&bytes).unwrap();
    assert_eq!(progs[0], deny_filter().unwrap());
    assert!(decode(&bytes[..bytes.len() - 1]).is_none());
}

#[test]
fn required_families_are_listed() {
    let names: Vec<_> = DENIED.iter().map(|(n, _)| *n).collect();
    for must in [
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "unshare",
        "setns",
        "ptrace",
        "process_vm_readv",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "init_module",
        "finit_module",
        "kexec_load",
        "reboot",
        "swapon",
        "swapoff",
        "userfaultfd",
        "open_by_handle_at",
        "io_uring_setup",
    ] {
        assert!(names.contains(&must), "{must} missing");
    }
}
