//! ai-proxy through real Envoy: OpenAI and Anthropic clients, OpenAI-style, Azure and Anthropic
//! providers, as a downstream filter and as an upstream filter picking the provider per attempt.

use e2e::client::{get_with, post_json, post_stream, post_stream_count, tool_arguments};
use e2e::config::{failover_route, provider_cluster, ProviderEndpoint};
use e2e::mock::openai::content_pieces;
use e2e::{Envoy, EnvoyOptions, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

const OPENAI_KEY: &str = "sk-provider-openai-0123456789";
const CLIENT_KEY: &str = "sk-client-should-never-reach-a-provider";

fn openai_provider(extra: Value) -> Value {
    let mut provider = json!({"type": "openai", "apiTokens": [OPENAI_KEY]});
    provider
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    provider
}

/// Envoy with ai-proxy (downstream) in front of one mock cluster.
fn gateway(config: Value, mock: SocketAddr) -> Envoy {
    Envoy::start(
        &Gateway::new()
            .plugin("ai-proxy", config)
            .cluster("provider", mock)
            .to_json(),
    )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is the capital of France?"}]})
}

fn streaming(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

fn anthropic_message(model: &str) -> Value {
    json!({"model": model, "max_tokens": 200, "system": "be brief",
           "messages": [{"role": "user", "content": "What is the capital of France?"}]})
}

const ANTHROPIC_HEADERS: [(&str, &str); 2] = [
    ("x-api-key", CLIENT_KEY),
    ("anthropic-version", "2023-06-01"),
];

#[test]
fn openai_client_to_openai_provider_maps_the_model_and_replaces_credentials() {
    let mock = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let envoy = gateway(
        json!({"provider": openai_provider(json!({"modelMapping": {"gpt-4*": "gpt-4o-mini", "*": ""}}))}),
        mock.addr,
    );
    let mut body = chat("gpt-4-turbo");
    body["max_tokens"] = json!(50);
    let auth = format!("Bearer {CLIENT_KEY}");
    let reply = post_json(
        &envoy.url("/v1/chat/completions"),
        &body,
        &[("authorization", &auth), ("accept-encoding", "gzip")],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["model"], "gpt-4o-mini");

    let sent = mock.requests.last().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(
        sent.header("accept-encoding"),
        None,
        "responses must stay readable"
    );
    let sent = sent.json();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(
        sent["max_completion_tokens"], 50,
        "OpenAI's reasoning models refuse max_tokens"
    );
    assert!(sent.get("max_tokens").is_none());

    // `*` maps to the empty string: the client's model is kept.
    let reply = post_json(&envoy.url("/v1/chat/completions"), &chat("o3-mini"), &[]);
    assert_eq!(reply.json()["model"], "o3-mini");
    assert!(
        !envoy.log().contains(OPENAI_KEY),
        "provider keys never reach the logs"
    );
}

#[test]
fn streams_always_carry_usage_upstream_and_the_client_gets_what_it_asked_for() {
    let mock = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let envoy = gateway(json!({"provider": openai_provider(json!({}))}), mock.addr);
    let url = envoy.url("/v1/chat/completions");

    let plain = post_stream(&url, &streaming(chat("gpt-4o")), &[("x-mock-chunks", "7")]);
    assert_eq!(plain.status, 200);
    assert_eq!(
        mock.requests.last().unwrap().json()["stream_options"]["include_usage"],
        true
    );
    assert_eq!(plain.text(), content_pieces(7, None).collect::<String>());
    assert!(
        plain
            .chunks()
            .iter()
            .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "no usage-only chunk"
    );
    assert_eq!(plain.data().last().map(String::as_str), Some("[DONE]"));

    let mut asked = streaming(chat("gpt-4o"));
    asked["stream_options"] = json!({"include_usage": true});
    let with_usage = post_stream(&url, &asked, &[("x-mock-chunks", "7")]);
    let last = with_usage.chunks().pop().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 7);
}

#[test]
fn metering_between_the_two_edges_sees_usage_the_client_did_not_ask_for() {
    // The Higress-style chain split in two: the client edge first, ai-statistics in the middle,
    // the provider edge last. Usage is forced by the first instance and removed by it on the
    // way back, after ai-statistics has counted it.
    let mock = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin_instance("ai-proxy", "ai-proxy-client", json!({}))
            .plugin("ai-statistics", json!({}))
            .plugin_instance(
                "ai-proxy",
                "ai-proxy-provider",
                json!({"provider": openai_provider(json!({}))}),
            )
            .cluster("provider", mock.addr)
            .to_json(),
    );
    let streamed = post_stream(
        &envoy.url("/v1/chat/completions"),
        &streaming(chat("gpt-4o")),
        &[("x-mse-consumer", "metered")],
    );
    assert_eq!(streamed.status, 200);
    assert!(
        streamed
            .chunks()
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "client did not ask for usage"
    );
    let name = "wasmcustom.route.default.upstream.provider.model.gpt-4o.consumer.metered.metric.output_token";
    envoy.wait_for_stats("tokens of a stream without include_usage", |s| {
        s.get(name) == Some(&5)
    });
}

