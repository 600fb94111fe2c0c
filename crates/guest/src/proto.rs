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

use std::fmt;
use std::io::{self, Read, Write};

mod message;
pub use message::{ExecRequest, ExitStatus, GateSetup, GatedExitStatus, GatedJob, HealthInfo, Message, ReadyInfo, Service, TtySize};

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

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
