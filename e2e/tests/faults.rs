//! Failing providers and failing dependencies, through real Envoy with every plugin loaded:
//! the client always gets a terminated answer it can tell from a complete one (an error in its
//! API, or a stream that breaks off or ends with an error event), within the configured
//! timeouts, and the metrics say what happened. Dependencies (moderation, embedding service,
//! Chroma, Webdis) that are up but answer garbage or too slowly get each plugin's failure
//! policy, within its timeout.

use e2e::client::{post_json, post_stream_may_break, Reply, Streamed};
use e2e::config::{provider_cluster, wasm_filter, ProviderEndpoint};
use e2e::mock::faulty::{AlwaysFaulty, FaultyMock, FAULT_HEADER};
use e2e::mock::moderation::Slow;
use e2e::services::{free_port, loopback};
use e2e::{Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const KEY: &str = "sk-provider-faults-0123456789";
const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
/// Route `stalls` cuts a stream after this long without a byte.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// ai-content-safety holds a streamed window at most this long (its default).
const MAX_HOLD: Duration = Duration::from_secs(1);
/// Envoy's `delayed_close_timeout`: an HTTP/1.1 client sees a reset connection close after it.
const DELAYED_CLOSE: Duration = Duration::from_secs(1);
const ENDED_EARLY: &str = "the provider ended the stream early";

struct Providers {
    _mock: MockServer,
    envoy: Envoy,
}

/// The full chain in front of a provider that fails on request (`x-mock-fault`), and a route
/// to a provider that refuses connections.
fn providers() -> &'static Providers {
    static PROVIDERS: OnceLock<Providers> = OnceLock::new();
    PROVIDERS.get_or_init(|| {
        let mock = MockServer::start(FaultyMock::with_key(KEY));
        let edge = json!({"provider": {"id": "openai", "type": "openai", "apiTokens": [KEY]}});
        let cluster = |name: &str, addr| {
            provider_cluster(
                name,
                &[ProviderEndpoint::new(addr, "openai")],
                vec![wasm_filter("ai-proxy", &edge)],
            )
        };
        let envoy = Envoy::start(
            &Gateway::new()
                .plugin_instance("ai-proxy", "ai-proxy-client", json!({}))
                .plugin("ai-statistics", json!({}))
                .plugin("ai-token-ratelimit", json!({"rule_name": "faults", "rule_items": [
                    {"limit_by_per_consumer": "", "limit_keys": [{"key": "*", "token_per_minute": 10_000_000}]}]}))
                .plugin("ai-content-safety", json!({"local": {"denyWords": ["forbidden-term"]}}))
                .plugin("ai-cache", json!({}))
                .raw_route(json!({"name": "stalls", "match": {"prefix": "/stalls/"},
                    "route": {"cluster": "provider", "timeout": "60s", "idle_timeout": format!("{}s", IDLE_TIMEOUT.as_secs())}}))
                .route("refused", "/refused/", "refused")
                .raw_route(json!({"name": "default", "match": {"prefix": "/"},
                    "route": {"cluster": "provider", "timeout": "10s"}}))
                .raw_cluster(cluster("provider", mock.addr))
                .raw_cluster(cluster("refused", loopback(free_port())))
                .to_json(),
        );
        Providers { _mock: mock, envoy }
    })
}

fn request(path: &str, stream: bool, question: &str) -> Value {
    let mut body = json!({"model": "gpt-4o", "stream": stream,
        "messages": [{"role": "user", "content": question}]});
    if path.ends_with(MESSAGES) {
        body["max_tokens"] = json!(100);
    }
    body
}

/// Asks with a fault; each test uses its own consumer, so their metrics never mix.
fn ask(path: &str, fault: &str, stream: bool, consumer: &str) -> (Streamed, Duration) {
    let Providers { envoy, .. } = providers();
    let started = Instant::now();
    let answer = post_stream_may_break(
        &envoy.url(path),
        &request(path, stream, &format!("{fault} {consumer} {path}")),
        &[
            (FAULT_HEADER, fault),
            ("x-mse-consumer", consumer),
            ("anthropic-version", "2023-06-01"),
        ],
    );
    (answer, started.elapsed())
}

