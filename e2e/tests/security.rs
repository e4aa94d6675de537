//! Secret hygiene and tenant isolation through real Envoy with every plugin and every kind of
//! key: provider keys (OpenAI, Anthropic, Azure, Gemini), an AWS secret (Bedrock), a Google
//! service account (Vertex AI) and the access tokens it earns, a moderation key, an embedding
//! key, and Webdis credentials in front of real Redis. After a varied workload (streams,
//! Anthropic clients, errors, blocks, masking, cache hits, refusals, failing credentials),
//! none of them appears in anything the gateway emitted; the client's own credentials never
//! reach a provider or a service; quotas and consumer-scoped cache entries stay with their
//! consumer, whatever header a client sends.

use e2e::client::{get_with, post_json, post_stream, Reply};
use e2e::config::{api_key_auth, provider_cluster, wasm_filter, ProviderEndpoint};
use e2e::mock::anthropic::AnthropicMock;
use e2e::mock::azure::AzureMock;
use e2e::mock::bedrock::BedrockMock;
use e2e::mock::faulty::{FaultyMock, FAULT_HEADER};
use e2e::mock::gemini::GeminiMock;
use e2e::mock::openai_moderation::OpenAiModerationMock;
use e2e::mock::vertex::{test_service_account, GoogleTokenMock, IssuedTokens, VertexMock};
use e2e::services::redis::RedisWebdis;
use e2e::{paths, Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, OnceLock};

const OPENAI_KEY: &str = "sk-proj-secret-openai-4f1c0a9e77d2";
const ANTHROPIC_KEY: &str = "sk-ant-api03-secret-anthropic-9b3e";
const AZURE_KEY: &str = "azure-secret-key-5d8e2b7c41a0";
const GEMINI_KEY: &str = "AIzaSy-secret-gemini-0c6f3a91d2";
const AWS_ACCESS_KEY: &str = "AKIASECRETACCESS0001";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY";
const MODERATION_KEY: &str = "sk-moderation-secret-7e2d19b4";
const WRONG_MODERATION_KEY: &str = "sk-moderation-wrong-secret-31c8";
const EMBEDDING_KEY: &str = "sk-embedding-secret-a4b6c8d0";
const WEBDIS_USER: &str = "gateway";
const WEBDIS_PASSWORD: &str = "webdis-secret-password-62f1";
const WRONG_WEBDIS_PASSWORD: &str = "webdis-wrong-password-0d93";
/// What clients present; providers must never see it.
const CLIENT_BEARER: &str = "sk-client-bearer-never-forwarded-11";
const CLIENT_X_API_KEY: &str = "sk-client-x-api-key-never-forwarded-22";
const CLIENT_API_KEY: &str = "client-api-key-never-forwarded-33";
const CLIENT_GOOG_KEY: &str = "client-goog-key-never-forwarded-44";

const PROVIDERS: [&str; 6] = [
    "openai",
    "anthropic",
    "azure",
    "gemini",
    "bedrock",
    "vertex",
];
const CHAT: &str = "/v1/chat/completions";

struct Fixture {
    envoy: Envoy,
    _redis: RedisWebdis,
    /// Every mock, by name: providers, the token endpoint, moderation, embeddings.
    mocks: Vec<(&'static str, MockServer)>,
    /// Every reply a test saw, for the secret scan.
    replies: Mutex<Vec<String>>,
}

impl Fixture {
    fn mock(&self, name: &str) -> &MockServer {
        &self.mocks.iter().find(|(n, _)| *n == name).expect("mock").1
    }

    /// Keeps a reply (status, headers, body) for the secret scan, and returns it.
    fn seen(&self, reply: Reply) -> Reply {
        let mut text = format!("{}\n", reply.status);
        for (k, v) in &reply.headers {
            text.push_str(&format!("{k}: {v}\n"));
        }
        text.push_str(&reply.text());
        self.replies.lock().unwrap().push(text);
        reply
    }

    fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        self.seen(post_json(&self.envoy.url(path), body, headers))
    }

