//! A command's stdin: the bounded queue between the host's Stdin frames
//! and the command's pipe or terminal.
//!
//! Stdin is flow-controlled (see proto.rs): a command holds at most
//! [`proto::STDIN_WINDOW`] bytes of the host's Stdin in the guest, queued
//! for its pipe; each chunk written into the pipe is credited back to the
//! host, and bytes beyond the window are dropped, so a command that never
//! reads its stdin cannot make pid 1 grow. On a terminal the same queue
//! feeds the pty's master: what the command has not read stays in the
//! window (plus the terminal's own input buffer).

use crate::exec::{send, Out};
use clawkeep_guest::proto::{self, Message};
use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Stdin bytes one command holds in the guest: admitted from the host but
/// not yet written into its pipe. Never more than `limit`.
#[derive(Debug)]
struct Window {
    limit: u32,
    queued: u32,
    /// An overrun was reported once; later ones are dropped silently (a
    /// misbehaving host must not flood the console).
    overrun_reported: bool,
}

impl Window {
    fn new(limit: u32) -> Window {
        Window { limit, queued: 0, overrun_reported: false }
    }

    /// Admits what fits of `n` arriving bytes; returns how many (the
    /// caller drops the rest).
    fn admit(&mut self, n: usize) -> usize {
        let room = self.limit.saturating_sub(self.queued);
        let kept = u32::try_from(n).unwrap_or(u32::MAX).min(room);
        self.queued += kept;
        kept as usize
    }

    /// `n` admitted bytes reached the pipe.
    fn written(&mut self, n: usize) {
        self.queued = self.queued.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

/// One command's stdin: chunks queued for a feed thread that writes them
/// into the pipe, bounded by a [`Window`].
pub(crate) struct StdinQueue {
    tx: Sender<Vec<u8>>,
    window: Arc<Mutex<Window>>,
}

impl StdinQueue {
    /// Starts the feed thread for `pipe`; it credits `stream` on `out`
    /// when the host takes credit (else nothing bounds the queue: a host
    /// built before flow control never waits for credit).
    pub(crate) fn start(out: Out, stream: u32, pipe: File, credit: bool) -> StdinQueue {
        let (tx, rx) = mpsc::channel();
        let window = Arc::new(Mutex::new(Window::new(if credit { proto::STDIN_WINDOW } else { u32::MAX })));
        let w = window.clone();
        std::thread::spawn(move || feed(out, stream, pipe, rx, w, credit));
        StdinQueue { tx, window }
    }

    /// Queues what the window admits of `data` (empty = EOF, always queued).
    pub(crate) fn push(&self, stream: u32, mut data: Vec<u8>) {
        if !data.is_empty() {
            // A poisoned window admits nothing: fail closed.
            let Ok(mut w) = self.window.lock() else { return };
            let kept = w.admit(data.len());
            if kept < data.len() {
                if !std::mem::replace(&mut w.overrun_reported, true) {
                    eprintln!(
                        "clawkeep-guest: stream {stream}: the host sent stdin beyond the {}-byte window; the excess is dropped",
                        w.limit
                    );
                }
                if kept == 0 {
                    // Never forwarded as an empty chunk: that would be EOF.
                    return;
                }
                data.truncate(kept);
            }
        }
        // Fails only once the feed thread ended (EOF or a closed pipe):
        // nothing reads stdin any more, and no credit is owed.
        let _ = self.tx.send(data);
    }
}

/// Writes queued chunks into the pipe (or the terminal's master) until EOF
/// or a write error (the command closed its stdin or exited: a master's
/// write fails with EIO once no slave is open), crediting each written
/// chunk. EOF only stops the typing on a terminal, which has no EOF.
fn feed(out: Out, stream: u32, mut to: File, rx: Receiver<Vec<u8>>, window: Arc<Mutex<Window>>, credit: bool) {
    while let Ok(d) = rx.recv() {
        if d.is_empty() || to.write_all(&d).is_err() {
            break;
        }
        // The window shrinks before the credit is sent, so the host's next
        // chunk (sent against this credit) always finds room.
        if let Ok(mut w) = window.lock() {
            w.written(d.len());
        }
        if credit {
            send(&out, stream, Message::StdinCredit { bytes: u32::try_from(d.len()).unwrap_or(u32::MAX) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{pipe, raw};
    use std::io::Read;

    #[test]
    fn the_window_admits_up_to_its_limit_and_reopens_as_bytes_are_written() {
        let mut w = Window::new(10);
        assert_eq!(w.admit(4), 4);
        assert_eq!(w.admit(8), 6, "only what fits");
        assert_eq!(w.admit(1), 0, "full");
        w.written(4);
        assert_eq!(w.admit(5), 4);
        w.written(100);
        assert_eq!(w.queued, 0, "more written than queued saturates, never wraps");
        assert_eq!(w.admit(usize::MAX), 10);
    }

    #[test]
    fn a_stdin_nobody_reads_holds_at_most_the_window_and_credits_what_it_writes() {
        let [r, w] = pipe().unwrap();
        // The smallest pipe (one page), so the window is what bounds.
        // SAFETY: fcntl on a pipe we own; no pointers.
        assert!(unsafe { libc::fcntl(raw(&w), libc::F_SETPIPE_SZ, 4096) } > 0);
        let [credits_r, credits_w] = pipe().unwrap();
        let q = StdinQueue::start(Arc::new(Mutex::new(File::from(credits_w))), 2, File::from(w), true);
        let (mut r, mut credits_r, win) = (File::from(r), File::from(credits_r), proto::STDIN_WINDOW as usize);
        let mut credit = || proto::read_frame(&mut credits_r).unwrap().map(|f| (f.stream, Message::from_frame(f).unwrap()));
        q.push(2, vec![1; win + 100]);
        // The feed is stuck on the full pipe: all of this is beyond the window.
        q.push(2, vec![2; 10]);
        let mut got = vec![0; win];
        r.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == 1));
        assert_eq!(credit(), Some((2, Message::StdinCredit { bytes: proto::STDIN_WINDOW })));
        // Written and credited: the window is open again.
        q.push(2, vec![3; 10]);
        q.push(2, Vec::new());
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, [3; 10], "the excess was dropped, and never became an early EOF");
        assert_eq!(credit(), Some((2, Message::StdinCredit { bytes: 10 })));
        assert_eq!(credit(), None, "EOF ends the feed and earns no credit");
    }

    #[test]
    fn a_host_without_credit_gets_no_credit_frames_and_loses_nothing() {
        let [r, w] = pipe().unwrap();
        let [credits_r, credits_w] = pipe().unwrap();
        let q = StdinQueue::start(Arc::new(Mutex::new(File::from(credits_w))), 4, File::from(w), false);
        let big = proto::STDIN_WINDOW as usize * 2;
        q.push(4, vec![7; big]);
        q.push(4, Vec::new());
        drop(q);
        let mut got = Vec::new();
        File::from(r).read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), big, "an old host's stdin is not cut at the window");
        let mut credits = Vec::new();
        File::from(credits_r).read_to_end(&mut credits).unwrap();
        assert!(credits.is_empty(), "an old host would end the channel on a StdinCredit frame");
    }
}
