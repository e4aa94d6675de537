//! Part of the hostile suite: what a hostile client or a broken provider tries against
//! ai-token-ratelimit. Clients that hang up before the answer starts or in the middle of a
//! stream, providers that report no usage or usage that is not a count, and requests that name
//! no consumer.
//!
//! The provider here answers as the first word of the last user message says (see
//! [`HostileProvider`]), so the tests do not depend on headers reaching it. Its usage, when
//! well-formed, is the plugin's own prompt estimate plus `max_tokens` (a model that uses its
//! whole budget), so a settlement with the reported usage is easy to tell from a guess.

use e2e::client::{post_json, Reply};
use e2e::config::wasm_instance;
use e2e::mock::openai::completion::sse_events;
use e2e::mock::{Provider, Recorded};
use e2e::{Envoy, Gateway, MockServer};
use serde_json::{json, Value};
use std::io::Read;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PLUGIN: &str = "ai-token-ratelimit";
const CLIENT_EDGE: &str = "ai-proxy-client";
/// How long the provider holds the headers of a `hold-headers` answer.
const HOLD_HEADERS: Duration = Duration::from_millis(600);
/// When a client that does not wait for the answer hangs up.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(300);
/// Pieces of a `slow-stream` answer, each `SLOW_PIECE` characters, 100 ms apart.
const SLOW_PIECES: usize = 40;
const SLOW_PIECE: usize = 40;
/// Pieces of a `no-usage` answer: 4,000 characters.
const NO_USAGE_PIECES: usize = 40;
const NO_USAGE_PIECE: usize = 100;
const IN_FLIGHT: usize = 8;

/// A chat provider for the broken behaviours a test asks for, by the first word of the last
/// user message:
///
/// - `hold-headers`: the answer (headers included) comes after [`HOLD_HEADERS`];
/// - `hold-first-token`: stream headers at once, the first piece a minute later;
/// - `slow-stream`: [`SLOW_PIECES`] pieces of [`SLOW_PIECE`] characters, 100 ms apart;
/// - `no-usage`: 4,000 characters streamed and no usage, although the client asked for it;
/// - `usage-float`, `usage-string`, `usage-negative`, `usage-huge`: usage whose counts are
///   floats, strings, negative, or 10^19;
/// - anything else: one word and well-formed usage.
struct HostileProvider;

impl Provider for HostileProvider {
    fn handle(&self, request: &Recorded) -> e2e::mock::Reply {
        let body = request.json();
        let content = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string();
        let directive = content.split_whitespace().next().unwrap_or_default();
        let max_tokens = body["max_tokens"].as_u64().unwrap_or(1);
        let prompt = prompt_tokens(&content);
        let usage = match directive {
            "usage-float" => {
                json!({"prompt_tokens": 9.5, "completion_tokens": 2.0, "total_tokens": 11.5})
            }
            "usage-string" => {
                json!({"prompt_tokens": "9", "completion_tokens": "2", "total_tokens": "11"})
            }
            "usage-negative" => {
                json!({"prompt_tokens": -9, "completion_tokens": -2, "total_tokens": -11})
            }
            "usage-huge" => {
                json!({"prompt_tokens": 10_000_000_000_000_000_000u64, "completion_tokens": 10_000_000_000_000_000_000u64})
            }
            _ => {
                json!({"prompt_tokens": prompt, "completion_tokens": max_tokens, "total_tokens": prompt + max_tokens})
            }
        };
        let (pieces, gap, first_gap) = match directive {
            "slow-stream" => (
                letters(SLOW_PIECES, SLOW_PIECE),
                Duration::from_millis(100),
                Duration::ZERO,
            ),
            "no-usage" => (
                letters(NO_USAGE_PIECES, NO_USAGE_PIECE),
                Duration::ZERO,
                Duration::ZERO,
            ),
            "hold-first-token" => (vec!["late".into()], Duration::ZERO, Duration::from_secs(60)),
            _ => (vec!["Paris".into()], Duration::ZERO, Duration::ZERO),
        };
        let reply = if body["stream"] == json!(true) {
            let reports_usage =
                body["stream_options"]["include_usage"] == json!(true) && directive != "no-usage";
            stream(pieces, gap, first_gap, reports_usage.then_some(usage))
        } else {
            e2e::mock::Reply::json(
                200,
                &json!({"id": "chatcmpl-hostile", "object": "chat.completion", "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": pieces.concat()}, "finish_reason": "stop"}],
                    "usage": usage}),
            )
        };
        if directive == "hold-headers" {
            return e2e::mock::Reply::Held {
                delay: HOLD_HEADERS,
                reply: Box::new(reply),
            };
        }
        reply
    }
}

