use super::route;
use crate::config::ProxyConfig;

fn config() -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "providers": [
            {"name": "openai", "kind": "openai", "base_url": "http://o", "secret": "o"},
            {"name": "anthropic", "kind": "anthropic", "base_url": "http://a", "secret": "a"}
        ],
        "routes": [
            {"prefix": "gpt-", "provider": "openai"},
            {"prefix": "claude-", "provider": "anthropic"},
            {"prefix": "gpt-4o", "provider": "anthropic"}
        ]
    }))
    .expect("config")
}

#[test]
fn first_prefix_wins() {
    let c = config();
    let r = route(&c, "gpt-4o-mini").expect("routed");
    assert_eq!(r.provider.name, "openai");
    assert_eq!(r.model, "gpt-4o-mini");
    assert_eq!(route(&c, "claude-sonnet-4").expect("routed").provider.name, "anthropic");
}

#[test]
fn provider_slash_model_strips_prefix() {
    let c = config();
    let r = route(&c, "anthropic/some-model").expect("routed");
    assert_eq!(r.provider.name, "anthropic");
    assert_eq!(r.model, "some-model");
}

#[test]
fn unknown_models_do_not_route() {
    let c = config();
    assert!(route(&c, "llama-3").is_none());
    assert!(route(&c, "nobody/gpt-4").is_none());
    assert!(route(&c, "openai/").is_none());
}
