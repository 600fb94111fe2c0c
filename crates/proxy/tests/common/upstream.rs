//! A fake provider speaking the OpenAI (chat completions, responses,
//! embeddings) and Anthropic (messages, count_tokens) wire formats the way
//! the real ones do: JSON bodies and SSE streams with the same event names,
//! chunk shapes, tool-call deltas and usage fields the official SDKs parse.
//!
//! A tool call is answered when the request declares `tools` (the first one
//! is called) or the model ends in `-tool` (`get_weather` is called); its
//! arguments are always [`TOOL_ARGUMENTS`]. Other model suffixes pick a
//! failure: `*-fail500` answers 500, `*-slow` answers after 5 s, `*-reset`
//! breaks the stream after two chunks, `*-echokey` answers 401 echoing the
//! key it got, `*-echokeystream` streams it back split across two frames,
//! `*-nousage` streams without usage.
//!
//! With [`Options::keys`] set it also checks credentials like a provider:
//! a wrong or missing key is a 401 in that provider's error shape.
//!
//! Usable from tests (`mod common`) and from the load benchmark, which
//! includes this file by path; [`Options::bench`] turns off recording and
//! the pause between stream frames.
#![allow(dead_code, clippy::unwrap_used)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every tool call the fake makes carries these arguments.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Paris","unit":"celsius"}"#;
/// Pieces of [`TOOL_ARGUMENTS`] as they are streamed, like a model emits them.
const TOOL_ARGUMENT_PIECES: [&str; 4] = [r#"{"city""#, r#":"Paris""#, r#","unit":"cel"#, r#"sius"}"#];
/// The streamed text of a chat completion, and its non-streamed twin.
pub const OPENAI_STREAM_TEXT: [&str; 5] = ["Hel", "lo", " from", " the", " fake"];
pub const OPENAI_TEXT: &str = "Hello from the fake.";
pub const ANTHROPIC_STREAM_TEXT: [&str; 3] = ["Hel", "lo", " there"];
pub const ANTHROPIC_TEXT: &str = "Hello from the fake.";
/// Fixed usage figures, so a test can check the ledger against them.
pub const OPENAI_PROMPT_TOKENS: u64 = 21;
pub const OPENAI_MAX_COMPLETION: u64 = 12;
pub const ANTHROPIC_INPUT_TOKENS: u64 = 25;
pub const ANTHROPIC_MAX_OUTPUT: u64 = 15;
pub const RESPONSES_USAGE: (u64, u64) = (17, 3);
pub const EMBEDDING_TOKENS_PER_INPUT: u64 = 8;
const EMBEDDING_DIMENSIONS: usize = 8;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The keys a provider accepts; `None` in [`Options`] accepts any.
#[derive(Debug, Clone)]
pub struct Keys {
    pub openai: String,
    pub anthropic: String,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Pause before each SSE frame, so frames reach the client as separate chunks.
    pub frame_delay: Duration,
    /// Keep every request for [`FakeUpstream::received`].
    pub record: bool,
    pub keys: Option<Keys>,
}

impl Default for Options {
    fn default() -> Options {
        Options { frame_delay: Duration::from_millis(30), record: true, keys: None }
    }
}

impl Options {
    /// For load: no pauses, nothing kept, any key accepted.
    pub fn bench() -> Options {
        Options { frame_delay: Duration::ZERO, record: false, keys: None }
    }
}

#[derive(Clone, Default)]
pub struct FakeUpstream {
    pub received: Arc<Mutex<Vec<Received>>>,
    served: Arc<AtomicU64>,
    addr: Arc<Mutex<String>>,
    options: Arc<Options>,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        FakeUpstream::start_with(Options::default()).await
    }

    /// Serves on a fresh 127.0.0.1 port from a task on the current runtime.
    pub async fn start_with(options: Options) -> FakeUpstream {
        let fake = FakeUpstream { options: Arc::new(options), ..FakeUpstream::default() };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/responses", post(responses))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *fake.addr.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        // Providers' frontends send each SSE frame at once (TCP_NODELAY).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn url(&self) -> String {
        self.addr.lock().unwrap().clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Requests answered so far, recorded or not.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

fn note(fake: &FakeUpstream, path: &str, headers: &HeaderMap, body: &Value) {
    fake.served.fetch_add(1, Ordering::Relaxed);
    if fake.options.record {
        fake.received.lock().unwrap().push(Received { path: path.into(), headers: headers.clone(), body: body.clone() });
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    Openai,
    Anthropic,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// What a provider checks before looking at the request: the key (and for
/// Anthropic, the API version header).
fn credentials(fake: &FakeUpstream, wire: Wire, headers: &HeaderMap) -> Option<Response> {
    let keys = fake.options.keys.as_ref()?;
    match wire {
        Wire::Openai => {
            let expected = format!("Bearer {}", keys.openai);
            if header(headers, "authorization") != expected {
                let body = json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                    "param": null, "code": "invalid_api_key"}});
                return Some((StatusCode::UNAUTHORIZED, Json(body)).into_response());
            }
        }
        Wire::Anthropic => {
            if header(headers, "x-api-key") != keys.anthropic {
                let body = json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}});
                return Some((StatusCode::UNAUTHORIZED, Json(body)).into_response());
            }
            if header(headers, "anthropic-version").is_empty() {
                let body = json!({"type": "error", "error": {"type": "invalid_request_error",
                    "message": "anthropic-version: header is required"}});
                return Some((StatusCode::BAD_REQUEST, Json(body)).into_response());
            }
        }
    }
    None
}

