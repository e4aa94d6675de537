//! Hostile suite, streams: what a broken or hostile provider can do with the framing of a
//! streamed answer. An event that never ends (64 KiB of text every 10 ms, no line end) or one
//! complete event of 1.5 MiB must end the stream with an error in the client's API, a log line
//! and a metric, with Envoy's memory bounded: never unbounded, never silent. Checked for the
//! full chain (client edge, ai-statistics, ai-content-safety, provider edge on the cluster),
//! for OpenAI and Anthropic clients, and for the plugins that hold or translate events alone.

use e2e::client::{post_stream_may_break, Streamed};
use e2e::config::{provider_cluster, ProviderEndpoint};
use e2e::mock::endless::{EndlessMock, ENDLESS_HEADER};
use e2e::{Envoy, Gateway, MockServer};
use serde_json::{json, Value};
use std::sync::OnceLock;

struct Fixture {
    envoy: Envoy,
    _provider: MockServer,
}

/// Routes: `/chain/` (the README's chain, provider edge upstream), `/safety/` (content safety
/// alone, straight to the provider), `/proxy/` (ai-proxy alone as the last downstream filter).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let provider = MockServer::start(EndlessMock);
        let providers = json!({"providers": [{"id": "openai", "type": "openai", "apiTokens": ["sk-endless"]}],
            "forwardHeaders": ["x-mock-*", "x-route"]});
        let edge = e2e::config::wasm_filter("ai-proxy", &providers);
        let gateway = Gateway::new()
            .plugin_instance("ai-proxy", "ai-proxy-client", json!({}))
            .plugin("ai-statistics", json!({}))
            .plugin(
                "ai-content-safety",
                json!({"local": {"denyWords": ["bomb recipe"]}, "checkResponse": true}),
            )
            .plugin_instance("ai-proxy", "ai-proxy-alone", providers.clone())
            .raw_route(json!({"name": "chain", "match": {"prefix": "/chain/"},
                "route": {"cluster": "openai", "timeout": "300s"}, "typed_per_filter_config": disabled(&["ai-proxy-alone"])}))
            .raw_route(json!({"name": "safety", "match": {"prefix": "/safety/"},
                "route": {"cluster": "direct", "timeout": "300s"}, "typed_per_filter_config": disabled(&["ai-proxy-client", "ai-statistics", "ai-proxy-alone"])}))
            // ai-proxy alone points the request at the provider's path, and Envoy matches the
            // route again: this route matches on a header the plugin leaves alone.
            .raw_route(json!({"name": "proxy",
                "match": {"prefix": "/", "headers": [{"name": "x-route", "string_match": {"exact": "proxy"}}]},
                "route": {"cluster": "direct", "timeout": "300s"}, "typed_per_filter_config": disabled(&["ai-proxy-client", "ai-statistics", "ai-content-safety"])}))
            .raw_cluster(provider_cluster(
                "openai",
                &[ProviderEndpoint::new(provider.addr, "openai")],
                vec![edge],
            ))
            .cluster("direct", provider.addr);
        Fixture {
            envoy: Envoy::start(&gateway.to_json()),
            _provider: provider,
        }
    })
}

/// Switches the named filters off on one route.
fn disabled(filters: &[&str]) -> Value {
    let off = json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true});
    Value::Object(
        filters
            .iter()
            .map(|f| (f.to_string(), off.clone()))
            .collect(),
    )
}

/// `/proxy/…` is sent as `/…` with the header the `proxy` route matches on.
fn ask(path: &str, shape: &str, pieces: usize) -> Streamed {
    let f = fixture();
    let (path, route) = match path.strip_prefix("/proxy") {
        Some(rest) => (rest, "proxy"),
        None => (path, ""),
    };
    let body = if path.contains("/v1/messages") {
        json!({"model": "gpt-4o-mini", "max_tokens": 64, "stream": true,
               "messages": [{"role": "user", "content": "tell me a long story"}]})
    } else {
        json!({"model": "gpt-4o-mini", "stream": true,
               "messages": [{"role": "user", "content": "tell me a long story"}]})
    };
    let pieces = pieces.to_string();
    post_stream_may_break(
        &f.envoy.url(path),
        &body,
        &[
            (ENDLESS_HEADER, shape),
            ("x-mock-pieces", &pieces),
            ("x-route", route),
        ],
    )
}

