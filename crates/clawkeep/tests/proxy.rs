//! The inference proxy wired into `clawkeep run`: the agent reaches it on
//! its own loopback with its own token, the provider key is injected on the
//! way out, and the key shows up nowhere the agent or an operator can read.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../proxy/tests/common/upstream.rs"]
mod upstream;

use common::{jail_available, Env};
use std::process::Output;
use upstream::{FakeUpstream, Keys, Options};

const OPENAI_KEY: &str = "sk-proj-REALKEY-never-inside-4f1c9e";
const ANTHROPIC_KEY: &str = "sk-ant-api03-REALKEY-never-inside-77ab";
const MASTER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The agent: records what it can see, then calls both APIs with its token,
/// once with a forged token, and tries the upstream directly.
const AGENT: &str = r#"
import json, os, sys, urllib.request, urllib.error
json.dump(dict(os.environ), open('/workspace/env.json', 'w'))
open('/workspace/cmdline', 'wb').write(open('/proc/self/cmdline', 'rb').read())
def post(url, body, headers):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={'content-type': 'application/json', **headers})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b'{}')
chat = {'model': 'gpt-4o', 'messages': [{'role': 'user', 'content': 'hi'}], 'max_tokens': 12}
s, b = post(os.environ['OPENAI_BASE_URL'] + '/chat/completions', chat, {'authorization': 'Bearer ' + os.environ['OPENAI_API_KEY']})
print('openai', s, b['choices'][0]['message']['content'])
msg = {'model': 'claude-sonnet-4', 'max_tokens': 15, 'messages': [{'role': 'user', 'content': 'hi'}]}
s, b = post(os.environ['ANTHROPIC_BASE_URL'] + '/v1/messages', msg, {'x-api-key': os.environ['ANTHROPIC_API_KEY'], 'anthropic-version': '2023-06-01'})
print('anthropic', s, b['content'][0]['text'])
s, b = post(os.environ['OPENAI_BASE_URL'] + '/chat/completions', chat, {'authorization': 'Bearer ' + os.environ['OPENAI_API_KEY'][:-4] + 'AAAA'})
print('forged', s, b.get('error', {}).get('type'))
try:
    urllib.request.urlopen(os.environ['UPSTREAM'] + '/v1/models', timeout=2)
    print('upstream reachable')
except Exception:
    print('upstream unreachable')
"#;

fn seal(env: &Env, name: &str, value: &str) {
    env.cmd().env("CLAWKEEP_MASTER_KEY", MASTER).args(["secret", "set", name]).write_stdin(value).assert().success();
}

