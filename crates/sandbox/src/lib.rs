//! Isolation backends. Today: the jail (namespaces, seccomp, landlock,
//! cgroups, no capabilities), which works on any Linux host without KVM.
//!
//! Process model (one run):
//!
//! ```text
//! clawkeep run (launcher, may be multi-threaded)
//!   └─ clawkeep __sandbox-helper   single-threaded monitor, host namespaces (as root, the jail's net ns, which it makes)
//!        └─ clawkeep-init          pid 1 of new user/mount/pid/ipc/uts/cgroup ns (and net, without root)
//!             └─ agent command     uid 1000, no caps, no_new_privs, landlock, seccomp
//! ```
//!
//! Module map, in the order the kernel needs them: `cgroup` (limits),
//! `idmap` (user namespace maps, idmapped workspace), `mounts` (root,
//! pivot_root), `net` (loopback), `caps` (privilege drop), `landlock`,
//! `seccomp`, `exec` (the agent's last steps); `helper`, `init` and
//! `launcher` are the three processes; `protocol` is what they exchange;
//! `probe` tells what the host can enforce.
//!
//! `backend` is the interface every backend offers (create / start / exec
//! / stop / destroy / status); `vm` is the microVM backend (QEMU microvm
//! driver, guest channel, disks, KVM boot test; Firecracker driver).

pub mod agent_dir;
pub mod backend;
pub mod caps;
pub mod cgroup;
pub mod error;
pub mod etc_cache;
pub mod exec;
pub mod exec_client;
pub mod exec_server;
pub mod helper;
pub mod idmap;
pub mod init;
pub mod jail;
pub mod landlock;
pub mod launcher;
pub mod mounts;
pub mod net;
pub mod probe;
pub mod protocol;
pub mod pty;
pub mod seccomp;
pub mod shims;
pub mod sys;
pub mod vm;

pub use error::{SandboxError, SetupFailure, Step};
pub use jail::{plan, JailPlan};
pub use protocol::{JailReport, Outcome, HELPER_ARG};
