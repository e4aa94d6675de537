//! The main table: the mock directly, bare Envoy, Envoy with each plugin alone, Envoy with the
//! full suite as one filter per plugin and as ai-gateway.wasm (one filter in front, one on the
//! cluster), and two peer gateways (LiteLLM proxy, Portkey gateway), all on the same mock, in
//! one run, interleaved, medians quoted. Prints the table and writes every figure to
//! `docs/bench.json` and a chart to `docs/bench.png`.
//!
//! - Throughput: non-streaming chat completions under wrk at 16 and 64 connections, a new
//!   question each request (so a cache takes its miss path).
//! - Streams: sequential streams of 20 chunks 1 ms apart; time to first byte and total time,
//!   and what each adds to bare Envoy's.
//! - Memory: Envoy's resident memory with 1,000 streams in flight and idle (the mock holds
//!   their first chunk back), per stream, for bare Envoy and the full suite both ways.
//!
//! `BENCH_PEERS=0` leaves the peers out (they take a minute to start).

use crate::peers::{self, Peer};
use e2e::bench::{median_by_rps, num_cpus, percentile, wrk_with, Load, Plan};
use e2e::client::post_stream;
use e2e::config::{fallback_route, provider_cluster, wasm_filter, ProviderEndpoint};
use e2e::mock::{Provider, Recorded, Reply};
use e2e::{paths, Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "sk-bench";
const PLUGINS: [&str; 7] = [
    "ai-gateway",
    "ai-proxy",
    "ai-statistics",
    "ai-token-ratelimit",
    "ai-content-safety",
    "ai-cache",
    "ai-fallback",
];
const IDLE_STREAMS: usize = 1000;
/// Marks a streaming request whose answer the mock holds back.
const IDLE_MARK: &str = "[hold]";

/// The provider every configuration talks to: answers at once when not streaming, streams 20
/// chunks 1 ms apart, and holds back the answer of requests marked idle. Peers see exactly what
/// Envoy sees, since the behaviour follows the request body, not headers they might drop.
struct BenchProvider {
    fast: OpenAiMock,
    paced: OpenAiMock,
    idle: OpenAiMock,
    idle_seen: Arc<AtomicUsize>,
}

impl BenchProvider {
    fn new(idle_seen: Arc<AtomicUsize>) -> Self {
        let mut paced = OpenAiMock::with_key(KEY);
        paced.chunks = 20;
        paced.delay = Duration::from_millis(1);
        let mut idle = OpenAiMock::with_key(KEY);
        idle.first_delay = Duration::from_secs(60);
        BenchProvider {
            fast: OpenAiMock::with_key(KEY),
            paced,
            idle,
            idle_seen,
        }
    }
}

impl Provider for BenchProvider {
    fn handle(&self, request: &Recorded) -> Reply {
        let body = request.json();
        if body["stream"] != true {
            return self.fast.handle(request);
        }
        if body.to_string().contains(IDLE_MARK) {
            self.idle_seen.fetch_add(1, Ordering::Relaxed);
            return self.idle.handle(request);
        }
        self.paced.handle(request)
    }
}

/// One configuration under test.
struct Target {
    name: String,
    kind: &'static str,
    base: String,
    headers: Vec<(String, String)>,
    envoy: Option<Envoy>,
    _peer: Option<Peer>,
}

impl Target {
    fn envoy(name: &str, envoy: Envoy) -> Target {
        Target {
            name: name.to_string(),
            kind: "envoy",
            base: envoy.url(""),
            headers: Vec::new(),
            envoy: Some(envoy),
            _peer: None,
        }
    }

    fn peer(peer: Peer) -> Target {
        Target {
            name: peer.name.to_string(),
            kind: "peer",
            base: peer.base.clone(),
            headers: peer.headers.clone(),
            envoy: None,
            _peer: Some(peer),
        }
    }

    fn chat_url(&self) -> String {
        format!("{}/v1/chat/completions", self.base)
    }
}

fn provider_edge() -> Value {
    json!({"providers": [{"id": "mock", "type": "openai", "apiTokens": [KEY]}]})
}

fn ratelimit() -> Value {
    let huge = 1_000_000_000_u64;
    json!({"rule_name": "bench", "rule_items": [{"limit_by_per_ip": "from-remote-addr", "limit_keys": [{
        "key": "0.0.0.0/0", "token_per_minute": huge, "query_per_second": huge,
        "max_concurrent_requests": 100_000}]}]})
}

fn content_safety() -> Value {
    let words: Vec<String> = (0..200).map(|i| format!("forbidden-term-{i}")).collect();
    json!({"local": {"denyWords": words}})
}

/// Each plugin alone, then the full suite in the order DESIGN recommends: the client edge,
/// statistics, rate limit, content safety, cache, and the provider edge on the cluster.
fn envoy_configurations(mock: SocketAddr) -> Vec<(String, Value)> {
    let simple = |plugin: &str, config: Value| {
        (
            format!("Envoy + {plugin}"),
            Gateway::new()
                .plugin(plugin, config)
                .cluster("provider", mock),
        )
    };
    let chain = json!({"chain": [{"provider": "mock", "cluster": "chain"}]});
    vec![
        (
            "bare Envoy".to_string(),
            Gateway::new().cluster("provider", mock),
        ),
        simple(
            "ai-proxy",
            json!({"provider": {"type": "openai", "apiTokens": [KEY]}}),
        ),
        simple("ai-statistics", json!({})),
        simple("ai-token-ratelimit", ratelimit()),
        simple("ai-content-safety", content_safety()),
        simple("ai-cache", json!({})),
        (
            "Envoy + ai-fallback".to_string(),
            Gateway::new()
                .plugin("ai-fallback", chain.clone())
                .raw_route(fallback_route(1, "5s"))
                .raw_cluster(provider_cluster(
                    "chain",
                    &[ProviderEndpoint::new(mock, "mock")],
                    vec![wasm_filter("ai-fallback", &chain)],
                )),
        ),
        (
            "Envoy + full suite".to_string(),
            full_suite(mock, content_safety()),
        ),
        (
            FULL_PROMPTS_ONLY.to_string(),
            full_suite(mock, prompts_only()),
        ),
    ]
    .into_iter()
    .map(|(name, gateway)| (name, gateway.to_json()))
    .chain([
        (
            ONE_FILTER.to_string(),
            one_filter(full_suite(mock, content_safety())),
        ),
        (
            ONE_FILTER_PROMPTS_ONLY.to_string(),
            one_filter(full_suite(mock, prompts_only())),
        ),
    ])
    .collect()
}

fn prompts_only() -> Value {
    let mut prompts_only = content_safety();
    prompts_only["checkResponse"] = json!(false);
    prompts_only
}

/// The same chain as ai-gateway.wasm: the downstream filters one filter, the provider edge
/// another, each position in a VM of its own.
const ONE_FILTER: &str = "ai-gateway, one filter";
const ONE_FILTER_PROMPTS_ONLY: &str = "ai-gateway, prompts checked";

fn one_filter(gateway: Gateway) -> Value {
    let mut config = gateway.to_json();
    e2e::suite::rewrite_config(&mut config);
    config
}

/// The full suite whose content safety checks prompts only: a checked stream is held until its
/// first window is complete (or the answer ends), which is what its time to first byte shows.
const FULL_PROMPTS_ONLY: &str = "full suite, prompts checked";

fn full_suite(mock: SocketAddr, content_safety: Value) -> Gateway {
    Gateway::new()
        .plugin_instance("ai-proxy", "ai-proxy-client", json!({}))
        .plugin("ai-statistics", json!({}))
        .plugin("ai-token-ratelimit", ratelimit())
        .plugin("ai-content-safety", content_safety)
        .plugin("ai-cache", json!({}))
        .raw_cluster(provider_cluster(
            "provider",
            &[ProviderEndpoint::new(mock, "mock")],
            vec![wasm_filter("ai-proxy", &provider_edge())],
        ))
}

#[derive(Clone, Copy, Default)]
struct StreamFigures {
    ttfb_p50_ms: f64,
    ttfb_p99_ms: f64,
    total_p50_ms: f64,
}

pub fn run(plan: &Plan) {
    let idle_seen = Arc::new(AtomicUsize::new(0));
    let mock = MockServer::start(BenchProvider::new(idle_seen.clone()));
    let options = e2e::bench::envoy_options();
    let mut targets = vec![Target {
        name: "direct to the mock".into(),
        kind: "direct",
        base: mock.url(""),
        headers: Vec::new(),
        envoy: None,
        _peer: None,
    }];
    for (name, config) in envoy_configurations(mock.addr) {
        targets.push(Target::envoy(&name, Envoy::start_with(&config, &options)));
    }
    if std::env::var("BENCH_PEERS").as_deref() != Ok("0") {
        // A peer that does not start is reported and left out; its ratios are null.
        for peer in [peers::litellm(mock.addr, KEY), peers::portkey(mock.addr)] {
            match peer {
                Ok(peer) => targets.push(Target::peer(peer)),
                Err(why) => eprintln!("peer left out: {why}"),
            }
        }
    }
    let index = |name: &str| targets.iter().position(|t| t.name == name);
    let bare = index("bare Envoy").expect("bare Envoy");
    let full = index("Envoy + full suite").expect("full suite");
    let one = index(ONE_FILTER).expect("the suite as one filter");

    println!(
        "AI gateway benchmark: {} interleaved rounds of {} s, median round reported",
        plan.rounds, plan.seconds
    );
    println!(
        "machine: {} cores; Envoy --concurrency {}; wrk 1 thread; peers with their default workers; one mock for all",
        num_cpus(),
        options.concurrency
    );
    let wasm: Vec<(&str, u64)> = PLUGINS
        .iter()
        .map(|p| {
            let size = std::fs::metadata(paths::plugin_wasm(p)).map_or(0, |m| m.len());
            (*p, size)
        })
        .collect();
    let sizes: Vec<String> = wasm
        .iter()
        .map(|(p, s)| format!("{p} {} KB", s / 1024))
        .collect();
    println!("wasm: {}", sizes.join(", "));
    println!();

    let mut loads: Vec<[Load; 2]> = vec![[Load::default(); 2]; targets.len()];
    for (c, connections) in [16u32, 64].into_iter().enumerate() {
        let mut rounds: Vec<Vec<Load>> = vec![Vec::new(); targets.len()];
        for _ in 0..plan.rounds {
            for (i, target) in targets.iter().enumerate() {
                rounds[i].push(wrk_with(
                    &target.chat_url(),
                    connections,
                    plan.seconds,
                    &target.headers,
                ));
            }
        }
        for (i, r) in rounds.iter().enumerate() {
            loads[i][c] = median_by_rps(r);
        }
        println!("non-streaming chat completions, {connections} connections");
        println!(
            "  {:<28} {:>9} {:>8} {:>8} {:>8} {:>10} {:>7}",
            "configuration", "req/s", "p50 ms", "p99 ms", "vs bare", "vs suite", "errors"
        );
        for (target, load) in targets.iter().zip(&loads) {
            let load = load[c];
            println!(
                "  {:<28} {:>9.0} {:>8.2} {:>8.2} {:>7.2}x {:>9.3}x {:>7}",
                target.name,
                load.rps,
                load.p50_ms,
                load.p99_ms,
                load.rps / loads[bare][c].rps,
                load.rps / loads[full][c].rps,
                load.failures
            );
        }
        println!();
    }

    let streams = stream_figures(plan, &targets);
    println!(
        "streams: {} sequential per configuration, 20 chunks 1 ms apart",
        plan.rounds * plan.streams
    );
    println!(
        "  {:<28} {:>12} {:>12} {:>14} {:>14}",
        "configuration", "TTFB p50 ms", "TTFB p99 ms", "added TTFB ms", "added total ms"
    );
    for (target, s) in targets.iter().zip(&streams) {
        println!(
            "  {:<28} {:>12.3} {:>12.3} {:>+14.3} {:>+14.3}",
            target.name,
            s.ttfb_p50_ms,
            s.ttfb_p99_ms,
            s.ttfb_p50_ms - streams[bare].ttfb_p50_ms,
            s.total_p50_ms - streams[bare].total_p50_ms
        );
    }
    println!();

    let memory: Vec<(String, f64)> = [bare, full, one]
        .into_iter()
        .map(|i| {
            let envoy = targets[i].envoy.as_ref().expect("an Envoy");
            let per_stream = idle_stream_bytes(envoy, &idle_seen);
            (targets[i].name.clone(), per_stream)
        })
        .collect();
    println!("memory with {IDLE_STREAMS} idle streams in flight (Envoy resident memory growth)");
    for (name, bytes) in &memory {
        println!("  {:<28} {:>8.1} KB per stream", name, bytes / 1024.0);
    }

    let report = report(
        plan,
        &targets,
        &loads,
        &streams,
        &memory,
        &wasm,
        [bare, full, one],
    );
    let json_path = paths::repo_root().join("docs/bench.json");
    let _ = std::fs::create_dir_all(json_path.parent().expect("docs"));
    std::fs::write(
        &json_path,
        serde_json::to_vec_pretty(&report).expect("json"),
    )
    .expect("write docs/bench.json");
    println!();
    println!("ratios: {}", report["ratios"]);
    draw_chart(&json_path);
}

/// Sequential streams through each target, interleaved by round.
fn stream_figures(plan: &Plan, targets: &[Target]) -> Vec<StreamFigures> {
    let mut ttfb: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut total: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut n = 0;
    for _ in 0..plan.rounds {
        for (i, target) in targets.iter().enumerate() {
            let headers: Vec<(&str, &str)> = std::iter::once(("authorization", "Bearer sk-bench"))
                .chain(target.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .collect();
            for _ in 0..plan.streams {
                n += 1;
                let body = json!({"model": "gpt-4o-mini", "stream": true,
                                  "messages": [{"role": "user", "content": format!("Tell me a story ({n})")}]});
                let streamed = post_stream(&target.chat_url(), &body, &headers);
                assert_eq!(
                    streamed.status,
                    200,
                    "{}: {}",
                    target.name,
                    String::from_utf8_lossy(&streamed.body)
                );
                if let Some(first) = streamed.first_byte {
                    ttfb[i].push(first.as_secs_f64() * 1000.0);
                }
                total[i].push(streamed.total.as_secs_f64() * 1000.0);
            }
        }
    }
    ttfb.iter_mut()
        .zip(total.iter_mut())
        .map(|(t, total)| StreamFigures {
            ttfb_p50_ms: percentile(t, 50.0),
            ttfb_p99_ms: percentile(t, 99.0),
            total_p50_ms: percentile(total, 50.0),
        })
        .collect()
}

/// Envoy's resident memory growth per stream while `IDLE_STREAMS` streams wait for their first
/// chunk. Raw sockets: a request each, nothing read until the end.
fn idle_stream_bytes(envoy: &Envoy, idle_seen: &AtomicUsize) -> f64 {
    let addr: SocketAddr = envoy
        .url("")
        .trim_start_matches("http://")
        .parse()
        .expect("Envoy address");
    // Warm up the paths (VM contexts, connection pools) before the baseline.
    let warm = open_idle_streams(addr, 50, idle_seen);
    drop(warm);
    std::thread::sleep(Duration::from_millis(500));
    let before = envoy.rss_bytes();
    let sockets = open_idle_streams(addr, IDLE_STREAMS, idle_seen);
    std::thread::sleep(Duration::from_millis(500));
    let after = envoy.rss_bytes();
    drop(sockets);
    after.saturating_sub(before) as f64 / IDLE_STREAMS as f64
}

fn open_idle_streams(addr: SocketAddr, count: usize, idle_seen: &AtomicUsize) -> Vec<TcpStream> {
    let start_seen = idle_seen.load(Ordering::Relaxed);
    let sockets: Vec<TcpStream> = (0..count)
        .map(|i| {
            let body = json!({"model": "gpt-4o-mini", "stream": true,
                              "messages": [{"role": "user", "content": format!("{IDLE_MARK} wait for it {i}")}]})
            .to_string();
            let mut socket = TcpStream::connect(addr).expect("connect to Envoy");
            write!(
                socket,
                "POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .expect("send request");
            socket
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while idle_seen.load(Ordering::Relaxed) < start_seen + count {
        if Instant::now() > deadline {
            let mut reply = String::new();
            let mut first = &sockets[0];
            let _ = first.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = first.read_to_string(&mut reply);
            panic!(
                "only {} of {count} idle streams reached the mock; first reply: {reply}",
                idle_seen.load(Ordering::Relaxed) - start_seen
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sockets
}

#[allow(clippy::too_many_arguments)]
fn report(
    plan: &Plan,
    targets: &[Target],
    loads: &[[Load; 2]],
    streams: &[StreamFigures],
    memory: &[(String, f64)],
    wasm: &[(&str, u64)],
    [bare, full, one]: [usize; 3],
) -> Value {
    let load = |l: &Load| json!({"rps": l.rps, "p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "failures": l.failures});
    let configurations: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({
                "name": t.name,
                "kind": t.kind,
                "c16": load(&loads[i][0]),
                "c64": load(&loads[i][1]),
                "stream": {
                    "ttfb_p50_ms": streams[i].ttfb_p50_ms,
                    "ttfb_p99_ms": streams[i].ttfb_p99_ms,
                    "total_p50_ms": streams[i].total_p50_ms,
                    "added_ttfb_p50_ms": streams[i].ttfb_p50_ms - streams[bare].ttfb_p50_ms,
                    "added_total_p50_ms": streams[i].total_p50_ms - streams[bare].total_p50_ms,
                },
                "rps_vs_bare_c16": loads[i][0].rps / loads[bare][0].rps,
                "rps_vs_bare_c64": loads[i][1].rps / loads[bare][1].rps,
            })
        })
        .collect();
    let rps = |name: &str, c: usize| {
        targets
            .iter()
            .position(|t| t.name == name)
            .map(|i| loads[i][c].rps)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    };
    let suite = |c: usize| Some(loads[full][c].rps);
    let one_filter = |c: usize| Some(loads[one][c].rps);
    let memory_of = |i: usize| {
        memory
            .iter()
            .find(|(name, _)| *name == targets[i].name)
            .map(|(_, bytes)| *bytes)
    };
    let bare_rps = |c: usize| Some(loads[bare][c].rps);
    json!({
        "machine": {"cores": num_cpus(), "envoy_concurrency": 1, "load_generator": "wrk, 1 thread"},
        "plan": {"rounds": plan.rounds, "seconds": plan.seconds, "streams_per_round": plan.streams,
                 "idle_streams": IDLE_STREAMS},
        "configurations": configurations,
        "memory_per_idle_stream_bytes": memory.iter().map(|(n, b)| (n.clone(), json!(b))).collect::<serde_json::Map<_, _>>(),
        "wasm_bytes": wasm.iter().map(|(p, s)| (p.to_string(), json!(s))).collect::<serde_json::Map<_, _>>(),
        "ratios": {
            "full_suite_vs_bare_rps": ratio(suite(0), bare_rps(0)),
            "full_suite_vs_bare_rps_c64": ratio(suite(1), bare_rps(1)),
            "litellm_vs_full_suite_rps": ratio(rps("LiteLLM proxy", 0), suite(0)),
            "portkey_vs_full_suite_rps": ratio(rps("Portkey gateway", 0), suite(0)),
            "full_suite_vs_litellm_rps": ratio(suite(0), rps("LiteLLM proxy", 0)),
            "full_suite_vs_portkey_rps": ratio(suite(0), rps("Portkey gateway", 0)),
            "full_suite_added_ttfb_p50_ms": streams[full].ttfb_p50_ms - streams[bare].ttfb_p50_ms,
            "one_filter_vs_bare_rps": ratio(one_filter(0), bare_rps(0)),
            "one_filter_vs_bare_rps_c64": ratio(one_filter(1), bare_rps(1)),
            "one_filter_vs_full_suite_rps": ratio(one_filter(0), suite(0)),
            "one_filter_added_ttfb_p50_ms": streams[one].ttfb_p50_ms - streams[bare].ttfb_p50_ms,
            "one_filter_prompts_checked_added_ttfb_p50_ms": targets
                .iter()
                .position(|t| t.name == ONE_FILTER_PROMPTS_ONLY)
                .map(|i| streams[i].ttfb_p50_ms - streams[bare].ttfb_p50_ms),
            "one_filter_idle_stream_bytes": memory_of(one),
            "full_suite_idle_stream_bytes": memory_of(full),
            "full_suite_prompts_checked_added_ttfb_p50_ms": targets
                .iter()
                .position(|t| t.name == FULL_PROMPTS_ONLY)
                .map(|i| streams[i].ttfb_p50_ms - streams[bare].ttfb_p50_ms),
        },
    })
}

/// `docs/bench.png` from `docs/bench.json` (matplotlib, installed by `make bench`).
fn draw_chart(json_path: &std::path::Path) {
    let png = json_path.with_extension("png");
    let status = std::process::Command::new(paths::python())
        .arg(paths::repo_root().join("e2e/bench/chart.py"))
        .arg(json_path)
        .arg(&png)
        .status();
    match status {
        Ok(s) if s.success() => println!("wrote {} and {}", json_path.display(), png.display()),
        _ => println!(
            "wrote {}; the chart failed (is matplotlib installed? `make bench` installs it)",
            json_path.display()
        ),
    }
}
