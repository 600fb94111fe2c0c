//! The proxy's configuration, deserialised from the `[proxy]` table of the
//! clawkeep TOML file (the caller parses the file). Provider keys are never
//! held here: a provider names the sealed-store entry that holds its key.

use crate::usage::Usage;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// 10 MiB: a long chat context with a few images fits; a runaway upload does not.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Tokens reserved for the reply when the request sets no `max_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// Everything the proxy needs besides the key ring and the sealed store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub providers: Vec<ProviderConfig>,
    /// First matching prefix wins; `provider/model` is routed before these.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Limits for every agent unless `agents` overrides them.
    #[serde(default)]
    pub limits: Limits,
    /// Budget for every agent unless `agents` overrides it; none means unmetered.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Per-agent overrides, keyed by agent id (the token's `sub`).
    #[serde(default)]
    pub agents: HashMap<String, AgentOverride>,
    /// Keyed by the model name sent upstream.
    #[serde(default)]
    pub prices: HashMap<String, Price>,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Bounds the wait for upstream response headers and each read of its body.
    #[serde(default = "default_upstream_timeout", with = "secs")]
    pub upstream_timeout: Duration,
    /// Output tokens reserved when a request sets no `max_tokens`.
    #[serde(default = "default_max_output_tokens")]
    pub default_max_output_tokens: u64,
    /// Hands each admitted request's body (the prompt, as the agent sent
    /// it) to the usage observer, which puts it in the call's audit event.
    /// Off by default: a prompt holds whatever the agent read.
    #[serde(default)]
    pub audit_prompts: bool,
}

impl ProxyConfig {
    /// The limits that apply to `agent`.
    pub fn limits_for(&self, agent: &str) -> Limits {
        self.agents.get(agent).and_then(|a| a.limits).unwrap_or(self.limits)
    }

    /// The budget that applies to `agent`, if any.
    pub fn budget_for(&self, agent: &str) -> Option<Budget> {
        match self.agents.get(agent) {
            Some(AgentOverride { budget: Some(b), .. }) => Some(*b),
            _ => self.budget,
        }
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// What makes this config unusable, said so the operator can fix it: a
    /// route naming no provider, a provider whose base_url is not a URL
    /// (the message never repeats the URL, which may carry credentials).
    pub fn check(&self) -> Result<(), String> {
        for r in &self.routes {
            if self.provider(&r.provider).is_none() {
                return Err(format!("route '{}' names unknown provider '{}'", r.prefix, r.provider));
            }
        }
        for p in &self.providers {
            if let Err(e) = reqwest::Url::parse(&p.base_url) {
                return Err(format!("provider '{}': base_url is not a URL ({e}); write it as https://host[:port]", p.name));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Scheme and host, e.g. `https://api.openai.com`; the request path is appended.
    pub base_url: String,
    /// Name of the sealed-store entry holding the provider key.
    pub secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    pub provider: String,
}

/// Per-agent request limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per sliding minute.
    pub rpm: Option<u32>,
    /// Tokens (reserved and settled) per sliding minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once, streams included until they end.
    pub concurrent: Option<u32>,
}

/// A hard budget per fixed period (aligned to the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub tokens_per_period: Option<u64>,
    pub period_secs: u64,
    pub usd_per_period: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOverride {
    pub limits: Option<Limits>,
    pub budget: Option<Budget>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Anthropic prompt-cache writes; by default twice the input price
    /// (what a one-hour cache write costs, the most a write can).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

impl Price {
    pub fn cost(&self, usage: &Usage) -> f64 {
        let writes = usage.cache_write_tokens.min(usage.input_tokens);
        let plain = usage.input_tokens - writes;
        let write_price = self.cache_write_per_mtok.unwrap_or(2.0 * self.input_per_mtok);
        (plain as f64 * self.input_per_mtok + writes as f64 * write_price + usage.output_tokens as f64 * self.output_per_mtok) / 1_000_000.0
    }
}

fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_max_output_tokens() -> u64 {
    DEFAULT_MAX_OUTPUT_TOKENS
}

/// Durations in config are whole seconds.
mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}
