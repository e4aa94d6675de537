//! Part of the hostile suite: what a hostile client or a broken provider tries against
//! ai-proxy, through real Envoy, with ai-proxy as a downstream filter and as the upstream filter
//! on the route's cluster. A client calls APIs the gateway does not translate (to use the
//! provider's key unmetered), sends headers that bill another organisation or fake the
//! gateway's own state; a provider echoes its key in errors and headers, or answers with bytes
//! that do not parse.

use e2e::client::{get_with, post_json, post_stream, request, Reply};
use e2e::config::{failover_route, provider_cluster, wasm_filter, ProviderEndpoint};
use e2e::mock::hostile::{HostileMock, ANSWER, ECHO_HEADER, HIDDEN};
use e2e::mock::vertex::{test_service_account, GoogleTokenMock, IssuedTokens};
use e2e::{Envoy, Gateway, MockServer};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "sk-hostile-provider-key-0123456789";
const CLIENT_KEY: &str = "sk-client-key-of-the-caller";

#[derive(Debug, Clone, Copy)]
enum Position {
    /// ai-proxy is the last downstream filter, one provider per route.
    Downstream,
    /// ai-proxy is the upstream filter of the route's cluster.
    Upstream,
}

const POSITIONS: [Position; 2] = [Position::Downstream, Position::Upstream];

fn provider(extra: Value) -> Value {
    let mut config = json!({"provider": {"id": "hostile", "type": "openai", "apiTokens": [KEY]}});
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    config
}

/// Envoy with ai-proxy (`config`) in `position` in front of `mock`.
fn gateway(position: Position, config: &Value, mock: SocketAddr) -> Envoy {
    let gateway = match position {
        Position::Downstream => Gateway::new()
            .plugin("ai-proxy", config.clone())
            .cluster("provider", mock),
        Position::Upstream => Gateway::new()
            .raw_route(failover_route("llm", "/", "llm", &[]))
            .raw_cluster(provider_cluster(
                "llm",
                &[ProviderEndpoint::new(mock, "hostile")],
                vec![wasm_filter("ai-proxy", config)],
            )),
    };
    Envoy::start(&gateway.to_json())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]})
}

fn streaming(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

fn error_message(reply: &Reply) -> String {
    let body = reply.json();
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"))
        .to_string()
}

// ----- APIs the gateway does not translate -----

/// (method, path, content type, body) of APIs a client may try with the provider's key.
fn untranslated() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let multipart = b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jsonl\"\r\n\r\n{}\r\n--b--\r\n".to_vec();
    let json = br#"{"input_file_id":"file-x","endpoint":"/v1/chat/completions","model":"gpt-4o","training_file":"file-x","input":"hi"}"#.to_vec();
    vec![
        ("GET", "/v1/files", "", vec![]),
        ("DELETE", "/v1/files/file-x", "", vec![]),
        ("GET", "/v1/chat/completions?limit=100", "", vec![]),
        ("GET", "/v1/organization/users", "", vec![]),
        ("POST", "/v1/batches", "application/json", json.clone()),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            "application/json",
            json.clone(),
        ),
        (
            "POST",
            "/v1/files",
            "multipart/form-data; boundary=b",
            multipart,
        ),
        ("POST", "/anything/else", "application/json", json.clone()),
        ("POST", "/v1/responses", "application/json", json.clone()),
        ("POST", "/v1/messages/batches", "application/json", json),
    ]
}

fn send(envoy: &Envoy, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let auth = format!("Bearer {CLIENT_KEY}");
    let mut headers = vec![("authorization", auth.as_str())];
    if !content_type.is_empty() {
        headers.push(("content-type", content_type));
    }
    request(method, &envoy.url(path), body, &headers)
}

