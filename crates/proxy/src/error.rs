//! Every way a proxied request can fail, and the one place each becomes an
//! HTTP response. Messages never carry a provider key or an agent's token.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clawkeep_identity::TokenError;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("missing credentials: send your clawkeep token as `Authorization: Bearer <token>` or `x-api-key`")]
    MissingToken,
    #[error("{0}")]
    BadToken(TokenError),
    #[error("request body is larger than {limit} bytes; send a smaller request")]
    BodyTooLarge { limit: usize },
    #[error("request body is not a JSON object with a string `model`: {0}")]
    BadRequest(String),
    #[error("model `{0}` is not routed to any provider; ask the operator to add a route")]
    UnknownModel(String),
    #[error("model `{model}` is served by a {kind} provider; call {hint} instead")]
    WrongEndpoint { model: String, kind: &'static str, hint: &'static str },
    #[error("model `{0}` has no price configured, so the spending budget cannot be enforced; ask the operator to add one")]
    Unpriced(String),
    #[error("{what} limit reached; retry in {retry_after}s")]
    RateLimited { what: &'static str, retry_after: u64 },
    #[error("this request may use {needs} tokens, more than this agent's tokens-per-minute limit of {tpm}: it can never be admitted; lower max_tokens or send less")]
    OverTokenLimit { needs: u64, tpm: u64 },
    #[error("under a budget the output limit (max_tokens, max_completion_tokens or max_output_tokens) must be a whole number of tokens")]
    UnreadableOutputLimit,
    #[error("{0}; the budget resets at the start of the next period")]
    BudgetExhausted(String),
    #[error("provider `{provider}` has no key in the sealed store; ask the operator to run `clawkeep secret set {secret}`")]
    MissingProviderKey { provider: String, secret: String },
    #[error("the key sealed as `{secret}` for provider `{provider}` cannot be sent (a stray newline or control character?); ask the operator to seal it again with `clawkeep secret set {secret}`")]
    BadProviderKey { provider: String, secret: String },
    #[error("the proxy could not read its state: {0}")]
    Internal(String),
    #[error("provider `{0}` has a base_url that is not a URL; ask the operator to fix it in the proxy config")]
    BadBaseUrl(String),
    #[error("upstream provider `{0}` did not answer in time")]
    UpstreamTimeout(String),
    #[error("upstream provider `{provider}` failed with status {status}")]
    UpstreamStatus { provider: String, status: u16 },
    #[error("upstream provider `{0}` could not be reached")]
    UpstreamUnreachable(String),
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::MissingToken | ProxyError::BadToken(_) => StatusCode::UNAUTHORIZED,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_)
            | ProxyError::UnknownModel(_)
            | ProxyError::WrongEndpoint { .. }
            | ProxyError::Unpriced(_)
            | ProxyError::OverTokenLimit { .. }
            | ProxyError::UnreadableOutputLimit => StatusCode::BAD_REQUEST,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::BudgetExhausted(_) => StatusCode::PAYMENT_REQUIRED,
            ProxyError::MissingProviderKey { .. }
            | ProxyError::BadProviderKey { .. }
            | ProxyError::BadBaseUrl(_)
            | ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamStatus { .. } | ProxyError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The stable `error.type` string clients can match on.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::MissingToken | ProxyError::BadToken(_) => "authentication_error",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::BadRequest(_)
            | ProxyError::WrongEndpoint { .. }
            | ProxyError::OverTokenLimit { .. }
            | ProxyError::UnreadableOutputLimit => "invalid_request_error",
            ProxyError::UnknownModel(_) => "unknown_model",
            ProxyError::Unpriced(_) => "model_unpriced",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::BudgetExhausted(_) => "budget_exhausted",
            ProxyError::MissingProviderKey { .. }
            | ProxyError::BadProviderKey { .. }
            | ProxyError::BadBaseUrl(_)
            | ProxyError::Internal(_) => "proxy_error",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::UpstreamStatus { .. } | ProxyError::UpstreamUnreachable(_) => "upstream_error",
        }
    }

    pub fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// `{"error":{"type":..., "message":...}}`, readable by OpenAI and Anthropic clients alike.
pub fn error_body(kind: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "type": "error", "error": { "type": kind, "message": message } })
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(error_body(self.kind(), &self.to_string()))).into_response();
        if let ProxyError::RateLimited { retry_after, .. } = self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        resp
    }
}
