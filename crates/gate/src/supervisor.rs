//! The supervisor: one per agent, listening on that agent's socket.

use crate::conn::{Conn, ConnError};
use crate::events::GateEvent;
use crate::executor::{Executor, Job, Outcome};
use clawkeep_audit::AuditLog;
use clawkeep_policy::{Action, PolicyHandle, Request as PolicyRequest, RuleSpec};
use clawkeep_shim::{Reply, Request, PROTOCOL_VERSION};
use clawkeep_store::{Approval, NewApproval, NewDecision, Resolution, Scope, Store};
use serde_json::json;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, oneshot};

/// Everything one agent's supervisor needs.
#[derive(Clone)]
pub struct GateConfig {
    /// Who the agent is. Known from *which socket* it connected on.
    pub agent: String,
    /// Session grants last this long (the run id under `clawkeep run`).
    pub session: String,
    pub socket: PathBuf,
    pub policy: Arc<PolicyHandle>,
    /// Where "always" approvals write their rule (the policy file).
    pub policy_path: Option<PathBuf>,
    pub store: Arc<Store>,
    pub audit: Option<Arc<AuditLog>>,
    pub executor: Arc<dyn Executor>,
    /// A client must send its whole request within this.
    pub request_timeout: Duration,
    /// The kill switch: kills, freezes or thaws the agent's whole sandbox.
    pub kill: Arc<dyn Fn(Switch) -> Result<(), String> + Send + Sync>,
    /// Connections being handled (records still to write included); the
    /// host waits for zero before it exits so no record is lost.
    pub inflight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for GateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateConfig").field("agent", &self.agent).field("socket", &self.socket).finish_non_exhaustive()
    }
}

/// What the kill switch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    Kill,
    Freeze,
    Thaw,
}

/// An operator's answer to a queued request.
#[derive(Debug, Clone)]
pub struct Resolve {
    pub approve: bool,
    pub scope: Scope,
    pub by: String,
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Store(#[from] clawkeep_store::StoreError),
    #[error("approval {0} is not in this agent's queue; list them with 'clawkeep approvals'")]
    Unknown(i64),
    #[error("an 'always' approval needs a policy file to write the rule to; run with --policy FILE")]
    NoPolicyFile,
    #[error("writing the new rule to {path} failed: {message}; the request stays pending")]
    PolicyWrite { path: PathBuf, message: String },
}

struct Inner {
    cfg: GateConfig,
    waiting: Mutex<HashMap<i64, oneshot::Sender<Approval>>>,
    events: broadcast::Sender<GateEvent>,
}

/// A running gate; cheap to clone.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("agent", &self.inner.cfg.agent).finish()
    }
}

impl Gate {
    pub fn new(cfg: GateConfig) -> Gate {
        let (events, _) = broadcast::channel(256);
        Gate { inner: Arc::new(Inner { cfg, waiting: Mutex::default(), events }) }
    }

    pub fn agent(&self) -> &str {
        &self.inner.cfg.agent
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.cfg.store
    }

    /// Binds the agent's socket: a stale file is replaced; mode 0666 so the
    /// jail's unprivileged agent can connect (the socket lives in a 0700
    /// directory, so only the jail reaches it).
    pub fn bind(&self) -> io::Result<UnixListener> {
        let path = &self.inner.cfg.socket;
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        Ok(l)
    }

    /// Serves connections until the listener fails. Each connection is
    /// handled on its own task; a bad one never disturbs the others.
    pub async fn serve(&self, listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let inner = self.inner.clone();
            inner.cfg.inflight.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                handle(inner.clone(), stream).await;
                inner.cfg.inflight.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<GateEvent> {
        self.inner.events.subscribe()
    }

    /// The rule an "always" approval of `id` would add, as YAML.
    pub fn always_rule(&self, id: i64) -> Result<String, ResolveError> {
        let a = self.own_approval(id)?;
        Ok(serde_norway_rule(&always_spec(&a)))
    }

    /// Answers a queued request. "always" first writes an explicit rule to
    /// the policy file (atomically) and reloads it; a failure there leaves
    /// the request pending.
    pub fn resolve(&self, id: i64, r: &Resolve) -> Result<Approval, ResolveError> {
        let a = self.own_approval(id)?;
        if r.approve && r.scope == Scope::Always {
            let path = self.inner.cfg.policy_path.clone().ok_or(ResolveError::NoPolicyFile)?;
            let current = self.inner.cfg.policy.current();
            let updated = current
                .with_rule_prepended(always_spec(&a))
                .map_err(|e| ResolveError::PolicyWrite { path: path.clone(), message: e.to_string() })?;
            write_atomic(&path, &updated.to_yaml())
                .map_err(|e| ResolveError::PolicyWrite { path: path.clone(), message: e.to_string() })?;
            self.inner.cfg.policy.reload_from(&path).map_err(|e| ResolveError::PolicyWrite { path, message: e.to_string() })?;
        }
        let res = Resolution { approve: r.approve, scope: r.scope, by: r.by.clone(), reason: r.reason.clone() };
        let approval = self.inner.cfg.store.resolve(id, &res)?;
        if let Some(tx) = self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
            let _ = tx.send(approval.clone());
        }
        let _ = self.inner.events.send(GateEvent::Resolved { approval: approval.clone() });
        Ok(approval)
    }

