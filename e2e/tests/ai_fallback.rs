//! Failover through real Envoy: a route retries across the priorities of a provider chain
//! (OpenAI-format primary, Anthropic-format backup, OpenAI-format reserve), ai-proxy
//! translates each attempt, and
//! ai-fallback turns errors hidden in 200s into retries, skips providers whose circuit is open,
//! names the provider that served, and lists every attempt when all failed.

use bytes::Bytes;
use e2e::client::{post_json, post_stream};
use e2e::config::{fallback_route, provider_cluster, wasm_filter, ProviderEndpoint};
use e2e::mock::openai::content_pieces;
use e2e::mock::{Provider, Recorded, Reply};
use e2e::{python, AnthropicMock, Envoy, EnvoyOptions, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PRIMARY_KEY: &str = "sk-primary-0123456789";
const BACKUP_KEY: &str = "sk-ant-backup-0123456789";
const RESERVE_KEY: &str = "sk-reserve-0123456789";

/// How the primary misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Status(u16),
    /// Silent for longer than the per-try timeout.
    Stall,
    /// A 200 whose JSON body is an error (or, for streams, whose first event is).
    ErrorIn200,
    /// 400 context_length_exceeded.
    TooLong,
    /// Two content chunks, then a rate-limit error event (the answer has already begun).
    ErrorMidStream,
}

/// The OpenAI mock with a switchable fault.
struct FaultyOpenAi {
    fault: Arc<Mutex<Fault>>,
    inner: OpenAiMock,
}

impl Provider for FaultyOpenAi {
    fn handle(&self, request: &Recorded) -> Reply {
        let stream = request.json()["stream"] == true;
        match *self.fault.lock().unwrap() {
            Fault::None => self.inner.handle(request),
            Fault::Status(status) => e2e::mock::openai::error(status, &format!("primary failing with {status}"), None, None),
            Fault::Stall => Reply::Stream {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                pieces: Box::new(std::iter::once((Duration::from_secs(5), Bytes::from_static(b"data: [DONE]\n\n")))),
            },
            Fault::ErrorIn200 if stream => Reply::Stream {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                pieces: Box::new(
                    [
                        Bytes::from_static(b"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n"),
                        Bytes::from_static(b"data: [DONE]\n\n"),
                    ]
                    .into_iter()
                    .map(|b| (Duration::ZERO, b)),
                ),
            },
            Fault::ErrorIn200 => Reply::json(200, &json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}})),
            Fault::ErrorMidStream => Reply::Stream {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                pieces: Box::new(
                    [
                        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Paris \"},\"finish_reason\":null}]}\n\n",
                        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"is \"},\"finish_reason\":null}]}\n\n",
                        "data: {\"error\":{\"message\":\"Rate limit reached for gpt-4o\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n",
                    ]
                    .into_iter()
                    .map(|b| (Duration::from_millis(20), Bytes::from_static(b.as_bytes()))),
                ),
            },
            Fault::TooLong => e2e::mock::openai::error(
                400,
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
                Some("messages"),
                Some("context_length_exceeded"),
            ),
        }
    }
}

/// The Anthropic mock, failing with a status when told to.
struct FaultyAnthropic {
    status: Arc<Mutex<Option<u16>>>,
    inner: AnthropicMock,
}

impl Provider for FaultyAnthropic {
    fn handle(&self, request: &Recorded) -> Reply {
        match *self.status.lock().unwrap() {
            Some(status) => e2e::mock::anthropic::error(status, "backup failing"),
            None => self.inner.handle(request),
        }
    }
}

struct Chain {
    envoy: Envoy,
    primary: MockServer,
    backup: MockServer,
    reserve: MockServer,
    long_context: MockServer,
    fault: Arc<Mutex<Fault>>,
    backup_status: Arc<Mutex<Option<u16>>>,
}

impl Chain {
    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    fn fail_backup(&self, status: Option<u16>) {
        *self.backup_status.lock().unwrap() = status;
    }

    fn url(&self) -> String {
        self.envoy.url("/v1/chat/completions")
    }
}

