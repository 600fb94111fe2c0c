//! The host<->guest channel: multiplexed frames over one byte stream (a
//! virtio-serial port in the guest, a Unix socket on the host).
//!
//! ```text
//! u32 BE length | u8 kind | u32 BE stream | payload
//! ```
//!
//! `length` counts kind + stream + payload (so it is at least 5) and is at
//! most [`MAX_FRAME`]; a larger one is rejected before anything is
//! allocated. Control payloads are JSON objects; data payloads are raw
//! bytes. Neither side trusts the other's frames: decoding never panics,
//! never allocates more than the length field allows and names what was
//! wrong.
//!
//! Streams: 0 is the control stream (Ready, Health, HealthOk, Shutdown);
//! the host opens exec streams with even ids >= 2; the guest opens relay
//! streams (Open/Data/Close) with odd ids.
//!
//! | kind | value | direction | payload |
//! |---|---|---|---|
//! | Exec | 0x01 | host→guest | JSON [`ExecRequest`] |
//! | Stdin | 0x02 | host→guest | bytes; empty = EOF |
//! | Signal | 0x03 | host→guest | JSON `{"signo": N}` |
//! | Health | 0x04 | host→guest | empty |
//! | Shutdown | 0x05 | host→guest | empty |
//! | GateConfig | 0x06 | host→guest | JSON [`GateSetup`], stream 0, once, before the first Exec |
//! | GatedExec | 0x07 | host→guest | JSON [`GatedJob`], on the gate relay stream |
//! | GatedRelease | 0x08 | host→guest | empty: exec the prepared job |
//! | GatedSignal | 0x09 | host→guest | JSON `{"signo": N}` |
//! | Resize | 0x0A | host→guest | JSON [`TtySize`], on an exec stream with a terminal |
//! | Open | 0x41 | guest→host | JSON `{"service": "proxy"\|"gate"}` |
//! | Data | 0x42 | both | bytes |
//! | Close | 0x43 | both | empty |
//! | Ready | 0x81 | guest→host | JSON [`ReadyInfo`], once, stream 0 |
//! | Started | 0x82 | guest→host | JSON `{"pid": N}` |
//! | Stdout | 0x83 | guest→host | bytes |
//! | Stderr | 0x84 | guest→host | bytes |
//! | Exit | 0x85 | guest→host | JSON [`ExitStatus`] |
//! | HealthOk | 0x86 | guest→host | JSON [`HealthInfo`] |
//! | Error | 0x87 | guest→host | JSON `{"message": "..."}` |
//! | GateReady | 0x88 | guest→host | JSON `{"masked": N}`, stream 0: masks in place |
//! | GatedExit | 0x89 | guest→host | JSON [`GatedExitStatus`], on the gate relay stream |
//! | StdinCredit | 0x8A | guest→host | JSON `{"bytes": N}`, on an exec stream |
//!
//! Stdin flow control: a guest whose Ready carries a non-zero
//! `stdin_window` accepts at most that many Stdin bytes per exec stream
//! that it has not yet written into the command's stdin pipe; each write
//! into the pipe is answered with StdinCredit for the bytes written. The
//! host sends Stdin only against credit (it starts with the window), so a
//! command that never reads its stdin costs the guest at most the window
//! (plus the pipe's own buffer); bytes beyond it are dropped. EOF (an empty
//! Stdin) needs no credit. A window of 0 (a guest older than this frame)
//! means no flow control: the host sends without limit.
//!
//! Terminals: an Exec whose `tty` is set runs the command on a pty the
//! guest allocates, of that size: the command's stdin, stdout and stderr
//! are its slave (its controlling terminal), all output arrives as Stdout,
//! Stdin is typed into it (Ctrl-C is the byte 0x03: the guest's line
//! discipline turns it into SIGINT), and Resize changes its size (the
//! command's foreground process group gets SIGWINCH). EOF on Stdin stops
//! the typing; a terminal has no EOF of its own. A guest announces that it
//! understands this with `tty` in its Ready; the host sends neither a tty
//! nor Resize to one that does not (a guest built before this frame would
//! lose the channel's framing on it).
//!
//! Gated commands: after GateConfig the gated names are the guest's own
//! binary (a shim); a shim's request travels on a guest-opened `gate`
//! relay stream (odd id) to the host's gate, which answers with GatedExec
//! on that same stream id once the policy (or an operator) allows it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Read, Write};