    fn own_approval(&self, id: i64) -> Result<Approval, ResolveError> {
        match self.inner.cfg.store.get(id)? {
            Some(a) if a.agent == self.inner.cfg.agent => Ok(a),
            _ => Err(ResolveError::Unknown(id)),
        }
    }

    /// The kill switch.
    pub fn switch(&self, what: Switch) -> Result<(), String> {
        audit(&self.inner, "gate.switch", json!({"agent": self.inner.cfg.agent, "switch": what}));
        (self.inner.cfg.kill)(what)?;
        if what == Switch::Kill {
            let _ = self.inner.events.send(GateEvent::Killed { agent: self.inner.cfg.agent.clone() });
        }
        Ok(())
    }
}

fn always_spec(a: &Approval) -> RuleSpec {
    let mut spec = RuleSpec::exact(&a.command, &a.args, Action::Allow);
    spec.reason = Some(format!("approved always by an operator (request #{})", a.id));
    spec
}

fn serde_norway_rule(spec: &RuleSpec) -> String {
    clawkeep_policy::Policy::rule_yaml(spec)
}

fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn audit(inner: &Inner, kind: &str, fields: serde_json::Value) {
    if let Some(log) = &inner.cfg.audit {
        if let Err(e) = log.append(kind, fields) {
            eprintln!("clawkeep: gate: audit append failed: {e}");
        }
    }
}

/// Like `audit_async`, but says whether the record is on disk.
async fn audit_durable(inner: &Arc<Inner>, kind: &'static str, fields: serde_json::Value) -> Result<(), String> {
    let Some(log) = inner.cfg.audit.clone() else { return Ok(()) };
    tokio::task::spawn_blocking(move || log.append(kind, fields).map(drop).map_err(|e| e.to_string())).await.map_err(|e| e.to_string())?
}

async fn audit_async(inner: &Arc<Inner>, kind: &'static str, fields: serde_json::Value) {
    let i = inner.clone();
    let _ = tokio::task::spawn_blocking(move || audit(&i, kind, fields)).await;
}

/// The facts about one request that every record repeats.
struct Req {
    command: String,
    /// What the command gets.
    args: Vec<String>,
    /// What every record shows: `args` with tokens redacted (`shown.rs`).
    shown: Vec<String>,
    cwd: String,
    env: Vec<(String, String)>,
    tty: bool,
    uid: Option<u32>,
    pid: Option<i32>,
}

async fn handle(inner: Arc<Inner>, stream: UnixStream) {
    let cred = stream.peer_cred().ok();
    let mut conn = Conn::new(stream);
    let (req, fds) = match conn.first_request(inner.cfg.request_timeout).await {
        Ok(x) => x,
        Err(ConnError::Closed) => return,
        Err(e) => {
            let _ = conn.send(&Reply::Error { message: format!("bad request: {e}") }).await;
            return;
        }
    };
    let Request::Exec { version, command, args, cwd, env, tty } = req else {
        let _ = conn.send(&Reply::Error { message: "the first frame must be an exec request".into() }).await;
        return;
    };
    if version != PROTOCOL_VERSION {
        let msg = format!("unknown protocol version {version}; this gate speaks version {PROTOCOL_VERSION}");
        let _ = conn.send(&Reply::Error { message: msg }).await;
        return;
    }
    let Ok(stdio) = <[OwnedFd; 3]>::try_from(fds) else {
        let _ = conn.send(&Reply::Error { message: "the request must carry stdin, stdout and stderr".into() }).await;
        return;
    };
    let shown = crate::shown::shown_args(&args);
    let r = Req { command, args, shown, cwd, env, tty, uid: cred.as_ref().map(|c| c.uid()), pid: cred.and_then(|c| c.pid()) };
    decide(&inner, &mut conn, r, stdio).await;
}

