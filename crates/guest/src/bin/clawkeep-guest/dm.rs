//! dm-verity over the root disk, set up with the device-mapper ioctls on
//! /dev/mapper/control (no libdevmapper, no udev in the initramfs).
//!
//! After [`create_verity`] returns, reads of the returned block device are
//! checked block by block against the root hash from the kernel command
//! line; a block that does not match fails the read with EIO (the kernel's
//! `verity` target, Documentation/admin-guide/device-mapper/verity.rst).
//! The structs below mirror `include/uapi/linux/dm-ioctl.h` (interface 4).

use crate::cmdline::BootParams;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;
const DM_READONLY_FLAG: u32 = 1 << 0;

#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; DM_NAME_LEN],
    uuid: [u8; DM_UUID_LEN],
    data: [u8; 7],
}

#[repr(C)]
struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    next: u32,
    target_type: [u8; 16],
}

const HDR: usize = std::mem::size_of::<DmIoctl>();
const SPEC: usize = std::mem::size_of::<DmTargetSpec>();
const _: () = assert!(HDR == 312 && SPEC == 40);

/// `_IOWR(DM_IOCTL, nr, struct dm_ioctl)`.
const fn dm_iowr(nr: u64) -> u64 {
    (3 << 30) | ((HDR as u64) << 16) | (0xfd << 8) | nr
}
const DM_DEV_CREATE: u64 = dm_iowr(3);
const DM_DEV_SUSPEND: u64 = dm_iowr(6);
const DM_TABLE_LOAD: u64 = dm_iowr(9);

#[derive(Debug)]
pub enum DmError {
    Control(io::Error),
    Ioctl { step: &'static str, source: io::Error },
    Name,
}

impl std::fmt::Display for DmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DmError::Control(e) => write!(f, "cannot open /dev/mapper/control: {e}"),
            DmError::Ioctl { step, source } => write!(f, "device-mapper {step} failed: {source}"),
            DmError::Name => write!(f, "device-mapper name too long"),
        }
    }
}

/// The `verity` target's parameters (format 1, sha256, 4 KiB blocks, the
/// hash tree on the same device as the data).
pub fn verity_params(dev: &str, p: &BootParams) -> String {
    let salt = if p.salt.is_empty() { "-" } else { p.salt.as_str() };
    format!("1 {dev} {dev} 4096 4096 {} {} sha256 {} {salt}", p.datablocks, p.hashstart, p.roothash)
}

/// The table's length in 512-byte sectors: the data area only.
pub fn verity_sectors(p: &BootParams) -> u64 {
    p.datablocks * 8
}

