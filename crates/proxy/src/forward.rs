//! One proxied request, start to end: authenticate, read and route the body,
//! admit it against limits and budget, swap in the provider key, forward,
//! and pass the reply back while metering it.

use crate::auth::authenticate;
use crate::config::{ProviderConfig, ProviderKind};
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::meter::Charge;
use crate::redact::redact;
use crate::routing::route;
use crate::state::ProxyState;
use crate::stream::metered;
use crate::usage::{self, Usage};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use clawkeep_identity::Zeroizing;
use serde_json::Value;
use std::time::Instant;
use tracing::Instrument;

/// Request headers passed to the provider; everything else, the agent's
/// token above all, stays here.
const FORWARD_REQUEST: [&str; 3] = ["accept", "anthropic-version", "anthropic-beta"];
/// Response headers passed back to the agent.
const FORWARD_RESPONSE: [&str; 4] = ["content-type", "x-request-id", "request-id", "retry-after"];
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// Error bodies from the provider are read up to this much.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What is known of a request when it is refused before admission (its
/// ticket records everything after).
#[derive(Default)]
struct Seen {
    model: String,
    provider: String,
    admitted: bool,
}

pub async fn handle(state: ProxyState, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Result<Response, ProxyError> {
    let started = Instant::now();
    let claims = match authenticate(state.keys(), state.bound_agent(), state.bound_run(), &headers) {
        Ok(c) => c,
        Err(e) => {
            let who = state.bound_agent().unwrap_or("unauthenticated").to_string();
            state.record_refusal(&who, "", "", e.status_code(), started).recorded().await;
            return Err(e);
        }
    };
    // At warn level, so the request's agent shows on every warning even
    // when only warnings are logged (the default).
    let span = tracing::warn_span!("proxy", agent = %claims.sub, jti = %claims.jti, path = endpoint.path());
    let mut seen = Seen::default();
    let result = forward(state.clone(), endpoint, claims.sub.clone(), headers, body, &mut seen).instrument(span).await;
    if let Err(e) = &result {
        if !seen.admitted {
            state.record_refusal(&claims.sub, &seen.model, &seen.provider, e.status_code(), started).recorded().await;
        }
    }
    result
}

async fn forward(
    state: ProxyState,
    endpoint: Endpoint,
    agent: String,
    headers: HeaderMap,
    body: Body,
    seen: &mut Seen,
) -> Result<Response, ProxyError> {
    let config = state.config();
    let limit = config.max_body_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| ProxyError::BodyTooLarge { limit })?;
    // The fields the proxy acts on, read without building the whole tree;
    // a body it need not change is forwarded as the agent sent it.
    let head = serde_json::from_slice::<Head<'_>>(&raw).ok();
    let mut json: Option<Value> = None;
    let model = match head.as_ref().and_then(|h| h.model.as_deref()) {
        Some(m) => m.to_string(),
        None => {
            let v: Value = serde_json::from_slice(&raw).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
            let m = v.get("model").and_then(Value::as_str).ok_or_else(|| ProxyError::BadRequest("missing `model`".into()))?.to_string();
            json = Some(v);
            m
        }
    };
    seen.model.clone_from(&model);
    let routed = route(config, &model).ok_or_else(|| ProxyError::UnknownModel(model.clone()))?;
    let provider = routed.provider.clone();
    seen.provider.clone_from(&provider.name);
    if provider.kind != endpoint.kind() {
        let (kind, hint) = match provider.kind {
            ProviderKind::Openai => ("OpenAI-style", "/v1/chat/completions, /v1/responses or /v1/embeddings"),
            ProviderKind::Anthropic => ("Anthropic-style", "/v1/messages"),
        };
        return Err(ProxyError::WrongEndpoint { model, kind, hint });
    }
    let upstream_model = routed.model;
    let budgeted = config.budget_for(&agent).is_some();
    let (reserved, body) =
        upstream_body(&raw, head.as_ref(), json, &model, &upstream_model, endpoint, config.default_max_output_tokens, budgeted)?;
    let price = config.prices.get(&upstream_model).or_else(|| config.prices.get(&model)).copied();
    // Everything that can fail before the provider is contacted happens
    // before admission, so such a failure is never charged.
    let secret = state.provider_key(&provider)?;
    let request = upstream_request(&state, &provider, endpoint, &headers, body, &secret)?;
    let mut ticket = state.admit(&agent, &model, &provider.name, price, reserved, endpoint.billable())?;
    seen.admitted = true;
    if config.audit_prompts {
        ticket.prompt = Some(raw.clone());
    }

    let started = Instant::now();
    let sent = tokio::time::timeout(config.upstream_timeout, request.send()).await;
    let resp = match sent {
        Err(_) => {
            ticket.finish(Charge::Reservation, 504).recorded().await;
            return Err(ProxyError::UpstreamTimeout(provider.name));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %redacted_error(&e), "upstream request failed");
            // Only a failed connect proves the provider never saw the
            // request; a connection lost after it went out may still be
            // billed, so it is charged in full (fail closed).
            let (charge, err) = if e.is_timeout() {
                (Charge::Reservation, ProxyError::UpstreamTimeout(provider.name.clone()))
            } else if e.is_connect() {
                (Charge::Nothing, ProxyError::UpstreamUnreachable(provider.name.clone()))
            } else {
                (Charge::Reservation, ProxyError::UpstreamUnreachable(provider.name.clone()))
            };
            ticket.finish(charge, err.status_code()).recorded().await;
            return Err(err);
        }
        Ok(Ok(resp)) => resp,
    };
    tracing::debug!(status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "upstream answered");
    let status = resp.status();
    if status.is_server_error() {
        ticket.finish(Charge::Nothing, 502).recorded().await;
        return Err(ProxyError::UpstreamStatus { provider: provider.name, status: status.as_u16() });
    }
    let out_headers = response_headers(resp.headers());
    let is_sse = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"));

    if status.is_success() && is_sse {
        let stream = metered(resp.bytes_stream(), ticket, provider.kind, secret);
        return Ok(build(status, out_headers, Body::from_stream(stream)));
    }

    let cap = if status.is_success() { usize::MAX } else { MAX_ERROR_BODY };
    let read = tokio::time::timeout(config.upstream_timeout, read_capped(resp, cap)).await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::warn!(error = %redacted_error(&e), "upstream body failed");
            ticket.finish(Charge::Reservation, 502).recorded().await;
            return Err(ProxyError::UpstreamUnreachable(provider.name));
        }
        Err(_) => {
            ticket.finish(Charge::Reservation, 504).recorded().await;
            return Err(ProxyError::UpstreamTimeout(provider.name));
        }
    };
    let charge = if !status.is_success() {
        Charge::Nothing
    } else if !endpoint.billable() {
        Charge::Actual(Usage::default())
    } else {
        usage::from_body(&bytes).map_or(Charge::Reservation, Charge::Actual)
    };
    ticket.finish(charge, status.as_u16()).recorded().await;
    Ok(build(status, out_headers, Body::from(redact(bytes, &secret))))
}

