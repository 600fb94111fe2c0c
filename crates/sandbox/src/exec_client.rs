//! The launcher's end of the executor channel: submits approved commands
//! to the jail's executor and collects their outcomes. Thread-safe; one
//! reader thread, started with the first job (a run that gates nothing
//! never starts it), dispatches the executor's messages to waiting jobs.

use crate::exec_server::{FromExec, ToExec};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// What a job needs besides the shim's descriptors.
#[derive(Debug, Clone)]
pub struct ExecJob {
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub timeout_ms: Option<u64>,
    /// Relay (and count) stdout/stderr; false passes the shim's terminal.
    pub relay: bool,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub bytes_out: Option<u64>,
}

impl ExecOutcome {
    /// The shim's exit code: the command's, 128+signal, or 124 on timeout.
    pub fn exit_code(&self) -> i32 {
        if self.timed_out {
            124
        } else {
            self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
        }
    }
}

type Waiters = Arc<Mutex<HashMap<u64, Sender<FromExec>>>>;

#[derive(Debug, Clone)]
pub struct ExecClient {
    sock: Arc<OwnedFd>,
    waiters: Waiters,
    next: Arc<AtomicU64>,
    /// Whether the reader thread started (once, at the first job).
    reader: Arc<OnceLock<bool>>,
}

/// A submitted job.
#[derive(Debug)]
pub struct JobHandle {
    id: u64,
    sock: Arc<OwnedFd>,
    rx: Receiver<FromExec>,
    waiters: Waiters,
}

impl ExecClient {
    pub fn new(sock: OwnedFd) -> ExecClient {
        ExecClient { sock: Arc::new(sock), waiters: Arc::default(), next: Arc::new(AtomicU64::new(1)), reader: Arc::default() }
    }

    /// Submits `job` with the shim's stdin, stdout and stderr.
    pub fn submit(&self, job: &ExecJob, stdio: [RawFd; 3]) -> io::Result<JobHandle> {
        let started = self.reader.get_or_init(|| {
            let (s, w) = (self.sock.clone(), self.waiters.clone());
            std::thread::Builder::new().name("clawkeep-exec-reader".into()).spawn(move || read_loop(s.as_raw_fd(), &w)).is_ok()
        });
        if !*started {
            return Err(io::Error::other("the thread that reads the executor's replies could not start"));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let msg = ToExec::Run {
            id,
            command: job.command.clone(),
            args: job.args.clone(),
            cwd: job.cwd.clone(),
            env: job.env.clone(),
            timeout_ms: job.timeout_ms,
            relay: job.relay,
        };
        let bytes = serde_json::to_vec(&msg).map_err(io::Error::other)?;
        clawkeep_shim::fdpass::send_with_fds(self.sock.as_raw_fd(), &bytes, &stdio)?;
        Ok(JobHandle { id, sock: self.sock.clone(), rx, waiters: self.waiters.clone() })
    }
}

fn read_loop(fd: RawFd, waiters: &Waiters) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is valid for its length; one packet per message.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            // The executor is gone: every waiting job learns it.
            waiters.lock().unwrap_or_else(|p| p.into_inner()).clear();
            return;
        }
        let Ok(msg) = serde_json::from_slice::<FromExec>(&buf[..n as usize]) else { continue };
        let id = match &msg {
            FromExec::Started { id } | FromExec::Failed { id, .. } | FromExec::Exited { id, .. } => *id,
        };
        let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
        let done = !matches!(msg, FromExec::Started { .. });
        if let Some(tx) = w.get(&id) {
            let _ = tx.send(msg);
        }
        if done {
            w.remove(&id);
        }
    }
}

impl JobHandle {
    /// Forwards a signal to the command's process group.
    pub fn signal(&self, signal: i32) {
        if let Ok(bytes) = serde_json::to_vec(&ToExec::Signal { id: self.id, signal }) {
            // SAFETY: bytes is valid; one packet per message.
            unsafe { libc::send(self.sock.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        }
    }

    /// Waits for the command to end. Err: the executor refused or died.
    pub fn wait(self) -> Result<ExecOutcome, String> {
        loop {
            match self.rx.recv() {
                Ok(FromExec::Started { .. }) => continue,
                Ok(FromExec::Failed { message, .. }) => return Err(message),
                Ok(FromExec::Exited { code, signal, timed_out, bytes_out, .. }) => {
                    return Ok(ExecOutcome { code, signal, timed_out, bytes_out })
                }
                Err(_) => return Err("the jail's executor is gone".into()),
            }
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Lets the held command exec (see `ToExec::Release`).
    pub fn release(&self) {
        if let Ok(bytes) = serde_json::to_vec(&ToExec::Release { id: self.id }) {
            // SAFETY: bytes is valid; one packet per message.
            unsafe { libc::send(self.sock.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        }
    }

    /// A handle that forwards signals while another thread waits.
    pub fn signaller(&self) -> impl Fn(i32) + Send + Sync + 'static {
        let (sock, id) = (self.sock.clone(), self.id);
        move |signal| {
            if let Ok(bytes) = serde_json::to_vec(&ToExec::Signal { id, signal }) {
                // SAFETY: bytes is valid; one packet per message.
                unsafe { libc::send(sock.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
            }
        }
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// A SOCK_SEQPACKET pair: (launcher end, jail end).
pub fn channel_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    crate::sys::seqpacket_pair()
}