async fn decide(inner: &Arc<Inner>, conn: &mut Conn, r: Req, stdio: [OwnedFd; 3]) {
    let cfg = &inner.cfg;
    let policy = cfg.policy.current();
    let d = policy.evaluate(&PolicyRequest { command: &r.command, args: &r.args, cwd: Path::new(&r.cwd) });
    let base = json!({
        "agent": cfg.agent, "command": r.command, "args": r.shown, "cwd": r.cwd, "uid": r.uid, "pid": r.pid,
        "rule": d.rule, "rule_line": d.line, "decision": d.action.to_string(), "reason": d.reason,
    });
    let mut approved_by: Option<String> = None;
    let mut scope: Option<Scope> = None;
    match d.action {
        Action::Deny => {
            record(inner, &new_decision(inner, &r, d.rule, "deny", "denied", None, None, &d.reason));
            audit_async(inner, "gate.decision", merge(&base, json!({"outcome": "denied"}))).await;
            let _ = conn.send(&Reply::Denied { reason: d.reason.clone() }).await;
            return;
        }
        Action::Allow => {}
        Action::Ask => {
            if cfg.store.session_allows(&cfg.agent, &cfg.session, &r.command, &r.shown).unwrap_or(false) {
                approved_by = Some("session grant".into());
                scope = Some(Scope::Session);
            } else {
                match wait_for_operator(inner, conn, &r, d.rule, &d.reason).await {
                    Some(a) if a.status == clawkeep_store::ApprovalStatus::Approved => {
                        approved_by = a.decided_by.clone();
                        scope = a.scope;
                    }
                    Some(a) => {
                        let why = a.decision_reason.clone().unwrap_or_else(|| "denied by an operator".into());
                        record(inner, &new_decision(inner, &r, d.rule, "ask", "rejected", a.decided_by.clone(), a.scope, &why));
                        audit_async(
                            inner,
                            "gate.decision",
                            merge(&base, json!({"outcome": "rejected", "approved_by": a.decided_by, "denial": why})),
                        )
                        .await;
                        let _ = conn.send(&Reply::Denied { reason: why }).await;
                        return;
                    }
                    None => return, // the shim left; recorded as abandoned
                }
            }
        }
    }
    let outcome_word = if d.action == Action::Ask { "approved" } else { "allowed" };
    let fields = merge(&base, json!({"outcome": outcome_word, "approved_by": approved_by, "scope": scope}));

    let mut env = r.env.clone();
    policy.scrub_env(&mut env);
    let job = Job {
        command: r.command.clone(),
        args: r.args.clone(),
        cwd: r.cwd.clone(),
        env,
        timeout_ms: d.timeout.map(|t| t.as_millis() as u64),
        relay: !r.tty,
    };
    let started = Instant::now();
    // The executor sets the command up while the decision record is made
    // durable; the command execs only after that (the history row and the
    // exit record describe what already happened and are written after the
    // shim has its answer, off the command's latency).
    let running = match cfg.executor.submit(&job, stdio) {
        Ok(j) => j,
        Err(message) => {
            let _ = conn.send(&Reply::Error { message: format!("the jail could not run {}: {message}", r.command) }).await;
            return;
        }
    };
    let signaller = running.signaller();
    if let Err(e) = audit_durable(inner, "gate.decision", fields.clone()).await {
        signaller(libc::SIGKILL);
        let _ = conn.send(&Reply::Error { message: format!("{e}; the command was not run") }).await;
        return;
    }
    running.release();
    let _ = conn.send(&Reply::Started).await;
    let (tx, mut rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _ = tx.send(running.wait());
    });
    let outcome = loop {
        tokio::select! {
            res = &mut rx => break res.unwrap_or_else(|_| Err("the executor vanished".into())),
            msg = conn.next() => match msg {
                Ok(Request::Signal { signal }) => signaller(signal),
                Ok(_) => {}
                // The shim is gone (killed?): its command goes too.
                Err(_) => {
                    signaller(libc::SIGKILL);
                    break (&mut rx).await.unwrap_or_else(|_| Err("the executor vanished".into()));
                }
            },
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let (code, bytes_out, timed_out, error) = match &outcome {
        Ok(Outcome { exit_code, bytes_out, timed_out }) => (Some(*exit_code), *bytes_out, *timed_out, None),
        Err(e) => (None, None, false, Some(e.clone())),
    };
    let reply = match &outcome {
        Ok(o) => Reply::Exit { code: o.exit_code },
        Err(message) => Reply::Error { message: message.clone() },
    };
    let _ = conn.send(&reply).await;
    let i = inner.clone();
    let decision = d.action.to_string();
    let _ = tokio::task::spawn_blocking(move || {
        let nd = new_decision(&i, &r, d.rule, &decision, outcome_word, approved_by, scope, &d.reason);
        if let Err(e) = i.cfg.store.record_finished(&nd, code, duration_ms, bytes_out) {
            eprintln!("clawkeep: gate: recording the decision in the history failed: {e}; it is still in the audit log");
        }
        let exit = merge(
            &fields,
            json!({"exit_code": code, "duration_ms": duration_ms, "bytes_out": bytes_out, "timed_out": timed_out, "error": error}),
        );
        audit(&i, "gate.exit", exit);
        let _ =
            i.events.send(GateEvent::Finished { agent: i.cfg.agent.clone(), command: r.command.clone(), exit_code: code.unwrap_or(-1) });
    })
    .await;
}

/// Queues the request and waits for an operator, or for the shim to leave.
async fn wait_for_operator(inner: &Arc<Inner>, conn: &mut Conn, r: &Req, rule: Option<usize>, reason: &str) -> Option<Approval> {
    let cfg = &inner.cfg;
    let new = NewApproval {
        agent: cfg.agent.clone(),
        session: cfg.session.clone(),
        command: r.command.clone(),
        args: r.shown.clone(),
        cwd: r.cwd.clone(),
        uid: r.uid.unwrap_or(0),
        rule,
        reason: reason.to_string(),
    };
    let approval = match cfg.store.enqueue(&new) {
        Ok(a) => a,
        Err(e) => {
            let _ = conn.send(&Reply::Error { message: format!("the approval queue failed: {e}") }).await;
            return None;
        }
    };
    let (tx, rx) = oneshot::channel();
    inner.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(approval.id, tx);
    let _ = inner.events.send(GateEvent::Queued { approval: approval.clone() });
    audit_async(
        inner,
        "gate.queued",
        json!({"agent": cfg.agent, "id": approval.id, "command": r.command, "args": r.shown, "cwd": r.cwd, "reason": reason}),
    )
    .await;
    let _ = conn.send(&Reply::Pending { id: approval.id, reason: reason.to_string() }).await;
    tokio::select! {
        res = rx => res.ok(),
        _ = wait_closed(conn) => {
            inner.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&approval.id);
            let _ = cfg.store.abandon(approval.id, "the waiting command's connection closed");
            record(inner, &new_decision(inner, r, rule, "ask", "abandoned", None, None, "the waiting command's connection closed"));
            audit_async(inner, "gate.abandoned", json!({"agent": cfg.agent, "id": approval.id, "command": r.command})).await;
            None
        }
    }
}

