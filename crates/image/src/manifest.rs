//! `manifest.json`: what an image is made of, with a SHA-256 for every part.
//!
//! The manifest is the thing that gets signed, byte for byte; everything a
//! VMM needs to boot the image (files, kernel command line, dm-verity
//! parameters) is in it, so a valid signature over it and matching part
//! hashes mean the VM boots exactly what was built.

use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const SIGNATURE_FILE: &str = "manifest.sig";
pub const KERNEL_FILE: &str = "vmlinuz";
pub const VMLINUX_FILE: &str = "vmlinux";
pub const INITRAMFS_FILE: &str = "initramfs.cpio";
pub const ROOTFS_FILE: &str = "rootfs.img";
pub const BLOCK_SIZE: u64 = 4096;

/// The kernel command line every image carries besides the clawkeep.* keys.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 rdinit=/init";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub name: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub kernel: Part,
    /// The uncompressed ELF kernel (Firecracker); absent when the bzImage's
    /// compression is not one this crate decodes.
    pub vmlinux: Option<Part>,
    pub initramfs: Part,
    pub rootfs: RootfsPart,
    /// What the VMM passes as the kernel command line.
    pub cmdline: String,
    /// `default`, `dir:<path>` or `oci:<path>`.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// A file name inside the image directory (never a path).
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

/// The ext4 root followed by its dm-verity hash tree in the same file.
/// No verity superblock: the tree starts at `hash_offset`, so the dm table's
/// hash start block is `hash_offset / hash_block_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsPart {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub data_blocks: u64,
    pub hash_offset: u64,
    pub data_block_size: u64,
    pub hash_block_size: u64,
    pub hash_algorithm: String,
    pub root_hash: String,
    pub salt: String,
}

impl RootfsPart {
    pub fn as_part(&self) -> Part {
        Part { file: self.file.clone(), sha256: self.sha256.clone(), size: self.size }
    }

    /// The dm-verity table line for this rootfs on `dev` (hash format 1),
    /// as `dmsetup create --table` takes it.
    pub fn verity_table(&self, dev: &str) -> String {
        let sectors = self.data_blocks * self.data_block_size / 512;
        format!(
            "0 {sectors} verity 1 {dev} {dev} {} {} {} {} {} {} {}",
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_offset / self.hash_block_size,
            self.hash_algorithm,
            self.root_hash,
            self.salt
        )
    }
}

/// The kernel command line for a rootfs: the base line plus the clawkeep.*
/// keys the guest reads from /proc/cmdline.
pub fn cmdline_for(rootfs: &RootfsPart) -> String {
    format!(
        "{BASE_CMDLINE} clawkeep.roothash={} clawkeep.salt={} clawkeep.datablocks={} clawkeep.hashstart={}",
        rootfs.root_hash,
        rootfs.salt,
        rootfs.data_blocks,
        rootfs.hash_offset / rootfs.hash_block_size
    )
}

impl Manifest {
    /// Checks everything that can be checked without reading the parts:
    /// version, plain file names, verity geometry and that the command line
    /// carries the same verity parameters as the rootfs entry. Returns the
    /// first problem found.
    pub fn check(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!("unsupported manifest version {} (this clawkeep reads version 1)", self.version));
        }
        let mut files = vec![("kernel", &self.kernel.file), ("initramfs", &self.initramfs.file), ("rootfs", &self.rootfs.file)];
        if let Some(v) = &self.vmlinux {
            files.push(("vmlinux", &v.file));
        }
        for (part, file) in files {
            if !is_plain_file_name(file) {
                return Err(format!("{part}.file '{file}' is not a plain file name"));
            }
        }
        let r = &self.rootfs;
        if r.data_block_size != BLOCK_SIZE || r.hash_block_size != BLOCK_SIZE || r.hash_algorithm != "sha256" {
            return Err("rootfs must use 4096-byte blocks and sha256".into());
        }
        if r.hash_offset != r.data_blocks * r.data_block_size {
            return Err(format!("rootfs.hash_offset {} is not data_blocks * 4096", r.hash_offset));
        }
        if !is_hex(&r.root_hash, 64) || !is_hex(&r.salt, 0) {
            return Err("rootfs.root_hash or rootfs.salt is not hex".into());
        }
        for (key, want) in [
            ("clawkeep.roothash", r.root_hash.clone()),
            ("clawkeep.salt", r.salt.clone()),
            ("clawkeep.datablocks", r.data_blocks.to_string()),
            ("clawkeep.hashstart", (r.hash_offset / r.hash_block_size).to_string()),
        ] {
            // The guest reads the last of a repeated key, this check the
            // first: a key named twice is refused, so they cannot differ.
            if self.cmdline.split_whitespace().filter(|w| w.split_once('=').map_or(*w, |(k, _)| k) == key).count() > 1 {
                return Err(format!("cmdline names {key} more than once"));
            }
            match cmdline_value(&self.cmdline, key) {
                Some(v) if v == want => {}
                Some(v) => return Err(format!("cmdline has {key}={v} but the rootfs entry says {want}")),
                None => return Err(format!("cmdline lacks {key}")),
            }
        }
        Ok(())
    }
}

