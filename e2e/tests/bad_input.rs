//! Malformed and hostile requests against a gateway with every plugin loaded, through real
//! Envoy: each gets the right 4xx and an error body in the client's API that names the problem,
//! nothing reaches the provider that should not, Envoy keeps serving, and no plugin panics.

use e2e::client::{post, post_json, Reply};
use e2e::config::{provider_cluster, wasm_filter, ProviderEndpoint};
use e2e::{Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

const KEY: &str = "sk-provider-bad-input-0123456789";
const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
/// The client edge refuses bodies larger than this (Envoy buffers up to 1 MiB); on the route
/// `default-limits` it keeps its default (8 MiB), so Envoy's own limit answers first.
const MAX_REQUEST_BYTES: usize = 256 * 1024;
const DENY_WORD: &str = "forbidden-term";

struct Fixture {
    mock: MockServer,
    envoy: Envoy,
}

/// The recommended chain: the client edge, statistics, a local token quota, local content
/// safety, a local cache, and the provider edge as an upstream filter, which maps
/// `forced-*` models to `gpt-4o-mini`.
fn gateway() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mock = MockServer::start(OpenAiMock::with_key(KEY));
        let provider_edge = json!({"provider": {"id": "openai", "type": "openai", "apiTokens": [KEY],
            "modelMapping": {"forced-*": "gpt-4o-mini"}}});
        let ratelimit = json!({"rule_name": "per-consumer", "rule_items": [{"limit_by_per_consumer": "",
            "limit_keys": [{"key": "*", "token_per_minute": 1_000_000}]}]});
        let envoy = Envoy::start(
            &Gateway::new()
                .plugin_instance(
                    "ai-proxy",
                    "ai-proxy-client",
                    json!({"maxRequestBytes": MAX_REQUEST_BYTES, "_rules_": [
                        {"_match_route_": ["default-limits"], "maxRequestBytes": 8 << 20}
                    ]}),
                )
                .plugin("ai-statistics", json!({}))
                .plugin("ai-token-ratelimit", ratelimit)
                .plugin(
                    "ai-content-safety",
                    json!({"local": {"denyWords": [DENY_WORD]}}),
                )
                .plugin("ai-cache", json!({}))
                .route("default-limits", "/default-limits/", "provider")
                .route("default", "/", "provider")
                .raw_cluster(provider_cluster(
                    "provider",
                    &[ProviderEndpoint::new(mock.addr, "openai")],
                    vec![wasm_filter("ai-proxy", &provider_edge)],
                ))
                .to_json(),
        );
        Fixture { mock, envoy }
    })
}

/// One bad request and what the gateway must answer.
struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// Text the error message must contain (case-insensitive): the field or the problem.
    names: &'static str,
}

fn case(name: &'static str, body: Value, status: u16, names: &'static str) -> Case {
    raw_case(name, body.to_string().into_bytes(), status, names)
}

fn raw_case(name: &'static str, body: Vec<u8>, status: u16, names: &'static str) -> Case {
    Case {
        name,
        path: CHAT,
        content_type: Some("application/json"),
        body,
        status,
        names,
    }
}

fn anthropic(name: &'static str, body: Value, status: u16, names: &'static str) -> Case {
    Case {
        path: MESSAGES,
        ..case(name, body, status, names)
    }
}

fn user(content: Value) -> Value {
    json!([{"role": "user", "content": content}])
}

