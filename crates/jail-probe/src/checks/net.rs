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
