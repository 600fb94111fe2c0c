//! Upstream failures become clear errors, are recorded, never leak the key,
//! and leave the proxy serving.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_no_secret, Harness};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn still_serving(h: &Harness, token: &str) {
    let resp = h.post("/v1/chat/completions", token, &json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn upstream_500_is_502() {
    let h = Harness::start().await;
    let token = h.token("agent-f");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o-fail500", "messages": []})).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "upstream_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("500"));
    assert_eq!(h.rows("agent-f", 1).await[0].status, 502);
    still_serving(&h, &token).await;
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let h = Harness::with(|c| c.upstream_timeout = Duration::from_millis(500)).await;
    let token = h.token("agent-t");
    let started = Instant::now();
    let resp = h.post_anthropic(&token, &json!({"model": "claude-sonnet-4-slow", "max_tokens": 10, "messages": []})).await;
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["type"], "upstream_timeout");
    assert_eq!(h.rows("agent-t", 1).await[0].status, 504);
    still_serving(&h, &token).await;
}

#[tokio::test]
async fn reset_mid_stream_ends_with_error_event_and_is_recorded() {
    let h = Harness::start().await;
    let token = h.token("agent-r");
    for (model, marker) in [("gpt-4o-reset", "data: {\"error\""), ("claude-sonnet-4-reset", "event: error")] {
        let body = json!({"model": model, "stream": true, "max_tokens": 50, "messages": []});
        let resp = if model.starts_with("gpt") {
            h.post("/v1/chat/completions", &token, &body).await
        } else {
            h.post_anthropic(&token, &body).await
        };
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(text.contains(marker), "no error event in {text}");
        assert!(text.contains("upstream_error") || text.contains("api_error"));
    }
    let rows = h.rows("agent-r", 2).await;
    assert!(rows.iter().all(|r| r.status == 502 && r.output_tokens == 50), "{rows:?}");
    still_serving(&h, &token).await;
}

/// Everything the proxy logs in this test binary, as JSON lines.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static std::sync::Mutex<Vec<u8>> = Box::leak(Box::default());
        let writer = move || Capture(buf);
        let sub = tracing_subscriber::fmt().json().with_writer(writer).with_max_level(tracing::Level::WARN).finish();
        tracing::subscriber::set_global_default(sub).unwrap();
        buf
    })
}

struct Capture(&'static std::sync::Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The warning for a stream that broke off names the request's agent (the
/// body is sent after the handler returned, outside its span).
#[tokio::test]
async fn a_broken_stream_is_logged_with_its_agent() {
    let logs = captured_logs();
    let h = Harness::start().await;
    let token = h.token("agent-broken-log");
    let body = json!({"model": "gpt-4o-reset", "stream": true, "max_tokens": 5, "messages": []});
    let text = h.post("/v1/chat/completions", &token, &body).await.text().await.unwrap();
    assert!(text.contains("upstream_error"), "{text}");
    let all = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line = all.lines().find(|l| l.contains("upstream stream broke") && l.contains("agent-broken-log"));
    assert!(line.is_some_and(|l| l.contains("\"path\":\"/v1/chat/completions\"")), "{all}");
    assert!(!all.contains(&token), "the agent's token reached a log");
}

#[tokio::test]
async fn key_echoed_by_provider_is_redacted() {
    let h = Harness::start().await;
    let token = h.token("agent-e");
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let model = if path == "/v1/messages" { "claude-sonnet-4-echokey" } else { "gpt-4o-echokey" };
        let resp = h.post(path, &token, &json!({"model": model, "messages": []})).await;
        assert_eq!(resp.status(), 401);
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap();
        assert_no_secret(&headers, &body);
        assert!(String::from_utf8_lossy(&body).contains("[redacted]"));
    }
}

/// A key streamed back in two pieces (each its own chunk) is redacted too.
#[tokio::test]
async fn key_echoed_across_stream_chunks_is_redacted() {
    let h = Harness::start().await;
    let token = h.token("agent-s");
    let body = json!({"model": "gpt-4o-echokeystream", "stream": true, "messages": []});
    let resp = h.post("/v1/chat/completions", &token, &body).await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    assert_no_secret(&headers, &body);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#"{"echo":"Bearer [redacted]"}"#), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn unreachable_provider_is_502() {
    let h = Harness::with(|c| c.providers[0].base_url = "http://127.0.0.1:1".into()).await;
    let token = h.token("agent-u");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["type"], "upstream_error");
}

/// Unreachable costs nothing; a provider that took the request and then
/// dropped the connection may have billed it: the reservation is charged.
#[tokio::test]
async fn a_connection_lost_after_sending_is_charged_in_full() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = conn.read(&mut buf).await;
            drop(conn);
        }
    });
    let h = Harness::with(|c| c.providers[0].base_url = format!("http://{addr}")).await;
    let token = h.token("agent-h");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "messages": [], "max_tokens": 40})).await;
    assert_eq!(resp.status(), 502);
    let rows = h.rows("agent-h", 1).await;
    assert_eq!((rows[0].status, rows[0].output_tokens), (502, 40), "{rows:?}");
}

#[tokio::test]
async fn missing_provider_key_is_500_and_not_charged() {
    let h = Harness::with(|c| c.providers[0].secret = "no-such-secret".into()).await;
    let token = h.token("agent-k");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "proxy_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("clawkeep secret set no-such-secret"), "the error says what to run: {msg}");
    assert!(h.upstream.received().is_empty());
    let rows = h.state.usage(Some("agent-k"), None).unwrap();
    assert_eq!(rows.len(), 1, "a refusal is recorded");
    assert_eq!((rows[0].status, rows[0].input_tokens, rows[0].output_tokens, rows[0].cost_usd), (500, 0, 0, 0.0));
}