fn letters(pieces: usize, size: usize) -> Vec<String> {
    (0..pieces)
        .map(|i| {
            let letter = (b'a' + (i % 26) as u8) as char;
            std::iter::repeat_n(letter, size).collect()
        })
        .collect()
}

fn stream(
    pieces: Vec<String>,
    gap: Duration,
    first_gap: Duration,
    usage: Option<Value>,
) -> e2e::mock::Reply {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null})
    };
    let mut chunks = vec![(
        Duration::ZERO,
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
    )];
    for (i, piece) in pieces.into_iter().enumerate() {
        let pause = if i == 0 { first_gap } else { gap };
        chunks.push((pause, chunk(json!({"content": piece}), Value::Null)));
    }
    chunks.push((Duration::ZERO, chunk(json!({}), json!("stop"))));
    if let Some(usage) = usage {
        chunks.push((
            Duration::ZERO,
            json!({"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [], "usage": usage}),
        ));
    }
    let mut events = sse_events(chunks);
    events.push((
        Duration::ZERO,
        bytes::Bytes::from_static(b"data: [DONE]\n\n"),
    ));
    e2e::mock::Reply::event_stream(&[], events)
}

/// The plugin's estimate of a one-message prompt of ASCII text: 3 to prime the reply, 4 for
/// the message, a token per four characters.
fn prompt_tokens(content: &str) -> u64 {
    3 + 4 + content.len().div_ceil(4) as u64
}

/// Text tokens the plugin estimates for streamed pieces.
fn streamed_tokens(pieces: usize, size: usize) -> u64 {
    (pieces * size.div_ceil(4)) as u64
}

/// A route chosen by the `x-case` header, so that paths stay the client APIs' own.
fn route(case: &str, client_edge: bool) -> Value {
    let mut route = json!({
        "name": case,
        "match": {"prefix": "/", "headers": [{"name": "x-case", "string_match": {"exact": case}}]},
        "route": {"cluster": "provider", "timeout": "120s"}
    });
    if !client_edge {
        route["typed_per_filter_config"] = json!({CLIENT_EDGE: {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}});
    }
    route
}

fn per_user(route: &str, keys: Value) -> Value {
    json!({"_match_route_": [route], "rule_name": route,
           "rule_items": [{"limit_by_per_header": "x-user", "limit_keys": keys}]})
}

fn per_consumer(route: &str, extra: Value) -> Value {
    let mut rule = json!({"_match_route_": [route], "rule_name": route,
        "rule_items": [{"limit_by_per_consumer": "", "limit_keys": [{"key": "*", "token_per_day": 3000}]}]});
    rule.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    rule
}

const ANONYMOUS_CASES: [(&str, Option<&str>); 3] = [
    ("anon-missing", None),
    ("anon-empty", Some("")),
    ("anon-blank", Some("   ")),
];

struct Hostile {
    _mock: MockServer,
    envoy: Envoy,
}

/// ai-proxy's client edge (on the routes that need it) and ai-token-ratelimit on the local
/// store, in front of [`HostileProvider`].
fn hostile() -> &'static Hostile {
    static HOSTILE: OnceLock<Hostile> = OnceLock::new();
    HOSTILE.get_or_init(|| {
        let mock = MockServer::start(HostileProvider);
        let mut rules = vec![
            per_user(
                "abort",
                json!([{"key": "*", "token_per_day": 100_000, "max_concurrent_requests": IN_FLIGHT}]),
            ),
            json!({"_match_route_": ["abort-prompt"], "rule_name": "abort-prompt",
                   "abort_before_response": "prompt",
                   "global_threshold": {"token_per_day": 100_000}}),
            per_user("midstream", json!([{"key": "*", "token_per_day": 100_000}])),
            per_user("held", json!([{"key": "*", "token_per_day": 100_000}])),
            per_user("settle", json!([{"key": "*", "token_per_day": 100_000}])),
            per_consumer("deny", json!({"anonymous_consumers": "deny"})),
        ];
        for (case, _) in ANONYMOUS_CASES {
            rules.push(per_consumer(case, json!({})));
        }
        let mut gateway = Gateway::new()
            .filter(wasm_instance("ai-proxy", CLIENT_EDGE, &json!({})))
            .plugin(PLUGIN, json!({"_rules_": rules}))
            .filter(hold_before_upstream())
            .cluster("provider", mock.addr);
        for case in ["abort", "abort-prompt", "midstream", "held", "settle"] {
            gateway = gateway.raw_route(route(case, false));
        }
        for (case, _) in ANONYMOUS_CASES {
            gateway = gateway.raw_route(route(case, false));
        }
        gateway = gateway.raw_route(route("deny", true));
        let envoy = Envoy::start(&gateway.to_json());
        Hostile { _mock: mock, envoy }
    })
}

