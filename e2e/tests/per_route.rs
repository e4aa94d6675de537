//! Per-route configuration through real Envoy: Higress `_rules_` by route, route prefix, domain
//! and service, Envoy's own per-route switch, two routes with different providers, and a
//! 10,000-domain config that loads and takes a new rule through ECDS, and the shipped per-route
//! example (`envoy-configs/per-route.yaml`): two teams with their own provider and quota.

use e2e::client::{post_json, post_stream};
use e2e::config::{ecds_resource, provider_cluster, wasm_filter, ProviderEndpoint};
use e2e::{paths, AnthropicMock, Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn metric(consumer: &str, route: &str, cluster: &str) -> String {
    format!("wasmcustom.route.{route}.upstream.{cluster}.model.gpt-4o.consumer.{consumer}.metric.llm_duration_count")
}

#[test]
fn rules_match_by_route_route_prefix_domain_and_service_first_match_wins() {
    let mock = MockServer::start(OpenAiMock::default());
    let statistics = json!({
        "consumer_header": "x-default",
        "_rules_": [
            {"_match_route_": ["exact-route"], "consumer_header": "x-by-route"},
            {"_match_route_prefix_": ["team-"], "consumer_header": "x-by-prefix"},
            {"_match_domain_": ["*.tenant.example.com"], "consumer_header": "x-by-domain"},
            {"_match_service_": ["cluster-b"], "consumer_header": "x-by-service"},
            {"_match_domain_": ["*"], "consumer_header": "x-never", "enable_metrics": true}
        ]
    });
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin("ai-statistics", statistics)
            .route("exact-route", "/exact/", "cluster-a")
            .route("team-blue", "/team/", "cluster-a")
            .route("other", "/other/", "cluster-b")
            .route("default", "/", "cluster-a")
            .cluster("cluster-a", mock.addr)
            .cluster("cluster-b", mock.addr)
            .to_json(),
    );
    let auth = ("authorization", "Bearer k");
    let headers = [
        auth,
        ("x-by-route", "r"),
        ("x-by-prefix", "p"),
        ("x-by-domain", "d"),
        ("x-by-service", "s"),
        ("x-never", "n"),
    ];
    for (path, host) in [
        ("/exact/v1/chat/completions", "a.tenant.example.com"),
        ("/team/v1/chat/completions", "x"),
        ("/v1/chat/completions", "b.tenant.example.com:8080"),
        ("/other/v1/chat/completions", "x"),
    ] {
        let mut all = headers.to_vec();
        all.push(("host", host));
        assert_eq!(post_json(&envoy.url(path), &chat(), &all).status, 200);
    }
    // The route rule comes first, so it wins over the domain rule on the exact route.
    envoy.wait_for_stats("one request per rule", |s| {
        [
            metric("r", "exact-route", "cluster-a"),
            metric("p", "team-blue", "cluster-a"),
            metric("d", "default", "cluster-a"),
            metric("s", "other", "cluster-b"),
        ]
        .iter()
        .all(|name| s.get(name) == Some(&1))
    });
    assert!(
        envoy.stats().keys().all(|k| !k.contains("consumer.n.")),
        "a later catch-all rule never wins"
    );
}

#[test]
fn envoy_per_route_config_switches_a_plugin_off() {
    let mock = MockServer::start(OpenAiMock::default());
    let proxy = json!({"provider": {"type": "openai", "apiTokens": ["sk-provider-key-0123"]}});
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin("ai-proxy", proxy)
            .raw_route(json!({"name": "raw", "match": {"prefix": "/raw/"}, "route": {"cluster": "provider", "prefix_rewrite": "/"},
                "typed_per_filter_config": {"ai-proxy": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}}}))
            .route("llm", "/", "provider")
            .cluster("provider", mock.addr)
            .to_json(),
    );
    let client = ("authorization", "Bearer sk-client-own-key-9");
    assert_eq!(
        post_json(&envoy.url("/v1/chat/completions"), &chat(), &[client]).status,
        200
    );
    assert_eq!(
        mock.requests.last().unwrap().header("authorization"),
        Some("Bearer sk-provider-key-0123")
    );
    assert_eq!(
        post_json(&envoy.url("/raw/v1/chat/completions"), &chat(), &[client]).status,
        200
    );
    assert_eq!(
        mock.requests.last().unwrap().header("authorization"),
        Some("Bearer sk-client-own-key-9"),
        "ai-proxy is off on /raw/"
    );
}

#[test]
fn two_routes_with_different_providers() {
    let openai = MockServer::start(OpenAiMock::with_key("sk-team-a-0123"));
    let anthropic = MockServer::start(AnthropicMock::with_key("sk-team-b-0123"));
    let config = json!({"providers": [
        {"id": "team-a", "type": "openai", "apiTokens": ["sk-team-a-0123"]},
        {"id": "team-b", "type": "claude", "apiTokens": ["sk-team-b-0123"], "modelMapping": {"*": "claude-sonnet-4-5"}}
    ]});
    let edge = wasm_filter("ai-proxy", &config);
    let envoy = Envoy::start(
        &Gateway::new()
            .route("team-a", "/team-a/", "team-a")
            .route("team-b", "/team-b/", "team-b")
            .raw_cluster(provider_cluster(
                "team-a",
                &[ProviderEndpoint::new(openai.addr, "team-a")],
                vec![edge.clone()],
            ))
            .raw_cluster(provider_cluster(
                "team-b",
                &[ProviderEndpoint::new(anthropic.addr, "team-b")],
                vec![edge],
            ))
            .to_json(),
    );
    for team in ["team-a", "team-b"] {
        let streamed = post_stream(
            &envoy.url(&format!("/{team}/v1/chat/completions")),
            &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        );
        assert_eq!(
            streamed.status,
            200,
            "{team}: {}",
            String::from_utf8_lossy(&streamed.body)
        );
        assert_eq!(
            streamed.data().last().map(String::as_str),
            Some("[DONE]"),
            "{team}"
        );
    }
    assert_eq!(openai.requests.count(), 1);
    assert_eq!(anthropic.requests.count(), 1);
    assert_eq!(
        anthropic.requests.last().unwrap().json()["model"],
        "claude-sonnet-4-5"
    );
}