/// The layout of `envoy-configs/fallback.yaml`: chain clusters (primary, backup, reserve in
/// priority order, and the same without the primary), each with ai-fallback and ai-proxy as
/// upstream filters; the route reads the cluster from the header ai-fallback sets and retries
/// on the next priority.
fn chain(breaker: Value, primary_addr: Option<SocketAddr>) -> Chain {
    let fault = Arc::new(Mutex::new(Fault::None));
    let primary = MockServer::start(FaultyOpenAi {
        fault: fault.clone(),
        inner: OpenAiMock::with_key(PRIMARY_KEY),
    });
    let backup_status = Arc::new(Mutex::new(None));
    let backup = MockServer::start(FaultyAnthropic {
        status: backup_status.clone(),
        inner: AnthropicMock::with_key(BACKUP_KEY),
    });
    let reserve = MockServer::start(OpenAiMock::with_key(RESERVE_KEY));
    let long_context = MockServer::start(OpenAiMock::with_key(PRIMARY_KEY));
    let primary_addr = primary_addr.unwrap_or(primary.addr);
    let proxy = json!({"providers": [
        {"id": "primary", "type": "openai", "apiTokens": [PRIMARY_KEY]},
        {"id": "backup", "type": "claude", "apiTokens": [BACKUP_KEY], "modelMapping": {"*": "claude-sonnet-4-5"}},
        {"id": "reserve", "type": "deepseek", "apiTokens": [RESERVE_KEY], "modelMapping": {"*": "deepseek-chat"}}
    ]});
    let fallback = json!({
        "chain": [
            {"provider": "primary", "cluster": "chain-primary"},
            {"provider": "backup", "cluster": "chain-backup"},
            {"provider": "reserve", "cluster": "chain-reserve"}
        ],
        "circuitBreaker": breaker,
        "contextLengthFallback": {"cluster": "long-context", "model": "gpt-4.1-long"}
    });
    let upstream = vec![
        wasm_filter("ai-fallback", &fallback),
        wasm_filter("ai-proxy", &proxy),
    ];
    let envoy = Envoy::start_with(
        &Gateway::new()
            .plugin("ai-fallback", fallback.clone())
            .raw_route(fallback_route(2, "1s"))
            .raw_cluster(provider_cluster(
                "chain-primary",
                &[
                    ProviderEndpoint::new(primary_addr, "primary"),
                    ProviderEndpoint::new(backup.addr, "backup"),
                    ProviderEndpoint::new(reserve.addr, "reserve"),
                ],
                upstream.clone(),
            ))
            .raw_cluster(provider_cluster(
                "chain-backup",
                &[
                    ProviderEndpoint::new(backup.addr, "backup"),
                    ProviderEndpoint::new(reserve.addr, "reserve"),
                ],
                upstream.clone(),
            ))
            .raw_cluster(provider_cluster(
                "chain-reserve",
                &[ProviderEndpoint::new(reserve.addr, "reserve")],
                upstream,
            ))
            .raw_cluster(provider_cluster(
                "long-context",
                &[ProviderEndpoint::new(long_context.addr, "primary")],
                vec![wasm_filter("ai-proxy", &proxy)],
            ))
            .to_json(),
        &EnvoyOptions {
            concurrency: 1,
            ..Default::default()
        },
    );
    Chain {
        envoy,
        primary,
        backup,
        reserve,
        long_context,
        fault,
        backup_status,
    }
}

fn no_breaker() -> Value {
    json!({"enabled": false})
}

fn ask() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "What is the capital of France?"}]})
}

fn streaming() -> Value {
    let mut body = ask();
    body["stream"] = json!(true);
    body
}

fn expect_backup_answer(chain: &Chain, what: &str) {
    let reply = post_json(&chain.url(), &ask(), &[]);
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        content_pieces(5, None).collect::<String>(),
        "{what}"
    );
    assert_eq!(
        reply.header("x-ai-fallback-provider"),
        Some("backup"),
        "{what}"
    );
    assert_eq!(reply.header("x-ai-fallback-attempts"), Some("2"), "{what}");
    assert_eq!(
        reply.header("x-ai-fallback-model"),
        Some("claude-sonnet-4-5"),
        "{what}"
    );
    let streamed = post_stream(&chain.url(), &streaming(), &[]);
    assert_eq!(streamed.status, 200, "{what} (stream)");
    assert_eq!(
        streamed.text(),
        content_pieces(5, None).collect::<String>(),
        "{what} (stream)"
    );
    assert_eq!(
        streamed.data().last().map(String::as_str),
        Some("[DONE]"),
        "{what} (stream)"
    );
    assert_eq!(
        streamed.header("x-ai-fallback-provider"),
        Some("backup"),
        "{what} (stream)"
    );
    expect_the_official_sdk_served_by_the_backup(chain, what);
}