/// Largest value of the length field (kind + stream + payload).
pub const MAX_FRAME: usize = 1 << 20;
/// Bytes before the payload: length, kind, stream.
pub const HEADER: usize = 9;
/// Largest payload that fits in one frame.
pub const MAX_PAYLOAD: usize = MAX_FRAME - 5;
/// The virtio-serial port name the guest serves on.
pub const PORT_NAME: &str = "org.clawkeep.0";
/// Stdin bytes per exec stream the guest holds before they reach the
/// command's pipe: what it announces in [`ReadyInfo::stdin_window`].
pub const STDIN_WINDOW: u32 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Exec = 0x01,
    Stdin = 0x02,
    Signal = 0x03,
    Health = 0x04,
    Shutdown = 0x05,
    GateConfig = 0x06,
    GatedExec = 0x07,
    GatedRelease = 0x08,
    GatedSignal = 0x09,
    Resize = 0x0A,
    Open = 0x41,
    Data = 0x42,
    Close = 0x43,
    Ready = 0x81,
    Started = 0x82,
    Stdout = 0x83,
    Stderr = 0x84,
    Exit = 0x85,
    HealthOk = 0x86,
    Error = 0x87,
    GateReady = 0x88,
    GatedExit = 0x89,
    StdinCredit = 0x8A,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        use Kind::*;
        Some(match v {
            0x01 => Exec,
            0x02 => Stdin,
            0x03 => Signal,
            0x04 => Health,
            0x05 => Shutdown,
            0x06 => GateConfig,
            0x07 => GatedExec,
            0x08 => GatedRelease,
            0x09 => GatedSignal,
            0x0A => Resize,
            0x41 => Open,
            0x42 => Data,
            0x43 => Close,
            0x81 => Ready,
            0x82 => Started,
            0x83 => Stdout,
            0x84 => Stderr,
            0x85 => Exit,
            0x86 => HealthOk,
            0x87 => Error,
            0x88 => GateReady,
            0x89 => GatedExit,
            0x8A => StdinCredit,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub enum ProtoError {
    /// The length field is above [`MAX_FRAME`] or below the 5-byte minimum.
    BadLength(usize),
    /// The stream ended inside a frame.
    Truncated,
    UnknownKind(u8),
    /// A control payload is not the JSON its kind needs.
    Payload {
        kind: Kind,
        message: String,
    },
    Io(io::Error),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::BadLength(n) => write!(f, "frame length {n} is outside 5..={MAX_FRAME}"),
            ProtoError::Truncated => write!(f, "the channel ended inside a frame"),
            ProtoError::UnknownKind(k) => write!(f, "unknown frame kind 0x{k:02x}"),
            ProtoError::Payload { kind, message } => write!(f, "bad {kind:?} payload: {message}"),
            ProtoError::Io(e) => write!(f, "channel I/O: {e}"),
        }
    }
}

impl std::error::Error for ProtoError {}

impl From<io::Error> for ProtoError {
    fn from(e: io::Error) -> Self {
        ProtoError::Io(e)
    }
}

/// One raw frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame's wire bytes; fails only when the payload is too large.
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        let len = 5 + self.payload.len();
        if len > MAX_FRAME {
            return Err(ProtoError::BadLength(len));
        }
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes
/// are needed, else the frame and how many bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtoError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if !(5..=MAX_FRAME).contains(&len) {
        return Err(ProtoError::BadLength(len));
    }
    let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
    let kind = Kind::from_u8(body[0]).ok_or(ProtoError::UnknownKind(body[0]))?;
    let stream = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
    Ok(Some((Frame { kind, stream, payload: body[5..].to_vec() }, 4 + len)))
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Frame>, ProtoError> {
    let mut head = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtoError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        // A bad length is refused before the rest arrives.
        if got >= 4 {
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if !(5..=MAX_FRAME).contains(&len) {
                return Err(ProtoError::BadLength(len));
            }
        }
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let kind = Kind::from_u8(head[4]).ok_or(ProtoError::UnknownKind(head[4]))?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    let mut payload = vec![0u8; len - 5];
    r.read_exact(&mut payload).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { ProtoError::Truncated } else { e.into() })?;
    Ok(Some(Frame { kind, stream, payload }))
}

