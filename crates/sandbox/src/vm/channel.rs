//! The host end of the guest channel (crates/guest/src/proto.rs) over the
//! Unix socket QEMU serves the virtio-serial port on.
//!
//! One reader thread routes the guest's frames: stream 0 to the control
//! queue, exec streams to their owner, odd (guest-opened) streams to a
//! relay. What the guest sends is bounded on the host: one frame is at
//! most 1 MiB, an exec stream queues at most [`STREAM_QUEUE`] frames (then
//! the reader waits, which stalls the guest's writes: backpressure), and
//! control messages nobody asked for are dropped once [`CONTROL_QUEUE`]
//! are waiting. Relay streams are served in `relay.rs`; `gate` ones are
//! special (`gate_relay.rs`): their first frame gets placeholder
//! descriptors, and the GatedExit the guest sends on them goes to whoever
//! ran [`Channel::gated`].
//!
//! Stdin is flow-controlled when the guest's Ready announces a window
//! (proto.rs): an exec stream starts with that much credit, the reader
//! adds each StdinCredit the guest sends, and `stdin()` sends only against
//! credit, waiting for more when it runs out. The wait always ends: when
//! the command's Exit arrives, its [`ExecStream`] is dropped or the channel
//! closes, a waiting `stdin()` returns `Err(ChannelError::Closed)`. A
//! window of 0 (a guest older than flow control) means no limit.
//!
//! Terminals: a command gets one only when its request asks and the
//! guest's Ready said it takes terminals; otherwise the request goes out
//! without, and its stream never sends Resize (a guest built before
//! terminals would lose the channel's framing on that unknown frame).

#[cfg(test)]
use super::credit::STDIN_CHUNK;
use super::credit::{close_credit, send_stdin, Credit, Credits};
use super::gate_relay::GateStreams;
pub use super::relay::MAX_RELAYS;
use super::relay::{relay, RelayConn};
use clawkeep_guest::proto::{self, ExecRequest, GatedJob, Kind, Message, ReadyInfo, Service, TtySize};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot connect to the guest channel {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("cannot write to the guest channel: {0}")]
    Write(std::io::Error),
    #[error("the guest channel closed")]
    Closed,
    #[error("the guest stopped reading its channel for {0:?}; the channel is closed and the VM will be stopped")]
    Stalled(Duration),
    #[error("the guest sent a bad frame: {0}")]
    Protocol(String),
    #[error("no answer from the guest within {0:?}")]
    Timeout(Duration),
}

/// Frames one exec stream may have queued before the reader waits.
pub const STREAM_QUEUE: usize = 64;
/// A guest that reads nothing for this long has its channel closed: no
/// send (a Shutdown, a forwarded signal) blocks the host longer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Unread control messages kept; later ones are dropped.
pub const CONTROL_QUEUE: usize = 16;

type Routes = Arc<Mutex<HashMap<u32, SyncSender<Message>>>>;

/// A connected channel; cheap to clone (all clones share the socket).
#[derive(Clone, Debug)]
pub struct Channel {
    writer: Arc<Mutex<UnixStream>>,
    routes: Routes,
    control: Arc<Mutex<Receiver<Message>>>,
    next: Arc<AtomicU32>,
    /// The reader ended (the guest hung up or sent a frame it could not
    /// decode): a stream opened from now on would wait forever.
    reader_done: Arc<AtomicBool>,
    /// The guest's stdin window, from its Ready; 0 = no flow control.
    stdin_window: Arc<AtomicU32>,
    /// The guest takes terminals (and Resize), from its Ready.
    tty: Arc<AtomicBool>,
    credits: Credits,
    /// Which guest `gate` stream each placeholder descriptor stands for.
    pub gate_streams: GateStreams,
}