/// What goes upstream, and the usage to reserve for it. The body as the
/// agent sent it when nothing needs changing; else the tree with the
/// upstream model and, for an OpenAI chat stream, `include_usage` (without
/// it such streams carry no usage, and every one would be charged its full
/// reservation). With `bounded` (the agent has a budget) a request that
/// names no output limit gets the default one written in, so the provider
/// can never produce more than was reserved. `json` is the tree when it was
/// already parsed.
#[allow(clippy::too_many_arguments)]
fn upstream_body(
    raw: &Bytes,
    head: Option<&Head<'_>>,
    json: Option<Value>,
    model: &str,
    upstream_model: &str,
    endpoint: Endpoint,
    default_output: u64,
    bounded: bool,
) -> Result<(Usage, Bytes), ProxyError> {
    let needs_usage = |streaming: bool| streaming && endpoint == Endpoint::ChatCompletions;
    let cap = output_field(endpoint).filter(|_| bounded);
    if let Some(h) = head.filter(|_| upstream_model == model) {
        let reserved = h.reservation(raw.len(), endpoint, default_output);
        let add_cap = cap.filter(|_| !h.names_output());
        let add_usage = needs_usage(h.stream == Some(true)) && !h.include_usage();
        if add_cap.is_none() && !add_usage {
            return Ok((reserved, raw.clone()));
        }
        // The common SDK request: no stream_options and no output limit at
        // all (not even null, which takes the tree, so the provider never
        // reads a key twice): the members are added to the body as sent.
        if (!add_usage || h.stream_options.is_none()) && (add_cap.is_none() || !h.names_output_at_all()) {
            let mut members = Vec::new();
            if add_usage {
                members.push(r#""stream_options":{"include_usage":true}"#.to_string());
            }
            if let Some(field) = add_cap {
                members.push(format!(r#""{field}":{default_output}"#));
            }
            if let Some(body) = with_members(raw, &members) {
                return Ok((reserved, body));
            }
        }
    }
    let mut json = match json {
        Some(v) => v,
        None => serde_json::from_slice(raw).map_err(|e| ProxyError::BadRequest(e.to_string()))?,
    };
    json["model"] = Value::String(upstream_model.to_string());
    if needs_usage(json.get("stream").and_then(Value::as_bool) == Some(true)) {
        match json.get_mut("stream_options").and_then(Value::as_object_mut) {
            Some(opts) => {
                opts.insert("include_usage".into(), Value::Bool(true));
            }
            None => json["stream_options"] = serde_json::json!({ "include_usage": true }),
        }
    }
    if let Some(field) = cap {
        let named: Vec<&Value> = OUTPUT_FIELDS.iter().filter_map(|k| json.get(*k)).filter(|v| !v.is_null()).collect();
        if named.iter().any(|v| v.as_u64().is_none()) {
            return Err(ProxyError::UnreadableOutputLimit);
        }
        if named.is_empty() {
            json[field] = Value::from(default_output);
        }
    }
    let reserved = reservation(&json, raw.len(), endpoint, default_output);
    Ok((reserved, Bytes::from(serde_json::to_vec(&json).map_err(|e| ProxyError::Internal(e.to_string()))?)))
}

/// The request fields that limit a reply's length, by API.
const OUTPUT_FIELDS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// The field that limits an endpoint's output, written into a budgeted
/// request that names none (OpenAI's chat API takes max_completion_tokens
/// on every current model; max_tokens is refused by its reasoning models).
fn output_field(endpoint: Endpoint) -> Option<&'static str> {
    match endpoint {
        Endpoint::ChatCompletions => Some("max_completion_tokens"),
        Endpoint::Responses => Some("max_output_tokens"),
        Endpoint::Messages => Some("max_tokens"),
        _ => None,
    }
}

/// `raw` (a JSON object with at least one member, none of them named in
/// `members`) with `members` (`"key":value` texts) added at its end.
fn with_members(raw: &[u8], members: &[String]) -> Option<Bytes> {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace())?;
    let end = raw.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if raw[start] != b'{' || raw[end] != b'}' {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + members.iter().map(|m| m.len() + 1).sum::<usize>());
    out.extend_from_slice(&raw[..end]);
    for m in members {
        out.push(b',');
        out.extend_from_slice(m.as_bytes());
    }
    out.extend_from_slice(&raw[end..]);
    Some(Bytes::from(out))
}

/// The request fields the proxy reads. A body this does not parse (a
/// float `max_tokens`, a duplicate key: serde refuses both here) takes the
/// general path, which reads the whole tree.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    stream: Option<bool>,
    /// `None` when the key is absent, `Some(None)` when it is null.
    #[serde(default, deserialize_with = "present")]
    stream_options: Option<Option<StreamOptions>>,
    /// The output limits: `None` when absent, `Some(None)` when null.
    #[serde(default, deserialize_with = "present")]
    max_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_completion_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_output_tokens: Option<Option<u64>>,
    /// OpenAI's number of choices: each may use `max_tokens`.
    n: Option<u64>,
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

impl Head<'_> {
    fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.as_ref()).and_then(|o| o.include_usage) == Some(true)
    }

    fn limits(&self) -> [Option<Option<u64>>; 3] {
        [self.max_tokens, self.max_completion_tokens, self.max_output_tokens]
    }

    /// Whether an output limit is named with a number.
    fn names_output(&self) -> bool {
        self.limits().into_iter().flatten().flatten().next().is_some()
    }

    /// Whether an output limit key is there at all, null included.
    fn names_output_at_all(&self) -> bool {
        self.limits().iter().any(Option::is_some)
    }

    /// As [`reservation`] reads it from the whole tree.
    fn reservation(&self, body_len: usize, endpoint: Endpoint, default_output: u64) -> Usage {
        let output = match endpoint.generates() {
            true => self.limits().into_iter().flatten().flatten().max().unwrap_or(default_output),
            false => 0,
        };
        bounded(body_len, output, self.n, endpoint)
    }
}