#[test]
fn untranslated_apis_are_refused_and_never_reach_the_provider() {
    let mock = MockServer::start(HostileMock);
    for position in POSITIONS {
        let envoy = gateway(position, &provider(json!({})), mock.addr);
        let _report = envoy.report_on_failure();
        for (method, path, content_type, body) in untranslated() {
            let reply = send(&envoy, method, path, content_type, body);
            assert_eq!(
                reply.status,
                404,
                "{position:?} {method} {path}: {}",
                reply.text()
            );
            let shown = path.split('?').next().unwrap();
            let expected = format!("{method} {shown:?}");
            if path.starts_with("/v1/messages") {
                let body = reply.json();
                assert_eq!(
                    body["type"], "error",
                    "{position:?} {path}: Anthropic shape"
                );
                assert_eq!(body["error"]["type"], "not_found_error");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains(&expected), "{message}");
            } else {
                let message = error_message(&reply);
                assert!(message.contains(&expected), "{position:?}: {message}");
            }
        }
        assert_eq!(
            mock.requests.count(),
            0,
            "{position:?}: the provider saw {:?}",
            mock.requests
                .all()
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_passthrough_entry_lets_exactly_that_api_through() {
    let mock = MockServer::start(HostileMock);
    let config = provider(json!({"passthroughPaths": ["GET /v1/files*"]}));
    for position in POSITIONS {
        mock.requests.clear();
        let envoy = gateway(position, &config, mock.addr);
        let _report = envoy.report_on_failure();
        let reply = send(&envoy, "GET", "/v1/files?purpose=batch", "", vec![]);
        assert_eq!(reply.status, 200, "{position:?}: {}", reply.text());
        let seen = mock
            .requests
            .last()
            .expect("the listed API reaches the provider");
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("GET", "/v1/files?purpose=batch")
        );
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        for (method, path) in [
            ("DELETE", "/v1/files/file-x"),
            ("GET", "/v1/files/%2e%2e/organization/users"),
            ("GET", "/v1/organization/users"),
        ] {
            let reply = send(&envoy, method, path, "", vec![]);
            assert_eq!(
                reply.status,
                404,
                "{position:?} {method} {path}: {}",
                reply.text()
            );
        }
        assert_eq!(
            mock.requests.count(),
            1,
            "{position:?}: only the listed API passed"
        );
    }
}

#[test]
fn models_retrieve_through_the_official_sdk_is_answered_from_the_config() {
    let mock = MockServer::start(HostileMock);
    let config = json!({"models": ["team-default"], "provider": {"id": "hostile", "type": "openai", "apiTokens": [KEY], "models": ["gpt-4o"]}});
    for position in POSITIONS {
        let envoy = gateway(position, &config, mock.addr);
        let _report = envoy.report_on_failure();
        let out = e2e::python::run_script(
            "openai_models.py",
            &[&envoy.url("/v1"), "gpt-4o", "gpt-unknown", CLIENT_KEY],
            Duration::from_secs(60),
        );
        assert_eq!(
            out["listed"],
            json!(["team-default", "gpt-4o"]),
            "{position:?}"
        );
        assert_eq!(
            out["retrieved"],
            json!({"id": "gpt-4o", "object": "model", "owned_by": "openai"}),
            "{position:?}"
        );
        assert_eq!(out["missing"]["status"], 404, "{position:?}: {out}");
        assert_eq!(out["missing"]["code"], "model_not_found", "{position:?}");
    }
    assert_eq!(mock.requests.count(), 0, "answered by the gateway");
}

// ----- client headers -----

/// Headers a client must not be able to hand to the provider.
const STRIPPED: [(&str, &str); 7] = [
    ("cookie", "session=stolen"),
    ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
    ("openai-organization", "org-someone-else"),
    ("openai-project", "proj-someone-else"),
    ("x-mse-consumer", "victim"),
    ("x-anything", "internal"),
    ("x-ai-proxy-client-path", "/v1/embeddings"),
];

#[test]
fn only_allowed_client_headers_reach_the_provider() {
    let mock = MockServer::start(HostileMock);
    let config = provider(json!({"forwardHeaders": ["x-team-*"]}));
    for position in POSITIONS {
        mock.requests.clear();
        let envoy = gateway(position, &config, mock.addr);
        let _report = envoy.report_on_failure();
        let mut headers = STRIPPED.to_vec();
        headers.extend([
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("user-agent", "hostile-client/1.0"),
            ("x-team-id", "blue"),
        ]);
        // A chat pointed at the embeddings API by the client's fake internal header.
        let reply = post_json(
            &envoy.url("/v1/chat/completions"),
            &chat("gpt-4o"),
            &headers,
        );
        assert_eq!(reply.status, 200, "{position:?}: {}", reply.text());
        assert_eq!(reply.json()["choices"][0]["message"]["content"], ANSWER);
        let seen = mock.requests.last().unwrap();
        assert_eq!(seen.path, "/v1/chat/completions", "{position:?}");
        for (name, _) in STRIPPED {
            assert_eq!(
                seen.header(name),
                None,
                "{position:?}: {name} reached the provider"
            );
        }
        assert!(
            seen.header("traceparent").is_some(),
            "{position:?}: tracing is kept"
        );
        assert_eq!(seen.header("user-agent"), Some("hostile-client/1.0"));
        assert_eq!(
            seen.header("x-team-id"),
            Some("blue"),
            "forwardHeaders adds to the list"
        );

        // An OpenAI client claiming to be an Anthropic one gets an OpenAI answer.
        let fake = [("x-ai-proxy-client-path", "/v1/messages")];
        let reply = post_json(&envoy.url("/v1/chat/completions"), &chat("gpt-4o"), &fake);
        assert_eq!(reply.status, 200, "{position:?}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["object"], "chat.completion", "{position:?}: {body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    }
}

#[test]
fn an_anthropic_client_keeps_its_api_across_upstream_retries() {
    let mock = MockServer::start(HostileMock);
    // Priority 0 refuses connections; the retry lands on the mock with the rewritten headers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = provider(json!({}));
    let envoy = Envoy::start(
        &Gateway::new()
            .raw_route(failover_route("llm", "/", "llm", &[]))
            .raw_cluster(provider_cluster(
                "llm",
                &[
                    ProviderEndpoint::new(closed, "hostile"),
                    ProviderEndpoint::new(mock.addr, "hostile"),
                ],
                vec![wasm_filter("ai-proxy", &config)],
            ))
            .to_json(),
    );
    let _report = envoy.report_on_failure();
    let message = json!({"model": "claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]});
    let reply = post_json(
        &envoy.url("/v1/messages"),
        &message,
        &[("anthropic-version", "2023-06-01")],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["type"], "message", "{body}");
    assert_eq!(body["content"][0]["text"], ANSWER);
    assert!(
        envoy.stat("cluster.llm.upstream_rq_retry") >= 1,
        "the answer came from a retry"
    );
    let seen = mock.requests.last().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("x-ai-proxy-client-path"),
        None,
        "no internal state upstream"
    );
}

// ----- what a provider sends back -----

#[test]
fn provider_keys_never_reach_clients() {
    let mock = MockServer::start(HostileMock);
    let config = provider(json!({}));
    let leaks = |what: &str, text: &str| {
        assert!(
            !text.contains(KEY),
            "{what}: the key reached the client: {text}"
        );
        assert!(text.contains("[redacted]"), "{what}: {text}");
    };
    for position in POSITIONS {
        let envoy = gateway(position, &config, mock.addr);
        let _report = envoy.report_on_failure();
        let url = envoy.url("/v1/chat/completions");
        let what = |w: &str| format!("{position:?}: {w}");

        // OpenAI clients: an error event inside a 200 stream, translated and passed through.
        let stream = post_stream(&url, &streaming(chat("key-in-error")), &[]);
        leaks(
            &what("stream error event"),
            &String::from_utf8_lossy(&stream.body),
        );
        let mut with_usage = streaming(chat("key-in-error"));
        with_usage["stream_options"] = json!({"include_usage": true});
        let stream = post_stream(&url, &with_usage, &[]);
        leaks(
            &what("passed-through stream"),
            &String::from_utf8_lossy(&stream.body),
        );
        // A 200 JSON error body: still an OpenAI error object, key masked.
        let reply = post_json(&url, &chat("key-in-error"), &[]);
        assert_eq!(reply.status, 200);
        leaks(&what("200 error body"), &error_message(&reply));
        // A response header.
        let reply = post_json(&url, &chat("key-in-header"), &[]);
        leaks(
            &what("header"),
            reply.header(ECHO_HEADER).unwrap_or("[redacted] (removed)"),
        );

        // Anthropic clients: `event: error`, and an Anthropic error for the 200 error body.
        let anthropic = json!({"model": "key-in-error", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]});
        let stream = post_stream(
            &envoy.url("/v1/messages"),
            &streaming(anthropic.clone()),
            &[],
        );
        let events = stream.events();
        let (kind, error) = events.last().unwrap();
        assert_eq!(kind, "error", "{}", what("Anthropic stream"));
        leaks(&what("Anthropic error event"), &error.to_string());
        let reply = post_json(&envoy.url("/v1/messages"), &anthropic, &[]);
        let body = reply.json();
        assert_eq!(
            body["type"],
            "error",
            "{}: not an empty message: {body}",
            what("Anthropic")
        );
        leaks(&what("Anthropic error body"), &body.to_string());
    }
}

#[test]
fn an_access_token_fetched_at_run_time_never_reaches_clients() {
    let tokens = Arc::new(IssuedTokens::default());
    let token_endpoint = MockServer::start(GoogleTokenMock::new(tokens.clone()));
    let mock = MockServer::start(HostileMock);
    let config = json!({"provider": {"id": "hostile", "type": "vertex", "vertexRegion": "us-east5",
        "vertexProjectId": "aigw-test-project", "vertexAuthKey": test_service_account(),
        "vertexAuthServiceName": "google-auth"}});
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin("ai-proxy", config)
            .cluster("provider", mock.addr)
            .cluster("google-auth", token_endpoint.addr)
            .to_json(),
    );
    let _report = envoy.report_on_failure();
    let reply = post_json(
        &envoy.url("/v1/chat/completions"),
        &chat("key-in-error"),
        &[],
    );
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(
        tokens.count(),
        1,
        "the provider was called with a fetched token"
    );
    let message = error_message(&reply);
    assert!(
        message.contains("Bearer [redacted]"),
        "the access token reached the client: {message}"
    );
}

#[test]
fn answers_that_do_not_parse_become_errors_without_the_provider_bytes() {
    let mock = MockServer::start(HostileMock);
    let gemini = json!({"provider": {"id": "hostile", "type": "gemini", "apiTokens": [KEY]}});
    for position in POSITIONS {
        anthropic_clients_get_errors(position, &mock);
        // OpenAI clients of a provider whose answers ai-proxy translates.
        let envoy = gateway(position, &gemini, mock.addr);
        let _report = envoy.report_on_failure();
        let reply = post_json(
            &envoy.url("/v1/chat/completions"),
            &chat("gemini-2.5-flash"),
            &[],
        );
        assert!(
            !reply.text().contains(HIDDEN),
            "{position:?}: {}",
            reply.text()
        );
        assert!(
            error_message(&reply).contains("could not be read"),
            "{position:?}: {}",
            reply.text()
        );
        let stream = post_stream(
            &envoy.url("/v1/chat/completions"),
            &streaming(chat("gemini-2.5-flash")),
            &[],
        );
        let body = String::from_utf8_lossy(&stream.body).into_owned();
        assert!(
            body.contains("\"error\"") && body.contains("could not be read"),
            "{position:?}: {body}"
        );
        assert!(!body.contains(HIDDEN), "{position:?}: {body}");
    }
}

/// Anthropic clients over an OpenAI-compatible provider whose answers do not parse.
fn anthropic_clients_get_errors(position: Position, mock: &MockServer) {
    let envoy = gateway(position, &provider(json!({})), mock.addr);
    let _report = envoy.report_on_failure();
    for model in ["lone-surrogate", "invalid-utf8"] {
        let what = format!("{position:?} {model}");
        let message = json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]});
        let stream = post_stream(&envoy.url("/v1/messages"), &streaming(message.clone()), &[]);
        let events = stream.events();
        let failed = events
            .iter()
            .any(|(kind, e)| kind == "error" && e["error"]["type"] == "api_error");
        let text: String = events
            .iter()
            .filter_map(|(_, e)| e.pointer("/delta/text").and_then(Value::as_str))
            .collect();
        // Text never vanishes without a word: the stream fails (an event that does not parse),
        // or the text arrives (the SSE decoder reads invalid UTF-8 as U+FFFD).
        if model == "lone-surrogate" {
            assert!(failed, "{what}: the stream says it failed: {events:?}");
            assert!(
                !events.iter().any(|(kind, _)| kind == "message_stop"),
                "{what}: {events:?}"
            );
        } else {
            assert!(failed || text.contains(HIDDEN), "{what}: {events:?}");
        }
        let reply = post_json(&envoy.url("/v1/messages"), &message, &[]);
        let body = reply.json();
        assert_eq!(body["type"], "error", "{what}: {body}");
        assert_eq!(body["error"]["type"], "api_error", "{what}: {body}");
        assert!(
            !reply.text().contains(HIDDEN),
            "{what}: the raw answer reached the client: {body}"
        );
    }
}

#[test]
fn the_model_list_still_works_without_configured_models() {
    // Without configured models the list and a model's lookup go to the provider.
    let mock = MockServer::start(HostileMock);
    let envoy = gateway(Position::Downstream, &provider(json!({})), mock.addr);
    let reply = get_with(&envoy.url("/v1/models/gpt-4o"), &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = mock.requests.last().unwrap();
    assert_eq!(seen.path, "/v1/models/gpt-4o");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let reply = get_with(&envoy.url("/v1/models/..%2Ffiles"), &[]);
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(mock.requests.count(), 1);
}
