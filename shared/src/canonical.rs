//! Canonical answers, written in one place: a whole `chat.completion`, or a
//! `chat.completion.chunk` stream in the order clients expect (the role chunk first, deltas, one
//! finish chunk, the usage chunk when asked for, then `[DONE]`; or an error chunk and `[DONE]`
//! when the answer breaks off). Translators, cache replays and gateway denials all write
//! through these.

use crate::sse;
use crate::usage::TokenCounts;
use serde_json::{json, Value};

/// Where a translator says what the provider answered: a [`ChunkWriter`] for a stream, a
/// [`Completion`] for a whole answer; so one reading of the provider's shape serves both when
/// its stream events and whole answers share that shape.
pub trait Answer {
    fn text(&mut self, out: &mut Vec<u8>, text: &str);
    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str);
    /// A tool call that arrives whole.
    fn tool_call(&mut self, out: &mut Vec<u8>, id: &str, name: &str, arguments: &str);
    /// Tool calls so far.
    fn tool_calls(&self) -> usize;
    fn finish(&mut self, out: &mut Vec<u8>, reason: &str);
    fn usage(&mut self, counts: &TokenCounts);
}

/// A canonical `chat.completion`.
#[derive(Default)]
pub struct Completion {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub text: String,
    pub reasoning: String,
    /// (id, name, arguments as a JSON string)
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: String,
    pub usage: TokenCounts,
    /// `system_fingerprint`, when the answer says where it came from.
    pub system_fingerprint: Option<String>,
}

impl Answer for Completion {
    fn text(&mut self, _: &mut Vec<u8>, text: &str) {
        self.text.push_str(text);
    }

    fn reasoning(&mut self, _: &mut Vec<u8>, text: &str) {
        self.reasoning.push_str(text);
    }

    fn tool_call(&mut self, _: &mut Vec<u8>, id: &str, name: &str, arguments: &str) {
        self.tool_calls
            .push((id.to_string(), name.to_string(), arguments.to_string()));
    }

    fn tool_calls(&self) -> usize {
        self.tool_calls.len()
    }

    fn finish(&mut self, _: &mut Vec<u8>, reason: &str) {
        self.finish_reason = reason.to_string();
    }

    fn usage(&mut self, counts: &TokenCounts) {
        self.usage.merge(counts);
    }
}

impl Completion {
    /// The JSON body; a finish reason never given is `stop`.
    pub fn to_json(&self) -> Vec<u8> {
        let finish_reason = if self.finish_reason.is_empty() {
            "stop"
        } else {
            &self.finish_reason
        };
        let content = if self.text.is_empty() && !self.tool_calls.is_empty() {
            Value::Null
        } else {
            json!(self.text)
        };
        let mut message = json!({"role": "assistant", "content": content});
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|(id, name, arguments)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
                })
                .collect();
        }
        let mut completion = json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": self.usage.to_openai(),
        });
        if let Some(fingerprint) = &self.system_fingerprint {
            completion["system_fingerprint"] = json!(fingerprint);
        }
        serde_json::to_vec(&completion).unwrap_or_default()
    }
}

/// Writes a canonical stream: the role chunk before anything else, deltas, the finish chunk,
/// the usage chunk when the client asked for usage, then `[DONE]`, once; or an error chunk
/// and `[DONE]` when the provider's stream breaks off.
#[derive(Default)]
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub include_usage: bool,
    pub usage: TokenCounts,
    /// `system_fingerprint` of every chunk, when the answer says where it came from.
    pub system_fingerprint: Option<String>,
    started: bool,
    tools: usize,
    finished: bool,
    done: bool,
}

impl ChunkWriter {
    pub fn new(created: u64) -> Self {
        ChunkWriter {
            created,
            ..Default::default()
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn head(&self) -> Value {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
        });
        if let Some(fingerprint) = &self.system_fingerprint {
            chunk["system_fingerprint"] = json!(fingerprint);
        }
        chunk
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish_reason: Option<&str>) {
        let mut chunk = self.head();
        chunk["choices"] = json!([{"index": 0, "delta": delta, "finish_reason": finish_reason}]);
        sse::write_data(out, &chunk.to_string());
    }

