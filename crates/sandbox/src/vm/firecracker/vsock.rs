//! The guest channel: Firecracker's hybrid vsock over a Unix socket
//! (docs/vsock.md).
//!
//! Host-initiated: connect to `uds_path`, send `CONNECT <port>\n`, read
//! `OK <host port>\n`; from then on the stream is the guest's socket.
//! Firecracker closes the connection when nothing in the guest listens on
//! the port, which `connect` reports as `VsockRefused`.
//!
//! Guest-initiated: Firecracker connects to `<uds_path>_<port>` on the host,
//! which `listen` binds.

use super::error::{FirecrackerError, Result};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest acknowledgement line accepted ("OK 4294967295\n" is 14 bytes).
const MAX_ACK: usize = 64;

/// Connects to guest `port` through the vsock Unix socket `uds`. `timeout`
/// bounds the handshake; the returned stream has no timeouts set.
pub fn connect(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream> {
    let io_err = |source| FirecrackerError::VsockIo { uds: uds.to_path_buf(), port, source };
    let mut s = UnixStream::connect(uds).map_err(io_err)?;
    s.set_read_timeout(Some(timeout)).map_err(io_err)?;
    s.set_write_timeout(Some(timeout)).map_err(io_err)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).map_err(io_err)?;
    // Byte by byte: the guest may write right after the ack, and those bytes
    // belong to the caller, not to a buffer dropped here.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) => return Err(FirecrackerError::VsockRefused { uds: uds.to_path_buf(), port }),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < MAX_ACK => line.push(byte[0]),
            Ok(_) => return Err(handshake(uds, port, &line)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(FirecrackerError::VsockRefused { uds: uds.to_path_buf(), port })
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    let ok = std::str::from_utf8(&line).ok().and_then(|l| l.strip_prefix("OK ")).is_some_and(|p| p.trim().parse::<u32>().is_ok());
    if !ok {
        return Err(handshake(uds, port, &line));
    }
    s.set_read_timeout(None).map_err(io_err)?;
    s.set_write_timeout(None).map_err(io_err)?;
    Ok(s)
}

fn handshake(uds: &Path, port: u32, line: &[u8]) -> FirecrackerError {
    FirecrackerError::VsockHandshake { uds: uds.to_path_buf(), port, answer: String::from_utf8_lossy(line).into_owned() }
}

/// Retries `connect` until the guest listens on `port` or `deadline`
/// passes (the guest agent starts listening some time after boot).
pub fn connect_until(uds: &Path, port: u32, deadline: Instant) -> Result<UnixStream> {
    let mut delay = Duration::from_millis(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        match connect(uds, port, left) {
            Ok(s) => return Ok(s),
            Err(e @ (FirecrackerError::VsockRefused { .. } | FirecrackerError::VsockIo { .. })) => {
                if Instant::now() + delay >= deadline {
                    return Err(e);
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Where Firecracker forwards guest-initiated connections to `port`.
pub fn listener_path(uds: &Path, port: u32) -> PathBuf {
    let mut p = uds.as_os_str().to_owned();
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

/// Binds the listener for guest-initiated connections to `port`.
pub fn listen(uds: &Path, port: u32) -> Result<UnixListener> {
    let path = listener_path(uds, port);
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path).map_err(|source| FirecrackerError::VsockIo { uds: path, port, source })
}

#[cfg(test)]
#[path = "vsock_tests.rs"]
mod tests;
