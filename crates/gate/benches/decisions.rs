//! Supervisor throughput: allowed decisions per second from 16 concurrent
//! shims, beside the same clients against a bare frame-echo server on the
//! same kind of socket (the transport's ceiling), measured in one run.
//! The executor is a stand-in that finishes at once, so the figure is the
//! supervisor's own: accept, SO_PEERCRED, frame + SCM_RIGHTS, policy, store
//! record, replies. Target (issue 3): >= 2,000 decisions/s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clawkeep_gate::{Executor, Gate, GateConfig, Job, Outcome, RunningJob};
use clawkeep_policy::{Policy, PolicyHandle};
use clawkeep_shim::{fdpass, frame, Reply, Request};
use clawkeep_store::Store;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const WINDOW: Duration = Duration::from_secs(3);

struct Instant0;
struct Done;
impl RunningJob for Done {
    fn release(&self) {}
    fn signaller(&self) -> Box<dyn Fn(i32) + Send + Sync> {
        Box::new(|_| {})
    }
    fn wait(self: Box<Self>) -> Result<Outcome, String> {
        Ok(Outcome { exit_code: 0, timed_out: false, bytes_out: Some(0) })
    }
}
impl Executor for Instant0 {
    fn submit(&self, _job: &Job, _stdio: [OwnedFd; 3]) -> Result<Box<dyn RunningJob>, String> {
        Ok(Box::new(Done))
    }
}

fn request() -> Vec<u8> {
    frame::encode(&Request::Exec { version: 1, command: "true".into(), args: vec![], cwd: "/workspace".into(), env: vec![], tty: false })
}

/// One client: request, read replies until Exit; returns completed count.
fn drive(sock: &Path, until: Instant, replies_per_request: usize) -> u64 {
    let req = request();
    let mut n = 0;
    while Instant::now() < until {
        let mut s = UnixStream::connect(sock).unwrap();
        fdpass::send_with_fds(s.as_raw_fd(), &req, &[0, 1, 2]).unwrap();
        let mut buf = Vec::new();
        let mut got = 0;
        let mut chunk = [0u8; 256];
        while got < replies_per_request {
            if let Ok((_r, used)) = frame::decode::<Reply>(&buf) {
                buf.drain(..used);
                got += 1;
                continue;
            }
            let k = s.read(&mut chunk).unwrap();
            assert!(k > 0, "server closed early");
            buf.extend_from_slice(&chunk[..k]);
        }
        n += 1;
    }
    n
}

fn run_clients(sock: &Path, replies: usize) -> f64 {
    let until = Instant::now() + WINDOW;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let p = sock.to_path_buf();
            std::thread::spawn(move || drive(&p, until, replies))
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / t0.elapsed().as_secs_f64()
}

/// The baseline: accept, read one frame with descriptors, answer one frame.
fn echo_server(path: &Path) {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let Ok((n, _fds)) = fdpass::recv_with_fds(s.as_raw_fd(), &mut buf) else { return };
                if n > 0 {
                    let _ = fdpass::write_all(s.as_raw_fd(), &frame::encode(&Reply::Exit { code: 0 }));
                }
            });
        }
    });
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let echo = dir.path().join("echo.sock");
    echo_server(&echo);
    let policy = Policy::parse("default_action: deny\nrules:\n  - command: \"true\"\n    action: allow\n", "bench").unwrap();
    let gate = Gate::new(GateConfig {
        agent: "bench".into(),
        session: "s".into(),
        socket: dir.path().join("gate.sock"),
        policy: Arc::new(PolicyHandle::new(policy)),
        policy_path: None,
        store: Arc::new(Store::open(&dir.path().join("gate.db")).unwrap()),
        audit: None,
        executor: Arc::new(Instant0),
        request_timeout: Duration::from_secs(5),
        kill: Arc::new(|_| Ok(())),
        inflight: Arc::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let l = rt.block_on(async { gate.bind() }).unwrap();
    let g = gate.clone();
    rt.spawn(async move { g.serve(l).await });
    let base = run_clients(&echo, 1);
    let gated = run_clients(&dir.path().join("gate.sock"), 2);
    println!("decisions: {CLIENTS} concurrent clients, {}s each, same run", WINDOW.as_secs());
    println!("  bare frame echo (baseline)      {base:>10.0} requests/s");
    println!(
        "  gate, allowed decisions         {gated:>10.0} decisions/s   (target >= 2000; {:.0}% of the baseline)",
        gated / base * 100.0
    );
}
