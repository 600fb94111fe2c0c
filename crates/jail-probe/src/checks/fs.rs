//! Filesystem checks: secrets out of reach, read-only root, no device nodes,
//! a private `/proc` and a minimal `/dev`.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::attempt;
use crate::errno;
use crate::report::{Findings, Outcome};

/// `/etc/shadow` must not open, directly or through pid 1's root.
pub fn shadow() -> Outcome {
    let mut f = Findings::new();
    match File::open("/etc/shadow") {
        Ok(_) => f.escaped("open(/etc/shadow) succeeded"),
        Err(e) => f.held(format!("open(/etc/shadow) -> {}", errno::io_name(&e))),
    }
    match read_some("/proc/1/root/etc/shadow") {
        Ok(0) => f.held("read(/proc/1/root/etc/shadow) -> 0 bytes"),
        Ok(n) => f.escaped(format!("read(/proc/1/root/etc/shadow) returned {n} bytes")),
        Err(e) => f.held(format!("read(/proc/1/root/etc/shadow) -> {}", errno::io_name(&e))),
    }
    f.finish("shadow")
}

/// Directories outside the writable set; creating a file in any must fail.
const READ_ONLY_DIRS: [&str; 8] = ["/", "/etc", "/usr", "/usr/bin", "/var", "/dev", "/root", "/home"];

/// Files that must be writable: the jail is broken the other way if not.
const MUST_WRITE: [&str; 2] = ["/workspace/probe-ok", "/tmp/probe-ok"];

/// Writes outside `/workspace` and `/tmp` fail; writes inside them work.
pub fn write_outside() -> Outcome {
    let mut f = Findings::new();
    let name = format!(".clawkeep-probe-{}", std::process::id());
    for dir in READ_ONLY_DIRS {
        let path = Path::new(dir).join(&name);
        // create_new: never truncate or clobber something that already exists.
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => {
                let _ = fs::remove_file(&path);
                f.escaped(format!("create in {dir} succeeded"));
            }
            Err(e) => f.held(format!("create in {dir} -> {}", errno::io_name(&e))),
        }
    }
    record_hostname_write(&mut f);
    for path in MUST_WRITE {
        match write_and_verify(path) {
            Ok(()) => f.held(format!("write {path} ok")),
            Err(e) => f.escaped(format!("write {path} -> {} (jail too strict: this must work)", errno::io_name(&e))),
        }
        let _ = fs::remove_file(path);
    }
    f.finish("write-outside")
}

fn write_and_verify(path: &str) -> io::Result<()> {
    fs::write(path, b"clawkeep-probe-ok\n")?;
    if fs::read(path)? == b"clawkeep-probe-ok\n" {
        Ok(())
    } else {
        Err(io::Error::other("content read back differs"))
    }
}

/// Tries to write `/proc/sys/kernel/hostname`. It writes back the current
/// name, so even a successful write changes nothing.
fn record_hostname_write(f: &mut Findings) {
    const PATH: &str = "/proc/sys/kernel/hostname";
    let current = fs::read(PATH).unwrap_or_else(|_| b"clawkeep\n".to_vec());
    let result = OpenOptions::new().write(true).open(PATH).and_then(|mut file| file.write_all(&current));
    match result {
        Ok(()) => f.escaped(format!("write {PATH} succeeded")),
        Err(e) => f.held(format!("write {PATH} -> {}", errno::io_name(&e))),
    }
}

const CHAR_DEV: &std::ffi::CStr = c"/tmp/probe-dev";
const BLOCK_DEV: &std::ffi::CStr = c"/tmp/probe-blk";
const FIFO: &std::ffi::CStr = c"/tmp/probe-fifo";

/// Device nodes cannot be made (char: /dev/mem's 1:3 twin; block: sda's 8:0),
/// while FIFOs — harmless and used by ordinary tools — still can.
pub fn mknod() -> Outcome {
    let mut f = Findings::new();
    for path in [CHAR_DEV, BLOCK_DEV, FIFO] {
        // A leftover from an earlier run would turn every attempt into EEXIST.
        let _ = fs::remove_file(path.to_string_lossy().as_ref());
    }
    let nodes = [
        ("mknod(chr 1:3)", CHAR_DEV, libc::S_IFCHR, libc::makedev(1, 3)),
        ("mknod(blk 8:0)", BLOCK_DEV, libc::S_IFBLK, libc::makedev(8, 0)),
    ];
    for (label, path, kind, dev) in nodes {
        // SAFETY: `path` is a NUL-terminated C string literal.
        let ret = unsafe { libc::mknod(path.as_ptr(), kind | 0o600, dev) };
        let ret = errno::check(ret);
        attempt(&mut f, label, ret);
        if ret.is_ok() {
            let _ = fs::remove_file(path.to_string_lossy().as_ref());
        }
    }
    // SAFETY: `FIFO` is a NUL-terminated C string literal.
    match errno::check(unsafe { libc::mkfifo(FIFO.as_ptr(), 0o600) }) {
        Ok(_) => {
            f.held("mkfifo ok");
            let _ = fs::remove_file(FIFO.to_string_lossy().as_ref());
        }
        Err(code) => f.escaped(format!("mkfifo -> {} (jail too strict: FIFOs must work)", errno::name(code))),
    }
    f.finish("mknod")
}