#[test]
fn anthropic_client_over_an_openai_provider() {
    let mock = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let envoy = gateway(
        json!({"provider": openai_provider(json!({"modelMapping": {"claude-*": "gpt-4o-mini"}}))}),
        mock.addr,
    );
    let url = envoy.url("/v1/messages");

    let reply = post_json(
        &url,
        &anthropic_message("claude-sonnet-4-5"),
        &ANTHROPIC_HEADERS,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let message = reply.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(
        message["content"][0]["text"],
        content_pieces(5, None).collect::<String>()
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert!(message["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(message["usage"]["output_tokens"], 5);
    let sent = mock.requests.last().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("x-api-key"),
        None,
        "the client's key is not forwarded"
    );
    let sent = sent.json();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(sent["max_completion_tokens"], 200);

    let streamed = post_stream(
        &url,
        &streaming(anthropic_message("claude-sonnet-4-5")),
        &[
            ANTHROPIC_HEADERS[0],
            ANTHROPIC_HEADERS[1],
            ("x-mock-chunks", "4"),
        ],
    );
    assert_eq!(streamed.status, 200);
    let events = streamed.events();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(
        &kinds[kinds.len() - 2..],
        &["message_delta", "message_stop"]
    );
    let text: String = events
        .iter()
        .filter_map(|(_, e)| {
            e.pointer("/delta/text")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, content_pieces(4, None).collect::<String>());
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 4);
}

#[test]
fn errors_keep_the_provider_status_in_each_client_shape() {
    let mock = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let envoy = gateway(json!({"provider": openai_provider(json!({}))}), mock.addr);
    let openai = post_json(
        &envoy.url("/v1/chat/completions"),
        &chat("does-not-exist-model"),
        &[],
    );
    assert_eq!(openai.status, 404);
    assert_eq!(openai.json()["error"]["code"], "model_not_found");
    assert_eq!(openai.json()["error"]["type"], "invalid_request_error");

    let anthropic = post_json(
        &envoy.url("/v1/messages"),
        &anthropic_message("does-not-exist-model"),
        &ANTHROPIC_HEADERS,
    );
    assert_eq!(anthropic.status, 404);
    assert_eq!(anthropic.json()["type"], "error");
    assert_eq!(anthropic.json()["error"]["type"], "not_found_error");
    assert!(anthropic.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does-not-exist-model"));

    let limited = post_json(
        &envoy.url("/v1/messages"),
        &anthropic_message("claude"),
        &[
            ANTHROPIC_HEADERS[0],
            ANTHROPIC_HEADERS[1],
            ("x-mock-status", "429"),
        ],
    );
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
}

#[test]
fn malformed_requests_are_refused_by_the_gateway_naming_the_field() {
    let mock = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let envoy = gateway(json!({"provider": openai_provider(json!({}))}), mock.addr);
    let bad = post_json(
        &envoy.url("/v1/chat/completions"),
        &json!({"model": "m", "messages": [{"role": "user", "content": 42}]}),
        &[],
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "messages[0].content");
    let not_json = e2e::client::post(
        &envoy.url("/v1/chat/completions"),
        "{\"model\":",
        &[("content-type", "application/json")],
    );
    assert_eq!(not_json.status, 400);
    assert!(not_json.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("request body is not valid JSON"));
    let anthropic = post_json(
        &envoy.url("/v1/messages"),
        &json!({"model": "m", "messages": []}),
        &ANTHROPIC_HEADERS,
    );
    assert_eq!(anthropic.status, 400);
    assert_eq!(
        anthropic.json(),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: field required"}})
    );
    assert_eq!(
        mock.requests.count(),
        0,
        "nothing malformed reached the provider"
    );
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}

#[test]
fn models_are_listed_by_the_gateway() {
    let mock = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let envoy = gateway(
        json!({"models": ["team-default"], "provider": openai_provider(json!({"models": ["gpt-4o"], "modelMapping": {"fast": "gpt-4o-mini", "gpt-*": ""}}))}),
        mock.addr,
    );
    let reply = get_with(&envoy.url("/v1/models"), &[]);
    assert_eq!(reply.status, 200);
    let ids: Vec<String> = reply.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["team-default", "gpt-4o", "fast"]);
    assert_eq!(mock.requests.count(), 0);
}

#[test]
fn upstream_filter_takes_provider_and_model_from_the_endpoint_for_each_attempt() {
    let backup = MockServer::start(OpenAiMock::with_key("sk-backup-key-0123"));
    // Priority 0 refuses connections; Envoy retries on priority 1, whose ai-proxy attempt uses
    // the backup's key and the model its endpoint metadata names.
    let closed = free_closed_port();
    let config = json!({"providers": [
        {"id": "primary", "type": "openai", "apiTokens": ["sk-primary-key-0123"]},
        {"id": "backup", "type": "deepseek", "apiTokens": ["sk-backup-key-0123"]}
    ]});
    let cluster = provider_cluster(
        "llm",
        &[
            ProviderEndpoint::new(closed, "primary"),
            ProviderEndpoint::new(backup.addr, "backup").model("deepseek-chat"),
        ],
        vec![e2e::config::wasm_filter("ai-proxy", &config)],
    );
    let envoy = Envoy::start(
        &Gateway::new()
            .raw_route(failover_route("chat", "/", "llm", &[429]))
            .raw_cluster(cluster)
            .to_json(),
    );
    let auth = format!("Bearer {CLIENT_KEY}");
    let reply = post_json(
        &envoy.url("/v1/chat/completions"),
        &chat("gpt-4o"),
        &[("authorization", &auth)],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = backup.requests.last().unwrap();
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-backup-key-0123")
    );
    assert_eq!(sent.header("host"), Some("api.deepseek.com"));
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.json()["model"], "deepseek-chat");
    assert!(sent.json().get("max_completion_tokens").is_none());

    let streamed = post_stream(
        &envoy.url("/v1/chat/completions"),
        &streaming(chat("gpt-4o")),
        &[],
    );
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.text(), content_pieces(5, None).collect::<String>());
}

#[test]
fn a_refused_key_is_set_aside_and_the_request_succeeds_with_the_next() {
    let mock = MockServer::start(OpenAiMock::with_key("sk-good-key-0123456"));
    let config = json!({"provider": {"id": "openai", "type": "openai", "apiTokens": ["sk-bad-key-0123456", "sk-good-key-0123456"]}});
    let cluster = provider_cluster(
        "llm",
        &[ProviderEndpoint::new(mock.addr, "openai")],
        vec![e2e::config::wasm_filter("ai-proxy", &config)],
    );
    let envoy = Envoy::start_with(
        &Gateway::new()
            .raw_route(failover_route("chat", "/", "llm", &[401, 403, 429]))
            .raw_cluster(cluster)
            .to_json(),
        &EnvoyOptions {
            concurrency: 1,
            ..Default::default()
        },
    );
    let url = envoy.url("/v1/chat/completions");
    for i in 0..4 {
        let reply = post_json(&url, &chat("gpt-4o"), &[]);
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    let keys: Vec<String> = mock
        .requests
        .all()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("").to_string())
        .collect();
    assert_eq!(
        keys[0], "Bearer sk-bad-key-0123456",
        "round-robin starts with the first key"
    );
    assert!(
        keys[1..].iter().all(|k| k == "Bearer sk-good-key-0123456"),
        "the refused key rests: {keys:?}"
    );
    assert_eq!(keys.len(), 5);
}

#[test]
fn concurrent_translated_streams_never_mix() {
    let mock = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let envoy = gateway(json!({"provider": openai_provider(json!({}))}), mock.addr);
    let url = envoy.url("/v1/messages");
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let chunks = (3 + i).to_string();
                let streamed = post_stream(
                    &url,
                    &streaming(anthropic_message("claude")),
                    &[
                        ANTHROPIC_HEADERS[0],
                        ANTHROPIC_HEADERS[1],
                        ("x-mock-chunks", &chunks),
                        ("x-mock-delay-ms", "5"),
                    ],
                );
                let text: String = streamed
                    .events()
                    .iter()
                    .filter_map(|(_, e)| {
                        e.pointer("/delta/text")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect();
                (i, text)
            })
        })
        .collect();
    for handle in handles {
        let (i, text) = handle.join().unwrap();
        assert_eq!(
            text,
            content_pieces(3 + i, None).collect::<String>(),
            "stream {i}"
        );
    }
}

#[test]
fn a_twenty_megabyte_translated_stream_keeps_envoy_memory_bounded() {
    let mock = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
    let envoy = Envoy::start_with(
        &Gateway::new()
            .plugin("ai-proxy", json!({"provider": openai_provider(json!({}))}))
            .cluster("provider", mock.addr)
            .to_json(),
        &EnvoyOptions {
            concurrency: 1,
            ..Default::default()
        },
    );
    let url = envoy.url("/v1/messages");
    let headers = |chunks: &'static str| {
        [
            ANTHROPIC_HEADERS[0],
            ANTHROPIC_HEADERS[1],
            ("x-mock-chunks", chunks),
            ("x-mock-chunk-bytes", "1000"),
        ]
    };
    let (warm, _) = post_stream_count(
        &url,
        &streaming(anthropic_message("claude")),
        &headers("200"),
    );
    assert_eq!(warm.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let ((streamed, bytes), growth) = envoy.rss_growth_during(|| {
        post_stream_count(
            &url,
            &streaming(anthropic_message("claude")),
            &headers("20000"),
        )
    });
    assert_eq!(streamed.status, 200);
    assert!(bytes > 20_000_000, "streamed {bytes} bytes");
    println!(
        "20 MB translated stream: {bytes} bytes to the client, Envoy RSS growth {} KiB",
        growth >> 10
    );
    assert!(growth < 16 << 20, "Envoy RSS grew by {} MiB", growth >> 20);
}

/// A loopback port nothing listens on.
fn free_closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

const ANTHROPIC_KEY: &str = "sk-ant-provider-0123456789";

fn claude_provider() -> Value {
    json!({"provider": {"type": "claude", "apiTokens": [ANTHROPIC_KEY], "modelMapping": {"*": "claude-sonnet-4-5"}}})
}

#[test]
fn openai_client_over_an_anthropic_provider() {
    let mock = MockServer::start(e2e::AnthropicMock::with_key(ANTHROPIC_KEY));
    let envoy = gateway(claude_provider(), mock.addr);
    let url = envoy.url("/v1/chat/completions");
    let auth = format!("Bearer {CLIENT_KEY}");

    let reply = post_json(&url, &chat("gpt-4o"), &[("authorization", &auth)]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let completion = reply.json();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        content_pieces(5, None).collect::<String>()
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_eq!(completion["usage"]["completion_tokens"], 5);
    let sent = mock.requests.last().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        sent.header("authorization"),
        None,
        "the client's key is not forwarded"
    );
    let sent = sent.json();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["system"], "be brief");
    assert_eq!(sent["max_tokens"], 4096);

    let mut asked = streaming(chat("gpt-4o"));
    asked["stream_options"] = json!({"include_usage": true});
    let streamed = post_stream(&url, &asked, &[("x-mock-chunks", "6")]);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.text(), content_pieces(6, None).collect::<String>());
    let chunks = streamed.chunks();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 6);
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));

    // Tools: the call and its streamed arguments.
    let mut with_tools = chat("gpt-4o");
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let reply = post_json(&url, &with_tools, &[]);
    let call = &reply.json()["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(reply.json()["choices"][0]["finish_reason"], "tool_calls");
    let streamed = post_stream(&url, &streaming(with_tools), &[]);
    let arguments = tool_arguments(&streamed.chunks());
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris"})
    );

    let missing = post_json(&url, &chat("does-not-exist-claude"), &[]);
    assert_eq!(
        missing.status, 200,
        "the mapping sends every model to claude-sonnet-4-5"
    );
    let unmapped = gateway(
        json!({"provider": {"type": "claude", "apiTokens": [ANTHROPIC_KEY]}}),
        mock.addr,
    );
    let missing = post_json(
        &unmapped.url("/v1/chat/completions"),
        &chat("does-not-exist-claude"),
        &[],
    );
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["type"], "not_found_error");
    assert!(missing.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does-not-exist-claude"));
}