/// The OpenAI SDK's own parsing of a plain and a streamed answer through the same failover.
fn expect_the_official_sdk_served_by_the_backup(chain: &Chain, what: &str) {
    let backup_before = chain.backup.requests.count();
    let out = python::run_script(
        "openai_chat.py",
        &[&chain.envoy.url("/v1"), "gpt-4o", "sk-client"],
        Duration::from_secs(60),
    );
    let answer = content_pieces(5, None).collect::<String>();
    assert_eq!(out["plain"]["text"], answer, "{what} (SDK)");
    assert_eq!(out["stream"]["text"], answer, "{what} (SDK stream)");
    assert_eq!(
        chain.backup.requests.count(),
        backup_before + 2,
        "{what}: the backup answered both SDK requests"
    );
}

#[test]
fn every_kind_of_primary_failure_is_answered_by_the_backup() {
    let chain = chain(no_breaker(), None);
    let _report = chain.envoy.report_on_failure();
    // Healthy primary first.
    let reply = post_json(&chain.url(), &ask(), &[]);
    assert_eq!(reply.header("x-ai-fallback-provider"), Some("primary"));
    assert_eq!(reply.header("x-ai-fallback-attempts"), Some("1"));
    for fault in [
        Fault::Status(500),
        Fault::Status(503),
        Fault::Status(429),
        Fault::Stall,
        Fault::ErrorIn200,
    ] {
        chain.set(fault);
        expect_backup_answer(&chain, &format!("{fault:?}"));
    }
    // The backup got Anthropic's wire format with its own key, never the primary's.
    let sent = chain.backup.requests.last().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(BACKUP_KEY));
    assert!(chain
        .backup
        .requests
        .all()
        .iter()
        .all(|r| r.header("authorization").is_none()));
}

#[test]
fn refused_connections_fail_over_to_the_backup() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let chain = chain(no_breaker(), Some(closed));
    let _report = chain.envoy.report_on_failure();
    expect_backup_answer(&chain, "connection refused");
}

#[test]
fn after_two_failures_the_third_provider_answers_in_its_own_format() {
    let chain = chain(no_breaker(), None);
    let _report = chain.envoy.report_on_failure();
    chain.set(Fault::Status(503));
    chain.fail_backup(Some(529));
    let reply = post_json(&chain.url(), &ask(), &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-ai-fallback-provider"), Some("reserve"));
    assert_eq!(reply.header("x-ai-fallback-attempts"), Some("3"));
    assert_eq!(reply.header("x-ai-fallback-model"), Some("deepseek-chat"));
    // The third attempt was addressed afresh, not with what the Anthropic attempt left behind.
    let sent = chain.reserve.requests.last().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {RESERVE_KEY}").as_str())
    );
    assert_eq!(sent.header("x-api-key"), None);
    assert_eq!(sent.json()["model"], "deepseek-chat");
}

#[test]
fn when_every_provider_fails_the_error_lists_the_attempts() {
    let chain = chain(no_breaker(), None);
    let _report = chain.envoy.report_on_failure();
    chain.set(Fault::Status(503));
    chain.fail_backup(Some(500));
    let reply = post_json(&chain.url(), &ask(), &[("x-mock-status", "429")]);
    assert_eq!(reply.status, 502, "{}", reply.text());
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "all_providers_failed");
    assert_eq!(
        error["message"],
        "every provider failed: primary: status 503; backup: status 500; reserve: status 429"
    );
    assert_eq!(error["attempts"].as_array().unwrap().len(), 3);
    for key in [PRIMARY_KEY, BACKUP_KEY, RESERVE_KEY] {
        assert!(!reply.text().contains(key), "no key in the error");
    }
}

