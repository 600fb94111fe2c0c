//! Files and directories only their owner can read: directories 0700,
//! files 0600, replaced atomically (write a temporary, fsync, rename).

use crate::{ImageError, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and parents) with mode 0700, and tightens it if it exists.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(ImageError::io("create directory", dir))?;
    let mode = fs::metadata(dir).map_err(ImageError::io("inspect", dir))?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(ImageError::io("chmod", dir))?;
    }
    Ok(())
}

/// Opens `path` for writing, truncated, mode 0600.
pub fn create(path: &Path) -> Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(ImageError::io("create", path))
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = create(&tmp)?;
        f.write_all(bytes).map_err(ImageError::io("write", &tmp))?;
        f.sync_all().map_err(ImageError::io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(ImageError::io("rename into place", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// SHA-256 (hex) and size of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(ImageError::io("open", path))?;
    sha256_open(&mut f, path)
}

/// The sha256 of what `f` reads from its current position to the end.
pub fn sha256_open(f: &mut File, path: &Path) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(ImageError::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_0600_and_dirs_0700() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        ensure_dir(&d).unwrap();
        assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        write(&d.join("f"), b"abc").unwrap();
        assert_eq!(fs::metadata(d.join("f")).unwrap().permissions().mode() & 0o777, 0o600);
        let (h, n) = sha256_file(&d.join("f")).unwrap();
        assert_eq!(n, 3);
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

/// Whether `path` is an ELF executable that asks for a dynamic loader
/// (has a PT_INTERP program header). Anything unreadable or not a 64-bit
/// little-endian ELF is "not dynamic": other checks deal with it.
pub fn is_dynamic_elf(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = fs::read(path) else { return false };
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let Ok(phoff) = <[u8; 8]>::try_from(&elf[0x20..0x28]).map(u64::from_le_bytes) else { return false };
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff as usize + i * size;
        elf.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes) == Some(PT_INTERP)
    })
}

#[cfg(test)]
mod elf_tests {
    use super::is_dynamic_elf;

    #[test]
    fn tells_dynamic_from_static_and_scripts() {
        assert!(is_dynamic_elf(std::path::Path::new("/bin/ls")), "Debian's ls is dynamic");
        if std::path::Path::new("/bin/busybox").is_file() {
            assert!(!is_dynamic_elf(std::path::Path::new("/bin/busybox")), "busybox-static is static");
        }
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("s");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(!is_dynamic_elf(&script));
        assert!(!is_dynamic_elf(&t.path().join("missing")));
    }
}