    fn stream(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let streamed = post_stream(&self.envoy.url(path), body, headers);
        self.seen(Reply {
            status: streamed.status,
            headers: streamed.headers,
            body: streamed.body,
        })
    }
}

/// Redis and Webdis as shipped, except that Webdis takes `EVAL` only with HTTP Basic
/// credentials (the shared-Webdis layout of ai-token-ratelimit's README).
fn redis_with_credentials() -> RedisWebdis {
    let configs = paths::repo_root().join("envoy-configs");
    let webdis = std::fs::read_to_string(configs.join("ai-token-ratelimit-webdis.json"))
        .expect("webdis template");
    let locked = webdis.replace(
        r#"{"ip": "127.0.0.1/32", "enabled": ["EVAL"]}"#,
        &format!(
            r#"{{"http_basic_auth": "{WEBDIS_USER}:{WEBDIS_PASSWORD}", "enabled": ["EVAL"]}}"#
        ),
    );
    assert_ne!(locked, webdis, "the shipped Webdis ACL changed");
    let template = paths::scratch_dir("webdis-template").join("webdis.json");
    std::fs::write(&template, locked).expect("write template");
    RedisWebdis::start(&configs.join("ai-token-ratelimit-redis.conf"), &template)
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let redis = redis_with_credentials();
        let tokens = Arc::new(IssuedTokens::default());
        let mocks: Vec<(&'static str, MockServer)> = vec![
            ("openai", MockServer::start(FaultyMock::with_key(OPENAI_KEY))),
            ("anthropic", MockServer::start(AnthropicMock::with_key(ANTHROPIC_KEY))),
            ("azure", MockServer::start(AzureMock::with_key(AZURE_KEY))),
            ("gemini", MockServer::start(GeminiMock::with_key(GEMINI_KEY))),
            ("bedrock", MockServer::start(BedrockMock::new(AWS_ACCESS_KEY, AWS_SECRET, "us-east-1"))),
            ("vertex", MockServer::start(VertexMock::new("aigw-test-project", "us-east5", tokens.clone()))),
            ("google-auth", MockServer::start(GoogleTokenMock::new(tokens))),
            ("moderation", MockServer::start(OpenAiModerationMock { api_key: MODERATION_KEY.into() })),
            ("embedder", MockServer::start(OpenAiMock::with_key(EMBEDDING_KEY))),
        ];
        let providers = json!({"providers": [
            {"id": "openai", "type": "openai", "apiTokens": [OPENAI_KEY]},
            {"id": "anthropic", "type": "claude", "apiTokens": [ANTHROPIC_KEY], "modelMapping": {"*": "claude-sonnet-4-5"}},
            {"id": "azure", "type": "azure", "apiTokens": [AZURE_KEY],
             "azureServiceUrl": "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"},
            {"id": "azure-by-model", "type": "azure", "apiTokens": [AZURE_KEY], "azureServiceUrl": "https://res.openai.azure.com"},
            {"id": "gemini", "type": "gemini", "apiTokens": [GEMINI_KEY], "modelMapping": {"*": "gemini-2.5-flash"}},
            {"id": "bedrock", "type": "bedrock", "awsAccessKey": AWS_ACCESS_KEY, "awsSecretKey": AWS_SECRET,
             "awsRegion": "us-east-1", "modelMapping": {"gpt-*": "us.amazon.nova-micro-v1:0", "*": ""}},
            {"id": "vertex", "type": "vertex", "vertexRegion": "us-east5", "vertexProjectId": "aigw-test-project",
             "vertexAuthKey": test_service_account(), "vertexAuthServiceName": "google-auth",
             "modelMapping": {"*": "gemini-2.5-flash"}}
        ]});
        let edge = wasm_filter("ai-proxy", &providers);
        let quota = json!({"rule_name": "per-consumer", "failure_policy": "open",
            "redis": {"service_name": "webdis", "username": WEBDIS_USER, "password": WEBDIS_PASSWORD, "timeout": 1000},
            "rule_items": [{"limit_by_per_consumer": "", "limit_keys": [
                {"key": "carol", "query_per_day": 3}, {"key": "dave", "query_per_day": 3},
                {"key": "*", "token_per_minute": 10_000_000}]}],
            "_rules_": [{"_match_route_": ["wrong-webdis-password"],
                "redis": {"service_name": "webdis", "username": WEBDIS_USER, "password": WRONG_WEBDIS_PASSWORD, "timeout": 1000}}]});
        let moderation = |key: &str| json!({"type": "openai", "cluster": "moderation", "apiKey": key, "failurePolicy": "closed"});
        let safety = json!({"denyMessage": "Blocked.", "service": moderation(MODERATION_KEY),
            "dataMasking": {"types": ["email"]},
            "_rules_": [{"_match_route_": ["wrong-moderation-key"], "service": moderation(WRONG_MODERATION_KEY)}]});
        let cache = json!({"scope": "consumer",
            "embedding": {"type": "openai", "serviceName": "embedder", "apiKey": EMBEDDING_KEY, "model": "text-embedding-3-small"},
            "vector": {"type": "local", "threshold": 0.99}});
        let mut gateway = Gateway::new()
            .filter(api_key_auth(&[("key-alice", "alice"), ("key-bob", "bob"), ("key-carol", "carol"), ("key-dave", "dave")]))
            .plugin_instance("ai-proxy", "ai-proxy-client", json!({}))
            .plugin("ai-statistics", json!({}))
            .plugin("ai-token-ratelimit", quota)
            .plugin("ai-content-safety", safety)
            .plugin("ai-cache", cache);
        let no_auth = json!({"envoy.filters.http.api_key_auth":
            {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}});
        gateway = gateway
            .raw_route(json!({"name": "open", "match": {"prefix": "/open/"}, "route": {"cluster": "openai"},
                "typed_per_filter_config": no_auth}))
            .route("wrong-webdis-password", "/wrong-webdis-password/", "openai")
            .route("wrong-moderation-key", "/wrong-moderation-key/", "openai")
            .route("azure-by-model", "/azure-by-model/", "azure-by-model")
            .raw_cluster(provider_cluster(
                "azure-by-model",
                &[ProviderEndpoint::new(mocks[2].1.addr, "azure-by-model")],
                vec![edge.clone()],
            ));
        for (name, mock) in &mocks {
            if PROVIDERS.contains(name) {
                gateway = gateway
                    .route(name, &format!("/{name}/"), name)
                    .raw_cluster(provider_cluster(
                        name,
                        &[ProviderEndpoint::new(mock.addr, name)],
                        vec![edge.clone()],
                    ));
            } else {
                gateway = gateway.cluster(name, mock.addr);
            }
        }
        let envoy = Envoy::start(&gateway.cluster("webdis", redis.webdis).to_json());
        Fixture {
            envoy,
            _redis: redis,
            mocks,
            replies: Mutex::new(Vec::new()),
        }
    })
}

