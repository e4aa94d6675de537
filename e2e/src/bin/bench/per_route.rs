//! Per-route configuration at scale: the same plugin with one rule and with 10,000 domain rules;
//! a request's rule lookup should cost the same (hash probes by the request's keys).

use e2e::bench::{median_by_rps, wrk, Plan};
use e2e::{Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::time::Instant;

fn domain_rules(count: usize) -> Value {
    let rules: Vec<Value> = (0..count)
        .map(|i| json!({"_match_domain_": [format!("tenant{i}.example.com")], "consumer_header": format!("x-tenant-{i}")}))
        .collect();
    json!({"consumer_header": "x-mse-consumer", "_rules_": rules})
}

pub fn run(plan: &Plan) {
    let mock = MockServer::start(OpenAiMock::with_key("sk-bench"));
    let options = e2e::bench::envoy_options();
    let start = |rules: usize| {
        let started = Instant::now();
        let envoy = Envoy::start_with(
            &Gateway::new()
                .plugin("ai-statistics", domain_rules(rules))
                .cluster("provider", mock.addr)
                .to_json(),
            &options,
        );
        (envoy, started.elapsed())
    };
    let (one, one_ready) = start(1);
    let (many, many_ready) = start(10_000);
    println!("per-route rules: Envoy ready in {one_ready:?} with 1 rule, {many_ready:?} with 10,000 domain rules");
    let targets = [
        ("ai-statistics, 1 rule", &one),
        ("ai-statistics, 10,000 rules", &many),
    ];
    let mut rounds = vec![Vec::new(); targets.len()];
    for _ in 0..plan.rounds {
        for (i, (_, envoy)) in targets.iter().enumerate() {
            rounds[i].push(wrk(&envoy.url("/v1/chat/completions"), 16, plan.seconds));
        }
    }
    let medians: Vec<_> = rounds.iter().map(|r| median_by_rps(r)).collect();
    println!(
        "  {:<34} {:>10} {:>9} {:>9} {:>11}",
        "configuration (16 connections)", "req/s", "p50 ms", "p99 ms", "vs 1 rule"
    );
    for ((name, _), load) in targets.iter().zip(&medians) {
        println!(
            "  {:<34} {:>10.0} {:>9.2} {:>9.2} {:>10.2}x",
            name,
            load.rps,
            load.p50_ms,
            load.p99_ms,
            load.rps / medians[0].rps
        );
    }
}
