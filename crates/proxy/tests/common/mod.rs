//! Test harness: a fake provider speaking OpenAI and Anthropic formats, and a
//! proxy in front of it, both on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)]

pub mod upstream;

use clawkeep_audit::{AuditLog, GroupWriter};
use clawkeep_identity::{KeyRing, MasterKey, SealedStore};
use clawkeep_proxy::{audit_observer, Ledger, ProxyConfig, ProxyState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use upstream::{FakeUpstream, Keys, Options};

/// The harness's audit log, in its temp dir.
const AUDIT_FILE: &str = "audit.jsonl";
pub const OPENAI_KEY: &str = "sk-proj-REALOPENAIKEY-0123456789abcdef";
pub const ANTHROPIC_KEY: &str = "sk-ant-api03-REALANTHROPICKEY-fedcba9876543210";

pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub keys: Arc<KeyRing>,
    pub state: ProxyState,
    pub upstream: FakeUpstream,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// Where every request's `llm.call` event goes, as in `clawkeep run`.
    pub audit: Arc<GroupWriter>,
}

pub fn base_config(upstream: &str) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "providers": [
            {"name": "openai", "kind": "openai", "base_url": upstream, "secret": "openai-key"},
            {"name": "anthropic", "kind": "anthropic", "base_url": upstream, "secret": "anthropic-key"}
        ],
        "routes": [
            {"prefix": "gpt-", "provider": "openai"},
            {"prefix": "text-embedding-", "provider": "openai"},
            {"prefix": "claude-", "provider": "anthropic"}
        ],
        "prices": {
            "gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
            "claude-sonnet-4": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
        },
        "upstream_timeout": 2
    }))
    .unwrap()
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut ProxyConfig)) -> Harness {
        Harness::build(Options::default(), tweak).await
    }

    /// A proxy in front of a fake provider started with `options`; the
    /// provider accepts only the keys in the sealed store.
    pub async fn build(options: Options, tweak: impl FnOnce(&mut ProxyConfig)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(KeyRing::open(&dir.path().join("keys")).unwrap());
        let secrets = SealedStore::open(&dir.path().join("secrets"), MasterKey::from_bytes([7; 32])).unwrap();
        secrets.set("openai-key", OPENAI_KEY.as_bytes()).unwrap();
        secrets.set("anthropic-key", ANTHROPIC_KEY.as_bytes()).unwrap();
        let ledger = Arc::new(Ledger::open(&dir.path().join("proxy.db")).unwrap());
        let keys_accepted = Keys { openai: OPENAI_KEY.into(), anthropic: ANTHROPIC_KEY.into() };
        let upstream = FakeUpstream::start_with(Options { keys: Some(keys_accepted), ..options }).await;
        let mut config = base_config(&upstream.url());
        tweak(&mut config);
        // Audited as `clawkeep run` audits its proxy: one event per request.
        let log = Arc::new(AuditLog::open(&dir.path().join(AUDIT_FILE)).unwrap());
        let audit = Arc::new(GroupWriter::start(log).unwrap());
        let observer = audit_observer(audit.clone(), "test-run".into());
        let state = ProxyState::with_observer(config, keys.clone(), Arc::new(secrets), ledger, Some(observer)).unwrap();
        let listener = nodelay(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let app = clawkeep_proxy::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        Harness { _dir: dir, keys, state, upstream, addr, client, audit }
    }

    /// The audit log's events as the file holds them now (no flush: a
    /// request's event is written before its response ends).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.audit_path()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn audit_path(&self) -> std::path::PathBuf {
        self._dir.path().join(AUDIT_FILE)
    }

    pub fn token(&self, agent: &str) -> String {
        self.keys.issue(agent, &["inference".to_string()], Duration::from_secs(600)).unwrap().token
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(&self, path: &str, token: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(token).json(body).send().await.unwrap()
    }

    pub async fn post_anthropic(&self, token: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/messages"))
            .header("x-api-key", token)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Waits until the ledger has `n` rows for `agent` (streams settle after the last chunk).
    pub async fn rows(&self, agent: &str, n: usize) -> Vec<clawkeep_proxy::UsageRow> {
        for _ in 0..200 {
            let rows = self.state.usage(Some(agent), None).unwrap();
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.state.usage(Some(agent), None).unwrap()
    }
}

/// A listener whose connections send small writes at once. Without it, a
/// stream's frames wait on Nagle's algorithm for the peer's delayed ACK
/// (~40 ms each on Linux) whenever one is already in flight.
pub fn nodelay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

/// Asserts that no provider key appears anywhere in a response.
pub fn assert_no_secret(headers: &reqwest::header::HeaderMap, body: &[u8]) {
    for key in [OPENAI_KEY, ANTHROPIC_KEY] {
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains(key), "provider key leaked in body: {text}");
        for (name, value) in headers {
            assert!(!String::from_utf8_lossy(value.as_bytes()).contains(key), "provider key leaked in header {name}");
        }
    }
}