/// Tokens this request may use: the body's length bounds its input tokens
/// (a token is at least one byte), and `max_tokens` (or the default) its output.
fn reservation(json: &Value, body_len: usize, endpoint: Endpoint, default_output: u64) -> Usage {
    // Where several limits are named, the largest is the one to fear.
    let output = if endpoint.generates() {
        OUTPUT_FIELDS.iter().filter_map(|k| json.get(*k).and_then(Value::as_u64)).max().unwrap_or(default_output)
    } else {
        0
    };
    bounded(body_len, output, json.get("n").and_then(Value::as_u64), endpoint)
}

/// No reply is larger than this many tokens; a larger `max_tokens` is
/// reserved as this much (a budget smaller than it refuses the request
/// anyway), so a ledger row never holds an absurd count.
const MAX_RESERVED_OUTPUT: u64 = 1 << 24;

/// The reservation: `n` choices may each use the whole output allowance,
/// and an Anthropic prompt may be written to the cache whole (at the cache
/// write price).
fn bounded(body_len: usize, output: u64, n: Option<u64>, endpoint: Endpoint) -> Usage {
    let output = output.saturating_mul(n.unwrap_or(1).max(1)).min(MAX_RESERVED_OUTPUT);
    let input = body_len as u64;
    let cache_write_tokens = if endpoint == Endpoint::Messages { input } else { 0 };
    Usage { input_tokens: input, output_tokens: output, cache_write_tokens }
}