#[test]
fn anthropic_client_over_an_anthropic_provider_is_passed_through() {
    let mock = MockServer::start(e2e::AnthropicMock::with_key(ANTHROPIC_KEY));
    let envoy = gateway(claude_provider(), mock.addr);
    let mut message = anthropic_message("claude-opus");
    // Fields only Anthropic knows survive untouched.
    message["messages"][0]["content"] = json!([{"type": "text", "text": "What is the capital of France?", "cache_control": {"type": "ephemeral"}}]);
    let reply = post_json(&envoy.url("/v1/messages"), &message, &ANTHROPIC_HEADERS);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["type"], "message");
    let sent = mock.requests.last().unwrap();
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
    let mut expected = message.clone();
    expected["model"] = json!("claude-sonnet-4-5");
    assert_eq!(sent.json(), expected);

    let streamed = post_stream(
        &envoy.url("/v1/messages"),
        &streaming(anthropic_message("claude-opus")),
        &ANTHROPIC_HEADERS,
    );
    let kinds: Vec<String> = streamed.events().into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("message_start"));
    assert_eq!(kinds.last().map(String::as_str), Some("message_stop"));
}

#[test]
fn azure_deployments_and_filter_chunks() {
    let mock = MockServer::start(e2e::AzureMock::with_key("azure-key-0123456789"));
    let envoy = gateway(
        json!({"provider": {"type": "azure", "apiTokens": ["azure-key-0123456789"],
            "azureServiceUrl": "https://myres.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"}}),
        mock.addr,
    );
    let url = envoy.url("/v1/chat/completions");
    let reply = post_json(&url, &chat("gpt-4o"), &[("authorization", "Bearer client")]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.requests.last().unwrap();
    assert_eq!(
        sent.path,
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(sent.header("api-key"), Some("azure-key-0123456789"));
    assert_eq!(sent.header("authorization"), None);

    let streamed = post_stream(&url, &streaming(chat("gpt-4o")), &[]);
    assert_eq!(streamed.status, 200);
    let chunks = streamed.chunks();
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "no filter-only or usage-only chunks: {chunks:#?}"
    );
    assert!(chunks
        .iter()
        .all(|c| c["choices"][0].get("delta").is_some()));
    assert_eq!(streamed.text(), content_pieces(5, None).collect::<String>());
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));

    // Without a deployment in the service URL, the (mapped) model names it.
    let by_model = gateway(
        json!({"provider": {"type": "azure", "apiTokens": ["azure-key-0123456789"], "azureServiceUrl": "https://myres.openai.azure.com/?api-version=2024-10-21"}}),
        mock.addr,
    );
    let embeddings = post_json(
        &by_model.url("/v1/embeddings"),
        &json!({"model": "text-embedding-3-small", "input": "hello"}),
        &[],
    );
    assert_eq!(embeddings.status, 200, "{}", embeddings.text());
    assert_eq!(
        mock.requests.last().unwrap().path,
        "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
    );
    let unknown = post_json(
        &by_model.url("/v1/chat/completions"),
        &chat("no-such-deployment"),
        &[],
    );
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "DeploymentNotFound");
}

/// (type, extra provider keys, host, chat path, auth header sent, stream_options forwarded)
type Expected = (
    &'static str,
    Value,
    &'static str,
    &'static str,
    Option<&'static str>,
    bool,
);