#[test]
fn when_every_circuit_is_open_the_gateway_answers_at_once_with_the_skipped_providers() {
    let chain = chain(
        json!({"failureThreshold": 1, "cooldownSeconds": 60, "windowSeconds": 60}),
        None,
    );
    let _report = chain.envoy.report_on_failure();
    // One request that every provider fails opens every circuit.
    chain.set(Fault::Status(503));
    chain.fail_backup(Some(500));
    let failed = post_json(&chain.url(), &ask(), &[("x-mock-status", "429")]);
    assert_eq!(failed.status, 502, "{}", failed.text());
    let providers = [&chain.primary, &chain.backup, &chain.reserve];
    let tried: Vec<usize> = providers.iter().map(|p| p.requests.count()).collect();

    for body in [ask(), streaming()] {
        let reply = post_json(&chain.url(), &body, &[]);
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.header("x-ai-fallback-attempts"), Some("0"));
        let error = &reply.json()["error"];
        assert_eq!(error["type"], "upstream_error");
        assert_eq!(error["code"], "all_providers_failed");
        assert_eq!(
            error["message"],
            "every provider failed: primary: skipped: circuit open; \
             backup: skipped: circuit open; reserve: skipped: circuit open"
        );
        let outcomes: Vec<&Value> = error["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["outcome"])
            .collect();
        assert_eq!(outcomes, [&json!("circuit_open"); 3]);
        for key in [PRIMARY_KEY, BACKUP_KEY, RESERVE_KEY] {
            assert!(!reply.text().contains(key), "no key in the error");
        }
    }
    let now: Vec<usize> = providers.iter().map(|p| p.requests.count()).collect();
    assert_eq!(
        now, tried,
        "no provider is called while its circuit is open"
    );
}

#[test]
fn circuit_breaker_opens_skips_probes_and_closes() {
    let chain = chain(
        json!({"failureThreshold": 2, "cooldownSeconds": 2, "windowSeconds": 60}),
        None,
    );
    let _report = chain.envoy.report_on_failure();
    chain.set(Fault::Status(500));
    for _ in 0..2 {
        assert_eq!(
            post_json(&chain.url(), &ask(), &[]).header("x-ai-fallback-provider"),
            Some("backup")
        );
    }
    // Open: the primary is not even tried.
    let before = chain.primary.requests.count();
    let reply = post_json(&chain.url(), &ask(), &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-ai-fallback-attempts"), Some("1"));
    assert_eq!(
        chain.primary.requests.count(),
        before,
        "an open circuit skips the provider"
    );
    // After the cool-down one probe goes to the (now healthy) primary and closes the circuit.
    chain.set(Fault::None);
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(
        post_json(&chain.url(), &ask(), &[]).header("x-ai-fallback-provider"),
        Some("primary"),
        "the probe"
    );
    assert_eq!(
        post_json(&chain.url(), &ask(), &[]).header("x-ai-fallback-provider"),
        Some("primary"),
        "closed again"
    );
    let skipped = "wasmcustom.provider.primary.outcome.circuit_open.metric.fallback_attempts";
    chain
        .envoy
        .wait_for_stats("skips counted", |s| s.get(skipped) == Some(&1));
}

#[test]
fn a_request_too_long_for_the_model_goes_to_the_longer_context_model() {
    let chain = chain(no_breaker(), None);
    chain.set(Fault::TooLong);
    let reply = post_json(&chain.url(), &ask(), &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-ai-fallback-reason"), Some("context_length"));
    assert_eq!(reply.json()["model"], "gpt-4.1-long");
    assert_eq!(
        chain.long_context.requests.last().unwrap().json()["model"],
        "gpt-4.1-long"
    );
    assert_eq!(
        chain.backup.requests.count(),
        0,
        "a 400 is not a reason to fail over to another provider"
    );
    // A streaming request gets the longer-context model's stream (delivered once complete).
    let streamed = post_stream(&chain.url(), &streaming(), &[]);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.text(), content_pieces(5, None).collect::<String>());
    assert_eq!(streamed.chunks()[0]["model"], "gpt-4.1-long");
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));
}

#[test]
fn a_stream_longer_than_the_per_try_timeout_is_not_cut() {
    let chain = chain(no_breaker(), None);
    let _report = chain.envoy.report_on_failure();
    // 6 pieces 400 ms apart: 2.4 s of streaming against a 1 s per-try timeout.
    let streamed = post_stream(
        &chain.url(),
        &streaming(),
        &[("x-mock-chunks", "6"), ("x-mock-delay-ms", "400")],
    );
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.text(), content_pieces(6, None).collect::<String>());
    assert_eq!(streamed.header("x-ai-fallback-provider"), Some("primary"));
    assert_eq!(chain.backup.requests.count(), 0);
}

const ANTHROPIC_KEY: &str = "sk-ant-shipped-0123456789";
const GEMINI_KEY: &str = "AIza-shipped-0123456789";

