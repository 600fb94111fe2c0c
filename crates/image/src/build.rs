//! `clawkeep image build`: kernel + initramfs + verity rootfs + manifest.
//!
//! Guarantee: the image appears under its name complete or not at all. It
//! is built in `<state>/images/.tmp-<name>-<pid>` and renamed into place as
//! the last step; a failure removes the temporary directory (and a later
//! build removes one left by a killed process).

use crate::initramfs::{self, GUEST_MODULES, OPTIONAL_GUEST_MODULES};
use crate::manifest::{self, Manifest, Part, RootfsPart, INITRAMFS_FILE, KERNEL_FILE, MANIFEST_FILE, ROOTFS_FILE, VMLINUX_FILE};
use crate::progress::{human, Progress};
use crate::{bzimage, ext4, kernel, oci, private_fs, rootfs, verity, ImageError, ImageStore, ModuleIndex, Result};
use std::path::{Path, PathBuf};

pub const GUEST_BINARY: &str = "clawkeep-guest";
/// How many `Progress` steps `build` reports.
pub const STEPS: usize = 10;

/// Where the root tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// busybox, users root and agent, the mount points.
    Default,
    /// A directory, copied.
    Dir(PathBuf),
    /// A `docker save` or OCI-layout tarball.
    Oci(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub name: String,
    pub source: RootSource,
    /// A bzImage; default: the cached Debian kernel (fetched if missing).
    pub kernel: Option<PathBuf>,
    /// The kernel's `lib/modules/<version>`; default: beside the kernel.
    pub modules: Option<PathBuf>,
    /// The guest agent; default: `clawkeep-guest` beside the running binary.
    pub guest: Option<PathBuf>,
    /// A static busybox; default: /bin/busybox (Debian's busybox-static).
    pub busybox: Option<PathBuf>,
    /// rootfs data size in bytes; default: the tree's size plus slack.
    pub size: Option<u64>,
}

impl BuildOptions {
    pub fn new(name: &str) -> Self {
        BuildOptions { name: name.into(), source: RootSource::Default, kernel: None, modules: None, guest: None, busybox: None, size: None }
    }
}

/// `clawkeep-guest` beside the running executable (target/debug or
/// target/release, or the install directory).
pub fn default_guest() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().unwrap_or(Path::new(".")).join(GUEST_BINARY)
}

/// Debian's static busybox (package busybox-static).
pub fn find_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"].into_iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A tool from PATH or the sbin directories (not on a user's PATH on Debian).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

/// Builds the image described by `opts` into `store`.
pub fn build(store: &ImageStore, opts: &BuildOptions, progress: &mut Progress) -> Result<Manifest> {
    progress.step("checking inputs");
    let final_dir = store.image_dir(&opts.name)?;
    if final_dir.exists() {
        return Err(ImageError::Exists { name: opts.name.clone() });
    }
    let guest = opts.guest.clone().unwrap_or_else(default_guest);
    if !guest.is_file() {
        return Err(ImageError::InputMissing {
            what: "clawkeep-guest",
            path: guest,
            hint: "build it with 'cargo build -p clawkeep-guest' or pass --guest PATH",
        });
    }
    let busybox = match &opts.busybox {
        Some(b) => b.clone(),
        None => find_busybox().ok_or(ImageError::ToolMissing { tool: "busybox", package: "busybox-static" })?,
    };
    // Both run in the initramfs or from a root that has no libc of theirs.
    if private_fs::is_dynamic_elf(&guest) {
        return Err(ImageError::NotStatic {
            what: "clawkeep-guest",
            path: guest,
            hint: "install libc6-dev and rebuild it (cargo build -p clawkeep-guest), see crates/guest/build.rs",
        });
    }
    if private_fs::is_dynamic_elf(&busybox) {
        return Err(ImageError::NotStatic {
            what: "busybox",
            path: busybox,
            hint: "install busybox-static (apt-get install busybox-static)",
        });
    }
    let mkfs = find_tool("mkfs.ext4").ok_or(ImageError::ToolMissing { tool: "mkfs.ext4", package: "e2fsprogs" })?;
    let veritysetup = find_tool("veritysetup").ok_or(ImageError::ToolMissing { tool: "veritysetup", package: "cryptsetup-bin" })?;
    match &opts.source {
        RootSource::Dir(d) if !d.is_dir() => {
            return Err(ImageError::InputMissing {
                what: "root directory",
                path: d.clone(),
                hint: "pass --from DIR with an existing directory",
            })
        }
        RootSource::Oci(t) if !t.is_file() => {
            return Err(ImageError::InputMissing {
                what: "OCI tarball",
                path: t.clone(),
                hint: "pass --from-oci with a 'docker save' tarball",
            })
        }
        _ => {}
    }

    progress.step("locating the kernel");
    let kernel = kernel::locate(opts.kernel.as_deref(), opts.modules.as_deref(), progress)?;

    private_fs::ensure_dir(store.root())?;
    remove_stale(store.root());
    let tmp = TmpDir::create(store.root().join(format!(".tmp-{}-{}", opts.name, std::process::id())))?;
    let manifest = build_in(&tmp.0, opts, &kernel, &guest, &busybox, &mkfs, &veritysetup, progress)?;

    std::fs::rename(&tmp.0, &final_dir).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => ImageError::Exists { name: opts.name.clone() },
        _ => ImageError::Io { op: "move into place", path: final_dir.clone(), source: e },
    })?;
    tmp.disarm();
    Ok(manifest)
}