/// Failure modes shared by every endpoint; `None` means behave normally.
async fn failure(fake: &FakeUpstream, wire: Wire, model: &str, headers: &HeaderMap) -> Option<Response> {
    if model.ends_with("-fail500") {
        return Some((StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response());
    }
    if model.ends_with("-slow") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let got = || {
        headers
            .get("authorization")
            .or_else(|| headers.get("x-api-key"))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    if model.ends_with("-echokeystream") {
        // The key split across two frames, each sent as its own chunk.
        let got = got();
        let (a, b) = got.split_at(got.len() / 2);
        let frames = vec![format!("data: {{\"echo\":\"{a}"), format!("{b}\"}}\n\n"), "data: [DONE]\n\n".to_string()];
        let delay = fake.options.frame_delay.max(Duration::from_millis(30));
        return Some(sse(frames, delay, false, "x-request-id"));
    }
    if model.ends_with("-echokey") {
        let got = got();
        let body = json!({"error": {"message": format!("Incorrect API key provided: {got}"), "type": "invalid_request_error"}});
        return Some((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    }
    credentials(fake, wire, headers)
}

/// An SSE body sent frame by frame (after `delay` each, if any); with
/// `reset`, the connection breaks after two frames.
fn sse(frames: Vec<String>, delay: Duration, reset: bool, request_id: &'static str) -> Response {
    let n = frames.len();
    let stream = futures_util::stream::iter(frames.into_iter().enumerate()).then(move |(i, frame)| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if reset && i == 2.min(n - 1) {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        }
        Ok::<_, std::io::Error>(Bytes::from(frame))
    });
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .header(request_id, "req_fake")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn json_reply(body: Value, request_id: &'static str) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(request_id, "req_fake".parse().unwrap());
    resp
}

fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn event(name: &str, v: &Value) -> String {
    format!("event: {name}\ndata: {v}\n\n")
}

fn model_of(body: &Value) -> String {
    body["model"].as_str().unwrap_or_default().to_string()
}

fn max_tokens(body: &Value) -> u64 {
    ["max_tokens", "max_completion_tokens", "max_output_tokens"].iter().find_map(|k| body.get(*k).and_then(Value::as_u64)).unwrap_or(64)
}

/// The tool to call, if this request gets a tool call.
fn tool_to_call(model: &str, body: &Value) -> Option<String> {
    let declared = body["tools"].as_array().and_then(|t| t.first());
    let named = declared.and_then(|t| t["function"]["name"].as_str().or_else(|| t["name"].as_str()));
    let forbidden = body["tool_choice"] == json!("none") || body["tool_choice"]["type"] == json!("none");
    match named {
        Some(name) if !forbidden => Some(name.to_string()),
        _ if model.ends_with("-tool") => Some("get_weather".to_string()),
        _ => None,
    }
}

fn openai_usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

fn anthropic_usage(input: u64, output: u64) -> Value {
    json!({"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
        "output_tokens": output, "service_tier": "standard"})
}

async fn chat(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/chat/completions", &headers, &body);
    let model = model_of(&body);
    if let Some(r) = failure(&fake, Wire::Openai, &model, &headers).await {
        return r;
    }
    let completion = max_tokens(&body).min(OPENAI_MAX_COMPLETION);
    let tool = tool_to_call(&model, &body);
    let base = |choices: Value, usage: Value| {
        json!({"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
            "system_fingerprint": "fp_fake", "service_tier": "default", "choices": choices, "usage": usage})
    };
    if body["stream"] == json!(true) {
        let include_usage = body["stream_options"]["include_usage"] == json!(true) && !model.ends_with("-nousage");
        let delta = |d: Value, finish: Value| json!([{"index": 0, "delta": d, "logprobs": null, "finish_reason": finish}]);
        let mut frames = Vec::new();
        let finish = match &tool {
            Some(name) => {
                let head = json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [{"index": 0,
                    "id": "call_fake1", "type": "function", "function": {"name": name, "arguments": ""}}]});
                frames.push(data(&base(delta(head, Value::Null), Value::Null)));
                for piece in TOOL_ARGUMENT_PIECES {
                    let d = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
                    frames.push(data(&base(delta(d, Value::Null), Value::Null)));
                }
                "tool_calls"
            }
            None => {
                let head = json!({"role": "assistant", "content": "", "refusal": null});
                frames.push(data(&base(delta(head, Value::Null), Value::Null)));
                for t in OPENAI_STREAM_TEXT {
                    frames.push(data(&base(delta(json!({"content": t}), Value::Null), Value::Null)));
                }
                "stop"
            }
        };
        frames.push(data(&base(delta(json!({}), json!(finish)), Value::Null)));
        if include_usage {
            frames.push(data(&base(json!([]), openai_usage(OPENAI_PROMPT_TOKENS, completion))));
        }
        frames.push("data: [DONE]\n\n".into());
        return sse(frames, fake.options.frame_delay, model.ends_with("-reset"), "x-request-id");
    }
    let (message, finish) = match &tool {
        Some(name) => (
            json!({"role": "assistant", "content": null, "refusal": null, "annotations": [], "tool_calls": [{"id": "call_fake1",
                "type": "function", "function": {"name": name, "arguments": TOOL_ARGUMENTS}}]}),
            "tool_calls",
        ),
        None => (json!({"role": "assistant", "content": OPENAI_TEXT, "refusal": null, "annotations": []}), "stop"),
    };
    json_reply(
        json!({
            "id": "chatcmpl-fake1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "system_fingerprint": "fp_fake", "service_tier": "default",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": openai_usage(OPENAI_PROMPT_TOKENS, completion)
        }),
        "x-request-id",
    )
}

/// OpenAI's Responses API: one message or one function call, whole or as
/// the typed event stream ending in `response.completed` with usage.
async fn responses(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/responses", &headers, &body);
    let model = model_of(&body);
    if let Some(r) = failure(&fake, Wire::Openai, &model, &headers).await {
        return r;
    }
    let (input, output) = RESPONSES_USAGE;
    let tool = tool_to_call(&model, &body);
    let item = match &tool {
        Some(name) => json!({"type": "function_call", "id": "fc_fake1", "call_id": "call_fake1", "name": name,
            "arguments": TOOL_ARGUMENTS, "status": "completed"}),
        None => json!({"type": "message", "id": "msg_fake1", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "hi", "annotations": []}]}),
    };
    let response = |status: &str, output_items: Value, usage: Value| {
        json!({"id": "resp_fake1", "object": "response", "created_at": 1_700_000_000, "status": status, "error": null,
            "incomplete_details": null, "instructions": null, "max_output_tokens": body.get("max_output_tokens"),
            "model": model, "output": output_items, "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null}, "store": true, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": body.get("tools").cloned().unwrap_or(json!([])),
            "top_p": 1.0, "truncation": "disabled", "usage": usage, "metadata": {}})
    };
    let usage = json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": input + output});
    if body["stream"] != json!(true) {
        return json_reply(response("completed", json!([item]), usage), "x-request-id");
    }
    let mut seq = 0u64;
    let mut frames = Vec::new();
    let mut push = |name: &str, mut v: Value| {
        v["type"] = json!(name);
        v["sequence_number"] = json!(seq);
        seq += 1;
        frames.push(event(name, &v));
    };
    push("response.created", json!({"response": response("in_progress", json!([]), Value::Null)}));
    push("response.in_progress", json!({"response": response("in_progress", json!([]), Value::Null)}));
    match &tool {
        Some(_) => {
            let mut added = item.clone();
            added["arguments"] = json!("");
            added["status"] = json!("in_progress");
            push("response.output_item.added", json!({"output_index": 0, "item": added}));
            for piece in TOOL_ARGUMENT_PIECES {
                push("response.function_call_arguments.delta", json!({"item_id": "fc_fake1", "output_index": 0, "delta": piece}));
            }
            push("response.function_call_arguments.done", json!({"item_id": "fc_fake1", "output_index": 0, "arguments": TOOL_ARGUMENTS}));
        }
        None => {
            let added = json!({"type": "message", "id": "msg_fake1", "status": "in_progress", "role": "assistant", "content": []});
            push("response.output_item.added", json!({"output_index": 0, "item": added}));
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            push("response.content_part.added", json!({"item_id": "msg_fake1", "output_index": 0, "content_index": 0, "part": part}));
            for t in ["h", "i"] {
                push(
                    "response.output_text.delta",
                    json!({"item_id": "msg_fake1", "output_index": 0, "content_index": 0, "delta": t, "logprobs": []}),
                );
            }
            push(
                "response.output_text.done",
                json!({"item_id": "msg_fake1", "output_index": 0, "content_index": 0, "text": "hi", "logprobs": []}),
            );
            let part = json!({"type": "output_text", "text": "hi", "annotations": []});
            push("response.content_part.done", json!({"item_id": "msg_fake1", "output_index": 0, "content_index": 0, "part": part}));
        }
    }
    push("response.output_item.done", json!({"output_index": 0, "item": item}));
    let done = if model.ends_with("-nousage") { Value::Null } else { usage };
    push("response.completed", json!({"response": response("completed", json!([item]), done)}));
    sse(frames, fake.options.frame_delay, model.ends_with("-reset"), "x-request-id")
}