/// A valid chat request with `field` set to `value` (or removed with `Null` for `messages`).
fn with(field: &str, value: Value) -> Value {
    let mut body = json!({"model": "gpt-4o", "messages": user(json!("Hello"))});
    body[field] = value;
    body
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn cases() -> Vec<Case> {
    let hello = user(json!("Hello"));
    let mut cases = vec![
        raw_case("invalid JSON", b"{\"model\": ".to_vec(), 400, "not valid JSON"),
        raw_case(
            "truncated body",
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hel"#.to_vec(),
            400,
            "not valid JSON",
        ),
        raw_case("empty body", Vec::new(), 400, "not valid JSON"),
        raw_case("trailing garbage", br#"{"model":"gpt-4o"} {}"#.to_vec(), 400, "not valid JSON"),
        case("body is an array", json!([1, 2]), 400, "invalid type"),
        case("body is a string", json!("hello"), 400, "invalid type"),
        case("body is null", Value::Null, 400, "invalid type"),
        case("model is a number", with("model", json!(42)), 400, "model"),
        case("model is an object", with("model", json!({"id": "x"})), 400, "model"),
        case("messages is a string", with("messages", json!("hi")), 400, "messages"),
        case("messages is an object", with("messages", json!({})), 400, "messages"),
        case("messages missing", json!({"model": "gpt-4o"}), 400, "messages"),
        case("messages empty", with("messages", json!([])), 400, "messages"),
        case("message is a number", with("messages", json!([42])), 400, "messages[0]"),
        case(
            "message without role",
            with("messages", json!([{"content": "hi"}])),
            400,
            "messages[0].role",
        ),
        case(
            "unknown role",
            with("messages", json!([{"role": "wizard", "content": "hi"}])),
            400,
            "messages[0].role",
        ),
        case(
            "role is a number",
            with("messages", json!([{"role": 7, "content": "hi"}])),
            400,
            "messages[0].role",
        ),
        case("content is a number", with("messages", user(json!(7))), 400, "messages[0].content"),
        case(
            "content part without text",
            with("messages", user(json!([{"type": "text"}]))),
            400,
            "messages[0].content",
        ),
        case(
            "content part of unknown type",
            with("messages", user(json!([{"type": "hologram", "data": 1}]))),
            400,
            "messages[0].content",
        ),
        case("stream is a string", with("stream", json!("yes")), 400, "stream"),
        case("stream is a number", with("stream", json!(1)), 400, "stream"),
        case("stream_options is a string", with("stream_options", json!("x")), 400, "stream_options"),
        case(
            "include_usage is a string",
            with("stream_options", json!({"include_usage": "yes"})),
            400,
            "stream_options.include_usage",
        ),
        case("max_tokens is a string", with("max_tokens", json!("ten")), 400, "max_tokens"),
        case("max_tokens is negative", with("max_tokens", json!(-1)), 400, "max_tokens"),
        raw_case(
            "max_tokens beyond 64 bits",
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"max_tokens":99999999999999999999999}"#.to_vec(),
            400,
            "max_tokens",
        ),
        case("huge max_tokens", with("max_tokens", json!(u64::MAX)), 429, "per-consumer"),
        case("temperature is a string", with("temperature", json!("hot")), 400, "temperature"),
        case("top_p is an array", with("top_p", json!([])), 400, "top_p"),
        case("tools is a string", with("tools", json!("x")), 400, "tools"),
        case(
            "tool without function",
            with("tools", json!([{"type": "function"}])),
            400,
            "tools[0]",
        ),
        case("stop is a number", with("stop", json!(5)), 400, "stop"),
        case(
            "unknown model",
            with("model", json!("does-not-exist-model")),
            404,
            "does-not-exist-model",
        ),
        case(
            "CRLF in the model name",
            with("model", json!("does-not-exist\r\nx-injected: yes")),
            404,
            "does not exist",
        ),
        case(
            "control characters in the model name",
            with("model", json!("does-not-exist\u{0}\u{7}\u{1b}[31m")),
            404,
            "does not exist",
        ),
        raw_case(
            "invalid UTF-8 in a string",
            [&br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hel"#[..], &[0xff, 0xfe], &br#"lo"}]}"#[..]].concat(),
            400,
            "not valid JSON",
        ),
        raw_case(
            "lone surrogate escape",
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"\ud800"}]}"#.to_vec(),
            400,
            "not valid JSON",
        ),
        raw_case(
            "10,000-deep nesting in a field",
            format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"Hello"}}],"metadata":{}}}"#, nested(10_000)).into_bytes(),
            400,
            "recursion limit",
        ),
        raw_case(
            "10,000-deep nesting in content",
            format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":{}}}]}}"#, nested(10_000)).into_bytes(),
            400,
            "recursion limit",
        ),
        case(
            "body over the limit",
            with("messages", user(json!("x".repeat(MAX_REQUEST_BYTES)))),
            413,
            "larger than",
        ),
        Case {
            path: "/default-limits/v1/chat/completions",
            ..case(
                "body over Envoy's buffer",
                with("messages", user(json!("x".repeat(3 << 20)))),
                413,
                "too large",
            )
        },
        case(
            "Anthropic fields in an OpenAI request",
            json!({"model": "gpt-4o", "max_tokens": 10, "messages": user(json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]))}),
            400,
            "messages[0].content",
        ),
        anthropic(
            "Anthropic request without max_tokens",
            json!({"model": "claude-sonnet-4-5", "messages": hello}),
            400,
            "max_tokens",
        ),
        anthropic(
            "OpenAI system message in an Anthropic request",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
                   "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello"}]}),
            400,
            "messages[0].role",
        ),
        anthropic(
            "OpenAI image part in an Anthropic request",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
                   "messages": user(json!([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]))}),
            400,
            "messages[0].content",
        ),
        anthropic(
            "OpenAI tool call in an Anthropic request",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
            ]}),
            400,
            "messages[1]",
        ),
        anthropic(
            "Anthropic stream is a string",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": "yes", "messages": hello}),
            400,
            "stream",
        ),
        anthropic(
            "Anthropic max_tokens is a string",
            json!({"model": "claude-sonnet-4-5", "max_tokens": "ten", "messages": hello}),
            400,
            "max_tokens",
        ),
        anthropic(
            "Anthropic unknown role",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "tool", "content": "x"}]}),
            400,
            "messages[0].role",
        ),
        anthropic(
            "Anthropic body is a string",
            json!("{\"model\""),
            400,
            "invalid type",
        ),
    ];
    cases.push(Case {
        content_type: None,
        ..case(
            "no content type, malformed",
            with("stream", json!("yes")),
            400,
            "stream",
        )
    });
    cases
}

