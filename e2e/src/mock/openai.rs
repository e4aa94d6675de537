//! A mock of the OpenAI API (`/v1/chat/completions`, `/v1/models`), faithful to the wire format
//! recorded from the real service: bearer auth, error bodies, SSE framing (`data: …\n\n`, role
//! chunk first, empty-delta finish chunk, `choices: []` usage chunk when
//! `stream_options.include_usage` is set, `data: [DONE]`).
//!
//! Per-request knobs, sent as headers (they pass through the gateway unchanged):
//! `x-mock-chunks` (content chunks, default 5), `x-mock-delay-ms` (between chunks),
//! `x-mock-first-delay-ms` (before the first content chunk), `x-mock-chunk-bytes` (size of each
//! content piece, for large streams), `x-mock-status` (answer this error status).

use super::{Provider, Recorded, Reply};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Model names starting with this answer 404 `model_not_found`.
pub const UNKNOWN_MODEL_PREFIX: &str = "does-not-exist";

pub struct OpenAiMock {
    /// The key clients must present as `Authorization: Bearer <key>`; `None` accepts any key.
    pub api_key: Option<String>,
    pub chunks: usize,
    pub delay: Duration,
    pub first_delay: Duration,
    /// Models listed by `GET /v1/models`.
    pub models: Vec<String>,
    next_id: AtomicU64,
}

impl Default for OpenAiMock {
    fn default() -> Self {
        OpenAiMock {
            api_key: None,
            chunks: 5,
            delay: Duration::ZERO,
            first_delay: Duration::ZERO,
            models: vec!["gpt-4o-mini".into(), "gpt-4o".into()],
            next_id: AtomicU64::new(1),
        }
    }
}

const WORDS: &[&str] = &[
    "Hello",
    "from",
    "the",
    "mock",
    "provider,",
    "streaming",
    "one",
    "token",
    "at",
    "a",
    "time.",
];

/// The text a mock completion of `chunks` pieces carries, piece by piece.
pub fn content_pieces(chunks: usize, chunk_bytes: Option<usize>) -> impl Iterator<Item = String> {
    (0..chunks).map(move |i| match chunk_bytes {
        Some(n) => "abcdefghijklmnopqrstuvwxyz0123456789"
            .chars()
            .cycle()
            .skip(i % 36)
            .take(n)
            .collect(),
        None => {
            let word = WORDS[i % WORDS.len()];
            if i == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            }
        }
    })
}

/// Prompt tokens the mock charges: about four characters a token, plus framing per message.
pub fn prompt_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| {
            let text = match m.get("content") {
                Some(Value::String(s)) => s.len(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| p.get("text").and_then(Value::as_str).map_or(85, str::len))
                    .sum(),
                _ => 0,
            };
            4 + text.div_ceil(4) as u64
        })
        .sum::<u64>()
        + 3
}

impl OpenAiMock {
    pub fn with_key(key: &str) -> Self {
        OpenAiMock {
            api_key: Some(key.to_string()),
            ..Default::default()
        }
    }

    fn check_auth(&self, request: &Recorded) -> Result<(), Reply> {
        let presented = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        match (presented, &self.api_key) {
            (None, _) => Err(error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username. You can obtain an API key from https://platform.openai.com/account/api-keys.",
                None,
                None,
            )),
            (Some(key), Some(expected)) if key != expected => Err(error(
                401,
                &format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    redact(key)
                ),
                None,
                Some("invalid_api_key"),
            )),
            _ => Ok(()),
        }
    }

    fn chat(&self, request: &Recorded) -> Reply {
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
                None,
                None,
            ),
        };
        if let Err(reply) = validate_chat(&body) {
            return reply;
        }
        let model = body["model"].as_str().unwrap_or_default().to_string();
        if model.starts_with(UNKNOWN_MODEL_PREFIX) {
            return error(
                404,
                &format!("The model `{model}` does not exist or you do not have access to it."),
                None,
                Some("model_not_found"),
            );
        }
        let knobs = Knobs::from(request, self);
        if let Some(status) = knobs.status {
            return error(
                status,
                &format!("mock error with status {status}"),
                None,
                Some("mock_error"),
            );
        }
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let answer = Answer::for_request(&body, &knobs);
        let usage = usage_json(prompt_tokens(&messages), answer.completion_tokens());
        let id = format!(
            "chatcmpl-mock{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let meta = ChunkMeta { id, created, model };
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            let include_usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true);
            stream_reply(meta, answer, usage, include_usage, knobs)
        } else {
            Reply::json(200, &completion_json(&meta, &answer, usage))
        }
    }

    fn models(&self) -> Reply {
        let data: Vec<Value> = self
            .models
            .iter()
            .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}))
            .collect();
        Reply::json(200, &json!({"object": "list", "data": data}))
    }
}

