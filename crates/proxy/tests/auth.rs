//! Only a valid, unrevoked clawkeep token gets through, and refusals are JSON.
#![allow(clippy::unwrap_used)]

mod common;

use clawkeep_identity::KeyRing;
use common::Harness;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": []})
}

async fn assert_401(resp: reqwest::Response) {
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn missing_token_is_401() {
    let h = Harness::start().await;
    let resp = h.client.post(h.url("/v1/chat/completions")).json(&chat()).send().await.unwrap();
    assert_401(resp).await;
    assert!(h.upstream.received().is_empty());
}

#[tokio::test]
async fn expired_token_is_401() {
    let h = Harness::start().await;
    let issued = h.keys.issue_at("agent-a", &[], Duration::from_secs(60), SystemTime::now() - Duration::from_secs(3600)).unwrap();
    assert_401(h.post("/v1/chat/completions", &issued.token, &chat()).await).await;
}

#[tokio::test]
async fn forged_tokens_are_401() {
    let h = Harness::start().await;
    // Signed by a key the proxy's ring does not hold.
    let other_dir = tempfile::tempdir().unwrap();
    let other = KeyRing::open(other_dir.path()).unwrap();
    let foreign = other.issue("agent-a", &[], Duration::from_secs(600)).unwrap().token;
    assert_401(h.post("/v1/chat/completions", &foreign, &chat()).await).await;
    // A valid token with its claims swapped for another agent's.
    let mine = h.token("agent-a");
    let theirs = h.token("agent-b");
    let m: Vec<&str> = mine.split('.').collect();
    let t: Vec<&str> = theirs.split('.').collect();
    let spliced = format!("{}.{}.{}", m[0], t[1], m[2]);
    assert_401(h.post("/v1/chat/completions", &spliced, &chat()).await).await;
    assert_401(h.post("/v1/chat/completions", "not-a-token", &chat()).await).await;
    assert!(h.upstream.received().is_empty());
}

#[tokio::test]
async fn revoked_token_is_401() {
    let h = Harness::start().await;
    let issued = h.keys.issue("agent-a", &[], Duration::from_secs(600)).unwrap();
    assert_eq!(h.post("/v1/chat/completions", &issued.token, &chat()).await.status(), 200);
    h.keys.revoke(&issued.claims.jti, issued.claims.exp).unwrap();
    assert_401(h.post("/v1/chat/completions", &issued.token, &chat()).await).await;
}

#[tokio::test]
async fn x_api_key_header_is_accepted() {
    let h = Harness::start().await;
    let token = h.token("agent-a");
    let resp = h.client.post(h.url("/v1/chat/completions")).header("x-api-key", token).json(&chat()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn unknown_model_is_400_and_big_body_is_413() {
    let h = Harness::with(|c| c.max_body_bytes = 1024).await;
    let token = h.token("agent-a");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "llama-3-70b", "messages": []})).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["type"], "unknown_model");
    let big = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let resp = h.post("/v1/chat/completions", &token, &big).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["type"], "request_too_large");
    // Without a Content-Length the limit still holds.
    let chunks = vec![Ok::<_, std::io::Error>(bytes::Bytes::from(serde_json::to_vec(&big).unwrap()))];
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(h.upstream.received().is_empty());
}

#[tokio::test]
async fn a_proxy_bound_to_one_agent_refuses_another_agents_token() {
    let h = Harness::start().await;
    let bound = clawkeep_proxy::router(h.state.bound_to("agent-a"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/chat/completions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, bound).await.unwrap() });
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    // Valid, unexpired, unrevoked, but another agent's.
    let other = h.client.post(&url).bearer_auth(h.token("agent-b")).json(&body).send().await.unwrap();
    assert_401(other).await;
    assert!(h.upstream.received().is_empty());
    let own = h.client.post(&url).bearer_auth(h.token("agent-a")).json(&body).send().await.unwrap();
    assert_eq!(own.status(), 200);
    // The JWKS is public and lists the key that signed both.
    let jwks: Value = h.client.get(h.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
}

#[tokio::test]
async fn a_run_proxy_takes_only_its_own_runs_tokens() {
    let h = Harness::start().await;
    let bound = clawkeep_proxy::router(h.state.bound_to_run("agent-a", "run-1"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/chat/completions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, bound).await.unwrap() });
    let run_token = |run: &str| h.keys.issue_for_run("agent-a", run, &["inference".to_string()], Duration::from_secs(600)).unwrap().token;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    // The same agent's valid tokens, of an earlier run and of no run.
    for token in [run_token("run-0"), h.token("agent-a")] {
        assert_401(h.client.post(&url).bearer_auth(token).json(&body).send().await.unwrap()).await;
    }
    assert!(h.upstream.received().is_empty());
    let own = h.client.post(&url).bearer_auth(run_token("run-1")).json(&body).send().await.unwrap();
    assert_eq!(own.status(), 200);
    // The unbound proxy refuses the run's token: it is good at its run's proxy only.
    assert_401(h.post("/v1/chat/completions", &run_token("run-1"), &body).await).await;
}

#[tokio::test]
async fn refused_requests_are_recorded_without_tokens() {
    let h = Harness::start().await;
    let token = h.token("agent-r");
    let bad_json = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&token).body("{not json").send().await.unwrap();
    assert_eq!(bad_json.status(), 400);
    let unknown = h.post("/v1/chat/completions", &token, &json!({"model": "llama-9", "messages": []})).await;
    assert_eq!(unknown.status(), 400);
    assert_401(h.client.post(h.url("/v1/chat/completions")).bearer_auth("x.y.z").json(&chat()).send().await.unwrap()).await;
    let rows = h.rows("agent-r", 2).await;
    assert_eq!(
        rows.iter().map(|r| (r.status, r.model.as_str(), r.input_tokens + r.output_tokens)).collect::<Vec<_>>(),
        [(400, "", 0), (400, "llama-9", 0)]
    );
    let anon = h.rows("unauthenticated", 1).await;
    assert_eq!(anon[0].status, 401);
    // Still serving.
    assert_eq!(h.post("/v1/chat/completions", &token, &chat()).await.status(), 200);
}