/// The error of a gateway answer in the client's API shape: its message, and its `param`
/// (OpenAI names the field there).
fn error_message(path: &str, reply: &Reply) -> Result<String, String> {
    let body: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("body is not JSON ({e}): {}", reply.text()))?;
    let message = if path == MESSAGES {
        if body["type"] != "error" {
            return Err(format!("not an Anthropic error: {body}"));
        }
        &body["error"]["message"]
    } else {
        &body["error"]["message"]
    };
    let message = message
        .as_str()
        .ok_or_else(|| format!("no error message: {body}"))?;
    Ok(match body["error"]["param"].as_str() {
        Some(param) => format!("{message} (param {param})"),
        None => message.to_string(),
    })
}

fn send(envoy: &Envoy, case: &Case) -> Reply {
    let mut headers = vec![
        ("x-mse-consumer", "matrix"),
        ("anthropic-version", "2023-06-01"),
    ];
    if let Some(content_type) = case.content_type {
        headers.push(("content-type", content_type));
    }
    post(&envoy.url(case.path), case.body.clone(), &headers)
}

#[test]
fn every_malformed_request_gets_a_4xx_naming_the_problem() {
    let Fixture { mock, envoy } = gateway();
    let _report = envoy.report_on_failure();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let reply = send(envoy, case);
        let message = error_message(case.path, &reply);
        let ok = reply.status == case.status
            && message
                .as_ref()
                .is_ok_and(|m| m.to_lowercase().contains(&case.names.to_lowercase()));
        if !ok {
            wrong.push(format!(
                "{}: want {} naming {:?}, got {} {:?}",
                case.name, case.status, case.names, reply.status, message
            ));
        }
        assert!(
            reply.header("x-injected").is_none(),
            "{}: a header was injected",
            case.name
        );
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    for request in mock.requests.all() {
        assert!(
            request.header("x-injected").is_none(),
            "a header was injected upstream"
        );
    }
    assert_still_serving(envoy);
}

