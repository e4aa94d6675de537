//! Failover cost: a request the primary answers, one the primary refuses with a 503 (Envoy
//! retries on the backup), and one whose primary refuses the connection, through the chain of
//! `envoy-configs/fallback.yaml` (ai-fallback in front and per attempt, ai-proxy per attempt),
//! against bare Envoy to the same mock.

use e2e::bench::{median_by_rps, wrk, Load, Plan};
use e2e::config::{fallback_route, provider_cluster, wasm_filter, ProviderEndpoint};
use e2e::mock::{Provider, Recorded, Reply};
use e2e::{Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::json;
use std::net::SocketAddr;

const KEY: &str = "sk-bench";

/// A primary that is down: every request gets a 503 in OpenAI's error shape.
struct Down;

impl Provider for Down {
    fn handle(&self, _request: &Recorded) -> Reply {
        e2e::mock::openai::error(503, "The engine is currently overloaded.", None, None)
    }
}

fn chain(primary: SocketAddr, backup: SocketAddr, options: &e2e::EnvoyOptions) -> Envoy {
    let proxy = json!({"providers": [
        {"id": "primary", "type": "openai", "apiTokens": [KEY]},
        {"id": "backup", "type": "openai", "apiTokens": [KEY]}
    ]});
    let fallback = json!({
        "chain": [{"provider": "primary", "cluster": "chain"}],
        "circuitBreaker": {"enabled": false}
    });
    let attempt_filters = vec![
        wasm_filter("ai-fallback", &fallback),
        wasm_filter("ai-proxy", &proxy),
    ];
    Envoy::start_with(
        &Gateway::new()
            .plugin("ai-fallback", fallback)
            .raw_route(fallback_route(1, "5s"))
            .raw_cluster(provider_cluster(
                "chain",
                &[
                    ProviderEndpoint::new(primary, "primary"),
                    ProviderEndpoint::new(backup, "backup"),
                ],
                attempt_filters,
            ))
            .to_json(),
        options,
    )
}

pub fn run(plan: &Plan) {
    let backup = MockServer::start(OpenAiMock::with_key(KEY));
    let down = MockServer::start(Down);
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = e2e::bench::envoy_options();
    let bare = Envoy::start_with(
        &Gateway::new().cluster("provider", backup.addr).to_json(),
        &options,
    );
    let healthy = chain(backup.addr, backup.addr, &options);
    let failing = chain(down.addr, backup.addr, &options);
    let unreachable = chain(refused, backup.addr, &options);
    let targets = [
        ("bare Envoy", &bare),
        ("chain, primary answers", &healthy),
        ("chain, primary 503 -> backup", &failing),
        ("chain, primary refused -> backup", &unreachable),
    ];
    // One connection: each request's own latency; sixteen: throughput.
    for connections in [1, 16] {
        let mut rounds: Vec<Vec<Load>> = vec![Vec::new(); targets.len()];
        for _ in 0..plan.rounds {
            for (i, (_, envoy)) in targets.iter().enumerate() {
                rounds[i].push(wrk(
                    &envoy.url("/v1/chat/completions"),
                    connections,
                    plan.seconds,
                ));
            }
        }
        let medians: Vec<Load> = rounds.iter().map(|r| median_by_rps(r)).collect();
        println!(
            "fallback, {connections} connection(s):\n  {:<34} {:>10} {:>9} {:>9} {:>9} {:>14}",
            "configuration", "req/s", "p50 ms", "p99 ms", "vs bare", "p50 vs answer"
        );
        for ((name, _), load) in targets.iter().zip(&medians) {
            println!(
                "  {:<34} {:>10.0} {:>9.3} {:>9.3} {:>8.2}x {:>+13.3}",
                name,
                load.rps,
                load.p50_ms,
                load.p99_ms,
                load.rps / medians[0].rps,
                load.p50_ms - medians[1].p50_ms,
            );
            if load.failures > 0 {
                println!("    ({} requests failed)", load.failures);
            }
        }
    }
}
