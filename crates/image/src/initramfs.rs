//! The initramfs: just enough for `clawkeep-guest` (as /init) to load the
//! modules that reach a dm-verity root on a virtio disk and switch to it.
//!
//! Contents (uncompressed newc cpio — no decompression cost at boot, which
//! matters under TCG):
//! - `/init`: the clawkeep-guest binary;
//! - `/bin/busybox` (static) and `/bin/sh -> busybox`;
//! - `/lib/modules/<file>.ko` and `/etc/clawkeep/modules`, one module file
//!   name per line in load order (dependencies first);
//! - `/dev/console`, and the mount points `/dev`, `/proc`, `/sys`, `/mnt/root`.

use crate::cpio::CpioWriter;
use crate::modules::Module;
use crate::{private_fs, ImageError, Result};
use std::io::BufWriter;
use std::path::Path;

/// Modules the guest needs, by module name; dependencies are added and
/// built-in ones skipped when the image is built.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "dm-mod",
    "dm-verity",
    "crc16",
    "crc32c_generic",
    "mbcache",
    "jbd2",
    "ext4",
    "vsock",
    "vmw_vsock_virtio_transport",
];

/// The subset of `GUEST_MODULES` an image may lack: vsock is Firecracker's
/// channel only, and microvm guests use virtio-mmio, not PCI.
pub const OPTIONAL_GUEST_MODULES: &[&str] = &["virtio_pci", "vsock", "vmw_vsock_virtio_transport"];

/// Where the module list is in the initramfs.
pub const MODULE_LIST: &str = "etc/clawkeep/modules";

#[derive(Debug)]
pub struct Inputs<'a> {
    pub guest: &'a Path,
    pub busybox: &'a Path,
    pub modules: &'a [Module],
}

/// Writes the initramfs to `out` (0600); returns its size in bytes.
pub fn write(out: &Path, inputs: &Inputs<'_>) -> Result<u64> {
    let read = |p: &Path| std::fs::read(p).map_err(ImageError::io("read", p));
    let guest = read(inputs.guest)?;
    let busybox = read(inputs.busybox)?;
    let modules = inputs.modules.iter().map(|m| Ok((m.file_name(), read(&m.path)?))).collect::<Result<Vec<_>>>()?;
    let list: String = modules.iter().map(|(name, _)| format!("{name}\n")).collect();

    let mut w = CpioWriter::new(BufWriter::new(private_fs::create(out)?));
    let written = (|| -> std::io::Result<BufWriter<std::fs::File>> {
        for d in ["bin", "dev", "etc", "etc/clawkeep", "lib", "lib/modules", "mnt", "mnt/root", "proc", "sys", "tmp"] {
            w.dir(d, 0o755)?;
        }
        w.chardev("dev/console", 0o600, 5, 1)?;
        w.file("init", 0o755, &guest)?;
        w.file("bin/busybox", 0o755, &busybox)?;
        w.symlink("bin/sh", "busybox")?;
        for (name, data) in &modules {
            w.file(&format!("lib/modules/{name}"), 0o644, data)?;
        }
        w.file(MODULE_LIST, 0o644, list.as_bytes())?;
        let (buf, _) = w.finish()?;
        Ok(buf)
    })();
    let file = written.and_then(|buf| buf.into_inner().map_err(|e| e.into_error())).map_err(ImageError::io("write", out))?;
    file.sync_all().map_err(ImageError::io("sync", out))?;
    file.metadata().map(|m| m.len()).map_err(ImageError::io("inspect", out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::read_entries;

    #[test]
    fn layout_and_module_order() {
        let t = tempfile::tempdir().unwrap();
        let p = |n: &str, data: &[u8]| {
            let f = t.path().join(n);
            std::fs::write(&f, data).unwrap();
            f
        };
        let guest = p("guest", b"GUEST");
        let bb = p("busybox", b"BB");
        let mods = vec![
            Module { name: "dm_mod".into(), path: p("dm-mod.ko", b"m1") },
            Module { name: "dm_verity".into(), path: p("dm-verity.ko", b"m2") },
        ];
        let out = t.path().join("initramfs.cpio");
        let n = write(&out, &Inputs { guest: &guest, busybox: &bb, modules: &mods }).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, n);
        let e = read_entries(&bytes).unwrap();
        let get = |name: &str| e.iter().find(|x| x.name == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(get("init").data, b"GUEST");
        assert_eq!(get("init").mode, 0o100755);
        assert_eq!(get("bin/busybox").data, b"BB");
        assert_eq!(get("bin/sh").data, b"busybox");
        assert_eq!(get("lib/modules/dm-verity.ko").data, b"m2");
        assert_eq!(get(MODULE_LIST).data, b"dm-mod.ko\ndm-verity.ko\n");
        assert_eq!(get("dev/console").mode, 0o020600);
        for d in ["dev", "proc", "sys", "mnt/root"] {
            assert_eq!(get(d).mode & 0o170000, 0o040000, "{d}");
        }
    }

    #[test]
    fn the_debian_kernel_has_every_required_module() {
        let Some(dir) = crate::kernel::cached_modules_dir() else {
            println!("skipped: the_debian_kernel_has_every_required_module: no extracted kernel (run .ci/fetch-kernel)");
            return;
        };
        let idx = crate::modules::ModuleIndex::load(&dir).unwrap();
        let order = idx.resolve(GUEST_MODULES, OPTIONAL_GUEST_MODULES).unwrap();
        let names: Vec<String> = order.iter().map(Module::file_name).collect();
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} not in {names:?}"));
        assert!(pos("dm-mod.ko") < pos("dm-verity.ko"));
        assert!(pos("jbd2.ko") < pos("ext4.ko"));
        assert!(pos("virtio.ko") < pos("virtio_blk.ko"));
    }
}
