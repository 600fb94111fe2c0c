//! A minimal blocking HTTP/1.1 client over a Unix socket: exactly what
//! Firecracker's API needs (JSON bodies with Content-Length, answers with
//! Content-Length), nothing more. One connection per request, so a request
//! that times out cannot leave a half-read answer for the next one.
//!
//! Bounds: every read and write has a timeout; the header block is capped at
//! `MAX_HEAD` bytes and the body at `MAX_BODY`, so a confused peer cannot make
//! the host allocate without limit.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

/// One parsed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Header names lower-cased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request on a fresh connection to `socket` and reads the answer.
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&[u8]>, timeout: Duration) -> io::Result<Response> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&encode_request(method, path, body))?;
    stream.flush()?;
    read_response(&mut stream)
}

/// The bytes of one request. `Host` is required by HTTP/1.1; Firecracker
/// ignores its value.
pub fn encode_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if let Some(b) = body {
        out.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Parses status line, headers and a Content-Length body from `r`. Bytes
/// after the body are dropped: each connection carries one request.
pub fn read_response(r: &mut impl Read) -> io::Result<Response> {
    let mut reader = BufReader::new(r);
    let mut head_len = 0;
    let mut line = String::new();
    let mut next_line = |reader: &mut BufReader<_>, line: &mut String| -> io::Result<()> {
        line.clear();
        let n = reader.by_ref().take((MAX_HEAD - head_len) as u64).read_line(line)?;
        head_len += n;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the end of the answer's headers"));
        }
        if !line.ends_with('\n') {
            if head_len >= MAX_HEAD {
                return Err(invalid(format!("answer headers longer than {MAX_HEAD} bytes")));
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the middle of a header line"));
        }
        Ok(())
    };

    next_line(&mut reader, &mut line)?;
    let (status, reason) = parse_status_line(line.trim_end())?;
    let mut headers = Vec::new();
    loop {
        next_line(&mut reader, &mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').ok_or_else(|| invalid(format!("malformed header line {l:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut resp = Response { status, reason, headers, body: Vec::new() };
    if resp.header("transfer-encoding").is_some_and(|v| !v.eq_ignore_ascii_case("identity")) {
        return Err(invalid("chunked answers are not supported (Firecracker sends Content-Length)"));
    }
    let len = match resp.header("content-length") {
        Some(v) => v.parse::<usize>().map_err(|_| invalid(format!("bad Content-Length {v:?}")))?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err(invalid(format!("answer body of {len} bytes exceeds {MAX_BODY}")));
    }
    resp.body = vec![0; len];
    reader.read_exact(&mut resp.body)?;
    Ok(resp)
}

fn parse_status_line(line: &str) -> io::Result<(u16, String)> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("not an HTTP/1.x status line: {line:?}")));
    }
    let status = parts.next().and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| invalid(format!("bad status in {line:?}")))?;
    Ok((status, parts.next().unwrap_or_default().to_string()))
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
