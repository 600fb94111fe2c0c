//! A minimal HTTP/1.1 client over the gate's Unix socket: enough for the
//! CLI's requests (one request per connection, JSON bodies).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

pub fn call(socket: &Path, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<Response, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("cannot reach {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: clawkeep\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("malformed status line")?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body_text = if chunked { dechunk(rest) } else { rest.to_string() };
    let body = serde_json::from_str(&body_text).unwrap_or(serde_json::Value::Null);
    Ok(Response { status, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The error message of a failed call.
pub fn error_of(r: &Response) -> String {
    r.body.get("error").and_then(|e| e.as_str()).map_or_else(|| format!("HTTP {}", r.status), str::to_owned)
}
