//! ai-cache through real Envoy: exact hits and misses, TTL expiry, streamed replay read by the
//! official OpenAI SDK, the skip headers, answers that are never cached, both exact stores
//! (shared data, Redis through Webdis), both vector stores (shared data, Chroma) with a real
//! embedding model, and every dependency down.

use e2e::client::{post_json, post_stream, Reply};
use e2e::config::static_cluster;
use e2e::services::{chroma::Chroma, embedder::Embedder, free_port, loopback, redis::RedisWebdis};
use e2e::{python, Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

const AUTH: (&str, &str) = ("authorization", "Bearer sk-client");
const MODEL: &str = "gpt-4o-mini";

fn chat(question: &str) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": question}]})
}

fn ask(envoy: &Envoy, prefix: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![AUTH];
    all.extend_from_slice(headers);
    let reply = post_json(
        &envoy.url(&format!("{prefix}/v1/chat/completions")),
        body,
        &all,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
}

fn text(reply: &Reply) -> String {
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Requests the mock received whose body mentions `needle`.
fn provider_calls(mock: &MockServer, needle: &str) -> usize {
    mock.requests
        .all()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(needle))
        .count()
}

fn stat(envoy: &Envoy, consumer: &str, metric: &str) -> u64 {
    envoy.stat_sum(
        &[&format!(".consumer.{consumer}.")],
        &format!(".metric.{metric}"),
    )
}

/// Waits for a counter to reach `at_least` (counters are flushed every 0.5 s).
fn wait_stat(envoy: &Envoy, consumer: &str, metric: &str, at_least: u64) {
    let name = format!("{consumer} {metric}");
    envoy.wait_for_stats(&name, |_| stat(envoy, consumer, metric) >= at_least);
}

/// One Envoy with the shared-data stores: default route (default keys), `/ttl` (1 s TTL),
/// `/tenant` (answers kept per consumer), `/full` (fullRequest keys), `/small` (answers up to
/// 16 bytes), with ai-statistics in front.
struct Local {
    mock: MockServer,
    envoy: Envoy,
}

fn local() -> &'static Local {
    static LOCAL: OnceLock<Local> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let mock = MockServer::start(OpenAiMock::default());
        let config = json!({
            "maxTemperature": 1.0,
            "_rules_": [
                {"_match_route_": ["ttl"], "cache": {"type": "local", "cacheTTL": 1, "cacheKeyPrefix": "ttl:"}},
                {"_match_route_": ["tenant"], "scope": "consumer"},
                {"_match_route_": ["full"], "cacheKeyStrategy": "fullRequest"},
                {"_match_route_": ["small"], "maxAnswerBytes": 16}
            ]
        });
        let envoy = Envoy::start(
            &Gateway::new()
                .plugin("ai-statistics", json!({}))
                .plugin("ai-cache", config)
                .route("ttl", "/ttl/", "provider")
                .route("tenant", "/tenant/", "provider")
                .route("full", "/full/", "provider")
                .route("small", "/small/", "provider")
                .route("chat", "/", "provider")
                .cluster("provider", mock.addr)
                .to_json(),
        );
        Local { mock, envoy }
    })
}

