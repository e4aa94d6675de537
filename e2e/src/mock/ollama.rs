//! A mock of Ollama's native chat API (`POST /api/chat`), following its API documentation and
//! the recorded transcripts: no auth; `stream` defaults to `true`; streams are NDJSON
//! (`application/x-ndjson`, one object per line, no SSE framing, no `[DONE]`), the last object
//! with `done: true`, `done_reason` and the `prompt_eval_count` / `eval_count` counters;
//! tool calls come whole with object `arguments` and no id (the first tool, when the last
//! message is the user's); errors are `{"error": "…"}` (404 for an unknown model).
//!
//! Per-request knobs: see [`super::knobs`].

use super::knobs::Knobs;
use super::openai::completion::first_parameter;
use super::openai::content_pieces;
use super::{Provider, Recorded, Reply};
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;

pub const UNKNOWN_MODEL_PREFIX: &str = "does-not-exist";

#[derive(Default)]
pub struct OllamaMock {
    pub chunks: Option<usize>,
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(status, &json!({"error": message}))
}

impl Provider for OllamaMock {
    fn handle(&self, request: &Recorded) -> Reply {
        if (request.method.as_str(), request.path.as_str()) != ("POST", "/api/chat") {
            return Reply::Full {
                status: 404,
                headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
                body: Bytes::from_static(b"404 page not found"),
            };
        }
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(body @ Value::Object(_)) => body,
            _ => return error(400, "invalid character looking for beginning of value"),
        };
        let model = body["model"].as_str().unwrap_or_default();
        if model.is_empty() {
            return error(400, "model is required");
        }
        if model.starts_with(UNKNOWN_MODEL_PREFIX) {
            return error(
                404,
                &format!("model \"{model}\" not found, try pulling it first"),
            );
        }
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        if let Some(m) = messages.iter().find(|m| {
            m["images"].as_array().is_some_and(|i| {
                i.iter()
                    .any(|i| i.as_str().is_none_or(|s| s.starts_with("data:")))
            })
        }) {
            return error(
                400,
                &format!("illegal base64 data in images of {}", m["role"]),
            );
        }
        let knobs = Knobs::read(
            request,
            self.chunks.unwrap_or(5),
            Duration::ZERO,
            Duration::ZERO,
        );
        if let Some(status) = knobs.status {
            return error(status, &format!("mock error with status {status}"));
        }
        let tools = body["tools"].as_array().cloned().unwrap_or_default();
        let call = (messages.last().is_some_and(|m| m["role"] == "user") && !tools.is_empty()).then(|| {
            let function = &tools[0]["function"];
            json!({"function": {"name": function["name"], "arguments": { first_parameter(&function["parameters"]): "Paris" }}})
        });
        let pieces: Vec<String> = content_pieces(knobs.chunks, knobs.chunk_bytes).collect();
        let prompt: usize = messages
            .iter()
            .map(|m| m["content"].as_str().map_or(0, str::len))
            .sum();
        let prompt_eval_count = 10 + prompt.div_ceil(4) as u64;
        let eval_count = if call.is_some() {
            20
        } else {
            pieces.len() as u64
        };
        let line = |content: &str, tool_calls: Option<&Value>, done: bool| {
            let mut message = json!({"role": "assistant", "content": content});
            if let Some(calls) = tool_calls {
                message["tool_calls"] = json!([calls]);
            }
            let mut line = json!({"model": model, "created_at": "2025-01-01T00:00:00.000000000Z", "message": message, "done": done});
            if done {
                for (k, v) in [
                    ("done_reason", json!("stop")),
                    ("total_duration", json!(1_000_000)),
                    ("load_duration", json!(100)),
                    ("prompt_eval_count", json!(prompt_eval_count)),
                    ("prompt_eval_duration", json!(1000)),
                    ("eval_count", json!(eval_count)),
                    ("eval_duration", json!(1000)),
                ] {
                    line[k] = v;
                }
            }
            line
        };
        if body["stream"] == false {
            let text = if call.is_some() {
                String::new()
            } else {
                pieces.concat()
            };
            return Reply::json(200, &line(&text, call.as_ref(), true));
        }
        let mut lines: Vec<(Duration, Value)> = match &call {
            Some(call) => vec![(knobs.first_delay, line("", Some(call), false))],
            None => pieces
                .iter()
                .enumerate()
                .map(|(i, p)| (knobs.pause_before(i), line(p, None, false)))
                .collect(),
        };
        lines.push((knobs.delay, line("", None, true)));
        Reply::Stream {
            status: 200,
            headers: vec![("content-type".into(), "application/x-ndjson".into())],
            pieces: Box::new(
                lines
                    .into_iter()
                    .map(|(pause, l)| (pause, Bytes::from(format!("{l}\n")))),
            ),
        }
    }
}
