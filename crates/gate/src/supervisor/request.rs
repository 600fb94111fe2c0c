//! One shim connection, from its exec request to the decision's records:
//! the policy's answer, the operator's when it asks, the executor's run.

use super::{audit, audit_async, audit_durable, Inner};
use crate::conn::{Conn, ConnError};
use crate::events::GateEvent;
use crate::executor::{Job, Outcome};
use clawkeep_policy::{Action, Request as PolicyRequest};
use clawkeep_shim::{Reply, Request, PROTOCOL_VERSION};
use clawkeep_store::{Approval, ApprovalStatus, NewApproval, NewDecision, Scope};
use serde_json::json;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

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

pub(super) async fn handle(inner: Arc<Inner>, stream: UnixStream) {
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
    // The shim always names the command; a path would be checked by its
    // last part and run as given (a symlink to another tool, say).
    if command.is_empty() || command.contains(['/', '\0']) || command == "." || command == ".." {
        let _ = conn.send(&Reply::Error { message: "the command must be a plain name, not a path".into() }).await;
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
            // A request whose records hide a token is never let through by a
            // grant: the grant was made on what the operator saw.
            let exact = r.shown == r.args;
            if exact && cfg.store.session_allows(&cfg.agent, &cfg.session, &r.command, &r.shown).unwrap_or(false) {
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
    // An operator who answered between the enqueue and our entry in
    // `waiting` found no one to tell: the store has the answer.
    let answered = cfg.store.get(approval.id).ok().flatten().filter(|a| a.status != ApprovalStatus::Pending);
    if let Some(a) = answered {
        inner.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&approval.id);
        return Some(a);
    }
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