/// The openai provider is named by host (`localhost` for `127.0.0.1`), so
/// the launcher's own name lookup is on the path: it is a static binary
/// with its lookups pinned to glibc's built-in modules (see its `main`).
fn config(env: &Env, upstream: &str) -> std::path::PathBuf {
    let path = env.state.path().join("proxy-test.yaml");
    let by_name = upstream.replacen("127.0.0.1", "localhost", 1);
    let text = format!(
        "providers:\n  - {{ name: openai, kind: openai, base_url: \"{by_name}\", secret: openai }}\n  - {{ name: anthropic, kind: anthropic, base_url: \"{upstream}\", secret: anthropic }}\nroutes:\n  - {{ prefix: \"gpt-\", provider: openai }}\n  - {{ prefix: \"claude-\", provider: anthropic }}\nprices:\n  gpt-4o: {{ input_per_mtok: 2.5, output_per_mtok: 10.0 }}\n  claude-sonnet-4: {{ input_per_mtok: 3.0, output_per_mtok: 15.0 }}\nupstream_timeout: 10\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A fake provider that accepts only the real keys, a state dir with those
/// keys sealed, and a proxy config pointing at the fake.
async fn provider_and_sealed_keys() -> (Env, FakeUpstream, std::path::PathBuf) {
    let keys = Keys { openai: OPENAI_KEY.into(), anthropic: ANTHROPIC_KEY.into() };
    let fake = FakeUpstream::start_with(Options { keys: Some(keys), ..Options::default() }).await;
    let env = Env::new();
    seal(&env, "openai", OPENAI_KEY);
    seal(&env, "anthropic", ANTHROPIC_KEY);
    let cfg = config(&env, &fake.url());
    (env, fake, cfg)
}

/// Every file under `dir`, as bytes, with its path.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn run_agent(env: &Env, extra: Vec<String>, argv: Vec<String>) -> Output {
    let mut cmd = env.std_run(&extra.iter().map(String::as_str).collect::<Vec<_>>(), &argv.iter().map(String::as_str).collect::<Vec<_>>());
    // The host has real keys in its environment; none may go in.
    cmd.env("CLAWKEEP_MASTER_KEY", MASTER).env("OPENAI_API_KEY", OPENAI_KEY).env("ANTHROPIC_API_KEY", ANTHROPIC_KEY);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_calls_both_providers_and_no_key_leaks() {
    if !jail_available("agent_calls_both_providers_and_no_key_leaks") {
        return;
    }
    let (env, fake, cfg) = provider_and_sealed_keys().await;
    std::fs::write(env.workspace.path().join("agent.py"), AGENT).unwrap();
    let extra = vec![
        "--agent".into(),
        "proxied".into(),
        "--proxy-config".into(),
        cfg.display().to_string(),
        "--env".into(),
        format!("UPSTREAM={}", fake.url()),
    ];
    let out = run_agent(&env, extra, vec!["python3".into(), "/workspace/agent.py".into()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("openai 200 Hello from the fake."), "{stdout}");
    assert!(stdout.contains("anthropic 200 Hello from the fake."), "{stdout}");
    assert!(stdout.contains("forged 401"), "{stdout}");
    assert!(stdout.contains("upstream unreachable"), "the jail reached the host's loopback: {stdout}");

    // The provider got the real keys, injected by the proxy.
    let got = fake.received();
    assert_eq!(got.len(), 2, "the forged request must not reach the provider");
    assert!(got.iter().any(|r| r.headers.get("authorization").is_some_and(|v| v == &format!("Bearer {OPENAI_KEY}")[..])));
    assert!(got.iter().any(|r| r.headers.get("x-api-key").is_some_and(|v| v == ANTHROPIC_KEY)));

    // What the agent saw: its own token and the proxy's URL, no real key.
    let seen: serde_json::Value = serde_json::from_slice(&std::fs::read(env.workspace.path().join("env.json")).unwrap()).unwrap();
    let token = seen["OPENAI_API_KEY"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3, "the agent's key is a JWT");
    assert_eq!(seen["ANTHROPIC_API_KEY"], token);
    assert_eq!(seen["OPENAI_BASE_URL"], "http://127.0.0.1:4141/v1");
    assert_eq!(seen["ANTHROPIC_BASE_URL"], "http://127.0.0.1:4141");

    // The real keys appear nowhere: the agent's environment and argv, its
    // workspace, our output, the audit log, the usage DB, any state file.
    let mut places = files_under(env.workspace.path());
    places.extend(files_under(env.state.path()));
    places.push(("stdout".into(), out.stdout.clone()));
    places.push(("stderr".into(), out.stderr.clone()));
    assert!(places.iter().any(|(p, _)| p.ends_with("usage.db")), "no usage DB was written");
    assert!(places.iter().any(|(p, _)| p.ends_with("cmdline")));
    for (path, bytes) in &places {
        for key in [OPENAI_KEY, ANTHROPIC_KEY] {
            assert!(!contains(bytes, key), "the real key leaked into {}", path.display());
        }
        if path.ends_with("audit.jsonl") || path.ends_with("usage.db") {
            assert!(!contains(bytes, &token), "the agent's token was logged in {}", path.display());
        }
    }

    // Every call is audited without its body; the start event names the token.
    let audit = env.audit();
    let start = audit.iter().find(|e| e["kind"] == "run.start").unwrap();
    assert!(start["proxy"]["token_jti"].as_str().is_some_and(|j| j.len() == 32), "{start}");
    let calls: Vec<_> = audit.iter().filter(|e| e["kind"] == "llm.call").collect();
    assert_eq!(calls.len(), 3, "{audit:?}");
    // The forged token's request is recorded too, refused, with no tokens.
    let refused: Vec<_> = calls.iter().filter(|c| c["status"] == 401).collect();
    assert_eq!(refused.len(), 1, "{calls:?}");
    assert_eq!(refused[0]["input_tokens"], 0);
    for c in calls.iter().filter(|c| c["status"] != 401) {
        assert_eq!(c["agent"], "proxied");
        assert_eq!(c["status"], 200);
        assert!(c["input_tokens"].as_u64().unwrap() > 0 && c["output_tokens"].as_u64().unwrap() > 0);
        assert!(c.get("messages").is_none() && !c.to_string().contains("\"hi\""), "a prompt reached the audit: {c}");
    }
    let text = std::fs::read_to_string(env.state.path().join("audit.jsonl")).unwrap();
    let exit_line = text.lines().position(|l| l.contains("\"run.exit\"")).unwrap();
    let last_call = text.lines().collect::<Vec<_>>().iter().rposition(|l| l.contains("\"llm.call\"")).unwrap();
    assert!(last_call < exit_line, "calls are recorded before the run's exit");
    env.cmd().args(["audit", "verify"]).assert().success();

    assert_eq!(start["proxy"]["token_run"], start["run_id"], "the token is bound to its run");

    // `clawkeep usage` shows both requests.
    let usage = env.cmd().args(["usage", "--agent", "proxied", "--json"]).output().unwrap();
    assert!(usage.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&usage.stdout).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let served: Vec<_> = rows.iter().filter(|r| r["status"] == 200).collect();
    let models: Vec<_> = served.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert!(models.contains(&"gpt-4o") && models.contains(&"claude-sonnet-4"), "{models:?}");
    assert!(served.iter().all(|r| r["cost_usd"].as_f64().unwrap() > 0.0));
    let table = env.cmd().args(["usage", "--since", "1h"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("gpt-4o") && table.contains("3 requests"), "{table}");
    let none = env.cmd().args(["usage", "--agent", "someone-else", "--json"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&none.stdout).trim(), "[]");

    // The token died with its run: the next run of the same agent refuses
    // it (the token it was given itself still works there).
    std::fs::write(env.workspace.path().join("again.py"), OLD_TOKEN_AGENT).unwrap();
    let extra = vec!["--agent".into(), "proxied".into(), "--proxy-config".into(), cfg.display().to_string()];
    let again = run_agent(&env, extra, vec!["python3".into(), "/workspace/again.py".into()]).await;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&again.stderr));
    assert!(stdout.contains("old 401") && stdout.contains("own 200"), "{stdout}");
    assert_eq!(fake.received().len(), 3, "the old token's request must not reach the provider");
}

/// The second run's agent: the first run's token (kept in the workspace
/// by the first agent), then its own.
const OLD_TOKEN_AGENT: &str = r#"
import json, os, urllib.request, urllib.error
old = json.load(open('/workspace/env.json'))['OPENAI_API_KEY']
body = json.dumps({'model': 'gpt-4o', 'messages': [{'role': 'user', 'content': 'hi'}], 'max_tokens': 12}).encode()
for name, token in (('old', old), ('own', os.environ['OPENAI_API_KEY'])):
    req = urllib.request.Request(os.environ['OPENAI_BASE_URL'] + '/chat/completions', data=body,
        headers={'content-type': 'application/json', 'authorization': 'Bearer ' + token})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            print(name, r.status)
    except urllib.error.HTTPError as e:
        print(name, e.code)
"#;

const ONE_CALL: &str = r#"
import json, os, urllib.request
body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "the plan is 42"}]}).encode()
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body,
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=10).status)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_in_prompts_reach_the_audit() {
    if !jail_available("opted_in_prompts_reach_the_audit") {
        return;
    }
    let (env, _fake, cfg) = provider_and_sealed_keys().await;
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("audit_prompts: true\n");
    std::fs::write(&cfg, text).unwrap();
    std::fs::write(env.workspace.path().join("call.py"), ONE_CALL).unwrap();
    let extra = vec!["--agent".into(), "talker".into(), "--proxy-config".into(), cfg.display().to_string()];
    let out = run_agent(&env, extra, vec!["python3".into(), "/workspace/call.py".into()]).await;
    assert!(out.status.success(), "stdout: {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let audit = env.audit();
    let call = audit.iter().find(|e| e["kind"] == "llm.call").expect("no llm.call event");
    // The body as the agent sent it; never the token (a header) or a key.
    assert_eq!(call["prompt"]["messages"][0]["content"], "the plan is 42", "{call}");
    assert_eq!(call["prompt"]["model"], "gpt-4o");
    assert!(call.get("prompt_truncated").is_none());
    let line = call.to_string();
    assert!(!line.contains(OPENAI_KEY) && !line.contains("Bearer"), "{line}");
    env.cmd().args(["audit", "verify"]).assert().success();
}

/// The answer of a DNS server that knows one name: its A record is
/// 127.0.0.1, it has no other record, and no other name exists. None for
/// what is not a query it can read. The bool: the question was for `name`.
fn dns_answer(query: &[u8], name: &str) -> Option<(Vec<u8>, bool)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question = query.get(12..i + 4)?;
    let ours = labels.join(".") == name;
    let a = ours && qtype == 1;
    let mut r = query[..2].to_vec();
    // A response to a recursive query; NXDOMAIN for any other name.
    r.extend_from_slice(&[0x81, if ours { 0x80 } else { 0x83 }, 0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if a {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some((r, ours))
}

/// A provider named only in DNS: the launcher, a static binary whose glibc
/// resolves with its built-in `dns` module (see its `main`), finds it
/// through the nameserver in /etc/resolv.conf. The run gets a mount
/// namespace of its own whose resolv.conf names a test server on
/// 127.0.0.2, which knows the provider's name and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_named_in_dns_is_reached() {
    use std::os::unix::process::CommandExt;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    if !jail_available("a_provider_named_in_dns_is_reached") {
        return;
    }
    if !std::path::Path::new("/etc/resolv.conf").exists() {
        println!("skipped: a_provider_named_in_dns_is_reached: no /etc/resolv.conf to stand in for");
        return;
    }
    const NAME: &str = "upstream.clawkeep.test";
    let socket = match std::net::UdpSocket::bind("127.0.0.2:53") {
        Ok(s) => s,
        Err(e) => {
            println!("skipped: a_provider_named_in_dns_is_reached: cannot serve DNS on 127.0.0.2:53 ({e})");
            return;
        }
    };
    socket.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
    let (answered, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let server = {
        let (answered, stop) = (answered.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                if let Some((reply, ours)) = dns_answer(&buf[..n], NAME) {
                    if socket.send_to(&reply, from).is_ok() && ours {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };

    let (env, fake, cfg) = provider_and_sealed_keys().await;
    let text = std::fs::read_to_string(&cfg).unwrap().replacen("localhost", NAME, 1);
    assert!(text.contains(NAME));
    std::fs::write(&cfg, text).unwrap();
    let resolv = env.state.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.2\noptions timeout:2 attempts:2\n").unwrap();
    std::fs::write(env.workspace.path().join("call.py"), ONE_CALL).unwrap();

    let extra = ["--agent", "named", "--proxy-config", &cfg.display().to_string()].map(String::from);
    let mut cmd = env.std_run(&extra.iter().map(String::as_str).collect::<Vec<_>>(), &["python3", "/workspace/call.py"]);
    cmd.env("CLAWKEEP_MASTER_KEY", MASTER);
    let source = std::ffi::CString::new(resolv.display().to_string()).unwrap();
    // SAFETY: only system calls, on strings made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let none = std::ptr::null();
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            if libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                return fail();
            }
            if libc::mount(source.as_ptr(), c"/etc/resolv.conf".as_ptr(), none, libc::MS_BIND, std::ptr::null()) != 0 {
                return fail();
            }
            Ok(())
        });
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.trim() == "200", "stdout: {stdout}\nstderr: {stderr}");
    assert!(answered.load(Ordering::SeqCst) >= 1, "the launcher never asked the test's nameserver for {NAME}");
    let got = fake.received();
    assert_eq!(got.len(), 1, "the provider got {} requests", got.len());
    assert!(got[0].headers.get("authorization").is_some_and(|v| v == &format!("Bearer {OPENAI_KEY}")[..]));
}

/// The proxy's own diagnostics reach the operator: an unreachable provider
/// is a JSON warning line on stderr (stderr is not a terminal here), naming
/// the agent and never a key; the agent gets a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_warnings_reach_stderr_as_json() {
    if !jail_available("proxy_warnings_reach_stderr_as_json") {
        return;
    }
    let (env, _fake, _) = provider_and_sealed_keys().await;
    let cfg = config(&env, "http://127.0.0.1:1");
    let script = ONE_CALL.replace(
        "print(urllib.request.urlopen(req, timeout=10).status)",
        "import urllib.error\ntry:\n    urllib.request.urlopen(req, timeout=10)\nexcept urllib.error.HTTPError as e:\n    print(e.code)",
    );
    std::fs::write(env.workspace.path().join("call.py"), script).unwrap();
    let extra = vec!["--agent".into(), "lonely".into(), "--proxy-config".into(), cfg.display().to_string()];
    let out = run_agent(&env, extra, vec!["python3".into(), "/workspace/call.py".into()]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.trim() == "502", "stdout: {stdout}\nstderr: {stderr}");
    let warning = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "upstream request failed")
        .unwrap_or_else(|| panic!("no JSON warning on stderr: {stderr}"));
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert!(warning.to_string().contains("lonely"), "the agent is not named: {warning}");
    assert!(!stderr.contains(OPENAI_KEY) && !stderr.contains("Bearer"), "{stderr}");
}

