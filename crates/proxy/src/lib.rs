//! clawkeep-proxy: the inference proxy between jailed agents and model
//! providers.
//!
//! Guarantees: an agent authenticates with its short-lived clawkeep token,
//! which is never forwarded; the provider key is read from the sealed store
//! per request, sent only to the configured provider, and scrubbed from
//! anything sent back. Every admitted request is metered against per-agent
//! limits and a hard budget (reserve before, settle after, fail closed) and
//! recorded in the usage ledger.

pub mod audit;
pub mod auth;
pub mod budget;
pub mod config;
pub mod endpoint;
pub mod error;
mod forward;
pub mod ledger;
pub mod limits;
pub mod meter;
pub mod redact;
pub mod routing;
pub mod state;
mod stream;
pub mod usage;

pub use audit::audit_observer;
pub use config::{AgentOverride, Budget, Limits, Price, ProviderConfig, ProviderKind, ProxyConfig, RouteConfig};
pub use error::ProxyError;
pub use ledger::{Ledger, LedgerError, UsageRow};
pub use meter::Recorded;
pub use state::{ProxyState, UsageObserver};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use endpoint::Endpoint;

/// The proxy's HTTP API, OpenAI- and Anthropic-compatible.
pub fn router(state: ProxyState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(|s, h, b| serve(s, Endpoint::ChatCompletions, h, b)))
        .route("/v1/responses", post(|s, h, b| serve(s, Endpoint::Responses, h, b)))
        .route("/v1/embeddings", post(|s, h, b| serve(s, Endpoint::Embeddings, h, b)))
        .route("/v1/messages", post(|s, h, b| serve(s, Endpoint::Messages, h, b)))
        .route("/v1/messages/count_tokens", post(|s, h, b| serve(s, Endpoint::CountTokens, h, b)))
        .route("/v1/models", get(models))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

/// Serves the proxy on a TCP listener with TCP_NODELAY on every accepted
/// connection: without it each small SSE frame that follows another waits
/// for a delayed ACK (about 40 ms), which stalls streams.
pub async fn serve_tcp(listener: tokio::net::TcpListener, state: ProxyState) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state)).await
}

async fn serve(State(state): State<ProxyState>, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    forward::handle(state, endpoint, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

/// The public keys that verify agent tokens (current and rotated-out ones
/// whose tokens may still be valid), for services that check them too.
async fn jwks(State(state): State<ProxyState>) -> Response {
    Json(state.keys().jwks()).into_response()
}

/// The priced models, in OpenAI's list shape; answered locally.
async fn models(State(state): State<ProxyState>, headers: HeaderMap) -> Response {
    if let Err(e) = auth::authenticate(state.keys(), state.bound_agent(), state.bound_run(), &headers) {
        return e.into_response();
    }
    let config = state.config();
    let mut data: Vec<_> = config
        .prices
        .keys()
        .map(|model| {
            let owner = routing::route(config, model).map(|r| r.provider.name.clone()).unwrap_or_default();
            serde_json::json!({ "id": model, "object": "model", "owned_by": owner })
        })
        .collect();
    data.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}
