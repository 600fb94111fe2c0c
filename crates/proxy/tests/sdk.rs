//! The official `openai` and `anthropic` Python SDKs, driven as an agent
//! would drive them, work through the proxy: plain, streamed and tool-call
//! replies come back as the SDK expects them, and each call lands in the
//! usage ledger with the usage the SDK itself reported.
//!
//! The SDKs come from PyPI (pinned in .ci/pip-requirements.txt), installed
//! into `$CLAWKEEP_PYLIB` or /var/cache/clawkeep-ci/pylib, and run under
//! Debian's /usr/bin/python3, the interpreter a jail that binds only /usr,
//! /bin and /lib* also has. The script's environment is cleared down to the
//! proxy URL and the agent's clawkeep token: no provider key is there to leak.
#![allow(clippy::unwrap_used)]

mod common;

use common::upstream::{
    ANTHROPIC_INPUT_TOKENS, ANTHROPIC_MAX_OUTPUT, ANTHROPIC_STREAM_TEXT, ANTHROPIC_TEXT, EMBEDDING_TOKENS_PER_INPUT, OPENAI_MAX_COMPLETION,
    OPENAI_PROMPT_TOKENS, OPENAI_STREAM_TEXT, OPENAI_TEXT, RESPONSES_USAGE,
};
use common::{Harness, ANTHROPIC_KEY, OPENAI_KEY};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";
const PYLIB_CACHE: &str = "/var/cache/clawkeep-ci/pylib";
const SKIPPED: &str = "skipped: openai/anthropic SDKs not installed \
    (pip install --target /var/cache/clawkeep-ci/pylib -r .ci/pip-requirements.txt)";
/// Bounds one script run: imports plus a dozen local round trips.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory holding both SDKs, if one does.
fn pylib() -> Option<PathBuf> {
    let from_env = std::env::var_os("CLAWKEEP_PYLIB").filter(|v| !v.is_empty()).map(PathBuf::from);
    from_env
        .into_iter()
        .chain([PathBuf::from(PYLIB_CACHE)])
        .find(|dir| dir.join("openai/__init__.py").is_file() && dir.join("anthropic/__init__.py").is_file())
}

/// Runs `tests/sdk/<script>` against the harness's proxy as `agent`, and
/// returns what it printed, parsed.
async fn run_script(h: &Harness, script: &str, agent: &str) -> Option<Value> {
    if !Path::new(PYTHON).is_file() {
        println!("skipped: {PYTHON} not found (apt-get install python3)");
        return None;
    }
    let Some(pylib) = pylib() else {
        println!("{SKIPPED}");
        return None;
    };
    let token = h.token(agent);
    let home = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(script);
    let child = tokio::process::Command::new(PYTHON)
        .arg(&path)
        // Nothing of the test's environment reaches the SDK: no provider
        // key, no HTTP proxy settings, no SDK config from a real $HOME.
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home.path())
        .env("LANG", "C.UTF-8")
        .env("PYTHONPATH", &pylib)
        .env("PYTHONNOUSERSITE", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("CLAWKEEP_PROXY_URL", format!("http://{}", h.addr))
        .env("CLAWKEEP_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in {SCRIPT_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [OPENAI_KEY, ANTHROPIC_KEY] {
        assert!(!stdout.contains(key) && !stderr.contains(key), "{script} printed a provider key");
    }
    assert!(out.status.success(), "{script} ({}) failed: {}\nstderr:\n{stderr}\nstdout:\n{stdout}", pylib.display(), out.status);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"));
    println!("{script}: {}", v["sdk"]);

    // The provider saw its real key on every request and never the agent's token.
    let received = h.upstream.received();
    assert!(!received.is_empty());
    for r in &received {
        let key = r.headers.get("authorization").or_else(|| r.headers.get("x-api-key")).unwrap().to_str().unwrap();
        assert!(key.ends_with(OPENAI_KEY) || key == ANTHROPIC_KEY, "{} reached the provider without its key", r.path);
        for (name, value) in &r.headers {
            assert!(!value.to_str().unwrap_or("").contains(&token), "agent token forwarded in {name} to {}", r.path);
        }
    }
    Some(v)
}

/// (model, input tokens, output tokens, status) of each ledger row, oldest first.
async fn ledger(h: &Harness, agent: &str, n: usize) -> Vec<(String, u64, u64, u16)> {
    let rows = h.rows(agent, n).await;
    rows.into_iter().map(|r| (r.model, r.input_tokens, r.output_tokens, r.status)).collect()
}

fn row(model: &str, usage: (u64, u64)) -> (String, u64, u64, u16) {
    (model.to_string(), usage.0, usage.1, 200)
}