/// Writes one frame in a single `write_all`, so frames written under one
/// lock never interleave.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> Result<(), ProtoError> {
    w.write_all(&frame.encode()?)?;
    Ok(())
}

/// What the host asks the guest to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory inside the guest [default: /workspace].
    pub cwd: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// The host takes StdinCredit frames. A host built before flow control
    /// would end the channel on one; for it (false, absent) the guest sends
    /// none and queues that command's stdin unbounded, as it used to.
    #[serde(default)]
    pub stdin_credit: bool,
    /// Run on a terminal of this size (see the module docs); None (absent:
    /// a host built before terminals) = pipes.
    #[serde(default)]
    pub tty: Option<TtySize>,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The guest kernel's release (uname -r).
    pub kernel: String,
    pub uptime_ms: u64,
    /// Stdin bytes per exec stream the guest accepts ahead of StdinCredit;
    /// 0 (absent: a guest built before flow control) = no limit.
    #[serde(default)]
    pub stdin_window: u32,
    /// The guest runs commands on a terminal when asked and takes Resize;
    /// false (absent: a guest built before terminals) = it does neither.
    #[serde(default)]
    pub tty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthInfo {
    pub uptime_ms: u64,
    pub mem_available_kb: Option<u64>,
    /// Commands started over the channel that have not exited.
    pub running: u32,
}

/// Which command names the guest masks with its gate shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSetup {
    pub commands: Vec<String>,
}

/// A command the host's gate approved, to run for the shim on this stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatedJob {
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    /// The policy's limit; the host enforces it (GatedSignal SIGKILL).
    pub timeout_ms: Option<u64>,
}

/// How a gated command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatedExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The guest enforces no timeout today: false (the host knows).
    pub timed_out: bool,
    /// Output goes straight to the shim's descriptors, uncounted: None.
    pub bytes_out: Option<u64>,
}

/// A guest-initiated relay: which host service the guest wants to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Proxy,
    Gate,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Exec(ExecRequest),
    Stdin(Vec<u8>),
    Signal { signo: i32 },
    Health,
    Shutdown,
    GateConfig(GateSetup),
    GatedExec(GatedJob),
    GatedRelease,
    GatedSignal { signo: i32 },
    Resize(TtySize),
    Open { service: Service },
    Data(Vec<u8>),
    Close,
    Ready(ReadyInfo),
    Started { pid: i32 },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
    HealthOk(HealthInfo),
    Error { message: String },
    GateReady { masked: u32 },
    GatedExit(GatedExitStatus),
    StdinCredit { bytes: u32 },
}

