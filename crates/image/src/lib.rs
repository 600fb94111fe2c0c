//! Agent images for the microVM backend: build, sign, verify, list.
//!
//! An image is a directory `<state>/images/<name>/` holding `vmlinuz` (the
//! bzImage, for QEMU), optionally `vmlinux` (the ELF kernel, for
//! Firecracker), `initramfs.cpio` (clawkeep-guest as /init, busybox, the
//! modules to reach the root), `rootfs.img` (read-only ext4 followed by its
//! dm-verity hash tree), `manifest.json` (a SHA-256 per part, the verity
//! parameters and the kernel command line) and, once signed,
//! `manifest.sig` (Ed25519 over the manifest bytes). See docs/images.md.
//!
//! A VMM boots an image only through `Image::verify`, which refuses a
//! modified part or manifest before anything runs; dm-verity then guards
//! every block of the root while the VM runs.

pub mod build;
pub mod bzimage;
pub mod cpio;
mod error;
pub mod ext4;
pub mod initramfs;
pub mod kernel;
pub mod manifest;
pub mod modules;
pub mod oci;
mod private_fs;
pub mod progress;
pub mod rootfs;
pub mod sign;
pub mod store;
mod tool;
pub mod trust;
pub mod verity;

pub use build::{build, BuildOptions, RootSource};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::{ImageError, Result};
pub use manifest::{Manifest, Part, RootfsPart};
pub use modules::ModuleIndex;
pub use progress::Progress;
pub use store::{Image, ImageInfo, ImageStore, VerifiedImage};
