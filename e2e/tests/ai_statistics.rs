//! ai-statistics through real Envoy: tokens, latency and time to first token in Envoy's metrics
//! and the access log, streaming and not, with the official OpenAI SDK as one of the clients.

use e2e::client::{post_json, post_stream, post_stream_count};
use e2e::mock::openai::content_pieces;
use e2e::{python, Envoy, EnvoyOptions, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-statistics";

struct Shared {
    _mock: MockServer,
    envoy: Envoy,
}

/// One mock and one Envoy for the tests that only read metrics; each test uses its own
/// consumer name so their counters never mix.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mock = MockServer::start(OpenAiMock::with_key(KEY));
        let envoy = Envoy::start(
            &Gateway::new()
                .plugin("ai-statistics", json!({}))
                .cluster("provider", mock.addr)
                .to_json(),
        );
        Shared { _mock: mock, envoy }
    })
}

fn stat_name(consumer: &str, model: &str, metric: &str) -> String {
    format!("wasmcustom.route.default.upstream.provider.model.{model}.consumer.{consumer}.metric.{metric}")
}

fn chat(model: &str, stream: bool) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn auth() -> String {
    format!("Bearer {KEY}")
}

#[test]
fn non_streaming_tokens_reach_metrics_and_access_log() {
    let Shared { envoy, .. } = shared();
    let _report = envoy.report_on_failure();
    let auth = auth();
    let reply = post_json(
        &envoy.url("/v1/chat/completions"),
        &chat("gpt-4o-mini", false),
        &[("authorization", &auth), ("x-mse-consumer", "alice")],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let usage = reply.json()["usage"].clone();
    let input = usage["prompt_tokens"].as_u64().unwrap();
    let output = usage["completion_tokens"].as_u64().unwrap();
    assert!(input > 0 && output > 0);

    let total = stat_name("alice", "gpt-4o-mini", "total_token");
    envoy.wait_for_stats("alice's tokens", |s| {
        s.get(&total) == Some(&(input + output))
    });
    assert_eq!(
        envoy.stat(&stat_name("alice", "gpt-4o-mini", "input_token")),
        input
    );
    assert_eq!(
        envoy.stat(&stat_name("alice", "gpt-4o-mini", "output_token")),
        output
    );
    assert_eq!(
        envoy.stat(&stat_name("alice", "gpt-4o-mini", "llm_duration_count")),
        1
    );
    assert_eq!(
        envoy.stat("wasmcustom.route.default.upstream.provider.model.gpt-4o-mini.consumer.alice.status.200.metric.requests"),
        1
    );
    // Not a stream: no time-to-first-token sample.
    assert_eq!(
        envoy.stat(&stat_name(
            "alice",
            "gpt-4o-mini",
            "llm_stream_duration_count"
        )),
        0
    );

    // Labels come out of the stats tags in Prometheus form.
    let labels = [
        ("ai_consumer", "alice"),
        ("ai_model", "gpt-4o-mini"),
        ("ai_route", "default"),
        ("ai_cluster", "provider"),
    ];
    assert_eq!(
        envoy.prometheus_value("route_upstream_model_consumer_metric_input_token", &labels),
        Some(input as f64)
    );
    envoy.wait_prometheus_value(
        "route_upstream_model_consumer_metric_request_duration_ms_count",
        &labels,
        1.0,
    );

    let record = wait_log_record(envoy, "alice");
    assert_eq!(record["model"], "gpt-4o-mini");
    assert_eq!(record["status"], 200);
    assert_eq!(record["response_type"], "normal");
    assert_eq!(record["input_token"], input);
    assert_eq!(record["output_token"], output);
    assert_eq!(record["route"], "default");
    assert_eq!(record["upstream"], "provider");
}

#[test]
fn streaming_tokens_and_time_to_first_token() {
    let Shared { envoy, .. } = shared();
    let _report = envoy.report_on_failure();
    let auth = auth();
    let streamed = post_stream(
        &envoy.url("/v1/chat/completions"),
        &chat("gpt-4o", true),
        &[
            ("authorization", &auth),
            ("x-mse-consumer", "bob"),
            ("x-mock-first-delay-ms", "300"),
            ("x-mock-chunks", "8"),
        ],
    );
    assert_eq!(streamed.status, 200);
    // Every chunk passed unchanged: the text, the finish chunk, the usage chunk, [DONE].
    assert_eq!(streamed.text(), content_pieces(8, None).collect::<String>());
    let data = streamed.data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let usage = streamed.chunks().last().unwrap()["usage"].clone();
    let (input, output) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(output, 8);

    let total = stat_name("bob", "gpt-4o", "total_token");
    envoy.wait_for_stats("bob's tokens", |s| s.get(&total) == Some(&(input + output)));
    assert_eq!(
        envoy.stat(&stat_name("bob", "gpt-4o", "input_token")),
        input
    );
    assert_eq!(
        envoy.stat(&stat_name("bob", "gpt-4o", "llm_stream_duration_count")),
        1
    );
    let ttft = envoy.stat(&stat_name("bob", "gpt-4o", "llm_first_token_duration"));
    assert!(
        (300..2000).contains(&ttft),
        "time to first token {ttft} ms, the mock waited 300 ms"
    );

    let labels = [("ai_consumer", "bob"), ("ai_model", "gpt-4o")];
    envoy.wait_prometheus_value(
        "route_upstream_model_consumer_metric_time_to_first_token_ms_count",
        &labels,
        1.0,
    );
    let record = wait_log_record(envoy, "bob");
    assert_eq!(record["response_type"], "stream");
    assert_eq!(record["output_token"], 8);
    assert!(record["llm_first_token_duration"].as_u64().unwrap() >= 300);
    assert!(
        record["llm_service_duration"].as_u64().unwrap()
            >= record["llm_first_token_duration"].as_u64().unwrap()
    );
}

#[test]
fn upstream_errors_are_counted_by_status_without_tokens() {
    let Shared { envoy, .. } = shared();
    let _report = envoy.report_on_failure();
    let reply = post_json(
        &envoy.url("/v1/chat/completions"),
        &chat("gpt-4o", false),
        &[
            ("authorization", "Bearer sk-wrong"),
            ("x-mse-consumer", "carol"),
        ],
    );
    assert_eq!(reply.status, 401);
    envoy.wait_for_stats("carol's 401", |s| {
        s.get("wasmcustom.route.default.upstream.provider.model.gpt-4o.consumer.carol.status.401.metric.requests") == Some(&1)
    });
    assert_eq!(envoy.stat(&stat_name("carol", "gpt-4o", "input_token")), 0);
}

#[test]
fn official_openai_sdk_streaming_and_not() {
    let Shared { envoy, .. } = shared();
    let _report = envoy.report_on_failure();
    let out = python::run_script(
        "openai_chat.py",
        &[&envoy.url("/v1"), "gpt-4o-mini-sdk", KEY],
        Duration::from_secs(60),
    );
    let expected = content_pieces(5, None).collect::<String>();
    assert_eq!(out["plain"]["text"], expected.as_str());
    assert_eq!(out["plain"]["finish_reason"], "stop");
    assert_eq!(out["stream"]["text"], expected.as_str());
    let plain_total = out["plain"]["usage"]["total_tokens"].as_u64().unwrap();
    let stream_total = out["stream"]["usage"]["total_tokens"].as_u64().unwrap();

    // The SDK sends no consumer header: both requests count under "unknown".
    let total = stat_name("unknown", "gpt-4o-mini-sdk", "total_token");
    envoy.wait_for_stats("SDK tokens", |s| {
        s.get(&total) == Some(&(plain_total + stream_total))
    });
    assert_eq!(
        envoy.stat(&stat_name(
            "unknown",
            "gpt-4o-mini-sdk",
            "llm_duration_count"
        )),
        2
    );
    assert_eq!(
        envoy.stat(&stat_name(
            "unknown",
            "gpt-4o-mini-sdk",
            "llm_stream_duration_count"
        )),
        1
    );
}

/// The log record of the first request by `consumer`.
fn wait_log_record(envoy: &Envoy, consumer: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = envoy.access_log().into_iter().find_map(|line| {
            let record: Value = serde_json::from_str(line["ai_log"].as_str()?).ok()?;
            (record["consumer"] == consumer).then_some(record)
        });
        if let Some(record) = found {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no access log record for {consumer}: {:#?}",
            envoy.access_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ten_thousand_domain_rules_load_and_apply() {
    let mock = MockServer::start(OpenAiMock::default());
    let rules: Vec<Value> = (0..10_000)
        .map(|i| json!({"_match_domain_": [format!("tenant{i}.example.com")], "consumer_header": format!("x-tenant-{i}")}))
        .collect();
    let config = json!({"_rules_": rules, "consumer_header": "x-mse-consumer"});
    let started = Instant::now();
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin("ai-statistics", config)
            .cluster("provider", mock.addr)
            .to_json(),
    );
    println!(
        "Envoy ready with 10,000 ai-statistics rules in {:?}",
        started.elapsed()
    );

    let url = envoy.url("/v1/chat/completions");
    let body = chat("gpt-4o", false);
    let last = post_json(
        &url,
        &body,
        &[
            ("host", "tenant9999.example.com"),
            ("authorization", "Bearer k"),
            ("x-tenant-9999", "acme"),
        ],
    );
    assert_eq!(last.status, 200);
    let other = post_json(
        &url,
        &body,
        &[
            ("host", "elsewhere.example.com"),
            ("authorization", "Bearer k"),
            ("x-mse-consumer", "globex"),
        ],
    );
    assert_eq!(other.status, 200);
    envoy.wait_for_stats("per-rule consumers", |s| {
        s.get(&stat_name("acme", "gpt-4o", "llm_duration_count")) == Some(&1)
            && s.get(&stat_name("globex", "gpt-4o", "llm_duration_count")) == Some(&1)
    });
}

#[test]
fn a_higress_config_with_custom_attributes_loads_and_says_they_are_ignored() {
    let mock = MockServer::start(OpenAiMock::default());
    let config = json!({"attributes": [
        {"key": "question", "value_source": "request_body", "value": "messages.@reverse.0.content", "apply_to_log": true}
    ]});
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin("ai-statistics", config)
            .cluster("provider", mock.addr)
            .to_json(),
    );
    let _report = envoy.report_on_failure();
    let reply = post_json(
        &envoy.url("/v1/chat/completions"),
        &chat("gpt-4o", false),
        &[
            ("authorization", "Bearer k"),
            ("x-mse-consumer", "migrated"),
        ],
    );
    assert_eq!(reply.status, 200);
    envoy.wait_for_stats("the request metered", |s| {
        s.get(&stat_name("migrated", "gpt-4o", "llm_duration_count")) == Some(&1)
    });
    assert!(
        envoy.log().contains("config key `attributes` is ignored"),
        "{}",
        envoy.log_tail(20)
    );
}

#[test]
fn invalid_configuration_is_refused_with_its_path() {
    let mock = MockServer::start(OpenAiMock::default());
    let config = json!({"_rules_": [{"_match_route_": ["r"], "max_body_bytes": "lots"}]});
    let result = Envoy::try_start_with(
        &Gateway::new()
            .plugin("ai-statistics", config)
            .cluster("provider", mock.addr)
            .to_json(),
        &EnvoyOptions::default(),
    );
    let log = result
        .err()
        .expect("Envoy must refuse an invalid plugin config");
    assert!(
        log.contains("_rules_[0]"),
        "the error names the rule:\n{log}"
    );
    assert!(
        log.contains("max_body_bytes") || log.contains("invalid type"),
        "{log}"
    );
}

#[test]
fn twenty_megabyte_stream_keeps_envoy_memory_bounded() {
    let mock = MockServer::start(OpenAiMock::default());
    let envoy = Envoy::start_with(
        &Gateway::new()
            .plugin("ai-statistics", json!({}))
            .cluster("provider", mock.addr)
            .to_json(),
        &EnvoyOptions {
            concurrency: 1,
            ..Default::default()
        },
    );
    let url = envoy.url("/v1/chat/completions");
    let headers = |chunks: &'static str| {
        [
            ("authorization", "Bearer k"),
            ("x-mse-consumer", "big"),
            ("x-mock-chunks", chunks),
            ("x-mock-chunk-bytes", "1000"),
        ]
    };
    // Warm up so that the VM, connection pools and buffers exist before the baseline.
    let (warm, _) = post_stream_count(&url, &chat("gpt-4o", true), &headers("200"));
    assert_eq!(warm.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let baseline = envoy.rss_bytes();
    let chunks = 20_000;
    let ((streamed, bytes), growth) = envoy
        .rss_growth_during(|| post_stream_count(&url, &chat("gpt-4o", true), &headers("20000")));
    assert_eq!(streamed.status, 200);
    assert!(bytes > 20_000_000, "streamed {bytes} bytes");
    println!(
        "20 MB stream: {bytes} bytes, Envoy RSS baseline {} MiB, growth {} KiB",
        baseline >> 20,
        growth >> 10
    );
    assert!(growth < 16 << 20, "Envoy RSS grew by {} MiB", growth >> 20);

    // The plugin read the whole stream: the usage at its very end was counted.
    envoy.wait_for_stats("usage of the 20 MB stream", |s| {
        s.get(&stat_name("big", "gpt-4o", "output_token")) == Some(&(200 + chunks))
    });
}