fn upstream_request(
    state: &ProxyState,
    provider: &ProviderConfig,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Bytes,
    key: &[u8],
) -> Result<reqwest::RequestBuilder, ProxyError> {
    let url = state.upstream_url(&provider.name, endpoint).ok_or_else(|| ProxyError::BadBaseUrl(provider.name.clone()))?.clone();
    let mut out = reqwest::header::HeaderMap::new();
    for name in FORWARD_REQUEST {
        if let Some(v) = headers.get(name) {
            out.insert(HeaderName::from_static(name), v.clone());
        }
    }
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let (name, value) = match provider.kind {
        ProviderKind::Openai => (header::AUTHORIZATION, Zeroizing::new([b"Bearer ".as_slice(), key].concat())),
        ProviderKind::Anthropic => {
            out.entry("anthropic-version").or_insert(HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION));
            (HeaderName::from_static("x-api-key"), Zeroizing::new(key.to_vec()))
        }
    };
    let mut value = HeaderValue::from_bytes(&value)
        .map_err(|_| ProxyError::BadProviderKey { provider: provider.name.clone(), secret: provider.secret.clone() })?;
    value.set_sensitive(true);
    out.insert(name, value);
    Ok(state.client().post(url).headers(out).body(body))
}

fn response_headers(upstream: &reqwest::header::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARD_RESPONSE {
        if let Some(v) = upstream.get(name) {
            out.insert(HeaderName::from_static(name), v.clone());
        }
    }
    out
}