#[test]
fn every_openai_compatible_provider_is_addressed_as_documented() {
    let table: &[Expected] = &[
        (
            "openai",
            json!({}),
            "api.openai.com",
            "/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "deepseek",
            json!({}),
            "api.deepseek.com",
            "/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "qwen",
            json!({}),
            "dashscope.aliyuncs.com",
            "/compatible-mode/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "moonshot",
            json!({}),
            "api.moonshot.cn",
            "/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "zhipuai",
            json!({}),
            "open.bigmodel.cn",
            "/api/paas/v4/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "baichuan",
            json!({}),
            "api.baichuan-ai.com",
            "/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "yi",
            json!({}),
            "api.lingyiwanwu.com",
            "/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "minimax",
            json!({}),
            "api.minimax.chat",
            "/v1/text/chatcompletion_v2",
            Some("authorization"),
            false,
        ),
        (
            "doubao",
            json!({}),
            "ark.cn-beijing.volces.com",
            "/api/v3/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "hunyuan",
            json!({}),
            "api.hunyuan.cloud.tencent.com",
            "/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "stepfun",
            json!({}),
            "api.stepfun.com",
            "/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "spark",
            json!({}),
            "spark-api-open.xf-yun.com",
            "/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "siliconflow",
            json!({}),
            "api.siliconflow.cn",
            "/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "mistral",
            json!({}),
            "api.mistral.ai",
            "/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "groq",
            json!({}),
            "api.groq.com",
            "/openai/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "grok",
            json!({}),
            "api.x.ai",
            "/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "together-ai",
            json!({}),
            "api.together.xyz",
            "/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "fireworks",
            json!({}),
            "api.fireworks.ai",
            "/inference/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "openrouter",
            json!({}),
            "openrouter.ai",
            "/api/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "perplexity",
            json!({}),
            "api.perplexity.ai",
            "/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "github",
            json!({}),
            "models.github.ai",
            "/inference/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "cloudflare",
            json!({"cloudflareAccountId": "acc123"}),
            "api.cloudflare.com",
            "/client/v4/accounts/acc123/ai/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "vllm",
            json!({"providerDomain": "vllm.internal:8000"}),
            "vllm.internal:8000",
            "/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "ollama",
            json!({}),
            "localhost:11434",
            "/v1/chat/completions",
            None,
            true,
        ),
        (
            "lmstudio",
            json!({}),
            "localhost:1234",
            "/v1/chat/completions",
            None,
            true,
        ),
        (
            "ai360",
            json!({}),
            "api.360.cn",
            "/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "generic",
            json!({"openaiCustomUrl": "http://llm.internal/api/v2/chat/completions"}),
            "llm.internal",
            "/api/v2/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "cerebras",
            json!({}),
            "api.cerebras.ai",
            "/v1/chat/completions",
            Some("authorization"),
            false,
        ),
        (
            "nvidia",
            json!({}),
            "integrate.api.nvidia.com",
            "/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "sambanova",
            json!({}),
            "api.sambanova.ai",
            "/v1/chat/completions",
            Some("authorization"),
            true,
        ),
        (
            "deepinfra",
            json!({}),
            "api.deepinfra.com",
            "/v1/openai/chat/completions",
            Some("authorization"),
            true,
        ),
    ];
    // As an upstream filter ai-proxy sets the provider's host too. One cluster per provider
    // type, all on the mock; their filters share one VM (same plugin, same config).
    let mock = MockServer::start(OpenAiMock::default());
    let providers: Vec<Value> = table
        .iter()
        .map(|(kind, extra, ..)| {
            let mut provider =
                json!({"id": kind, "type": kind, "apiTokens": [format!("key-for-{kind}")]});
            provider
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            provider
        })
        .collect();
    let filter = e2e::config::wasm_filter("ai-proxy", &json!({"providers": providers}));
    let mut gateway = Gateway::new();
    for (kind, ..) in table {
        let cluster = format!("c-{kind}");
        gateway = gateway
            .raw_cluster(provider_cluster(&cluster, &[ProviderEndpoint::new(mock.addr, kind)], vec![filter.clone()]))
            .raw_route(json!({"name": kind, "match": {"prefix": "/", "headers": [{"name": "x-provider", "string_match": {"exact": kind}}]},
                              "route": {"cluster": cluster, "timeout": "30s"}}));
    }
    let envoy = Envoy::start(&gateway.to_json());
    for (kind, _, host, path, auth, stream_options) in table {
        let reply = post_stream(
            &envoy.url("/v1/chat/completions"),
            &streaming(chat("m")),
            &[("authorization", "Bearer client"), ("x-provider", kind)],
        );
        let sent = mock.requests.last().unwrap_or_else(|| {
            panic!(
                "{kind}: nothing reached the provider: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            )
        });
        assert_eq!(sent.path, *path, "{kind}");
        assert_eq!(sent.header("host"), Some(*host), "{kind}");
        match auth {
            Some(_) => assert_eq!(
                sent.header("authorization"),
                Some(format!("Bearer key-for-{kind}").as_str()),
                "{kind}"
            ),
            None => assert_eq!(
                sent.header("authorization"),
                None,
                "{kind}: a local server gets no key"
            ),
        }
        assert_eq!(
            sent.json().get("stream_options").is_some(),
            *stream_options,
            "{kind}"
        );
        mock.requests.clear();
    }
    // Embeddings go to each provider's embeddings path.
    let reply = post_json(
        &envoy.url("/v1/embeddings"),
        &json!({"model": "text-embedding-v3", "input": "hi"}),
        &[("x-provider", "qwen")],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        mock.requests.last().unwrap().path,
        "/compatible-mode/v1/embeddings"
    );
    let refused = post_json(
        &envoy.url("/v1/embeddings"),
        &json!({"model": "x", "input": "hi"}),
        &[("x-provider", "deepseek")],
    );
    assert_eq!(refused.status, 400);
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no embeddings API"));
}

/// The topology DESIGN recommends: ai-proxy as the client edge first in the chain, and as the
/// provider edge on each route's cluster (upstream filter). One route per provider format
/// (OpenAI, Anthropic, Gemini, Bedrock), so each official SDK runs against all of them.
struct SdkGateway {
    envoy: Envoy,
    _mocks: Vec<MockServer>,
}

/// The provider formats each official SDK is driven over.
const SDK_BACKENDS: [&str; 4] = [
    "openai-backed",
    "anthropic-backed",
    "gemini-backed",
    "bedrock-backed",
];

fn sdk_gateway() -> &'static SdkGateway {
    static GATEWAY: std::sync::OnceLock<SdkGateway> = std::sync::OnceLock::new();
    GATEWAY.get_or_init(|| {
        let openai = MockServer::start(OpenAiMock::with_key(OPENAI_KEY));
        let anthropic = MockServer::start(e2e::AnthropicMock::with_key(ANTHROPIC_KEY));
        let gemini = MockServer::start(e2e::mock::gemini::GeminiMock::with_key(GEMINI_KEY));
        let bedrock = MockServer::start(e2e::mock::bedrock::BedrockMock::new(AWS_ACCESS_KEY, AWS_SECRET, "us-east-1"));
        let providers = json!({"providers": [
            {"id": "openai", "type": "openai", "apiTokens": [OPENAI_KEY], "modelMapping": {"*": "gpt-4o-mini"}},
            {"id": "claude", "type": "claude", "apiTokens": [ANTHROPIC_KEY], "modelMapping": {"*": "claude-sonnet-4-5"}},
            {"id": "gemini", "type": "gemini", "apiTokens": [GEMINI_KEY], "modelMapping": {"*": "gemini-2.5-flash"}},
            bedrock_provider("bedrock", AWS_SECRET)
        ]});
        let edge = e2e::config::wasm_filter("ai-proxy", &providers);
        let mut gateway = Gateway::new().plugin_instance("ai-proxy", "ai-proxy-client", json!({}));
        for (backend, mock, provider) in [
            ("openai-backed", &openai, "openai"),
            ("anthropic-backed", &anthropic, "claude"),
            ("gemini-backed", &gemini, "gemini"),
            ("bedrock-backed", &bedrock, "bedrock"),
        ] {
            gateway = gateway
                .route(backend, &format!("/{backend}/"), backend)
                .raw_cluster(provider_cluster(backend, &[ProviderEndpoint::new(mock.addr, provider)], vec![edge.clone()]));
        }
        let envoy = Envoy::start(&gateway.to_json());
        SdkGateway { envoy, _mocks: vec![openai, anthropic, gemini, bedrock] }
    })
}

#[test]
fn official_openai_sdk_streaming_and_tools_over_every_provider_format() {
    let gateway = sdk_gateway();
    let _report = gateway.envoy.report_on_failure();
    for backend in SDK_BACKENDS {
        let base = gateway.envoy.url(&format!("/{backend}/v1"));
        let chat = e2e::python::run_script(
            "openai_chat.py",
            &[&base, "gpt-4o", CLIENT_KEY],
            Duration::from_secs(120),
        );
        let text = content_pieces(5, None).collect::<String>();
        assert_eq!(chat["plain"]["text"], text.as_str(), "{backend}");
        assert_eq!(chat["plain"]["finish_reason"], "stop", "{backend}");
        assert_eq!(chat["stream"]["text"], text.as_str(), "{backend}");
        assert!(
            chat["stream"]["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{backend}"
        );

        let tools = e2e::python::run_script(
            "openai_tools.py",
            &[&base, "gpt-4o", CLIENT_KEY],
            Duration::from_secs(120),
        );
        let call = json!({"name": "get_weather", "arguments": {"city": "Paris"}, "finish_reason": "tool_calls"});
        assert_eq!(tools["stream_tool"], call, "{backend}");
        assert_eq!(tools["plain_tool"], call, "{backend}");
        assert_eq!(tools["followup_text"], text.as_str(), "{backend}");
    }
}

#[test]
fn official_anthropic_sdk_streaming_and_tools_over_every_provider_format() {
    let gateway = sdk_gateway();
    let _report = gateway.envoy.report_on_failure();
    for backend in SDK_BACKENDS {
        let base = gateway.envoy.url(&format!("/{backend}"));
        let out = e2e::python::run_script(
            "anthropic_chat.py",
            &[&base, "claude-haiku-4-5", CLIENT_KEY],
            Duration::from_secs(120),
        );
        let text = content_pieces(5, None).collect::<String>();
        assert_eq!(out["plain"]["text"], text.as_str(), "{backend}");
        assert_eq!(out["plain"]["stop_reason"], "end_turn", "{backend}");
        assert_eq!(out["plain"]["usage"]["output_tokens"], 5, "{backend}");
        assert_eq!(out["stream"]["text"], text.as_str(), "{backend}");
        assert_eq!(out["stream"]["stop_reason"], "end_turn", "{backend}");
        assert_eq!(out["stream"]["usage"]["output_tokens"], 5, "{backend}");
        assert!(
            out["stream"]["usage"]["input_tokens"].as_u64().unwrap() > 0,
            "{backend}: input tokens reach the client"
        );
        assert_eq!(out["tools"]["tool_name"], "get_weather", "{backend}");
        assert_eq!(
            out["tools"]["tool_input"],
            json!({"city": "Paris"}),
            "{backend}"
        );
        assert_eq!(out["tools"]["stop_reason"], "tool_use", "{backend}");
        assert_eq!(out["tools"]["followup_text"], text.as_str(), "{backend}");
    }
}

// ----- native providers: Gemini, Bedrock, Cohere, Ollama, Vertex AI -----

const GEMINI_KEY: &str = "AIzaSy-provider-gemini-0123456789";
const AWS_ACCESS_KEY: &str = "AKIDMOCKPROVIDER0001";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYMOCKSECRET";
const COHERE_KEY: &str = "co-provider-cohere-0123456789";

fn with_tools(mut body: Value) -> Value {
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    body
}

fn with_usage(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

/// Checks an OpenAI stream's framing: role first, a finish chunk, `[DONE]` last.
fn assert_openai_stream(streamed: &e2e::client::Streamed, finish: &str) {
    assert_eq!(
        streamed.status,
        200,
        "{}",
        String::from_utf8_lossy(&streamed.body)
    );
    let chunks = streamed.chunks();
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["role"], "assistant",
        "{chunks:#?}"
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == finish),
        "finish {finish}: {chunks:#?}"
    );
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));
}

