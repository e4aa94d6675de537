//! The content-safety section: what checking costs, against bare Envoy in the same run.
//!
//! - Non-streaming chat completions under wrk: prompt and answer checked by the local lists,
//!   and by a moderation webhook (an in-process mock reached through an Envoy cluster).
//! - Streams of 10,000 characters in 25-character chunks (20 windows of 500 characters):
//!   the added time per stream, divided by its windows, is the cost per window.
//! - Memory: Envoy's resident memory while 32 slow streams are held at once, per stream.

use e2e::bench::{median_by_rps, percentile, wrk, Load, Plan};
use e2e::client::post_stream;
use e2e::mock::scripted::ScriptedMock;
use e2e::mock::webhook::WebhookMock;
use e2e::{paths, Envoy, Gateway, MockServer};
use serde_json::{json, Value};
use std::time::Duration;

const HOOK_TOKEN: &str = "bench-hook";
const STREAM_CHUNKS: usize = 400;
const CHUNK_CHARS: usize = 25;
const WINDOW_CHARS: usize = 500;

struct Target {
    name: &'static str,
    envoy: Envoy,
}

pub fn run(plan: &Plan) {
    let provider = MockServer::start(ScriptedMock::default());
    let hook = MockServer::start(WebhookMock {
        token: HOOK_TOKEN.into(),
    });
    let options = e2e::bench::envoy_options();
    let words: Vec<String> = (0..2000).map(|i| format!("forbidden-term-{i}")).collect();
    let local = json!({"local": {"denyWords": words}, "stream": {"windowChars": WINDOW_CHARS}});
    let mut webhook = local.clone();
    webhook["service"] = json!({"type": "webhook", "cluster": "hook", "host": "hook", "timeout": 2000,
                                "headers": {"authorization": format!("Bearer {HOOK_TOKEN}")}});
    let start = |gateway: Gateway| {
        Envoy::start_with(
            &gateway
                .cluster("provider", provider.addr)
                .cluster("hook", hook.addr)
                .to_json(),
            &options,
        )
    };
    let configurations = [
        ("bare Envoy", None),
        ("content-safety, local lists", Some(local)),
        ("content-safety, webhook callout", Some(webhook)),
    ];
    let fresh = || -> Vec<Target> {
        configurations
            .iter()
            .map(|(name, config)| Target {
                name,
                envoy: match config {
                    None => start(Gateway::new()),
                    Some(config) => {
                        start(Gateway::new().plugin("ai-content-safety", config.clone()))
                    }
                },
            })
            .collect()
    };
    let targets = fresh();
    let size = std::fs::metadata(paths::plugin_wasm("ai-content-safety")).map_or(0, |m| m.len());
    println!("ai-content-safety: {size} bytes of wasm; 2,000 deny words; windows of {WINDOW_CHARS} characters");
    println!();

    let mut rounds: Vec<Vec<Load>> = vec![Vec::new(); targets.len()];
    for _ in 0..plan.rounds {
        for (i, target) in targets.iter().enumerate() {
            rounds[i].push(wrk(
                &target.envoy.url("/v1/chat/completions"),
                16,
                plan.seconds,
            ));
        }
    }
    let loads: Vec<Load> = rounds.iter().map(|r| median_by_rps(r)).collect();
    println!(
        "non-streaming chat completions (prompt and answer checked), 16 connections, {} s per run",
        plan.seconds
    );
    println!(
        "  {:<34} {:>10} {:>9} {:>9} {:>9} {:>14}",
        "configuration", "req/s", "p50 ms", "p99 ms", "vs bare", "added p50 ms"
    );
    for (target, load) in targets.iter().zip(&loads) {
        println!(
            "  {:<34} {:>10.0} {:>9.2} {:>9.2} {:>8.2}x {:>+14.3} {}",
            target.name,
            load.rps,
            load.p50_ms,
            load.p99_ms,
            load.rps / loads[0].rps,
            load.p50_ms - loads[0].p50_ms,
            if load.failures > 0 {
                format!("({} errors)", load.failures)
            } else {
                String::new()
            }
        );
    }
    println!();

    // Streams: the whole stream's time, so every window's hold and check counts.
    let body = json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "Tell me a long story."}]});
    let chunks = STREAM_CHUNKS.to_string();
    let chunk_bytes = CHUNK_CHARS.to_string();
    let headers = [
        ("x-mock-chunks", chunks.as_str()),
        ("x-mock-chunk-bytes", chunk_bytes.as_str()),
    ];
    let windows = (STREAM_CHUNKS * CHUNK_CHARS).div_ceil(WINDOW_CHARS);
    let streams = plan.streams.max(10);
    let mut totals: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..plan.rounds {
        for (i, target) in targets.iter().enumerate() {
            for _ in 0..streams {
                let streamed =
                    post_stream(&target.envoy.url("/v1/chat/completions"), &body, &headers);
                assert_eq!(streamed.status, 200);
                totals[i].push(streamed.total.as_secs_f64() * 1000.0);
            }
        }
    }
    println!(
        "streams of {} characters in {CHUNK_CHARS}-character chunks ({windows} windows), {} sequential streams",
        STREAM_CHUNKS * CHUNK_CHARS,
        plan.rounds * streams
    );
    println!(
        "  {:<34} {:>12} {:>12} {:>10} {:>16}",
        "configuration", "p50 ms", "p99 ms", "vs bare", "added per window"
    );
    let bare = percentile(&mut totals[0].clone(), 50.0);
    for (target, samples) in targets.iter().zip(totals.iter_mut()) {
        let p50 = percentile(samples, 50.0);
        println!(
            "  {:<34} {:>12.3} {:>12.3} {:>9.2}x {:>13.1} µs",
            target.name,
            p50,
            percentile(samples, 99.0),
            p50 / bare,
            (p50 - bare) * 1000.0 / windows as f64
        );
    }
    println!();
    drop(targets);
    // Fresh gateways, so that the held-bytes histogram only sees these streams.
    memory(&fresh(), &body);
}