/// The stream ended with OpenAI's error event naming the bound, then `[DONE]`, and carried
/// none of the oversized event.
fn assert_openai_error_end(reply: &Streamed, what: &str) {
    let _report = fixture().envoy.report_on_failure();
    assert_eq!(reply.status, 200, "{what}");
    let data = reply.data();
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "{what}: {:?}",
        tail(reply)
    );
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap_or(Value::Null);
    assert_eq!(
        error["error"]["code"],
        "event_too_large",
        "{what}: {:?}",
        tail(reply)
    );
    assert!(
        reply.body.len() < 64 << 10,
        "{what}: {} bytes reached the client",
        reply.body.len()
    );
    assert!(
        !data
            .iter()
            .any(|d| d.contains("\"finish_reason\":\"stop\"")),
        "{what}: the cut stream looks complete"
    );
}

fn tail(reply: &Streamed) -> String {
    let text = String::from_utf8_lossy(&reply.body);
    text.chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

#[test]
fn a_never_ending_event_ends_the_chain_with_an_error() {
    assert_openai_error_end(
        &ask("/chain/v1/chat/completions", "never-ends", 200),
        "chain",
    );
    let f = fixture();
    f.envoy
        .wait_for_stats("the oversized event is counted", |stats| {
            stats
                .iter()
                .any(|(k, v)| k.contains("stream_events_too_large") && *v >= 1)
        });
    assert!(
        f.envoy.log().contains("maxEventBytes"),
        "no log line names the bound"
    );
}

#[test]
fn anthropic_clients_get_an_error_event() {
    let reply = ask("/chain/v1/messages", "never-ends", 200);
    let _report = fixture().envoy.report_on_failure();
    let events = reply.events();
    let (kind, data) = events.last().expect("events");
    assert_eq!(kind, "error", "{}", tail(&reply));
    assert_eq!(data["type"], "error");
    assert!(data["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("maxEventBytes"));
}

#[test]
fn a_huge_complete_event_is_not_dropped_silently() {
    assert_openai_error_end(&ask("/chain/v1/chat/completions", "huge", 0), "chain, huge");
    assert_openai_error_end(
        &ask("/proxy/v1/chat/completions", "huge", 0),
        "ai-proxy alone, huge",
    );
}

#[test]
fn each_plugin_that_holds_events_is_bounded_alone() {
    assert_openai_error_end(
        &ask("/safety/v1/chat/completions", "never-ends", 200),
        "content safety",
    );
    assert_openai_error_end(
        &ask("/proxy/v1/chat/completions", "never-ends", 200),
        "ai-proxy alone",
    );
}

#[test]
fn four_endless_streams_keep_envoy_memory_bounded() {
    let f = fixture();
    // Warm the workers' VMs first, so the figure is the streams' own.
    ask("/safety/v1/chat/completions", "never-ends", 4);
    let (replies, growth) = f.envoy.rss_growth_during(|| {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let path = if i % 2 == 0 { "/safety/" } else { "/chain/" };
                std::thread::spawn(move || {
                    ask(&format!("{path}v1/chat/completions"), "never-ends", 200)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("stream"))
            .collect::<Vec<_>>()
    });
    for reply in &replies {
        assert_openai_error_end(reply, "parallel stream");
    }
    eprintln!("four endless streams: Envoy grew {} KiB", growth >> 10);
    // Each stream sends 12.5 MiB; a bound of 256 KiB per event keeps the growth to a few MiB.
    assert!(growth < 48 << 20, "Envoy grew {} MiB", growth >> 20);
}