#[derive(Serialize, Deserialize)]
struct Signo {
    signo: i32,
}
#[derive(Serialize, Deserialize)]
struct Pid {
    pid: i32,
}
#[derive(Serialize, Deserialize)]
struct Msg {
    message: String,
}
#[derive(Serialize, Deserialize)]
struct Masked {
    masked: u32,
}
#[derive(Serialize, Deserialize)]
struct Bytes {
    bytes: u32,
}
#[derive(Serialize, Deserialize)]
struct Svc {
    service: Service,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<'a, T: Deserialize<'a>>(kind: Kind, p: &'a [u8]) -> Result<T, ProtoError> {
    serde_json::from_slice(p).map_err(|e| ProtoError::Payload { kind, message: e.to_string() })
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Exec(_) => Kind::Exec,
            Message::Stdin(_) => Kind::Stdin,
            Message::Signal { .. } => Kind::Signal,
            Message::Health => Kind::Health,
            Message::Shutdown => Kind::Shutdown,
            Message::GateConfig(_) => Kind::GateConfig,
            Message::GatedExec(_) => Kind::GatedExec,
            Message::GatedRelease => Kind::GatedRelease,
            Message::GatedSignal { .. } => Kind::GatedSignal,
            Message::Resize(_) => Kind::Resize,
            Message::Open { .. } => Kind::Open,
            Message::Data(_) => Kind::Data,
            Message::Close => Kind::Close,
            Message::Ready(_) => Kind::Ready,
            Message::Started { .. } => Kind::Started,
            Message::Stdout(_) => Kind::Stdout,
            Message::Stderr(_) => Kind::Stderr,
            Message::Exit(_) => Kind::Exit,
            Message::HealthOk(_) => Kind::HealthOk,
            Message::Error { .. } => Kind::Error,
            Message::GateReady { .. } => Kind::GateReady,
            Message::GatedExit(_) => Kind::GatedExit,
            Message::StdinCredit { .. } => Kind::StdinCredit,
        }
    }

    pub fn into_frame(self, stream: u32) -> Frame {
        let kind = self.kind();
        let payload = match self {
            Message::Exec(r) => json(&r),
            Message::Stdin(d) | Message::Data(d) | Message::Stdout(d) | Message::Stderr(d) => d,
            Message::Signal { signo } => json(&Signo { signo }),
            Message::Health | Message::Shutdown | Message::Close | Message::GatedRelease => Vec::new(),
            Message::GateConfig(g) => json(&g),
            Message::GatedExec(j) => json(&j),
            Message::GatedSignal { signo } => json(&Signo { signo }),
            Message::Resize(s) => json(&s),
            Message::GateReady { masked } => json(&Masked { masked }),
            Message::GatedExit(s) => json(&s),
            Message::Open { service } => json(&Svc { service }),
            Message::Ready(r) => json(&r),
            Message::Started { pid } => json(&Pid { pid }),
            Message::Exit(s) => json(&s),
            Message::HealthOk(h) => json(&h),
            Message::Error { message } => json(&Msg { message }),
            Message::StdinCredit { bytes } => json(&Bytes { bytes }),
        };
        Frame { kind, stream, payload }
    }

    pub fn from_frame(f: Frame) -> Result<Message, ProtoError> {
        let k = f.kind;
        let p = f.payload;
        Ok(match k {
            Kind::Exec => Message::Exec(parse(k, &p)?),
            Kind::Stdin => Message::Stdin(p),
            Kind::Signal => Message::Signal { signo: parse::<Signo>(k, &p)?.signo },
            Kind::Health => Message::Health,
            Kind::Shutdown => Message::Shutdown,
            Kind::GateConfig => Message::GateConfig(parse(k, &p)?),
            Kind::GatedExec => Message::GatedExec(parse(k, &p)?),
            Kind::GatedRelease => Message::GatedRelease,
            Kind::GatedSignal => Message::GatedSignal { signo: parse::<Signo>(k, &p)?.signo },
            Kind::Resize => Message::Resize(parse(k, &p)?),
            Kind::Open => Message::Open { service: parse::<Svc>(k, &p)?.service },
            Kind::Data => Message::Data(p),
            Kind::Close => Message::Close,
            Kind::Ready => Message::Ready(parse(k, &p)?),
            Kind::Started => Message::Started { pid: parse::<Pid>(k, &p)?.pid },
            Kind::Stdout => Message::Stdout(p),
            Kind::Stderr => Message::Stderr(p),
            Kind::Exit => Message::Exit(parse(k, &p)?),
            Kind::HealthOk => Message::HealthOk(parse(k, &p)?),
            Kind::Error => Message::Error { message: parse::<Msg>(k, &p)?.message },
            Kind::GateReady => Message::GateReady { masked: parse::<Masked>(k, &p)?.masked },
            Kind::GatedExit => Message::GatedExit(parse(k, &p)?),
            Kind::StdinCredit => Message::StdinCredit { bytes: parse::<Bytes>(k, &p)?.bytes },
        })
    }
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