    /// The role chunk, if not sent yet.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started && !self.done {
            self.started = true;
            self.chunk(out, json!({"role": "assistant", "content": ""}), None);
        }
    }

    fn delta(&mut self, out: &mut Vec<u8>, delta: Value) {
        if self.done {
            return;
        }
        self.start(out);
        self.chunk(out, delta, None);
    }

    pub fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if !text.is_empty() {
            self.delta(out, json!({"content": text}));
        }
    }

    pub fn reasoning(&mut self, out: &mut Vec<u8>, text: &str) {
        if !text.is_empty() {
            self.delta(out, json!({"reasoning_content": text}));
        }
    }

    /// Opens the next tool call; returns its OpenAI index.
    pub fn tool_start(&mut self, out: &mut Vec<u8>, id: &str, name: &str) -> usize {
        let index = self.tools;
        self.tools += 1;
        self.delta(
            out,
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
        );
        index
    }

    pub fn tool_arguments(&mut self, out: &mut Vec<u8>, index: usize, fragment: &str) {
        if !fragment.is_empty() {
            self.delta(
                out,
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
            );
        }
    }

    /// A tool call that arrives whole.
    pub fn tool_call(&mut self, out: &mut Vec<u8>, id: &str, name: &str, arguments: &str) {
        let index = self.tool_start(out, id, name);
        self.tool_arguments(out, index, arguments);
    }

    pub fn tool_calls_started(&self) -> usize {
        self.tools
    }

    /// The empty delta carrying `finish_reason` (once).
    pub fn finish(&mut self, out: &mut Vec<u8>, reason: &str) {
        if self.finished || self.done {
            return;
        }
        self.start(out);
        self.finished = true;
        self.chunk(out, json!({}), Some(reason));
    }

    /// A text delta for choice `index` of a stream with several choices (a provider's, whose
    /// role chunks went before): outside the writer's order.
    pub fn choice_text(&self, out: &mut Vec<u8>, index: usize, text: &str) {
        let mut chunk = self.head();
        chunk["choices"] =
            json!([{"index": index, "delta": {"content": text}, "finish_reason": null}]);
        sse::write_data(out, &chunk.to_string());
    }

    /// A last word: one chunk with the role (when not sent yet), `text` and `reason`, then
    /// `[DONE]` (a gateway that stops an answer says why in one event).
    pub fn last_words(&mut self, out: &mut Vec<u8>, text: &str, reason: &str) {
        if self.done {
            return;
        }
        let mut delta = json!({"content": text});
        if !std::mem::replace(&mut self.started, true) {
            delta["role"] = json!("assistant");
        }
        self.finished = true;
        self.chunk(out, delta, Some(reason));
        sse::write_data(out, "[DONE]");
        self.done = true;
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.include_usage {
            let mut chunk = self.head();
            chunk["choices"] = json!([]);
            chunk["usage"] = json!(self.usage.to_openai());
            sse::write_data(out, &chunk.to_string());
        }
        sse::write_data(out, "[DONE]");
        self.done = true;
    }

    /// An error chunk and `[DONE]`: the stream stops here.
    pub fn error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        if self.done {
            return;
        }
        sse::write_data(
            out,
            &json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
                .to_string(),
        );
        sse::write_data(out, "[DONE]");
        self.done = true;
    }

    /// At the end of the provider's body: a stream that finished ends normally; one that did
    /// not says so rather than look complete.
    pub fn end_of_body(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            self.end(out);
        } else {
            self.error(out, "api_error", "provider ended the stream early");
        }
    }
}

impl Answer for ChunkWriter {
    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        ChunkWriter::text(self, out, text);
    }

    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str) {
        ChunkWriter::reasoning(self, out, text);
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, id: &str, name: &str, arguments: &str) {
        ChunkWriter::tool_call(self, out, id, name, arguments);
    }

    fn tool_calls(&self) -> usize {
        self.tools
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: &str) {
        ChunkWriter::finish(self, out, reason);
    }

    fn usage(&mut self, counts: &TokenCounts) {
        self.usage.merge(counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn writer_orders_role_deltas_finish_usage_done() {
        let mut w = ChunkWriter::new(7);
        w.include_usage = true;
        w.usage = TokenCounts::new(3, 4, 0);
        let mut out = Vec::new();
        w.text(&mut out, "");
        assert!(out.is_empty(), "nothing before there is something to say");
        w.text(&mut out, "hi");
        let i = w.tool_start(&mut out, "call_1", "f");
        w.tool_arguments(&mut out, i, "{}");
        w.finish(&mut out, "tool_calls");
        w.finish(&mut out, "stop");
        w.end_of_body(&mut out);
        w.end(&mut out);
        let text = String::from_utf8(out).unwrap();
        let data: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(data.len(), 7, "{text}");
        assert!(data[0].contains("\"role\":\"assistant\""));
        assert!(data[4].contains("\"finish_reason\":\"tool_calls\""));
        assert!(data[5].contains("\"total_tokens\":7"));
        assert_eq!(data[6], "[DONE]");
    }

    #[test]
    fn last_words_are_one_chunk_then_done() {
        let mut w = ChunkWriter::new(1);
        w.system_fingerprint = Some("here".into());
        let mut out = Vec::new();
        w.last_words(&mut out, "no", "content_filter");
        w.text(&mut out, "ignored");
        let text = String::from_utf8(out).unwrap();
        let data: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(data.len(), 2, "{text}");
        let chunk: Value = serde_json::from_str(data[0]).unwrap();
        assert_eq!(
            chunk["choices"][0]["delta"],
            json!({"role": "assistant", "content": "no"})
        );
        assert_eq!(chunk["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(chunk["system_fingerprint"], "here");
        assert_eq!(data[1], "[DONE]");
    }

    #[test]
    fn a_stream_without_a_finish_ends_with_an_error() {
        let mut w = ChunkWriter::new(0);
        let mut out = Vec::new();
        w.text(&mut out, "partial");
        w.end_of_body(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("provider ended the stream early"));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
