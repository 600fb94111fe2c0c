//! A writer (and, for checks, a reader) of the cpio "newc" format the
//! kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/
//! buffer-format.rst). Entries carry uid/gid 0 and mtime 0, so the same
//! inputs give the same bytes.

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter { out, next_ino: 1, written: 0, rdev: (0, 0) }
    }

    /// A directory; `path` is relative to the root ("dev", "lib/modules").
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (perm & 0o7777), 2, &[])
    }

    /// A regular file with `data` as its contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, target.as_bytes())
    }

    /// A character device node (`/dev/console` is 5:1): the kernel opens
    /// it for init's stdio before init runs.
    pub fn chardev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.rdev = (major, minor);
        let r = self.entry(path, S_IFCHR | (perm & 0o7777), 1, &[]);
        self.rdev = (0, 0);
        r
    }

    /// Writes the trailer; returns the writer and the total bytes written.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.header(TRAILER, 0, 0, 0, 0)?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad cpio path '{path}'")));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let size = u32::try_from(data.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio file over 4 GiB"))?;
        self.header(path, ino, mode, nlink, size)?;
        self.put(data)?;
        self.pad()
    }

    fn header(&mut self, name: &str, ino: u32, mode: u32, nlink: u32, size: u32) -> io::Result<()> {
        let namesize = name.len() as u32 + 1;
        let (rmaj, rmin) = self.rdev;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let h = format!(
            "{MAGIC}{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, 0
        );
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }
}

/// One entry read back from a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Parses a newc archive up to its trailer.
pub fn read_entries(mut b: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let field = |h: &[u8], i: usize| -> Result<usize, String> {
        let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).map_err(|_| "bad header")?;
        usize::from_str_radix(s, 16).map_err(|_| format!("bad header field {s}"))
    };
    loop {
        if b.len() < 110 || &b[..6] != MAGIC.as_bytes() {
            return Err(format!("no newc header at offset {pos}"));
        }
        let (mode, size, namesize) = (field(b, 1)? as u32, field(b, 6)?, field(b, 11)?);
        let name_end = 110 + namesize;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + size;
        if b.len() < data_end || namesize == 0 {
            return Err(format!("truncated entry at offset {pos}"));
        }
        let name = String::from_utf8_lossy(&b[110..name_end - 1]).into_owned();
        if name == TRAILER {
            return Ok(out);
        }
        out.push(Entry { name, mode, data: b[data_start..data_end].to_vec() });
        let next = data_end.next_multiple_of(4).min(b.len());
        pos += next;
        b = &b[next..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.dir("bin", 0o755).unwrap();
        w.file("init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.file("bin/busybox", 0o755, &[1, 2, 3, 4, 5]).unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        let (bytes, n) = w.finish().unwrap();
        assert_eq!(bytes.len() as u64, n);
        assert_eq!(n % 4, 0);
        bytes
    }

    #[test]
    fn round_trip() {
        let e = read_entries(&sample()).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["dev", "bin", "init", "bin/busybox", "bin/sh"]);
        assert_eq!(e[2].mode, 0o100755);
        assert_eq!(e[3].data, [1, 2, 3, 4, 5]);
        assert_eq!(e[4].mode & 0o170000, S_IFLNK);
        assert_eq!(e[4].data, b"busybox");
        assert_eq!(sample(), sample(), "same input, same bytes");
    }

    #[test]
    fn refuses_escaping_paths() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("../etc/passwd", 0o644, b"").is_err());
        assert!(w.file("a//b", 0o644, b"").is_err());
    }

    /// busybox's own cpio lists what we wrote, when busybox is installed.
    #[test]
    fn busybox_cpio_reads_it() {
        let Some(bb) = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists()) else {
            println!("skipped: busybox_cpio_reads_it: busybox not installed");
            return;
        };
        let mut child = std::process::Command::new(bb)
            .args(["cpio", "-t"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "dev\nbin\ninit\nbin/busybox\nbin/sh\n");
    }
}
