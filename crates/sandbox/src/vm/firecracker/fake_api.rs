//! A fake Firecracker API server for tests: a thread on a Unix socket that
//! records each request and answers what the test's function says.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: String,
}

pub struct FakeApi {
    pub socket: PathBuf,
    pub log: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeApi {
    /// Serves on `<dir>/api.sock`; `answer` gives status and body per request.
    pub fn start(dir: &Path, answer: impl Fn(&Recorded) -> (u16, String) + Send + 'static) -> Self {
        let socket = dir.join("api.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake api");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).expect("header");
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some((n, v)) = h.split_once(':') {
                        if n.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().expect("length");
                        }
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).expect("body");
                let rec = Recorded { method, path, body: String::from_utf8(body).expect("utf8") };
                let (status, out) = answer(&rec);
                log2.lock().expect("lock").push(rec);
                // Like Firecracker: 204 carries no body and no Content-Length.
                let resp = if status == 204 {
                    "HTTP/1.1 204 No Content\r\n\r\n".to_string()
                } else {
                    format!("HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{out}", out.len())
                };
                let _ = conn.write_all(resp.as_bytes());
            }
        });
        Self { socket, log }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().expect("lock").clone()
    }
}

/// Answers like an idle Firecracker: InstanceInfo on `GET /`, 204 otherwise.
pub fn firecracker_like(r: &Recorded) -> (u16, String) {
    if r.method == "GET" && r.path == "/" {
        (200, r#"{"app_name":"Firecracker","id":"t","state":"Not started","vmm_version":"1.10.0"}"#.into())
    } else {
        (204, String::new())
    }
}
