//! The image store: `<state>/images/<name>/`, one directory per image.
//!
//! Guarantee: `Image::verify` returns a `VerifiedImage` only when
//! manifest.json is well formed and self-consistent, every part it names
//! exists with the recorded size and SHA-256, and — when a trusted key is
//! given — manifest.sig is a valid Ed25519 signature by that key over the
//! exact manifest bytes. Paths in a `VerifiedImage` all lie inside the
//! image directory.

use crate::manifest::{Manifest, Part, MANIFEST_FILE, SIGNATURE_FILE};
use crate::sign::{self, SignatureFile};
use crate::{bzimage, private_fs, ImageError, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

pub const IMAGES_DIR: &str = "images";

#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// One entry of `list()`: enough to choose an image; `error` is set (and
/// the other fields may be empty) when the image directory is corrupt.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub created: String,
    /// The kernel's version string, or its file name if unreadable.
    pub kernel: String,
    pub root_hash: String,
    pub signed: bool,
    pub key_id: Option<String>,
    /// Bytes of all parts together.
    pub size: u64,
    pub source: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Image {
    name: String,
    dir: PathBuf,
}

/// An image whose parts matched its manifest when `verify` returned.
///
/// Each part was opened once (never through a symlink) and hashed through
/// that descriptor; the paths here are `/proc/self/fd/N` of those open
/// files, inherited by the VMM this process starts. Swapping a file in the
/// image directory after `verify` therefore changes nothing: the VMM boots
/// exactly the bytes that were hashed. Keep the `VerifiedImage` alive until
/// the VMM has opened its files.
#[derive(Debug, Clone)]
pub struct VerifiedImage {
    pub kernel: PathBuf,
    pub vmlinux: Option<PathBuf>,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub cmdline: String,
    pub manifest: Manifest,
    /// The open parts behind the paths above.
    _held: std::sync::Arc<Vec<fs::File>>,
}

impl ImageStore {
    /// The store under `state_dir` (nothing is created until written).
    pub fn new(state_dir: &Path) -> Self {
        ImageStore { root: state_dir.join(IMAGES_DIR) }
    }

    /// `<state>/images`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn image_dir(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    /// Every image, sorted by name. A corrupt image is listed with `error`.
    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::Io { op: "list", path: self.root.clone(), source: e }),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ImageError::io("list", &self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || check_name(&name).is_err() || !entry.path().is_dir() {
                continue;
            }
            let image = Image { name: name.clone(), dir: entry.path() };
            out.push(image.info().unwrap_or_else(|e| ImageInfo {
                name,
                created: String::new(),
                kernel: String::new(),
                root_hash: String::new(),
                signed: false,
                key_id: None,
                size: 0,
                source: String::new(),
                error: Some(e.to_string()),
            }));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The image called `name`; fails when it does not exist.
    pub fn open(&self, name: &str) -> Result<Image> {
        let dir = self.image_dir(name)?;
        if !dir.is_dir() {
            return Err(ImageError::NotFound { name: name.into(), dir: self.root.clone() });
        }
        Ok(Image { name: name.into(), dir })
    }

    /// Removes the image called `name` and everything in its directory.
    pub fn remove(&self, name: &str) -> Result<()> {
        let image = self.open(name)?;
        fs::remove_dir_all(&image.dir).map_err(ImageError::io("remove", &image.dir))
    }
}

/// Image names: 1–64 of `[A-Za-z0-9._-]`, not starting with '.'.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidName { name: name.into() })
    }
}

