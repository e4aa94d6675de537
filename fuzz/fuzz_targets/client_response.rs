//! ai-proxy's client edge on any canonical answer: the OpenAI client's usage-chunk removal and
//! error wrapping, and the Anthropic client's message and event translation, give the same
//! output however the body is cut, and never panic.
#![no_main]

#[path = "../src/proxy.rs"]
mod proxy;

use ai_proxy::translate::{client_adapter, Api, ClientAdapter};
use aigw_fuzz::{pieces, Choices};
use libfuzzer_sys::fuzz_target;

fn client(api: Api, stream: bool) -> Box<dyn ClientAdapter> {
    let mut client = client_adapter(api);
    let request = serde_json::json!({
        "model": "m", "max_tokens": 16, "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]
    });
    client
        .request(request.to_string().as_bytes())
        .expect("a plain request parses");
    client
}

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices::new(data);
    let api = choices.pick(&[Api::Chat, Api::Messages]);
    let stream = choices.byte() % 2 == 0;
    let status = choices.pick(proxy::STATUSES);
    let content_type = choices.pick(proxy::CONTENT_TYPES);
    let cuts = choices.cuts(6);
    let body = choices.rest();

    let whole = proxy::run(client(api, stream).as_mut(), status, content_type, &[body]);
    let split = proxy::run(
        client(api, stream).as_mut(),
        status,
        content_type,
        &pieces(body, &cuts),
    );
    assert_eq!(
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&split),
        "cut at {cuts:?}"
    );
});
