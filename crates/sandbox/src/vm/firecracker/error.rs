//! The Firecracker driver's one error type: every variant names the step
//! that failed and the thing it failed on, and says what to do where there
//! is something to do.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;
use thiserror::Error;

/// A step of preparing the VMM's chroot. Stable names: they appear in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailStep {
    CreateDir,
    LinkFile,
    CopyFile,
    MakeDevice,
    Chown,
    Chmod,
    RestoreOwner,
    RemoveChroot,
}

impl std::fmt::Display for JailStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JailStep::CreateDir => "create directory",
            JailStep::LinkFile => "hard-link file",
            JailStep::CopyFile => "copy file",
            JailStep::MakeDevice => "make device node",
            JailStep::Chown => "chown",
            JailStep::Chmod => "chmod",
            JailStep::RestoreOwner => "restore owner",
            JailStep::RemoveChroot => "remove chroot",
        })
    }
}

#[derive(Debug, Error)]
pub enum FirecrackerError {
    #[error("firecracker binary {binary} not found: install a static (musl) Firecracker build and put it on PATH, or set its path")]
    BinaryNotFound { binary: PathBuf },
    #[error("/dev/kvm is not usable ({source}): Firecracker needs KVM; use the QEMU driver on this host")]
    KvmUnavailable { source: io::Error },
    #[error("invalid Firecracker VM config: {why}")]
    Config { why: String },
    #[error("jailing Firecracker needs root (chroot, mknod, setuid); run as root or pass no jail (development only)")]
    NeedsRoot,
    #[error("Firecracker chroot: {step} {path} failed: {source}")]
    Jail { step: JailStep, path: PathBuf, source: io::Error },
    #[error("Firecracker chroot: {path} is on another filesystem than the chroot; writable drives are hard-linked, so keep VM disks and the VM state dir on one filesystem")]
    CrossDevice { path: PathBuf },
    #[error("cannot start Firecracker {binary}: {source}")]
    Spawn { binary: PathBuf, source: io::Error },
    #[error("Firecracker exited before {step} ({status}); its log ends with:\n{log_tail}")]
    Exited { step: &'static str, status: ExitStatus, log_tail: String },
    #[error("Firecracker's API socket {socket} did not answer within {waited:?}; its log ends with:\n{log_tail}")]
    ApiSocketTimeout { socket: PathBuf, waited: Duration, log_tail: String },
    #[error("Firecracker API {method} {path}: {source}")]
    Transport { method: &'static str, path: String, source: io::Error },
    #[error("Firecracker API {method} {path} answered {status}: {fault}")]
    Api { method: &'static str, path: String, status: u16, fault: String },
    #[error("Firecracker API {method} {path}: unexpected answer: {why}")]
    BadResponse { method: &'static str, path: String, why: String },
    #[error("vsock {uds} port {port}: {source}")]
    VsockIo { uds: PathBuf, port: u32, source: io::Error },
    #[error("vsock {uds} port {port}: refused (nothing in the guest listens on that port yet; is clawkeep-guest running?)")]
    VsockRefused { uds: PathBuf, port: u32 },
    #[error("vsock {uds} port {port}: bad handshake answer {answer:?} (expected \"OK <port>\")")]
    VsockHandshake { uds: PathBuf, port: u32, answer: String },
    #[error("stopping Firecracker (pid {pid}): {source}")]
    Stop { pid: u32, source: io::Error },
}

pub type Result<T, E = FirecrackerError> = std::result::Result<T, E>;

impl FirecrackerError {
    pub(crate) fn jail(step: JailStep, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| FirecrackerError::Jail { step, path, source }
    }
}