impl Channel {
    /// Connects to `path`, retrying until `deadline` while `alive()` holds
    /// (QEMU creates the socket a moment after it starts).
    pub fn connect(
        path: &Path,
        deadline: Instant,
        alive: impl Fn() -> bool,
        relays: HashMap<Service, PathBuf>,
    ) -> Result<Channel, ChannelError> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline || !alive() => return Err(ChannelError::Connect { path: path.into(), source: e }),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        Channel::from_stream(stream, relays).map_err(|e| ChannelError::Connect { path: path.into(), source: e })
    }

    /// A channel over an already connected stream (e.g. Firecracker's vsock
    /// after its `CONNECT` handshake).
    pub fn from_stream(stream: UnixStream, relays: HashMap<Service, PathBuf>) -> std::io::Result<Channel> {
        Channel::with_write_timeout(stream, relays, WRITE_TIMEOUT)
    }

    fn with_write_timeout(stream: UnixStream, relays: HashMap<Service, PathBuf>, limit: Duration) -> std::io::Result<Channel> {
        stream.set_write_timeout(Some(limit))?;
        let reader = stream.try_clone()?;
        let (ctl_tx, ctl_rx) = mpsc::sync_channel(CONTROL_QUEUE);
        let ch = Channel {
            writer: Arc::new(Mutex::new(stream)),
            routes: Arc::default(),
            control: Arc::new(Mutex::new(ctl_rx)),
            next: Arc::new(AtomicU32::new(2)),
            reader_done: Arc::default(),
            stdin_window: Arc::default(),
            tty: Arc::default(),
            credits: Arc::default(),
            gate_streams: GateStreams::default(),
        };
        let (routes, me) = (ch.routes.clone(), ch.clone());
        std::thread::spawn(move || read_loop(reader, routes, ctl_tx, me, relays));
        Ok(ch)
    }

    pub fn send(&self, stream: u32, msg: Message) -> Result<(), ChannelError> {
        let bytes = msg.into_frame(stream).encode().map_err(|e| ChannelError::Protocol(e.to_string()))?;
        let mut w = self.writer.lock().map_err(|_| ChannelError::Closed)?;
        w.write_all(&bytes).map_err(|e| {
            // A frame may be half written: nothing more may follow it. The
            // guest sees the channel end; later sends fail at once.
            let _ = w.shutdown(std::net::Shutdown::Write);
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    ChannelError::Stalled(w.write_timeout().ok().flatten().unwrap_or(WRITE_TIMEOUT))
                }
                _ => ChannelError::Write(e),
            }
        })
    }

    /// The next control-stream message (Ready, HealthOk, Error).
    pub fn control(&self, timeout: Duration) -> Result<Message, ChannelError> {
        let rx = self.control.lock().map_err(|_| ChannelError::Closed)?;
        match rx.recv_timeout(timeout) {
            Ok(m) => Ok(m),
            Err(RecvTimeoutError::Timeout) => Err(ChannelError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(ChannelError::Closed),
        }
    }

    /// Waits for the guest's Ready, polling `alive()` so a VM that died is
    /// noticed at once rather than at the timeout. Commands started after
    /// it returns get the stdin window the guest announced, and terminals
    /// when it takes them.
    pub fn wait_ready(&self, timeout: Duration, alive: impl Fn() -> bool) -> Result<ReadyInfo, ChannelError> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout(timeout));
            }
            match self.control(left.min(Duration::from_millis(200))) {
                Ok(Message::Ready(r)) => {
                    self.stdin_window.store(r.stdin_window, Ordering::Relaxed);
                    self.tty.store(r.tty, Ordering::Relaxed);
                    return Ok(r);
                }
                Ok(_) => {}
                Err(ChannelError::Timeout(_)) if alive() => {}
                Err(ChannelError::Timeout(_)) => return Err(ChannelError::Closed),
                Err(e) => return Err(e),
            }
        }
    }

    /// Routes `stream`'s frames to `tx`, unless the reader already ended.
    fn add_route(&self, stream: u32, tx: SyncSender<Message>) -> Result<(), ChannelError> {
        let mut routes = self.routes.lock().map_err(|_| ChannelError::Closed)?;
        if self.reader_done.load(Ordering::SeqCst) {
            return Err(ChannelError::Closed);
        }
        routes.insert(stream, tx);
        Ok(())
    }

    /// Starts a command; its Started/Stdout/Stderr/Error/Exit arrive on the
    /// returned stream. A terminal is asked for only from a guest that
    /// takes them (see [`ExecStream::tty`]).
    pub fn exec(&self, mut req: ExecRequest) -> Result<ExecStream, ChannelError> {
        // This host takes StdinCredit (the reader below consumes it).
        req.stdin_credit = true;
        if !self.tty.load(Ordering::Relaxed) {
            req.tty = None;
        }
        let tty = req.tty.is_some();
        let id = self.next.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(STREAM_QUEUE);
        self.add_route(id, tx)?;
        let credit = match self.stdin_window.load(Ordering::Relaxed) {
            0 => None,
            window => {
                let c = Arc::new(Credit::new(window));
                let mut t = self.credits.lock().map_err(|_| ChannelError::Closed)?;
                if t.closed {
                    c.close();
                } else {
                    t.streams.insert(id, c.clone());
                }
                Some(c)
            }
        };
        // Built before the Exec goes out, so a failed send drops it and
        // with it the route and the credit.
        let stream = ExecStream { id, rx, ch: self.clone(), credit, tty };
        self.send(id, Message::Exec(req))?;
        Ok(stream)
    }

    /// Runs an approved job for the shim on guest `gate` stream `stream`;
    /// its Error/GatedExit arrive on the returned stream. It execs only
    /// after `send(stream, GatedRelease)`.
    pub fn gated(&self, stream: u32, job: GatedJob) -> Result<ExecStream, ChannelError> {
        let (tx, rx) = mpsc::sync_channel(STREAM_QUEUE);
        self.add_route(stream, tx)?;
        self.send(stream, Message::GatedExec(job))?;
        // A gated job uses the shim's own stdio: no Stdin, no credit.
        Ok(ExecStream { id: stream, rx, ch: self.clone(), credit: None, tty: false })
    }
}

