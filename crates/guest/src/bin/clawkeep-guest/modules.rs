//! Kernel modules from the initramfs, loaded with `finit_module(2)` in the
//! order /etc/clawkeep/modules lists them (no modprobe, no depmod).

use crate::cmdline::BootParams;
use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

pub const LIST: &str = "/etc/clawkeep/modules";
const DIR: &str = "/lib/modules";

#[derive(Debug)]
pub struct ModuleError {
    pub file: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for ModuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot load module {}: {}", self.file.display(), self.source)
    }
}

/// The module files named by the list, relative to /lib/modules; blank
/// lines and `#` comments are skipped, and so is any name that would
/// leave the directory.
pub fn parse_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| PathBuf::from(l.trim_start_matches('/')))
        .filter(|p| p.components().all(|c| matches!(c, Component::Normal(_))))
        .collect()
}

/// The kernel's name for a module file: `dm-verity.ko` -> `dm_verity`.
pub fn module_name(file: &Path) -> String {
    let base = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    base.split(".ko").next().unwrap_or_default().replace('-', "_")
}

/// Loads every listed module; one already loaded (EEXIST) is fine.
pub fn load_all(params: &BootParams) -> Result<usize, ModuleError> {
    let list = match std::fs::read_to_string(LIST) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ModuleError { file: LIST.into(), source: e }),
    };
    let mut n = 0;
    for rel in parse_list(&list) {
        let file = Path::new(DIR).join(&rel);
        let err = |source| ModuleError { file: file.clone(), source };
        let f = std::fs::File::open(&file).map_err(err)?;
        let args = CString::new(params.params_for(&module_name(&rel))).unwrap_or_default();
        // SAFETY: f is an open module file, args a NUL-terminated string
        // that outlives the call; flags 0.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), args.as_ptr(), 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(err(e));
            }
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_skips_comments_and_escapes() {
        let l = parse_list("# order matters\nvirtio.ko\n\n kernel/fs/ext4/ext4.ko \n../../etc/shadow\n/abs.ko\n");
        assert_eq!(l, vec![PathBuf::from("virtio.ko"), PathBuf::from("kernel/fs/ext4/ext4.ko"), PathBuf::from("abs.ko")]);
    }

    #[test]
    fn names_follow_the_kernel() {
        assert_eq!(module_name(Path::new("x/dm-verity.ko")), "dm_verity");
        assert_eq!(module_name(Path::new("virtio_mmio.ko.xz")), "virtio_mmio");
    }
}