#[test]
fn ten_thousand_domain_rules_load_and_a_new_rule_applies_through_ecds() {
    let mock = MockServer::start(OpenAiMock::default());
    let rules = |count: usize| -> Value {
        let rules: Vec<Value> = (0..count)
            .map(|i| json!({"_match_domain_": [format!("tenant{i}.example.com")], "consumer_header": format!("x-tenant-{i}")}))
            .collect();
        json!({"_rules_": rules})
    };
    let started = Instant::now();
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin_ecds("ai-statistics", "ai-statistics", rules(10_000))
            .cluster("provider", mock.addr)
            .to_json(),
    );
    println!(
        "Envoy ready with 10,000 domain rules in {:?}",
        started.elapsed()
    );
    let url = envoy.url("/v1/chat/completions");
    let ask = |host: &str, header: &str, consumer: &str| {
        post_json(
            &url,
            &chat(),
            &[
                ("authorization", "Bearer k"),
                ("host", host),
                (header, consumer),
            ],
        )
        .status
    };
    assert_eq!(ask("tenant9999.example.com", "x-tenant-9999", "last"), 200);

    // One more domain, swapped in through ECDS while 10,000 are loaded.
    let resource = ecds_resource(
        "ai-statistics",
        "ai-statistics",
        &paths::plugin_wasm("ai-statistics"),
        &rules(10_001),
    );
    let swap = Instant::now();
    envoy
        .swap("ai-statistics", &resource)
        .unwrap_or_else(|log| panic!("{log}"));
    let consumer_of_last_request = || {
        let lines = envoy.access_log();
        let record: Value = serde_json::from_str(lines.last()?["ai_log"].as_str()?).ok()?;
        record["consumer"].as_str().map(str::to_string)
    };
    loop {
        let before = envoy.access_log().len();
        assert_eq!(
            ask("tenant10000.example.com", "x-tenant-10000", "newest"),
            200
        );
        let logged = envoy.wait_access_log(before + 1);
        assert!(logged.len() > before, "no access log line for the request");
        if consumer_of_last_request().as_deref() == Some("newest") {
            break;
        }
        assert!(
            swap.elapsed() < Duration::from_secs(3),
            "the new domain rule took effect only after 3 s"
        );
    }
    println!(
        "a new domain rule took effect {:?} after the swap (10,000 rules loaded)",
        swap.elapsed()
    );
    envoy.wait_for_stats("the last tenant", |s| {
        s.get(&metric("last", "default", "provider")) == Some(&1)
    });
}

#[test]
fn the_shipped_per_route_config_gives_each_team_its_provider_and_quota() {
    const OPENAI_KEY: &str = "sk-openai-per-route-0123";
    const ANTHROPIC_KEY: &str = "sk-ant-per-route-0123";
    let openai = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let anthropic = MockServer::start(AnthropicMock::with_key(ANTHROPIC_KEY));
    let config = e2e::config::shipped_on_mocks(
        "per-route.yaml",
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.into()),
        ],
        &[
            ("openai", "api.openai.com", openai.addr),
            ("anthropic", "api.anthropic.com", anthropic.addr),
        ],
    );
    let envoy = Envoy::start_yaml(&config, "per-route");
    let _report = envoy.report_on_failure();
    let ask = |route: &str, max_tokens: u64| {
        let mut body = chat();
        body["max_tokens"] = json!(max_tokens);
        post_json(
            &envoy.url(&format!("/{route}/v1/chat/completions")),
            &body,
            &[("x-mse-consumer", "alice")],
        )
    };

    let a = ask("team-a", 100);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(openai.requests.last().unwrap().path, "/v1/chat/completions");
    assert_eq!(a.header("x-ratelimit-limit-tokens"), Some("100000"));

    let b = ask("team-b", 100);
    assert_eq!(b.status, 200, "{}", b.text());
    let sent = anthropic.requests.last().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.json()["model"], "claude-sonnet-4-5");
    assert_eq!(b.header("x-ratelimit-limit-tokens"), Some("20000"));

    // A request needing 30,000 tokens fits team-a's quota, never team-b's.
    assert_eq!(ask("team-a", 30_000).status, 200);
    let refused = ask("team-b", 30_000);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");

    // The internal route has the rate limit switched off, the rest as usual.
    let internal = ask("internal", 30_000);
    assert_eq!(internal.status, 200);
    assert_eq!(internal.header("x-ratelimit-limit-tokens"), None);

    // Metered per route, refusals included (ai-statistics runs before the rate limit).
    envoy.wait_prometheus_value(
        "route_upstream_model_consumer_metric_llm_duration_count",
        &[
            ("ai_route", "team-b"),
            ("ai_cluster", "anthropic"),
            ("ai_consumer", "alice"),
        ],
        2.0,
    );
}
