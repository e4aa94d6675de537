//! ai-proxy's provider edge on any canonical request: each wire format gets a request body
//! that is JSON, or a 4xx naming the problem; the path it asks for stays a plain path whatever
//! the model is called.
#![no_main]

#[path = "../src/proxy.rs"]
mod proxy;

use ai_proxy::translate::{parse_request, provider_adapter};
use aigw_fuzz::Choices;
use aigw_shared::openai::ChatRequest;
use libfuzzer_sys::fuzz_target;

/// Characters a provider path may hold once the model is in it.
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains("/../")
        && !path.contains("/./")
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices::new(data);
    let provider = proxy::provider(choices.byte());
    let Ok(request) = parse_request::<ChatRequest>(choices.rest()) else {
        return;
    };
    let model = provider.mapping.resolve(&request.model);
    let mut adapter = provider_adapter(&provider, 1_700_000_000);
    match adapter.chat_request(request, &model) {
        Ok(body) => {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
                panic!("{}: request body is not JSON ({e})", provider.id);
            }
            let path = match adapter.chat_path() {
                Some(path) => path,
                None => match provider.path("/chat/completions", &model) {
                    Ok(path) => path,
                    Err(err) => return assert_eq!(err.status, 400, "{err}"),
                },
            };
            assert!(plain_path(&path), "model {model:?} gives path {path:?}");
            for (name, value) in adapter.extra_headers() {
                assert!(
                    value
                        .bytes()
                        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)),
                    "header {name}: {value:?}"
                );
            }
        }
        Err(err) => assert!((400..500).contains(&err.status), "{err}"),
    }
});