impl Provider for OpenAiMock {
    fn handle(&self, request: &Recorded) -> Reply {
        if let Err(reply) = self.check_auth(request) {
            return reply;
        }
        let path = request.path.split('?').next().unwrap_or("");
        match (request.method.as_str(), path) {
            ("POST", "/v1/chat/completions") => self.chat(request),
            ("GET", "/v1/models") => self.models(),
            (method, _) => error(404, &format!("Invalid URL ({method} {path})"), None, None),
        }
    }
}

/// The request checks OpenAI makes, with its messages.
fn validate_chat(body: &Value) -> Result<(), Reply> {
    match body.get("model") {
        None | Some(Value::Null) => {
            return Err(error(400, "you must provide a model parameter", None, None));
        }
        Some(Value::String(_)) => {}
        Some(other) => return Err(invalid_type("model", "a string", other)),
    }
    match body.get("messages") {
        None | Some(Value::Null) => Err(error(
            400,
            "Missing required parameter: 'messages'.",
            Some("messages"),
            Some("missing_required_parameter"),
        )),
        Some(Value::Array(messages)) if messages.is_empty() => Err(error(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        )),
        Some(Value::Array(messages)) => {
            for (i, message) in messages.iter().enumerate() {
                let role = message.get("role").and_then(Value::as_str).unwrap_or("");
                if !["system", "developer", "user", "assistant", "tool", "function"].contains(&role) {
                    return Err(error(
                        400,
                        &format!("Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."),
                        Some(&format!("messages[{i}].role")),
                        Some("invalid_value"),
                    ));
                }
            }
            match body.get("stream") {
                None | Some(Value::Null) | Some(Value::Bool(_)) => Ok(()),
                Some(other) => Err(invalid_type("stream", "a boolean", other)),
            }
        }
        Some(other) => Err(invalid_type("messages", "an array", other)),
    }
}

fn invalid_type(param: &str, expected: &str, got: &Value) -> Reply {
    let got = match got {
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Null => "null",
    };
    error(
        400,
        &format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
        Some(param),
        Some("invalid_type"),
    )
}

/// OpenAI's error body.
pub fn error(status: u16, message: &str, param: Option<&str>, code: Option<&str>) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}),
    )
}

fn redact(key: &str) -> String {
    if key.len() <= 8 {
        return "*".repeat(key.len());
    }
    format!(
        "{}{}{}",
        &key[..3],
        "*".repeat(key.len() - 7),
        &key[key.len() - 4..]
    )
}

struct Knobs {
    chunks: usize,
    chunk_bytes: Option<usize>,
    delay: Duration,
    first_delay: Duration,
    status: Option<u16>,
}

