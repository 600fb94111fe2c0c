//! A fake provider. The model name picks the behaviour:
//! `*-fail500` answers 500, `*-slow` answers after 5 s, `*-reset` breaks the
//! stream after two chunks, `*-echokey` answers 401 echoing the key it got,
//! `*-tool` answers with a tool call, `*-nousage` streams without usage.
#![allow(clippy::unwrap_used)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct FakeUpstream {
    pub received: Arc<Mutex<Vec<Received>>>,
    addr: Arc<Mutex<String>>,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let fake = FakeUpstream::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/responses", post(responses))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *fake.addr.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn url(&self) -> String {
        self.addr.lock().unwrap().clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn note(fake: &FakeUpstream, path: &str, headers: &HeaderMap, body: &Value) {
    fake.received.lock().unwrap().push(Received { path: path.into(), headers: headers.clone(), body: body.clone() });
}

/// Failure modes shared by every endpoint; `None` means behave normally.
async fn failure(model: &str, headers: &HeaderMap) -> Option<Response> {
    if model.ends_with("-fail500") {
        return Some((StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response());
    }
    if model.ends_with("-slow") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    if model.ends_with("-echokey") {
        let got = headers
            .get("authorization")
            .or_else(|| headers.get("x-api-key"))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let body = json!({"error": {"message": format!("Incorrect API key provided: {got}"), "type": "invalid_request_error"}});
        return Some((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    }
    None
}

/// An SSE body sent as separate chunks with a pause between them; with
/// `reset`, the connection breaks after two chunks.
fn sse(frames: Vec<String>, reset: bool) -> Response {
    let n = frames.len();
    let stream = futures_util::stream::iter(frames.into_iter().enumerate()).then(move |(i, frame)| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        if reset && i == 2.min(n - 1) {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        }
        Ok::<_, std::io::Error>(Bytes::from(frame))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("x-request-id", "req_fake")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn model_of(body: &Value) -> String {
    body["model"].as_str().unwrap_or_default().to_string()
}

fn max_tokens(body: &Value) -> u64 {
    body.get("max_tokens").or_else(|| body.get("max_completion_tokens")).and_then(Value::as_u64).unwrap_or(64)
}

async fn chat(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/chat/completions", &headers, &body);
    let model = model_of(&body);
    if let Some(r) = failure(&model, &headers).await {
        return r;
    }
    let completion = max_tokens(&body).min(12);
    if body["stream"] == json!(true) {
        let include_usage = body["stream_options"]["include_usage"] == json!(true) && !model.ends_with("-nousage");
        let mut frames: Vec<String> = ["Hel", "lo", " from", " the", " fake"]
            .iter()
            .map(|t| {
                let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}], "usage": null});
                format!("data: {chunk}\n\n")
            })
            .collect();
        let stop = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": null});
        frames.push(format!("data: {stop}\n\n"));
        if include_usage {
            let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model, "choices": [],
                "usage": {"prompt_tokens": 21, "completion_tokens": completion, "total_tokens": 21 + completion}});
            frames.push(format!("data: {usage}\n\n"));
        }
        frames.push("data: [DONE]\n\n".into());
        return sse(frames, model.ends_with("-reset"));
    }
    let message = if model.ends_with("-tool") {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    } else {
        json!({"role": "assistant", "content": "Hello from the fake."})
    };
    let finish = if model.ends_with("-tool") { "tool_calls" } else { "stop" };
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 21, "completion_tokens": completion, "total_tokens": 21 + completion}
    }))
    .into_response()
}

async fn responses(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/responses", &headers, &body);
    let model = model_of(&body);
    if let Some(r) = failure(&model, &headers).await {
        return r;
    }
    Json(json!({"id": "resp_1", "object": "response", "model": model, "status": "completed",
        "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}],
        "usage": {"input_tokens": 17, "output_tokens": 3, "total_tokens": 20}}))
    .into_response()
}

async fn embeddings(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/embeddings", &headers, &body);
    Json(json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": model_of(&body), "usage": {"prompt_tokens": 8, "total_tokens": 8}}))
    .into_response()
}

async fn count_tokens(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/messages/count_tokens", &headers, &body);
    Json(json!({"input_tokens": 42})).into_response()
}

async fn messages(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/messages", &headers, &body);
    let model = model_of(&body);
    if let Some(r) = failure(&model, &headers).await {
        return r;
    }
    let output = max_tokens(&body).min(15);
    if body["stream"] == json!(true) {
        let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        let mut frames = vec![event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        )];
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        for t in ["Hel", "lo", " there"] {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
            ));
        }
        frames.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        if !model.ends_with("-nousage") {
            frames.push(event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}}),
            ));
        }
        frames.push(event("message_stop", json!({"type": "message_stop"})));
        return sse(frames, model.ends_with("-reset"));
    }
    let content = if model.ends_with("-tool") {
        json!([{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}])
    } else {
        json!([{"type": "text", "text": "Hello from the fake."}])
    };
    Json(json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": if model.ends_with("-tool") { "tool_use" } else { "end_turn" },
        "usage": {"input_tokens": 25, "output_tokens": output}}))
    .into_response()
}