/// `envoy-configs/fallback.yaml` as shipped, with keys filled in and each provider's address
/// (and TLS) pointed at a local mock.
fn shipped_config(openai: SocketAddr, anthropic: SocketAddr, gemini: SocketAddr) -> Envoy {
    let config = e2e::config::shipped_on_mocks(
        "fallback.yaml",
        &[
            ("OPENAI_API_KEY", PRIMARY_KEY.into()),
            ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.into()),
            ("GEMINI_API_KEY", GEMINI_KEY.into()),
        ],
        &[
            ("openai", "api.openai.com", openai),
            ("anthropic", "api.anthropic.com", anthropic),
            ("gemini", "generativelanguage.googleapis.com", gemini),
        ],
    );
    Envoy::start_yaml(&config, "fallback")
}

#[test]
fn the_shipped_config_fails_over_from_openai_to_anthropic_to_gemini() {
    let fault = Arc::new(Mutex::new(Fault::None));
    let openai = MockServer::start(FaultyOpenAi {
        fault: fault.clone(),
        inner: OpenAiMock::with_key(PRIMARY_KEY),
    });
    let anthropic_status = Arc::new(Mutex::new(None));
    let anthropic = MockServer::start(FaultyAnthropic {
        status: anthropic_status.clone(),
        inner: AnthropicMock::with_key(ANTHROPIC_KEY),
    });
    let gemini = MockServer::start(e2e::mock::gemini::GeminiMock::with_key(GEMINI_KEY));
    let envoy = shipped_config(openai.addr, anthropic.addr, gemini.addr);
    let _report = envoy.report_on_failure();
    let url = envoy.url("/v1/chat/completions");

    let reply = post_json(&url, &ask(), &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-ai-fallback-provider"), Some("openai"));

    // A prompt above Envoy's default 1 MiB retry buffer still fails over.
    *fault.lock().unwrap() = Fault::Status(500);
    let mut long = ask();
    long["messages"][0]["content"] = json!("lorem ipsum ".repeat(200_000));
    let reply = post_json(&url, &long, &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-ai-fallback-provider"), Some("anthropic"));
    assert_eq!(
        reply.header("x-ai-fallback-model"),
        Some("claude-sonnet-4-5")
    );
    let sent = anthropic.requests.last().unwrap().json();
    let content = &sent["messages"][0]["content"];
    let text = content.as_str().or(content[0]["text"].as_str()).unwrap();
    assert_eq!(text.len(), 2_400_000, "the whole prompt reached the backup");

    *anthropic_status.lock().unwrap() = Some(529);
    let streamed = post_stream(&url, &streaming(), &[]);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.text(), content_pieces(5, None).collect::<String>());
    assert_eq!(streamed.header("x-ai-fallback-provider"), Some("gemini"));
    assert_eq!(streamed.header("x-ai-fallback-attempts"), Some("3"));
    // Gemini's own API: the model in the path, its key header, its request shape.
    let sent = gemini.requests.last().unwrap();
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_KEY));
    assert_eq!(sent.header("authorization"), None);
    assert!(sent.json()["contents"].is_array());

    // Metrics carry the provider and the outcome as labels.
    envoy.wait_prometheus_value(
        "provider_outcome_metric_fallback_attempts",
        &[("ai_provider", "openai"), ("ai_outcome", "server_error")],
        2.0,
    );
    envoy.wait_prometheus_value(
        "provider_outcome_metric_fallback_attempts",
        &[("ai_provider", "anthropic"), ("ai_outcome", "server_error")],
        1.0,
    );
}

#[test]
fn an_error_after_the_answer_began_reaches_the_client_and_is_not_retried() {
    let chain = chain(no_breaker(), None);
    let _report = chain.envoy.report_on_failure();
    chain.set(Fault::ErrorMidStream);
    let streamed = post_stream(&chain.url(), &streaming(), &[]);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.text(), "Paris is ");
    let last = streamed.data().last().cloned().unwrap_or_default();
    assert!(last.contains("rate_limit_exceeded"), "{last}");
    assert_eq!(
        chain.backup.requests.count(),
        0,
        "bytes were sent: no retry"
    );
    // The gateway is still there for the next request.
    chain.set(Fault::None);
    assert_eq!(post_json(&chain.url(), &ask(), &[]).status, 200);
}
