//! Inference proxy under load: 64 concurrent clients send OpenAI chat
//! completions, non-streamed and streamed, for a fixed window each phase,
//! (a) straight to the fake provider, (b) through clawkeep's proxy as
//! `clawkeep run` serves it (JWT verify, routing, limits, key swap,
//! metering, one ledger row and one fsync'd audit event per request),
//! and (c) through LiteLLM's proxy when it is installed, all on loopback
//! and measured in the same run, beside a bare proxy hop (axum in, reqwest
//! out, nothing else): the ceiling any proxy reaches on this machine. A
//! second, idle run (one client at a time) shows the per-request cost
//! without queueing. The ledger and the audit log live under $TMPDIR;
//! `TMPDIR=/dev/shm` shows the proxy without their fsyncs.
//!
//! Targets (issue 4), printed beside the figures: added latency p50 <= 0.5 ms
//! and p99 <= 3 ms, throughput >= 70% of direct; clawkeep >= 10x LiteLLM.
//!
//! `CLAWKEEP_BENCH_ONLY=clawkeep` (or direct, bare-hop) drives that target
//! alone under load, to profile it.
//!
//! LiteLLM: `python3 -m pip install --target /var/cache/clawkeep-ci/litellm
//! 'litellm[proxy]'` (or point `CLAWKEEP_LITELLM` at such a directory; the
//! interpreter is `CLAWKEEP_LITELLM_PYTHON`, else `python3`, the one pip ran).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::upstream::Options;
use common::{Harness, OPENAI_KEY};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
/// Each phase's window, split into rounds that alternate between the
/// targets, so a shift in background load hits them all alike.
const WINDOW: Duration = Duration::from_secs(3);
const ROUNDS: u32 = 3;
/// A phase also ends after this many requests, whatever the window says.
const MAX_REQUESTS: u64 = 200_000;
const WARMUP: Duration = Duration::from_millis(300);
/// The idle run: one client, this many requests each way.
const IDLE_REQUESTS: u64 = 2_000;

const TARGET_ADDED_P50_MS: f64 = 0.5;
const TARGET_ADDED_P99_MS: f64 = 3.0;
const TARGET_THROUGHPUT: f64 = 0.70;
const GOAL_VS_LITELLM: f64 = 10.0;

const LITELLM_CACHE: &str = "/var/cache/clawkeep-ci/litellm";
const LITELLM_KEY: &str = "sk-litellm-bench-master";
const LITELLM_START: Duration = Duration::from_secs(120);

/// Where one phase sends its requests.
#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    bearer: String,
}

/// What one phase measured.
struct Figures {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    /// Sorted, time to the last byte of the body.
    latencies: Vec<Duration>,
    first_error: Option<String>,
    /// CPU the whole bench process used meanwhile (load generator,
    /// provider and proxy alike): user and system time.
    cpu: Cpu,
}

/// User and system CPU time of this process (all its threads).
#[derive(Clone, Copy, Default)]
struct Cpu {
    user: Duration,
    sys: Duration,
}

impl Cpu {
    fn now() -> Cpu {
        // SAFETY: rusage is plain data; getrusage fills it for this process.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out-pointer.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let t = |tv: libc::timeval| Duration::from_micros(tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64);
        Cpu { user: t(ru.ru_utime), sys: t(ru.ru_stime) }
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu { user: self.user.saturating_sub(earlier.user), sys: self.sys.saturating_sub(earlier.sys) }
    }

    fn add(&mut self, other: Cpu) {
        self.user += other.user;
        self.sys += other.sys;
    }
}

impl Figures {
    fn empty() -> Figures {
        Figures { ok: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new(), first_error: None, cpu: Cpu::default() }
    }

    fn merge(&mut self, other: Figures) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.cpu.add(other.cpu);
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Microseconds of the process's CPU per completed request: (user, system).
    fn cpu_us(&self) -> (f64, f64) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.ok.max(1) as f64;
        (per(self.cpu.user), per(self.cpu.sys))
    }

    fn pct_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1e3
    }
}

fn body(stream: bool) -> Bytes {
    let mut v = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16});
    if stream {
        v["stream"] = true.into();
        v["stream_options"] = serde_json::json!({"include_usage": true});
    }
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

