//! A command's stdio, made before fork: three pipes, or a terminal (a pty
//! whose slave is the command's stdin, stdout and stderr and its
//! controlling terminal, see `tty.rs`).
//!
//! Every descriptor is close-on-exec; the child's ends reach the command
//! only through the dup2 onto 0, 1 and 2 in `exec::child`, and pid 1
//! closes its copies of them once the child is forked, so the command's
//! exit (and that of whatever it left holding them) ends the output.

use crate::exec::pipe;
use crate::tty;
use clawkeep_guest::proto::TtySize;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

/// Both sides of a command's stdio.
pub struct Stdio {
    /// What the child dups onto 0, 1 and 2.
    pub fds: [i32; 3],
    /// The child makes `fds[0]` its controlling terminal.
    pub ctty: bool,
    /// The child's ends, which own `fds`; pid 1 drops them after fork.
    pub child: Vec<OwnedFd>,
    /// Where the command's stdin is written.
    pub stdin: File,
    /// The command's output, each with whether it is stdout (else stderr).
    pub outputs: Vec<(File, bool)>,
    /// A terminal's master, kept to resize it.
    pub master: Option<File>,
}

impl Stdio {
    /// Pipes, or a terminal of `tty`'s size owned by `uid`:`gid`.
    pub fn new(tty: Option<TtySize>, uid: u32, gid: u32) -> Result<Stdio, String> {
        match tty {
            None => Stdio::pipes(),
            Some(size) => Stdio::terminal(size, uid, gid),
        }
    }

    fn pipes() -> Result<Stdio, String> {
        let [in_r, in_w] = pipe()?;
        let [out_r, out_w] = pipe()?;
        let [err_r, err_w] = pipe()?;
        Ok(Stdio {
            fds: [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
            ctty: false,
            child: vec![in_r, out_w, err_w],
            stdin: File::from(in_w),
            outputs: vec![(File::from(out_r), true), (File::from(err_r), false)],
            master: None,
        })
    }

    /// One master carries both directions; the terminal merges stdout and
    /// stderr, so all output is stdout.
    fn terminal(size: TtySize, uid: u32, gid: u32) -> Result<Stdio, String> {
        let pty = tty::open(size, uid, gid)?;
        let dup = |f: &OwnedFd| f.try_clone().map_err(|e| format!("a terminal for the command: dup its master: {e}"));
        let (stdin, resize) = (dup(&pty.master)?, dup(&pty.master)?);
        let s = pty.slave.as_raw_fd();
        Ok(Stdio {
            fds: [s, s, s],
            ctty: true,
            child: vec![pty.slave],
            stdin: File::from(stdin),
            outputs: vec![(File::from(pty.master), true)],
            master: Some(File::from(resize)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn pipes_keep_stdout_and_stderr_apart() {
        let s = Stdio::new(None, 0, 0).unwrap();
        assert!(!s.ctty && s.master.is_none());
        assert_eq!(s.child.len(), 3);
        assert_eq!(s.outputs.iter().map(|(_, out)| *out).collect::<Vec<_>>(), [true, false]);
    }

    #[test]
    fn a_terminal_is_one_slave_for_all_three_and_one_master_for_both_directions() {
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut s = Stdio::new(Some(TtySize { rows: 24, cols: 80 }), uid, gid).unwrap();
        assert!(s.ctty);
        assert_eq!(s.child.len(), 1);
        let slave = s.child[0].as_raw_fd();
        assert_eq!(s.fds, [slave, slave, slave]);
        let Some((mut output, true)) = s.outputs.pop() else { panic!("one stdout") };
        assert!(s.outputs.is_empty(), "a terminal has no separate stderr");
        // Typed on stdin: read by the command (and echoed to the output).
        s.stdin.write_all(b"x\n").unwrap();
        let mut slave = File::from(s.child.remove(0));
        let mut b = [0u8; 2];
        slave.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x\n");
        output.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x\r");
        // The kept master resizes this very terminal.
        tty::set_size(&s.master.unwrap(), TtySize { rows: 2, cols: 3 }).unwrap();
        // SAFETY: winsize is plain data; TIOCGWINSZ writes one into it.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: as above, on a terminal we own.
        assert_eq!(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) }, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (2, 3));
    }
}
