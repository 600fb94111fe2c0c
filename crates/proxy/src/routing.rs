//! Model name → provider. `provider/model` names the provider outright and is
//! sent upstream as `model`; otherwise the first route whose prefix matches wins.

use crate::config::{ProviderConfig, ProxyConfig};

#[derive(Debug, Clone)]
pub struct Routed<'a> {
    pub provider: &'a ProviderConfig,
    /// The model name to send upstream.
    pub model: String,
}

pub fn route<'a>(config: &'a ProxyConfig, model: &str) -> Option<Routed<'a>> {
    if let Some((name, rest)) = model.split_once('/') {
        if let Some(provider) = config.provider(name) {
            if !rest.is_empty() {
                return Some(Routed { provider, model: rest.to_string() });
            }
        }
    }
    let rule = config.routes.iter().find(|r| model.starts_with(&r.prefix))?;
    let provider = config.provider(&rule.provider)?;
    Some(Routed { provider, model: model.to_string() })
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