/// The error message of a whole answer in the client's API; panics when it is not one.
fn error_message(path: &str, answer: &Streamed) -> String {
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {:?}", answer.body));
    if path.ends_with(MESSAGES) {
        assert_eq!(body["type"], "error", "{body}");
    }
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{path}: no error message: {body}"))
        .to_string()
}

fn requests_with_status(envoy: &Envoy, consumer: &str, status: u16) -> u64 {
    envoy.stat_sum(
        &[&format!(".consumer.{consumer}.status.{status}.")],
        ".metric.requests",
    )
}

fn wait_requests(envoy: &Envoy, consumer: &str, status: u16, n: u64) {
    envoy.wait_for_stats(&format!("{n} requests of {consumer} with {status}"), |_| {
        requests_with_status(envoy, consumer, status) >= n
    });
}

#[test]
fn a_refused_or_dropped_connection_is_a_503_in_the_client_api() {
    let Providers { envoy, .. } = providers();
    let _report = envoy.report_on_failure();
    for api in [CHAT, MESSAGES] {
        for (path, fault) in [
            (format!("/refused{api}"), "none"),
            (api.to_string(), "hangup"),
        ] {
            let (answer, took) = ask(&path, fault, true, "refused");
            assert_eq!(
                answer.status,
                503,
                "{path} {fault}: {}",
                String::from_utf8_lossy(&answer.body)
            );
            let message = error_message(&path, &answer);
            assert!(
                message.contains("upstream connect error or disconnect/reset before headers"),
                "{path} {fault}: {message}"
            );
            assert!(took < Duration::from_secs(2), "{path} {fault}: {took:?}");
        }
    }
    wait_requests(envoy, "refused", 503, 4);
    assert!(envoy.stat("cluster.refused.upstream_cx_connect_fail") >= 2);
}

#[test]
fn a_connection_cut_mid_stream_reaches_the_client_as_a_broken_stream() {
    let Providers { envoy, .. } = providers();
    let _report = envoy.report_on_failure();
    let before = envoy.stat("cluster.provider.upstream_cx_destroy_remote_with_active_rq");
    for api in [CHAT, MESSAGES] {
        let (answer, took) = ask(api, "reset-mid-stream", true, "cut");
        assert_eq!(answer.status, 200);
        // Portkey#1797: never a clean end. The chunked body breaks off (no last chunk), and
        // nothing in it says the answer was complete.
        let cut = answer.cut.as_deref().unwrap_or_else(|| {
            panic!(
                "{api}: the body ended cleanly: {}",
                String::from_utf8_lossy(&answer.body)
            )
        });
        assert!(cut.contains("chunk"), "{api}: {cut}");
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            !text.contains("[DONE]") && !text.contains("message_stop"),
            "{api}: {text}"
        );
        assert!(
            took < DELAYED_CLOSE + MAX_HOLD + Duration::from_secs(1),
            "{api}: {took:?}"
        );
    }
    envoy.wait_for_stats("the upstream resets", |s| {
        s.get("cluster.provider.upstream_cx_destroy_remote_with_active_rq")
            .is_some_and(|n| *n >= before + 2)
    });
    wait_requests(envoy, "cut", 200, 2);
}

#[test]
fn a_stream_that_stalls_is_cut_at_the_idle_timeout() {
    let Providers { envoy, .. } = providers();
    let _report = envoy.report_on_failure();
    for api in [CHAT, MESSAGES] {
        let (answer, took) = ask(&format!("/stalls{api}"), "stall-mid-stream", true, "stall");
        assert_eq!(answer.status, 200);
        assert!(answer.cut.is_some(), "{api}: the stream ended cleanly");
        // What came before the stall reached the client (the guardrail released its window
        // after `maxHoldMs`), then the stream broke off.
        let text = String::from_utf8_lossy(&answer.body);
        assert!(text.contains("Hello"), "{api}: {text}");
        assert!(
            !text.contains("[DONE]") && !text.contains("message_stop"),
            "{api}: {text}"
        );
        assert!(took >= IDLE_TIMEOUT, "{api}: cut after {took:?}");
        let bound = IDLE_TIMEOUT + MAX_HOLD + DELAYED_CLOSE + Duration::from_secs(1);
        assert!(took < bound, "{api}: cut after {took:?}, bound {bound:?}");
    }
    assert!(envoy.stat("http.gateway.downstream_rq_idle_timeout") >= 2);
}