fn build(status: reqwest::StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    *resp.headers_mut() = headers;
    resp
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Bytes, reqwest::Error> {
    // Most replies arrive in one chunk: that one is kept as it is.
    let Some(first) = resp.chunk().await? else { return Ok(Bytes::new()) };
    if first.len() >= cap {
        return Ok(first.slice(..cap));
    }
    let Some(second) = resp.chunk().await? else { return Ok(first) };
    let mut buf = first.to_vec();
    let mut next = Some(second);
    while let Some(chunk) = next {
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= cap {
            break;
        }
        next = resp.chunk().await?;
    }
    Ok(Bytes::from(buf))
}

/// reqwest errors name the URL, never headers; strip the URL anyway so a
/// key embedded in a misconfigured base_url cannot reach a log.
fn redacted_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind} error: {source}"),
        None => format!("{kind} error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(raw: &str, upstream_model: &str, endpoint: Endpoint) -> (Usage, Bytes) {
        send_as(raw, upstream_model, endpoint, false).unwrap()
    }

    fn send_as(raw: &str, upstream_model: &str, endpoint: Endpoint, budgeted: bool) -> Result<(Usage, Bytes), ProxyError> {
        let raw = Bytes::from(raw.to_string());
        let head = serde_json::from_slice::<Head<'_>>(&raw).ok();
        let model = head.as_ref().and_then(|h| h.model.as_deref()).unwrap_or("gpt-4o").to_string();
        upstream_body(&raw, head.as_ref(), None, &model, upstream_model, endpoint, 4096, budgeted)
    }

    /// Under a budget the provider is never left to pick the reply's
    /// length: a request naming no limit gets the default written in.
    #[test]
    fn a_budgeted_request_always_names_its_output_limit() {
        let tree = |b: &Bytes| serde_json::from_slice::<Value>(b).unwrap();
        let (usage, body) = send_as(r#"{"model":"gpt-4o","messages":[]}"#, "gpt-4o", Endpoint::ChatCompletions, true).unwrap();
        assert_eq!(&body[..], br#"{"model":"gpt-4o","messages":[],"max_completion_tokens":4096}"#);
        assert_eq!(usage.output_tokens, 4096);
        let (_, body) = send_as(r#"{"model":"gpt-4o","stream":true}"#, "gpt-4o", Endpoint::ChatCompletions, true).unwrap();
        assert_eq!(
            (tree(&body)["stream_options"]["include_usage"].as_bool(), tree(&body)["max_completion_tokens"].as_u64()),
            (Some(true), Some(4096))
        );
        let (_, body) = send_as(r#"{"model":"claude-x","messages":[]}"#, "claude-x", Endpoint::Messages, true).unwrap();
        assert_eq!(tree(&body)["max_tokens"], 4096);
        let (_, body) = send_as(r#"{"model":"gpt-4o","input":"hi"}"#, "gpt-4o", Endpoint::Responses, true).unwrap();
        assert_eq!(tree(&body)["max_output_tokens"], 4096);
        // A renamed model takes the tree, and gets the limit there too.
        let (_, body) = send_as(r#"{"model":"openai/gpt-4o"}"#, "gpt-4o", Endpoint::ChatCompletions, true).unwrap();
        assert_eq!(tree(&body)["max_completion_tokens"], 4096);
        // A named limit is kept as sent; the largest of several is reserved.
        let raw = r#"{"model":"gpt-4o","max_tokens":1,"max_completion_tokens":900}"#;
        let (usage, body) = send_as(raw, "gpt-4o", Endpoint::ChatCompletions, true).unwrap();
        assert_eq!((&body[..], usage.output_tokens), (raw.as_bytes(), 900));
        // A limit named as null is replaced, never sent twice.
        let (_, body) = send_as(r#"{"model":"gpt-4o","max_completion_tokens":null}"#, "gpt-4o", Endpoint::ChatCompletions, true).unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap().matches("max_completion_tokens").count(), 1);
        assert_eq!(tree(&body)["max_completion_tokens"], 4096);
        // A limit the proxy cannot read is refused rather than guessed.
        let err = send_as(r#"{"model":"gpt-4o","max_tokens":1e9}"#, "gpt-4o", Endpoint::ChatCompletions, true).unwrap_err();
        assert!(matches!(err, ProxyError::UnreadableOutputLimit), "{err}");
        // Without a budget nothing is added.
        let raw = r#"{"model":"gpt-4o","messages":[]}"#;
        assert_eq!(send_as(raw, "gpt-4o", Endpoint::ChatCompletions, false).unwrap().1, raw.as_bytes());
    }

    #[test]
    fn a_body_that_needs_no_change_goes_as_sent() {
        let raw = "{ \"messages\": [],  \"model\":\"gpt-4o\", \"max_tokens\": 7 }";
        let (usage, body) = send(raw, "gpt-4o", Endpoint::ChatCompletions);
        assert_eq!(body, raw.as_bytes(), "byte for byte");
        assert_eq!(usage, Usage { input_tokens: raw.len() as u64, output_tokens: 7, cache_write_tokens: 0 });
        let streamed = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#;
        assert_eq!(send(streamed, "gpt-4o", Endpoint::ChatCompletions).1, streamed.as_bytes());
        // Anthropic streams report usage themselves.
        let anthropic = r#"{"model":"claude-x","stream":true,"max_tokens":3}"#;
        assert_eq!(send(anthropic, "claude-x", Endpoint::Messages).1, anthropic.as_bytes());
    }

    #[test]
    fn a_body_that_must_change_is_rewritten() {
        let tree = |b: &Bytes| serde_json::from_slice::<Value>(b).unwrap();
        // No stream_options: the member is added to the body as sent.
        let (usage, body) = send(" {\"model\":\"gpt-4o\",\"stream\":true,\"max_tokens\":5}\n", "gpt-4o", Endpoint::ChatCompletions);
        assert_eq!(&body[..], br#" {"model":"gpt-4o","stream":true,"max_tokens":5,"stream_options":{"include_usage":true}}"#.iter().chain(b"\n").copied().collect::<Vec<_>>());
        assert_eq!(usage.output_tokens, 5);
        // stream_options null, or without include_usage: the tree, one key.
        for raw in [r#"{"model":"gpt-4o","stream":true,"stream_options":null}"#, r#"{"model":"gpt-4o","stream":true,"stream_options":{}}"#]
        {
            let (_, body) = send(raw, "gpt-4o", Endpoint::ChatCompletions);
            assert_eq!(tree(&body)["stream_options"]["include_usage"], true, "{raw}");
            assert_eq!(std::str::from_utf8(&body).unwrap().matches("stream_options").count(), 1, "{raw}");
        }
        let (_, body) =
            send(r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}"#, "gpt-4o", Endpoint::ChatCompletions);
        assert_eq!(tree(&body)["stream_options"]["include_usage"], true);
        let (_, body) = send(r#"{"model":"openai/gpt-4o"}"#, "gpt-4o", Endpoint::ChatCompletions);
        assert_eq!(tree(&body)["model"], "gpt-4o");
        // A duplicate key is read the way the whole tree reads it (the last
        // wins) and sent normalised, so the provider cannot read another.
        let (usage, body) = send(r#"{"model":"gpt-4o","max_tokens":1,"max_tokens":900}"#, "gpt-4o", Endpoint::ChatCompletions);
        assert_eq!((usage.output_tokens, tree(&body)["max_tokens"].as_u64()), (900, Some(900)));
        assert_eq!(std::str::from_utf8(&body).unwrap().matches("max_tokens").count(), 1);
        // n choices reserve n times the allowance, on both paths; an
        // absurd allowance is bounded.
        assert_eq!(send(r#"{"model":"gpt-4o","max_tokens":10,"n":3}"#, "gpt-4o", Endpoint::ChatCompletions).0.output_tokens, 30);
        assert_eq!(send(r#"{"model":"openai/gpt-4o","max_tokens":10,"n":3}"#, "gpt-4o", Endpoint::ChatCompletions).0.output_tokens, 30);
        let huge = send(r#"{"model":"gpt-4o","max_tokens":18446744073709551615,"n":9}"#, "gpt-4o", Endpoint::ChatCompletions);
        assert_eq!(huge.0.output_tokens, MAX_RESERVED_OUTPUT);
        // An Anthropic prompt may be written to the cache whole: reserved so.
        let (usage, _) = send(r#"{"model":"claude-x","max_tokens":3}"#, "claude-x", Endpoint::Messages);
        assert_eq!((usage.cache_write_tokens, usage.input_tokens), (35, 35));
        // A float max_tokens: the default reservation, as before.
        let (usage, _) = send(r#"{"model":"gpt-4o","max_tokens":1e9}"#, "gpt-4o", Endpoint::ChatCompletions);
        assert_eq!(usage.output_tokens, 4096);
    }
}