fn streamed_call(streamed: &e2e::client::Streamed) -> (String, Value) {
    let chunks = streamed.chunks();
    let name = chunks
        .iter()
        .find_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/name")?
                .as_str()
        })
        .unwrap_or_default()
        .to_string();
    (
        name,
        serde_json::from_str(&tool_arguments(&chunks)).unwrap_or(Value::Null),
    )
}

#[test]
fn gemini_provider_chat_streams_tools_usage_and_safety_blocks() {
    let mock = MockServer::start(e2e::mock::gemini::GeminiMock::with_key(GEMINI_KEY));
    let envoy = gateway(
        json!({"provider": {"type": "gemini", "apiTokens": [GEMINI_KEY], "modelMapping": {"gpt-*": "gemini-2.5-flash"},
               "geminiSafetySetting": {"HARM_CATEGORY_HARASSMENT": "BLOCK_ONLY_HIGH"}}}),
        mock.addr,
    );
    let _report = envoy.report_on_failure();
    let url = envoy.url("/v1/chat/completions");
    let auth = format!("Bearer {CLIENT_KEY}");
    let text = content_pieces(5, None).collect::<String>();

    let reply = post_json(&url, &chat("gpt-4o"), &[("authorization", &auth)]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let completion = reply.json();
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        text.as_str()
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_eq!(completion["usage"]["completion_tokens"], 5);
    let sent = mock.requests.last().unwrap();
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_KEY));
    assert_eq!(
        sent.header("authorization"),
        None,
        "the client's key is not forwarded"
    );
    let body = sent.json();
    assert_eq!(body["systemInstruction"]["parts"][0]["text"], "be brief");
    assert_eq!(
        body["safetySettings"][0],
        json!({"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"})
    );

    // A thinking stream with cached prompt tokens: both counts reach the usage chunk.
    let mut thinking = with_usage(chat("gpt-4o"));
    thinking["reasoning_effort"] = json!("low");
    let streamed = post_stream(&url, &thinking, &[("x-mock-cached-tokens", "7")]);
    assert_openai_stream(&streamed, "stop");
    assert_eq!(
        mock.requests.last().unwrap().path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(streamed.text(), text);
    let chunks = streamed.chunks();
    assert!(chunks
        .iter()
        .any(|c| c.pointer("/choices/0/delta/reasoning_content").is_some()));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 6);
    assert_eq!(usage["completion_tokens"], 11, "candidates and thoughts");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 7);

    // Tools, whole and streamed.
    let reply = post_json(&url, &with_tools(chat("gpt-4o")), &[]);
    let message = &reply.json()["choices"][0];
    assert_eq!(message["finish_reason"], "tool_calls");
    let call = &message["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let streamed = post_stream(&url, &streaming(with_tools(chat("gpt-4o"))), &[]);
    assert_openai_stream(&streamed, "tool_calls");
    assert_eq!(
        streamed_call(&streamed),
        ("get_weather".to_string(), json!({"city": "Paris"}))
    );
    // The tool result goes back as a functionResponse named after the call.
    let id = call["id"].as_str().unwrap();
    let mut followup = with_tools(chat("gpt-4o"));
    followup["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": [call]}),
        json!({"role": "tool", "tool_call_id": id, "content": "18 C"}),
    ]);
    let reply = post_json(&url, &followup, &[]);
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        text.as_str()
    );
    let contents = mock.requests.last().unwrap().json()["contents"].clone();
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"result": "18 C"}})
    );

    // Safety blocks, of the prompt and of the answer, are `content_filter`.
    let blocked = post_json(&url, &chat("gpt-4o"), &[("x-mock-safety", "prompt")]);
    assert_eq!(
        blocked.json()["choices"][0]["finish_reason"],
        "content_filter"
    );
    let streamed = post_stream(
        &url,
        &streaming(chat("gpt-4o")),
        &[("x-mock-safety", "response")],
    );
    assert_openai_stream(&streamed, "content_filter");

    // An Anthropic client over Gemini.
    let streamed = post_stream(
        &envoy.url("/v1/messages"),
        &streaming(anthropic_message("gpt-4o")),
        &ANTHROPIC_HEADERS,
    );
    let kinds: Vec<String> = streamed.events().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        (
            kinds.first().map(String::as_str),
            kinds.last().map(String::as_str)
        ),
        (Some("message_start"), Some("message_stop"))
    );

    // Provider errors keep their status and message.
    let missing = post_json(&url, &chat("does-not-exist-model"), &[]);
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does-not-exist-model"));
    assert!(
        !envoy.log().contains(GEMINI_KEY),
        "provider keys never reach the logs"
    );
    assert!(envoy.wasm_panics().is_empty());
}

/// Envoy with ai-proxy as the upstream filter of one cluster per provider.
fn upstream_gateway(
    config: &Value,
    clusters: &[(&str, &[ProviderEndpoint])],
    extra: Vec<Value>,
    concurrency: u32,
) -> Envoy {
    let filter = e2e::config::wasm_filter("ai-proxy", config);
    let mut gateway = Gateway::new();
    for (name, endpoints) in clusters {
        gateway = gateway
            .raw_cluster(provider_cluster(name, endpoints, vec![filter.clone()]))
            .raw_route(failover_route(
                name,
                &format!("/{name}/"),
                name,
                &[401, 403, 429],
            ));
    }
    for cluster in extra {
        gateway = gateway.raw_cluster(cluster);
    }
    Envoy::start_with(
        &gateway.to_json(),
        &EnvoyOptions {
            concurrency,
            ..Default::default()
        },
    )
}

fn bedrock_provider(id: &str, secret: &str) -> Value {
    json!({"id": id, "type": "bedrock", "awsAccessKey": AWS_ACCESS_KEY, "awsSecretKey": secret, "awsRegion": "us-east-1",
           "modelMapping": {"*": "us.amazon.nova-micro-v1:0"}})
}

