//! ai-token-ratelimit through real Envoy: quotas per consumer (identified by Envoy's own
//! api_key_auth filter), header, IP block and route; several windows at once; reservations
//! settled with the streamed usage; concurrency limits; the local store under two workers; the
//! Redis store through Webdis shared by two Envoys; and a store that is down or slow.
//!
//! The mock's usage is deterministic: a prompt costs 3 + 4 + ⌈characters / 4⌉ per message, and
//! the answer one token per chunk. `QUESTION` with `max_tokens` = chunks = 5 costs exactly
//! `COST` tokens, which is also what the plugin reserves for it.

use e2e::client::{post_json, post_stream, Reply, Streamed};
use e2e::config::api_key_auth;
use e2e::mock::openai::content_pieces;
use e2e::services::redis::RedisWebdis;
use e2e::{paths, Envoy, EnvoyOptions, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const QUESTION: &str = "What is the capital of France?";
/// 3 + 4 + ⌈30 / 4⌉ prompt tokens, 5 completion tokens.
const PROMPT: u64 = 15;
const COST: u64 = PROMPT + 5;
const PLUGIN: &str = "ai-token-ratelimit";

fn chat(max_tokens: Option<u64>) -> Value {
    let mut body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}]});
    if let Some(max) = max_tokens {
        body["max_tokens"] = json!(max);
    }
    body
}

/// A non-streamed chat completion costing `COST` tokens.
fn ask(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("authorization", "Bearer sk-test")];
    all.extend_from_slice(headers);
    post_json(&envoy.url(path), &chat(Some(5)), &all)
}