/// Most processes the jail may see in its own `/proc`.
const MAX_VISIBLE_PIDS: usize = 20;

/// `/proc` is the jail's own: no kernel memory, no sysrq, no host sysctls,
/// pid 1 is the jail's init and only a handful of pids are visible.
pub fn proc() -> Outcome {
    let mut f = Findings::new();
    match read_some("/proc/kcore") {
        Ok(0) => f.held("read(/proc/kcore) -> 0 bytes"),
        Ok(n) => f.escaped(format!("read(/proc/kcore) returned {n} bytes")),
        Err(e) => f.held(format!("read(/proc/kcore) -> {}", errno::io_name(&e))),
    }
    // Opening for write is the kernel's gate here (mode 0200, root-owned).
    // We never write a key: even a "harmless" one reaches the host kernel.
    match OpenOptions::new().write(true).open("/proc/sysrq-trigger") {
        Ok(_) => f.escaped("open(/proc/sysrq-trigger, O_WRONLY) succeeded (nothing written)"),
        Err(e) => f.held(format!("open(/proc/sysrq-trigger, O_WRONLY) -> {}", errno::io_name(&e))),
    }
    record_hostname_write(&mut f);
    match fs::read_to_string("/proc/1/comm") {
        Ok(comm) if comm.trim() == "clawkeep-init" => f.held("pid 1 is clawkeep-init"),
        Ok(comm) => f.escaped(format!("pid 1 is {:?}", comm.trim())),
        Err(e) => f.escaped(format!("read(/proc/1/comm) -> {}", errno::io_name(&e))),
    }
    match count_pids() {
        Ok(n) => f.record(n < MAX_VISIBLE_PIDS, format!("{n} pids visible")),
        Err(e) => f.escaped(format!("readdir(/proc) -> {}", errno::io_name(&e))),
    }
    f.finish("proc")
}

fn count_pids() -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir("/proc")? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            n += 1;
        }
    }
    Ok(n)
}

const DEV_REQUIRED: [&str; 7] = ["null", "zero", "full", "random", "urandom", "tty", "pts"];
const DEV_FORBIDDEN: [&str; 6] = ["sda", "vda", "kvm", "mem", "kmem", "port"];

/// `/dev` holds the usual harmless nodes and nothing that reaches hardware.
pub fn dev() -> Outcome {
    let mut f = Findings::new();
    let entries = match fs::read_dir("/dev") {
        Ok(entries) => entries,
        Err(e) => {
            f.escaped(format!("readdir(/dev) -> {}", errno::io_name(&e)));
            return f.finish("dev");
        }
    };
    let mut names = BTreeSet::new();
    let mut block_devices = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_block_device()) {
            block_devices.push(name.clone());
        }
        names.insert(name);
    }
    let listing: Vec<&str> = names.iter().map(String::as_str).collect();
    f.held(format!("/dev = [{}]", listing.join(" ")));
    let missing: Vec<&str> = DEV_REQUIRED.into_iter().filter(|n| !names.contains(*n)).collect();
    if !missing.is_empty() {
        f.escaped(format!("missing {}", missing.join(" ")));
    }
    let present: Vec<&str> = DEV_FORBIDDEN.into_iter().filter(|n| names.contains(*n)).collect();
    if !present.is_empty() {
        f.escaped(format!("forbidden present: {}", present.join(" ")));
    }
    if !block_devices.is_empty() {
        f.escaped(format!("block devices: {}", block_devices.join(" ")));
    }
    match OpenOptions::new().write(true).open("/dev/null").and_then(|mut null| null.write_all(b"clawkeep-probe")) {
        Ok(()) => f.held("write /dev/null ok"),
        Err(e) => f.escaped(format!("write /dev/null -> {} (must work)", errno::io_name(&e))),
    }
    f.finish("dev")
}

/// Opens `path` and reads up to one page; returns the bytes read.
fn read_some(path: &str) -> io::Result<usize> {
    let mut buf = [0u8; 4096];
    File::open(path)?.read(&mut buf)
}