#[test]
fn web_pages_and_garbage_become_errors_or_streams_that_end_with_one() {
    let Providers { envoy, .. } = providers();
    let _report = envoy.report_on_failure();
    // A 200 web page (a proxy's error page) is a 502 in the client's API.
    for api in [CHAT, MESSAGES] {
        for stream in [false, true] {
            let (answer, took) = ask(api, "html", stream, "html");
            assert_eq!(
                answer.status,
                502,
                "{api}: {}",
                String::from_utf8_lossy(&answer.body)
            );
            let message = error_message(api, &answer);
            assert!(message.contains("Bad Gateway"), "{api}: {message}");
            assert!(took < Duration::from_secs(1), "{api}: {took:?}");
        }
    }
    wait_requests(envoy, "html", 502, 4);

    // A 200 stream of bytes that are no SSE ends with an error event: clients raise it rather
    // than take an empty answer for a complete one.
    let (answer, _) = ask(CHAT, "garbage-stream", true, "garbage");
    assert_eq!(answer.status, 200);
    assert!(answer.cut.is_none());
    let data = answer.data();
    assert_eq!(data.len(), 1, "{data:?}");
    let event: Value = serde_json::from_str(&data[0]).expect("an error event");
    assert_eq!(event["error"]["message"], ENDED_EARLY);
    let (answer, _) = ask(MESSAGES, "garbage-stream", true, "garbage");
    let events = answer.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "error");
    assert_eq!(events[0].1["error"]["message"], ENDED_EARLY);

    // A 200 JSON answer that is not JSON cannot be checked: content safety blocks it, and
    // neither client gets the provider's bytes.
    let (answer, _) = ask(CHAT, "garbage-json", false, "garbage");
    assert_eq!(answer.status, 200);
    let body: Value = serde_json::from_slice(&answer.body).expect("a completion");
    assert_eq!(
        body["choices"][0]["finish_reason"], "content_filter",
        "{body}"
    );
    let (answer, _) = ask(MESSAGES, "garbage-json", false, "garbage");
    let body: Value = serde_json::from_slice(&answer.body).expect("a message");
    assert_eq!(body["stop_reason"], "refusal", "{body}");
    assert!(!body.to_string().contains("not json"), "{body}");
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}

/// LiteLLM#22296: a rate-limit error in the middle of a stream ends that stream and leaves
/// Envoy idle (no retry loop, no spinning plugin).
#[test]
fn an_error_mid_stream_ends_the_stream_and_leaves_envoy_idle() {
    let Providers { envoy, .. } = providers();
    let _report = envoy.report_on_failure();
    let (answer, _) = ask(CHAT, "error-mid-stream", true, "midstream");
    assert!(answer.cut.is_none());
    let data = answer.data();
    let last: Value = serde_json::from_str(data.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "rate_limit_exceeded", "{data:?}");
    assert!(
        !data
            .iter()
            .any(|d| d == "[DONE]" || d.contains(ENDED_EARLY)),
        "{data:?}"
    );
    let (answer, _) = ask(MESSAGES, "error-mid-stream", true, "midstream");
    let events = answer.events();
    let (kind, last) = events.last().expect("events");
    assert_eq!(kind, "error", "{events:?}");
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Rate limit"));
    assert!(!events.iter().any(|(k, _)| k == "message_stop"));

    let busy = cpu_seconds_over(envoy.pid(), Duration::from_secs(1));
    assert!(
        busy < 0.3,
        "Envoy used {busy:.2} s of CPU in the second after"
    );
}

/// CPU time (user + system) a process used during `window`.
fn cpu_seconds_over(pid: u32, window: Duration) -> f64 {
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
        // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = ticks();
    std::thread::sleep(window);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks() - before) as f64 / per_second
}

// Dependencies that are up but broken ------------------------------------------------------

/// The policy plugins on their own routes, each dependency pointed at a service that answers a
/// web page (`html`), a JSON object of the wrong shape (`unexpected`), or too late (`slow`).
struct Dependencies {
    _services: Vec<MockServer>,
    provider: MockServer,
    envoy: Envoy,
}

const CALLOUT_TIMEOUT_MS: u64 = 300;

