//! The agent's terminal: a pty allocated *inside* the jail's own devpts,
//! whose master the helper relays to the user's real terminal.
//!
//! Why not hand the real terminal in: it would put a host device in the
//! jail (TIOCSTI-style injection, line-discipline and session games on
//! the operator's terminal) and `ttyname` would fail there. With the relay
//! the jail sees only its own /dev/pts/0, and the host terminal is touched
//! by the helper alone: raw mode while relaying, restored afterwards. This
//! is the console-socket pattern of runc/crun.

use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// The size of the terminal on `fd`, when `fd` is one.
pub fn terminal_size(fd: RawFd) -> Option<TtySize> {
    // SAFETY: isatty and TIOCGWINSZ only read into a valid winsize.
    unsafe {
        if libc::isatty(fd) != 1 {
            return None;
        }
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) < 0 {
            return Some(TtySize { rows: 24, cols: 80 });
        }
        Some(TtySize { rows: ws.ws_row, cols: ws.ws_col })
    }
}

pub fn set_size(master: RawFd, size: TtySize) {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a valid winsize.
    unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
}

/// Opens a new pty in the current mount namespace's /dev/ptmx: (master, slave).
pub fn open(size: TtySize) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: open/ioctl on our own descriptors; results are checked.
    unsafe {
        let m = libc::open(c"/dev/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(m);
        let unlock: libc::c_int = 0;
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(io::Error::last_os_error());
        }
        // TIOCGPTPEER opens the peer without a path lookup (no races).
        let s = libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        set_size(m, size);
        Ok((master, OwnedFd::from_raw_fd(s)))
    }
}

/// Sends `fd` over a Unix socket (SCM_RIGHTS).
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    clawkeep_shim::fdpass::send_with_fds(sock, b"f", &[fd])
}

/// Receives one descriptor; `Ok(None)` when the peer closed first.
pub fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let (n, mut fds) = clawkeep_shim::fdpass::recv_with_fds(sock, &mut byte)?;
    Ok(if n == 0 { None } else { fds.pop() })
}

