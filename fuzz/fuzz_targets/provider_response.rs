//! ai-proxy's provider edge on any answer: every wire format's response translator, for any
//! status and content type, gives the same output however the body is cut, and never panics.
#![no_main]

#[path = "../src/proxy.rs"]
mod proxy;

use ai_proxy::translate::{provider_adapter, ProviderAdapter};
use aigw_fuzz::{pieces, Choices};
use aigw_shared::openai::ChatRequest;
use libfuzzer_sys::fuzz_target;

/// The provider's adapter after a plain request (`None` when the provider does not take the
/// model, e.g. Claude on Vertex AI in express mode).
fn adapter(
    provider: u8,
    stream: bool,
    usage: bool,
    model: &str,
) -> Option<Box<dyn ProviderAdapter>> {
    let provider = proxy::provider(provider);
    let mut adapter = provider_adapter(&provider, 1_700_000_000);
    let request: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": model, "stream": stream, "stream_options": {"include_usage": usage},
        "messages": [{"role": "user", "content": "hi"}]
    }))
    .expect("request");
    adapter.chat_request(request, model).ok()?;
    Some(adapter)
}

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices::new(data);
    let provider = choices.byte();
    let stream = choices.byte() % 2 == 0;
    let usage = choices.byte() % 2 == 0;
    let model = choices.pick(&["gemini-2.5-flash", "claude-sonnet-4-5", "m"]);
    let status = choices.pick(proxy::STATUSES);
    let content_type = choices.pick(proxy::CONTENT_TYPES);
    let cuts = choices.cuts(6);
    let body = choices.rest();

    let Some(mut first) = adapter(provider, stream, usage, model) else {
        return;
    };
    let mut second = adapter(provider, stream, usage, model).expect("the same request");
    let whole = proxy::run(first.as_mut(), status, content_type, &[body]);
    let split = proxy::run(second.as_mut(), status, content_type, &pieces(body, &cuts));
    assert_eq!(
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&split),
        "cut at {cuts:?}"
    );
});