impl Knobs {
    fn from(request: &Recorded, mock: &OpenAiMock) -> Knobs {
        let num = |name: &str| {
            request
                .header(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Knobs {
            chunks: num("x-mock-chunks").map_or(mock.chunks, |n| n as usize),
            chunk_bytes: num("x-mock-chunk-bytes").map(|n| n as usize),
            delay: num("x-mock-delay-ms").map_or(mock.delay, Duration::from_millis),
            first_delay: num("x-mock-first-delay-ms")
                .map_or(mock.first_delay, Duration::from_millis),
            status: num("x-mock-status").map(|s| s as u16).filter(|s| *s >= 400),
        }
    }
}

/// What the mock answers: text, or a call of the first tool when the last turn is the user's.
enum Answer {
    Text { pieces: Vec<String> },
    ToolCall { name: String, arguments: String },
}

impl Answer {
    fn for_request(body: &Value, knobs: &Knobs) -> Answer {
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
            let param = function
                .pointer("/parameters/required/0")
                .and_then(Value::as_str)
                .or_else(|| {
                    function
                        .pointer("/parameters/properties")
                        .and_then(Value::as_object)
                        .and_then(|p| p.keys().next().map(String::as_str))
                })
                .unwrap_or("input");
            let arguments = json!({ param: "Paris" }).to_string();
            return Answer::ToolCall { name, arguments };
        }
        Answer::Text {
            pieces: content_pieces(knobs.chunks, knobs.chunk_bytes).collect(),
        }
    }

    fn completion_tokens(&self) -> u64 {
        match self {
            Answer::Text { pieces } => pieces.len() as u64,
            Answer::ToolCall { arguments, .. } => 5 + arguments.len().div_ceil(4) as u64,
        }
    }

    fn finish_reason(&self) -> &'static str {
        match self {
            Answer::Text { .. } => "stop",
            Answer::ToolCall { .. } => "tool_calls",
        }
    }
}

struct ChunkMeta {
    id: String,
    created: u64,
    model: String,
}

fn usage_json(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn completion_json(meta: &ChunkMeta, answer: &Answer, usage: Value) -> Value {
    let message = match answer {
        Answer::Text { pieces } => json!({
            "role": "assistant", "content": pieces.concat(), "refusal": null, "annotations": []
        }),
        Answer::ToolCall { name, arguments } => json!({
            "role": "assistant", "content": null, "refusal": null, "annotations": [],
            "tool_calls": [{"id": "call_mock0", "type": "function", "function": {"name": name, "arguments": arguments}}]
        }),
    };
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "message": message, "finish_reason": answer.finish_reason()}],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_mock"
    })
}

fn stream_reply(
    meta: ChunkMeta,
    answer: Answer,
    usage: Value,
    include_usage: bool,
    knobs: Knobs,
) -> Reply {
    let base = move || {
        let mut chunk = json!({
            "id": meta.id, "object": "chat.completion.chunk", "created": meta.created, "model": meta.model,
            "service_tier": "default", "system_fingerprint": "fp_mock", "choices": [],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk["obfuscation"] = json!("mock");
        chunk
    };
    let frame = |chunk: Value| Bytes::from(format!("data: {chunk}\n\n"));
    let chunk = |delta: Value, finish: Option<&str>| -> Bytes {
        let mut chunk = base();
        chunk["choices"] =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        frame(chunk)
    };
    let mut deltas: Vec<Value> = Vec::new();
    match &answer {
        Answer::Text { pieces } => {
            deltas.push(json!({"role": "assistant", "content": "", "refusal": null}));
            deltas.extend(pieces.iter().map(|p| json!({"content": p})));
        }
        Answer::ToolCall { name, arguments } => {
            deltas.push(json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"index": 0, "id": "call_mock0", "type": "function", "function": {"name": name, "arguments": ""}}]}));
            let bytes: Vec<char> = arguments.chars().collect();
            for piece in bytes.chunks(4) {
                let piece: String = piece.iter().collect();
                deltas
                    .push(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}));
            }
        }
    }
    let finish = answer.finish_reason();
    let mut pieces: Vec<(Duration, Bytes)> = Vec::new();
    for (i, delta) in deltas.into_iter().enumerate() {
        let delay = match i {
            0 => Duration::ZERO,
            1 => knobs.first_delay,
            _ => knobs.delay,
        };
        pieces.push((delay, chunk(delta, None)));
    }
    pieces.push((knobs.delay, chunk(json!({}), Some(finish))));
    let usage_chunk = include_usage.then(|| {
        let mut last = base();
        last["usage"] = usage;
        (Duration::ZERO, frame(last))
    });
    let iter = pieces
        .into_iter()
        .chain(usage_chunk)
        .chain(std::iter::once((
            Duration::ZERO,
            Bytes::from_static(b"data: [DONE]\n\n"),
        )));
    Reply::Stream {
        status: 200,
        headers: vec![
            (
                "content-type".into(),
                "text/event-stream; charset=utf-8".into(),
            ),
            ("cache-control".into(), "no-cache".into()),
            ("x-request-id".into(), "req_mock".into()),
        ],
        pieces: Box::new(iter),
    }
}