#[test]
fn bedrock_requests_are_signed_and_event_streams_translated() {
    let mock = MockServer::start(
        e2e::mock::bedrock::BedrockMock::new(AWS_ACCESS_KEY, AWS_SECRET, "us-east-1")
            .with_api_key("bedrock-api-key-0123"),
    );
    let config = json!({"providers": [
        bedrock_provider("bedrock", AWS_SECRET),
        {"id": "bedrock-key", "type": "bedrock", "awsRegion": "us-east-1", "apiTokens": ["bedrock-api-key-0123"], "modelMapping": {"*": "us.amazon.nova-micro-v1:0"}},
        bedrock_provider("bedrock-wrong", "not-the-secret")
    ]});
    let envoy = upstream_gateway(
        &config,
        &[
            ("signed", &[ProviderEndpoint::new(mock.addr, "bedrock")]),
            ("keyed", &[ProviderEndpoint::new(mock.addr, "bedrock-key")]),
            (
                "wrong",
                &[ProviderEndpoint::new(mock.addr, "bedrock-wrong")],
            ),
        ],
        Vec::new(),
        2,
    );
    let _report = envoy.report_on_failure();
    let url = envoy.url("/signed/v1/chat/completions");
    let text = content_pieces(5, None).collect::<String>();

    // The mock recomputes each signature from what it received; a 200 means it matched.
    let reply = post_json(&url, &chat("gpt-4o"), &[("authorization", "Bearer client")]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        text.as_str()
    );
    assert_eq!(reply.json()["usage"]["completion_tokens"], 5);
    let sent = mock.requests.last().unwrap();
    assert_eq!(sent.path, "/model/us.amazon.nova-micro-v1%3A0/converse");
    assert_eq!(
        sent.header("host"),
        Some("bedrock-runtime.us-east-1.amazonaws.com")
    );
    assert!(sent
        .header("authorization")
        .unwrap()
        .starts_with(&format!("AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY}/")));
    assert_eq!(sent.json()["system"], json!([{"text": "be brief"}]));

    let streamed = post_stream(&url, &with_usage(chat("gpt-4o")), &[("x-mock-chunks", "9")]);
    assert_openai_stream(&streamed, "stop");
    assert_eq!(streamed.text(), content_pieces(9, None).collect::<String>());
    assert_eq!(
        streamed.chunks().last().unwrap()["usage"]["completion_tokens"],
        9
    );
    assert_eq!(
        mock.requests.last().unwrap().path,
        "/model/us.amazon.nova-micro-v1%3A0/converse-stream"
    );
    let streamed = post_stream(&url, &streaming(with_tools(chat("gpt-4o"))), &[]);
    assert_openai_stream(&streamed, "tool_calls");
    assert_eq!(
        streamed_call(&streamed),
        ("get_weather".to_string(), json!({"city": "Paris"}))
    );

    // Exceptions inside the stream and corrupt frames end it with an error, not a clean finish.
    let throttled = post_stream(
        &url,
        &streaming(chat("gpt-4o")),
        &[("x-mock-exception", "throttlingException")],
    );
    let last = throttled.chunks().pop().unwrap();
    assert_eq!(last["error"]["type"], "throttlingException", "{last}");
    let corrupt = post_stream(
        &url,
        &streaming(chat("gpt-4o")),
        &[("x-mock-corrupt-frame", "2")],
    );
    let last = corrupt.chunks().pop().unwrap();
    assert!(
        last["error"]["message"].as_str().unwrap().contains("CRC"),
        "{last}"
    );
    assert_eq!(corrupt.data().last().map(String::as_str), Some("[DONE]"));

    // Bedrock API keys instead of signatures; a wrong secret is refused by the provider.
    let keyed = post_json(
        &envoy.url("/keyed/v1/chat/completions"),
        &chat("gpt-4o"),
        &[],
    );
    assert_eq!(keyed.status, 200, "{}", keyed.text());
    assert_eq!(
        mock.requests.last().unwrap().header("authorization"),
        Some("Bearer bedrock-api-key-0123")
    );
    let wrong = post_json(
        &envoy.url("/wrong/v1/chat/completions"),
        &chat("gpt-4o"),
        &[],
    );
    assert_eq!(wrong.status, 403);
    assert!(wrong.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("signature we calculated does not match"));

    // An Anthropic client over Bedrock, streaming.
    let streamed = post_stream(
        &envoy.url("/signed/v1/messages"),
        &streaming(anthropic_message("claude")),
        &ANTHROPIC_HEADERS,
    );
    let events = streamed.events();
    let said: String = events
        .iter()
        .filter_map(|(_, e)| e.pointer("/delta/text").and_then(Value::as_str))
        .collect();
    assert_eq!(said, text);
    assert_eq!(events.last().map(|(k, _)| k.as_str()), Some("message_stop"));
    assert!(!envoy.log().contains(AWS_SECRET));
}

#[test]
fn an_attempt_at_another_provider_inherits_nothing_from_a_bedrock_attempt() {
    let bedrock = MockServer::start(e2e::mock::bedrock::BedrockMock::new(
        AWS_ACCESS_KEY,
        AWS_SECRET,
        "us-east-1",
    ));
    let gemini = MockServer::start(e2e::mock::gemini::GeminiMock::with_key(GEMINI_KEY));
    // The first attempt is refused (403, wrong secret) and retried on the next priority.
    let config = json!({"providers": [
        bedrock_provider("bedrock", "not-the-secret"),
        {"id": "gemini", "type": "gemini", "apiTokens": [GEMINI_KEY], "modelMapping": {"*": "gemini-2.5-flash"}}
    ]});
    let envoy = upstream_gateway(
        &config,
        &[(
            "llm",
            &[
                ProviderEndpoint::new(bedrock.addr, "bedrock"),
                ProviderEndpoint::new(gemini.addr, "gemini"),
            ],
        )],
        Vec::new(),
        1,
    );
    let reply = post_json(
        &envoy.url("/llm/v1/chat/completions"),
        &chat("gpt-4o"),
        &[("authorization", "Bearer client")],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(bedrock.requests.count(), 1);
    let sent = gemini.requests.last().unwrap();
    for header in [
        "authorization",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
    ] {
        assert_eq!(
            sent.header(header),
            None,
            "{header} leaked into the Gemini attempt"
        );
    }
    assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_KEY));
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
}

#[test]
fn cohere_and_ollama_native_providers() {
    let cohere = MockServer::start(e2e::mock::cohere::CohereMock::with_key(COHERE_KEY));
    let ollama = MockServer::start(e2e::mock::ollama::OllamaMock::default());
    let config = json!({"providers": [
        {"id": "cohere", "type": "cohere", "apiTokens": [COHERE_KEY], "modelMapping": {"*": "command-a-03-2025"}},
        {"id": "ollama", "type": "ollama-native", "modelMapping": {"*": "llama3.2"}}
    ]});
    let envoy = upstream_gateway(
        &config,
        &[
            ("cohere", &[ProviderEndpoint::new(cohere.addr, "cohere")]),
            ("ollama", &[ProviderEndpoint::new(ollama.addr, "ollama")]),
        ],
        Vec::new(),
        2,
    );
    let _report = envoy.report_on_failure();
    let text = content_pieces(5, None).collect::<String>();
    for (route, mock, path) in [
        ("cohere", &cohere, "/v2/chat"),
        ("ollama", &ollama, "/api/chat"),
    ] {
        let url = envoy.url(&format!("/{route}/v1/chat/completions"));
        let reply = post_json(&url, &chat("gpt-4o"), &[("authorization", "Bearer client")]);
        assert_eq!(reply.status, 200, "{route}: {}", reply.text());
        assert_eq!(
            reply.json()["choices"][0]["message"]["content"],
            text.as_str(),
            "{route}"
        );
        assert_eq!(reply.json()["usage"]["completion_tokens"], 5, "{route}");
        assert_eq!(mock.requests.last().unwrap().path, path, "{route}");

        let streamed = post_stream(&url, &with_usage(chat("gpt-4o")), &[("x-mock-chunks", "8")]);
        assert_openai_stream(&streamed, "stop");
        assert!(
            streamed
                .header("content-type")
                .unwrap()
                .starts_with("text/event-stream"),
            "{route}"
        );
        assert_eq!(
            streamed.text(),
            content_pieces(8, None).collect::<String>(),
            "{route}"
        );
        assert_eq!(
            streamed.chunks().last().unwrap()["usage"]["completion_tokens"],
            8,
            "{route}"
        );

        let streamed = post_stream(&url, &streaming(with_tools(chat("gpt-4o"))), &[]);
        assert_openai_stream(&streamed, "tool_calls");
        assert_eq!(
            streamed_call(&streamed),
            ("get_weather".to_string(), json!({"city": "Paris"})),
            "{route}"
        );
    }
    let sent = cohere.requests.last().unwrap();
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {COHERE_KEY}").as_str())
    );
    assert_eq!(
        ollama.requests.last().unwrap().header("authorization"),
        None,
        "a local server gets no key"
    );
    assert_eq!(ollama.requests.last().unwrap().json()["stream"], true);
    // Cohere's streamed tool plan arrives as reasoning.
    let streamed = post_stream(
        &envoy.url("/cohere/v1/chat/completions"),
        &streaming(with_tools(chat("gpt-4o"))),
        &[],
    );
    let plan: String = streamed
        .chunks()
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/reasoning_content")?
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(plan, "I will look it up.");
    let missing = post_json(
        &envoy.url("/ollama/v1/chat/completions"),
        &json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(missing.status, 200, "mapped to llama3.2");
}

struct VertexSetup {
    envoy: Envoy,
    tokens: std::sync::Arc<e2e::mock::vertex::IssuedTokens>,
    vertex: MockServer,
    _google: MockServer,
}

