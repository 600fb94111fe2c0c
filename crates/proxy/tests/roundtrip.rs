//! Requests in both provider formats reach the provider with the real key,
//! come back intact, and are recorded with their usage.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_no_secret, Harness, ANTHROPIC_KEY, OPENAI_KEY};
use serde_json::{json, Value};

#[tokio::test]
async fn openai_chat_roundtrip_injects_key_and_records_usage() {
    let h = Harness::start().await;
    let token = h.token("agent-a");
    let resp = h
        .post(
            "/v1/chat/completions",
            &token,
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    assert_no_secret(&headers, &body);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the fake.");

    let got = h.upstream.received();
    assert_eq!(got.len(), 1);
    let auth = got[0].headers.get("authorization").unwrap().to_str().unwrap();
    assert_eq!(auth, format!("Bearer {OPENAI_KEY}"));
    for (name, value) in &got[0].headers {
        assert!(!value.to_str().unwrap_or("").contains(&token), "agent token forwarded in {name}");
    }

    let rows = h.rows("agent-a", 1).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.model.as_str(), r.provider.as_str(), r.input_tokens, r.output_tokens, r.status), ("gpt-4o", "openai", 21, 12, 200));
    assert!((r.cost_usd - (21.0 * 2.5 + 12.0 * 10.0) / 1e6).abs() < 1e-12);
}

#[tokio::test]
async fn anthropic_messages_roundtrip_with_tool_call() {
    let h = Harness::start().await;
    let token = h.token("agent-b");
    let resp = h
        .post_anthropic(
            &token,
            &json!({"model": "claude-sonnet-4-tool", "max_tokens": 50, "messages": [{"role": "user", "content": "weather?"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    assert_no_secret(&headers, &body);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["content"][0]["type"], "tool_use");

    let got = &h.upstream.received()[0];
    assert_eq!(got.headers.get("x-api-key").unwrap(), ANTHROPIC_KEY);
    assert_eq!(got.headers.get("anthropic-version").unwrap(), "2023-06-01");
    assert!(got.headers.get("authorization").is_none());
    let rows = h.rows("agent-b", 1).await;
    assert_eq!((rows[0].input_tokens, rows[0].output_tokens), (25, 15));
}

#[tokio::test]
async fn openai_tool_call_and_provider_prefixed_model() {
    let h = Harness::start().await;
    let token = h.token("agent-c");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "openai/gpt-4o-tool", "messages": []})).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    // The provider prefix is stripped before forwarding.
    assert_eq!(h.upstream.received()[0].body["model"], "gpt-4o-tool");
}

async fn collect_chunks(resp: reqwest::Response) -> (reqwest::header::HeaderMap, Vec<bytes::Bytes>) {
    let headers = resp.headers().clone();
    let mut resp = resp;
    let mut chunks = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        chunks.push(c);
    }
    (headers, chunks)
}

#[tokio::test]
async fn openai_stream_passes_through_in_chunks_and_forces_usage() {
    let h = Harness::start().await;
    let token = h.token("agent-s");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "stream": true, "messages": [], "max_tokens": 200})).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let (headers, chunks) = collect_chunks(resp).await;
    assert!(chunks.len() > 1, "stream arrived in {} chunk(s)", chunks.len());
    let all: Vec<u8> = chunks.concat();
    assert_no_secret(&headers, &all);
    let text = String::from_utf8(all).unwrap();
    assert!(text.contains("Hel") && text.ends_with("data: [DONE]\n\n"));
    // The agent did not ask for usage; the proxy asked for it upstream.
    assert_eq!(h.upstream.received()[0].body["stream_options"]["include_usage"], true);
    let rows = h.rows("agent-s", 1).await;
    assert_eq!((rows[0].input_tokens, rows[0].output_tokens, rows[0].status), (21, 12, 200));
}

#[tokio::test]
async fn anthropic_stream_passes_through_and_records_usage() {
    let h = Harness::start().await;
    let token = h.token("agent-t");
    let resp = h.post_anthropic(&token, &json!({"model": "claude-sonnet-4", "stream": true, "max_tokens": 300, "messages": []})).await;
    assert_eq!(resp.status(), 200);
    let (headers, chunks) = collect_chunks(resp).await;
    assert!(chunks.len() > 1);
    let all = chunks.concat();
    assert_no_secret(&headers, &all);
    assert!(String::from_utf8(all).unwrap().contains("event: message_stop"));
    let rows = h.rows("agent-t", 1).await;
    assert_eq!((rows[0].input_tokens, rows[0].output_tokens), (25, 15));
}