fn chat(question: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": question}]})
}

fn streaming(question: &str) -> Value {
    let mut body = chat(question);
    body["stream"] = json!(true);
    body
}

fn message(question: &str, stream: bool) -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 100, "stream": stream,
           "messages": [{"role": "user", "content": question}]})
}

/// Headers of a client: its gateway key, and provider-style credentials of its own.
fn client(key: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-api-key", key),
        (
            "authorization",
            "Bearer sk-client-bearer-never-forwarded-11",
        ),
        ("anthropic-version", "2023-06-01"),
    ]
}

/// The secrets the gateway holds, as they could appear: whole, and in the forms they travel in.
fn secrets() -> Vec<(String, String)> {
    let account: Value = serde_json::from_str(&test_service_account()).expect("account json");
    let private_key = account["private_key"].as_str().expect("private key");
    // A line from the middle of the PEM body: any copy of the key contains it.
    let key_line = private_key
        .lines()
        .nth(5)
        .expect("a PEM body line")
        .to_string();
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    };
    let named = |name: &str, value: &str| (name.to_string(), value.to_string());
    vec![
        named("OpenAI key", OPENAI_KEY),
        named("Anthropic key", ANTHROPIC_KEY),
        named("Azure key", AZURE_KEY),
        named("Gemini key", GEMINI_KEY),
        named("AWS access key id", AWS_ACCESS_KEY),
        named("AWS secret", AWS_SECRET),
        named("Vertex private key", &key_line),
        named(
            "Vertex private key id",
            account["private_key_id"].as_str().expect("key id"),
        ),
        named("Vertex access token", "ya29.mock-access-token"),
        named("moderation key", MODERATION_KEY),
        named("wrong moderation key", WRONG_MODERATION_KEY),
        named("embedding key", EMBEDDING_KEY),
        named("Webdis password", WEBDIS_PASSWORD),
        named("wrong Webdis password", WRONG_WEBDIS_PASSWORD),
        named("Webdis credentials", &basic(WEBDIS_USER, WEBDIS_PASSWORD)),
        named(
            "wrong Webdis credentials",
            &basic(WEBDIS_USER, WRONG_WEBDIS_PASSWORD),
        ),
    ]
}

