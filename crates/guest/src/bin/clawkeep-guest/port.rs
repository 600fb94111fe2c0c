//! Where the guest serves the channel: the virtio-serial port (QEMU;
//! virtio_console names each port device vportNpM and puts the name the
//! host gave it, `-device virtserialport,name=...`, in sysfs), or a vsock
//! port (Firecracker, whose host side is a Unix socket speaking
//! `CONNECT <port>`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Finds the port named `name` and opens it read-write, waiting up to
/// `wait` for the driver to create it.
pub fn open(name: &str, wait: Duration) -> io::Result<File> {
    let end = Instant::now() + wait;
    loop {
        if let Some(dev) = find(name) {
            return OpenOptions::new().read(true).write(true).open(dev);
        }
        if Instant::now() >= end {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no virtio-serial port named {name}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find(name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        if std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim_end() == name) {
            return Some(PathBuf::from("/dev").join(e.file_name()));
        }
    }
    None
}

/// Listens on vsock `port` (any CID: the host).
pub fn listen_vsock(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; zeroed is valid before filling.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes; sock is a socket.
    if unsafe { libc::bind(sock.as_raw_fd(), (&addr as *const libc::sockaddr_vm).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sock is a bound stream socket.
    if unsafe { libc::listen(sock.as_raw_fd(), 1) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// The next host connection on a vsock listener.
pub fn accept(listener: &OwnedFd) -> io::Result<File> {
    loop {
        // SAFETY: listener is a listening socket; no address is asked for.
        let fd = unsafe { libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: accept4 returned a fresh fd nobody else owns.
            return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