/// The value of `key=` on a kernel command line.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// Lowercase hex; `len` 0 means any even length.
fn is_hex(s: &str, len: usize) -> bool {
    (len == 0 || s.len() == len) && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
pub(crate) fn sample() -> Manifest {
    let part = |f: &str| Part { file: f.into(), sha256: "00".repeat(32), size: 1 };
    let rootfs = RootfsPart {
        file: ROOTFS_FILE.into(),
        sha256: "00".repeat(32),
        size: 2 * 4096 + 4096,
        data_blocks: 2,
        hash_offset: 8192,
        data_block_size: 4096,
        hash_block_size: 4096,
        hash_algorithm: "sha256".into(),
        root_hash: "ab".repeat(32),
        salt: "cd".repeat(32),
    };
    Manifest {
        version: 1,
        name: "t".into(),
        created: "2026-01-01T00:00:00.000Z".into(),
        kernel: part(KERNEL_FILE),
        vmlinux: None,
        initramfs: part(INITRAMFS_FILE),
        cmdline: cmdline_for(&rootfs),
        rootfs,
        source: "default".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_carries_verity_parameters() {
        let m = sample();
        assert!(m.cmdline.starts_with("console=ttyS0 panic=-1 rdinit=/init "));
        assert_eq!(cmdline_value(&m.cmdline, "clawkeep.roothash"), Some("ab".repeat(32).as_str()));
        assert_eq!(cmdline_value(&m.cmdline, "clawkeep.hashstart"), Some("2"));
        assert_eq!(cmdline_value(&m.cmdline, "clawkeep.datablocks"), Some("2"));
        m.check().unwrap();
        assert_eq!(
            m.rootfs.verity_table("/dev/vda"),
            format!("0 16 verity 1 /dev/vda /dev/vda 4096 4096 2 2 sha256 {} {}", "ab".repeat(32), "cd".repeat(32))
        );
    }

    #[test]
    fn check_refuses_inconsistent_manifests() {
        let mut m = sample();
        m.rootfs.root_hash = "ef".repeat(32);
        assert!(m.check().unwrap_err().contains("clawkeep.roothash"));
        let mut m = sample();
        m.kernel.file = "../../etc/shadow".into();
        assert!(m.check().unwrap_err().contains("plain file name"));
        let mut m = sample();
        m.version = 2;
        assert!(m.check().is_err());
        // A second root hash after the right one: the guest would use it.
        let mut m = sample();
        m.cmdline = format!("{} clawkeep.roothash={}", m.cmdline, "ef".repeat(32));
        assert!(m.check().unwrap_err().contains("clawkeep.roothash more than once"));
    }

    #[test]
    fn json_round_trip_has_the_documented_shape() {
        let m = sample();
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        for k in ["version", "name", "created", "kernel", "vmlinux", "initramfs", "rootfs", "cmdline", "source"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["rootfs"]["hash_algorithm"], "sha256");
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