#[tokio::test]
async fn stream_without_usage_is_charged_its_reservation() {
    let h = Harness::start().await;
    let token = h.token("agent-n");
    let body = json!({"model": "claude-sonnet-4-nousage", "stream": true, "max_tokens": 300, "messages": []});
    let len = serde_json::to_vec(&body).unwrap().len() as u64;
    let resp = h.post_anthropic(&token, &body).await;
    let _ = collect_chunks(resp).await;
    let rows = h.rows("agent-n", 1).await;
    assert_eq!((rows[0].input_tokens, rows[0].output_tokens), (len, 300));
}

#[tokio::test]
async fn responses_embeddings_count_tokens_and_models() {
    let h = Harness::start().await;
    let token = h.token("agent-m");
    let r = h.post("/v1/responses", &token, &json!({"model": "gpt-4o", "input": "hi"})).await;
    assert_eq!(r.status(), 200);
    let r = h.post("/v1/embeddings", &token, &json!({"model": "text-embedding-3-small", "input": "hi"})).await;
    assert_eq!(r.status(), 200);
    let r = h.post("/v1/messages/count_tokens", &token, &json!({"model": "claude-sonnet-4", "messages": []})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["input_tokens"], 42);
    let rows = h.rows("agent-m", 3).await;
    let tokens: Vec<_> = rows.iter().map(|r| (r.input_tokens, r.output_tokens)).collect();
    assert_eq!(tokens, vec![(17, 3), (8, 0), (0, 0)]);

    let r = h.client.get(h.url("/v1/models")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["id"], "claude-sonnet-4");
    assert_eq!(v["data"][1]["owned_by"], "openai");
    let r = h.client.get(h.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn wrong_endpoint_for_provider_is_rejected() {
    let h = Harness::start().await;
    let token = h.token("agent-w");
    let r = h.post("/v1/chat/completions", &token, &json!({"model": "claude-sonnet-4", "messages": []})).await;
    assert_eq!(r.status(), 400);
    assert!(h.upstream.received().is_empty());
}

/// Every request, answered, streamed or refused, is in the audit log by the
/// time its response has ended: the proxy ends a response once its event is
/// written (and fsync'd, one fsync for many requests), and no key or token
/// goes in.
#[tokio::test]
async fn each_response_ends_after_its_audit_event() {
    let h = Harness::start().await;
    let token = h.token("agent-audit");
    let last = |h: &Harness, n: usize| {
        let events = h.audit_events();
        assert_eq!(events.len(), n, "{events:?}");
        events[n - 1].clone()
    };
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "messages": [], "max_tokens": 100})).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let e = last(&h, 1);
    assert_eq!((e["kind"].as_str(), e["agent"].as_str(), e["status"].as_u64()), (Some("llm.call"), Some("agent-audit"), Some(200)));
    assert_eq!((e["input_tokens"].as_u64(), e["output_tokens"].as_u64()), (Some(21), Some(12)));

    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "stream": true, "messages": [], "max_tokens": 200})).await;
    assert_eq!(resp.status(), 200);
    let (_, chunks) = collect_chunks(resp).await;
    assert!(chunks.len() > 1);
    let e = last(&h, 2);
    assert_eq!((e["status"].as_u64(), e["output_tokens"].as_u64()), (Some(200), Some(12)));

    let resp = h.post("/v1/chat/completions", "not-a-token", &json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(resp.status(), 401);
    resp.bytes().await.unwrap();
    assert_eq!(last(&h, 3)["status"].as_u64(), Some(401));

    let text = std::fs::read_to_string(h.audit_path()).unwrap();
    assert!(!text.contains(OPENAI_KEY) && !text.contains(&token), "a key or token reached the audit");
    let report = clawkeep_audit::verify(&h.audit_path()).unwrap();
    assert!(report.first_broken.is_none(), "{:?}", report.first_broken);
}
