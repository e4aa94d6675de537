//! The core section: bare Envoy, Envoy + ai-statistics, Envoy + ai-proxy.

use e2e::bench::{median_by_rps, num_cpus, percentile, wrk, Load, Plan};
use e2e::client::post_stream;
use e2e::{paths, Envoy, EnvoyOptions, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};

/// One configuration under test: where to send requests, and the Envoy serving them.
struct Target {
    name: &'static str,
    base: String,
    _envoy: Option<Envoy>,
}

const MOCK_KEY: &str = "sk-bench";

/// A streaming measurement: name, URL, body, headers.
type StreamRow<'a> = (String, String, &'a Value, &'a [(&'a str, &'a str)]);

/// Bare Envoy against Envoy with each plugin, non-streaming throughput and streaming time to
/// first byte.
pub fn run(plan: &Plan) {
    let mock = MockServer::start(OpenAiMock::with_key(MOCK_KEY));
    let options = EnvoyOptions {
        concurrency: 1,
        log_level: "warning",
        work_dir: None,
    };
    let envoy = |gateway: Gateway| {
        Envoy::start_with(&gateway.cluster("provider", mock.addr).to_json(), &options)
    };
    let target = |name, envoy: Envoy| Target {
        name,
        base: envoy.url(""),
        _envoy: Some(envoy),
    };
    let provider = json!({"provider": {"type": "openai", "apiTokens": [MOCK_KEY]}});
    let targets = [
        Target {
            name: "direct to mock",
            base: mock.url(""),
            _envoy: None,
        },
        target("bare Envoy", envoy(Gateway::new())),
        target(
            "Envoy + ai-statistics",
            envoy(Gateway::new().plugin("ai-statistics", json!({}))),
        ),
        target(
            "Envoy + ai-proxy",
            envoy(Gateway::new().plugin("ai-proxy", provider)),
        ),
    ];

    println!(
        "AI gateway benchmark: {} interleaved rounds, median round reported",
        plan.rounds
    );
    println!(
        "machine: {} cores; Envoy --concurrency {}; wrk 1 thread; mock provider in-process",
        num_cpus(),
        options.concurrency
    );
    for plugin in ["ai-statistics", "ai-proxy"] {
        let size = std::fs::metadata(paths::plugin_wasm(plugin))
            .map(|m| m.len())
            .unwrap_or(0);
        println!("{plugin}.wasm: {size} bytes");
    }
    println!();

    for connections in [16, 64] {
        let mut rounds: Vec<Vec<Load>> = vec![Vec::new(); targets.len()];
        for _ in 0..plan.rounds {
            for (i, target) in targets.iter().enumerate() {
                let url = format!("{}/v1/chat/completions", target.base);
                rounds[i].push(wrk(&url, connections, plan.seconds));
            }
        }
        let medians: Vec<Load> = rounds.iter().map(|r| median_by_rps(r)).collect();
        let bare_rps = medians[1].rps;
        println!(
            "non-streaming chat completions, {connections} connections, {} s per run",
            plan.seconds
        );
        println!(
            "  {:<34} {:>10} {:>9} {:>9} {:>9} {:>8}",
            "configuration", "req/s", "p50 ms", "p99 ms", "vs bare", "errors"
        );
        for (target, load) in targets.iter().zip(&medians) {
            println!(
                "  {:<34} {:>10.0} {:>9.2} {:>9.2} {:>8.2}x {:>8}",
                target.name,
                load.rps,
                load.p50_ms,
                load.p99_ms,
                load.rps / bare_rps,
                load.failures
            );
        }
        println!();
    }

    // Streaming: the mock sends its first chunk at once, so the time to the client's first byte
    // is the gateway's own latency on top of the provider's. The last row speaks Anthropic's API
    // to the same OpenAI-format mock: every event is translated on the way.
    let openai_stream = json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                               "messages": [{"role": "user", "content": "Hello!"}]});
    let anthropic_stream = json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": true,
                                  "messages": [{"role": "user", "content": "Hello!"}]});
    let auth = format!("Bearer {MOCK_KEY}");
    let chat_headers = [
        ("authorization", auth.as_str()),
        ("x-mock-chunks", "20"),
        ("x-mock-delay-ms", "1"),
    ];
    let messages_headers = [
        ("anthropic-version", "2023-06-01"),
        ("x-mock-chunks", "20"),
        ("x-mock-delay-ms", "1"),
    ];
    let rows: Vec<StreamRow> = targets
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                format!("{}/v1/chat/completions", t.base),
                &openai_stream,
                &chat_headers[..],
            )
        })
        .chain(std::iter::once((
            "Envoy + ai-proxy, Anthropic client".to_string(),
            format!("{}/v1/messages", targets[3].base),
            &anthropic_stream,
            &messages_headers[..],
        )))
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..plan.rounds {
        for (i, (_, url, body, headers)) in rows.iter().enumerate() {
            for _ in 0..plan.streams {
                let streamed = post_stream(url, body, headers);
                assert_eq!(
                    streamed.status,
                    200,
                    "{url}: {}",
                    String::from_utf8_lossy(&streamed.body)
                );
                if let Some(first) = streamed.first_byte {
                    samples[i].push(first.as_secs_f64() * 1000.0);
                }
            }
        }
    }
    println!(
        "streaming: time to first byte over {} sequential streams",
        plan.rounds * plan.streams
    );
    println!(
        "  {:<34} {:>9} {:>9} {:>14}",
        "configuration", "p50 ms", "p99 ms", "added p50 ms"
    );
    let bare_p50 = percentile(&mut samples[1].clone(), 50.0);
    for ((name, ..), s) in rows.iter().zip(samples.iter_mut()) {
        let p50 = percentile(s, 50.0);
        println!(
            "  {:<34} {:>9.3} {:>9.3} {:>+14.3}",
            name,
            p50,
            percentile(s, 99.0),
            p50 - bare_p50
        );
    }
}