/// One request; the body is read to its end and checked for completeness.
async fn one(client: &reqwest::Client, target: &Target, body: Bytes, stream: bool) -> Result<(), String> {
    let resp = client
        .post(&target.url)
        .bearer_auth(&target.bearer)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    if !status.is_success() {
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)])));
    }
    let complete = if stream { bytes.ends_with(b"data: [DONE]\n\n") } else { bytes.ends_with(b"}") };
    if complete {
        Ok(())
    } else {
        Err(format!("incomplete body: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)])))
    }
}

/// `clients` closed-loop clients for `window` (or `max` requests in all).
async fn drive(target: &Target, stream: bool, clients: usize, window: Duration, max: u64) -> Figures {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).http1_only().timeout(Duration::from_secs(30)).build().unwrap();
    let body = body(stream);
    let issued = Arc::new(AtomicU64::new(0));
    let cpu = Cpu::now();
    let started = Instant::now();
    let until = started + window;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, target, body, issued) = (client.clone(), target.clone(), body.clone(), issued.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let (mut errors, mut first_error) = (0u64, None);
                while Instant::now() < until && issued.fetch_add(1, Ordering::Relaxed) < max {
                    let t0 = Instant::now();
                    match one(&client, &target, body.clone(), stream).await {
                        Ok(()) => latencies.push(t0.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut figures = Figures::empty();
    for t in tasks {
        let (latencies, errors, first_error) = t.await.unwrap();
        figures.latencies.extend(latencies);
        figures.errors += errors;
        figures.first_error = figures.first_error.or(first_error);
    }
    figures.elapsed = started.elapsed();
    figures.cpu = Cpu::now().since(cpu);
    figures.ok = figures.latencies.len() as u64;
    figures.latencies.sort_unstable();
    figures
}

/// Warms every target up, then alternates between them for `rounds`
/// rounds; prints and returns one row of figures per target.
async fn phase(label: &str, targets: &[Target], stream: bool, clients: usize, window: Duration, max: u64, rounds: u32) -> Vec<Figures> {
    for t in targets {
        drive(t, stream, clients, WARMUP, max).await;
    }
    let mut all: Vec<Figures> = targets.iter().map(|_| Figures::empty()).collect();
    for _ in 0..rounds {
        for (t, f) in targets.iter().zip(&mut all) {
            f.merge(drive(t, stream, clients, window / rounds, max / u64::from(rounds)).await);
        }
    }
    for (t, f) in targets.iter().zip(&all) {
        println!(
            "  {label:<11} {:<9} {:>9.0} {:>9.3} {:>9.3} {:>8} {:>7}",
            t.name,
            f.rps(),
            f.pct_ms(0.50),
            f.pct_ms(0.99),
            f.ok,
            f.errors
        );
        if let Some(e) = &f.first_error {
            println!("    first error: {e}");
        }
    }
    all
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn compare(direct: &Figures, proxy: &Figures, with_throughput: bool) {
    let p50 = proxy.pct_ms(0.50) - direct.pct_ms(0.50);
    let p99 = proxy.pct_ms(0.99) - direct.pct_ms(0.99);
    print!(
        "    added latency p50 {p50:+.3} ms (target <= {TARGET_ADDED_P50_MS} ms: {})  p99 {p99:+.3} ms (target <= {TARGET_ADDED_P99_MS} ms: {})",
        verdict(p50 <= TARGET_ADDED_P50_MS),
        verdict(p99 <= TARGET_ADDED_P99_MS)
    );
    if with_throughput {
        let ratio = proxy.rps() / direct.rps();
        print!(
            "  throughput {:.0}% of direct (target >= {:.0}%: {})",
            ratio * 100.0,
            TARGET_THROUGHPUT * 100.0,
            verdict(ratio >= TARGET_THROUGHPUT)
        );
    }
    println!();
}

/// Where the CPU went (all of this process: load generator, provider and
/// any hop share the cores), and what that says about the throughput
/// target: while the cores are all busy, throughput is cores over CPU per
/// request, so a hop adding C us to direct's D us reaches D / (D + C) of
/// direct. The kernel time the bare hop added (two more loopback sockets
/// and their wake-ups, no user-space work of note) bounds what any hop on
/// those sockets can reach.
fn cpu_report(direct: &Figures, proxy: &Figures, hop: &Figures) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = |f: &Figures| (f.cpu.user + f.cpu.sys).as_secs_f64() / (f.elapsed.as_secs_f64() * cores) * 100.0;
    let ((du, ds), (pu, ps), (hu, hs)) = (direct.cpu_us(), proxy.cpu_us(), hop.cpu_us());
    println!(
        "    CPU per request (user + sys, us): direct {du:.1} + {ds:.1}, clawkeep {pu:.1} + {ps:.1}, bare hop {hu:.1} + {hs:.1}; \
         cores busy {:.0}% / {:.0}% / {:.0}%",
        busy(direct),
        busy(proxy),
        busy(hop)
    );
    let hop_kernel = (hs - ds).max(0.0);
    println!(
        "    the bare hop added {hop_kernel:.1} us of kernel time per request: a hop costing only that would reach {:.0}% of direct; \
         clawkeep's own work beyond a bare hop is {:.1} us",
        (du + ds) / (du + ds + hop_kernel) * 100.0,
        (pu + ps) - (hu + hs)
    );
}

/// LiteLLM's proxy, started on loopback in front of the fake provider.
struct LiteLlm {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    target: Target,
    workers: usize,
}

impl LiteLlm {
    async fn start(upstream: &str) -> Result<LiteLlm, String> {
        let dir =
            std::env::var_os("CLAWKEEP_LITELLM").filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(LITELLM_CACHE), PathBuf::from);
        if !dir.join("litellm/proxy/proxy_cli.py").is_file() {
            return Err(format!("not installed in {}; python3 -m pip install --target {LITELLM_CACHE} 'litellm[proxy]'", dir.display()));
        }
        let python = std::env::var("CLAWKEEP_LITELLM_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let work = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = work.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n      \
                 api_base: {upstream}/v1\n      api_key: {OPENAI_KEY}\ngeneral_settings:\n  master_key: {LITELLM_KEY}\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        // One worker per core, as LiteLLM's docs advise for throughput.
        let workers = std::env::var("CLAWKEEP_LITELLM_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let log = std::fs::File::create(work.path().join("litellm.log")).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(&python)
            .args(["-m", "litellm.proxy.proxy_cli", "--host", "127.0.0.1", "--telemetry", "False"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--num_workers")
            .arg(workers.to_string())
            .arg("--config")
            .arg(&config)
            .env("PYTHONPATH", &dir)
            .env("PYTHONNOUSERSITE", "1")
            .env("HOME", work.path())
            .env("LITELLM_LOG", "ERROR")
            // No cost-map download at start: loopback only.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            // Its own group, so its workers are stopped with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(work.path().join("litellm.log")).unwrap_or_default();
                let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
                return Err(format!("LiteLLM exited ({status}) while starting: {last}"));
            }
            if probe.get(format!("{base}/health/liveliness")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if started.elapsed() > LITELLM_START {
                let mut l = LiteLlm { child, _dir: work, target: Target { name: "", url: String::new(), bearer: String::new() }, workers };
                l.kill().await;
                return Err(format!("LiteLLM did not come up within {LITELLM_START:?}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!("  litellm: {python}, {workers} worker(s), up in {:.1} s", started.elapsed().as_secs_f64());
        let target = Target { name: "litellm", url: format!("{base}/v1/chat/completions"), bearer: LITELLM_KEY.into() };
        Ok(LiteLlm { child, _dir: work, target, workers })
    }

    /// SIGTERM to its process group (uvicorn stops its workers), then SIGKILL;
    /// then shows any error it logged, so a slow figure can be told from a broken one.
    async fn stop(&mut self) {
        self.kill().await;
        let log = std::fs::read_to_string(self._dir.path().join("litellm.log")).unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("Error") || l.contains("Traceback") || l.contains("WARNING")).collect();
        if !errors.is_empty() {
            println!("  litellm logged {} error/warning line(s), first: {}", errors.len(), errors[0].chars().take(300).collect::<String>());
        }
    }

    async fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            let group = format!("-{pid}");
            let _ = std::process::Command::new("kill").args(["-TERM", "--", &group]).status();
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
                let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).status();
                let _ = self.child.wait().await;
            }
        }
    }
}

/// The cheapest possible proxy on the same stack (axum in, reqwest out, body
/// streamed back, no auth, parsing or metering): the ceiling any proxy
/// hop can reach on this machine, measured beside clawkeep.
async fn bare_hop(upstream: String) -> String {
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::HeaderMap;
    let client = reqwest::Client::builder().build().unwrap();
    let forward = |State((client, url)): State<(reqwest::Client, String)>, headers: HeaderMap, body: Bytes| async move {
        let mut req = client.post(format!("{url}/v1/chat/completions")).body(body);
        for name in ["authorization", "content-type"] {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v.clone());
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let mut out = axum::response::Response::new(Body::from_stream(resp.bytes_stream()));
        *out.status_mut() = status;
        out
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(forward)).with_state((client, upstream));
    let listener = common::nodelay(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1/chat/completions")
}

fn main() {
    // The fake provider and the proxy get their own runtime, the load
    // generator another, as separate processes would.
    let servers = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let load = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let h = servers.block_on(Harness::build(Options::bench(), |c| c.upstream_timeout = Duration::from_secs(30)));
    let upstream = h.upstream.url();
    let direct = Target { name: "direct", url: format!("{upstream}/v1/chat/completions"), bearer: OPENAI_KEY.into() };
    let proxy = Target { name: "clawkeep", url: h.url("/v1/chat/completions"), bearer: h.token("bench-agent") };
    let hop = Target { name: "bare-hop", url: servers.block_on(bare_hop(upstream.clone())), bearer: OPENAI_KEY.into() };

    println!(
        "proxy_load: {CLIENTS} clients, {WINDOW:?} per phase in {ROUNDS} alternating rounds (max {MAX_REQUESTS} requests), {} cores, ledger in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        h._dir.path().display()
    );
    load.block_on(async {
        let mut litellm = match LiteLlm::start(&upstream).await {
            Ok(l) => Some(l),
            Err(reason) => {
                println!("litellm: skipped ({reason})");
                None
            }
        };
        let mut targets = vec![direct.clone(), proxy.clone(), hop.clone()];
        targets.extend(litellm.as_ref().map(|l| l.target.clone()));
        // One target alone, under load, for a profiler to watch.
        if let Ok(only) = std::env::var("CLAWKEEP_BENCH_ONLY") {
            targets.retain(|t| t.name == only);
            for (label, stream) in [("non-stream", false), ("stream", true)] {
                phase(label, &targets, stream, CLIENTS, WINDOW, MAX_REQUESTS, ROUNDS).await;
            }
            return;
        }
        println!("  {:<11} {:<9} {:>9} {:>9} {:>9} {:>8} {:>7}", "phase", "via", "req/s", "p50 ms", "p99 ms", "ok", "errors");
        for (label, stream) in [("non-stream", false), ("stream", true)] {
            let f = phase(label, &targets, stream, CLIENTS, WINDOW, MAX_REQUESTS, ROUNDS).await;
            compare(&f[0], &f[1], true);
            println!(
                "    a bare proxy hop alone reaches {:.0}% of direct; clawkeep reaches {:.0}% of the bare hop",
                f[2].rps() / f[0].rps() * 100.0,
                f[1].rps() / f[2].rps() * 100.0
            );
            cpu_report(&f[0], &f[1], &f[2]);
            if let (Some(l), Some(lf)) = (&litellm, f.get(3)) {
                let ratio = f[1].rps() / lf.rps();
                println!(
                    "    clawkeep {ratio:.1}x LiteLLM's throughput ({} workers) (goal >= {GOAL_VS_LITELLM}x: {})",
                    l.workers,
                    verdict(ratio >= GOAL_VS_LITELLM)
                );
            }
        }
        if let Some(l) = &mut litellm {
            l.stop().await;
        }
        println!("  idle: one client, {IDLE_REQUESTS} requests each way (the proxy's own cost, no queueing)");
        for (label, stream) in [("non-stream", false), ("stream", true)] {
            let f = phase(label, &targets[..2], stream, 1, Duration::from_secs(60), IDLE_REQUESTS, ROUNDS).await;
            compare(&f[0], &f[1], false);
        }
    });

    // Every request through the proxy was metered: one ledger row each.
    let rows = h.state.usage(Some("bench-agent"), None).unwrap();
    let bad = rows.iter().filter(|r| r.status != 200 || r.output_tokens == 0).count();
    println!("ledger: {} rows for the proxied requests, {bad} not 200 or without usage", rows.len());
    assert_eq!(bad, 0, "some proxied requests were not metered from real usage");
    drop(load);
    drop(servers);
}
