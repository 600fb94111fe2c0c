//! The inference proxy inside `clawkeep run`: the agent's token, the
//! environment that points its SDKs at the proxy, and the proxy itself,
//! served on a socket that listens inside the jail's own loopback.
//!
//! The jail's network namespace has only `lo`, so nothing on the host is
//! reachable from it. The jail's init opens 127.0.0.1:[`PROXY_PORT`] in that
//! namespace and hands the listening socket out; this process accepts on it.
//! The agent reaches the proxy and nothing else, with no forwarder process
//! and no host port.

use crate::Failure;
use clawkeep_audit::{AuditLog, GroupWriter};
use clawkeep_identity::{IdentityPaths, IssuedToken, KeyRing, MasterKey, SealedStore, MASTER_KEY_ENV};
use clawkeep_proxy::{audit_observer, Ledger, ProxyConfig, ProxyState};
use serde_json::json;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The proxy's port on the jail's loopback.
pub const PROXY_PORT: u16 = 4141;
/// Env naming the proxy config when `--proxy-config` is not given.
pub const CONFIG_ENV: &str = "CLAWKEEP_PROXY_CONFIG";
/// A token lives as long as its run, at most this long when the run has no
/// timeout. It is bound to its run, so it is dead once the run ends either
/// way: only that run's proxy accepts it (see `ProxyPrep::prepare`).
const MAX_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// Providers and routes used when no config file is given: provider keys
/// are read from the sealed store entries `openai` and `anthropic`.
const DEFAULT_CONFIG: &str = r#"
providers:
  - { name: openai, kind: openai, base_url: "https://api.openai.com", secret: openai }
  - { name: anthropic, kind: anthropic, base_url: "https://api.anthropic.com", secret: anthropic }
routes:
  - { prefix: "gpt-", provider: openai }
  - { prefix: "chatgpt-", provider: openai }
  - { prefix: "o1", provider: openai }
  - { prefix: "o3", provider: openai }
  - { prefix: "o4", provider: openai }
  - { prefix: "text-embedding-", provider: openai }
  - { prefix: "claude-", provider: anthropic }
"#;

/// The usage ledger every run's proxy writes and `clawkeep usage` reads.
pub fn ledger_path(state: &Path) -> PathBuf {
    state.join("usage.db")
}

/// The built-in config, parsed only when a run's proxy first serves: most
/// runs never call a model, and the parse was on every run's start-up path.
fn built_in_config() -> Result<ProxyConfig, String> {
    serde_norway::from_str(DEFAULT_CONFIG).map_err(|e| format!("built-in proxy config: {e}"))
}

/// A loaded config, how to name its source, and its file and text.
type Loaded = (Option<ProxyConfig>, String, Option<(PathBuf, String)>);

/// Where the config comes from, in order: the flag, the env var, the state
/// dir's proxy.yaml, the built-in default (`None`: see `built_in_config`).
/// A file is read and checked here, so its errors stop the run. Returns
/// the config, how to name its source, and the file and text it came from.
fn load_config(state: &Path, flag: Option<&Path>) -> Result<Loaded, Failure> {
    let from_env = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
    let in_state = Some(state.join("proxy.yaml")).filter(|p| p.is_file());
    let Some(path) = flag.map(Path::to_path_buf).or(from_env).or(in_state) else {
        return Ok((None, "built-in".into(), None));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::usage(format!("cannot read the proxy config {}: {e}; pass --proxy-config FILE or --no-proxy", path.display()))
    })?;
    let config = parse_config(&path, &text)?;
    Ok((Some(config), path.display().to_string(), Some((path, text))))
}

/// Parses and checks the config `text` of the file at `path`.
fn parse_config(path: &Path, text: &str) -> Result<ProxyConfig, Failure> {
    let config: ProxyConfig = serde_norway::from_str(text)
        .map_err(|e| Failure::usage(format!("invalid proxy config {}: {e}; see docs/proxy.md for the keys", path.display())))?;
    config.check().map_err(|e| Failure::usage(format!("invalid proxy config {}: {e}", path.display())))?;
    Ok(config)
}

/// The proxy of one run, before the jail exists.
pub struct ProxyPrep {
    /// None: the built-in config.
    config: Option<ProxyConfig>,
    pub source: String,
    /// The config file and the text checked here (none: the built-in
    /// config), for the run's services.
    pub file: Option<(PathBuf, String)>,
    keys: Arc<KeyRing>,
    token: IssuedToken,
    /// Our end of the channel the jail's listener arrives on (jail runs;
    /// the helper holds the other end as fd 7).
    chan: Option<OwnedFd>,
}

/// The usage ledger and audit writer of a run's proxy, once it is open: the
/// run flushes both before it ends, so no request's row or event is lost
/// with the process.
#[derive(Clone, Default)]
pub struct LedgerHandle(Arc<std::sync::OnceLock<Recording>>);

