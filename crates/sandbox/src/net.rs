//! The jail's network: a fresh namespace with only loopback, brought up.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// As root: moves the calling process (the single-threaded helper, before
/// it reads its config) into a new network namespace with its loopback up,
/// and returns true; init is then cloned into it. The namespace belongs to
/// the caller's user namespace (the host's), so nothing in the jail, its
/// own root included, holds a capability over it. Made here, it overlaps
/// the launcher's own start-up: it is the dearest of the jail's namespaces
/// (~0.35 ms here), and cloned with init it would come after the config.
/// False without root: init makes its own. An error as root fails the run
/// (a namespace of init's own would give the jail's root a capability over
/// it).
pub fn enter_new_namespace() -> io::Result<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(false);
    }
    // SAFETY: unshare(CLONE_NEWNET) moves only this process, which has no
    // other thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    loopback_up().map(|()| true)
}

/// Sets IFF_UP on `lo` in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket() returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is a socket and ifr a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            Err(io::Error::last_os_error())
        } else {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
}

/// A TCP socket listening on 127.0.0.1:`port` in the current network
/// namespace. Accepting on it from another namespace still serves
/// connections made inside this one.
pub fn listen_loopback(port: u16) -> io::Result<OwnedFd> {
    // SAFETY: socket() returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_in is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = port.to_be();
    addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    // SAFETY: addr is a valid sockaddr_in of the given length; fd is a socket.
    let bound =
        unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t) };
    // SAFETY: fd is a bound socket.
    if bound < 0 || unsafe { libc::listen(fd, 128) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}