/// Resolves when the client disconnects (signals sent while waiting for an
/// operator are ignored: nothing runs yet).
async fn wait_closed(conn: &mut Conn) {
    loop {
        if let Err(ConnError::Closed | ConnError::Io(_) | ConnError::Frame(_)) = conn.next().await {
            return;
        }
    }
}

/// Records a decision whose command did not run (denied, rejected, abandoned).
fn record(inner: &Inner, d: &NewDecision) {
    if let Err(e) = inner.cfg.store.record(d) {
        eprintln!("clawkeep: gate: recording the decision in the history failed: {e}; it is still in the audit log");
    }
}

#[allow(clippy::too_many_arguments)]
fn new_decision(
    inner: &Inner,
    r: &Req,
    rule: Option<usize>,
    decision: &str,
    outcome: &str,
    by: Option<String>,
    scope: Option<Scope>,
    reason: &str,
) -> NewDecision {
    let cfg = &inner.cfg;
    NewDecision {
        agent: cfg.agent.clone(),
        session: cfg.session.clone(),
        command: r.command.clone(),
        args: r.shown.clone(),
        cwd: r.cwd.clone(),
        uid: r.uid.unwrap_or(0),
        rule,
        decision: decision.to_string(),
        outcome: outcome.to_string(),
        approved_by: by,
        scope: scope.map(|s| s.to_string()),
        reason: reason.to_string(),
    }
}

fn merge(a: &serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    let mut out = a.clone();
    if let (Some(o), serde_json::Value::Object(extra)) = (out.as_object_mut(), b) {
        o.extend(extra);
    }
    out
}