/// Header values that break HTTP's rules never reach a plugin as such: Envoy's codec refuses
/// control characters (400) and drops a bare CR, so nothing becomes a header of its own.
#[test]
fn control_characters_in_header_values_are_refused_by_envoy() {
    let Fixture { envoy, mock } = gateway();
    let _report = envoy.report_on_failure();
    let body = with("stream", json!(false)).to_string();
    for consumer in [
        "alice\rx-injected: yes",
        "al\u{0}ice",
        "al\u{1}ice",
        "al\u{7f}ice",
    ] {
        let request = format!(
            "POST {CHAT} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\nx-mse-consumer: {consumer}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, head) = raw_exchange(envoy.port(), request.as_bytes());
        // Refused, or (a bare CR) dropped by Envoy's codec: never a header of its own.
        let allowed: &[u16] = if consumer.contains('\r') {
            &[400, 200]
        } else {
            &[400]
        };
        assert!(allowed.contains(&status), "{consumer:?}: {head}");
        assert!(!head.to_lowercase().contains("x-injected"), "{head}");
    }
    for request in mock.requests.all() {
        assert!(
            request.header("x-injected").is_none(),
            "{:?}",
            request.headers
        );
    }
    assert_still_serving(envoy);
}

/// Hostile but legal consumer ids (they become metric labels, quota and cache keys) are
/// served, and sanitised where they become names.
#[test]
fn hostile_consumer_ids_are_served_and_kept_apart() {
    let Fixture { envoy, .. } = gateway();
    let _report = envoy.report_on_failure();
    let long = "c".repeat(4096);
    for consumer in [
        "../../etc/passwd",
        "alice.metric.input_token",
        "*",
        "名前",
        "a b\tc",
        long.as_str(),
    ] {
        let reply = post_json(
            &envoy.url(CHAT),
            &with(
                "messages",
                user(json!(format!("Hello from {}", consumer.len()))),
            ),
            &[("x-mse-consumer", consumer)],
        );
        assert_eq!(reply.status, 200, "{consumer:?}: {}", reply.text());
    }
    // Label values are cut to 96 characters.
    let stats = envoy.stats();
    assert!(
        stats.keys().all(|name| !name.contains(&"c".repeat(97))),
        "an unbounded metric name"
    );
    assert_still_serving(envoy);
}

/// Kong#14536: without `content-type: application/json` (or with another type) the request
/// is still read: the forced model applies, and the guardrail still checks the prompt.
#[test]
fn a_missing_or_wrong_content_type_bypasses_nothing() {
    let Fixture { mock, envoy } = gateway();
    let _report = envoy.report_on_failure();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut headers = vec![("x-mse-consumer", "kong")];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let marker = format!("Say hi {content_type:?}");
        let body = json!({"model": "forced-anything", "messages": user(json!(marker))});
        let reply = post(&envoy.url(CHAT), body.to_string(), &headers);
        assert_eq!(reply.status, 200, "{content_type:?}: {}", reply.text());
        let sent = sent_with(mock, &marker).expect("the provider was called");
        assert_eq!(
            sent.json()["model"],
            "gpt-4o-mini",
            "{content_type:?}: the forced model"
        );

        let marker = format!("Tell me about the {DENY_WORD} {content_type:?}");
        let body = json!({"model": "gpt-4o", "messages": user(json!(marker))});
        let reply = post(&envoy.url(CHAT), body.to_string(), &headers);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            reply.header("x-ai-content-safety"),
            Some("blocked"),
            "{content_type:?}: the guardrail checked the prompt: {}",
            reply.text()
        );
        assert!(
            sent_with(mock, &marker).is_none(),
            "{content_type:?}: the provider saw it"
        );
    }
    assert_still_serving(envoy);
}

/// The request the provider received whose body contains `marker` (tests share the mock).
fn sent_with(mock: &MockServer, marker: &str) -> Option<e2e::mock::Recorded> {
    let marker = serde_json::to_string(marker).expect("json");
    let marker = &marker[1..marker.len() - 1];
    mock.requests
        .all()
        .into_iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains(marker))
}

/// Envoy answers a normal request, and no plugin has panicked.
fn assert_still_serving(envoy: &Envoy) {
    let ready = e2e::client::get(&envoy.admin_url("/ready")).expect("admin");
    assert_eq!(ready.status, 200);
    let reply = post_json(
        &envoy.url(CHAT),
        &with("messages", user(json!("Are you still there?"))),
        &[("x-mse-consumer", "health")],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let panics = envoy.wasm_panics();
    assert!(
        panics.is_empty(),
        "plugins panicked:\n{}",
        panics.join("\n")
    );
}

/// Sends raw bytes, returns the status and the response head.
fn raw_exchange(port: u16, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}