/// One running command's stream.
#[derive(Debug)]
pub struct ExecStream {
    pub id: u32,
    rx: Receiver<Message>,
    ch: Channel,
    /// None: the guest has no stdin window (no flow control).
    credit: Option<Arc<Credit>>,
    /// The command runs on a terminal.
    tty: bool,
}

impl ExecStream {
    /// Whether the command runs on a terminal: asked for, and the guest
    /// takes terminals.
    pub fn tty(&self) -> bool {
        self.tty
    }

    /// The next message; `Err(Closed)` when the channel ended first.
    pub fn recv(&self) -> Result<Message, ChannelError> {
        self.rx.recv().map_err(|_| ChannelError::Closed)
    }

    pub fn recv_timeout(&self, t: Duration) -> Result<Option<Message>, ChannelError> {
        match self.rx.recv_timeout(t) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(ChannelError::Closed),
        }
    }

    /// Sends stdin in frame-sized pieces; an empty slice is EOF. Blocks
    /// while the guest grants no credit (its command does not read);
    /// `Err(Closed)` when the stream ends first (see the module docs).
    /// Credit arrives through the reader, which waits while this stream's
    /// queue is full: receive from another thread meanwhile (as with a
    /// child's stdin and stdout pipes).
    pub fn stdin(&self, data: &[u8]) -> Result<(), ChannelError> {
        send_stdin(&self.ch, self.id, self.credit.as_deref(), data)
    }

    pub fn signal(&self, signo: i32) -> Result<(), ChannelError> {
        self.ch.send(self.id, Message::Signal { signo })
    }

    /// A handle that can send stdin, signals and resizes from another thread.
    pub fn sender(&self) -> StreamSender {
        StreamSender { id: self.id, ch: self.ch.clone(), credit: self.credit.clone(), tty: self.tty }
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        if let Ok(mut r) = self.ch.routes.lock() {
            r.remove(&self.id);
        }
        // Wakes a StreamSender waiting for credit: nobody reads this
        // stream's frames any more, credit included.
        if self.credit.is_some() {
            close_credit(&self.ch.credits, self.id);
        }
    }
}

#[derive(Debug, Clone)]
pub struct StreamSender {
    id: u32,
    ch: Channel,
    credit: Option<Arc<Credit>>,
    tty: bool,
}

impl StreamSender {
    /// As [`ExecStream::stdin`].
    pub fn stdin(&self, data: &[u8]) -> Result<(), ChannelError> {
        send_stdin(&self.ch, self.id, self.credit.as_deref(), data)
    }
    pub fn signal(&self, signo: i32) -> Result<(), ChannelError> {
        self.ch.send(self.id, Message::Signal { signo })
    }

    /// Resizes the command's terminal (its foreground process group gets
    /// SIGWINCH); nothing is sent for a command without one.
    pub fn resize(&self, size: TtySize) -> Result<(), ChannelError> {
        if !self.tty {
            return Ok(());
        }
        self.ch.send(self.id, Message::Resize(size))
    }
}

fn read_loop(mut r: UnixStream, routes: Routes, control: SyncSender<Message>, ch: Channel, relays: HashMap<Service, PathBuf>) {
    let mut relay_conns: HashMap<u32, RelayConn> = HashMap::new();
    while let Ok(Some(frame)) = proto::read_frame(&mut r) {
        let (stream, kind) = (frame.stream, frame.kind);
        let Ok(msg) = Message::from_frame(frame) else { continue };
        // Credit is the senders' business, never a message for the
        // stream's reader; credit for a stream without any is dropped.
        if let Message::StdinCredit { bytes } = msg {
            if let Some(c) = ch.credits.lock().ok().and_then(|t| t.streams.get(&stream).cloned()) {
                c.grant(bytes);
            }
            continue;
        }
        if stream % 2 == 1 && !matches!(kind, Kind::GatedExit | Kind::Error) {
            relay(&ch, &relays, &mut relay_conns, stream, msg);
            continue;
        }
        if stream == 0 {
            let _ = control.try_send(msg);
            continue;
        }
        let tx = routes.lock().ok().and_then(|r| r.get(&stream).cloned());
        if let Some(tx) = tx {
            let _ = tx.send(msg);
        }
        if matches!(kind, Kind::Exit | Kind::GatedExit) {
            if let Ok(mut r) = routes.lock() {
                r.remove(&stream);
            }
            close_credit(&ch.credits, stream);
        }
    }
    // Set before the routes are cleared: a route added after the clear
    // sees it (both sides take the routes lock) and is refused.
    ch.reader_done.store(true, Ordering::SeqCst);
    // Dropping every route sender ends every waiting ExecStream; closing
    // every credit ends every waiting stdin sender; shutting every relay
    // connection down ends its reader thread.
    if let Ok(mut r) = routes.lock() {
        r.clear();
    }
    if let Ok(mut t) = ch.credits.lock() {
        t.closed = true;
        for (_, c) in t.streams.drain() {
            c.close();
        }
    }
    for c in relay_conns.values() {
        let _ = c.sock().shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