fn dependencies() -> &'static Dependencies {
    static DEPENDENCIES: OnceLock<Dependencies> = OnceLock::new();
    DEPENDENCIES.get_or_init(|| {
        let provider = MockServer::start(OpenAiMock::default());
        let html = MockServer::start(AlwaysFaulty("html"));
        let unexpected = MockServer::start(AlwaysFaulty("unexpected-json"));
        let slow = MockServer::start(Slow {
            inner: OpenAiMock::default(),
            delay: Duration::from_millis(CALLOUT_TIMEOUT_MS * 5),
        });
        let t = CALLOUT_TIMEOUT_MS;
        let moderation = |cluster: &str, policy: &str| json!({"service": {"type": "openai",
            "cluster": cluster, "apiKey": "sk-moderation", "timeout": t, "failurePolicy": policy}});
        let safety = json!({"_rules_": [
            rule("safety-html-open", moderation("html", "open")),
            rule("safety-html-closed", moderation("html", "closed")),
            rule("safety-unexpected-closed", moderation("unexpected", "closed")),
            rule("safety-slow-closed", moderation("slow", "closed")),
        ]});
        let embedding = |cluster: &str| json!({"type": "openai", "serviceName": cluster, "timeout": t, "apiKey": "sk-embedding"});
        let cache = json!({"_rules_": [
            rule("cache-webdis-html", json!({"cache": {"type": "redis", "serviceName": "html", "timeout": t}})),
            rule("cache-webdis-slow", json!({"cache": {"type": "redis", "serviceName": "slow", "timeout": t}})),
            rule("cache-embedding-html", json!({"embedding": embedding("html"), "vector": {"type": "local"}})),
            rule("cache-embedding-slow", json!({"embedding": embedding("slow"), "vector": {"type": "local"}})),
            rule("cache-chroma-html", json!({"embedding": embedding("provider"),
                "vector": {"type": "chroma", "serviceName": "html", "timeout": t, "collectionID": "1344926e-fcd2-4a4a-a8ad-a2153dc7cf3e"}})),
        ]});
        let quota = |cluster: &str, policy: &str| json!({"rule_name": "deps", "failure_policy": policy,
            "redis": {"service_name": cluster, "timeout": t},
            "rule_items": [{"limit_by_per_consumer": "", "limit_keys": [{"key": "*", "token_per_minute": 1_000_000}]}]});
        let ratelimit = json!({"_rules_": [
            rule("quota-html-open", quota("html", "open")),
            rule("quota-html-closed", quota("html", "closed")),
            rule("quota-unexpected-closed", quota("unexpected", "closed")),
        ]});
        let mut gateway = Gateway::new()
            .plugin("ai-token-ratelimit", ratelimit)
            .plugin("ai-content-safety", safety)
            .plugin("ai-cache", cache);
        for route in ROUTES {
            gateway = gateway.route(route, &format!("/{route}/"), "provider");
        }
        let envoy = Envoy::start(
            &gateway
                .cluster("provider", provider.addr)
                .cluster("html", html.addr)
                .cluster("unexpected", unexpected.addr)
                .cluster("slow", slow.addr)
                .to_json(),
        );
        Dependencies {
            _services: vec![html, unexpected, slow],
            provider,
            envoy,
        }
    })
}

const ROUTES: [&str; 12] = [
    "safety-html-open",
    "safety-html-closed",
    "safety-unexpected-closed",
    "safety-slow-closed",
    "cache-webdis-html",
    "cache-webdis-slow",
    "cache-embedding-html",
    "cache-embedding-slow",
    "cache-chroma-html",
    "quota-html-open",
    "quota-html-closed",
    "quota-unexpected-closed",
];

fn rule(route: &str, config: Value) -> Value {
    let mut rule = config;
    rule["_match_route_"] = json!([route]);
    rule
}

/// Asks on a route; the answer and how long it took.
fn ask_route(route: &str, question: &str) -> (Reply, Duration) {
    let Dependencies { envoy, .. } = dependencies();
    let started = Instant::now();
    let reply = post_json(
        &envoy.url(&format!("/{route}{CHAT}")),
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("{question} on {route}")}]}),
        &[
            ("x-mse-consumer", route),
            ("authorization", "Bearer sk-client"),
        ],
    );
    (reply, started.elapsed())
}

/// One callout's timeout, and some room for the rest of the request.
fn within_one_timeout(route: &str, took: Duration) {
    let bound = Duration::from_millis(CALLOUT_TIMEOUT_MS + 700);
    assert!(took < bound, "{route}: {took:?}, bound {bound:?}");
}