/// Starts a stream whose first token comes `first_delay_ms` later, and returns as soon as its
/// response headers arrive: the request is in flight until the body is read or dropped.
fn open_stream(
    url: &str,
    max_tokens: Option<u64>,
    headers: &[(&str, &str)],
    first_delay_ms: u64,
) -> reqwest::blocking::Response {
    let mut body = chat(max_tokens);
    body["stream"] = json!(true);
    let mut request = reqwest::blocking::Client::new()
        .post(url)
        .json(&body)
        .header("authorization", "Bearer sk-test")
        .header("x-mock-first-delay-ms", first_delay_ms.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().unwrap()
}

/// Asserts a 429 whose error message says `says`.
fn assert_refused(reply: &Reply, says: &str) {
    assert_eq!(reply.status, 429, "{}", reply.text());
    let message = error_message(reply);
    assert!(message.contains(says), "{message}");
}

fn error_message(reply: &Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Tests count in minute, hour and day windows. One that starts in the last seconds of the
/// shortest window it uses (`period` seconds; days end with an hour) waits for the next, so
/// that no window resets in the middle of it.
fn clear_of_window_end(period: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = period - now % period;
    if left < 10 {
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

/// The first of the plugin's log records (access log field `ai_token_ratelimit`) that `wanted`
/// accepts, waiting for the access log to be written.
fn wait_log_record(envoy: &Envoy, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = envoy.access_log().iter().find_map(|line| {
            let record: Value = serde_json::from_str(line["ai_token_ratelimit"].as_str()?).ok()?;
            wanted(&record).then_some(record)
        });
        if let Some(record) = found {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no such log record: {:#?}",
            envoy.access_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn route(name: &str) -> Value {
    json!({
        "name": name,
        "match": {"prefix": format!("/{name}/")},
        "route": {"cluster": "provider", "timeout": "300s"},
        // Only the consumer route authenticates with API keys.
        "typed_per_filter_config": if name == "consumer" { json!({}) } else { json!({
            "envoy.filters.http.api_key_auth": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}
        })}
    })
}

/// One rule per route (`_rules_`), each used by one test.
fn local_rules() -> Value {
    let per_header = |route: &str, rule: &str, keys: Value| {
        json!({"_match_route_": [route], "rule_name": rule,
               "rule_items": [{"limit_by_per_header": "x-user", "limit_keys": keys}]})
    };
    json!({"_rules_": [
        {"_match_route_": ["consumer"], "rule_name": "per-consumer", "rule_items": [
            {"limit_by_per_consumer": "", "limit_keys": [
                {"key": "regexp:^vip-", "token_per_day": 100 * COST},
                {"key": "*", "token_per_day": 2 * COST}
            ]}
        ]},
        per_header("header", "per-header", json!([{"key": "*", "token_per_day": 2 * COST}])),
        {"_match_route_": ["ip"], "rule_name": "ip-forwarded", "rule_items": [
            {"limit_by_per_ip": "from-header-x-forwarded-for", "limit_keys": [
                {"key": "203.0.113.0/24", "token_per_day": COST},
                {"key": "0.0.0.0/0", "token_per_day": 100 * COST}
            ]}
        ], "rules": [{"rule_name": "ip-peer", "rule_items": [
            {"limit_by_per_ip": "from-remote-addr", "limit_keys": [{"key": "127.0.0.0/8", "token_per_day": 5 * COST}]}
        ]}]},
        per_header("basic", "basic-plan", json!([{"key": "*", "token_per_day": COST}])),
        per_header("premium", "premium-plan", json!([{"key": "*", "token_per_day": 3 * COST}])),
        per_header("windows", "windows", json!([
            {"key": "regexp:^hourly", "token_per_hour": 2 * COST, "token_per_day": 10 * COST, "query_per_day": 10},
            {"key": "*", "token_per_hour": 10 * COST, "token_per_day": 3 * COST}
        ])),
        per_header("stream", "stream", json!([{"key": "*", "token_per_day": 1000}])),
        per_header("concurrency", "concurrency", json!([{"key": "*", "max_concurrent_requests": 2}])),
        per_header("cas", "cas", json!([{"key": "*", "token_per_day": 1_000_000, "query_per_day": 10_000}])),
        {"_match_route_": ["overshoot"], "rule_name": "overshoot", "global_threshold": {"token_per_day": 10 * COST}},
        {"_match_route_": ["uncapped"], "rule_name": "uncapped", "default_max_tokens": 1,
         "global_threshold": {"token_per_day": 10 * (PROMPT + 1)}},
        {"_match_route_": ["refuse"], "rule_name": "refuse", "rejected_code": 403, "rejected_msg": "Quota exhausted: upgrade your plan.",
         "global_threshold": {"query_per_day": 1}}
    ]})
}

const LOCAL_ROUTES: &[&str] = &[
    "consumer",
    "header",
    "ip",
    "basic",
    "premium",
    "windows",
    "stream",
    "concurrency",
    "cas",
    "overshoot",
    "uncapped",
    "refuse",
];

struct Local {
    _mock: MockServer,
    envoy: Envoy,
}

/// One mock and one Envoy (two workers, local store) for the tests of the local store.
fn local() -> &'static Local {
    static LOCAL: OnceLock<Local> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let mock = MockServer::start(OpenAiMock::default());
        let mut gateway = Gateway::new()
            .filter(api_key_auth(&[
                ("key-alice", "alice"),
                ("key-bob", "bob"),
                ("key-carol", "vip-carol"),
            ]))
            .plugin(PLUGIN, local_rules())
            .cluster("provider", mock.addr);
        for name in LOCAL_ROUTES {
            gateway = gateway.raw_route(route(name));
        }
        let envoy = Envoy::start(&gateway.to_json());
        Local { _mock: mock, envoy }
    })
}

#[test]
fn per_consumer_quota_with_envoy_api_key_auth() {
    clear_of_window_end(3600);
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let path = "/consumer/v1/chat/completions";
    let alice = [("x-api-key", "key-alice")];
    let first = ask(envoy, path, &alice);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("40"));
    assert_eq!(first.remaining_tokens(), COST);
    let second = ask(envoy, path, &alice);
    assert_eq!(second.status, 200);
    assert_eq!(
        second.remaining_tokens(),
        0,
        "remaining goes down with every request"
    );

    let refused = ask(envoy, path, &alice);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("content-type"), Some("application/json"));
    let error = refused.json()["error"].clone();
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(
        error_message(&refused).starts_with("Rate limit reached for rule per-consumer on token_per_day: Limit 40, Used 40, Requested 20."),
        "{error}"
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "retry-after {retry}");
    assert_eq!(
        refused.header("x-tokenratelimit-reset"),
        Some(retry.to_string().as_str())
    );
    assert_eq!(refused.header("x-ratelimit-remaining-tokens"), Some("0"));

    // The consumer comes from the key, not from what the client claims.
    let spoofed = ask(
        envoy,
        path,
        &[("x-api-key", "key-alice"), ("x-mse-consumer", "bob")],
    );
    assert_eq!(spoofed.status, 429, "alice cannot spend bob's quota");
    assert_eq!(ask(envoy, path, &[("x-api-key", "key-bob")]).status, 200);
    let carol = ask(envoy, path, &[("x-api-key", "key-carol")]);
    assert_eq!(carol.status, 200);
    assert_eq!(
        carol.header("x-ratelimit-limit-tokens"),
        Some("2000"),
        "vip- consumers have a bigger quota"
    );
    let stranger = ask(envoy, path, &[("x-api-key", "key-nobody")]);
    assert_eq!(stranger.status, 401, "unknown keys never reach the plugin");

    let labels = [("ai_ratelimit_rule", "per-consumer")];
    envoy.wait_prometheus_value("token_ratelimit_rule_metric_admitted", &labels, 4.0);
    envoy.wait_prometheus_value("token_ratelimit_rule_metric_limited", &labels, 2.0);
    envoy.wait_prometheus_value(
        "token_ratelimit_rule_metric_charged_tokens",
        &labels,
        4.0 * COST as f64,
    );
}

#[test]
fn per_header_quota_counts_each_value_apart() {
    clear_of_window_end(3600);
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let path = "/header/v1/chat/completions";
    let team = |name| [("x-user", name)];
    assert_eq!(ask(envoy, path, &team("red")).status, 200);
    assert_eq!(ask(envoy, path, &team("red")).status, 200);
    let refused = ask(envoy, path, &team("red"));
    assert_refused(&refused, "rule per-header");
    assert_eq!(
        ask(envoy, path, &team("blue")).status,
        200,
        "another value, another quota"
    );
    // A request without the header matches no key: no limit applies, no headers are added.
    let unlimited = ask(envoy, path, &[]);
    assert_eq!(unlimited.status, 200);
    assert_eq!(unlimited.header("x-ratelimit-limit-tokens"), None);
}

#[test]
fn per_ip_quotas_by_cidr_from_a_header_and_from_the_peer() {
    clear_of_window_end(3600);
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let path = "/ip/v1/chat/completions";
    let from = |ip| [("x-forwarded-for", ip)];
    // The first address of x-forwarded-for; 203.0.113.0/24: one request's worth per address.
    assert_eq!(ask(envoy, path, &from("203.0.113.5, 10.0.0.1")).status, 200);
    let refused = ask(envoy, path, &from("203.0.113.5"));
    assert_refused(&refused, "rule ip-forwarded");
    assert_eq!(
        ask(envoy, path, &from("203.0.113.6")).status,
        200,
        "each address counts apart"
    );
    // Outside the block: the 0.0.0.0/0 key's bigger quota.
    assert_eq!(ask(envoy, path, &from("198.51.100.7")).status, 200);
    assert_eq!(ask(envoy, path, &from("198.51.100.7")).status, 200);

    // Without x-forwarded-for the client address is the connection's peer, 127.0.0.1, in
    // 127.0.0.0/8: five requests' worth (Envoy takes the address from x-forwarded-for above,
    // as `use_remote_address` is off here; those requests are outside 127.0.0.0/8).
    for _ in 0..5 {
        assert_eq!(ask(envoy, path, &[]).status, 200);
    }
    let peer = ask(envoy, path, &[]);
    assert_refused(&peer, "rule ip-peer on token_per_day: Limit 100, Used 100");
}

#[test]
fn per_route_rules_give_each_route_its_quota() {
    clear_of_window_end(3600);
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let user = [("x-user", "dana")];
    assert_eq!(ask(envoy, "/basic/v1/chat/completions", &user).status, 200);
    let basic = ask(envoy, "/basic/v1/chat/completions", &user);
    assert_refused(&basic, "rule basic-plan");
    // Same user on the premium route: its own rule and counters.
    let premium = ask(envoy, "/premium/v1/chat/completions", &user);
    assert_eq!(premium.status, 200);
    assert_eq!(premium.header("x-ratelimit-limit-tokens"), Some("60"));
    assert_eq!(premium.remaining_tokens(), 2 * COST);
}

#[test]
fn every_window_must_admit_and_the_tightest_names_the_headers() {
    clear_of_window_end(3600);
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let path = "/windows/v1/chat/completions";
    // `hourly…`: 2 requests an hour, 10 a day, and at most 10 requests a day.
    let hourly = [("x-user", "hourly-1")];
    let first = ask(envoy, path, &hourly);
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("x-ratelimit-limit-tokens"),
        Some("40"),
        "the hour window is tighter"
    );
    assert_eq!(first.remaining_tokens(), COST);
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("9"));
    let reset = first.header("x-ratelimit-reset-tokens").unwrap();
    let unit = |c: char| c.is_ascii_digit() || "hms.".contains(c);
    assert!(
        reset.ends_with('s') && reset.chars().all(unit),
        "OpenAI duration format: {reset}"
    );
    assert_eq!(ask(envoy, path, &hourly).status, 200);
    let refused = ask(envoy, path, &hourly);
    assert_refused(&refused, "on token_per_hour");

    // Everyone else: 10 requests an hour but 3 a day; the day refuses first.
    let daily = [("x-user", "daily-1")];
    let first = ask(envoy, path, &daily);
    assert_eq!(
        first.header("x-ratelimit-limit-tokens"),
        Some("60"),
        "the day window is tighter"
    );
    assert_eq!(ask(envoy, path, &daily).status, 200);
    assert_eq!(ask(envoy, path, &daily).status, 200);
    let refused = ask(envoy, path, &daily);
    assert_refused(&refused, "on token_per_day: Limit 60, Used 60");
}

