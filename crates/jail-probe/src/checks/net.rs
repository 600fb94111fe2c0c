//! Network checks: the jail's netns reaches nothing on the host, raw sockets
//! are out, and the UTS namespace is private.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::attempt;
use super::syscalls::close_if_fd;
use crate::errno;
use crate::report::{Findings, Outcome};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP connect to a host listener must not get through. `connect_timeout`
/// is a non-blocking connect plus poll, bounded at 2 s.
pub fn connect(addr: SocketAddr) -> Outcome {
    let mut f = Findings::new();
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(_) => f.escaped(format!("connect({addr}) succeeded")),
        // std reports its own deadline as TimedOut without an errno.
        Err(e) if e.kind() == ErrorKind::TimedOut && e.raw_os_error().is_none() => {
            f.held(format!("connect({addr}) -> timed out after {}s", CONNECT_TIMEOUT.as_secs()));
        }
        Err(e) => f.held(format!("connect({addr}) -> {}", errno::io_name(&e))),
    }
    f.finish("connect")
}

/// Raw sockets (sniffing, spoofing) need CAP_NET_RAW, which the jail drops.
pub fn raw_socket() -> Outcome {
    let mut f = Findings::new();
    let sockets = [
        ("socket(AF_PACKET, SOCK_RAW)", libc::AF_PACKET, libc::SOCK_RAW, 0),
        ("socket(AF_INET, SOCK_RAW, ICMP)", libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        // SOCK_PACKET (10): the obsolete spelling of a packet socket.
        ("socket(AF_INET, SOCK_PACKET)", libc::AF_INET, 10, 0),
    ];
    for (label, domain, kind, protocol) in sockets {
        // SAFETY: socket takes only integers; a returned fd is closed below.
        let ret = errno::check(unsafe { libc::socket(domain, kind, protocol) });
        attempt(&mut f, label, ret);
        close_if_fd(ret);
    }
    f.finish("raw-socket")
}

/// The jail's network cannot be reconfigured from inside: taking its
/// loopback down needs CAP_NET_ADMIN over the network namespace, which
/// nothing in the jail holds (as root, the namespace belongs to the host's
/// user namespace). Reading the flags is allowed and must work.
pub fn config() -> Outcome {
    let mut f = Findings::new();
    // SAFETY: socket takes only integers; the fd is closed below.
    let fd = match errno::check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }) {
        Ok(fd) => fd as i32,
        Err(code) => {
            f.escaped(format!("socket(AF_INET, SOCK_DGRAM) -> {}: cannot tell", errno::name(code)));
            return f.finish("net-config");
        }
    };
    // SAFETY: ifreq is plain data; all zeroes is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is a socket; ifr is a valid ifreq for SIOCGIFFLAGS.
    match errno::check(unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) }) {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        Ok(_) if unsafe { ifr.ifr_ifru.ifru_flags } & libc::IFF_UP as libc::c_short == 0 => {
            f.escaped("lo is down: cannot tell whether it could be taken down".to_string());
        }
        Ok(_) => {
            // SAFETY: as above; the flags member was just read.
            unsafe { ifr.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short) };
            // SAFETY: fd is a socket; ifr is a valid ifreq for SIOCSIFFLAGS.
            let ret = errno::check(unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) });
            attempt(&mut f, "ioctl(SIOCSIFFLAGS, lo down)", ret);
        }
        Err(code) => f.escaped(format!("ioctl(SIOCGIFFLAGS, lo) -> {}: cannot tell", errno::name(code))),
    }
    close_if_fd(Ok(i64::from(fd)));
    f.finish("net-config")
}

/// As root, the jail's network namespace belongs to the host's user
/// namespace, so nothing in the jail, its own root included, holds a
/// capability over it: asking for its owner from inside must fail (EPERM,
/// the owner is outside the jail's user namespace). Not part of `all`:
/// without root the jail's own user namespace owns it, by design.
pub fn netns_owner() -> Outcome {
    // linux/nsfs.h: _IO(0xb7, 0x1).
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let mut f = Findings::new();
    // SAFETY: a NUL-terminated path; a returned fd is closed below.
    let ns = errno::check(unsafe { libc::open(c"/proc/self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) });
    match ns {
        Ok(fd) => {
            // SAFETY: fd is a namespace descriptor; the request takes no argument.
            let owner = errno::check(unsafe { libc::ioctl(fd as i32, NS_GET_USERNS) });
            attempt(&mut f, "ioctl(/proc/self/ns/net, NS_GET_USERNS)", owner);
            close_if_fd(owner);
        }
        Err(code) => f.escaped(format!("open(/proc/self/ns/net) -> {}: cannot tell", errno::name(code))),
    }
    close_if_fd(ns);
    f.finish("netns-owner")
}

/// The jail's hostname is its own, not the host's.
pub fn hostname(host_name: &str) -> Outcome {
    let mut f = Findings::new();
    let host_name = host_name.trim();
    match nodename() {
        Ok(name) => f.record(name != host_name, format!("nodename={name:?} host={host_name:?}")),
        Err(code) => f.escaped(format!("uname -> {}", errno::name(code))),
    }
    f.finish("hostname")
}

fn nodename() -> Result<String, i32> {
    // SAFETY: utsname is plain arrays of c_char, for which all zeroes is a
    // valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    errno::check(unsafe { libc::uname(&mut uts) })?;
    let bytes: Vec<u8> = uts.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