/// Memory per stream: the most bytes each stream held (the plugin's histogram), and Envoy's
/// resident memory growth while 32 slow streams are held at once.
fn memory(targets: &[Target], body: &Value) {
    const CONCURRENT: usize = 32;
    println!("memory: {CONCURRENT} concurrent slow streams (one 25-character chunk every 20 ms)");
    for target in targets {
        let url = target.envoy.url("/v1/chat/completions");
        let ((), growth) = target.envoy.rss_growth_during(|| {
            let threads: Vec<_> = (0..CONCURRENT)
                .map(|_| {
                    let (url, body) = (url.clone(), body.clone());
                    std::thread::spawn(move || {
                        let streamed = post_stream(
                            &url,
                            &body,
                            &[
                                ("x-mock-chunks", "100"),
                                ("x-mock-chunk-bytes", "25"),
                                ("x-mock-delay-ms", "20"),
                            ],
                        );
                        assert_eq!(streamed.status, 200);
                    })
                })
                .collect();
            for t in threads {
                let _ = t.join();
            }
        });
        std::thread::sleep(Duration::from_millis(1200));
        println!(
            "  {:<34} Envoy RSS growth {:>6} KiB ({:>3} KiB per stream); held per stream: {}",
            target.name,
            growth >> 10,
            (growth >> 10) / CONCURRENT as u64,
            held_bytes(&target.envoy)
        );
    }
}

/// The plugin's `stream_held_bytes_peak` histogram as `p50 … / max …`, over every stream so far.
fn held_bytes(envoy: &Envoy) -> String {
    let stats = e2e::client::get(&envoy.admin_url("/stats?filter=stream_held_bytes_peak"))
        .map(|r| r.text())
        .unwrap_or_default();
    let quantile = |q: &str| {
        stats
            .split(&format!(" {q}("))
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|pair| pair.split(',').nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| format!("{v:.0}"))
    };
    match (quantile("P50"), quantile("P100")) {
        (Some(p50), Some(max)) => format!("p50 {p50} B, max {max} B"),
        _ => "-".into(),
    }
}