fn provider_saw(question: &str) -> bool {
    dependencies()
        .provider
        .requests
        .all()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains(question))
}

#[test]
fn a_broken_moderation_service_gets_the_failure_policy() {
    let Dependencies { envoy, .. } = dependencies();
    let _report = envoy.report_on_failure();
    let (reply, took) = ask_route("safety-html-open", "Is the sky blue");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("x-ai-content-safety"),
        None,
        "served unchecked"
    );
    within_one_timeout("safety-html-open", took);
    // Fail-closed holds whatever the failure: a web page, an answer of the wrong shape (never
    // read as "not flagged"), no answer in time.
    for route in [
        "safety-html-closed",
        "safety-unexpected-closed",
        "safety-slow-closed",
    ] {
        let question = "Is the grass green";
        let (reply, took) = ask_route(route, question);
        assert_eq!(reply.status, 200, "{route}: {}", reply.text());
        assert_eq!(
            reply.header("x-ai-content-safety"),
            Some("blocked"),
            "{route}: {}",
            reply.text()
        );
        assert_eq!(
            reply.json()["choices"][0]["finish_reason"],
            "content_filter"
        );
        assert!(!provider_saw(&format!("{question} on {route}")), "{route}");
        within_one_timeout(route, took);
    }
    envoy.wait_for_stats("callout failures", |_| {
        envoy.stat_sum(&[".backend.openai.reason.error."], ".metric.callout_failed") >= 3
            && envoy.stat_sum(
                &[".backend.openai.reason.timeout."],
                ".metric.callout_failed",
            ) >= 1
    });
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}

#[test]
fn a_broken_cache_store_embedding_service_or_chroma_is_a_miss() {
    let Dependencies { envoy, .. } = dependencies();
    let _report = envoy.report_on_failure();
    for (route, metric) in [
        ("cache-webdis-html", "ai_cache_cache_error"),
        ("cache-webdis-slow", "ai_cache_cache_error"),
        ("cache-embedding-html", "ai_cache_embedding_error"),
        ("cache-embedding-slow", "ai_cache_embedding_error"),
        ("cache-chroma-html", "ai_cache_vector_error"),
    ] {
        let (reply, took) = ask_route(route, "What is the capital of Peru");
        assert_eq!(reply.status, 200, "{route}: {}", reply.text());
        assert_eq!(reply.header("x-ai-cache"), Some("miss"), "{route}");
        within_one_timeout(route, took);
        envoy.wait_for_stats(&format!("{metric} on {route}"), |_| {
            envoy.stat_sum(
                &[&format!(".consumer.{route}.")],
                &format!(".metric.{metric}"),
            ) >= 1
        });
    }
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}

#[test]
fn a_broken_quota_store_gets_the_failure_policy() {
    let Dependencies { envoy, .. } = dependencies();
    let _report = envoy.report_on_failure();
    let (reply, took) = ask_route("quota-html-open", "How tall is Everest");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("x-ratelimit-remaining-tokens"),
        None,
        "nothing is known"
    );
    within_one_timeout("quota-html-open", took);
    for route in ["quota-html-closed", "quota-unexpected-closed"] {
        let question = "How deep is the Mariana trench";
        let (reply, took) = ask_route(route, question);
        assert_eq!(reply.status, 503, "{route}: {}", reply.text());
        assert!(
            reply.json()["error"]["message"].is_string(),
            "{}",
            reply.text()
        );
        assert!(!provider_saw(&format!("{question} on {route}")), "{route}");
        within_one_timeout(route, took);
    }
    envoy.wait_for_stats("store failures", |_| {
        envoy.stat("wasmcustom.token_ratelimit_rule.deps.metric.store_failure") >= 3
    });
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}

// A plugin that panics ------------------------------------------------------------------------

