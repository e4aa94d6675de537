//! The ai-cache section: latency of a hit and of a miss through the gateway, the cost a miss
//! pays for the lookup and the store (against bare Envoy), the same for the semantic layer
//! with a real embedding model, and hit throughput under wrk.

use e2e::bench::{median_by_rps, percentile, wrk, Plan};
use e2e::client::{post_json, post_stream};
use e2e::services::embedder::Embedder;
use e2e::{paths, Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::json;
use std::time::Instant;

const AUTH: (&str, &str) = ("authorization", "Bearer sk-bench");

/// Questions the embedding model scores above 0.95 against "What is the capital of France?".
const PARAPHRASES: &[&str] = &[
    "Which city is the capital of France?",
    "What city is the capital of France?",
    "What's the capital of France?",
    "What is the capital city of France?",
];

/// Milliseconds of `n` sequential requests; `question(i)` is the i-th question asked.
fn latencies(
    url: &str,
    n: usize,
    question: impl Fn(usize) -> String,
    headers: &[(&str, &str)],
) -> Vec<f64> {
    let mut all = vec![AUTH];
    all.extend_from_slice(headers);
    (0..n)
        .map(|i| {
            let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question(i)}]});
            let start = Instant::now();
            let reply = post_json(url, &body, &all);
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(reply.status, 200, "{url}: {}", reply.text());
            ms
        })
        .collect()
}

pub fn run(plan: &Plan) {
    let mock = MockServer::start(OpenAiMock::with_key("sk-bench"));
    let embedder = Embedder::start();
    let options = e2e::bench::envoy_options();
    let envoy = |gateway: Gateway| {
        Envoy::start_with(
            &gateway
                .cluster("provider", mock.addr)
                .cluster("embedder", embedder.addr)
                .to_json(),
            &options,
        )
    };
    let bare = envoy(Gateway::new());
    let exact = envoy(Gateway::new().plugin("ai-cache", json!({})));
    let semantic = envoy(Gateway::new().plugin(
        "ai-cache",
        json!({"embedding": {"type": "openai", "serviceName": "embedder"}, "vector": {"type": "local"}}),
    ));
    let size = std::fs::metadata(paths::plugin_wasm("ai-cache")).map_or(0, |m| m.len());
    println!(
        "ai-cache: {size} bytes of wasm; Envoy --concurrency 1; sequential non-streaming requests"
    );
    println!("(miss: a new question each time, looked up then stored; exact hit: one stored question;\n semantic hit: paraphrases of one stored question, each embedded and searched)");

    let n = plan.streams;
    // The semantic hits below are paraphrases of this one stored question.
    latencies(
        &semantic.url("/v1/chat/completions"),
        1,
        |_| "What is the capital of France?".into(),
        &[],
    );
    let chat = |e: &Envoy| e.url("/v1/chat/completions");
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("bare Envoy", Vec::new()),
        ("ai-cache exact, miss", Vec::new()),
        ("ai-cache exact, hit", Vec::new()),
        ("ai-cache semantic, miss", Vec::new()),
        ("ai-cache semantic, hit", Vec::new()),
        ("embedding server alone", Vec::new()),
    ];
    for round in 0..plan.rounds {
        let unique = |tag: &'static str| {
            move |i: usize| format!("{tag} question {round}-{i}: what is {i} times {round}?")
        };
        rows[0]
            .1
            .extend(latencies(&chat(&bare), n, unique("bare"), &[]));
        rows[1]
            .1
            .extend(latencies(&chat(&exact), n, unique("exact"), &[]));
        rows[2].1.extend(latencies(
            &chat(&exact),
            n,
            |_| "What is the capital of France?".into(),
            &[],
        ));
        rows[3]
            .1
            .extend(latencies(&chat(&semantic), n, unique("semantic"), &[]));
        rows[4].1.extend(latencies(
            &chat(&semantic),
            n,
            |i| PARAPHRASES[i % PARAPHRASES.len()].into(),
            &[],
        ));
        let embed_url = format!("http://{}/v1/embeddings", embedder.addr);
        rows[5].1.extend((0..n).map(|i| {
            let start = Instant::now();
            let reply = post_json(
                &embed_url,
                &json!({"model": "e5", "input": unique("semantic")(i + n)}),
                &[],
            );
            assert_eq!(reply.status, 200);
            start.elapsed().as_secs_f64() * 1000.0
        }));
    }
    let bare_p50 = percentile(&mut rows[0].1.clone(), 50.0);
    println!(
        "  {:<30} {:>9} {:>9} {:>12}",
        "configuration", "p50 ms", "p99 ms", "p50 vs bare"
    );
    for (name, samples) in rows.iter_mut() {
        let p50 = percentile(samples, 50.0);
        println!(
            "  {:<30} {:>9.3} {:>9.3} {:>11.2}x",
            name,
            p50,
            percentile(samples, 99.0),
            p50 / bare_p50
        );
    }

    // A model takes time: against a provider streaming its first token after 300 ms, a hit
    // saves all of it.
    let stream = |i: usize| {
        let body = json!({"model": "gpt-4o-mini", "stream": true,
                          "messages": [{"role": "user", "content": format!("slow question {i}")}]});
        let s = post_stream(
            &chat(&exact),
            &body,
            &[AUTH, ("x-mock-first-delay-ms", "300")],
        );
        assert_eq!(s.status, 200);
        s.total.as_secs_f64() * 1000.0
    };
    let count = plan.rounds.max(3);
    let mut slow_miss: Vec<f64> = (0..count).map(stream).collect();
    let mut slow_hit: Vec<f64> = (0..count).map(stream).collect();
    let (miss_p50, hit_p50) = (
        percentile(&mut slow_miss, 50.0),
        percentile(&mut slow_hit, 50.0),
    );
    println!(
        "  streams from a provider whose first token takes 300 ms: miss p50 {miss_p50:.1} ms, hit p50 {hit_p50:.3} ms ({:.0}x faster)",
        miss_p50 / hit_p50
    );

    // Throughput: wrk repeats one question, so every request but the first is a hit.
    let mut bare_runs = Vec::new();
    let mut hit_runs = Vec::new();
    for _ in 0..plan.rounds {
        bare_runs.push(wrk(&chat(&bare), 16, plan.seconds));
        hit_runs.push(wrk(&chat(&exact), 16, plan.seconds));
    }
    let (b, h) = (median_by_rps(&bare_runs), median_by_rps(&hit_runs));
    println!(
        "  wrk, 16 connections: bare Envoy to the mock {:.0} req/s; ai-cache hits {:.0} req/s ({:.2}x), p50 {:.2} ms vs {:.2} ms",
        b.rps,
        h.rps,
        h.rps / b.rps,
        b.p50_ms,
        h.p50_ms
    );
}