/// A filter after the plugin that holds requests of the `held` route for [`HOLD_HEADERS`]
/// before they go upstream (a later filter waiting for a callout).
fn hold_before_upstream() -> Value {
    let lua = r#"
function envoy_on_request(handle)
  if handle:headers():get("x-case") == "held" then
    handle:httpCall("provider", {[":method"] = "POST", [":path"] = "/v1/chat/completions",
      [":authority"] = "provider", ["content-type"] = "application/json"},
      '{"model": "m", "messages": [{"role": "user", "content": "hold-headers"}]}', 5000)
  end
end"#;
    json!({"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": lua}}})
}

fn chat(content: &str, max_tokens: u64, stream: bool) -> Value {
    let mut body = json!({"model": "gpt-4o-mini", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}]});
    if stream {
        body["stream"] = json!(true);
        // What ai-proxy's client edge adds to every stream.
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn headers<'a>(case: &'a str, user: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("authorization", "Bearer sk-test"),
        ("x-case", case),
        ("x-user", user),
    ]
}

/// The plugin's log records of `rule`, in the order requests ended.
fn records(envoy: &Envoy, rule: &str) -> Vec<Value> {
    envoy
        .access_log()
        .iter()
        .filter_map(|line| serde_json::from_str(line["ai_token_ratelimit"].as_str()?).ok())
        .filter(|record: &Value| record["rules"] == json!([rule]) || record["rule"] == json!(rule))
        .collect()
}

/// Waits until `rule` has `n` log records, and returns them.
fn wait_records(envoy: &Envoy, rule: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = records(envoy, rule);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} log records of {rule}: {found:#?}",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs one request of `rule` and returns its log record.
fn record_of(envoy: &Envoy, rule: &str, request: impl FnOnce()) -> Value {
    let before = records(envoy, rule).len();
    request();
    wait_records(envoy, rule, before + 1).remove(before)
}

fn tokens(record: &Value, field: &str) -> u64 {
    record[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field}: {record}"))
}

/// A request the client gives up on after [`CLIENT_TIMEOUT`], before the answer starts.
fn abandon(envoy: &Envoy, body: &Value, headers: &[(&str, &str)]) {
    let client = reqwest::blocking::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .no_proxy()
        .build()
        .unwrap();
    let mut request = client.post(envoy.url("/v1/chat/completions")).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let outcome = request.send();
    assert!(
        outcome.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client should have given up: {outcome:?}"
    );
}

/// Starts a stream and returns once its headers arrived; dropping it hangs up.
fn open_stream(
    envoy: &Envoy,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut request = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
        .post(envoy.url("/v1/chat/completions"))
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().unwrap()
}

#[test]
fn clients_hanging_up_before_the_answer_pay_their_reservation_and_free_their_slot() {
    let envoy = &hostile().envoy;
    let _report = envoy.report_on_failure();
    let user = headers("abort", "impatient");
    // ~2,500 prompt tokens each; the provider holds its headers longer than the client waits.
    let content = format!("hold-headers {}", "x".repeat(9_987));
    let reserved = prompt_tokens(&content) + 50;
    let body = chat(&content, 50, false);
    std::thread::scope(|s| {
        for _ in 0..IN_FLIGHT {
            s.spawn(|| abandon(envoy, &body, &user));
        }
    });
    let aborted = wait_records(envoy, "abort", IN_FLIGHT);
    for record in &aborted {
        assert_eq!(tokens(record, "reserved_tokens"), reserved, "{record}");
        assert_eq!(
            tokens(record, "charged_tokens"),
            reserved,
            "an abort before the answer is charged the reservation: {record}"
        );
    }
    // The quota moved by the reservations.
    let probe = post_json(
        &envoy.url("/v1/chat/completions"),
        &chat("plain", 1, false),
        &user,
    );
    assert_eq!(probe.status, 200, "{}", probe.text());
    let probe_reserved = prompt_tokens("plain") + 1;
    assert_eq!(
        probe.remaining_tokens(),
        100_000 - IN_FLIGHT as u64 * reserved - probe_reserved
    );

    // Every slot came back: the in-flight limit admits its eight again, and not a ninth.
    let slow = chat("hold-first-token", 1, true);
    let open: Vec<_> = (0..IN_FLIGHT)
        .map(|_| open_stream(envoy, &slow, &user))
        .collect();
    let statuses: Vec<u16> = open.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, vec![200; IN_FLIGHT]);
    let ninth = post_json(&envoy.url("/v1/chat/completions"), &slow, &user);
    assert_eq!(ninth.status, 429, "{}", ninth.text());
    assert!(ninth.text().contains("concurrent"), "{}", ninth.text());
    drop(open);
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}