impl Image {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The exact bytes of manifest.json and what they parse to.
    pub fn manifest(&self) -> Result<(Vec<u8>, Manifest)> {
        let path = self.dir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(|e| self.corrupt(&path, format!("cannot read it: {e}")))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| self.corrupt(&path, format!("not a manifest: {e}")))?;
        manifest.check().map_err(|reason| self.corrupt(&path, reason))?;
        Ok((bytes, manifest))
    }

    /// manifest.sig, if the image is signed.
    pub fn signature(&self) -> Result<Option<SignatureFile>> {
        let path = self.dir.join(SIGNATURE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| self.corrupt(&path, format!("not a signature file: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::Io { op: "read", path, source: e }),
        }
    }

    /// Signs the manifest as it is on disk now; replaces any old signature.
    pub fn sign(&self, key: &SigningKey) -> Result<SignatureFile> {
        let (bytes, _) = self.manifest()?;
        sign::write_signature(&self.dir, key, &bytes)
    }

    /// Re-hashes every part against the manifest and, with `trusted`,
    /// requires a valid signature by that key. The first problem found is
    /// the error: it names the part (or the signature) that failed.
    pub fn verify(&self, trusted: Option<&VerifyingKey>) -> Result<VerifiedImage, ImageError> {
        let (bytes, manifest) = self.manifest()?;
        // The signature first: a manifest not signed by the trusted key
        // says nothing about which part hashes are right.
        if let Some(key) = trusted {
            let sig = self.signature()?.ok_or_else(|| ImageError::Unsigned { name: self.name.clone() })?;
            sign::check(&self.name, &sig, &bytes, key)?;
        }
        let mut held = Vec::new();
        let kernel = self.check_part("kernel", &manifest.kernel, &mut held)?;
        let vmlinux = match &manifest.vmlinux {
            Some(p) => Some(self.check_part("vmlinux", p, &mut held)?),
            None => None,
        };
        let initramfs = self.check_part("initramfs", &manifest.initramfs, &mut held)?;
        let rootfs = self.check_part("rootfs", &manifest.rootfs.as_part(), &mut held)?;
        if manifest.rootfs.size <= manifest.rootfs.hash_offset {
            return Err(self.corrupt(&self.dir.join(&manifest.rootfs.file), "the file ends before its dm-verity hash tree".into()));
        }
        let held = std::sync::Arc::new(held);
        Ok(VerifiedImage { kernel, vmlinux, initramfs, rootfs, cmdline: manifest.cmdline.clone(), manifest, _held: held })
    }

    /// Opens the part once, checks and hashes it through that descriptor,
    /// and returns the descriptor's `/proc/self/fd/N` path (inheritable).
    fn check_part(&self, part: &'static str, p: &Part, held: &mut Vec<fs::File>) -> Result<PathBuf> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(&p.file);
        let mut file = match fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(self.corrupt(&path, "a symlink, not a regular file".into())),
            Err(_) => return Err(ImageError::PartMissing { name: self.name.clone(), part, path }),
        };
        let meta = file.metadata().map_err(ImageError::io("inspect", &path))?;
        if !meta.is_file() {
            return Err(self.corrupt(&path, "not a regular file".into()));
        }
        if meta.len() != p.size {
            return Err(ImageError::SizeMismatch {
                name: self.name.clone(),
                part,
                file: p.file.clone(),
                expected: p.size,
                actual: meta.len(),
            });
        }
        let (actual, _) = private_fs::sha256_open(&mut file, &path)?;
        if actual != p.sha256 {
            return Err(ImageError::PartMismatch {
                name: self.name.clone(),
                part,
                file: p.file.clone(),
                expected: p.sha256.clone(),
                actual,
            });
        }
        let fd = file.as_raw_fd();
        // SAFETY: F_SETFD on a descriptor we own; clearing FD_CLOEXEC lets
        // the VMM we start inherit it and open /proc/self/fd/N.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(ImageError::io("keep open", &path)(std::io::Error::last_os_error()));
        }
        held.push(file);
        Ok(PathBuf::from(format!("/proc/self/fd/{fd}")))
    }

    fn info(&self) -> Result<ImageInfo> {
        let (_, m) = self.manifest()?;
        let sig = self.signature()?;
        let kernel = bzimage::read_version(&self.dir.join(&m.kernel.file)).unwrap_or_else(|_| m.kernel.file.clone());
        Ok(ImageInfo {
            name: self.name.clone(),
            created: m.created.clone(),
            kernel,
            root_hash: m.rootfs.root_hash.clone(),
            signed: sig.is_some(),
            key_id: sig.map(|s| s.key_id),
            size: m.kernel.size + m.vmlinux.as_ref().map_or(0, |v| v.size) + m.initramfs.size + m.rootfs.size,
            source: m.source.clone(),
            error: None,
        })
    }

    fn corrupt(&self, path: &Path, reason: String) -> ImageError {
        ImageError::BadManifest { name: self.name.clone(), path: path.to_path_buf(), reason }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