#[test]
fn reservations_are_settled_with_the_streamed_usage() {
    clear_of_window_end(3600);
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let url = envoy.url("/stream/v1/chat/completions");
    let headers = [("authorization", "Bearer sk-test"), ("x-user", "streamer")];
    // Reserves 15 + 50; the provider reports 15 + 5.
    let mut body = chat(Some(50));
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let streamed = post_stream(&url, &body, &headers);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("x-ratelimit-remaining-tokens"), Some("935"));
    let usage = streamed.chunks().last().unwrap()["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(usage, COST);
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));

    // The next request sees the usage, not the reservation, taken from the quota.
    let next = ask(
        envoy,
        "/stream/v1/chat/completions",
        &[("x-user", "streamer")],
    );
    assert_eq!(next.remaining_tokens(), 1000 - COST - COST);

    // No usage in the stream: the streamed text is counted (4 characters a token per chunk).
    body["stream_options"] = json!({"include_usage": false});
    let streamed = post_stream(&url, &body, &headers);
    assert_eq!(streamed.status, 200);
    assert!(streamed.chunks().iter().all(|c| c["usage"].is_null()));
    let text_tokens: u64 = content_pieces(5, None)
        .map(|p| p.len().div_ceil(4) as u64)
        .sum();
    let next = ask(
        envoy,
        "/stream/v1/chat/completions",
        &[("x-user", "streamer")],
    );
    assert_eq!(
        next.remaining_tokens(),
        1000 - 2 * COST - (PROMPT + text_tokens) - COST
    );

    // The log record of each request: reserved and charged.
    let streamed = |charged: u64| {
        move |r: &Value| r["rules"] == json!(["stream"]) && r["charged_tokens"] == charged
    };
    let record = wait_log_record(envoy, streamed(COST));
    assert_eq!(record["decision"], "admitted");
    wait_log_record(envoy, streamed(PROMPT + text_tokens));
    wait_log_record(envoy, |r| {
        r["rules"] == json!(["stream"]) && r["reserved_tokens"] == PROMPT + 50
    });
}

