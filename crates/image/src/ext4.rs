//! rootfs.img's data part: an ext4 filesystem made from a directory with
//! `mkfs.ext4 -d` (e2fsprogs) — no loop device, no mount, no root needed.

use crate::{ImageError, Result};
use std::path::Path;
use std::process::Command;

/// Block size of the filesystem and of dm-verity's data blocks.
pub const BLOCK: u64 = 4096;

/// The filesystem size for a tree of `bytes` in `inodes` files: room for
/// the data, the inode tables (256 bytes each) and metadata, plus slack,
/// rounded up to a MiB.
pub fn size_for(bytes: u64, inodes: u64) -> u64 {
    let raw = bytes + inodes * 256 + bytes / 8 + (16 << 20);
    raw.div_ceil(1 << 20) * (1 << 20)
}

/// Inodes to ask for: the tree's, with room to spare.
pub fn inodes_for(inodes: u64) -> u64 {
    (inodes + inodes / 4 + 64).max(1024)
}

/// Makes `img` a `size`-byte ext4 filesystem holding `tree`. Read-only use
/// only: no journal (dm-verity roots are never written), no reserved blocks.
pub fn make(mkfs: &Path, img: &Path, tree: &Path, size: u64, inodes: u64) -> Result<()> {
    if size % BLOCK != 0 {
        return Err(ImageError::ToolFailed {
            tool: "mkfs.ext4",
            path: img.into(),
            detail: format!("size {size} is not a multiple of 4096"),
        });
    }
    let f = crate::private_fs::create(img)?;
    f.set_len(size).map_err(ImageError::io("size", img))?;
    drop(f);
    let out = Command::new(mkfs)
        .args(["-F", "-q", "-b", "4096", "-m", "0", "-O", "^has_journal", "-L", "clawkeep-root", "-E", "root_owner=0:0", "-N"])
        .arg(inodes.to_string())
        .arg("-d")
        .arg(tree)
        .arg(img)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::ToolMissing { tool: "mkfs.ext4", package: "e2fsprogs" },
            _ => ImageError::ToolFailed { tool: "mkfs.ext4", path: img.into(), detail: e.to_string() },
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let mut detail = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").to_string();
        if err.contains("Could not allocate") || err.contains("No space left") {
            detail.push_str(&format!("; the tree does not fit in {} MiB, pass a larger --size", size >> 20));
        }
        return Err(ImageError::ToolFailed { tool: "mkfs.ext4", path: img.into(), detail });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_whole_mebibytes_with_slack() {
        let s = size_for(10 << 20, 500);
        assert_eq!(s % (1 << 20), 0);
        assert!(s >= (10 << 20) + (16 << 20));
        assert_eq!(inodes_for(10), 1024);
    }
}