/// The user's terminal in raw mode for as long as this lives.
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    pub fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: termios is plain data; tcgetattr/tcsetattr on a tty fd.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) < 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(fd, libc::TCSANOW, &raw);
            Some(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes saved in enter().
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl flag manipulation on our own descriptor.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// What a prompt needs to be read as written, without clearing the
/// screen: SGR reset, default colours and palette restored (OSC 110, 111,
/// 104: the agent could have made the default foreground the background),
/// G0 = ASCII and shifted in, cursor shown, autowrap on, insert mode off.
const TERMINAL_RESET: &str = "\x1b[0m\x1b]110\x1b\\\x1b]111\x1b\\\x1b]104\x1b\\\x1b(B\x0f\x1b[?25h\x1b[?7h\x1b[4l";

/// Copies the user's keystrokes to the pty master and the master's output
/// to the user's terminal. Non-blocking towards the jail, so an agent that
/// stops reading cannot stall the helper's signal and timeout handling.
#[derive(Debug)]
pub struct Relay {
    master: OwnedFd,
    out: RawFd,
    stdin_open: bool,
    master_open: bool,
    pending: Vec<u8>,
    _raw: Option<RawMode>,
    /// Approval prompts from the launcher: while one is shown, keystrokes
    /// answer it instead of reaching the agent.
    prompts: Option<OwnedFd>,
    queue: std::collections::VecDeque<(i64, String)>,
    showing: Option<i64>,
}

impl Relay {
    pub fn new(master: OwnedFd, prompts: Option<OwnedFd>) -> Relay {
        set_nonblocking(&master);
        // SAFETY: isatty only inspects the descriptor.
        let out = unsafe {
            if libc::isatty(1) == 1 {
                1
            } else if libc::isatty(2) == 1 {
                2
            } else {
                -1
            }
        };
        Relay {
            master,
            out,
            stdin_open: true,
            master_open: true,
            pending: Vec::new(),
            _raw: RawMode::enter(0),
            prompts,
            queue: Default::default(),
            showing: None,
        }
    }

    /// Poll entries for stdin, the master and the prompt channel.
    pub fn poll_fds(&self) -> [libc::pollfd; 3] {
        // While a prompt is shown, keystrokes answer it (so stdin is read
        // even when the agent is not reading its own), and the agent's
        // output waits in the pty, unread even when it hangs up: nothing it
        // prints can cover the prompt or pose as one.
        let showing = self.showing.is_some();
        let stdin = if self.stdin_open && (self.pending.is_empty() || showing) { 0 } else { -1 };
        let mut ev = libc::POLLIN;
        if !self.pending.is_empty() {
            ev |= libc::POLLOUT;
        }
        let master = if self.master_open && !showing { self.master.as_raw_fd() } else { -1 };
        let prompts = self.prompts.as_ref().map_or(-1, |p| p.as_raw_fd());
        [
            libc::pollfd { fd: stdin, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: master, events: ev, revents: 0 },
            libc::pollfd { fd: prompts, events: libc::POLLIN, revents: 0 },
        ]
    }

    /// Keystrokes and output first, as they were meant when polled, then a
    /// new prompt: a key pressed before the prompt showed never answers it,
    /// and output read in this round never lands after it.
    pub fn handle(&mut self, fds: &[libc::pollfd; 3]) {
        let mut buf = [0u8; 8192];
        if fds[0].revents != 0 {
            match crate::sys::read_some(0, &mut buf) {
                Ok(0) | Err(_) => self.stdin_open = false,
                Ok(n) => match self.showing {
                    Some(id) => self.answer(id, buf[0]),
                    None => self.pending.extend_from_slice(&buf[..n]),
                },
            }
        }
        if fds[1].revents & libc::POLLOUT != 0 && !self.pending.is_empty() {
            // SAFETY: pending is valid for its length.
            let n = unsafe { libc::write(self.master.as_raw_fd(), self.pending.as_ptr().cast(), self.pending.len()) };
            if n > 0 {
                self.pending.drain(..n as usize);
            }
        }
        if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            self.pump_output();
        }
        if fds[2].revents != 0 {
            self.read_prompt();
        }
    }

    /// Copies what the master has now; marks it closed on EIO (no slave).
    fn pump_output(&mut self) {
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                if self.out >= 0 {
                    let _ = crate::sys::write_all(self.out, &buf[..n as usize]);
                }
                continue;
            }
            if n == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                self.master_open = false;
            }
            return;
        }
    }

    /// After the agent is gone: flush whatever output is still buffered.
    pub fn drain(&mut self) {
        if self.master_open {
            self.pump_output();
        }
    }

    fn say(&self, text: &str) {
        if self.out >= 0 {
            let _ = crate::sys::write_all(self.out, text.as_bytes());
        }
    }

    fn read_prompt(&mut self) {
        let Some(p) = &self.prompts else { return };
        let mut buf = [0u8; 4096];
        // SAFETY: buf is valid; one packet per message.
        let n = unsafe { libc::recv(p.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            self.prompts = None;
            return;
        }
        match serde_json::from_slice::<crate::protocol::PromptMsg>(&buf[..n as usize]) {
            Ok(crate::protocol::PromptMsg::Ask { id, text }) => self.queue.push_back((id, text)),
            Ok(crate::protocol::PromptMsg::Cancel { id }) => {
                self.queue.retain(|(q, _)| *q != id);
                if self.showing == Some(id) {
                    self.showing = None;
                    self.say("(answered elsewhere)\r\n");
                }
            }
            _ => {}
        }
        self.show_next();
    }

    fn show_next(&mut self) {
        if self.showing.is_some() {
            return;
        }
        if let Some((id, text)) = self.queue.pop_front() {
            self.showing = Some(id);
            // Attributes, character set and cursor the agent may have
            // changed (invisible text, line drawing) are reset first.
            self.say(&format!(
                "{TERMINAL_RESET}\r\n[clawkeep] approve #{id}: {text}? [y] once  [s] session  [n] deny  [Enter] leave queued: "
            ));
        }
    }

    fn answer(&mut self, id: i64, key: u8) {
        let key = match key {
            b'y' | b'Y' => 'y',
            b's' | b'S' => 's',
            b'n' | b'N' => 'n',
            b'\r' | b'\n' => 'q',
            _ => return,
        };
        self.say(&format!("{key}\r\n"));
        self.showing = None;
        if key != 'q' {
            if let (Some(p), Ok(msg)) = (&self.prompts, serde_json::to_vec(&crate::protocol::PromptMsg::Answer { id, key })) {
                // SAFETY: msg is valid; one packet per message.
                unsafe { libc::send(p.as_raw_fd(), msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
            }
        }
        self.show_next();
    }

    /// Follows the user's terminal size (on SIGWINCH).
    pub fn resize(&self) {
        if let Some(size) = terminal_size(0) {
            set_size(self.master.as_raw_fd(), size);
        }
    }
}