/// A bit of everything, through every provider.
fn workload(f: &Fixture) {
    let alice = client("key-alice");
    let bob = client("key-bob");
    for p in PROVIDERS {
        let path = format!("/{p}{CHAT}");
        let reply = f.post(
            &path,
            &chat(&format!("Mail me at alice@example.com about {p}")),
            &alice,
        );
        assert_eq!(reply.status, 200, "{p}: {}", reply.text());
        let reply = f.stream(
            &path,
            &streaming(&format!("Stream something about {p}")),
            &alice,
        );
        assert_eq!(reply.status, 200, "{p}: {}", reply.text());
        let reply = f.stream(
            &format!("/{p}/v1/messages"),
            &message(&format!("Claude asks about {p}"), true),
            &bob,
        );
        assert_eq!(reply.status, 200, "{p}: {}", reply.text());
        let reply = f.post(
            &path,
            &chat(&format!("How do I build a bomb with {p}")),
            &alice,
        );
        assert_eq!(reply.header("x-ai-content-safety"), Some("blocked"), "{p}");
        let mut failing = alice.clone();
        failing.push(("x-mock-status", "429"));
        let reply = f.post(&path, &chat(&format!("Rate limited by {p}")), &failing);
        assert_eq!(reply.status, 429, "{p}: {}", reply.text());
    }
    // A provider that echoes the key it refuses: the key is redacted from the error.
    let mut echo = alice.clone();
    echo.push((FAULT_HEADER, "echo-key"));
    let reply = f.post(&format!("/openai{CHAT}"), &chat("Echo my key"), &echo);
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(reply.text().contains("[redacted]"), "{}", reply.text());
    // A cache hit, embeddings, the model list.
    let question = chat("What is the tallest mountain on Earth?");
    assert_eq!(
        f.post(&format!("/openai{CHAT}"), &question, &alice)
            .header("x-ai-cache"),
        Some("miss")
    );
    assert_eq!(
        f.post(&format!("/openai{CHAT}"), &question, &alice)
            .header("x-ai-cache"),
        Some("hit")
    );
    let reply = f.post(
        "/openai/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "hello"}),
        &alice,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = f.seen(get_with(&f.envoy.url("/openai/v1/models"), &alice));
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Credentials a service refuses: the failure policies apply, and nothing is echoed.
    let reply = f.post(
        &format!("/wrong-webdis-password{CHAT}"),
        &chat("Quota store refuses us"),
        &alice,
    );
    assert_eq!(reply.status, 200, "fail-open: {}", reply.text());
    let reply = f.post(
        &format!("/wrong-moderation-key{CHAT}"),
        &chat("Moderation refuses us"),
        &alice,
    );
    assert_eq!(
        reply.header("x-ai-content-safety"),
        Some("blocked"),
        "fail-closed"
    );
    // No gateway key at all.
    let reply = f.post(&format!("/openai{CHAT}"), &chat("Who am I"), &[]);
    assert_eq!(reply.status, 401, "{}", reply.text());
}

#[test]
fn no_secret_reaches_logs_metrics_access_logs_or_answers() {
    let f = fixture();
    let _report = f.envoy.report_on_failure();
    workload(f);
    // Everything is written: the access log and the counters are flushed within a second.
    f.envoy.wait_for_stats("store failures counted", |s| {
        s.get("wasmcustom.token_ratelimit_rule.per-consumer.metric.store_failure")
            .is_some_and(|n| *n >= 1)
    });
    std::thread::sleep(std::time::Duration::from_millis(600));
    let read = |file: &str| std::fs::read_to_string(f.envoy.dir.join(file)).unwrap_or_default();
    let admin = |path: &str| {
        e2e::client::get(&f.envoy.admin_url(path))
            .expect("admin")
            .text()
    };
    let emitted = [
        ("Envoy log", read("envoy.log")),
        ("Envoy stderr", read("stderr.log")),
        ("access log", read("access.log")),
        ("/stats", admin("/stats")),
        ("/stats/prometheus", admin("/stats/prometheus")),
        ("answers", f.replies.lock().unwrap().join("\n")),
    ];
    assert!(
        emitted[0].1.contains("quota store failed"),
        "the failures were logged"
    );
    assert!(
        emitted[2].1.lines().count() >= 30,
        "the access log has the workload"
    );
    let mut leaks = Vec::new();
    for (secret_name, secret) in secrets() {
        for (place, text) in &emitted {
            if let Some(at) = text.find(&secret) {
                let start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(80)
                    .map_or(0, |(i, _)| i);
                leaks.push(format!(
                    "{secret_name} in {place}: …{}…",
                    &text[start..at + secret.len()]
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

#[test]
fn client_credentials_never_reach_a_provider_or_a_service() {
    let f = fixture();
    let _report = f.envoy.report_on_failure();
    // Every credential header a client might send, on a route without gateway keys (so none
    // is consumed by the key check) and through every provider.
    let all = [
        (
            "authorization",
            "Bearer sk-client-bearer-never-forwarded-11",
        ),
        ("x-api-key", CLIENT_X_API_KEY),
        ("api-key", CLIENT_API_KEY),
        ("x-goog-api-key", CLIENT_GOOG_KEY),
        ("anthropic-version", "2023-06-01"),
    ];
    let reply = f.post(&format!("/open{CHAT}"), &chat("Forward my keys?"), &all);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = f.post(
        "/open/v1/messages",
        &message("Forward my keys, Claude?", false),
        &all,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    for p in PROVIDERS {
        // Questions of their own, so that no cache hit stands in for the provider.
        let reply = f.stream(
            &format!("/{p}/v1/messages"),
            &message(&format!("And now, {p}?"), true),
            &client("key-bob"),
        );
        assert_eq!(reply.status, 200, "{p}: {}", reply.text());
        let reply = f.post(
            &format!("/{p}{CHAT}"),
            &chat(&format!("And here, {p}?")),
            &client("key-bob"),
        );
        assert_eq!(reply.status, 200, "{p}: {}", reply.text());
    }
    for (name, mock) in &f.mocks {
        let requests = mock.requests.all();
        assert!(
            !requests.is_empty() || *name == "google-auth",
            "{name} was called"
        );
        for request in requests {
            let everything = format!(
                "{:?} {}",
                request.headers,
                String::from_utf8_lossy(&request.body)
            );
            for secret in [
                CLIENT_BEARER,
                CLIENT_X_API_KEY,
                CLIENT_API_KEY,
                CLIENT_GOOG_KEY,
                "key-bob",
                "key-alice",
            ] {
                assert!(
                    !everything.contains(secret),
                    "{name} received the client's {secret}: {} {}",
                    request.path,
                    everything
                );
            }
        }
    }
}

fn remaining_requests(reply: &Reply) -> Option<u64> {
    reply.header("x-ratelimit-remaining-requests")?.parse().ok()
}

#[test]
fn one_consumer_cannot_spend_another_consumers_quota() {
    let f = fixture();
    let _report = f.envoy.report_on_failure();
    let path = format!("/openai{CHAT}");
    let dave = client("key-dave");
    let first = f.post(&path, &chat("Dave's first question"), &dave);
    assert_eq!(remaining_requests(&first), Some(2), "{:?}", first.headers);
    // Carol spends her three requests, then tries to spend Dave's by naming him.
    let carol = client("key-carol");
    for i in 0..3 {
        let reply = f.post(&path, &chat(&format!("Carol's question {i}")), &carol);
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(f.post(&path, &chat("Carol again"), &carol).status, 429);
    let mut as_dave = carol.clone();
    as_dave.push(("x-mse-consumer", "dave"));
    let reply = f.post(&path, &chat("Carol posing as Dave"), &as_dave);
    assert_eq!(
        reply.status,
        429,
        "the consumer comes from the key: {}",
        reply.text()
    );
    // Dave's quota is his own.
    let second = f.post(&path, &chat("Dave's second question"), &dave);
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(remaining_requests(&second), Some(1), "{:?}", second.headers);
}

#[test]
fn consumer_scoped_cache_entries_stay_with_their_consumer() {
    let f = fixture();
    let _report = f.envoy.report_on_failure();
    let path = format!("/openai{CHAT}");
    let question = chat("What is my account balance, assistant?");
    let provider_calls = || {
        f.mock("openai")
            .requests
            .all()
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains("my account balance"))
            .count()
    };
    let alice = client("key-alice");
    assert_eq!(
        f.post(&path, &question, &alice).header("x-ai-cache"),
        Some("miss")
    );
    let hit = f.post(&path, &question, &alice);
    assert_eq!(hit.header("x-ai-cache"), Some("hit"), "alice's own entry");
    assert_eq!(provider_calls(), 1);
    // Bob asks the very same question posing as alice: neither the exact nor the semantic
    // layer hands him alice's answer (his consumer is the one his key names).
    let bob = client("key-bob");
    let mut as_alice = bob.clone();
    as_alice.push(("x-mse-consumer", "alice"));
    let reply = f.post(&path, &question, &as_alice);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("x-ai-cache"),
        Some("miss"),
        "bob got alice's entry"
    );
    assert_eq!(provider_calls(), 2, "bob's question reached the provider");
    // The answer was kept for bob.
    assert_eq!(
        f.post(&path, &question, &bob).header("x-ai-cache"),
        Some("hit"),
        "bob's own entry"
    );
}

#[test]
fn a_model_name_never_moves_a_request_to_another_provider_path() {
    let f = fixture();
    let _report = f.envoy.report_on_failure();
    let alice = client("key-alice");
    for (route, mock, model) in [
        ("azure-by-model", "azure", "../../openai/files"),
        ("azure-by-model", "azure", ".."),
        ("bedrock", "bedrock", ".."),
    ] {
        let marker = format!("Where does {model} on {route} go?");
        let mut body = chat(&marker);
        body["model"] = json!(model);
        let reply = f.post(&format!("/{route}{CHAT}"), &body, &alice);
        assert_eq!(reply.status, 400, "{route} {model}: {}", reply.text());
        assert_eq!(reply.json()["error"]["param"], "model", "{}", reply.text());
        let called = f
            .mock(mock)
            .requests
            .all()
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(&marker));
        assert!(!called, "{route} {model}: the provider was called");
    }
    // A model the deployment takes: the path is that deployment's.
    let reply = f.post(
        &format!("/azure-by-model{CHAT}"),
        &chat("A plain model"),
        &alice,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = f
        .mock("azure")
        .requests
        .all()
        .into_iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains("A plain model"))
        .expect("azure called");
    assert!(
        sent.path
            .starts_with("/openai/deployments/gpt-4o/chat/completions"),
        "{}",
        sent.path
    );
}
