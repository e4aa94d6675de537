//! The client edge of ai-proxy on any request body: an OpenAI or Anthropic request becomes a
//! canonical request or a 400, and a canonical request it emits is one the next ai-proxy (the
//! provider edge reads it as an OpenAI request) accepts.
#![no_main]

use ai_proxy::translate::{client_adapter, Api};
use aigw_fuzz::Choices;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices::new(data);
    let api = choices.pick(&[Api::Chat, Api::Messages]);
    let body = choices.rest();
    let mut client = client_adapter(api);
    match client.request(body) {
        Ok(request) => {
            let canonical = serde_json::to_vec(&request).expect("a canonical request serialises");
            let mut next = client_adapter(Api::Chat);
            if let Err(err) = next.request(&canonical) {
                panic!(
                    "the canonical request is refused downstream: {err}\n{}",
                    String::from_utf8_lossy(&canonical)
                );
            }
        }
        Err(err) => assert!((400..500).contains(&err.status), "{err}"),
    }
});