#[test]
fn malformed_requests_are_refused_naming_the_field() {
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let url = envoy.url("/stream/v1/chat/completions");
    let headers = [("authorization", "Bearer sk-test"), ("x-user", "sloppy")];
    let reply = post_json(
        &url,
        &json!({"messages": [], "max_tokens": "many"}),
        &headers,
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["error"]["param"], "max_tokens");
    let reply = e2e::client::post(
        &url,
        "{\"messages\": [",
        &[("content-type", "application/json"), ("x-user", "sloppy")],
    );
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}

#[test]
fn concurrency_limit_counts_requests_in_flight() {
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let url = envoy.url("/concurrency/v1/chat/completions");
    let mut body = chat(None);
    body["stream"] = json!(true);
    let slow = [
        ("authorization", "Bearer sk-test"),
        ("x-user", "flood"),
        ("x-mock-first-delay-ms", "1500"),
    ];
    let started = Instant::now();
    let replies: Vec<(u16, Duration)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..5)
            .map(|_| {
                s.spawn(|| {
                    let r = post_stream(&url, &body, &slow);
                    (r.status, started.elapsed())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let admitted: Vec<_> = replies.iter().filter(|(s, _)| *s == 200).collect();
    let refused: Vec<_> = replies.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!((admitted.len(), refused.len()), (2, 3), "{replies:?}");
    assert!(
        refused
            .iter()
            .all(|(_, t)| *t < Duration::from_millis(1500)),
        "refused at once, not after the slow ones: {replies:?}"
    );

    // Slots come back when requests end, also when the client goes away mid-stream.
    for _ in 0..2 {
        let response = open_stream(&url, None, &[("x-user", "flood")], 60_000);
        assert_eq!(response.status(), 200);
        drop(response); // hang up before the first token
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fast = [("authorization", "Bearer sk-test"), ("x-user", "flood")];
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| post_stream(&url, &body, &fast).status);
            let b = s.spawn(|| post_stream(&url, &body, &fast).status);
            (a.join().unwrap(), b.join().unwrap())
        });
        if (a, b) == (200, 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slots of aborted requests never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fifty_concurrent_requests_never_overshoot_a_quota_of_ten() {
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let (admitted, spent) = flood(&[envoy], "/overshoot/v1/chat/completions", Some(5));
    assert_eq!(admitted, 10, "the quota admits exactly ten");
    assert!(spent <= 10 * COST, "spent {spent} of {}", 10 * COST);

    // Requests without max_tokens reserve `default_max_tokens` (1 here) for their answer but get
    // 5 tokens: the overshoot is bounded by what the admitted reservations left out.
    let (admitted, spent) = flood(&[envoy], "/uncapped/v1/chat/completions", None);
    let quota = 10 * (PROMPT + 1);
    assert_eq!(admitted, 10);
    assert!(
        spent <= quota + admitted * (COST - (PROMPT + 1)),
        "spent {spent} of {quota}"
    );
}

/// Fires 50 concurrent streams (spread over `envoys`) that each wait a second before their first
/// token, so that all are in flight together; returns how many were admitted and the tokens
/// they spent.
fn flood(envoys: &[&Envoy], path: &str, max_tokens: Option<u64>) -> (u64, u64) {
    let mut body = chat(max_tokens);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let headers = [
        ("authorization", "Bearer sk-test"),
        ("x-mock-first-delay-ms", "1000"),
    ];
    let replies: Vec<Streamed> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..50)
            .map(|i| {
                let url = envoys[i % envoys.len()].url(path);
                let (body, headers) = (&body, &headers);
                s.spawn(move || post_stream(&url, body, headers))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let admitted: Vec<&Streamed> = replies.iter().filter(|r| r.status == 200).collect();
    let refused = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(
        admitted.len() + refused,
        50,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let spent = admitted
        .iter()
        .map(|r| {
            r.chunks().last().unwrap()["usage"]["total_tokens"]
                .as_u64()
                .unwrap()
        })
        .sum();
    (admitted.len() as u64, spent)
}

#[test]
fn two_workers_lose_no_update() {
    clear_of_window_end(3600);
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let path = "/cas/v1/chat/completions";
    let before = envoy.stats();
    let requests = 200u64;
    std::thread::scope(|s| {
        for _ in 0..20 {
            s.spawn(|| {
                // A client of its own per thread: its own connections, spread over the workers.
                let client = reqwest::blocking::Client::new();
                for _ in 0..requests / 20 {
                    let reply = client
                        .post(envoy.url(path))
                        .json(&chat(Some(5)))
                        .header("authorization", "Bearer sk-test")
                        .header("x-user", "cas")
                        .send()
                        .unwrap();
                    assert_eq!(reply.status(), 200);
                }
            });
        }
    });
    // Both workers served requests...
    let after = envoy.stats();
    let served = |worker: &str| {
        after
            .iter()
            .filter(|(k, _)| {
                k.starts_with("listener.127.0.0.1_")
                    && k.ends_with(&format!("{worker}.downstream_cx_total"))
            })
            .map(|(k, v)| v - before.get(k).copied().unwrap_or(0))
            .sum::<u64>()
    };
    assert!(
        served("worker_0") > 0 && served("worker_1") > 0,
        "connections per worker: {} / {}",
        served("worker_0"),
        served("worker_1")
    );
    // ...and every reservation and settlement of both is in the counters.
    let last = ask(envoy, path, &[("x-user", "cas")]);
    assert_eq!(
        last.header("x-ratelimit-remaining-requests"),
        Some((10_000 - requests - 1).to_string().as_str())
    );
    assert_eq!(last.remaining_tokens(), 1_000_000 - (requests + 1) * COST);
}

#[test]
fn configured_status_and_message_for_refusals() {
    let envoy = &local().envoy;
    let _report = envoy.report_on_failure();
    let first = ask(envoy, "/refuse/v1/chat/completions", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("0"));
    let refused = ask(envoy, "/refuse/v1/chat/completions", &[]);
    assert_eq!(refused.status, 403);
    assert_eq!(
        error_message(&refused),
        "Quota exhausted: upgrade your plan."
    );
    assert!(refused.header("retry-after").is_some());
    let record = wait_log_record(envoy, |r| r["rule"] == "refuse");
    assert_eq!(record["decision"], "limited");
    assert_eq!(record["limit"], "query_per_day");
}

#[test]
fn invalid_configuration_is_refused_with_its_path() {
    let config = json!({"rule_name": "r", "rule_items": [{"limit_by_per_ip": "from-remote-addr", "limit_keys": [{"key": "10.0.0.0/33", "token_per_minute": 1}]}]});
    let gateway = Gateway::new()
        .plugin(PLUGIN, config)
        .cluster("provider", "127.0.0.1:9".parse().unwrap());
    let log = Envoy::try_start_with(&gateway.to_json(), &EnvoyOptions::default())
        .err()
        .expect("Envoy must refuse the config");
    assert!(log.contains("rule_items[0].limit_keys[0].key"), "{log}");
}

// ---- The Redis store -------------------------------------------------------------------------

fn redis_templates() -> (std::path::PathBuf, std::path::PathBuf) {
    let configs = paths::repo_root().join("envoy-configs");
    (
        configs.join("ai-token-ratelimit-redis.conf"),
        configs.join("ai-token-ratelimit-webdis.json"),
    )
}

/// Redis and Webdis from the shipped configs.
fn start_redis() -> RedisWebdis {
    let (redis, webdis) = redis_templates();
    RedisWebdis::start(&redis, &webdis)
}

struct Cluster {
    redis: RedisWebdis,
    _mock: MockServer,
    a: Envoy,
    b: Envoy,
}

/// One Redis (through Webdis) and two Envoys sharing it, each with the same rules.
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let redis = start_redis();
        let mock = MockServer::start(OpenAiMock::default());
        let per_header = |route: &str, rule: &str, keys: Value| {
            json!({"_match_route_": [route], "rule_name": rule,
                   "rule_items": [{"limit_by_per_header": "x-user", "limit_keys": keys}]})
        };
        let config = json!({
            "redis": {"service_name": "webdis", "timeout": 1000},
            "_rules_": [
                per_header("shared", "redis-shared", json!([{"key": "*", "token_per_day": 3 * COST, "query_per_day": 100}])),
                per_header("stream", "redis-stream", json!([{"key": "*", "token_per_day": 1000}])),
                per_header("concurrency", "redis-concurrency", json!([{"key": "*", "max_concurrent_requests": 2}])),
                {"_match_route_": ["overshoot"], "rule_name": "redis-overshoot", "global_threshold": {"token_per_day": 10 * COST}}
            ]
        });
        let envoy = || {
            let mut gateway = Gateway::new()
                .plugin(PLUGIN, config.clone())
                .cluster("provider", mock.addr)
                .cluster("webdis", redis.webdis);
            for name in ["shared", "stream", "concurrency", "overshoot"] {
                gateway = gateway.route(name, &format!("/{name}/"), "provider");
            }
            Envoy::start(&gateway.to_json())
        };
        let (a, b) = (envoy(), envoy());
        Cluster {
            redis,
            _mock: mock,
            a,
            b,
        }
    })
}

#[test]
fn two_envoys_share_one_quota_through_redis() {
    clear_of_window_end(3600);
    let Cluster { a, b, .. } = cluster();
    let (_ra, _rb) = (a.report_on_failure(), b.report_on_failure());
    let path = "/shared/v1/chat/completions";
    let user = [("x-user", "shared-1")];
    let first = ask(a, path, &user);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.remaining_tokens(), 2 * COST);
    let second = ask(b, path, &user);
    assert_eq!(second.status, 200);
    assert_eq!(second.remaining_tokens(), COST, "B sees what A spent");
    assert_eq!(second.header("x-ratelimit-remaining-requests"), Some("98"));
    assert_eq!(ask(a, path, &user).status, 200);
    let refused = ask(b, path, &user);
    assert_refused(
        &refused,
        "rule redis-shared on token_per_day: Limit 60, Used 60",
    );
    assert_eq!(ask(a, path, &user).status, 429);
    assert_eq!(ask(b, path, &[("x-user", "shared-2")]).status, 200);
    // Each Envoy refused one.
    for envoy in [a, b] {
        let labels = [("ai_ratelimit_rule", "redis-shared")];
        envoy.wait_prometheus_value("token_ratelimit_rule_metric_limited", &labels, 1.0);
    }
}

#[test]
fn fifty_concurrent_requests_on_two_envoys_never_overshoot() {
    let Cluster { a, b, .. } = cluster();
    let (_ra, _rb) = (a.report_on_failure(), b.report_on_failure());
    let (admitted, spent) = flood(&[a, b], "/overshoot/v1/chat/completions", Some(5));
    assert_eq!(admitted, 10, "the shared quota admits exactly ten");
    assert!(spent <= 10 * COST, "spent {spent}");
}

#[test]
fn streamed_usage_settles_the_shared_counters() {
    clear_of_window_end(3600);
    let Cluster { a, b, .. } = cluster();
    let (_ra, _rb) = (a.report_on_failure(), b.report_on_failure());
    let mut body = chat(Some(50));
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let headers = [
        ("authorization", "Bearer sk-test"),
        ("x-user", "redis-streamer"),
    ];
    let streamed = post_stream(&a.url("/stream/v1/chat/completions"), &body, &headers);
    assert_eq!(streamed.status, 200);
    assert_eq!(
        streamed.header("x-ratelimit-remaining-tokens"),
        Some("935"),
        "reserved 65"
    );
    // Settlements reach Redis in the next batch (every 100 ms): B soon sees 20 spent, not 65.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut expected = 1000 - COST - COST;
    loop {
        let next = ask(
            b,
            "/stream/v1/chat/completions",
            &[("x-user", "redis-streamer")],
        );
        assert_eq!(next.status, 200);
        if next.remaining_tokens() == expected {
            break;
        }
        expected -= COST;
        assert!(
            Instant::now() < deadline,
            "the stream's usage never reached Redis: {:?}",
            next.headers
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn concurrency_limit_holds_across_envoys() {
    let Cluster { a, b, .. } = cluster();
    let (_ra, _rb) = (a.report_on_failure(), b.report_on_failure());
    let start = |envoy: &Envoy, delay: u64| {
        let url = envoy.url("/concurrency/v1/chat/completions");
        open_stream(&url, None, &[("x-user", "redis-flood")], delay)
    };
    let on_a = start(a, 800);
    let on_b = start(b, 800);
    assert_eq!((on_a.status().as_u16(), on_b.status().as_u16()), (200, 200));
    let third = start(a, 0);
    assert_eq!(
        third.status().as_u16(),
        429,
        "two in flight, one on each Envoy"
    );
    assert_eq!(third.headers()["retry-after"], "1");
    drop(third);
    let (_, _) = (on_a.text().unwrap(), on_b.text().unwrap());
    // Both ended; their slots come back with the next settlement batch.
    let deadline = Instant::now() + Duration::from_secs(5);
    while start(b, 0).status().as_u16() != 200 {
        assert!(Instant::now() < deadline, "slots never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn webdis_and_redis_allow_only_what_the_plugin_sends() {
    let Cluster { redis, .. } = cluster();
    assert_eq!(
        redis.command_status("SET/aigw:rl:x/1"),
        403,
        "Webdis refuses anything but EVAL"
    );
    assert_eq!(redis.command_status("FLUSHALL"), 403);
    let escape = redis.eval("return redis.call('FLUSHALL')", &[], &[]);
    assert!(
        escape[1]
            .as_str()
            .unwrap_or_default()
            .contains("can't run this command"),
        "{escape}"
    );
    let other_key = redis.eval("return redis.call('GET', KEYS[1])", &["secret"], &[]);
    assert!(
        other_key[1].as_str().unwrap_or_default().contains("NOPERM"),
        "{other_key}"
    );
    let own_key = redis.eval("return redis.call('GET', KEYS[1])", &["aigw:rl:probe"], &[]);
    assert_eq!(own_key, Value::Null);
}

#[test]
fn shipped_redis_config_shares_quotas_and_answers_anthropic_clients_in_their_shape() {
    clear_of_window_end(60);
    let redis = &cluster().redis;
    let mock = MockServer::start(OpenAiMock::with_key("sk-provider"));
    let template = std::fs::read_to_string(
        paths::repo_root().join("envoy-configs/ai-token-ratelimit-redis.yaml"),
    )
    .unwrap();
    let wasm = paths::plugin_wasm(PLUGIN);
    paths::plugin_wasm("ai-proxy");
    let start = || {
        let dir = paths::scratch_dir("shipped-redis");
        let vars = [
            ("PORT", "0".to_string()),
            ("ADMIN_PORT", "0".to_string()),
            ("ACCESS_LOG", dir.join("access.log").display().to_string()),
            ("WASM_DIR", wasm.parent().unwrap().display().to_string()),
            ("WEBDIS_PORT", redis.webdis.port().to_string()),
            ("PROVIDER_PORT", mock.port().to_string()),
            ("PROVIDER_KEY", "sk-provider".to_string()),
        ];
        let config = e2e::config::render(&template, &vars).unwrap();
        let path = dir.join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        Envoy::start_file(
            &path,
            &EnvoyOptions {
                work_dir: Some(dir),
                ..Default::default()
            },
        )
    };
    let (a, b) = (start(), start());
    let (_ra, _rb) = (a.report_on_failure(), b.report_on_failure());

    // One consumer, 2,000 tokens a minute: a request reserving 1,015 on A leaves B no room for
    // another while it runs.
    let url = a.url("/v1/chat/completions");
    let slow = open_stream(&url, Some(1000), &[("x-api-key", "key-alice")], 800);
    assert_eq!(slow.status().as_u16(), 200);
    let on_b = post_json(
        &b.url("/v1/chat/completions"),
        &chat(Some(1000)),
        &[("x-api-key", "key-alice")],
    );
    assert_eq!(on_b.status, 429, "{}", on_b.text());
    assert_eq!(
        post_json(
            &b.url("/v1/chat/completions"),
            &chat(Some(1000)),
            &[("x-api-key", "key-bob")]
        )
        .status,
        200
    );
    assert!(slow.text().unwrap().contains("[DONE]"));

    // An Anthropic client asking more than the quota could ever give gets Anthropic's error.
    let message = post_json(
        &a.url("/v1/messages"),
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 5000, "messages": [{"role": "user", "content": QUESTION}]}),
        &[
            ("x-api-key", "key-bob"),
            ("anthropic-version", "2023-06-01"),
        ],
    );
    assert_eq!(message.status, 429, "{}", message.text());
    assert_eq!(message.json()["type"], "error");
    assert_eq!(message.json()["error"]["type"], "rate_limit_error");
    assert!(message.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Request too large for rule per-consumer"));
    assert!(message.header("retry-after").is_some());
    assert_eq!(
        mock.requests
            .all()
            .iter()
            .filter(|r| r.header("authorization") == Some("Bearer sk-provider"))
            .count(),
        2
    );
}

#[test]
fn a_store_down_or_frozen_fails_open_or_closed_within_its_timeout() {
    let mut redis = start_redis();
    let mock = MockServer::start(OpenAiMock::default());
    let limits =
        json!({"global_threshold": {"token_per_day": 1_000_000, "max_concurrent_requests": 100}});
    let rule = |route: &str, extra: Value| {
        let mut rule = json!({"_match_route_": [route], "rule_name": route, "redis": {"service_name": "webdis", "timeout": 300}});
        for (k, v) in limits
            .as_object()
            .unwrap()
            .iter()
            .chain(extra.as_object().unwrap())
        {
            rule[k] = v.clone();
        }
        rule
    };
    let config = json!({"_rules_": [
        rule("open", json!({})),
        rule("closed", json!({"failure_policy": "closed"})),
        rule("refused", json!({"redis": {"service_name": "nothing-listens", "timeout": 300}})),
        rule("unknown", json!({"redis": {"service_name": "no-such-cluster", "timeout": 300}})),
        // Decided from the headers alone: the body must wait for the decision too.
        rule("requests", json!({"global_threshold": {"query_per_day": 100}, "failure_policy": "closed"}))
    ]});
    let mut gateway = Gateway::new()
        .plugin(PLUGIN, config)
        .cluster("provider", mock.addr)
        .cluster("webdis", redis.webdis)
        .cluster("nothing-listens", "127.0.0.1:9".parse().unwrap());
    for name in ["open", "closed", "refused", "unknown", "requests"] {
        gateway = gateway.route(name, &format!("/{name}/"), "provider");
    }
    let envoy = Envoy::start(&gateway.to_json());
    let _report = envoy.report_on_failure();
    let timed = |route: &str| {
        let started = Instant::now();
        let reply = ask(&envoy, &format!("/{route}/v1/chat/completions"), &[]);
        (reply, started.elapsed())
    };
    assert_eq!(timed("open").0.status, 200, "Redis up");

    // A frozen store: no answer within the 300 ms timeout.
    redis.freeze_redis();
    let (open, took) = timed("open");
    assert_eq!(open.status, 200, "fails open");
    assert!(
        took < Duration::from_secs(3),
        "waited {took:?} for a frozen store"
    );
    assert_eq!(
        open.header("x-ratelimit-limit-tokens"),
        None,
        "nothing is known about the quota"
    );
    let (closed, took) = timed("closed");
    assert_eq!(closed.status, 503, "fails closed");
    assert!(
        took < Duration::from_secs(3),
        "waited {took:?} for a frozen store"
    );
    assert_eq!(
        closed.json()["error"]["message"],
        "The rate limit service is unavailable."
    );
    assert_eq!(timed("requests").0.status, 503);
    let sent = |route: &str| {
        mock.requests
            .all()
            .iter()
            .filter(|r| r.path.starts_with(route))
            .count()
    };
    assert_eq!(
        sent("/closed/") + sent("/requests/"),
        0,
        "nothing went upstream undecided"
    );
    redis.thaw_redis();

    // A request admitted while Redis is up, whose settlement finds it stopped.
    let running = open_stream(&envoy.url("/open/v1/chat/completions"), Some(5), &[], 500);
    assert_eq!(running.status().as_u16(), 200);
    assert!(running.headers().get("x-ratelimit-limit-tokens").is_some());
    redis.stop_redis();
    assert!(running.text().unwrap().contains("[DONE]"));

    // Redis stopped: Webdis answers errors. Webdis unreachable. A cluster that does not exist.
    for route in ["open", "refused", "unknown"] {
        let (reply, took) = timed(route);
        assert_eq!(reply.status, 200, "{route}: fails open");
        assert!(took < Duration::from_secs(3), "{route}: waited {took:?}");
    }
    assert_eq!(timed("closed").0.status, 503);

    let failures = |rule: &str| {
        envoy.stat(&format!(
            "wasmcustom.token_ratelimit_rule.{rule}.metric.store_failure"
        ))
    };
    envoy.wait_for_stats("store failures", |_| {
        failures("open") == 2
            && failures("closed") == 2
            && failures("refused") == 1
            && failures("unknown") == 1
    });
    envoy.wait_for_stats("the lost settlement", |s| {
        s.get("wasmcustom.token_ratelimit.metric.settle_failure")
            .copied()
            .unwrap_or(0)
            >= 1
    });
    let log = envoy.log();
    assert!(
        log.contains("quota store failed") && log.contains("request let through unchecked"),
        "{log}"
    );
    assert!(log.contains("request refused"));
    assert!(log.contains("Redis corrections lost"));
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}
