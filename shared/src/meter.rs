//! Reads what a request asked for and what the response reported, without changing a byte.
//!
//! Streams are decoded event by event as they pass (memory: one partial event); an event's JSON
//! is parsed only while the first output token is still awaited, or when it can carry usage.
//! Non-streamed JSON answers are copied up to a limit and parsed once at the end.

use crate::body::{is_event_stream, is_json, BodyBuffer};
use crate::sse::{Decoder, Event};
use crate::usage::{Reported, TokenCounts};
use serde::Deserialize;
use serde_json::Value;

/// The fields of a request body this plugin needs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub stream: bool,
}

impl RequestInfo {
    /// Reads `model` and `stream` from a JSON request; anything unreadable leaves them unset.
    pub fn from_body(body: &[u8]) -> RequestInfo {
        #[derive(Deserialize)]
        struct Fields {
            model: Option<Value>,
            stream: Option<Value>,
        }
        match serde_json::from_slice::<Fields>(body) {
            Ok(f) => RequestInfo {
                model: f
                    .model
                    .and_then(|m| m.as_str().map(str::to_string))
                    .filter(|m| !m.is_empty()),
                stream: f.stream.and_then(|s| s.as_bool()).unwrap_or(false),
            },
            Err(_) => RequestInfo::default(),
        }
    }
}

enum Reader {
    Stream(Decoder),
    Json(BodyBuffer),
    Ignore,
}

/// Watches one response. Feed every body chunk to [`ResponseMeter::observe`].
pub struct ResponseMeter {
    reader: Reader,
    usage: Option<TokenCounts>,
    model: Option<String>,
    output_seen: bool,
}

impl ResponseMeter {
    pub fn new(content_type: &str, max_body_bytes: usize) -> Self {
        let reader = if is_event_stream(content_type) {
            Reader::Stream(Decoder::new())
        } else if is_json(content_type) {
            Reader::Json(BodyBuffer::new(max_body_bytes))
        } else {
            Reader::Ignore
        };
        ResponseMeter {
            reader,
            usage: None,
            model: None,
            output_seen: false,
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.reader, Reader::Stream(_))
    }

    /// Whether the meter needs to see the body at all (it skips fetching bodies it cannot read).
    pub fn wants_body(&self) -> bool {
        !matches!(self.reader, Reader::Ignore)
    }

    /// Observes one chunk. Returns `true` when this chunk carried the first output token.
    pub fn observe(&mut self, chunk: &[u8]) -> bool {
        let before = self.output_seen;
        match &mut self.reader {
            Reader::Stream(decoder) => {
                let mut events = Vec::new();
                let dropped = decoder.dropped_events();
                decoder.push_with(chunk, |e| events.push(e));
                if decoder.dropped_events() > dropped {
                    log::warn!(
                        "a stream event over {} bytes was skipped: its usage is not read",
                        crate::sse::DEFAULT_MAX_EVENT_BYTES
                    );
                }
                for event in events {
                    self.on_event(&event);
                }
            }
            Reader::Json(buffer) => {
                if !buffer.push(chunk) {
                    log::debug!(
                        "response body over {} bytes; usage not read",
                        buffer.limit()
                    );
                }
            }
            Reader::Ignore => {}
        }
        !before && self.output_seen
    }

    /// Ends the response: reads a buffered JSON body. Returns the usage, if any was reported.
    pub fn finish(&mut self) -> Option<TokenCounts> {
        if let Reader::Stream(decoder) = &mut self.reader {
            // A last event the stream did not close with a blank line still counts.
            if let Some(event) = decoder.finish() {
                self.on_event(&event);
            }
        }
        if let Reader::Json(buffer) = &mut self.reader {
            if let Some(reported) = buffer.get().and_then(Reported::from_slice) {
                self.model = self.model.take().or(reported.model);
                self.usage = reported.counts;
            }
            self.reader = Reader::Ignore;
        }
        self.usage
    }

    pub fn usage(&self) -> Option<TokenCounts> {
        self.usage
    }

    /// The model the provider says answered.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn on_event(&mut self, event: &Event) {
        if event.is_done() {
            return;
        }
        let counts = if self.output_seen {
            // After the first token only usage matters: read just the events that carry it
            // (OpenAI streams send `"usage":null` in every chunk), or a model still unknown.
            let data = &event.data;
            let carries_usage = USAGE_KEYS
                .iter()
                .any(|key| crate::json::has_value(data, key));
            if !carries_usage && (self.model.is_some() || !data.contains("model")) {
                return;
            }
            let Some(reported) = Reported::from_slice(event.data.as_bytes()) else {
                return;
            };
            self.model = self.model.take().or(reported.model);
            reported.counts
        } else {
            let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                return;
            };
            self.output_seen = carries_output(event.event.as_deref(), &value);
            if self.model.is_none() {
                self.model = model_of(&value);
            }
            TokenCounts::from_json(&value)
        };
        if let Some(counts) = counts {
            self.usage
                .get_or_insert_with(TokenCounts::default)
                .merge(&counts);
        }
    }
}

