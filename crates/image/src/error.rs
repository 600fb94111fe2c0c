//! The one error type of this crate. Each variant names the thing that
//! failed; its message says what to do.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },

    #[error("invalid image name '{name}'; use 1 to 64 letters, digits, '.', '-' and '_', not starting with '.'")]
    InvalidName { name: String },

    #[error("no image named '{name}' in {dir}; see 'clawkeep image list'")]
    NotFound { name: String, dir: PathBuf },

    #[error("image '{name}' already exists; remove it first with 'clawkeep image rm {name}'")]
    Exists { name: String },

    #[error("image '{name}' is corrupt: {path}: {reason}; rebuild it with 'clawkeep image build'")]
    BadManifest { name: String, path: PathBuf, reason: String },

    #[error("image '{name}': {part} ({path}) is missing; rebuild the image")]
    PartMissing { name: String, part: &'static str, path: PathBuf },

    #[error("image '{name}': {part} ({file}) does not match manifest.json: expected sha256 {expected}, found {actual}; the image was modified, rebuild it")]
    PartMismatch { name: String, part: &'static str, file: String, expected: String, actual: String },

    #[error("image '{name}': {part} ({file}) does not match manifest.json: expected {expected} bytes, found {actual}; the image was modified, rebuild it")]
    SizeMismatch { name: String, part: &'static str, file: String, expected: u64, actual: u64 },

    #[error("image '{name}' is not signed but a trusted key is configured; sign it with 'clawkeep image sign {name}'")]
    Unsigned { name: String },

    #[error("image '{name}': manifest.json is signed by key {signed_by}, not by the trusted key {trusted}; sign it with the trusted key or trust the signer")]
    WrongKey { name: String, signed_by: String, trusted: String },

    #[error(
        "image '{name}': bad signature on manifest.json (key {key_id}); the manifest was modified after signing, rebuild and sign it again"
    )]
    BadSignature { name: String, key_id: String },

    #[error("bad key file {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },

    #[error("kernel not found at {path}; {hint}")]
    KernelNotFound { path: PathBuf, hint: String },

    #[error("{path} is not a bootable x86 kernel (bzImage): {reason}; pass --kernel with a vmlinuz file")]
    BadKernel { path: PathBuf, reason: String },

    #[error("kernel modules for {version} not found at {path}; pass --modules DIR (the kernel's lib/modules/<version>)")]
    ModulesNotFound { version: String, path: PathBuf },

    #[error("kernel module {module} (needed by the guest) not found under {dir}; use a kernel that has it, built in or as a module")]
    ModuleMissing { module: String, dir: PathBuf },

    #[error("bad kernel module {path}: {reason}")]
    BadModule { path: PathBuf, reason: String },

    #[error("fetching the Debian kernel failed at '{step}': {detail}; run .ci/fetch-kernel as root, or pass --kernel PATH")]
    KernelFetch { step: String, detail: String },

    #[error("{tool} not found; install {package} (apt-get install {package})")]
    ToolMissing { tool: &'static str, package: &'static str },

    #[error("{tool} failed on {path}: {detail}")]
    ToolFailed { tool: &'static str, path: PathBuf, detail: String },

    #[error("{what} not found at {path}; {hint}")]
    InputMissing { what: &'static str, path: PathBuf, hint: &'static str },

    #[error("{what} {path} is dynamically linked, but the initramfs has no libc; {hint}")]
    NotStatic { what: &'static str, path: PathBuf, hint: &'static str },

    #[error("bad OCI image {path}: {reason}")]
    Oci { path: PathBuf, reason: String },

    #[error("the OS random number generator failed: {0}")]
    Random(getrandom::Error),
}

impl ImageError {
    /// A constructor for `map_err`: `.map_err(ImageError::io("read", &path))`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }

    /// True when the error is the caller's input (exit code 2), not a
    /// failure while doing the work (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ImageError::InvalidName { .. }
                | ImageError::NotFound { .. }
                | ImageError::Exists { .. }
                | ImageError::BadKey { .. }
                | ImageError::KernelNotFound { .. }
                | ImageError::BadKernel { .. }
                | ImageError::ModulesNotFound { .. }
                | ImageError::InputMissing { .. }
                | ImageError::NotStatic { .. }
                | ImageError::Oci { .. }
        )
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