#[test]
fn exact_hit_answers_from_the_cache_and_a_miss_reaches_the_model() {
    let Local { mock, envoy } = local();
    let _report = envoy.report_on_failure();
    let q = "What is the boiling point of water at sea level?";
    let consumer = ("x-mse-consumer", "exact");

    let first = ask(envoy, "", &chat(q), &[consumer, ("x-mock-chunks", "3")]);
    assert_eq!(first.header("x-ai-cache"), Some("miss"));
    assert_eq!(text(&first), "Hello from the");
    assert_eq!(provider_calls(mock, q), 1);

    // The provider would answer differently now (7 pieces): the cache answers the same text.
    let second = ask(envoy, "", &chat(q), &[consumer, ("x-mock-chunks", "7")]);
    assert_eq!(second.header("x-ai-cache"), Some("hit"));
    assert_eq!(second.header("x-ai-cache-match"), Some("exact"));
    assert_eq!(
        provider_calls(mock, q),
        1,
        "a hit never reaches the provider"
    );
    let (a, b) = (first.json(), second.json());
    assert_eq!(text(&second), "Hello from the");
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], a["model"]);
    assert_eq!(b["system_fingerprint"], "ai-cache");
    // Usage: the cached counts, every prompt token marked as cached.
    assert_eq!(b["usage"]["prompt_tokens"], a["usage"]["prompt_tokens"]);
    assert_eq!(
        b["usage"]["completion_tokens"],
        a["usage"]["completion_tokens"]
    );
    assert_eq!(
        b["usage"]["prompt_tokens_details"]["cached_tokens"],
        a["usage"]["prompt_tokens"]
    );

    // Another question, or the same one to another model, is a miss.
    let other = ask(
        envoy,
        "",
        &chat("What is the freezing point of water?"),
        &[consumer],
    );
    assert_eq!(other.header("x-ai-cache"), Some("miss"));
    let mut other_model = chat(q);
    other_model["model"] = json!("gpt-4o");
    assert_eq!(
        ask(envoy, "", &other_model, &[consumer]).header("x-ai-cache"),
        Some("miss")
    );

    // The earlier turns shape the answer: another conversation is another key.
    let with_history = json!({"model": MODEL, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": q}]});
    assert_eq!(
        ask(envoy, "", &with_history, &[consumer]).header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(
        ask(envoy, "", &chat(q), &[consumer]).header("x-ai-cache"),
        Some("hit")
    );

    // ai-statistics in front meters the hits too, and tells them apart: all their input is
    // cached input.
    let prompt = a["usage"]["prompt_tokens"].as_u64().unwrap();
    wait_stat(envoy, "exact", "cached_input_token", 2 * prompt);
    assert_eq!(stat(envoy, "exact", "cached_input_token"), 2 * prompt);

    wait_stat(envoy, "exact", "ai_cache_hit", 2);
    assert_eq!(stat(envoy, "exact", "ai_cache_miss"), 4);
    assert_eq!(stat(envoy, "exact", "ai_cache_stored"), 4);
    let logged: Vec<Value> = envoy
        .wait_access_log(1)
        .into_iter()
        .filter(|l| l["ai_cache"] == "hit")
        .collect();
    assert!(logged.len() >= 2, "the access log records hits: {logged:?}");
}

#[test]
fn streamed_hit_is_a_real_sse_stream_the_openai_sdk_parses() {
    let Local { mock, envoy } = local();
    let _report = envoy.report_on_failure();
    let q = "Name three primary colours.";
    let out = python::run_script(
        "openai_cache.py",
        &[&envoy.url("/v1"), MODEL, q],
        Duration::from_secs(60),
    );
    let (first, second, plain) = (&out["first"], &out["second"], &out["plain"]);
    assert_eq!(first["cache"], "miss");
    assert_eq!(second["cache"], "hit");
    assert_eq!(plain["cache"], "hit");
    assert_eq!(provider_calls(mock, q), 1);
    assert_eq!(second["text"], first["text"]);
    assert_eq!(plain["text"], first["text"]);
    assert_eq!(second["roles"], json!(["assistant"]));
    assert_eq!(second["finish_reason"], "stop");
    assert!(
        second["content_chunks"].as_u64().unwrap() >= 2,
        "content in several chunks: {second}"
    );
    // role, content pieces, finish, usage
    assert_eq!(
        second["chunks"].as_u64().unwrap(),
        second["content_chunks"].as_u64().unwrap() + 3
    );
    assert_eq!(
        second["usage"]["prompt_tokens"],
        first["usage"]["prompt_tokens"]
    );
    assert_eq!(
        second["usage"]["completion_tokens"],
        first["usage"]["completion_tokens"]
    );
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"],
        first["usage"]["prompt_tokens"]
    );
    assert_eq!(plain["system_fingerprint"], "ai-cache");
    assert_eq!(plain["finish_reason"], "stop");

    // Without include_usage the replay has no usage chunk, as OpenAI's streams.
    let body =
        json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": q}]});
    let streamed = post_stream(&envoy.url("/v1/chat/completions"), &body, &[AUTH]);
    assert_eq!(streamed.header("x-ai-cache"), Some("hit"));
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));
    assert!(streamed.chunks().iter().all(|c| c.get("usage").is_none()));
    assert_eq!(streamed.text(), first["text"].as_str().unwrap());
}