/// An 8-byte aligned ioctl buffer: the header, then `extra` bytes.
fn buffer(name: &str, extra: &[u8]) -> Result<Vec<u64>, DmError> {
    if name.len() >= DM_NAME_LEN {
        return Err(DmError::Name);
    }
    let total = (HDR + extra.len()).div_ceil(8) * 8 + 8;
    let mut buf = vec![0u64; total / 8];
    let mut h = DmIoctl {
        version: [4, 0, 0],
        data_size: total as u32,
        data_start: HDR as u32,
        target_count: 0,
        open_count: 0,
        flags: 0,
        event_nr: 0,
        padding: 0,
        dev: 0,
        name: [0; DM_NAME_LEN],
        uuid: [0; DM_UUID_LEN],
        data: [0; 7],
    };
    h.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: buf holds at least HDR + extra bytes, is 8-byte aligned (u64
    // storage) and DmIoctl is repr(C) plain data; the writes stay in bounds.
    unsafe {
        std::ptr::write(buf.as_mut_ptr().cast::<DmIoctl>(), h);
        std::ptr::copy_nonoverlapping(extra.as_ptr(), buf.as_mut_ptr().cast::<u8>().add(HDR), extra.len());
    }
    Ok(buf)
}

fn header(buf: &mut [u64]) -> &mut DmIoctl {
    // SAFETY: every buffer comes from `buffer`, which wrote a DmIoctl at
    // offset 0 of aligned storage at least HDR bytes long.
    unsafe { &mut *buf.as_mut_ptr().cast::<DmIoctl>() }
}

fn ioctl(ctl: &std::fs::File, req: u64, buf: &mut [u64], step: &'static str) -> Result<(), DmError> {
    // SAFETY: buf is a dm_ioctl buffer whose data_size matches its length;
    // the kernel reads and writes at most data_size bytes of it.
    let r = unsafe { libc::ioctl(ctl.as_raw_fd(), req as _, buf.as_mut_ptr()) };
    if r < 0 {
        return Err(DmError::Ioctl { step, source: io::Error::last_os_error() });
    }
    Ok(())
}

/// The target spec plus its NUL-terminated parameters.
fn table(sectors: u64, target: &str, params: &str) -> Vec<u8> {
    let len = (SPEC + params.len() + 1).div_ceil(8) * 8;
    let mut out = vec![0u8; len];
    out[..8].copy_from_slice(&0u64.to_ne_bytes());
    out[8..16].copy_from_slice(&sectors.to_ne_bytes());
    out[20..24].copy_from_slice(&(len as u32).to_ne_bytes());
    out[24..24 + target.len().min(15)].copy_from_slice(&target.as_bytes()[..target.len().min(15)]);
    out[SPEC..SPEC + params.len()].copy_from_slice(params.as_bytes());
    out
}

/// Creates the read-only `verity` mapping `name` over `dev`; returns the
/// mapped block device's path (/dev/dm-N).
pub fn create_verity(name: &str, dev: &str, p: &BootParams) -> Result<String, DmError> {
    let ctl = OpenOptions::new().read(true).write(true).open("/dev/mapper/control").map_err(DmError::Control)?;
    let mut b = buffer(name, &[])?;
    ioctl(&ctl, DM_DEV_CREATE, &mut b, "DM_DEV_CREATE")?;
    let mut b = buffer(name, &table(verity_sectors(p), "verity", &verity_params(dev, p)))?;
    header(&mut b).target_count = 1;
    header(&mut b).flags = DM_READONLY_FLAG;
    ioctl(&ctl, DM_TABLE_LOAD, &mut b, "DM_TABLE_LOAD (verity)")?;
    // DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes: the loaded table
    // becomes live.
    let mut b = buffer(name, &[])?;
    ioctl(&ctl, DM_DEV_SUSPEND, &mut b, "DM_DEV_SUSPEND (resume)")?;
    let dev = header(&mut b).dev;
    let minor = ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32;
    Ok(format!("/dev/dm-{minor}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params() -> BootParams {
        BootParams { roothash: "ab".repeat(32), salt: "cd".repeat(32), datablocks: 1000, hashstart: 1001, ..Default::default() }
    }

    #[test]
    fn table_string_is_format_1_sha256() {
        let p = params();
        assert_eq!(
            verity_params("/dev/vda", &p),
            format!("1 /dev/vda /dev/vda 4096 4096 1000 1001 sha256 {} {}", "ab".repeat(32), "cd".repeat(32))
        );
        assert_eq!(verity_sectors(&p), 8000);
        let no_salt = BootParams { salt: String::new(), ..p };
        assert!(verity_params("/dev/vda", &no_salt).ends_with(" -"));
    }

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        assert_eq!(DM_DEV_CREATE, 0xc138_fd03);
        assert_eq!(DM_DEV_SUSPEND, 0xc138_fd06);
        assert_eq!(DM_TABLE_LOAD, 0xc138_fd09);
    }

    #[test]
    fn buffers_carry_the_name_and_an_aligned_spec() {
        let t = table(8, "verity", "1 a b");
        assert_eq!(t.len() % 8, 0);
        assert_eq!(&t[24..30], b"verity");
        assert_eq!(&t[SPEC..SPEC + 5], b"1 a b");
        assert_eq!(t[SPEC + 5], 0);
        let mut b = buffer("root", &t).unwrap();
        let h = *header(&mut b);
        assert_eq!((h.data_start as usize, h.data_size as usize % 8, &h.name[..5]), (HDR, 0, &b"root\0"[..]));
        assert!(h.data_size as usize >= HDR + t.len());
        assert!(buffer(&"x".repeat(200), &[]).is_err());
    }
}
