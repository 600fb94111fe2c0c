//! The x86 bzImage format (Documentation/arch/x86/boot.rst): the kernel's
//! version string from the setup header, and the uncompressed ELF kernel
//! (`vmlinux`, what Firecracker boots) from the compressed payload.

use crate::{ImageError, Result};
use std::io::Read;
use std::path::Path;

/// How the payload is compressed, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Gzip,
    Zstd,
    Lzma,
    Lz4,
    Bzip2,
    Lzo,
    Unknown,
}

impl Compression {
    pub fn detect(b: &[u8]) -> Self {
        match b {
            [0xFD, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
            [0x1F, 0x8B, ..] => Compression::Gzip,
            [0x28, 0xB5, 0x2F, 0xFD, ..] => Compression::Zstd,
            [0x5D, 0, 0, ..] => Compression::Lzma,
            [0x02, 0x21, 0x4C, 0x18, ..] => Compression::Lz4,
            [b'B', b'Z', b'h', ..] => Compression::Bzip2,
            [0x89, b'L', b'Z', b'O', ..] => Compression::Lzo,
            _ => Compression::Unknown,
        }
    }
}

/// The fields of a bzImage this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BzImage {
    /// `6.1.0-56-amd64` (the first word of the kernel's version string).
    pub version: String,
    /// Byte range of the compressed payload in the file.
    pub payload: std::ops::Range<usize>,
}

impl BzImage {
    /// Parses the setup header of `data` (the whole file).
    pub fn parse(data: &[u8]) -> Result<BzImage, String> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if data.get(0x202..0x206) != Some(b"HdrS") {
            return Err("no 'HdrS' setup header at 0x202".into());
        }
        let protocol = u16_at(0x206).ok_or("truncated header")?;
        if protocol < 0x208 {
            return Err(format!("boot protocol {protocol:#x} is older than 2.08 (no payload fields)"));
        }
        let setup_sects = match data[0x1F1] {
            0 => 4,
            n => n as usize,
        };
        let version = match u16_at(0x20E) {
            Some(0) | None => String::new(),
            Some(p) => data
                .get(p + 0x200..)
                .and_then(|s| s.split(|&b| b == 0).next())
                .map(|s| String::from_utf8_lossy(s).split_whitespace().next().unwrap_or_default().to_string())
                .unwrap_or_default(),
        };
        let pm_start = (setup_sects + 1) * 512;
        let (off, len) = (u32_at(0x248).ok_or("truncated header")?, u32_at(0x24C).ok_or("truncated header")?);
        let start = pm_start + off;
        if len == 0 || start + len > data.len() {
            return Err("payload offset/length point outside the file".into());
        }
        Ok(BzImage { version, payload: start..start + len })
    }
}

/// The version string of the bzImage at `path` (reads its first 64 KiB).
pub fn read_version(path: &Path) -> Result<String> {
    let mut head = Vec::with_capacity(64 << 10);
    std::fs::File::open(path).and_then(|f| f.take(64 << 10).read_to_end(&mut head)).map_err(ImageError::io("read", path))?;
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    if head.get(0x202..0x206) != Some(b"HdrS") {
        return Err(ImageError::BadKernel { path: path.into(), reason: "no 'HdrS' setup header at 0x202".into() });
    }
    let v = u16_at(0x20E)
        .and_then(|p| head.get(p + 0x200..))
        .and_then(|s| s.split(|&b| b == 0).next())
        .map(|s| String::from_utf8_lossy(s).split_whitespace().next().unwrap_or_default().to_string())
        .unwrap_or_default();
    if v.is_empty() {
        return Err(ImageError::BadKernel { path: path.into(), reason: "no kernel version string".into() });
    }
    Ok(v)
}

/// The uncompressed ELF kernel inside `data`, or why it could not be had
/// (an unsupported compression included: the image then has no vmlinux).
pub fn extract_vmlinux(data: &[u8], header: &BzImage) -> Result<Vec<u8>, String> {
    let payload = &data[header.payload.clone()];
    let mut out = Vec::new();
    let res = match Compression::detect(payload) {
        // XzReader wants an owned ('static) reader; the payload is a few MiB.
        Compression::Xz => xz4rust::XzReader::new(std::io::Cursor::new(payload.to_vec())).read_to_end(&mut out),
        // Gzip payloads end with the 4-byte size the kernel build appends;
        // GzDecoder stops at the end of the member and ignores it.
        Compression::Gzip => flate2::read::GzDecoder::new(payload).read_to_end(&mut out),
        other => return Err(format!("{other:?}-compressed kernels are not decoded here")),
    };
    res.map_err(|e| format!("decompressing the payload: {e}"))?;
    if !out.starts_with(b"\x7fELF") {
        return Err("the decompressed payload is not an ELF file".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal fake bzImage with a gzip payload holding `inner`.
    fn fake(inner: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(inner).unwrap();
        let payload = gz.finish().unwrap();
        let mut d = vec![0u8; 5 * 512];
        d[0x1F1] = 4;
        d[0x202..0x206].copy_from_slice(b"HdrS");
        d[0x206..0x208].copy_from_slice(&0x20Fu16.to_le_bytes());
        let ver = b"6.1.0-test (x@y) #1\0";
        d[0x400..0x400 + ver.len()].copy_from_slice(ver);
        d[0x20E..0x210].copy_from_slice(&0x200u16.to_le_bytes());
        d[0x248..0x24C].copy_from_slice(&16u32.to_le_bytes());
        d[0x24C..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        d.extend_from_slice(&[0u8; 16]);
        d.extend_from_slice(&payload);
        d.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        d
    }

    #[test]
    fn parses_and_extracts_a_gzip_payload() {
        let d = fake(b"\x7fELF-kernel-bytes");
        let h = BzImage::parse(&d).unwrap();
        assert_eq!(h.version, "6.1.0-test");
        assert_eq!(extract_vmlinux(&d, &h).unwrap(), b"\x7fELF-kernel-bytes");
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("k"), &d).unwrap();
        assert_eq!(read_version(&t.path().join("k")).unwrap(), "6.1.0-test");
    }

    #[test]
    fn refuses_what_is_not_a_bzimage() {
        assert!(BzImage::parse(&[0u8; 4096]).is_err());
        let d = fake(b"not an elf");
        let h = BzImage::parse(&d).unwrap();
        assert!(extract_vmlinux(&d, &h).unwrap_err().contains("ELF"));
        assert_eq!(Compression::detect(&[0x28, 0xB5, 0x2F, 0xFD]), Compression::Zstd);
    }

    #[test]
    fn extracts_the_debian_kernel() {
        let Some(k) = crate::kernel::cached_kernel() else {
            println!("skipped: extracts_the_debian_kernel: no extracted kernel (run .ci/fetch-kernel)");
            return;
        };
        let d = std::fs::read(&k).unwrap();
        let h = BzImage::parse(&d).unwrap();
        assert!(k.to_string_lossy().ends_with(&h.version), "{} vs {}", k.display(), h.version);
        let elf = extract_vmlinux(&d, &h).unwrap();
        assert!(elf.len() > d.len(), "vmlinux is bigger than the compressed kernel");
    }
}