/// What Envoy does with a plugin that panics (a test-only plugin, `e2e/testplugins`), under
/// each `failure_policy`, behind ai-proxy's client edge. Measured on Envoy 1.40:
///
/// - the request whose callback panicked gets a 503 with an empty body, under every policy
///   (Envoy answers it directly; the filters before the failed one, ai-proxy's client edge
///   included, do not see that answer);
/// - `FAIL_CLOSED` (Envoy's default): every later request through that filter gets a 503, for
///   the life of the worker;
/// - `FAIL_OPEN`: later requests go on as if the filter were not there;
/// - `FAIL_RELOAD` (our configs' choice): a new VM is created once the reload backoff has passed
///   (requests before that get a 503), and the plugin serves again;
/// - routes that do not run the filter never notice.
#[test]
fn a_panicking_plugin_under_each_failure_policy() {
    let mock = MockServer::start(OpenAiMock::default());
    let policies = [
        ("reload", "FAIL_RELOAD"),
        ("closed", "FAIL_CLOSED"),
        ("open", "FAIL_OPEN"),
    ];
    let mut gateway = Gateway::new().plugin_instance("ai-proxy", "ai-proxy-client", json!({}));
    for (route, policy) in policies {
        let mut filter =
            e2e::config::wasm_instance("panic-on-demand", &format!("panic-{route}"), &json!({}));
        let config = &mut filter["typed_config"]["config"];
        config["failure_policy"] = json!(policy);
        if policy != "FAIL_RELOAD" {
            config.as_object_mut().unwrap().remove("reload_config");
        }
        gateway = gateway.filter(filter);
    }
    // Each route runs its own instance only; `other` runs none of them.
    let only = |keep: &str| {
        let disabled = json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true});
        let others: serde_json::Map<String, Value> = policies
            .iter()
            .filter(|(route, _)| *route != keep)
            .map(|(route, _)| (format!("panic-{route}"), disabled.clone()))
            .collect();
        Value::Object(others)
    };
    for (route, _) in policies {
        gateway = gateway.raw_route(
            json!({"name": route, "match": {"prefix": format!("/{route}/")},
            "route": {"cluster": "provider"}, "typed_per_filter_config": only(route)}),
        );
    }
    gateway = gateway.raw_route(json!({"name": "other", "match": {"prefix": "/"},
        "route": {"cluster": "provider"}, "typed_per_filter_config": only("none")}));
    // One worker: one VM per instance, so a panic is seen by every later request.
    let envoy = Envoy::start_with(
        &gateway.cluster("provider", mock.addr).to_json(),
        &e2e::EnvoyOptions {
            concurrency: 1,
            ..Default::default()
        },
    );
    let _report = envoy.report_on_failure();
    let chat = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let ask = |route: &str, panic: bool| {
        let mut headers = vec![("authorization", "Bearer sk-client")];
        if panic {
            headers.push(("x-panic", "request"));
        }
        post_json(&envoy.url(&format!("/{route}{CHAT}")), &chat, &headers)
    };
    let other_route_serves = || assert_eq!(ask("other", false).status, 200);

    for (route, policy) in policies {
        let first = ask(route, false);
        assert_eq!(first.status, 200, "{policy}");
        assert_eq!(
            first.header("x-test-plugin-requests"),
            Some("1"),
            "{policy}"
        );

        let panicked = ask(route, true);
        assert_eq!(panicked.status, 503, "{policy}: {}", panicked.text());
        assert!(panicked.body.is_empty(), "{policy}: {}", panicked.text());
        other_route_serves();

        let after = ask(route, false);
        match policy {
            "FAIL_CLOSED" => {
                for _ in 0..3 {
                    assert_eq!(ask(route, false).status, 503, "{policy}: closed for good");
                }
            }
            "FAIL_OPEN" => {
                assert_eq!(after.status, 200, "{policy}");
                assert_eq!(
                    after.header("x-test-plugin-requests"),
                    None,
                    "{policy}: bypassed"
                );
            }
            _ => {
                // A fresh VM (its count starts again) once the backoff has passed.
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut reply = after;
                while reply.status != 200 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    reply = ask(route, false);
                }
                assert_eq!(reply.status, 200, "{policy}: never reloaded");
                assert_eq!(
                    reply.header("x-test-plugin-requests"),
                    Some("1"),
                    "{policy}"
                );
                assert!(envoy.stat("wasm.panic-reload.vm_reload_success") >= 1);
            }
        }
        other_route_serves();
    }
    // Each panic is in Envoy's log (written within 50 ms).
    let deadline = Instant::now() + Duration::from_secs(2);
    let panics = || envoy.log().matches("panicked at").count();
    while panics() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(panics(), 3);
}
