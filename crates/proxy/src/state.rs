//! Everything a request handler needs, shared behind one `Arc`.

use crate::budget::Budgets;
use crate::config::{Price, ProviderConfig, ProxyConfig};
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::ledger::{unix_now, Ledger, LedgerError, UsageRow};
use crate::limits::{RateLimiter, Refused};
use crate::meter::{Recorded, Ticket};
use crate::usage::Usage;
use clawkeep_identity::{KeyRing, SealedStore, Zeroizing};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ProxyState {
    inner: Arc<Inner>,
    /// When set, only this agent's tokens are accepted (a listener that
    /// lives in one agent's jail serves that agent alone).
    bound: Option<Arc<str>>,
    /// When set, only tokens issued for this run are accepted, and when
    /// not, none that was (see `clawkeep_identity::KeyRing::verify_bound`).
    run: Option<Arc<str>>,
}

/// Told about every settled or refused request, after its ledger row is
/// queued: the row and, when the config's `audit_prompts` is on and the
/// request was admitted, the body the agent sent (never a reply or a key).
/// [`crate::audit_observer`] turns these into audit events.
#[derive(Clone)]
pub struct UsageObserver(pub Arc<ObserveFn>);

/// The observer's callback: the row, and the prompt when audited. The
/// response waits for what it returns.
pub type ObserveFn = dyn Fn(&UsageRow, Option<&[u8]>) -> Recorded + Send + Sync;

impl std::fmt::Debug for UsageObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UsageObserver")
    }
}

#[derive(Debug)]
struct Inner {
    config: ProxyConfig,
    keys: Arc<KeyRing>,
    secrets: Arc<SealedStore>,
    ledger: Arc<Ledger>,
    limiter: RateLimiter,
    budgets: Budgets,
    client: reqwest::Client,
    next_ticket: AtomicU64,
    /// Admitted requests not yet recorded (see [`ProxyState::wait_settled`]).
    open_tickets: Arc<AtomicUsize>,
    observer: Option<UsageObserver>,
    /// Provider keys read from the sealed store in the last
    /// [`KEY_CACHE_TTL`]: a changed or removed secret takes effect within it.
    key_cache: std::sync::Mutex<std::collections::HashMap<String, CachedKey>>,
    /// Each provider's URL for each of its endpoints, parsed once (parsing
    /// a URL, with its IDNA pass, was ~2 % of the proxy's time under load).
    urls: std::collections::HashMap<String, std::collections::HashMap<Endpoint, reqwest::Url>>,
}

/// A provider key and when it was read from the sealed store.
type CachedKey = (Zeroizing<Vec<u8>>, Instant);

/// Where `endpoint` of a provider at `base_url` is.
fn upstream_url(base_url: &str, endpoint: Endpoint) -> String {
    format!("{}{}", base_url.trim_end_matches('/'), endpoint.path())
}

/// How long a provider key read from the sealed store is reused.
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

impl ProxyState {
    pub fn new(config: ProxyConfig, keys: Arc<KeyRing>, secrets: Arc<SealedStore>, ledger: Arc<Ledger>) -> Result<ProxyState, ProxyError> {
        ProxyState::with_observer(config, keys, secrets, ledger, None)
    }

    /// Like [`ProxyState::new`], with `observer` told about every settled request.
    pub fn with_observer(
        config: ProxyConfig,
        keys: Arc<KeyRing>,
        secrets: Arc<SealedStore>,
        ledger: Arc<Ledger>,
        observer: Option<UsageObserver>,
    ) -> Result<ProxyState, ProxyError> {
        let client = reqwest::Client::builder()
            // A redirect would carry the provider key to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.upstream_timeout.min(Duration::from_secs(30)))
            .read_timeout(config.upstream_timeout)
            .build()
            .map_err(|e| ProxyError::Internal(format!("cannot build the HTTP client: {e}")))?;
        let budgets = Budgets::new(ledger.clone());
        // A base URL that does not parse (`ProxyConfig::check` refuses it
        // first) gets no entry: the request that needs it is refused.
        let urls = config
            .providers
            .iter()
            .map(|p| {
                let by_endpoint = Endpoint::ALL
                    .iter()
                    .filter(|e| e.kind() == p.kind)
                    .filter_map(|e| Some((*e, reqwest::Url::parse(&upstream_url(&p.base_url, *e)).ok()?)))
                    .collect();
                (p.name.clone(), by_endpoint)
            })
            .collect();
        let inner = Inner {
            config,
            keys,
            secrets,
            ledger,
            limiter: RateLimiter::default(),
            budgets,
            client,
            next_ticket: AtomicU64::new(1),
            open_tickets: Arc::default(),
            observer,
            key_cache: Default::default(),
            urls,
        };
        Ok(ProxyState { inner: Arc::new(inner), bound: None, run: None })
    }