#[allow(clippy::too_many_arguments)]
fn build_in(
    dir: &Path,
    opts: &BuildOptions,
    kernel: &kernel::Kernel,
    guest: &Path,
    busybox: &Path,
    mkfs: &Path,
    veritysetup: &Path,
    progress: &mut Progress,
) -> Result<Manifest> {
    progress.step("resolving kernel modules");
    let index = ModuleIndex::load(&kernel.modules)?;
    let modules = index.resolve(GUEST_MODULES, OPTIONAL_GUEST_MODULES)?;
    let skipped: Vec<&str> = GUEST_MODULES.iter().copied().filter(|m| index.is_builtin(m)).collect();
    progress.note(&format!(
        "{} modules to load; built in: {}",
        modules.len(),
        if skipped.is_empty() { "none".into() } else { skipped.join(", ") }
    ));

    progress.step("writing the initramfs");
    let n = initramfs::write(&dir.join(INITRAMFS_FILE), &initramfs::Inputs { guest, busybox, modules: &modules })?;
    progress.bytes(INITRAMFS_FILE, n);

    progress.step("copying the kernel and extracting vmlinux");
    let data = std::fs::read(&kernel.bzimage).map_err(ImageError::io("read", &kernel.bzimage))?;
    private_fs::write(&dir.join(KERNEL_FILE), &data)?;
    let header = bzimage::BzImage::parse(&data).map_err(|reason| ImageError::BadKernel { path: kernel.bzimage.clone(), reason })?;
    let has_vmlinux = match bzimage::extract_vmlinux(&data, &header) {
        Ok(elf) => {
            private_fs::write(&dir.join(VMLINUX_FILE), &elf)?;
            progress.bytes(VMLINUX_FILE, elf.len() as u64);
            true
        }
        Err(reason) => {
            progress.note(&format!("no vmlinux (Firecracker cannot boot this image): {reason}"));
            false
        }
    };
    drop(data);

    progress.step("preparing the root tree");
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).map_err(ImageError::io("create directory", &tree))?;
    let source = match &opts.source {
        RootSource::Default => {
            let dash = rootfs::find_dash().ok_or(ImageError::ToolMissing { tool: "dash", package: "dash" })?;
            rootfs::default_tree(&tree, busybox, &dash)?;
            "default".to_string()
        }
        RootSource::Dir(d) => {
            rootfs::copy_tree(d, &tree)?;
            format!("dir:{}", d.display())
        }
        RootSource::Oci(t) => {
            oci::unpack(t, &dir.join("oci"), &tree, |i, n, bytes| {
                progress.part(&format!("layer {i}/{n} ({})", human(bytes)), i as u64, n as u64)
            })?;
            let _ = std::fs::remove_dir_all(dir.join("oci"));
            format!("oci:{}", t.display())
        }
    };
    rootfs::add_essentials(&tree, guest)?;
    let (bytes, inodes) = rootfs::usage(&tree)?;
    progress.note(&format!("{inodes} files, {}", human(bytes)));

    progress.step("making the ext4 filesystem");
    let size = match opts.size {
        Some(s) => s.div_ceil(ext4::BLOCK) * ext4::BLOCK,
        None => ext4::size_for(bytes, inodes),
    };
    let img = dir.join(ROOTFS_FILE);
    ext4::make(mkfs, &img, &tree, size, ext4::inodes_for(inodes))?;
    std::fs::remove_dir_all(&tree).map_err(ImageError::io("remove", &tree))?;
    progress.bytes("ext4 data", size);

    progress.step("computing the dm-verity hash tree");
    let data_blocks = size / ext4::BLOCK;
    let params = verity::format(veritysetup, &img, data_blocks, size)?;
    progress.note(&format!("root hash {}", params.root_hash));

    progress.step("hashing the parts and writing manifest.json");
    let part = |file: &str| -> Result<Part> {
        let (sha256, size) = private_fs::sha256_file(&dir.join(file))?;
        Ok(Part { file: file.into(), sha256, size })
    };
    let r = part(ROOTFS_FILE)?;
    let rootfs = RootfsPart {
        file: r.file,
        sha256: r.sha256,
        size: r.size,
        data_blocks,
        hash_offset: size,
        data_block_size: ext4::BLOCK,
        hash_block_size: ext4::BLOCK,
        hash_algorithm: "sha256".into(),
        root_hash: params.root_hash,
        salt: params.salt,
    };
    let m = Manifest {
        version: 1,
        name: opts.name.clone(),
        created: clawkeep_core::time::now_rfc3339(),
        kernel: part(KERNEL_FILE)?,
        vmlinux: if has_vmlinux { Some(part(VMLINUX_FILE)?) } else { None },
        initramfs: part(INITRAMFS_FILE)?,
        cmdline: manifest::cmdline_for(&rootfs),
        rootfs,
        source,
    };
    let mut text = serde_json::to_string_pretty(&m).map_err(|e| ImageError::BadManifest {
        name: m.name.clone(),
        path: dir.join(MANIFEST_FILE),
        reason: e.to_string(),
    })?;
    text.push('\n');
    private_fs::write(&dir.join(MANIFEST_FILE), text.as_bytes())?;
    progress.step("moving the image into place");
    Ok(m)
}

/// A build directory removed on drop unless disarmed.
struct TmpDir(PathBuf);

impl TmpDir {
    fn create(path: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_dir_all(&path);
        private_fs::ensure_dir(&path)?;
        Ok(TmpDir(path))
    }

    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes `.tmp-<name>-<pid>` directories whose builder is gone.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(".tmp-").and_then(|r| r.rsplit('-').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_guest_fails_before_anything_is_written() {
        let t = tempfile::tempdir().unwrap();
        let store = ImageStore::new(t.path());
        let mut o = BuildOptions::new("x");
        o.guest = Some(t.path().join("no-guest"));
        let err = build(&store, &o, &mut Progress::silent()).unwrap_err();
        assert!(err.to_string().contains("clawkeep-guest"), "{err}");
        assert!(!store.root().exists() || std::fs::read_dir(store.root()).unwrap().next().is_none());
    }

    #[test]
    fn stale_build_dirs_are_removed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join(".tmp-a-999999999")).unwrap();
        let mine = t.path().join(format!(".tmp-b-{}", std::process::id()));
        std::fs::create_dir(&mine).unwrap();
        remove_stale(t.path());
        assert!(!t.path().join(".tmp-a-999999999").exists());
        assert!(mine.exists());
    }
}