#[test]
fn abort_before_response_can_charge_the_prompt_estimate_instead() {
    let envoy = &hostile().envoy;
    let _report = envoy.report_on_failure();
    let content = format!("hold-headers {}", "y".repeat(2_000));
    let record = record_of(envoy, "abort-prompt", || {
        abandon(
            envoy,
            &chat(&content, 500, false),
            &headers("abort-prompt", "p"),
        )
    });
    assert_eq!(
        tokens(&record, "reserved_tokens"),
        prompt_tokens(&content) + 500
    );
    assert_eq!(
        tokens(&record, "charged_tokens"),
        prompt_tokens(&content),
        "{record}"
    );
}

#[test]
fn a_client_leaving_before_its_request_went_upstream_pays_nothing() {
    let envoy = &hostile().envoy;
    let _report = envoy.report_on_failure();
    let record = record_of(envoy, "held", || {
        abandon(envoy, &chat("plain", 500, false), &headers("held", "early"))
    });
    assert_eq!(
        tokens(&record, "reserved_tokens"),
        prompt_tokens("plain") + 500
    );
    assert_eq!(tokens(&record, "charged_tokens"), 0, "{record}");
}

#[test]
fn a_client_leaving_mid_stream_pays_the_prompt_and_the_text_streamed_so_far() {
    let envoy = &hostile().envoy;
    let _report = envoy.report_on_failure();
    let record = record_of(envoy, "midstream", || {
        let mut response = open_stream(
            envoy,
            &chat("slow-stream", 1000, true),
            &headers("midstream", "leaver"),
        );
        assert_eq!(response.status(), 200);
        // Read five pieces (and the role chunk), then hang up.
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while seen.windows(2).filter(|w| w == b"\n\n").count() < 6 {
            let n = response.read(&mut buffer).unwrap();
            assert!(n > 0, "the stream ended early");
            seen.extend_from_slice(&buffer[..n]);
        }
    });
    let prompt = prompt_tokens("slow-stream");
    let charged = tokens(&record, "charged_tokens");
    assert_eq!(tokens(&record, "reserved_tokens"), prompt + 1000);
    assert!(
        charged >= prompt + streamed_tokens(5, SLOW_PIECE)
            && charged < prompt + streamed_tokens(SLOW_PIECES, SLOW_PIECE),
        "charged {charged}: the prompt ({prompt}) plus the text streamed before the client left"
    );
}

#[test]
fn a_stream_without_usage_is_charged_its_text_not_the_reservation() {
    let envoy = &hostile().envoy;
    let _report = envoy.report_on_failure();
    let record = record_of(envoy, "settle", || {
        let reply = post_json(
            &envoy.url("/v1/chat/completions"),
            &chat("no-usage", 100, true),
            &headers("settle", "silent"),
        );
        assert_eq!(reply.status, 200);
        assert!(!reply.text().contains("\"usage\":{"), "{}", reply.text());
    });
    let prompt = prompt_tokens("no-usage");
    assert_eq!(tokens(&record, "reserved_tokens"), prompt + 100);
    assert_eq!(
        tokens(&record, "charged_tokens"),
        prompt + streamed_tokens(NO_USAGE_PIECES, NO_USAGE_PIECE),
        "{record}"
    );
}

