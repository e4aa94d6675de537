//! Hot swap through extension config discovery: plugins and their configs are replaced ten
//! times while 50 SSE streams and a WebSocket run through Envoy; nothing in flight is cut, new
//! requests see each new version within a second, and a bad config or a corrupt module is
//! refused while the old plugin keeps serving.

use e2e::client::{get_with, post_stream};
use e2e::config::{ecds_resource, static_cluster};
use e2e::mock::openai::content_pieces;
use e2e::mock::websocket::EchoServer;
use e2e::{ecds, paths, Envoy, Gateway, MockServer, OpenAiMock};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::Message;

const STREAMS: usize = 50;
const SWAPS: usize = 10;
/// Each stream: 40 chunks 100 ms apart, so every stream spans several swaps.
const CHUNKS: usize = 40;

fn client_edge(version: usize) -> Value {
    json!({"models": [format!("version-{version}")]})
}

fn listed_version(envoy: &Envoy) -> String {
    let reply = get_with(&envoy.url("/v1/models"), &[]);
    reply.json()["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until requests see `version` (a swap promises it within a second); returns how long.
fn served_within_a_second(envoy: &Envoy, version: usize) -> Duration {
    let since = Instant::now();
    let wanted = format!("version-{version}");
    while listed_version(envoy) != wanted {
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "version {version} not served 1 s after the swap"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    since.elapsed()
}

#[test]
fn plugins_swap_under_load_without_cutting_streams_or_websockets() {
    let mock = MockServer::start(OpenAiMock::default());
    let echo = EchoServer::start();
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin_ecds("ai-proxy", "ai-proxy", client_edge(0))
            .plugin_ecds("ai-statistics", "ai-statistics", json!({}))
            // No model API: ai-proxy, which refuses what it does not translate, is off there.
            .raw_route(json!({"name": "ws", "match": {"prefix": "/ws"},
                "route": {"cluster": "ws", "timeout": "0s", "upgrade_configs": [{"upgrade_type": "websocket"}]},
                "typed_per_filter_config": {"ai-proxy": {
                    "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}}}))
            .route("llm", "/", "provider")
            .cluster("provider", mock.addr)
            .raw_cluster(static_cluster("ws", echo.addr))
            .to_json(),
    );
    let _report = envoy.report_on_failure();
    assert_eq!(listed_version(&envoy), "version-0");

    // 50 long streams.
    let url = envoy.url("/v1/chat/completions");
    let streams: Vec<_> = (0..STREAMS)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": format!("stream {i}")}]});
                let chunks = CHUNKS.to_string();
                post_stream(&url, &body, &[("authorization", "Bearer k"), ("x-mock-chunks", &chunks), ("x-mock-delay-ms", "100")])
            })
        })
        .collect();

    // One WebSocket, exchanging a message every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let exchanged = Arc::new(AtomicUsize::new(0));
    let websocket = {
        let (stop, exchanged) = (stop.clone(), exchanged.clone());
        let ws_url = format!("ws://127.0.0.1:{}/ws", envoy.port());
        std::thread::spawn(move || -> Result<(), String> {
            let (mut socket, _) =
                tungstenite::connect(ws_url.as_str()).map_err(|e| format!("connect: {e}"))?;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("message {n}");
                socket
                    .send(Message::text(text.clone()))
                    .map_err(|e| format!("send {n}: {e}"))?;
                match socket.read().map_err(|e| format!("read {n}: {e}"))? {
                    Message::Text(echoed) if echoed.as_str() == text => {}
                    other => return Err(format!("echo {n} was {other:?}")),
                }
                n += 1;
                exchanged.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = socket.close(None);
            Ok(())
        })
    };

    // Ten swaps of the module (a new file each time, as a rebuild gives) and its config.
    std::thread::sleep(Duration::from_millis(300));
    let wasm_dir = envoy.dir.join("wasm");
    std::fs::create_dir_all(&wasm_dir).unwrap();
    let swaps_started = Instant::now();
    let mut worst_visible = Duration::ZERO;
    for version in 1..=SWAPS {
        let wasm = wasm_dir.join(format!("ai_proxy.v{version}.wasm"));
        std::fs::copy(paths::plugin_wasm("ai-proxy"), &wasm).unwrap();
        let applied = envoy
            .swap(
                "ai-proxy",
                &ecds_resource("ai-proxy", "ai-proxy", &wasm, &client_edge(version)),
            )
            .unwrap_or_else(|log| panic!("swap {version} refused:\n{log}"));
        let visible = served_within_a_second(&envoy, version);
        worst_visible = worst_visible.max(applied + visible);
        if version % 3 == 0 {
            let config = json!({"consumer_header": format!("x-consumer-v{version}")});
            let resource = ecds_resource(
                "ai-statistics",
                "ai-statistics",
                &paths::plugin_wasm("ai-statistics"),
                &config,
            );
            envoy
                .swap("ai-statistics", &resource)
                .unwrap_or_else(|log| panic!("statistics swap refused:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let swapping = swaps_started.elapsed();
    println!("{SWAPS} swaps in {swapping:?}; slowest swap visible to new requests after {worst_visible:?}");

    // A bad config is refused and the last good version keeps serving.
    let bad = ecds_resource(
        "ai-proxy",
        "ai-proxy",
        &paths::plugin_wasm("ai-proxy"),
        &json!({"modelz": []}),
    );
    let refused = envoy.swap("ai-proxy", &bad);
    assert!(
        refused.is_err(),
        "Envoy accepted an invalid ai-proxy config"
    );
    assert_eq!(listed_version(&envoy), format!("version-{SWAPS}"));

    // Every stream that was in flight during the swaps finished intact.
    let expected = content_pieces(CHUNKS, None).collect::<String>();
    for (i, stream) in streams.into_iter().enumerate() {
        let streamed = stream.join().unwrap();
        assert_eq!(streamed.status, 200, "stream {i}");
        assert_eq!(streamed.text(), expected, "stream {i} lost chunks");
        assert_eq!(
            streamed.data().last().map(String::as_str),
            Some("[DONE]"),
            "stream {i}"
        );
        assert!(
            streamed.total > swapping,
            "stream {i} ended before the swaps did ({:?})",
            streamed.total
        );
    }
    stop.store(true, Ordering::Relaxed);
    websocket
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the WebSocket broke: {e}"));
    assert!(
        exchanged.load(Ordering::Relaxed) >= 20,
        "the WebSocket kept exchanging through the swaps"
    );
    assert_eq!(
        envoy.stat("listener_manager.listener_modified"),
        0,
        "no listener drain"
    );
    assert!(envoy.wasm_panics().is_empty());
}

#[test]
fn a_corrupt_module_is_refused_and_the_old_plugin_keeps_serving() {
    let mock = MockServer::start(OpenAiMock::default());
    let envoy = Envoy::start(
        &Gateway::new()
            .plugin_ecds("ai-proxy", "ai-proxy", client_edge(0))
            .route("llm", "/", "provider")
            .cluster("provider", mock.addr)
            .to_json(),
    );
    let _report = envoy.report_on_failure();
    let wasm_dir = envoy.dir.join("wasm");

    // A build cut short: the first half of the module, under its own content-addressed name
    // as `make reload` stages every build.
    let built = std::fs::read(paths::plugin_wasm("ai-proxy")).unwrap();
    let cut_short = paths::scratch_dir("corrupt-wasm").join("ai_proxy.wasm");
    std::fs::write(&cut_short, &built[..built.len() / 2]).unwrap();
    let corrupt = ecds::versioned_wasm(&cut_short, &wasm_dir).unwrap();
    let refused = envoy.swap(
        "ai-proxy",
        &ecds_resource("ai-proxy", "ai-proxy", &corrupt, &client_edge(1)),
    );
    let why = refused.expect_err("Envoy accepted a corrupt module");
    assert!(
        why.contains("Envoy refused the new ai-proxy; the previous version keeps serving"),
        "{why}"
    );

    // The previous plugin still answers, streams included.
    assert_eq!(listed_version(&envoy), "version-0");
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "still there?"}]});
    let streamed = post_stream(
        &envoy.url("/v1/chat/completions"),
        &body,
        &[("authorization", "Bearer k")],
    );
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));

    // The next good build swaps in as usual.
    let good = ecds::versioned_wasm(&paths::plugin_wasm("ai-proxy"), &wasm_dir).unwrap();
    envoy
        .swap(
            "ai-proxy",
            &ecds_resource("ai-proxy", "ai-proxy", &good, &client_edge(2)),
        )
        .unwrap_or_else(|log| panic!("the good module was refused:\n{log}"));
    served_within_a_second(&envoy, 2);
    assert!(envoy.wasm_panics().is_empty());
}
