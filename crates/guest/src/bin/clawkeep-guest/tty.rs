//! A command's terminal: a pty pair pid 1 allocates when the host's user
//! runs from a terminal (ExecRequest `tty`, see proto.rs).
//!
//! The pair lives in the guest's own devpts (`mounts.rs` mounts a fresh
//! instance on /dev/pts; devtmpfs' /dev/ptmx finds it as its sibling
//! `pts`, see the kernel's Documentation/filesystems/devpts.rst), so the
//! command sees only the ptys of its VM. After [`open`] returns the slave
//! is unlocked, has the asked size and belongs to the command's uid (as
//! login(1) hands a user its terminal); both ends are close-on-exec, so
//! only the child that dups the slave onto its stdio keeps it.

use clawkeep_guest::proto::TtySize;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Both ends of a fresh pty.
#[derive(Debug)]
pub struct Pty {
    /// pid 1's end: the command's output is read here, its input written.
    pub master: OwnedFd,
    /// The command's end: its controlling terminal and stdio.
    pub slave: OwnedFd,
}

/// A failed step, named in the message the host shows.
fn step(what: &str) -> String {
    format!("a terminal for the command: {what}: {}", io::Error::last_os_error())
}

/// Allocates a pty of `size` whose slave `uid`:`gid` owns.
pub fn open(size: TtySize, uid: u32, gid: u32) -> Result<Pty, String> {
    // SAFETY: a plain open of a NUL-terminated path; the fd is owned below.
    let m = unsafe { libc::open(c"/dev/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if m < 0 {
        return Err(step("open /dev/ptmx"));
    }
    // SAFETY: m is a fresh fd nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from a valid pointer.
    if unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(step("unlock the pty"));
    }
    // TIOCGPTPEER opens the slave through the master, without a path
    // lookup that another process could race (ptsname + open would).
    // SAFETY: no pointers; the result is checked.
    let s = unsafe { libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if s < 0 {
        return Err(step("open the pty's slave"));
    }
    // SAFETY: s is a fresh fd nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: fchown on our own fd; no pointers.
    if unsafe { libc::fchown(s, uid, gid) } != 0 {
        return Err(step("hand the pty to the command's user"));
    }
    set_size(&master, size).map_err(|e| format!("a terminal for the command: set its size: {e}"))?;
    Ok(Pty { master, slave })
}

/// Sets the terminal's size; the kernel sends SIGWINCH to its foreground
/// process group when the size changes.
pub fn set_size(master: &impl AsRawFd, size: TtySize) -> io::Result<()> {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one valid winsize.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    fn size_of(fd: &impl AsRawFd) -> (u16, u16) {
        // SAFETY: winsize is plain data; TIOCGWINSZ writes one.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the fd is a terminal we own.
        assert_eq!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) }, 0);
        (ws.ws_row, ws.ws_col)
    }

    fn me() -> (u32, u32) {
        // SAFETY: getuid and getgid have no preconditions.
        unsafe { (libc::getuid(), libc::getgid()) }
    }

    #[test]
    fn a_pty_opens_with_its_size_owner_and_both_directions() {
        let (uid, gid) = me();
        let pty = open(TtySize { rows: 33, cols: 101 }, uid, gid).unwrap();
        // SAFETY: isatty only inspects the fd.
        assert_eq!(unsafe { libc::isatty(pty.slave.as_raw_fd()) }, 1);
        assert_eq!(size_of(&pty.slave), (33, 101), "the slave sees the size set on the master");
        let meta = File::from(pty.slave.try_clone().unwrap()).metadata().unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        for fd in [&pty.master, &pty.slave] {
            // SAFETY: F_GETFD reads the fd's flags; no pointers.
            assert_ne!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC, 0, "no end leaks into an exec");
        }
        let (mut master, mut slave) = (File::from(pty.master), File::from(pty.slave));
        // Typed into the master, read by the command (canonical mode: a line).
        master.write_all(b"hi\n").unwrap();
        let mut b = [0u8; 3];
        slave.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi\n");
        // Echoed back, then what the command wrote, "\n" turned into "\r\n".
        slave.write_all(b"out\n").unwrap();
        let mut b = [0u8; 9];
        master.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi\r\nout\r\n");
    }

    #[test]
    fn a_resize_reaches_the_slave_and_reading_the_master_ends_once_the_slave_is_closed() {
        let (uid, gid) = me();
        let pty = open(TtySize { rows: 24, cols: 80 }, uid, gid).unwrap();
        set_size(&pty.master, TtySize { rows: 50, cols: 132 }).unwrap();
        assert_eq!(size_of(&pty.slave), (50, 132));
        let mut slave = File::from(pty.slave);
        slave.write_all(b"last").unwrap();
        drop(slave);
        // The output still buffered comes first, then EIO: the end.
        let mut master = File::from(pty.master);
        let mut b = [0u8; 4];
        master.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"last");
        let e = master.read(&mut b).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }
}
