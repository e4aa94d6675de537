//! The answer of the OpenAI-shaped mocks to a chat request: text or a tool call, as a
//! `chat.completion` object or as a sequence of `chat.completion.chunk`s. The Azure mock
//! dresses the same chunks with its content-filter additions.

use super::content_pieces;
use crate::mock::knobs::Knobs;
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the mock answers: text, or a call of the first tool when the last turn is the user's.
pub enum Answer {
    Text { pieces: Vec<String> },
    ToolCall { name: String, arguments: String },
}

impl Answer {
    pub fn for_request(body: &Value, knobs: &Knobs) -> Answer {
        let tools = body
            .get("tools")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty());
        let last = body["messages"].as_array().and_then(|m| m.last());
        let last_is_user = last.and_then(|m| m.get("role")).and_then(Value::as_str) == Some("user");
        let tool_choice_none = body.get("tool_choice").and_then(Value::as_str) == Some("none");
        if let (Some(tools), true, false) = (tools, last_is_user, tool_choice_none) {
            let function = &tools[0]["function"];
            let name = function["name"].as_str().unwrap_or("tool").to_string();
            let param = first_parameter(&function["parameters"]);
            let arguments = json!({ param: "Paris" }).to_string();
            return Answer::ToolCall { name, arguments };
        }
        Answer::Text {
            pieces: content_pieces(knobs.chunks, knobs.chunk_bytes).collect(),
        }
    }

    pub fn completion_tokens(&self) -> u64 {
        match self {
            Answer::Text { pieces } => pieces.len() as u64,
            Answer::ToolCall { arguments, .. } => 5 + arguments.len().div_ceil(4) as u64,
        }
    }

    pub fn finish_reason(&self) -> &'static str {
        match self {
            Answer::Text { .. } => "stop",
            Answer::ToolCall { .. } => "tool_calls",
        }
    }

    /// The assistant text, all pieces together (empty for a tool call).
    pub fn text(&self) -> String {
        match self {
            Answer::Text { pieces } => pieces.concat(),
            Answer::ToolCall { .. } => String::new(),
        }
    }
}

/// The argument a mock tool call fills in, from a JSON schema: the first required property,
/// else the first property, else `input`.
pub fn first_parameter(schema: &Value) -> &str {
    schema
        .pointer("/required/0")
        .and_then(Value::as_str)
        .or_else(|| {
            schema
                .get("properties")
                .and_then(Value::as_object)
                .and_then(|p| p.keys().next().map(String::as_str))
        })
        .unwrap_or("input")
}

/// What a chunk of a stream carries, so that services can dress chunks by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// The first chunk: `delta.role`.
    Role,
    /// Content or tool-call argument deltas.
    Content,
    /// The empty delta with `finish_reason`.
    Finish,
    /// `choices: []` and the usage, with `stream_options.include_usage`.
    Usage,
}

/// One chunk of a stream and the pause before it is sent.
pub struct Chunk {
    pub kind: ChunkKind,
    pub pause: Duration,
    pub json: Value,
}

/// A mock chat completion, ready to be rendered whole or streamed.
pub struct Completion {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub answer: Answer,
    pub prompt_tokens: u64,
}

impl Completion {
    pub fn new(body: &Value, id: String, model: String, knobs: &Knobs) -> Completion {
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        Completion {
            id,
            created: unix_now(),
            model,
            answer: Answer::for_request(body, knobs),
            prompt_tokens: super::prompt_tokens(&messages),
        }
    }

    pub fn usage(&self) -> Value {
        let (prompt, completion) = (self.prompt_tokens, self.answer.completion_tokens());
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    }

    /// The `chat.completion` object OpenAI answers without `stream`.
    pub fn json(&self) -> Value {
        let message = match &self.answer {
            Answer::Text { pieces } => json!({
                "role": "assistant", "content": pieces.concat(), "refusal": null, "annotations": []
            }),
            Answer::ToolCall { name, arguments } => json!({
                "role": "assistant", "content": null, "refusal": null, "annotations": [],
                "tool_calls": [{"id": "call_mock0", "type": "function", "function": {"name": name, "arguments": arguments}}]
            }),
        };
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": self.answer.finish_reason()}],
            "usage": self.usage(),
            "service_tier": "default",
            "system_fingerprint": "fp_mock"
        })
    }

    /// The `chat.completion.chunk`s OpenAI streams: the role chunk, content (or tool-call
    /// argument) deltas, the empty-delta finish chunk, and the usage chunk when asked for.
    /// With `include_usage`, every other chunk carries `"usage": null`.
    pub fn chunks(&self, include_usage: bool, knobs: &Knobs) -> Vec<Chunk> {
        let base = || {
            let mut chunk = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "service_tier": "default", "system_fingerprint": "fp_mock", "choices": [],
            });
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            chunk["obfuscation"] = json!("mock");
            chunk
        };
        let chunk = |kind: ChunkKind, pause: Duration, delta: Value, finish: Option<&str>| {
            let mut json = base();
            json["choices"] =
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
            Chunk { kind, pause, json }
        };
        let (role_delta, deltas): (Value, Vec<Value>) = match &self.answer {
            Answer::Text { pieces } => (
                json!({"role": "assistant", "content": "", "refusal": null}),
                pieces.iter().map(|p| json!({"content": p})).collect(),
            ),
            Answer::ToolCall { name, arguments } => (
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"index": 0, "id": "call_mock0", "type": "function", "function": {"name": name, "arguments": ""}}]}),
                fragments(arguments, 4)
                    .into_iter()
                    .map(|piece| json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
                    .collect(),
            ),
        };
        let mut chunks = vec![chunk(ChunkKind::Role, Duration::ZERO, role_delta, None)];
        for (i, delta) in deltas.into_iter().enumerate() {
            chunks.push(chunk(
                ChunkKind::Content,
                knobs.pause_before(i),
                delta,
                None,
            ));
        }
        chunks.push(chunk(
            ChunkKind::Finish,
            knobs.delay,
            json!({}),
            Some(self.answer.finish_reason()),
        ));
        if include_usage {
            let mut json = base();
            json["usage"] = self.usage();
            chunks.push(Chunk {
                kind: ChunkKind::Usage,
                pause: Duration::ZERO,
                json,
            });
        }
        chunks
    }
}

/// `text` cut into pieces of `chars` characters, as models stream JSON arguments.
pub fn fragments(text: &str, chars: usize) -> Vec<String> {
    let all: Vec<char> = text.chars().collect();
    all.chunks(chars.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// Frames chunks as an OpenAI-style SSE body: each one `data: <json>` and a blank line (no
/// `event:` lines), then `data: [DONE]`.
pub fn sse_events(chunks: impl IntoIterator<Item = (Duration, Value)>) -> Vec<(Duration, Bytes)> {
    chunks
        .into_iter()
        .map(|(pause, chunk)| (pause, Bytes::from(format!("data: {chunk}\n\n"))))
        .chain(std::iter::once((
            Duration::ZERO,
            Bytes::from_static(b"data: [DONE]\n\n"),
        )))
        .collect()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