    /// Waits (at most `limit`) until every admitted request has been
    /// recorded: one whose agent just hung up is settled when its
    /// connection is noticed closed, a moment after the agent is gone.
    /// Returns whether none is left.
    pub fn wait_settled(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.inner.open_tickets.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// The same proxy (limits, budgets, ledger shared), accepting only
    /// `agent`'s tokens: another agent's valid token is refused.
    pub fn bound_to(&self, agent: &str) -> ProxyState {
        ProxyState { inner: self.inner.clone(), bound: Some(Arc::from(agent)), run: None }
    }

    /// `bound_to(agent)`, accepting only the tokens issued for `run`: the
    /// proxy of one run, whose tokens then die with it.
    pub fn bound_to_run(&self, agent: &str, run: &str) -> ProxyState {
        ProxyState { inner: self.inner.clone(), bound: Some(Arc::from(agent)), run: Some(Arc::from(run)) }
    }

    pub(crate) fn bound_agent(&self) -> Option<&str> {
        self.bound.as_deref()
    }

    pub(crate) fn bound_run(&self) -> Option<&str> {
        self.run.as_deref()
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    pub(crate) fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    /// `provider`'s URL for `endpoint`, parsed when the proxy started.
    pub(crate) fn upstream_url(&self, provider: &str, endpoint: Endpoint) -> Option<&reqwest::Url> {
        self.inner.urls.get(provider)?.get(&endpoint)
    }

    /// Recorded requests for `agent` (all if `None`) at or after `since`
    /// (`YYYY-MM-DDTHH:MM:SSZ` or a prefix of it).
    pub fn usage(&self, agent: Option<&str>, since: Option<&str>) -> Result<Vec<UsageRow>, LedgerError> {
        self.inner.ledger.usage(agent, since)
    }

    pub(crate) fn provider_key(&self, provider: &ProviderConfig) -> Result<Zeroizing<Vec<u8>>, ProxyError> {
        let mut cache = self.inner.key_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((key, at)) = cache.get(&provider.secret) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(key.clone());
            }
        }
        match self.inner.secrets.get(&provider.secret) {
            Ok(Some(key)) => {
                cache.insert(provider.secret.clone(), (key.clone(), Instant::now()));
                Ok(key)
            }
            Ok(None) => Err(ProxyError::MissingProviderKey { provider: provider.name.clone(), secret: provider.secret.clone() }),
            Err(e) => Err(ProxyError::Internal(e.to_string())),
        }
    }

    /// Records a request refused before it was admitted (bad token, bad
    /// body, unknown model, a limit or the budget): no tokens, no cost, the
    /// status it got.
    pub(crate) fn record_refusal(&self, agent: &str, model: &str, provider: &str, status: u16, started: Instant) -> Recorded {
        let now = unix_now();
        let row = UsageRow {
            agent: agent.to_string(),
            model: model.to_string(),
            provider: provider.to_string(),
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            status,
            at: crate::ledger::format_utc(now),
        };
        if let Err(e) = self.inner.ledger.record(&row, now) {
            tracing::error!(error = %e, agent, "could not record a refused request");
        }
        self.inner.observer.as_ref().map(|o| (o.0)(&row, None)).unwrap_or_default()
    }

    /// Admits one request against the agent's limits and budget.
    pub(crate) fn admit(
        &self,
        agent: &str,
        model: &str,
        provider: &str,
        price: Option<Price>,
        reserved: Usage,
        billable: bool,
    ) -> Result<Ticket, ProxyError> {
        let config = &self.inner.config;
        let budget = config.budget_for(agent).filter(|_| billable);
        if budget.is_some_and(|b| b.usd_per_period.is_some()) && price.is_none() {
            return Err(ProxyError::Unpriced(model.to_string()));
        }
        let reserved = if billable { reserved } else { Usage::default() };
        let id = self.inner.next_ticket.fetch_add(1, Ordering::Relaxed);
        let slot = self.inner.limiter.admit(agent, config.limits_for(agent), reserved.total(), id).map_err(|r| match r {
            Refused::Wait { what, retry_after } => ProxyError::RateLimited { what, retry_after },
            // A 400: retrying could never help (and SDKs retry a 429 on their own).
            Refused::Never { needs, tpm } => ProxyError::OverTokenLimit { needs, tpm },
        })?;
        let cost = price.map(|p| p.cost(&reserved)).unwrap_or(0.0);
        let reservation = match budget {
            Some(b) => match self.inner.budgets.reserve(agent, b, reserved.total(), cost, unix_now()) {
                Ok(r) => Some((b, r)),
                Err(why) => {
                    // Never sent: it uses none of the minute's tokens.
                    slot.release(0);
                    return Err(ProxyError::BudgetExhausted(why));
                }
            },
            None => None,
        };
        self.inner.open_tickets.fetch_add(1, Ordering::SeqCst);
        Ok(Ticket {
            open: self.inner.open_tickets.clone(),
            ledger: self.inner.ledger.clone(),
            budgets: self.inner.budgets.clone(),
            agent: agent.to_string(),
            model: model.to_string(),
            provider: provider.to_string(),
            price,
            reserved,
            slot: Some(slot),
            reservation,
            started: Instant::now(),
            done: false,
            observer: self.inner.observer.clone(),
            prompt: None,
        })
    }
}
