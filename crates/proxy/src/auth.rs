//! Who is calling: the agent's clawkeep token, from `Authorization: Bearer`
//! or `x-api-key` (what OpenAI and Anthropic SDKs send), checked against the
//! key ring. The token is used here and never forwarded.

use crate::error::ProxyError;
use axum::http::{header, HeaderMap};
use clawkeep_identity::{Claims, KeyRing};
use std::time::SystemTime;

pub fn token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok())).map(str::trim).filter(|t| !t.is_empty())
}

/// Checks the caller's token; when `bound` names an agent, a valid token of
/// any other agent is refused too, and the token's run must be `run`.
pub fn authenticate(keys: &KeyRing, bound: Option<&str>, run: Option<&str>, headers: &HeaderMap) -> Result<Claims, ProxyError> {
    let token = token(headers).ok_or(ProxyError::MissingToken)?;
    keys.verify_bound(token, bound, run, SystemTime::now()).map_err(ProxyError::BadToken)
}