/// What records a run's proxy calls: the usage ledger, the proxy (which
/// knows the requests still in flight) and the writer of its audit events.
type Recording = (Arc<Ledger>, ProxyState, Arc<GroupWriter>);

/// How long the end of a run waits for requests its agent left in flight.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

impl LedgerHandle {
    /// Records the requests the agent left in flight (each is settled once
    /// its connection is seen closed), then commits every row and appends
    /// every call's audit event.
    pub fn flush(&self) {
        if let Some((ledger, state, writer)) = self.0.get() {
            if !state.wait_settled(SETTLE_LIMIT) {
                eprintln!("clawkeep: warning: an inference request was still open when the run ended; its usage may be missing");
            }
            ledger.flush();
            writer.flush();
        }
    }
}

impl ProxyPrep {
    /// Loads the config, opens the key ring and issues the agent's token.
    /// `chan` is our end of the channel a jail sends its listener on.
    ///
    /// The token is issued for `run_id`, and the run's proxy accepts only
    /// that run's tokens while every other verifier refuses them: the
    /// token is worthless once this run's proxy is gone, with no
    /// revocation to write (or to miss when the run is killed with -9).
    pub fn prepare(
        state: &Path,
        agent: &str,
        run_id: &str,
        flag: Option<&Path>,
        run_timeout: Option<Duration>,
        chan: Option<OwnedFd>,
    ) -> Result<ProxyPrep, Failure> {
        let (config, source, file) = load_config(state, flag)?;
        let keys = KeyRing::open(&IdentityPaths::under(state).keys).map_err(|e| Failure::runtime(e.to_string()))?;
        let ttl = run_timeout.map_or(MAX_TOKEN_TTL, |t| (t + Duration::from_secs(60)).min(MAX_TOKEN_TTL));
        let token = keys.issue_for_run(agent, run_id, &["inference".to_string()], ttl).map_err(|e| Failure::runtime(e.to_string()))?;
        Ok(ProxyPrep { config, source, file, keys: Arc::new(keys), token, chan })
    }

    /// What the agent's SDKs read. The keys are the agent's own token:
    /// no provider key ever enters the jail.
    pub fn env(&self) -> Vec<(String, String)> {
        let base = format!("http://127.0.0.1:{PROXY_PORT}");
        vec![
            ("OPENAI_BASE_URL".into(), format!("{base}/v1")),
            ("OPENAI_API_KEY".into(), self.token.token.clone()),
            ("ANTHROPIC_BASE_URL".into(), base),
            ("ANTHROPIC_API_KEY".into(), self.token.token.clone()),
        ]
    }

    /// What the run's start event says about the proxy (never the token).
    pub fn describe(&self) -> serde_json::Value {
        json!({
            "url": format!("http://127.0.0.1:{PROXY_PORT}"),
            "config": self.source,
            "token_jti": self.token.claims.jti,
            "token_exp": self.token.claims.exp,
            "token_kid": self.token.kid,
            "token_run": self.token.claims.run,
        })
    }

    /// Puts the proxy's URLs and the agent's token into `env` (and their
    /// names into `names`), replacing whatever the host or --env had under
    /// those names: a real key never goes in.
    pub fn apply_env(&self, env: &mut Vec<(String, String)>, names: &mut Vec<String>) {
        for (k, v) in self.env() {
            env.retain(|(name, _)| *name != k);
            names.retain(|name| *name != k);
            names.push(k.clone());
            env.push((k, v));
        }
    }

    /// Serves the proxy on a Unix socket at `path`, on a runtime thread of
    /// its own: the VM backend relays the guest's connections there. The
    /// socket is 0600 and removed when the thread's runtime ends.
    /// Returns the proxy's ledger and audit writer, to flush at the end.
    pub fn serve_unix(
        self,
        state: &Path,
        agent: String,
        run_id: String,
        audit: Arc<AuditLog>,
        path: &Path,
    ) -> Result<LedgerHandle, Failure> {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path)
            .map_err(|e| Failure::runtime(format!("cannot bind the proxy socket {}: {e}", path.display())))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| Failure::runtime(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| Failure::runtime(e.to_string()))?;
        let ledger = LedgerHandle::default();
        let proxy = open_state(state, self.config, self.keys, &agent, run_id, audit, &ledger).map_err(Failure::runtime)?;
        std::thread::Builder::new()
            .name("clawkeep-proxy".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return eprintln!("clawkeep: proxy: cannot start its runtime: {e}"),
                };
                rt.block_on(async move {
                    if let Ok(l) = tokio::net::UnixListener::from_std(listener) {
                        let _ = axum::serve(l, clawkeep_proxy::router(proxy)).await;
                    }
                });
            })
            .map_err(|e| Failure::runtime(format!("cannot start the proxy thread: {e}")))?;
        Ok(ledger)
    }

    /// Our end of the channel the jail's listener arrives on.
    pub fn take_chan(&mut self) -> Option<OwnedFd> {
        self.chan.take()
    }
}