#[test]
fn no_proxy_means_no_token_and_no_url() {
    if !jail_available("no_proxy_means_no_token_and_no_url") {
        return;
    }
    let env = Env::new();
    let out = env.run(&["--no-proxy"], &["sh", "-c", "env"]).env("OPENAI_API_KEY", OPENAI_KEY).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("OPENAI") && !stdout.contains("ANTHROPIC"), "{stdout}");
}

#[test]
fn bad_proxy_config_and_usage_input_are_usage_errors() {
    let env = Env::new();
    let bad = env.state.path().join("bad.yaml");
    std::fs::write(&bad, "providers: []\nroutes:\n  - { prefix: gpt-, provider: nowhere }\n").unwrap();
    let out = env.run(&["--proxy-config", bad.to_str().unwrap()], &["true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown provider 'nowhere'") && err.lines().count() == 1, "{err}");

    std::fs::write(&bad, "providers: []\nbogus_key: 1\n").unwrap();
    let out = env.run(&["--proxy-config", bad.to_str().unwrap()], &["true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_key"));

    // A base_url that is not a URL is named, without repeating it (it may
    // carry credentials).
    std::fs::write(&bad, "providers:\n  - { name: p, kind: openai, base_url: 'https://user:sekrit@', secret: p }\nroutes: []\n").unwrap();
    let out = env.run(&["--proxy-config", bad.to_str().unwrap()], &["true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("provider 'p': base_url is not a URL") && !err.contains("sekrit"), "{err}");

    let missing = env.run(&["--proxy-config", "/nonexistent/proxy.yaml"], &["true"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));

    let out = env.cmd().args(["usage", "--since", "last tuesday"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let empty = env.cmd().args(["usage"]).output().unwrap();
    assert!(empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stdout).contains("no inference requests"));
}

/// An agent as people write them: the official SDKs constructed with no
/// arguments read OPENAI_/ANTHROPIC_API_KEY and *_BASE_URL from the
/// environment `clawkeep run` gave them.
const SDK_AGENT: &str = r#"
import json, anthropic, openai
ASK = [{"role": "user", "content": "Say hello."}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
o = openai.OpenAI(max_retries=0)
r = o.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=12)
print("openai:", r.choices[0].message.content)
s = o.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=12, stream=True)
print("openai-stream:", "".join(c.choices[0].delta.content or "" for c in s if c.choices))
t = o.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=12, tools=[TOOL])
call = t.choices[0].message.tool_calls[0].function
print("openai-tool:", call.name, json.dumps(json.loads(call.arguments), sort_keys=True))
a = anthropic.Anthropic(max_retries=0)
m = a.messages.create(model="claude-sonnet-4", max_tokens=15, messages=ASK)
print("anthropic:", m.content[0].text)
with a.messages.stream(model="claude-sonnet-4", max_tokens=15, messages=ASK) as st:
    print("anthropic-stream:", "".join(st.text_stream))
tu = a.messages.create(model="claude-sonnet-4", max_tokens=15, messages=ASK,
    tools=[{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
use = [b for b in tu.content if b.type == "tool_use"][0]
print("anthropic-tool:", use.name, json.dumps(use.input, sort_keys=True))
"#;

/// The SDKs' install dir (see .ci/pip-requirements.txt), if present.
fn pylib() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CLAWKEEP_PYLIB").map(std::path::PathBuf::from).unwrap_or_else(|| "/var/cache/clawkeep-ci/pylib".into());
    (dir.join("openai").is_dir() && dir.join("anthropic").is_dir()).then_some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_in_the_jail_use_the_proxy_unchanged() {
    if !jail_available("official_sdks_in_the_jail_use_the_proxy_unchanged") {
        return;
    }
    let Some(lib) = pylib() else {
        println!(
            "skipped: official_sdks_in_the_jail_use_the_proxy_unchanged: openai/anthropic SDKs not installed \
             (python3 -m pip install --target /var/cache/clawkeep-ci/pylib -r .ci/pip-requirements.txt)"
        );
        return;
    };
    let (env, _fake, cfg) = provider_and_sealed_keys().await;
    // The jail sees only /usr, /bin, /lib* and the workspace: the SDKs go in
    // the workspace, run by Debian's python3.
    let copied = std::process::Command::new("cp").arg("-r").arg(&lib).arg(env.workspace.path().join("pylib")).status().unwrap();
    assert!(copied.success());
    std::fs::write(env.workspace.path().join("agent.py"), SDK_AGENT).unwrap();
    let extra = vec![
        "--agent".into(),
        "sdk".into(),
        "--proxy-config".into(),
        cfg.display().to_string(),
        "--env".into(),
        "PYTHONPATH=/workspace/pylib".into(),
    ];
    let out = run_agent(&env, extra, vec!["/usr/bin/python3".into(), "/workspace/agent.py".into()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let args = r#"{"city": "Paris", "unit": "celsius"}"#;
    for line in [
        "openai: Hello from the fake.".to_string(),
        format!("openai-stream: {}", upstream::OPENAI_STREAM_TEXT.concat()),
        format!("openai-tool: get_weather {args}"),
        "anthropic: Hello from the fake.".to_string(),
        format!("anthropic-stream: {}", upstream::ANTHROPIC_STREAM_TEXT.concat()),
        format!("anthropic-tool: get_weather {args}"),
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in:\n{stdout}");
    }
    // Streams were metered from their usage events, not charged the reservation.
    let usage = env.cmd().args(["usage", "--agent", "sdk", "--json"]).output().unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&usage.stdout).unwrap();
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == 200 && r["output_tokens"].as_u64().unwrap() <= 15), "{rows:?}");
    for (path, bytes) in files_under(env.state.path()) {
        assert!(!contains(&bytes, OPENAI_KEY) && !contains(&bytes, ANTHROPIC_KEY), "the real key leaked into {}", path.display());
    }
}

/// With no config file anywhere, the run serves the built-in config: the
/// agent's token is taken and the model list is answered (locally, no
/// provider needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_config_is_served() {
    if !jail_available("the_built_in_config_is_served") {
        return;
    }
    let env = Env::new();
    let script = "import os, urllib.request\nreq = urllib.request.Request(os.environ['OPENAI_BASE_URL'] + '/models', headers={'authorization': 'Bearer ' + os.environ['OPENAI_API_KEY']})\nwith urllib.request.urlopen(req, timeout=10) as r:\n    print('models', r.status, r.read().decode())\n";
    std::fs::write(env.workspace.path().join("models.py"), script).unwrap();
    let out = run_agent(&env, vec![], vec!["python3".into(), "/workspace/models.py".into()]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.starts_with("models 200 {"), "stdout: {stdout}\nstderr: {stderr}");
    let start = env.audit().into_iter().find(|e| e["kind"] == "run.start").unwrap();
    assert_eq!(start["proxy"]["config"], "built-in", "{start}");
}

/// An agent that ends while its model call is still waiting on the
/// provider: the call is recorded (499, charged its reservation) before
/// the run ends, not lost with the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_left_in_flight_is_recorded_when_the_run_ends() {
    if !jail_available("a_call_left_in_flight_is_recorded_when_the_run_ends") {
        return;
    }
    let (env, _fake, cfg) = provider_and_sealed_keys().await;
    let script = r#"
import json, os, threading, time, urllib.request
body = json.dumps({"model": "gpt-4o-slow", "max_tokens": 33, "messages": []}).encode()
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body,
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"})
threading.Thread(target=lambda: urllib.request.urlopen(req, timeout=30), daemon=True).start()
time.sleep(0.5)
os._exit(0)
"#;
    std::fs::write(env.workspace.path().join("leave.py"), script).unwrap();
    let extra = vec!["--agent".into(), "leaver".into(), "--proxy-config".into(), cfg.display().to_string()];
    let out = run_agent(&env, extra, vec!["python3".into(), "/workspace/leave.py".into()]).await;
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    // Read the ledger straight away: the run must have written it.
    let usage = env.cmd().args(["usage", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&usage.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["status"].as_u64(), rows[0]["output_tokens"].as_u64()), (Some(499), Some(33)), "{rows:?}");
    assert!(env.audit().iter().any(|e| e["kind"] == "llm.call" && e["status"] == 499), "no llm.call event");
}