/// One vector per input (a string or a list of them); as base64 of
/// little-endian f32 when asked, which is what the OpenAI SDK asks for.
async fn embeddings(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/embeddings", &headers, &body);
    let model = model_of(&body);
    if let Some(r) = failure(&fake, Wire::Openai, &model, &headers).await {
        return r;
    }
    let inputs = match &body["input"] {
        Value::Array(items) if items.iter().all(Value::is_string) || items.iter().all(Value::is_array) => items.len(),
        _ => 1,
    };
    let dims = body["dimensions"].as_u64().map_or(EMBEDDING_DIMENSIONS, |d| d as usize);
    let base64 = body["encoding_format"] == json!("base64");
    let data: Vec<Value> = (0..inputs)
        .map(|i| {
            let vector: Vec<f32> = (0..dims).map(|d| ((i * dims + d) as f32 + 1.0) / 10.0).collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens = EMBEDDING_TOKENS_PER_INPUT * inputs as u64;
    json_reply(
        json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
        "x-request-id",
    )
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn count_tokens(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/messages/count_tokens", &headers, &body);
    if let Some(r) = credentials(&fake, Wire::Anthropic, &headers) {
        return r;
    }
    json_reply(json!({"input_tokens": 42}), "request-id")
}

async fn messages(State(fake): State<FakeUpstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    note(&fake, "/v1/messages", &headers, &body);
    let model = model_of(&body);
    if let Some(r) = failure(&fake, Wire::Anthropic, &model, &headers).await {
        return r;
    }
    let output = max_tokens(&body).min(ANTHROPIC_MAX_OUTPUT);
    let tool = tool_to_call(&model, &body);
    let stop_reason = if tool.is_some() { "tool_use" } else { "end_turn" };
    if body["stream"] == json!(true) {
        let mut frames = vec![event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_fake1", "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": anthropic_usage(ANTHROPIC_INPUT_TOKENS, 1)}}),
        )];
        match &tool {
            Some(name) => {
                frames.push(event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {}}}),
                ));
                for piece in TOOL_ARGUMENT_PIECES {
                    frames.push(event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
            }
            None => {
                frames.push(event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ));
                frames.push(event("ping", &json!({"type": "ping"})));
                for t in ANTHROPIC_STREAM_TEXT {
                    frames.push(event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
                    ));
                }
            }
        }
        frames.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
        if !model.ends_with("-nousage") {
            frames.push(event(
                "message_delta",
                &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": {"output_tokens": output}}),
            ));
        }
        frames.push(event("message_stop", &json!({"type": "message_stop"})));
        return sse(frames, fake.options.frame_delay, model.ends_with("-reset"), "request-id");
    }
    let content = match &tool {
        Some(name) => {
            let input: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap();
            json!([{"type": "tool_use", "id": "toolu_fake1", "name": name, "input": input}])
        }
        None => json!([{"type": "text", "text": ANTHROPIC_TEXT}]),
    };
    json_reply(
        json!({"id": "msg_fake1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": null, "usage": anthropic_usage(ANTHROPIC_INPUT_TOKENS, output)}),
        "request-id",
    )
}
