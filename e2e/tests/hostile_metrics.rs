//! Part of the hostile suite: what a hostile client tries against the metric labels. A label
//! value with dots (a model `gpt-4o-mini.consumer.victim-bob.metric.x`, a consumer header
//! `victim-bob.status.200`) must book nothing on the victim's series and everything on the
//! attacker's own, in Envoy's `/stats/prometheus` through the shipped stats tags, for every
//! label of ai-statistics and ai-cache (route, cluster, model, consumer); the log record keeps
//! the true names. Names from the config with dots (a route, a rate-limit rule) stay one label
//! value in ai-content-safety's and ai-token-ratelimit's series.

use e2e::client::post_json;
use e2e::{Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};

const AUTH: (&str, &str) = ("authorization", "Bearer sk-client");

/// The Prometheus name of an ai-statistics / ai-cache metric.
fn family(metric: &str) -> String {
    format!("route_upstream_model_consumer_metric_{metric}")
}

#[test]
fn dotted_label_values_book_on_the_senders_own_series() {
    let mock = MockServer::start(OpenAiMock::default());
    // Dotted route and cluster names, as operators write them.
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin("ai-statistics", json!({}))
            .plugin("ai-cache", json!({}))
            .route("chat.v1", "/", "provider.openai")
            .cluster("provider.openai", mock.addr)
            .to_json(),
    );
    let _report = envoy.report_on_failure();
    let cases = [
        // (consumer header, model, the labels they must land on)
        (
            "attacker",
            "gpt-4o-mini.consumer.victim-bob.metric.x",
            ("attacker", "gpt-4o-mini_consumer_victim-bob_metric_x"),
        ),
        (
            "mallory.status.200",
            "gpt-4.1",
            ("mallory_status_200", "gpt-4_1"),
        ),
        // Every character a label keeps shows unchanged.
        (
            "ops:team/a@b+c",
            "llama3:8b",
            ("ops:team/a@b+c", "llama3:8b"),
        ),
        (
            "eve",
            "x.model.victim-model.consumer.victim-bob",
            ("eve", "x_model_victim-model_consumer_victim-bob"),
        ),
    ];
    let mut expected = Vec::new();
    for (consumer, model, labels) in cases {
        let reply = post_json(
            &envoy.url("/v1/chat/completions"),
            &json!({"model": model, "messages": [{"role": "user", "content": format!("Hi from {consumer}")}]}),
            &[AUTH, ("x-mse-consumer", consumer)],
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        let tokens = reply.json()["usage"]["prompt_tokens"].as_f64().unwrap();
        expected.push((labels, tokens));
    }
    let total: f64 = expected.iter().map(|(_, tokens)| tokens).sum();
    envoy.wait_for_stats("every request's input tokens", |stats| {
        let booked: u64 = stats
            .iter()
            .filter(|(name, _)| name.ends_with("input_token"))
            .map(|(_, n)| n)
            .sum();
        booked as f64 >= total
    });
    let prometheus = envoy.prometheus();
    for victim in [
        "ai_consumer=\"victim-bob\"",
        "ai_model=\"victim-model\"",
        "ai_consumer=\"mallory\"",
    ] {
        let booked: Vec<&str> = prometheus.lines().filter(|l| l.contains(victim)).collect();
        assert!(booked.is_empty(), "booked on {victim}: {booked:#?}");
    }
    for ((consumer, model), tokens) in &expected {
        let labels = [
            ("ai_route", "chat_v1"),
            ("ai_cluster", "provider_openai"),
            ("ai_model", *model),
            ("ai_consumer", *consumer),
        ];
        envoy.wait_prometheus_value(&family("input_token"), &labels, *tokens);
        // ai-cache writes its counters every 0.5 s, on its own tick.
        envoy.wait_prometheus_value(&family("ai_cache_miss"), &labels, 1.0);
        let requests = envoy.prometheus_value(
            "route_upstream_model_consumer_status_metric_requests",
            &[
                ("ai_consumer", consumer),
                ("ai_model", model),
                ("ai_status", "200"),
            ],
        );
        assert_eq!(requests, Some(1.0), "{labels:?}");
    }
    // Every wasm sample has exactly the labels of its family: none lost to a dot.
    let stray: Vec<&str> = prometheus
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("metric_") && l.contains("ai_"))
        .filter(|l| !l.starts_with("route_upstream_model_consumer_"))
        .collect();
    assert!(stray.is_empty(), "samples outside the families: {stray:#?}");

    // The log record keeps the true names.
    let logged: Vec<Value> = envoy
        .wait_access_log(expected.len())
        .iter()
        .filter_map(|l| serde_json::from_str(l["ai_log"].as_str()?).ok())
        .collect();
    for (consumer, model, _) in cases {
        assert!(
            logged
                .iter()
                .any(|r| r["model"] == model && r["consumer"] == consumer),
            "{consumer} {model} in {logged:#?}"
        );
    }
}

/// Labels an operator names (a route, a rate-limit rule) may have dots too: each stays one
/// label value, in ai-content-safety's and ai-token-ratelimit's series alike.
#[test]
fn dotted_names_from_the_config_stay_one_label_value() {
    let mock = MockServer::start(OpenAiMock::default());
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin(
                "ai-token-ratelimit",
                json!({"rule_name": "plan.basic.metric.x", "global_threshold": {"token_per_day": 1_000_000}}),
            )
            .plugin(
                "ai-content-safety",
                json!({"local": {"denyWords": ["forbidden phrase"]}}),
            )
            .route("chat.v1", "/", "provider")
            .cluster("provider", mock.addr)
            .to_json(),
    );
    let _report = envoy.report_on_failure();
    for (content, status) in [("Hello", 200), ("a forbidden phrase", 200)] {
        let reply = post_json(
            &envoy.url("/v1/chat/completions"),
            &json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": content}]}),
            &[AUTH],
        );
        assert_eq!(reply.status, status, "{}", reply.text());
    }
    envoy.wait_prometheus_value(
        "token_ratelimit_rule_metric_admitted",
        &[("ai_ratelimit_rule", "plan_basic_metric_x")],
        2.0,
    );
    assert!(
        !envoy.prometheus().contains("ai_ratelimit_rule=\"plan\""),
        "the rule name was cut at its first dot"
    );
    envoy.wait_for_stats("content safety's checks", |stats| {
        stats
            .get("wasmcustom.content_safety.route.chat_v1.phase.request.metric.checks")
            .is_some_and(|n| *n == 2)
    });
}
