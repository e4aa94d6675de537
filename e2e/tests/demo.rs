//! `make run`: the shipped demo config boots with the mock provider, answers the README's
//! requests in both the OpenAI and the Anthropic API, and Prometheus then shows their tokens.

use e2e::client::{get_with, post_json, post_stream};
use e2e::demo::{self, DemoSettings};
use e2e::paths;
use serde_json::json;
use std::time::Duration;

#[test]
fn demo_gateway_answers_the_readme_requests() {
    let demo = demo::start(DemoSettings {
        port: 0,
        admin_port: 0,
        openai_key: None,
        anthropic_key: None,
        run_dir: paths::scratch_dir("demo"),
        admin: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let envoy = &demo.envoy;
    let _report = envoy.report_on_failure();
    let url = envoy.url("/v1/chat/completions");
    let question =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]});

    // No client key: the gateway authenticates to the provider itself.
    let reply = post_json(&url, &question, &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["object"], "chat.completion");
    let plain_usage = reply.json()["usage"]["total_tokens"].as_u64().unwrap();
    let sent = demo.mock.requests.last().unwrap();
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {}", demo::MOCK_KEY).as_str())
    );

    let mut streaming = question.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let streamed = post_stream(&url, &streaming, &[]);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));
    let stream_usage = streamed.chunks().last().unwrap()["usage"]["total_tokens"]
        .as_u64()
        .unwrap();

    // Anthropic's API on the same gateway, over the same (OpenAI-format) provider.
    let message = post_json(
        &envoy.url("/v1/messages"),
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello!"}]}),
        &[("anthropic-version", "2023-06-01")],
    );
    assert_eq!(message.status, 200, "{}", message.text());
    let message = message.json();
    assert_eq!(message["type"], "message");
    let anthropic_usage = message["usage"]["input_tokens"].as_u64().unwrap()
        + message["usage"]["output_tokens"].as_u64().unwrap();

    let labels = [
        ("ai_model", "gpt-4o-mini"),
        ("ai_route", "llm"),
        ("ai_cluster", "mock"),
    ];
    envoy.wait_prometheus_value(
        "route_upstream_model_consumer_metric_total_token",
        &labels,
        (plain_usage + stream_usage) as f64,
    );
    envoy.wait_prometheus_value(
        "route_upstream_model_consumer_metric_time_to_first_token_ms_count",
        &labels,
        1.0,
    );
    let claude = [
        ("ai_model", "claude-sonnet-4-5"),
        ("ai_route", "llm"),
        ("ai_cluster", "mock"),
    ];
    envoy.wait_prometheus_value(
        "route_upstream_model_consumer_metric_total_token",
        &claude,
        anthropic_usage as f64,
    );

    // Both official SDKs work against the demo as it starts (after the exact token counts above), streaming and tools included.
    let openai = e2e::python::run_script(
        "openai_chat.py",
        &[&envoy.url("/v1"), "gpt-4o-mini"],
        Duration::from_secs(120),
    );
    let text = openai["plain"]["text"].as_str().unwrap_or_default();
    assert!(!text.is_empty(), "{openai}");
    assert_eq!(openai["stream"]["text"], text, "{openai}");
    let anthropic = e2e::python::run_script(
        "anthropic_chat.py",
        &[&envoy.url(""), "claude-sonnet-4-5"],
        Duration::from_secs(120),
    );
    assert_eq!(anthropic["plain"]["stop_reason"], "end_turn", "{anthropic}");
    assert_eq!(
        anthropic["stream"]["text"], anthropic["plain"]["text"],
        "{anthropic}"
    );
    assert_eq!(
        anthropic["tools"]["tool_name"], "get_weather",
        "{anthropic}"
    );

    let models = get_with(&envoy.url("/v1/models"), &[]);
    assert_eq!(models.json()["data"][0]["id"], "gpt-4o-mini");
    // `make reload`: every plugin, the upstream provider edge included, swaps without a restart
    // and the gateway answers on.
    let swapped = demo::reload(&demo.settings, None).unwrap_or_else(|lines| panic!("{lines:#?}"));
    assert_eq!(swapped.len(), demo::FILTERS.len(), "{swapped:?}");
    let again = post_json(&url, &question, &[]);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(demo::reload(&demo.settings, Some("ai-statistics")).is_ok());
    assert!(demo::reload(&demo.settings, Some("no-such-plugin")).is_err());

    let logged = envoy.wait_access_log(3);
    assert!(
        logged.iter().take(3).all(|l| l["ai_log"]
            .as_str()
            .is_some_and(|s| s.contains("\"total_token\""))),
        "{logged:#?}"
    );
}
