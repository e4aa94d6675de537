//! The client edge for OpenAI clients: the request is already canonical.
//!
//! Usage is made certain here: a streaming request that did not ask for usage gets
//! `stream_options.include_usage`, so every plugin after this one sees the token counts, and the
//! extra usage-only chunk is removed again on the way back, so the client gets exactly the
//! stream it asked for.

use super::{errors, parse_request, ClientAdapter, Plan, ResponseStage};
use aigw_shared::body::{is_event_stream, is_json};
use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::openai::{ChatRequest, StreamOptions};
use aigw_shared::sse::{self, Decoder, Event};
use serde::Deserialize;
use serde_json::Value;

#[derive(Default)]
pub struct OpenAiClient {
    strip_usage_chunk: bool,
    decoder: Decoder,
    /// A non-JSON error body is collected and answered as an OpenAI error with this status.
    wrap_error: Option<u16>,
    error_body: Vec<u8>,
}

impl ClientAdapter for OpenAiClient {
    fn request(&mut self, body: &[u8]) -> Result<ChatRequest, ApiError> {
        let mut request: ChatRequest = parse_request(body)?;
        if request.is_stream() && !request.include_usage() {
            request
                .stream_options
                .get_or_insert_with(StreamOptions::default)
                .include_usage = Some(true);
            self.strip_usage_chunk = true;
        }
        Ok(request)
    }

    fn api(&self) -> ClientApi {
        ClientApi::OpenAi
    }
}

impl ResponseStage for OpenAiClient {
    fn plan(&mut self, status: u16, content_type: &str) -> Plan {
        if status >= 400 && !is_json(content_type) {
            // Envoy's own replies ("no healthy upstream", timeouts) are plain text: give the
            // client an error object it can parse.
            self.wrap_error = Some(status);
            Plan {
                content_type: Some("application/json"),
                ..Plan::WHOLE
            }
        } else if self.strip_usage_chunk && status < 300 && is_event_stream(content_type) {
            Plan::STREAM
        } else {
            Plan::PASSTHROUGH
        }
    }

    fn translate(&mut self, input: &[u8], end: bool, out: &mut Vec<u8>) {
        if let Some(status) = self.wrap_error {
            self.error_body.extend_from_slice(input);
            if end {
                out.extend_from_slice(
                    &errors::from_provider(status, &self.error_body).body(ClientApi::OpenAi),
                );
            }
            return;
        }
        for event in super::events(&mut self.decoder, input, end) {
            if !is_usage_only_chunk(&event) {
                sse::write_event(out, event.event.as_deref(), &event.data);
            }
        }
    }
}

/// The chunk `stream_options.include_usage` adds: no choices, only usage.
fn is_usage_only_chunk(event: &Event) -> bool {
    #[derive(Deserialize)]
    struct Shape {
        choices: Option<Vec<Value>>,
        usage: Option<Value>,
    }
    if !event.data.contains("\"usage\"") {
        return false;
    }
    match serde_json::from_str::<Shape>(&event.data) {
        Ok(shape) => {
            shape.choices.is_some_and(|c| c.is_empty()) && shape.usage.is_some_and(|u| !u.is_null())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::same_at_every_split;
    use super::*;

    fn stream() -> &'static str {
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
         data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
         data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n\
         data: [DONE]\n\n"
    }

    #[test]
    fn forces_usage_and_strips_the_extra_chunk_at_every_split() {
        let make = || {
            let mut client = OpenAiClient::default();
            let request = client
                .request(
                    br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#,
                )
                .unwrap();
            assert!(request.include_usage());
            client
        };
        let out = same_at_every_split(make, 200, "text/event-stream", stream().as_bytes());
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("prompt_tokens"), "{out}");
        assert!(
            out.contains("\"Hi\"") && out.ends_with("data: [DONE]\n\n"),
            "{out}"
        );
    }

    #[test]
    fn plain_text_errors_become_openai_errors() {
        let mut client = OpenAiClient::default();
        assert_eq!(
            client.plan(503, "text/plain").mode,
            super::super::BodyMode::Whole
        );
        let mut out = Vec::new();
        client.translate(b"no healthy upstream", true, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["error"]["message"],
            "upstream error 503: no healthy upstream"
        );
        assert_eq!(v["error"]["type"], "server_error");
    }

    #[test]
    fn leaves_streams_alone_when_the_client_asked_for_usage() {
        let mut client = OpenAiClient::default();
        client
            .request(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#)
            .unwrap();
        assert_eq!(client.plan(200, "text/event-stream"), Plan::PASSTHROUGH);
        let mut plain = OpenAiClient::default();
        plain.request(br#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(plain.plan(200, "application/json"), Plan::PASSTHROUGH);
    }
}