#[tokio::test]
async fn openai_sdk_chat_stream_and_tool_calls() {
    let h = Harness::start().await;
    let Some(v) = run_script(&h, "openai_sdk.py", "agent-openai-sdk").await else { return };

    let usage = |u: &Value| (u["prompt"].as_u64().unwrap(), u["completion"].as_u64().unwrap());
    let chat_usage = (OPENAI_PROMPT_TOKENS, OPENAI_MAX_COMPLETION);
    assert_eq!(v["chat"]["content"], OPENAI_TEXT);
    assert_eq!(v["chat"]["finish_reason"], "stop");
    assert_eq!(usage(&v["chat"]["usage"]), chat_usage);
    assert_eq!(v["chat"]["usage"]["total"], OPENAI_PROMPT_TOKENS + OPENAI_MAX_COMPLETION);

    // Streamed text arrives piece by piece and concatenates to the whole.
    assert_eq!(v["stream"]["pieces"], json!(OPENAI_STREAM_TEXT));
    assert_eq!(v["stream"]["text"], OPENAI_STREAM_TEXT.concat());
    // The agent did not ask for usage; it got it anyway, because the proxy did.
    assert_eq!(usage(&v["stream"]["usage"]), chat_usage);

    for call in ["tool", "tool_stream"] {
        assert_eq!(v[call]["finish_reason"], "tool_calls", "{call}");
        assert_eq!(v[call]["name"], "get_weather", "{call}");
        assert_eq!(v[call]["arguments"], json!({"city": "Paris", "unit": "celsius"}), "{call}");
        assert_eq!(usage(&v[call]["usage"]), chat_usage, "{call}");
    }
    assert!(v["tool_stream"]["argument_deltas"].as_u64().unwrap() > 1, "arguments were not streamed in pieces");

    assert_eq!(v["responses"]["text"], "hi");
    assert_eq!(v["responses"]["usage"], json!([RESPONSES_USAGE.0, RESPONSES_USAGE.1]));

    let vectors = v["embeddings"]["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    let first: Vec<f64> = vectors[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!((first[0] - 0.1).abs() < 1e-6 && (first[7] - 0.8).abs() < 1e-6, "embedding decoded wrong: {first:?}");
    assert_eq!(v["embeddings"]["usage"], 2 * EMBEDDING_TOKENS_PER_INPUT);

    // One ledger row per call, each with the usage the SDK was told.
    let expected = vec![
        row("gpt-4o", chat_usage),
        row("gpt-4o", chat_usage),
        row("gpt-4o", chat_usage),
        row("gpt-4o", chat_usage),
        row("gpt-4o", RESPONSES_USAGE),
        row("text-embedding-3-small", (2 * EMBEDDING_TOKENS_PER_INPUT, 0)),
    ];
    assert_eq!(ledger(&h, "agent-openai-sdk", expected.len()).await, expected);
}

#[tokio::test]
async fn anthropic_sdk_chat_stream_and_tool_use() {
    let h = Harness::start().await;
    let Some(v) = run_script(&h, "anthropic_sdk.py", "agent-anthropic-sdk").await else { return };

    let usage = |u: &Value| (u["input"].as_u64().unwrap(), u["output"].as_u64().unwrap());
    let chat_usage = (ANTHROPIC_INPUT_TOKENS, ANTHROPIC_MAX_OUTPUT);
    assert_eq!(v["chat"]["content"], ANTHROPIC_TEXT);
    assert_eq!(v["chat"]["stop_reason"], "end_turn");
    assert_eq!(usage(&v["chat"]["usage"]), chat_usage);

    assert_eq!(v["stream"]["pieces"], json!(ANTHROPIC_STREAM_TEXT));
    assert_eq!(v["stream"]["text"], ANTHROPIC_STREAM_TEXT.concat());
    assert_eq!(v["stream"]["final_text"], ANTHROPIC_STREAM_TEXT.concat());
    assert_eq!(v["stream"]["stop_reason"], "end_turn");
    // Input from message_start, output from message_delta, as the SDK merges them.
    assert_eq!(usage(&v["stream"]["usage"]), chat_usage);

    for call in ["tool", "tool_stream"] {
        assert_eq!(v[call]["stop_reason"], "tool_use", "{call}");
        assert_eq!(v[call]["name"], "get_weather", "{call}");
        assert_eq!(v[call]["input"], json!({"city": "Paris", "unit": "celsius"}), "{call}");
        assert_eq!(usage(&v[call]["usage"]), chat_usage, "{call}");
    }
    assert!(v["tool_stream"]["input_deltas"].as_u64().unwrap() > 1, "input was not streamed in pieces");
    assert_eq!(v["count_tokens"], 42);

    // count_tokens is free: recorded, charged nothing.
    let model = "claude-sonnet-4";
    let expected = vec![row(model, chat_usage), row(model, chat_usage), row(model, chat_usage), row(model, chat_usage), row(model, (0, 0))];
    assert_eq!(ledger(&h, "agent-anthropic-sdk", expected.len()).await, expected);
}