#[test]
fn storing_a_streamed_answer_never_delays_the_stream() {
    let Local { envoy, .. } = local();
    let _report = envoy.report_on_failure();
    let mut body = chat("How do slow rivers shape their valleys?");
    body["stream"] = json!(true);
    let delay = Duration::from_millis(300);
    let slow = [
        AUTH,
        ("x-mse-consumer", "slow"),
        ("x-mock-chunks", "4"),
        ("x-mock-delay-ms", "300"),
    ];
    let url = envoy.url("/v1/chat/completions");
    let miss = post_stream(&url, &body, &slow);
    assert_eq!(miss.header("x-ai-cache"), Some("miss"));
    let first_piece = miss
        .chunks()
        .iter()
        .find_map(|c| {
            c.pointer("/choices/0/delta/content")?
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        })
        .expect("a content chunk");
    let first_at = miss.arrival_of(&first_piece).expect("first piece arrived");
    // The provider sends its last piece one delay before the finish chunk that ends the
    // stream: a stream held until the answer is whole would bring the first piece after it.
    let last_piece_sent = miss.total - delay;
    assert!(
        first_at + delay < last_piece_sent,
        "first piece at {first_at:?}, stream ended at {:?}: the stream was held",
        miss.total
    );
    // And the answer was stored all the same.
    wait_stat(envoy, "slow", "ai_cache_stored", 1);
    let hit = post_stream(&url, &body, &slow);
    assert_eq!(hit.header("x-ai-cache"), Some("hit"));
    assert_eq!(hit.text(), miss.text());
}

#[test]
fn skip_headers_bypass_the_cache_both_ways() {
    let Local { mock, envoy } = local();
    let _report = envoy.report_on_failure();
    let q = "How far is the Moon from the Earth?";
    ask(envoy, "", &chat(q), &[]);
    for skip in [("x-ai-cache", "skip"), ("x-higress-skip-ai-cache", "on")] {
        let reply = ask(envoy, "", &chat(q), &[skip]);
        assert_eq!(reply.header("x-ai-cache"), Some("skip"), "{skip:?}");
    }
    assert_eq!(provider_calls(mock, q), 3);
    // A skipped request's answer is not stored either.
    let q2 = "How far is Mars from the Earth?";
    ask(envoy, "", &chat(q2), &[("x-ai-cache", "skip")]);
    assert_eq!(
        ask(envoy, "", &chat(q2), &[]).header("x-ai-cache"),
        Some("miss")
    );
}

#[test]
fn tool_calls_errors_and_hot_requests_are_never_cached() {
    let Local { mock, envoy } = local();
    let _report = envoy.report_on_failure();
    let consumer = ("x-mse-consumer", "never");

    let q = "What is the weather in Paris today?";
    let mut tools = chat(q);
    tools["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    for _ in 0..2 {
        let reply = ask(envoy, "", &tools, &[consumer]);
        assert_eq!(reply.header("x-ai-cache"), Some("miss"));
        assert!(reply.json()["choices"][0]["message"]["tool_calls"].is_array());
    }
    let mut streamed_tools = tools.clone();
    streamed_tools["stream"] = json!(true);
    for _ in 0..2 {
        let s = post_stream(
            &envoy.url("/v1/chat/completions"),
            &streamed_tools,
            &[AUTH, consumer],
        );
        assert_eq!(s.header("x-ai-cache"), Some("miss"));
    }
    assert_eq!(provider_calls(mock, q), 4);

    // A provider error is passed on and not stored: the next request reaches the provider.
    let q = "Will this fail?";
    let error = post_json(
        &envoy.url("/v1/chat/completions"),
        &chat(q),
        &[AUTH, consumer, ("x-mock-status", "500")],
    );
    assert_eq!(error.status, 500);
    assert_eq!(
        ask(envoy, "", &chat(q), &[consumer]).header("x-ai-cache"),
        Some("miss")
    );

    // Above maxTemperature: neither answered from nor stored in the cache.
    let q = "Write a surprising opening line.";
    let mut hot = chat(q);
    hot["temperature"] = json!(1.5);
    for _ in 0..2 {
        assert_eq!(
            ask(envoy, "", &hot, &[consumer]).header("x-ai-cache"),
            Some("skip")
        );
    }
    assert_eq!(provider_calls(mock, q), 2);
    wait_stat(envoy, "never", "ai_cache_not_stored", 5);
}

