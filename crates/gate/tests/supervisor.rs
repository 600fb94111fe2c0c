//! The supervisor's protocol handling with a stand-in executor: bad input
//! on one connection never disturbs the others, the queue survives a
//! restart, and scopes behave. (The real in-jail executor is exercised end
//! to end by crates/clawkeep/tests/gate.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clawkeep_gate::{Executor, Gate, GateConfig, Job, Outcome, Resolve, RunningJob};
use clawkeep_policy::{Policy, PolicyHandle};
use clawkeep_shim::{fdpass, frame, Reply, Request};
use clawkeep_store::{Scope, Store};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const POLICY: &str = "default_action: deny\nrules:\n  - command: ok\n    action: allow\n  - command: ask\n    action: ask\n    reason: needs a human\n  - command: no\n    action: deny\n    reason: never\n";

#[derive(Default)]
struct FakeExec {
    ran: Mutex<Vec<Job>>,
}

struct Done;

impl RunningJob for Done {
    fn release(&self) {}
    fn signaller(&self) -> Box<dyn Fn(i32) + Send + Sync> {
        Box::new(|_| {})
    }
    fn wait(self: Box<Self>) -> Result<Outcome, String> {
        Ok(Outcome { exit_code: 7, timed_out: false, bytes_out: Some(0) })
    }
}

