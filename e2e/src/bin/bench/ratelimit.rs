//! The ai-token-ratelimit section: bare Envoy against Envoy with the plugin on its local store
//! (shared data) and on Redis through Webdis, every request reserving and settling tokens in
//! two windows and taking a concurrency slot.

use e2e::bench::{num_cpus, print_load_table, Plan};
use e2e::services::redis::RedisWebdis;
use e2e::{paths, Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};

/// A quota no benchmark exhausts, checked on every request: two token windows, a request rate
/// and a concurrency limit per client address.
fn rules(store: Option<Value>) -> Value {
    let huge = 1_000_000_000_000u64;
    let mut config = json!({
        "rule_name": "bench",
        "rule_items": [{"limit_by_per_ip": "from-remote-addr", "limit_keys": [{
            "key": "0.0.0.0/0", "token_per_minute": huge, "token_per_day": huge,
            "query_per_second": huge, "max_concurrent_requests": 100_000
        }]}]
    });
    if let Some(redis) = store {
        config["redis"] = redis;
    }
    config
}

pub fn run(plan: &Plan) {
    let mock = MockServer::start(OpenAiMock::with_key("sk-bench"));
    let configs = paths::repo_root().join("envoy-configs");
    let redis = RedisWebdis::start(
        &configs.join("ai-token-ratelimit-redis.conf"),
        &configs.join("ai-token-ratelimit-webdis.json"),
    );
    let options = e2e::bench::envoy_options();
    let envoy = |gateway: Gateway| {
        Envoy::start_with(
            &gateway
                .cluster("provider", mock.addr)
                .cluster("webdis", redis.webdis)
                .to_json(),
            &options,
        )
    };
    let plugin = "ai-token-ratelimit";
    let envoys = [
        ("bare Envoy", envoy(Gateway::new())),
        (
            "Envoy + ai-token-ratelimit, local store",
            envoy(Gateway::new().plugin(plugin, rules(None))),
        ),
        (
            "Envoy + ai-token-ratelimit, Redis store",
            envoy(Gateway::new().plugin(
                plugin,
                rules(Some(json!({"service_name": "webdis", "timeout": 1000}))),
            )),
        ),
    ];
    let targets: Vec<(&str, String)> = envoys
        .iter()
        .map(|(name, e)| (*name, e.url("/v1/chat/completions")))
        .collect();

    println!(
        "ai-token-ratelimit benchmark: {} interleaved rounds, median round reported",
        plan.rounds
    );
    println!(
        "machine: {} cores; Envoy --concurrency {}; wrk 1 thread; mock provider in-process; Redis and Webdis (2 threads) on the same machine",
        num_cpus(),
        options.concurrency
    );
    let size = std::fs::metadata(paths::plugin_wasm(plugin)).map_or(0, |m| m.len());
    println!("{plugin}.wasm: {size} bytes");
    println!();
    for connections in [16, 64] {
        print_load_table(plan, &targets, "bare Envoy", connections);
    }
    for (name, envoy) in &envoys[1..] {
        let failures = envoy.stat("wasmcustom.token_ratelimit_rule.bench.metric.store_failure");
        let limited = envoy.stat("wasmcustom.token_ratelimit_rule.bench.metric.limited");
        println!("  {name}: {failures} store failures, {limited} refusals");
    }
}