/// The listening socket the jail's init opens on its loopback, sent on
/// `chan`; blocks until it arrives. None when the jail failed first (its
/// own report says why).
pub fn recv_listener(chan: std::os::fd::RawFd) -> Option<std::net::TcpListener> {
    let fd = clawkeep_sandbox::pty::recv_fd(chan).ok().flatten()?;
    let listener = std::net::TcpListener::from(fd);
    match listener.set_nonblocking(true) {
        Ok(()) => Some(listener),
        Err(e) => {
            eprintln!("clawkeep: proxy: cannot use the jail's listener: {e}");
            None
        }
    }
}

/// A jail run's proxy in its services process (see `services`): the
/// config and keys read again from the state dir, the jail's listener.
pub struct ProxyServe {
    config: Option<ProxyConfig>,
    keys: Arc<KeyRing>,
    listener: std::net::TcpListener,
    ledger: LedgerHandle,
}

impl ProxyServe {
    /// `file` is the config file and the text the launcher checked
    /// (none: the built-in config).
    pub fn open(state: &Path, file: Option<&(PathBuf, String)>, listener: std::net::TcpListener) -> Result<ProxyServe, Failure> {
        let config = file.map(|(path, text)| parse_config(path, text)).transpose()?;
        let keys = KeyRing::open(&IdentityPaths::under(state).keys).map_err(|e| Failure::runtime(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| Failure::runtime(format!("the jail's listener: {e}")))?;
        Ok(ProxyServe { config, keys: Arc::new(keys), listener, ledger: LedgerHandle::default() })
    }

    pub fn ledger(&self) -> LedgerHandle {
        self.ledger.clone()
    }

    pub fn listener_fd(&self) -> std::os::fd::RawFd {
        self.listener.as_raw_fd()
    }

    /// Serves the proxy on `rt` from the jail's listener, bound to the
    /// agent and the run.
    pub fn spawn(self, rt: &tokio::runtime::Runtime, state: &Path, agent: String, run_id: String, audit: Arc<AuditLog>) {
        let state = state.to_path_buf();
        let ProxyServe { config, keys, ledger, listener: std_listener } = self;
        rt.spawn(async move {
            let std_listener = match tokio::task::spawn_blocking(move || {
                crate::gate_run::wait_any_readable(&[std_listener.as_raw_fd()]);
                std_listener
            })
            .await
            {
                Ok(l) => l,
                Err(_) => return,
            };
            let listener = match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => return eprintln!("clawkeep: proxy: cannot use the jail's listener: {e}"),
            };
            let proxy = match open_state(&state, config, keys, &agent, run_id, audit, &ledger) {
                Ok(p) => p,
                Err(e) => return eprintln!("clawkeep: proxy: {e}; inference requests will fail"),
            };
            let _ = clawkeep_proxy::serve_tcp(listener, proxy).await;
        });
    }
}

fn open_state(
    state: &Path,
    config: Option<ProxyConfig>,
    keys: Arc<KeyRing>,
    agent: &str,
    run_id: String,
    audit: Arc<AuditLog>,
    handle: &LedgerHandle,
) -> Result<ProxyState, String> {
    let config = match config {
        Some(c) => c,
        None => built_in_config()?,
    };
    let paths = IdentityPaths::under(state);
    let master = MasterKey::from_env_or_file(std::env::var(MASTER_KEY_ENV).ok(), &paths.master_key).map_err(|e| e.to_string())?;
    let secrets = SealedStore::open(&paths.secrets, master).map_err(|e| e.to_string())?;
    let ledger = Arc::new(Ledger::open(&ledger_path(state)).map_err(|e| e.to_string())?);
    let writer = Arc::new(GroupWriter::start(audit).map_err(|e| format!("cannot start the audit writer: {e}"))?);
    let observer = audit_observer(writer.clone(), run_id.clone());
    let proxy = ProxyState::with_observer(config, keys, Arc::new(secrets), ledger.clone(), Some(observer)).map_err(|e| e.to_string())?;
    let _ = handle.0.set((ledger, proxy.clone(), writer));
    Ok(proxy.bound_to_run(agent, &run_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_routes_both_providers() {
        let c = built_in_config().unwrap();
        c.check().unwrap();
        assert_eq!(clawkeep_proxy::routing::route(&c, "gpt-4o").unwrap().provider.name, "openai");
        assert_eq!(clawkeep_proxy::routing::route(&c, "claude-sonnet-4").unwrap().provider.name, "anthropic");
        assert!(clawkeep_proxy::routing::route(&c, "llama-3").is_none());
    }
}
