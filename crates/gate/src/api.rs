//! The operator's HTTP API: a Unix socket in the state directory by
//! default (its 0600 mode is the authentication), optionally loopback TCP
//! with a bearer token. Handlers are thin: they call [`Gate`] and turn its
//! errors into responses in one place.

use crate::events::GateEvent;
use crate::supervisor::{Gate, Resolve, ResolveError};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clawkeep_store::{HistoryFilter, Scope, StoreError};
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;

#[derive(Clone)]
struct Api {
    gate: Gate,
    token: Option<Arc<String>>,
}

/// An error as the API reports it: status plus `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        let status = match &e {
            ResolveError::Unknown(_) | ResolveError::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            ResolveError::Store(StoreError::NotPending { .. }) => StatusCode::CONFLICT,
            ResolveError::NoPolicyFile | ResolveError::HiddenArgs(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(ResolveError::Store(e))
    }
}

/// The router; `token` (for TCP) is checked as `Authorization: Bearer`.
pub fn router(gate: Gate, token: Option<String>) -> Router {
    let api = Api { gate, token: token.map(Arc::new) };
    Router::new()
        .route("/api/status", get(status))
        .route("/api/queue", get(queue))
        .route("/api/queue/approve", post(approve_batch))
        .route("/api/queue/{id}/approve", post(approve))
        .route("/api/queue/{id}/deny", post(deny))
        .route("/api/queue/{id}/always-rule", get(always_rule))
        .route("/api/history", get(history))
        .route("/api/kill", post(kill))
        .route("/api/events", get(events))
        .layer(middleware::from_fn_with_state(api.clone(), auth))
        .with_state(api)
}

async fn auth(State(api): State<Api>, req: Request, next: Next) -> Response {
    if let Some(token) = &api.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            return ApiError(StatusCode::UNAUTHORIZED, "missing or wrong bearer token".into()).into_response();
        }
    }
    next.run(req).await
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn status(State(api): State<Api>) -> Result<Json<serde_json::Value>, ApiError> {
    let pending = api.gate.store().pending()?.into_iter().filter(|a| a.agent == api.gate.agent()).count();
    Ok(Json(json!({"agent": api.gate.agent(), "pending": pending})))
}

async fn queue(State(api): State<Api>) -> Result<Json<serde_json::Value>, ApiError> {
    let items: Vec<_> = api.gate.store().pending()?.into_iter().filter(|a| a.agent == api.gate.agent()).collect();
    Ok(Json(json!(items)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    scope: Option<String>,
    by: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DenyBody {
    reason: Option<String>,
    by: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    ids: Vec<i64>,
    scope: Option<String>,
    by: Option<String>,
}

fn scope_of(s: Option<String>) -> Result<Scope, ApiError> {
    s.as_deref().unwrap_or("once").parse::<Scope>().map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn approve(
    State(api): State<Api>,
    Path(id): Path<i64>,
    body: Option<Json<ApproveBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let r = Resolve { approve: true, scope: scope_of(b.scope)?, by: b.by.unwrap_or_else(|| "api".into()), reason: None };
    let gate = api.gate.clone();
    let a = tokio::task::spawn_blocking(move || gate.resolve(id, &r))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(json!(a)))
}

async fn approve_batch(State(api): State<Api>, Json(b): Json<BatchBody>) -> Result<Json<serde_json::Value>, ApiError> {
    let scope = scope_of(b.scope)?;
    let by = b.by.unwrap_or_else(|| "api".into());
    let mut done = Vec::new();
    for id in b.ids {
        let r = Resolve { approve: true, scope, by: by.clone(), reason: None };
        let gate = api.gate.clone();
        let a = tokio::task::spawn_blocking(move || gate.resolve(id, &r))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        done.push(a);
    }
    Ok(Json(json!(done)))
}

async fn deny(State(api): State<Api>, Path(id): Path<i64>, body: Option<Json<DenyBody>>) -> Result<Json<serde_json::Value>, ApiError> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let reason = b.reason.unwrap_or_else(|| "denied by an operator".into());
    let r = Resolve { approve: false, scope: Scope::Once, by: b.by.unwrap_or_else(|| "api".into()), reason: Some(reason) };
    let gate = api.gate.clone();
    let a = tokio::task::spawn_blocking(move || gate.resolve(id, &r))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(json!(a)))
}

async fn always_rule(State(api): State<Api>, Path(id): Path<i64>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({"rule": api.gate.always_rule(id)?})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    agent: Option<String>,
    command: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

async fn history(State(api): State<Api>, Query(q): Query<HistoryQuery>) -> Result<Json<serde_json::Value>, ApiError> {
    let f = HistoryFilter { agent: q.agent, command: q.command, outcome: q.outcome, since: q.since, limit: q.limit, offset: q.offset };
    Ok(Json(json!(api.gate.store().history(&f)?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KillBody {
    mode: Option<crate::supervisor::Switch>,
}

async fn kill(State(api): State<Api>, body: Option<Json<KillBody>>) -> Result<Json<serde_json::Value>, ApiError> {
    let mode = body.and_then(|Json(b)| b.mode).unwrap_or(crate::supervisor::Switch::Kill);
    api.gate.switch(mode).map_err(|e| ApiError(StatusCode::CONFLICT, e))?;
    Ok(Json(json!({"agent": api.gate.agent(), "switch": mode})))
}

async fn events(State(api): State<Api>) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let rx = api.gate.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let name = match &ev {
                        GateEvent::Queued { .. } => "queued",
                        GateEvent::Resolved { .. } => "resolved",
                        GateEvent::Finished { .. } => "finished",
                        GateEvent::Killed { .. } => "killed",
                    };
                    let data = serde_json::to_string(&ev).unwrap_or_default();
                    return Some((Ok(Event::default().event(name).data(data)), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