/// Vertex AI behind ai-proxy (upstream filter), its token endpoint on the cluster
/// `google-auth`; `token_endpoint` is where that cluster points.
fn vertex_setup(token_endpoint: Option<SocketAddr>, refresh_ahead: u64) -> VertexSetup {
    let tokens = std::sync::Arc::new(e2e::mock::vertex::IssuedTokens::default());
    let google = MockServer::start(e2e::mock::vertex::GoogleTokenMock::new(tokens.clone()));
    let vertex = MockServer::start(e2e::mock::vertex::VertexMock::new(
        "aigw-test-project",
        "us-east5",
        tokens.clone(),
    ));
    let config = json!({"provider": {"id": "vertex", "type": "vertex", "vertexRegion": "us-east5",
        "vertexProjectId": "aigw-test-project", "vertexAuthKey": e2e::mock::vertex::test_service_account(),
        "vertexAuthServiceName": "google-auth", "vertexTokenRefreshAhead": refresh_ahead,
        "modelMapping": {"gpt-*": "gemini-2.5-flash", "claude-*": "claude-sonnet-4-5@20250929"}}});
    let auth = e2e::config::static_cluster("google-auth", token_endpoint.unwrap_or(google.addr));
    let envoy = upstream_gateway(
        &config,
        &[("vertex", &[ProviderEndpoint::new(vertex.addr, "vertex")])],
        vec![auth],
        1,
    );
    VertexSetup {
        envoy,
        tokens,
        vertex,
        _google: google,
    }
}

#[test]
fn vertex_tokens_are_fetched_with_a_signed_assertion_and_cached() {
    let setup = vertex_setup(None, 300);
    let _report = setup.envoy.report_on_failure();
    let url = setup.envoy.url("/vertex/v1/chat/completions");
    let text = content_pieces(5, None).collect::<String>();
    for _ in 0..3 {
        let reply = post_json(&url, &chat("gpt-4o"), &[("authorization", "Bearer client")]);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            reply.json()["choices"][0]["message"]["content"],
            text.as_str()
        );
    }
    assert_eq!(setup.tokens.count(), 1, "one token for three requests");
    let sent = setup.vertex.requests.last().unwrap();
    assert_eq!(sent.path, "/v1/projects/aigw-test-project/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent");
    assert_eq!(
        sent.header("host"),
        Some("us-east5-aiplatform.googleapis.com")
    );
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer ya29.mock-access-token-1")
    );

    // Claude on Vertex: rawPredict / streamRawPredict with Anthropic's bodies.
    let streamed = post_stream(&url, &with_usage(chat("claude-sonnet")), &[]);
    assert_openai_stream(&streamed, "stop");
    assert_eq!(streamed.text(), text);
    assert_eq!(
        streamed.chunks().last().unwrap()["usage"]["completion_tokens"],
        5
    );
    let sent = setup.vertex.requests.last().unwrap();
    assert_eq!(sent.path, "/v1/projects/aigw-test-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict");
    assert_eq!(sent.json()["anthropic_version"], "vertex-2023-10-16");
    let reply = post_json(&url, &with_tools(chat("claude-sonnet")), &[]);
    assert_eq!(
        reply.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    setup.envoy.wait_for_stats("token fetch counted", |s| {
        s.get("wasmcustom.provider.vertex.metric.token_fetches") == Some(&1)
    });
    assert!(!setup.envoy.log().contains("PRIVATE KEY"));
}

#[test]
fn vertex_tokens_are_refreshed_before_they_expire() {
    // Tokens live 3599 s; replaced 3598 s early, each is used for one second.
    let setup = vertex_setup(None, 3598);
    let url = setup.envoy.url("/vertex/v1/chat/completions");
    assert_eq!(post_json(&url, &chat("gpt-4o"), &[]).status, 200);
    assert_eq!(post_json(&url, &chat("gpt-4o"), &[]).status, 200);
    assert_eq!(setup.tokens.count(), 1);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(post_json(&url, &chat("gpt-4o"), &[]).status, 200);
    assert_eq!(
        setup.tokens.count(),
        2,
        "a token near its expiry is replaced"
    );
}

#[test]
fn vertex_without_a_token_endpoint_fails_closed_with_a_clear_error() {
    let setup = vertex_setup(Some(free_closed_port()), 300);
    let reply = post_json(
        &setup.envoy.url("/vertex/v1/chat/completions"),
        &chat("gpt-4o"),
        &[],
    );
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Vertex AI access token unavailable"));
    assert_eq!(setup.vertex.requests.count(), 0);
    let anthropic = post_json(
        &setup.envoy.url("/vertex/v1/messages"),
        &anthropic_message("claude-x"),
        &ANTHROPIC_HEADERS,
    );
    assert_eq!(anthropic.status, 503);
    assert_eq!(
        anthropic.json()["type"],
        "error",
        "Anthropic clients get Anthropic's error shape"
    );
    setup.envoy.wait_for_stats("token failures counted", |s| {
        s.get("wasmcustom.provider.vertex.metric.token_failures") == Some(&2)
    });
    assert!(setup.envoy.wasm_panics().is_empty());
}

// ----- Bedrock, Vertex AI, Cohere and Ollama in both filter positions -----

/// Where ai-proxy runs.
#[derive(Clone, Copy, Debug)]
enum Position {
    /// In the listener's chain, one instance per route picked by `_rules_`, as both edges.
    Downstream,
    /// On each provider's cluster, the provider named by the endpoint's metadata.
    Upstream,
}

/// A native provider behind the gateway and what it must receive.
struct Native {
    /// The provider id, its route and the `x-provider` header value that picks the route.
    name: &'static str,
    /// The host the provider is addressed by.
    host: &'static str,
    chat_path: String,
    stream_path: String,
    /// How the `authorization` header sent to the provider starts (`None`: absent).
    auth: Option<String>,
}

fn natives() -> [Native; 4] {
    let vertex_model = "/v1/projects/aigw-test-project/locations/us-east5/publishers/google/models/gemini-2.5-flash";
    [
        Native {
            name: "bedrock",
            host: "bedrock-runtime.us-east-1.amazonaws.com",
            chat_path: "/model/us.amazon.nova-micro-v1%3A0/converse".into(),
            stream_path: "/model/us.amazon.nova-micro-v1%3A0/converse-stream".into(),
            // The mock also recomputes the signature: any answer but a 403 means it matched.
            auth: Some(format!("AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY}/")),
        },
        Native {
            name: "vertex",
            host: "us-east5-aiplatform.googleapis.com",
            chat_path: format!("{vertex_model}:generateContent"),
            stream_path: format!("{vertex_model}:streamGenerateContent?alt=sse"),
            // The one token the token endpoint issued (one worker).
            auth: Some("Bearer ya29.mock-access-token-1".into()),
        },
        Native {
            name: "cohere",
            host: "api.cohere.com",
            chat_path: "/v2/chat".into(),
            stream_path: "/v2/chat".into(),
            auth: Some(format!("Bearer {COHERE_KEY}")),
        },
        Native {
            name: "ollama",
            host: "localhost:11434",
            chat_path: "/api/chat".into(),
            stream_path: "/api/chat".into(),
            auth: None,
        },
    ]
}

