//! The supervisor: one per agent, listening on that agent's socket.

use crate::events::GateEvent;
use crate::executor::Executor;
use clawkeep_audit::AuditLog;
use clawkeep_policy::{Action, PolicyHandle, RuleSpec};
use clawkeep_store::{Approval, ApprovalStatus, Resolution, Scope, Store};
use serde_json::json;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, oneshot};

mod request;

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
    #[error(
        "request {0} has a token in its arguments that the records do not show; approve it once (a session or always grant would also match what is hidden)"
    )]
    HiddenArgs(i64),
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
                request::handle(inner.clone(), stream).await;
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
        if hides_args(&a) {
            return Err(ResolveError::HiddenArgs(id));
        }
        Ok(serde_norway_rule(&always_spec(&a)))
    }

    /// Answers a queued request. "always" first writes an explicit rule to
    /// the policy file (atomically) and reloads it; a failure there leaves
    /// the request pending.
    pub fn resolve(&self, id: i64, r: &Resolve) -> Result<Approval, ResolveError> {
        let a = self.own_approval(id)?;
        if a.status != ApprovalStatus::Pending {
            // Checked before an "always" rule is written for it.
            return Err(clawkeep_store::StoreError::NotPending { id, status: a.status }.into());
        }
        if r.approve && r.scope != Scope::Once && hides_args(&a) {
            return Err(ResolveError::HiddenArgs(id));
        }
        if r.approve && r.scope == Scope::Always {
            let path = self.inner.cfg.policy_path.clone().ok_or(ResolveError::NoPolicyFile)?;
            let failed = |message: String| ResolveError::PolicyWrite { path: path.clone(), message };
            // One writer at a time, in this gate and in other runs sharing
            // the file (each lock_beside opens the lock file anew, and flock
            // excludes other open descriptions, threads of one process
            // included); the rule goes into the file as it is now on disk
            // (an edit the watcher has not reloaded yet is kept).
            let _writer = lock_beside(&path).map_err(|e| failed(e.to_string()))?;
            let on_disk =
                clawkeep_policy::Policy::load(&path).map_err(|e| failed(format!("the file does not load ({e}); fix it first")))?;
            let updated = on_disk.with_rule_prepended(always_spec(&a)).map_err(|e| failed(e.to_string()))?;
            write_atomic(&path, &updated.to_yaml()).map_err(|e| failed(e.to_string()))?;
            self.inner.cfg.policy.reload_from(&path).map_err(|e| failed(e.to_string()))?;
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

/// Whether the queued request's arguments were redacted for the records:
/// a grant made on them would match whatever the redaction hid.
fn hides_args(a: &Approval) -> bool {
    a.args.iter().any(|arg| arg.contains(crate::shown::REDACTED))
}

fn always_spec(a: &Approval) -> RuleSpec {
    let mut spec = RuleSpec::exact(&a.command, &a.args, Action::Allow);
    spec.reason = Some(format!("approved always by an operator (request #{})", a.id));
    spec
}

fn serde_norway_rule(spec: &RuleSpec) -> String {
    clawkeep_policy::Policy::rule_yaml(spec)
}

/// An exclusive flock on `.<name>.lock` beside `path` (the policy file
/// itself is replaced by rename, so it cannot carry the lock).
fn lock_beside(path: &Path) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let lock = path.with_file_name(format!(".{name}.lock"));
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&lock)?;
    // SAFETY: flock on a descriptor we own; released when it closes.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Replaces `path` with `text`: a temp file of its own (same mode as the
/// file it replaces), synced, renamed over it, and the rename synced.
fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o600);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(mode).open(&tmp)?;
    let written =
        f.write_all(text.as_bytes()).and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode))).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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