#[test]
fn cut_short_and_too_long_answers_are_not_stored() {
    let Local { mock, envoy } = local();
    let _report = envoy.report_on_failure();
    // The client hangs up after the first bytes of a slow stream.
    let q = "Tell me a long story about a lighthouse.";
    let body =
        json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": q}]})
            .to_string();
    let mut conn = TcpStream::connect(("127.0.0.1", envoy.port())).expect("connect");
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer sk-client\r\n\
         content-type: application/json\r\nx-mock-delay-ms: 300\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let n = conn.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    drop(conn);
    e2e::wait::until("the provider to see the request", || {
        provider_calls(mock, q) == 1
    });
    assert_eq!(
        ask(envoy, "", &chat(q), &[]).header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(provider_calls(mock, q), 2);

    // Longer than maxAnswerBytes: passed on whole, not stored.
    let q = "Describe the sea.";
    for _ in 0..2 {
        let reply = ask(envoy, "/small", &chat(q), &[]);
        assert_eq!(reply.header("x-ai-cache"), Some("miss"));
        assert_eq!(text(&reply), "Hello from the mock provider,");
    }
    let short = "Say hi.";
    ask(envoy, "/small", &chat(short), &[("x-mock-chunks", "2")]);
    assert_eq!(
        ask(envoy, "/small", &chat(short), &[]).header("x-ai-cache"),
        Some("hit")
    );
}

#[test]
fn answers_expire_after_their_ttl() {
    let Local { mock, envoy } = local();
    let _report = envoy.report_on_failure();
    let q = "What year did the first person walk on the Moon?";
    assert_eq!(
        ask(envoy, "/ttl", &chat(q), &[]).header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(
        ask(envoy, "/ttl", &chat(q), &[]).header("x-ai-cache"),
        Some("hit")
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        ask(envoy, "/ttl", &chat(q), &[]).header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(provider_calls(mock, q), 2);
}

#[test]
fn consumer_scope_keeps_tenants_apart_and_full_request_keys_on_parameters() {
    let Local { envoy, .. } = local();
    let _report = envoy.report_on_failure();
    let q = "What is our refund policy?";
    let alice = ("x-mse-consumer", "alice");
    let bob = ("x-mse-consumer", "bob");
    assert_eq!(
        ask(envoy, "/tenant", &chat(q), &[alice]).header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(
        ask(envoy, "/tenant", &chat(q), &[bob]).header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(
        ask(envoy, "/tenant", &chat(q), &[alice]).header("x-ai-cache"),
        Some("hit")
    );
    // Requests without a consumer share the anonymous scope.
    assert_eq!(
        ask(envoy, "/tenant", &chat(q), &[]).header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(
        ask(envoy, "/tenant", &chat(q), &[]).header("x-ai-cache"),
        Some("hit")
    );

    let q = "Summarise the plot of Hamlet.";
    let mut cold = chat(q);
    cold["temperature"] = json!(0.0);
    assert_eq!(
        ask(envoy, "/full", &cold, &[]).header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(
        ask(envoy, "/full", &cold, &[]).header("x-ai-cache"),
        Some("hit")
    );
    let mut seeded = cold.clone();
    seeded["seed"] = json!(42);
    assert_eq!(
        ask(envoy, "/full", &seeded, &[]).header("x-ai-cache"),
        Some("miss")
    );
}

/// Redis and Webdis from the shipped templates (only GET and SET on `ai-cache:` keys).
fn redis() -> RedisWebdis {
    let configs = e2e::paths::repo_root().join("envoy-configs");
    RedisWebdis::start(
        &configs.join("ai-cache-redis.conf"),
        &configs.join("ai-cache-webdis.json"),
    )
}

#[test]
fn redis_through_webdis_stores_with_ttl() {
    let redis = redis();
    let mock = MockServer::start(OpenAiMock::default());
    let config = json!({"cache": {"type": "redis", "serviceName": "webdis", "cacheTTL": 2}});
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin("ai-cache", config)
            .cluster("provider", mock.addr)
            .cluster("webdis", redis.webdis)
            .to_json(),
    );
    let _report = envoy.report_on_failure();
    let q = "What is the tallest mountain on Earth?";
    assert_eq!(
        ask(&envoy, "", &chat(q), &[]).header("x-ai-cache"),
        Some("miss")
    );
    wait_stat(&envoy, "unknown", "ai_cache_stored", 1);

    // Streamed this time: the stream is replayed from Redis.
    let mut body = chat(q);
    body["stream"] = json!(true);
    let hit = post_stream(&envoy.url("/v1/chat/completions"), &body, &[AUTH]);
    assert_eq!(hit.header("x-ai-cache"), Some("hit"));
    assert_eq!(hit.text(), "Hello from the mock provider,");
    assert_eq!(provider_calls(&mock, q), 1);

    // Redis expires the answer after cacheTTL (SET … EX 2).
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        ask(&envoy, "", &chat(q), &[]).header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(provider_calls(&mock, q), 2);
    assert_eq!(stat(&envoy, "unknown", "ai_cache_cache_error"), 0);
}

/// Envoy with ai-cache whose every dependency points at a closed port.
#[test]
fn a_dependency_down_is_a_miss_never_a_failure() {
    let mock = MockServer::start(OpenAiMock::default());
    let dead = loopback(free_port());
    let config = json!({
        "_rules_": [
            {"_match_route_": ["redis"], "cache": {"type": "redis", "serviceName": "dead", "timeout": 300}},
            {"_match_route_": ["semantic"],
             "embedding": {"type": "openai", "serviceName": "dead", "timeout": 300},
             "vector": {"type": "chroma", "serviceName": "dead", "collectionID": "1344926e-fcd2-4a4a-a8ad-a2153dc7cf3e"}},
            {"_match_route_": ["chroma"],
             "embedding": {"type": "openai", "serviceName": "provider", "apiKey": "sk-embed"},
             "vector": {"type": "chroma", "serviceName": "dead", "collectionID": "1344926e-fcd2-4a4a-a8ad-a2153dc7cf3e"}}
        ]
    });
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin("ai-cache", config)
            .route("redis", "/redis/", "provider")
            .route("semantic", "/semantic/", "provider")
            .route("chroma", "/chroma/", "provider")
            .cluster("provider", mock.addr)
            .raw_cluster(static_cluster("dead", dead))
            .to_json(),
    );
    let _report = envoy.report_on_failure();
    for (prefix, consumer) in [("/redis", "r"), ("/semantic", "s"), ("/chroma", "c")] {
        for stream in [false, true] {
            let mut body = chat(&format!("Is {prefix} up? {stream}"));
            body["stream"] = json!(stream);
            let reply = post_json(
                &envoy.url(&format!("{prefix}/v1/chat/completions")),
                &body,
                &[AUTH, ("x-mse-consumer", consumer)],
            );
            assert_eq!(reply.status, 200, "{prefix}: {}", reply.text());
            assert_eq!(reply.header("x-ai-cache"), Some("miss"), "{prefix}");
        }
    }
    wait_stat(&envoy, "r", "ai_cache_cache_error", 4); // two lookups, two stores
    wait_stat(&envoy, "s", "ai_cache_embedding_error", 2);
    wait_stat(&envoy, "c", "ai_cache_vector_error", 2);
    // Each failure is logged, saying what failed and that the request was served as a miss.
    for line in [
        "ai-cache: cache lookup failed, serving as a miss: ",
        "ai-cache: storing failed: ",
        "ai-cache: embedding failed, serving as a miss: ",
        "ai-cache: vector search failed, serving as a miss: ",
    ] {
        e2e::wait::until(line, || envoy.log().contains(line));
    }
    assert!(
        !envoy.log().contains("sk-embed"),
        "the embedding key is never logged"
    );
    assert!(envoy.wasm_panics().is_empty(), "{:?}", envoy.wasm_panics());
}

/// The real embedding model, and Chroma, for the semantic tests.
struct Semantic {
    mock: MockServer,
    chroma: Chroma,
    collection: String,
    envoy: Envoy,
    embedder: Embedder,
}

/// Routes: `/local` keeps vectors in shared data, `/chroma` in Chroma, `/tenant` in shared data
/// per consumer. Threshold 0.95: the model scores paraphrases about 0.95-0.99, near misses
/// ("capital of Germany" for "capital of France", "population of France") about 0.89-0.92, and
/// unrelated questions about 0.75.
fn semantic() -> &'static Semantic {
    static SEMANTIC: OnceLock<Semantic> = OnceLock::new();
    SEMANTIC.get_or_init(|| {
        let embedder = Embedder::start();
        let chroma = Chroma::start();
        let collection = chroma.collection("ai-cache-e2e");
        let mock = MockServer::start(OpenAiMock::default());
        let embedding = json!({"type": "openai", "serviceName": "embedder", "model": "e5-query"});
        let config = json!({
            "_rules_": [
                {"_match_route_": ["local"], "embedding": embedding,
                 "vector": {"type": "local", "threshold": 0.95},
                 "cache": {"type": "local", "cacheKeyPrefix": "local:"}},
                {"_match_route_": ["chroma"], "embedding": embedding,
                 "vector": {"type": "chroma", "serviceName": "chroma", "collectionID": collection, "threshold": 0.95},
                 "cache": {"type": "local", "cacheKeyPrefix": "chroma:"}},
                {"_match_route_": ["tenant"], "scope": "consumer", "embedding": embedding,
                 "vector": {"type": "local", "threshold": 0.95},
                 "cache": {"type": "local", "cacheKeyPrefix": "tenant:"}}
            ]
        });
        let envoy = Envoy::start(
            &Gateway::new()
                .plugin("ai-cache", config)
                .route("local", "/local/", "provider")
                .route("chroma", "/chroma/", "provider")
                .route("tenant", "/tenant/", "provider")
                .cluster("provider", mock.addr)
                .cluster("embedder", embedder.addr)
                .cluster("chroma", chroma.addr)
                .to_json(),
        );
        Semantic {
            mock,
            chroma,
            collection,
            envoy,
            embedder,
        }
    })
}

fn semantic_paraphrase_hits_and_unrelated_misses(prefix: &str, wait_stored: impl Fn()) {
    let s = semantic();
    let envoy = &s.envoy;
    let _report = envoy.report_on_failure();
    let asked = "What is the capital of France?";
    let first = ask(envoy, prefix, &chat(asked), &[("x-mock-chunks", "4")]);
    assert_eq!(first.header("x-ai-cache"), Some("miss"));
    wait_stored();

    let paraphrase = ask(
        envoy,
        prefix,
        &chat("Which city is the capital of France?"),
        &[],
    );
    assert_eq!(paraphrase.header("x-ai-cache"), Some("hit"), "paraphrase");
    assert_eq!(paraphrase.header("x-ai-cache-match"), Some("semantic"));
    let similarity: f32 = paraphrase
        .header("x-ai-cache-similarity")
        .unwrap()
        .parse()
        .unwrap();
    assert!(similarity >= 0.95, "{similarity}");
    assert_eq!(text(&paraphrase), text(&first));

    let mut streamed = chat("What is the capital city of France?");
    streamed["stream"] = json!(true);
    let replay = post_stream(
        &envoy.url(&format!("{prefix}/v1/chat/completions")),
        &streamed,
        &[AUTH],
    );
    assert_eq!(
        replay.header("x-ai-cache"),
        Some("hit"),
        "streamed paraphrase"
    );
    assert_eq!(replay.text(), text(&first));

    for unrelated in [
        "What is the capital of Germany?",
        "What is the population of France?",
        "How do I bake sourdough bread at home?",
    ] {
        let reply = ask(envoy, prefix, &chat(unrelated), &[]);
        assert_eq!(reply.header("x-ai-cache"), Some("miss"), "{unrelated}");
    }
    // Another model is another namespace, however close the question.
    let mut other_model = chat("Which city is the capital of France?");
    other_model["model"] = json!("gpt-4o");
    assert_eq!(
        ask(envoy, prefix, &other_model, &[]).header("x-ai-cache"),
        Some("miss")
    );
    let calls = s
        .mock
        .requests
        .all()
        .iter()
        .filter(|r| {
            r.path.starts_with(prefix)
                && String::from_utf8_lossy(&r.body).contains("capital of France?")
        })
        .count();
    assert_eq!(calls, 2);
}

#[test]
fn semantic_hit_with_a_real_embedding_model_and_embedded_vectors() {
    semantic_paraphrase_hits_and_unrelated_misses("/local", || {});
}

#[test]
fn semantic_hit_with_a_real_embedding_model_and_chroma() {
    let s = semantic();
    semantic_paraphrase_hits_and_unrelated_misses("/chroma", || {
        e2e::wait::until("the vector in Chroma", || {
            s.chroma.count(&s.collection) >= 1
        })
    });
}

#[test]
fn semantic_matches_stay_within_the_consumer_with_consumer_scope() {
    let s = semantic();
    let envoy = &s.envoy;
    let _report = envoy.report_on_failure();
    let alice = ("x-mse-consumer", "alice");
    let bob = ("x-mse-consumer", "bob");
    let asked = chat("What is the capital of France?");
    let paraphrase = chat("Which city is the capital of France?");
    let first = ask(envoy, "/tenant", &asked, &[alice]);
    assert_eq!(first.header("x-ai-cache"), Some("miss"));

    let others = ask(envoy, "/tenant", &paraphrase, &[bob]);
    assert_eq!(
        others.header("x-ai-cache"),
        Some("miss"),
        "another consumer's paraphrase"
    );
    let own = ask(envoy, "/tenant", &paraphrase, &[alice]);
    assert_eq!(
        own.header("x-ai-cache"),
        Some("hit"),
        "the same consumer's paraphrase"
    );
    assert_eq!(own.header("x-ai-cache-match"), Some("semantic"));
    assert_eq!(text(&own), text(&first));
    let calls = s
        .mock
        .requests
        .all()
        .iter()
        .filter(|r| r.path.starts_with("/tenant/"))
        .count();
    assert_eq!(calls, 2, "alice's question and bob's paraphrase");
}

/// `envoy-configs/ai-cache.yaml` as shipped, on real Redis/Webdis, Chroma and the embedding
/// model: exact hits from Redis, paraphrases through Chroma, hits metered by ai-statistics.
#[test]
fn shipped_config_serves_exact_and_semantic_hits() {
    let s = semantic();
    let redis = redis();
    let collection = s.chroma.collection("ai-cache-shipped");
    let dir = e2e::paths::scratch_dir("shipped-ai-cache");
    let template =
        std::fs::read_to_string(e2e::paths::repo_root().join("envoy-configs/ai-cache.yaml"))
            .expect("envoy-configs/ai-cache.yaml");
    let wasm_dir = e2e::paths::plugin_wasm("ai-cache");
    let vars = [
        ("PORT", "0".to_string()),
        ("ADMIN_PORT", "0".to_string()),
        ("ACCESS_LOG", dir.join("access.log").display().to_string()),
        ("WASM_DIR", wasm_dir.parent().unwrap().display().to_string()),
        ("PROVIDER_PORT", s.mock.port().to_string()),
        ("WEBDIS_PORT", redis.webdis.port().to_string()),
        ("EMBEDDER_PORT", s.embedder.addr.port().to_string()),
        ("CHROMA_PORT", s.chroma.addr.port().to_string()),
        ("CHROMA_COLLECTION", collection.clone()),
    ];
    let config = dir.join("ai-cache.yaml");
    std::fs::write(&config, e2e::config::render(&template, &vars).unwrap()).unwrap();
    let envoy = Envoy::start_file(
        &config,
        &e2e::EnvoyOptions {
            work_dir: Some(dir),
            ..Default::default()
        },
    );
    let _report = envoy.report_on_failure();

    let asked = "How many legs does a spider have?";
    assert_eq!(
        ask(&envoy, "", &chat(asked), &[]).header("x-ai-cache"),
        Some("miss")
    );
    wait_stat(&envoy, "unknown", "ai_cache_stored", 1);
    e2e::wait::until("the vector in Chroma", || s.chroma.count(&collection) == 1);
    assert_eq!(
        ask(&envoy, "", &chat(asked), &[]).header("x-ai-cache-match"),
        Some("exact")
    );
    let paraphrase = ask(&envoy, "", &chat("How many legs do spiders have?"), &[]);
    assert_eq!(paraphrase.header("x-ai-cache-match"), Some("semantic"));
    // A near miss: another animal.
    let near = ask(&envoy, "", &chat("How many legs does an ant have?"), &[]);
    assert_eq!(near.header("x-ai-cache"), Some("miss"));

    let cached = stat(&envoy, "unknown", "cached_input_token");
    envoy.wait_for_stats("hits metered as cached input", |_| {
        stat(&envoy, "unknown", "ai_cache_hit") == 2
            && stat(&envoy, "unknown", "cached_input_token") > cached
    });
    let log = envoy.wait_access_log(4);
    let states: Vec<&str> = log.iter().filter_map(|l| l["ai_cache"].as_str()).collect();
    assert_eq!(states, ["miss", "hit", "hit", "miss"]);
}