impl Executor for FakeExec {
    fn submit(&self, job: &Job, _stdio: [OwnedFd; 3]) -> Result<Box<dyn RunningJob>, String> {
        self.ran.lock().unwrap().push(job.clone());
        Ok(Box::new(Done))
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    db: PathBuf,
    policy_path: PathBuf,
    gate: Gate,
    exec: Arc<FakeExec>,
    rt: tokio::runtime::Runtime,
}

fn harness_at(dir: tempfile::TempDir) -> Harness {
    let socket = dir.path().join("gate.sock");
    let db = dir.path().join("gate.db");
    let policy_path = dir.path().join("policy.yaml");
    if !policy_path.exists() {
        std::fs::write(&policy_path, POLICY).unwrap();
    }
    let exec = Arc::new(FakeExec::default());
    let gate = Gate::new(GateConfig {
        agent: "a1".into(),
        session: "s1".into(),
        socket: socket.clone(),
        policy: Arc::new(PolicyHandle::new(Policy::load(&policy_path).unwrap())),
        policy_path: Some(policy_path.clone()),
        store: Arc::new(Store::open(&db).unwrap()),
        audit: None,
        executor: exec.clone(),
        request_timeout: Duration::from_millis(300),
        kill: Arc::new(|_| Ok(())),
        inflight: Arc::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = rt.block_on(async { gate.bind() }).unwrap();
    let g = gate.clone();
    rt.spawn(async move { g.serve(listener).await });
    Harness { _dir: dir, socket, db, policy_path, gate, exec, rt }
}

fn harness() -> Harness {
    harness_at(tempfile::tempdir().unwrap())
}

fn exec_req(cmd: &str, args: &[&str]) -> Vec<u8> {
    frame::encode(&Request::Exec {
        version: 1,
        command: cmd.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        cwd: "/workspace".into(),
        env: vec![],
        tty: false,
    })
}

fn connect(p: &Path) -> UnixStream {
    let s = UnixStream::connect(p).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn send(s: &UnixStream, bytes: &[u8]) {
    fdpass::send_with_fds(s.as_raw_fd(), bytes, &[0, 1, 2]).unwrap();
}

/// Reads replies until the server closes or `n` replies arrived.
fn replies(s: &mut UnixStream, n: usize) -> Vec<Reply> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < n {
        if let Ok((r, used)) = frame::decode::<Reply>(&buf) {
            buf.drain(..used);
            out.push(r);
            continue;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    out
}

fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0))
}

fn error_text(r: &[Reply]) -> String {
    match r.first() {
        Some(Reply::Error { message }) => message.clone(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn allow_and_deny() {
    let h = harness();
    let mut s = connect(&h.socket);
    send(&s, &exec_req("ok", &["x"]));
    assert_eq!(replies(&mut s, 2), vec![Reply::Started, Reply::Exit { code: 7 }]);
    let mut s = connect(&h.socket);
    send(&s, &exec_req("no", &[]));
    assert_eq!(replies(&mut s, 1), vec![Reply::Denied { reason: "never".into() }]);
    assert_eq!(h.exec.ran.lock().unwrap().len(), 1);
}

#[test]
fn malformed_oversized_unknown_version_stalled_and_dropped_clients_are_refused_alone() {
    let h = harness();
    // Each bad client gets an error and a closed connection...
    let mut bad = connect(&h.socket);
    let mut junk = 5u32.to_be_bytes().to_vec();
    junk.extend_from_slice(b"{nope");
    send(&bad, &junk);
    assert!(error_text(&replies(&mut bad, 1)).contains("malformed"));
    assert!(closed(&mut bad));

    let mut big = connect(&h.socket);
    send(&big, &((2u32 << 20).to_be_bytes()));
    assert!(error_text(&replies(&mut big, 1)).contains("limit"));
    assert!(closed(&mut big));

    let mut ver = connect(&h.socket);
    let v9 =
        frame::encode(&serde_json::json!({"type": "exec", "version": 9, "command": "ok", "args": [], "cwd": "/", "env": [], "tty": false}));
    send(&ver, &v9);
    assert!(error_text(&replies(&mut ver, 1)).contains("version 9"));
    assert!(closed(&mut ver));

    let mut stall = connect(&h.socket);
    stall.write_all(&[0, 0]).unwrap();
    assert!(error_text(&replies(&mut stall, 1)).contains("stalled"));

    let half = connect(&h.socket);
    send(&half, &exec_req("ok", &[])[..6]);
    drop(half);

    let mut nofds = connect(&h.socket);
    nofds.write_all(&exec_req("ok", &[])).unwrap();
    assert!(error_text(&replies(&mut nofds, 1)).contains("stdin, stdout and stderr"));

    // ...while a good client is still served.
    let mut good = connect(&h.socket);
    send(&good, &exec_req("ok", &[]));
    assert_eq!(replies(&mut good, 2), vec![Reply::Started, Reply::Exit { code: 7 }]);
}

#[test]
fn ask_waits_and_a_dropped_client_abandons_its_request() {
    let h = harness();
    let mut s = connect(&h.socket);
    send(&s, &exec_req("ask", &["1"]));
    let r = replies(&mut s, 1);
    let Some(Reply::Pending { id, reason }) = r.first().cloned() else { panic!("{r:?}") };
    assert_eq!(reason, "needs a human");
    drop(s);
    let store = h.gate.store().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.get(id).unwrap().unwrap().status == clawkeep_store::ApprovalStatus::Pending && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(store.get(id).unwrap().unwrap().status, clawkeep_store::ApprovalStatus::Abandoned);
}

#[test]
fn a_restart_keeps_the_queue() {
    let h = harness();
    let mut s = connect(&h.socket);
    send(&s, &exec_req("ask", &["keep"]));
    let Some(Reply::Pending { id, .. }) = replies(&mut s, 1).first().cloned() else { panic!() };
    // The supervisor goes away (its runtime stops) while the shim waits.
    let Harness { _dir, rt, db, .. } = h;
    rt.shutdown_timeout(Duration::from_secs(1));
    assert!(closed(&mut s) || replies(&mut s, 1).is_empty(), "the waiting shim learns the gate is gone");
    let again = Store::open(&db).unwrap();
    let pending = again.pending().unwrap();
    assert!(pending.iter().any(|a| a.id == id && a.args == ["keep"]), "{pending:?}");
    drop(again);
    // A new supervisor on the same state answers it.
    let h2 = harness_at(_dir);
    let a = h2.gate.resolve(id, &Resolve { approve: false, scope: Scope::Once, by: "test".into(), reason: Some("later".into()) }).unwrap();
    assert_eq!(a.status, clawkeep_store::ApprovalStatus::Denied);
}

#[test]
fn session_scope_covers_the_next_identical_request_and_always_writes_a_rule() {
    let h = harness();
    let mut s = connect(&h.socket);
    send(&s, &exec_req("ask", &["same"]));
    let Some(Reply::Pending { id, .. }) = replies(&mut s, 1).first().cloned() else { panic!() };
    h.gate.resolve(id, &Resolve { approve: true, scope: Scope::Session, by: "test".into(), reason: None }).unwrap();
    assert_eq!(replies(&mut s, 2), vec![Reply::Started, Reply::Exit { code: 7 }]);
    let mut again = connect(&h.socket);
    send(&again, &exec_req("ask", &["same"]));
    assert_eq!(replies(&mut again, 2), vec![Reply::Started, Reply::Exit { code: 7 }], "session grant should cover it");
    let mut other = connect(&h.socket);
    send(&other, &exec_req("ask", &["different"]));
    let Some(Reply::Pending { id: id2, .. }) = replies(&mut other, 1).first().cloned() else {
        panic!("a different request must ask again")
    };

    let preview = h.gate.always_rule(id2).unwrap();
    assert!(preview.contains("ask") && preview.contains("different"), "{preview}");
    h.gate.resolve(id2, &Resolve { approve: true, scope: Scope::Always, by: "test".into(), reason: None }).unwrap();
    assert_eq!(replies(&mut other, 2), vec![Reply::Started, Reply::Exit { code: 7 }]);
    let text = std::fs::read_to_string(&h.policy_path).unwrap();
    assert!(text.contains("different"), "{text}");
    let reloaded = Policy::load(&h.policy_path).unwrap();
    let args = vec!["different".to_string()];
    let d = reloaded.evaluate(&clawkeep_policy::Request { command: "ask", args: &args, cwd: Path::new("/workspace") });
    assert_eq!(d.action, clawkeep_policy::Action::Allow);
    let args = vec!["different".to_string(), "--more".to_string()];
    let d = reloaded.evaluate(&clawkeep_policy::Request { command: "ask", args: &args, cwd: Path::new("/workspace") });
    assert_eq!(d.action, clawkeep_policy::Action::Ask, "an always rule is exact");
}

/// A request whose records hide a token can be approved once, never for
/// the session or always: a grant made on `https://[redacted token]/x`
/// would let any other token-shaped word through unseen.
#[test]
fn a_request_with_a_hidden_token_is_approved_only_once() {
    let h = harness();
    let url = "https://eyJaaaaaaaaaaaa.eyJbbbbbbbbbbbb.com/x";
    let mut s = connect(&h.socket);
    send(&s, &exec_req("ask", &["-d", "@secret", url]));
    let Some(Reply::Pending { id, .. }) = replies(&mut s, 1).first().cloned() else { panic!() };
    let queued = h.gate.store().get(id).unwrap().unwrap();
    assert_eq!(queued.args, ["-d", "@secret", "https://[redacted token]/x"]);
    for scope in [Scope::Session, Scope::Always] {
        let err = h.gate.resolve(id, &Resolve { approve: true, scope, by: "test".into(), reason: None }).unwrap_err();
        assert!(matches!(err, clawkeep_gate::ResolveError::HiddenArgs(i) if i == id), "{err}");
    }
    assert!(matches!(h.gate.always_rule(id), Err(clawkeep_gate::ResolveError::HiddenArgs(_))));
    assert_eq!(std::fs::read_to_string(&h.policy_path).unwrap(), POLICY, "no rule was written");
    h.gate.resolve(id, &Resolve { approve: true, scope: Scope::Once, by: "test".into(), reason: None }).unwrap();
    assert_eq!(replies(&mut s, 2), vec![Reply::Started, Reply::Exit { code: 7 }]);
    // A look-alike asks again.
    let mut other = connect(&h.socket);
    send(&other, &exec_req("ask", &["-d", "@secret", "https://eyJcccccccccccc.eyJdddddddddddd.net/x"]));
    assert!(matches!(replies(&mut other, 1).first(), Some(Reply::Pending { .. })), "a look-alike must ask again");
}

/// An "always" for a request that is no longer pending writes no rule.
#[test]
fn always_for_an_answered_request_writes_nothing() {
    let h = harness();
    let mut s = connect(&h.socket);
    send(&s, &exec_req("ask", &["late"]));
    let Some(Reply::Pending { id, .. }) = replies(&mut s, 1).first().cloned() else { panic!() };
    h.gate.resolve(id, &Resolve { approve: false, scope: Scope::Once, by: "test".into(), reason: None }).unwrap();
    let err = h.gate.resolve(id, &Resolve { approve: true, scope: Scope::Always, by: "test".into(), reason: None }).unwrap_err();
    assert!(matches!(err, clawkeep_gate::ResolveError::Store(clawkeep_store::StoreError::NotPending { .. })), "{err}");
    assert_eq!(std::fs::read_to_string(&h.policy_path).unwrap(), POLICY, "a rule was written for an answered request");
}

/// Two "always" approvals at once both land in the policy file, and an
/// edit on disk that the watcher has not reloaded yet survives them.
#[test]
fn always_rules_written_together_are_all_kept() {
    let h = harness();
    let mut conns = Vec::new();
    let mut ids = Vec::new();
    for arg in ["first", "second", "third"] {
        let mut s = connect(&h.socket);
        send(&s, &exec_req("ask", &[arg]));
        let Some(Reply::Pending { id, .. }) = replies(&mut s, 1).first().cloned() else { panic!() };
        ids.push(id);
        conns.push(s);
    }
    // An operator's edit, not yet seen by the gate.
    let edited = POLICY.replace("reason: never\n", "reason: never\n  - command: edited-by-hand\n    action: deny\n");
    std::fs::write(&h.policy_path, &edited).unwrap();
    std::thread::scope(|scope| {
        for id in &ids {
            let gate = h.gate.clone();
            scope.spawn(move || {
                gate.resolve(*id, &Resolve { approve: true, scope: Scope::Always, by: "test".into(), reason: None }).unwrap()
            });
        }
    });
    let text = std::fs::read_to_string(&h.policy_path).unwrap();
    for arg in ["first", "second", "third", "edited-by-hand"] {
        assert!(text.contains(arg), "{arg} lost:\n{text}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(h.policy_path.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A request naming its command by path is refused: the policy reads a
/// path's last part, and the executor would run the path as given (a
/// symlink named like an allowed tool, pointing at another).
#[test]
fn a_command_given_as_a_path_is_refused() {
    let h = harness();
    for cmd in ["/workspace/bin/ok", "bin/ok", "", ".."] {
        let mut s = connect(&h.socket);
        send(&s, &exec_req(cmd, &[]));
        let r = replies(&mut s, 1);
        assert!(error_text(&r).contains("plain name"), "{cmd}: {r:?}");
    }
    assert!(h.exec.ran.lock().unwrap().is_empty());
}

/// Descriptors arrive once per connection, three at most: a client that
/// keeps sending them is cut off before the gate runs out of descriptors.
#[test]
fn a_client_flooding_descriptors_is_cut_off() {
    let h = harness();
    let count = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = count();
    let req = exec_req("ok", &[]);
    let mut streams = Vec::new();
    for _ in 0..20 {
        let s = connect(&h.socket);
        // One byte at a time, each with three descriptors.
        for b in req.iter().take(40) {
            if fdpass::send_with_fds(s.as_raw_fd(), &[*b], &[0, 1, 2]).is_err() {
                break;
            }
        }
        streams.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let held = count().saturating_sub(before + streams.len());
    assert!(held < 100, "the gate holds {held} descriptors");
    // It still serves.
    let mut s = connect(&h.socket);
    send(&s, &exec_req("ok", &[]));
    assert_eq!(replies(&mut s, 2), vec![Reply::Started, Reply::Exit { code: 7 }]);
}