/// Bedrock, Vertex AI (Gemini, its token endpoint on the cluster `google-auth`), Cohere and
/// Ollama-native behind one Envoy, each on the route the `x-provider` header picks: downstream,
/// Envoy matches the route again after ai-proxy rewrites the path, and a header match survives
/// when `forwardHeaders` keeps the header.
struct NativeGateway {
    envoy: Envoy,
    mocks: Vec<(&'static str, MockServer)>,
    _google: MockServer,
}

impl NativeGateway {
    fn start(position: Position) -> NativeGateway {
        let tokens = std::sync::Arc::new(e2e::mock::vertex::IssuedTokens::default());
        let google = MockServer::start(e2e::mock::vertex::GoogleTokenMock::new(tokens.clone()));
        let mocks = vec![
            (
                "bedrock",
                MockServer::start(e2e::mock::bedrock::BedrockMock::new(
                    AWS_ACCESS_KEY,
                    AWS_SECRET,
                    "us-east-1",
                )),
            ),
            (
                "vertex",
                MockServer::start(e2e::mock::vertex::VertexMock::new(
                    "aigw-test-project",
                    "us-east5",
                    tokens,
                )),
            ),
            (
                "cohere",
                MockServer::start(e2e::mock::cohere::CohereMock::with_key(COHERE_KEY)),
            ),
            (
                "ollama",
                MockServer::start(e2e::mock::ollama::OllamaMock::default()),
            ),
        ];
        let providers = json!([
            bedrock_provider("bedrock", AWS_SECRET),
            {"id": "vertex", "type": "vertex", "vertexRegion": "us-east5", "vertexProjectId": "aigw-test-project",
             "vertexAuthKey": e2e::mock::vertex::test_service_account(), "vertexAuthServiceName": "google-auth",
             "modelMapping": {"*": "gemini-2.5-flash"}},
            {"id": "cohere", "type": "cohere", "apiTokens": [COHERE_KEY], "modelMapping": {"*": "command-a-03-2025"}},
            {"id": "ollama", "type": "ollama-native", "modelMapping": {"*": "llama3.2"}}
        ]);
        let mut gateway =
            Gateway::new().raw_cluster(e2e::config::static_cluster("google-auth", google.addr));
        match position {
            Position::Downstream => {
                let rules: Vec<Value> = natives()
                    .iter()
                    .map(|n| json!({"_match_route_": [n.name], "activeProviderId": n.name}))
                    .collect();
                // The route is matched again on `x-provider`, so that header must stay.
                gateway = gateway.plugin(
                    "ai-proxy",
                    json!({"providers": providers, "_rules_": rules, "forwardHeaders": ["x-provider", "x-mock-*"]}),
                );
                for native in natives() {
                    // Downstream the route sends the provider's host (signed, for Bedrock).
                    let mut route = provider_route(native.name);
                    route["route"]["host_rewrite_literal"] = json!(native.host);
                    let mock = mocks.iter().find(|(name, _)| *name == native.name).unwrap();
                    gateway = gateway.cluster(native.name, mock.1.addr).raw_route(route);
                }
            }
            Position::Upstream => {
                let filter = e2e::config::wasm_filter("ai-proxy", &json!({"providers": providers}));
                for (name, mock) in &mocks {
                    gateway = gateway
                        .raw_cluster(provider_cluster(
                            name,
                            &[ProviderEndpoint::new(mock.addr, name)],
                            vec![filter.clone()],
                        ))
                        .raw_route(provider_route(name));
                }
            }
        }
        let envoy = Envoy::start_with(
            &gateway.to_json(),
            &EnvoyOptions {
                concurrency: 1,
                ..Default::default()
            },
        );
        NativeGateway {
            envoy,
            mocks,
            _google: google,
        }
    }

    fn mock(&self, name: &str) -> &MockServer {
        &self.mocks.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

/// The route to the cluster `name`, for requests whose `x-provider` header is `name`.
fn provider_route(name: &str) -> Value {
    json!({"name": name,
           "match": {"prefix": "/", "headers": [{"name": "x-provider", "string_match": {"exact": name}}]},
           "route": {"cluster": name, "timeout": "30s"}})
}

/// Checks what a native provider received: its path, host and credentials, never the client's.
fn assert_sent_to(native: &Native, mock: &MockServer, path: &str) {
    let sent = mock.requests.last().expect("the provider was asked");
    assert_eq!(sent.path, path, "{}", native.name);
    assert_eq!(sent.header("host"), Some(native.host), "{}", native.name);
    let auth = sent.header("authorization");
    match &native.auth {
        Some(prefix) => assert!(
            auth.is_some_and(|a| a.starts_with(prefix.as_str())),
            "{}: {auth:?}",
            native.name
        ),
        None => assert_eq!(auth, None, "{}: a local server gets no key", native.name),
    }
    assert_eq!(sent.header("x-api-key"), None, "{}", native.name);
}

#[test]
fn native_providers_answer_openai_clients_as_a_downstream_filter() {
    let gateway = NativeGateway::start(Position::Downstream);
    let _report = gateway.envoy.report_on_failure();
    let url = gateway.envoy.url("/v1/chat/completions");
    let auth = format!("Bearer {CLIENT_KEY}");
    for native in natives() {
        let mock = gateway.mock(native.name);
        let headers = [("x-provider", native.name), ("authorization", &auth)];

        let reply = post_json(&url, &chat("gpt-4o"), &headers);
        assert_eq!(reply.status, 200, "{}: {}", native.name, reply.text());
        let completion = reply.json();
        assert_eq!(
            completion["choices"][0]["message"]["content"],
            content_pieces(5, None).collect::<String>(),
            "{}",
            native.name
        );
        assert_eq!(completion["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            completion["usage"]["completion_tokens"], 5,
            "{}",
            native.name
        );
        assert!(
            completion["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
            "{}",
            native.name
        );
        assert_sent_to(&native, mock, &native.chat_path);

        let streamed = post_stream(
            &url,
            &with_usage(chat("gpt-4o")),
            &[headers[0], headers[1], ("x-mock-chunks", "8")],
        );
        assert_openai_stream(&streamed, "stop");
        assert_eq!(
            streamed.text(),
            content_pieces(8, None).collect::<String>(),
            "{}",
            native.name
        );
        assert_eq!(
            streamed.chunks().last().unwrap()["usage"]["completion_tokens"],
            8,
            "{}",
            native.name
        );
        assert_sent_to(&native, mock, &native.stream_path);
    }
    assert!(!gateway.envoy.log().contains(AWS_SECRET));
    assert!(gateway.envoy.wasm_panics().is_empty());
}

/// Anthropic's stream of a text answer in `deltas` pieces: its events in order, the text and
/// the final usage.
fn assert_anthropic_text_stream(streamed: &e2e::client::Streamed, deltas: usize, what: &str) {
    assert_eq!(streamed.status, 200, "{what}");
    let events = streamed.events();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected = vec!["message_start", "ping", "content_block_start"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(kinds, expected, "{what}");
    let said: String = events
        .iter()
        .filter(|(k, e)| k == "content_block_delta" && e["delta"]["type"] == "text_delta")
        .filter_map(|(_, e)| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(
        said,
        content_pieces(deltas, None).collect::<String>(),
        "{what}"
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{what}");
    assert_eq!(
        delta["usage"]["output_tokens"].as_u64(),
        Some(deltas as u64),
        "{what}"
    );
    assert!(
        delta["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{what}: {delta}"
    );
}

#[test]
fn anthropic_clients_over_cohere_ollama_and_vertex_in_both_positions() {
    for position in [Position::Downstream, Position::Upstream] {
        let gateway = NativeGateway::start(position);
        let _report = gateway.envoy.report_on_failure();
        let url = gateway.envoy.url("/v1/messages");
        for native in natives().into_iter().filter(|n| n.name != "bedrock") {
            let what = format!("{} {position:?}", native.name);
            let mock = gateway.mock(native.name);
            let headers = [
                ("x-provider", native.name),
                ANTHROPIC_HEADERS[0],
                ANTHROPIC_HEADERS[1],
            ];

            let reply = post_json(&url, &anthropic_message("claude-sonnet-4-5"), &headers);
            assert_eq!(reply.status, 200, "{what}: {}", reply.text());
            let message = reply.json();
            let text = content_pieces(5, None).collect::<String>();
            assert_eq!(message["type"], "message", "{what}");
            assert_eq!(message["role"], "assistant", "{what}");
            assert!(
                message["id"].as_str().unwrap().starts_with("msg_"),
                "{what}"
            );
            assert_eq!(
                message["content"],
                json!([{"type": "text", "text": text}]),
                "{what}"
            );
            assert_eq!(message["stop_reason"], "end_turn", "{what}");
            assert_eq!(message["usage"]["output_tokens"], 5, "{what}");
            assert!(
                message["usage"]["input_tokens"].as_u64().unwrap() > 0,
                "{what}"
            );
            assert_sent_to(&native, mock, &native.chat_path);

            let streamed = post_stream(
                &url,
                &streaming(anthropic_message("claude-sonnet-4-5")),
                &[headers[0], headers[1], headers[2], ("x-mock-chunks", "6")],
            );
            assert_anthropic_text_stream(&streamed, 6, &what);
            assert_sent_to(&native, mock, &native.stream_path);
        }
        assert!(gateway.envoy.wasm_panics().is_empty());
    }
}
