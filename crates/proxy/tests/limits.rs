//! Rate limits answer 429 with Retry-After; budgets answer 402 and hold
//! under concurrency.
#![allow(clippy::unwrap_used)]

mod common;

use clawkeep_proxy::{Budget, Limits};
use common::Harness;
use serde_json::{json, Value};

#[tokio::test]
async fn rpm_limit_is_429_with_retry_after() {
    let h = Harness::with(|c| c.limits = Limits { rpm: Some(3), ..Limits::default() }).await;
    let token = h.token("agent-r");
    for _ in 0..3 {
        assert_eq!(h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "messages": []})).await.status(), 200);
    }
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["type"], "rate_limited");
    // Another agent is unaffected.
    let other = h.token("agent-q");
    assert_eq!(h.post("/v1/chat/completions", &other, &json!({"model": "gpt-4o", "messages": []})).await.status(), 200);
}

#[tokio::test]
async fn concurrency_limit_is_429() {
    let h = Harness::with(|c| c.limits = Limits { concurrent: Some(1), ..Limits::default() }).await;
    let token = h.token("agent-c");
    let mut first = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "stream": true, "messages": []})).await;
    assert_eq!(first.status(), 200);
    // The stream is still open, so its slot is held.
    let second = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    while first.chunk().await.unwrap().is_some() {}
    h.rows("agent-c", 1).await;
    let third = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(third.status(), 200);
}

#[tokio::test]
async fn budget_holds_under_50_concurrent_streams() {
    let body = json!({"model": "gpt-4o", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "go"}]});
    let per_request = serde_json::to_vec(&body).unwrap().len() as u64 + 100;
    let budget = 5 * per_request;
    let usd = 5.0 * (per_request as f64 * 10.0) / 1e6;
    let h = Harness::with(|c| {
        c.budget = Some(Budget { tokens_per_period: Some(budget), period_secs: 86_400, usd_per_period: Some(usd) });
    })
    .await;
    let token = h.token("agent-b");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, url, token, body) = (h.client.clone(), h.url("/v1/chat/completions"), token.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut resp = client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            if status == 402 {
                let v: Value = resp.json().await.unwrap();
                assert_eq!(v["error"]["type"], "budget_exhausted");
            } else {
                while resp.chunk().await.unwrap().is_some() {}
            }
            status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402), "{statuses:?}");
    assert!(ok >= 5, "only {ok} admitted");
    assert!(statuses.contains(&402));
    // Every request is recorded: the admitted with their usage, the
    // refused with none.
    let rows = h.rows("agent-b", 50).await;
    assert_eq!(rows.len(), 50);
    assert_eq!(rows.iter().filter(|r| r.status == 200).count(), ok);
    assert!(rows.iter().filter(|r| r.status == 402).all(|r| r.input_tokens + r.output_tokens == 0 && r.cost_usd == 0.0));
    let spent: u64 = rows.iter().map(|r| r.input_tokens + r.output_tokens).sum();
    let cost: f64 = rows.iter().map(|r| r.cost_usd).sum();
    assert!(spent <= budget, "spent {spent} of {budget}");
    assert!(cost <= usd, "spent ${cost} of ${usd}");
}

#[tokio::test]
async fn exhausted_budget_is_402_not_429() {
    let h = Harness::with(|c| c.budget = Some(Budget { tokens_per_period: Some(10), period_secs: 3600, usd_per_period: None })).await;
    let token = h.token("agent-x");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "max_tokens": 100, "messages": []})).await;
    assert_eq!(resp.status(), 402);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["type"], "budget_exhausted");
    assert!(h.upstream.received().is_empty());
    let rows = h.rows("agent-x", 1).await;
    assert_eq!((rows[0].status, rows[0].model.as_str(), rows[0].input_tokens), (402, "gpt-4o", 0));
}

/// Under a budget the provider always gets an output limit: a request that
/// names none is sent with the default the proxy reserved.
#[tokio::test]
async fn a_budgeted_request_reaches_the_provider_with_a_limit() {
    let h =
        Harness::with(|c| c.budget = Some(Budget { tokens_per_period: Some(1_000_000), period_secs: 3600, usd_per_period: None })).await;
    let token = h.token("agent-l");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(resp.status(), 200);
    let got = h.upstream.received();
    let default = h.state.config().default_max_output_tokens;
    assert_eq!(got[0].body["max_completion_tokens"].as_u64(), Some(default), "{}", got[0].body);
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "max_tokens": 2.5e6, "messages": []})).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(h.upstream.received().len(), 1, "an unreadable limit never reaches the provider");
}

/// A request larger than the whole tokens-per-minute limit is a 400 (a
/// retry could never pass), and a request the budget refused takes none of
/// the minute's tokens.
#[tokio::test]
async fn what_can_never_pass_is_400_and_a_refusal_uses_no_tokens() {
    let h = Harness::with(|c| {
        c.limits = Limits { tpm: Some(1_000), ..Limits::default() };
        c.budget = Some(Budget { tokens_per_period: Some(600), period_secs: 3600, usd_per_period: None });
    })
    .await;
    let token = h.token("agent-t");
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "max_tokens": 5000, "messages": []})).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("retry-after").is_none());
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("tokens-per-minute limit of 1000"), "{v}");
    // 700 fits the minute but not the budget: refused with 402, twice; had
    // those counted, the minute (1000) would now be spent.
    for _ in 0..2 {
        let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "max_tokens": 700, "messages": []})).await;
        assert_eq!(resp.status(), 402);
    }
    let resp = h.post("/v1/chat/completions", &token, &json!({"model": "gpt-4o", "max_tokens": 400, "messages": []})).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}