#[test]
fn usage_that_is_not_a_count_is_charged_the_reservation() {
    let envoy = &hostile().envoy;
    let _report = envoy.report_on_failure();
    let cases = [
        ("usage-float", false),
        ("usage-string", false),
        ("usage-negative", false),
        ("usage-huge", false),
        ("usage-float", true),
        ("usage-huge", true),
    ];
    for (directive, stream) in cases {
        let record = record_of(envoy, "settle", || {
            let reply = post_json(
                &envoy.url("/v1/chat/completions"),
                &chat(directive, 40, stream),
                &headers("settle", directive),
            );
            assert_eq!(reply.status, 200, "{}", reply.text());
        });
        let reserved = prompt_tokens(directive) + 40;
        assert_eq!(tokens(&record, "reserved_tokens"), reserved);
        assert_eq!(
            tokens(&record, "charged_tokens"),
            reserved,
            "{directive} (stream: {stream}): {record}"
        );
    }
    // The counters still hold ordinary numbers: the next request is admitted and told so.
    let probe = post_json(
        &envoy.url("/v1/chat/completions"),
        &chat("plain", 1, false),
        &headers("settle", "usage-huge"),
    );
    assert_eq!(probe.status, 200, "{}", probe.text());
    assert_eq!(
        probe.remaining_tokens(),
        100_000 - 2 * (prompt_tokens("usage-huge") + 40) - (prompt_tokens("plain") + 1)
    );
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}

fn ask_as(envoy: &Envoy, case: &str, consumer: Option<&str>, path: &str) -> Reply {
    let mut headers = vec![("authorization", "Bearer sk-test"), ("x-case", case)];
    if let Some(consumer) = consumer {
        headers.push(("x-mse-consumer", consumer));
    }
    let mut body = chat("plain", 2900, false);
    if path.ends_with("/messages") {
        headers.push(("anthropic-version", "2023-06-01"));
        body["model"] = json!("claude-sonnet-4-5");
    }
    post_json(&envoy.url(path), &body, &headers)
}

#[test]
fn requests_naming_no_consumer_share_one_anonymous_quota() {
    let envoy = &hostile().envoy;
    let _report = envoy.report_on_failure();
    for (case, consumer) in ANONYMOUS_CASES {
        let first = ask_as(envoy, case, consumer, "/v1/chat/completions");
        assert_eq!(first.status, 200, "{case}: {}", first.text());
        let second = ask_as(envoy, case, consumer, "/v1/chat/completions");
        assert_eq!(
            second.status,
            429,
            "{case}: a second 2,900-token request: {}",
            second.text()
        );
        assert_eq!(second.json()["error"]["code"], "rate_limit_exceeded");
    }
    // One anonymous key for all three: a missing header is refused on the empty one's quota.
    let again = ask_as(envoy, "anon-empty", None, "/v1/chat/completions");
    assert_eq!(again.status, 429, "{}", again.text());
}

#[test]
fn deny_mode_refuses_requests_naming_no_consumer_in_the_clients_api() {
    let envoy = &hostile().envoy;
    let _report = envoy.report_on_failure();
    for (_, consumer) in ANONYMOUS_CASES {
        let openai = ask_as(envoy, "deny", consumer, "/v1/chat/completions");
        assert_eq!(openai.status, 401, "{consumer:?}: {}", openai.text());
        let error = &openai.json()["error"];
        assert_eq!(error["type"], "invalid_request_error", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains("consumer"),
            "{error}"
        );

        let anthropic = ask_as(envoy, "deny", consumer, "/v1/messages");
        assert_eq!(anthropic.status, 401, "{consumer:?}: {}", anthropic.text());
        let body = anthropic.json();
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    }
    let named = ask_as(envoy, "deny", Some("alice"), "/v1/chat/completions");
    assert_eq!(named.status, 200, "{}", named.text());
}