/// The keys under which a provider reports token counts (see [`TokenCounts::from_json`]).
const USAGE_KEYS: [&str; 4] = [
    "\"usage\"",
    "\"usageMetadata\"",
    "\"eval_count\"",
    "\"prompt_eval_count\"",
];

fn model_of(value: &Value) -> Option<String> {
    value
        .get("model")
        .or_else(|| value.pointer("/message/model"))
        .or_else(|| value.get("modelVersion"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// Does this stream event carry generated output (text, reasoning, a tool call)?
fn carries_output(event_type: Option<&str>, value: &Value) -> bool {
    let non_empty = |v: Option<&Value>| match v {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(_)) => true,
        _ => false,
    };
    // OpenAI chat chunk.
    if let Some(choices) = value.get("choices").and_then(Value::as_array) {
        return choices.iter().any(|c| {
            let delta = c.get("delta");
            let field = |k: &str| delta.and_then(|d| d.get(k));
            non_empty(field("content"))
                || non_empty(field("reasoning_content"))
                || non_empty(field("tool_calls"))
                || non_empty(field("refusal"))
        });
    }
    // Gemini chunk.
    if let Some(candidates) = value.get("candidates").and_then(Value::as_array) {
        return candidates
            .iter()
            .any(|c| non_empty(c.pointer("/content/parts")));
    }
    // Anthropic, OpenAI Responses and Cohere name their delta events.
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .or(event_type)
        .unwrap_or("");
    matches!(
        kind,
        "content_block_delta" | "content-delta" | "tool-call-start"
    ) || (kind.starts_with("response.") && kind.ends_with(".delta"))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SSE: &str = "text/event-stream; charset=utf-8";

    fn chunk(delta: &str) -> String {
        format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":null}}],\"usage\":null}}\n\n")
    }

    fn openai_stream() -> String {
        [
            chunk(r#"{"role":"assistant","content":""}"#),
            chunk(r#"{"content":"Hel"}"#),
            chunk(r#"{"content":"lo"}"#),
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n".into(),
            "data: [DONE]\n\n".into(),
        ]
        .concat()
    }

    #[test]
    fn request_fields() {
        assert_eq!(
            RequestInfo::from_body(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#),
            RequestInfo {
                model: Some("gpt-4o".into()),
                stream: true
            }
        );
        assert_eq!(RequestInfo::from_body(b"not json"), RequestInfo::default());
        assert_eq!(
            RequestInfo::from_body(br#"{"model":7,"stream":"yes"}"#),
            RequestInfo::default()
        );
    }

    #[test]
    fn stream_usage_and_first_token_at_every_split() {
        let stream = openai_stream();
        let bytes = stream.as_bytes();
        let first_output_end = stream.find("Hel").unwrap();
        for cut in 0..=bytes.len() {
            let mut meter = ResponseMeter::new(SSE, 1 << 20);
            let first_in_a = meter.observe(&bytes[..cut]);
            let first_in_b = meter.observe(&bytes[cut..]);
            let usage = meter.finish().unwrap();
            assert_eq!(
                (usage.input, usage.output, usage.total),
                (9, 2, 11),
                "cut {cut}"
            );
            // The first token is reported with the chunk that completed its event.
            let event_end = first_output_end + stream[first_output_end..].find("\n\n").unwrap() + 2;
            assert_eq!(first_in_a, cut >= event_end, "cut {cut}");
            assert_eq!(first_in_b, cut < event_end, "cut {cut}");
            assert_eq!(meter.model(), Some("gpt-4o-2024"));
        }
    }

    #[test]
    fn role_only_chunk_is_not_the_first_token() {
        let mut meter = ResponseMeter::new(SSE, 1 << 20);
        assert!(!meter.observe(chunk(r#"{"role":"assistant","content":""}"#).as_bytes()));
        assert!(meter.observe(
            chunk(r#"{"tool_calls":[{"index":0,"function":{"arguments":""}}]}"#).as_bytes()
        ));
    }

    #[test]
    fn anthropic_stream_counts_input_from_message_start() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        let mut meter = ResponseMeter::new(SSE, 1 << 20);
        meter.observe(stream.as_bytes());
        let usage = meter.finish().unwrap();
        assert_eq!((usage.input, usage.output, usage.total), (25, 15, 40));
        assert_eq!(meter.model(), Some("claude"));
    }

    #[test]
    fn json_body_read_once_at_the_end() {
        let body = br#"{"model":"m","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":377,"total_tokens":385}}"#;
        let mut meter = ResponseMeter::new("application/json", 1 << 20);
        for piece in body.chunks(7) {
            assert!(!meter.observe(piece));
        }
        assert_eq!(meter.finish().unwrap().total, 385);
        assert_eq!(meter.model(), Some("m"));
    }

    #[test]
    fn oversized_json_body_gives_no_usage_instead_of_a_wrong_one() {
        let body = br#"{"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}"#;
        let mut meter = ResponseMeter::new("application/json", 16);
        meter.observe(body);
        assert_eq!(meter.finish(), None);
    }

    #[test]
    fn other_content_types_are_not_read() {
        let meter = ResponseMeter::new("text/html", 16);
        assert!(!meter.wants_body());
    }
}
