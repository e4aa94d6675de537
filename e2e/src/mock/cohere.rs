//! A mock of Cohere's Chat API v2 (`POST /v2/chat`), following the API reference and the
//! recorded transcripts: bearer auth (401 `{"id","message"}`), request checks with Cohere's
//! messages, answers with `message.content[]` text or `tool_plan` + `tool_calls` (the first
//! tool, when the last message is the user's), `finish_reason`, `usage` (`billed_units`,
//! `tokens`); streams as named SSE events (`message-start`, `content-start`,
//! `content-delta`…, `content-end` or `tool-plan-delta`…, `tool-call-start`,
//! `tool-call-delta`…, `tool-call-end`, then `message-end` with the finish reason and usage),
//! ending with `data: [DONE]`.
//!
//! Per-request knobs: see [`super::knobs`].

use super::knobs::Knobs;
use super::openai::completion::{first_parameter, fragments};
use super::openai::content_pieces;
use super::{Provider, Recorded, Reply};
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;

pub const UNKNOWN_MODEL_PREFIX: &str = "does-not-exist";
const PLAN: &[&str] = &["I", " will", " look", " it", " up."];

pub struct CohereMock {
    pub api_key: Option<String>,
    pub chunks: usize,
    pub delay: Duration,
    pub first_delay: Duration,
}

impl CohereMock {
    pub fn with_key(key: &str) -> Self {
        CohereMock {
            api_key: Some(key.into()),
            chunks: 5,
            delay: Duration::ZERO,
            first_delay: Duration::ZERO,
        }
    }
}

/// Cohere's error body.
pub fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"id": "00000000-mock-error", "message": message}),
    )
}

impl Provider for CohereMock {
    fn handle(&self, request: &Recorded) -> Reply {
        if (request.method.as_str(), request.path.as_str()) != ("POST", "/v2/chat") {
            return error(404, "Not Found");
        }
        let presented = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        match (presented, &self.api_key) {
            (None, _) => return error(401, "no api key supplied"),
            (Some(key), Some(expected)) if key != expected => {
                return error(401, "invalid api token")
            }
            _ => {}
        }
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(body @ Value::Object(_)) => body,
            _ => return error(400, "invalid request: body must be a JSON object"),
        };
        let Some(model) = body["model"].as_str() else {
            return error(400, "invalid request: model must be a string");
        };
        let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
            return error(400, "invalid request: messages must not be empty");
        };
        if let Some((i, m)) = messages.iter().enumerate().find(|(_, m)| {
            !matches!(
                m["role"].as_str(),
                Some("system" | "user" | "assistant" | "tool")
            )
        }) {
            return error(400, &format!("invalid request: messages[{i}].role {} is not one of system, user, assistant, tool", m["role"]));
        }
        if model.starts_with(UNKNOWN_MODEL_PREFIX) {
            return error(404, &format!("model '{model}' not found, make sure the correct model ID was used and that you have access to the model."));
        }
        let knobs = Knobs::read(request, self.chunks, self.delay, self.first_delay);
        if let Some(status) = knobs.status {
            return error(status, &format!("mock error with status {status}"));
        }
        let tools = body["tools"].as_array().cloned().unwrap_or_default();
        let call = (messages.last().is_some_and(|m| m["role"] == "user")
            && !tools.is_empty()
            && body["tool_choice"] != "NONE")
            .then(|| {
                let function = &tools[0]["function"];
                (
                    function["name"].as_str().unwrap_or("tool").to_string(),
                    json!({ first_parameter(&function["parameters"]): "Paris" }).to_string(),
                )
            });
        let pieces: Vec<String> = content_pieces(knobs.chunks, knobs.chunk_bytes).collect();
        let input: usize = messages.iter().map(|m| m.to_string().len()).sum();
        let (input_tokens, output_tokens) = (
            input.div_ceil(4) as u64,
            if call.is_some() {
                12
            } else {
                pieces.len() as u64
            },
        );
        let usage = json!({"billed_units": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                           "tokens": {"input_tokens": input_tokens + 60, "output_tokens": output_tokens}});
        let finish = if call.is_some() {
            "TOOL_CALL"
        } else {
            "COMPLETE"
        };
        let id = "c0ffee00-0000-4000-8000-000000000001";
        if body["stream"] != true {
            let message = match &call {
                Some((name, arguments)) => json!({"role": "assistant", "tool_plan": PLAN.concat(),
                    "tool_calls": [{"id": format!("{name}_mock0"), "type": "function", "function": {"name": name, "arguments": arguments}}]}),
                None => {
                    json!({"role": "assistant", "content": [{"type": "text", "text": pieces.concat()}]})
                }
            };
            return Reply::json(
                200,
                &json!({"id": id, "message": message, "finish_reason": finish, "usage": usage}),
            );
        }
        let mut events: Vec<(Duration, Value)> = vec![(
            Duration::ZERO,
            json!({"id": id, "type": "message-start",
            "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
        )];
        match &call {
            Some((name, arguments)) => {
                for (i, piece) in PLAN.iter().enumerate() {
                    events.push((knobs.pause_before(i), json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}})));
                }
                events.push((Duration::ZERO, json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls":
                    {"id": format!("{name}_mock0"), "type": "function", "function": {"name": name, "arguments": ""}}}}})));
                for fragment in fragments(arguments, 3) {
                    events.push((Duration::ZERO, json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": fragment}}}}})));
                }
                events.push((Duration::ZERO, json!({"type": "tool-call-end", "index": 0})));
            }
            None => {
                events.push((Duration::ZERO, json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
                for (i, piece) in pieces.iter().enumerate() {
                    events.push((knobs.pause_before(i), json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}}})));
                }
                events.push((Duration::ZERO, json!({"type": "content-end", "index": 0})));
            }
        }
        events.push((
            knobs.delay,
            json!({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}}),
        ));
        let framed: Vec<(Duration, Bytes)> = events
            .into_iter()
            .map(|(pause, e)| {
                (
                    pause,
                    Bytes::from(format!(
                        "event: {}\ndata: {e}\n\n",
                        e["type"].as_str().unwrap_or("")
                    )),
                )
            })
            .chain(std::iter::once((
                Duration::ZERO,
                Bytes::from_static(b"data: [DONE]\n\n"),
            )))
            .collect();
        Reply::Stream {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            pieces: Box::new(framed.into_iter()),
        }
    }
}
