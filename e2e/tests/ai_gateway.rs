//! `envoy-configs/suite.yaml` as shipped: the whole chain in one filter, downstream and
//! upstream each in a VM of its own. Both client APIs, the prompt check, metering, the token
//! quota, the cache, failover
//! to the next provider and the longer-context replay work through it, and no callout of the
//! suite re-enters the VM that makes it.

use e2e::client::{post_json, post_stream};
use e2e::mock::anthropic::AnthropicMock;
use e2e::mock::gemini::GeminiMock;
use e2e::mock::openai::{content_pieces, error};
use e2e::mock::{Provider, Recorded, Reply};
use e2e::{Envoy, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const OPENAI_KEY: &str = "sk-suite-openai-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-suite-0123456789";
const GEMINI_KEY: &str = "AIza-suite-0123456789";
/// Prompts with this are too long for every model but the longer-context one.
const LONG_DOCUMENT: &str = "a very long document";

/// OpenAI that may fail with a status, and refuses long prompts for its short models.
struct OpenAiProvider {
    failing: Arc<Mutex<Option<u16>>>,
    inner: OpenAiMock,
}

impl Provider for OpenAiProvider {
    fn handle(&self, request: &Recorded) -> Reply {
        let body = request.json();
        if body["model"] != "gpt-4.1" && body.to_string().contains(LONG_DOCUMENT) {
            let message = "This model's maximum context length is 128000 tokens.";
            return error(
                400,
                message,
                Some("messages"),
                Some("context_length_exceeded"),
            );
        }
        if let Some(status) = *self.failing.lock().unwrap() {
            return error(status, "openai failing", None, None);
        }
        self.inner.handle(request)
    }
}

struct Suite {
    envoy: Envoy,
    openai: MockServer,
    anthropic: MockServer,
    failing: Arc<Mutex<Option<u16>>>,
}

fn suite() -> Suite {
    let failing = Arc::new(Mutex::new(None));
    let openai = MockServer::start(OpenAiProvider {
        failing: failing.clone(),
        inner: OpenAiMock::with_key(OPENAI_KEY),
    });
    let anthropic = MockServer::start(AnthropicMock::with_key(ANTHROPIC_KEY));
    let gemini = MockServer::start(GeminiMock::with_key(GEMINI_KEY));
    let stand_ins: [(&str, &str, SocketAddr); 3] = [
        ("openai", "api.openai.com", openai.addr),
        ("anthropic", "api.anthropic.com", anthropic.addr),
        ("gemini", "generativelanguage.googleapis.com", gemini.addr),
    ];
    let config = e2e::config::shipped_on_mocks(
        "suite.yaml",
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.into()),
            ("GEMINI_API_KEY", GEMINI_KEY.into()),
        ],
        &stand_ins,
    );
    Suite {
        envoy: Envoy::start_yaml(&config, "suite"),
        openai,
        anthropic,
        failing,
    }
}

fn ask(content: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]})
}

#[test]
fn the_shipped_suite_runs_the_whole_chain_in_one_filter() {
    let suite = suite();
    let envoy = &suite.envoy;
    let _report = envoy.report_on_failure();
    let url = envoy.url("/v1/chat/completions");

    // The OpenAI API, answered by the first provider with the gateway's key.
    let reply = post_json(
        &url,
        &ask("What is the capital of France?"),
        &[("authorization", "Bearer client-key")],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["object"], "chat.completion");
    assert_eq!(reply.header("x-ai-fallback-provider"), Some("openai"));
    let first_usage = reply.json()["usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(reply.header("x-ratelimit-limit-tokens"), Some("100000"));
    let sent = suite.openai.requests.last().unwrap();
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );

    // The same question again: answered from the cache, the provider not called.
    let before = suite.openai.requests.count();
    let again = post_json(&url, &ask("What is the capital of France?"), &[]);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("x-ai-cache"), Some("hit"));
    let content = |r: &e2e::client::Reply| r.json()["choices"][0]["message"]["content"].clone();
    assert_eq!(content(&again), content(&reply));
    assert_eq!(suite.openai.requests.count(), before);

    // Anthropic's API on the same route: the client edge downstream, the provider edge upstream.
    let message = post_json(
        &envoy.url("/v1/messages"),
        &json!({"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello!"}]}),
        &[("anthropic-version", "2023-06-01")],
    );
    assert_eq!(message.status, 200, "{}", message.text());
    assert_eq!(message.json()["type"], "message");
    assert!(suite.openai.requests.last().unwrap().json()["messages"].is_array());

    // The prompt check answers before any provider is called.
    let before = suite.openai.requests.count();
    let blocked = post_json(&url, &ask("give me a bomb recipe"), &[]);
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    assert_eq!(
        blocked.json()["choices"][0]["message"]["content"],
        "Sorry, I can't help with that."
    );
    assert_eq!(
        suite.openai.requests.count(),
        before,
        "a blocked prompt never reaches a provider"
    );

    // OpenAI failing: the next provider answers, streams included, in its own wire format.
    *suite.failing.lock().unwrap() = Some(503);
    let mut streaming = ask("Tell me a story");
    streaming["stream"] = json!(true);
    let streamed = post_stream(&url, &streaming, &[]);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("x-ai-fallback-provider"), Some("anthropic"));
    assert_eq!(streamed.header("x-ai-fallback-attempts"), Some("2"));
    assert_eq!(streamed.text(), content_pieces(5, None).collect::<String>());
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        suite.anthropic.requests.last().unwrap().header("x-api-key"),
        Some(ANTHROPIC_KEY)
    );
    *suite.failing.lock().unwrap() = None;

    // Too long for the model: the front calls the longer-context model itself. Its cluster's
    // filters run in the upstream VM; a call into the calling VM would panic it and leave the
    // client with the provider's 400.
    let long = post_json(&url, &ask(LONG_DOCUMENT), &[]);
    assert_eq!(long.status, 200, "{}", long.text());
    assert_eq!(long.header("x-ai-fallback-reason"), Some("context_length"));
    assert_eq!(long.json()["model"], "gpt-4.1");
    assert_eq!(
        suite.openai.requests.last().unwrap().json()["model"],
        "gpt-4.1"
    );

    // Requests are metered by the model the client asked for, whoever served them.
    envoy.wait_for_stats("tokens of gpt-4o metered", |stats| {
        let metered: u64 = stats
            .iter()
            .filter(|(name, _)| {
                name.contains(".model.gpt-4o.") && name.ends_with(".metric.total_token")
            })
            .map(|(_, value)| value)
            .sum();
        metered > first_usage
    });
    assert_eq!(envoy.wasm_panics(), Vec::<String>::new());
}
