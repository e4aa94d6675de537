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
    /// The stream said it was complete: `[DONE]`, a finish reason or an error.
    finished: bool,
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
            let chunk = Chunk::of(&event);
            self.finished |= event.is_done() || chunk.finishes;
            if !chunk.usage_only {
                sse::write_event(out, event.event.as_deref(), &event.data);
            }
        }
        if end && !self.finished {
            // Cut short (the provider closed the stream mid-answer, or sent no SSE at all):
            // the client gets an error event, as OpenAI sends one, never a silent clean end.
            out.extend_from_slice(STREAM_CUT);
            self.finished = true;
        }
    }
}

const STREAM_CUT: &[u8] = b"data: {\"error\":{\"message\":\"the provider ended the stream early\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";

/// What the client edge needs to know of a chunk, read in one parse (and only for chunks that
/// can say it).
#[derive(Default)]
struct Chunk {
    /// The chunk `stream_options.include_usage` adds: no choices, only usage.
    usage_only: bool,
    /// A choice finished, or the provider reported an error.
    finishes: bool,
}

impl Chunk {
    fn of(event: &Event) -> Chunk {
        #[derive(Deserialize)]
        struct Choice {
            finish_reason: Option<Value>,
        }
        #[derive(Deserialize)]
        struct Shape {
            choices: Option<Vec<Choice>>,
            usage: Option<Value>,
            error: Option<Value>,
        }
        let data = &event.data;
        // Most chunks carry `"finish_reason":null` and `"usage":null`: only a chunk where one
        // of the three keys has a value is worth parsing.
        if !["\"usage\"", "\"finish_reason\"", "\"error\""]
            .iter()
            .any(|key| aigw_shared::json::has_value(data, key))
        {
            return Chunk::default();
        }
        let Ok(shape) = serde_json::from_str::<Shape>(data) else {
            return Chunk::default();
        };
        let choices = shape.choices.unwrap_or_default();
        Chunk {
            usage_only: choices.is_empty() && shape.usage.is_some_and(|u| !u.is_null()),
            finishes: shape.error.is_some_and(|e| !e.is_null())
                || choices
                    .iter()
                    .any(|c| c.finish_reason.as_ref().is_some_and(|r| !r.is_null())),
        }
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
    fn a_stream_cut_short_ends_with_an_error_event() {
        let make = || {
            let mut client = OpenAiClient::default();
            client
                .request(br#"{"model":"m","stream":true,"messages":[]}"#)
                .unwrap();
            client
        };
        let cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n";
        for body in [cut, "\u{0}not sse at all\n\n"] {
            let out = same_at_every_split(make, 200, "text/event-stream", body.as_bytes());
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.ends_with(std::str::from_utf8(STREAM_CUT).unwrap()),
                "{out}"
            );
        }
        // A finish reason, an error or [DONE] completes a stream: nothing is added.
        let finished =
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        let error = "data: {\"error\":{\"message\":\"Rate limit reached\"}}\n\n";
        for body in [finished, error, stream()] {
            let out = same_at_every_split(make, 200, "text/event-stream", body.as_bytes());
            assert!(!String::from_utf8(out)
                .unwrap()
                .contains("ended the stream early"));
        }
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
