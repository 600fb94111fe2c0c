//! Frames over an async Unix stream, with the descriptors of the first one.

use clawkeep_shim::{fdpass, frame, FrameError, Reply, Request};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

#[derive(Debug)]
pub enum ConnError {
    Io(io::Error),
    Frame(FrameError),
    Closed,
    Stalled,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Frame(e) => write!(f, "{e}"),
            ConnError::Closed => write!(f, "the client disconnected"),
            ConnError::Stalled => write!(f, "the client stalled before sending a whole request"),
        }
    }
}

/// One shim connection.
#[derive(Debug)]
pub struct Conn {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: UnixStream) -> Self {
        Conn { stream, buf: Vec::new() }
    }

    /// Reads the first request and the descriptors sent with it, within
    /// `deadline` (a client that stalls is dropped).
    pub async fn first_request(&mut self, deadline: Duration) -> Result<(Request, Vec<OwnedFd>), ConnError> {
        tokio::time::timeout(deadline, self.read_with_fds()).await.map_err(|_| ConnError::Stalled)?
    }

    async fn read_with_fds(&mut self) -> Result<(Request, Vec<OwnedFd>), ConnError> {
        let mut fds = Vec::new();
        loop {
            match frame::decode::<Request>(&self.buf) {
                Ok((req, used)) => {
                    self.buf.drain(..used);
                    return Ok((req, fds));
                }
                Err(FrameError::Incomplete) => {}
                Err(e) => return Err(ConnError::Frame(e)),
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let fd = self.stream.as_raw_fd();
            let (n, got) = loop {
                self.stream.readable().await.map_err(ConnError::Io)?;
                match self.stream.try_io(Interest::READABLE, || fdpass::recv_with_fds(fd, &mut chunk)) {
                    Ok(x) => break x,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(ConnError::Io(e)),
                }
            };
            if n == 0 {
                return Err(ConnError::Closed);
            }
            // Descriptors come once, three of them, with the request's
            // first bytes; more would pile up in the gate until it could
            // open nothing (its store, its operator socket) at all.
            if !got.is_empty() && (!fds.is_empty() || got.len() > fdpass::MAX_FDS) {
                return Err(ConnError::Io(io::Error::new(io::ErrorKind::InvalidData, "descriptors sent more than once, or too many")));
            }
            fds.extend(got);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the next frame (no descriptors expected).
    pub async fn next(&mut self) -> Result<Request, ConnError> {
        loop {
            match frame::decode::<Request>(&self.buf) {
                Ok((req, used)) => {
                    self.buf.drain(..used);
                    return Ok(req);
                }
                Err(FrameError::Incomplete) => {}
                Err(e) => return Err(ConnError::Frame(e)),
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.map_err(ConnError::Io)?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn send(&mut self, reply: &Reply) -> io::Result<()> {
        self.stream.write_all(&frame::encode(reply)).await
    }
}
