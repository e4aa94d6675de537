//! A mock of the OpenAI API, faithful to the wire format recorded from the real service: bearer
//! auth, error bodies, SSE framing (`data: …\n\n`, role chunk first, empty-delta finish chunk,
//! `choices: []` usage chunk when `stream_options.include_usage` is set, `data: [DONE]`).
//!
//! Endpoints are matched by how the path ends, so the mock also stands in for OpenAI-compatible
//! services with other prefixes (`/api/paas/v4/chat/completions`, `/compatible-mode/v1/…`):
//! `POST …/chat/completions`, `POST …/embeddings` (see [`super::embeddings`]), `GET …/models`.
//! The request is recorded with the path as received.
//!
//! Per-request knobs, sent as headers: see [`super::knobs`] (`x-mock-chunks`, default 5).

pub mod completion;

use super::knobs::Knobs;
use super::{embeddings, Provider, Recorded, Reply};
use completion::{sse_events, Completion};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
        let body = match chat_body(request, true) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let model = body["model"].as_str().unwrap_or_default().to_string();
        if model.starts_with(UNKNOWN_MODEL_PREFIX) {
            return error(
                404,
                &format!("The model `{model}` does not exist or you do not have access to it."),
                None,
                Some("model_not_found"),
            );
        }
        let knobs = Knobs::read(request, self.chunks, self.delay, self.first_delay);
        if let Some(status) = knobs.status {
            return mock_status_error(status);
        }
        let id = format!(
            "chatcmpl-mock{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let completion = Completion::new(&body, id, model, &knobs);
        if !is_stream(&body) {
            return Reply::json(200, &completion.json());
        }
        let chunks = completion.chunks(includes_usage(&body), &knobs);
        let events = sse_events(chunks.into_iter().map(|c| (c.pause, c.json)));
        Reply::event_stream(&[("x-request-id", "req_mock")], events)
    }

    fn embeddings(&self, request: &Recorded) -> Reply {
        let body = match json_object(request) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let knobs = Knobs::read(request, self.chunks, self.delay, self.first_delay);
        if let Some(status) = knobs.status {
            return mock_status_error(status);
        }
        embeddings::answer(&body, None)
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
        match request.method.as_str() {
            "POST" if path.ends_with("/chat/completions") => self.chat(request),
            "POST" if path.ends_with("/embeddings") => self.embeddings(request),
            "GET" if path.ends_with("/models") => self.models(),
            method => error(404, &format!("Invalid URL ({method} {path})"), None, None),
        }
    }
}

/// The request body as a JSON object, with OpenAI's message when it is not one.
pub(crate) fn json_object(request: &Recorded) -> Result<Value, Reply> {
    match serde_json::from_slice(&request.body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(error(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
            None,
            None,
        )),
    }
}

/// A chat request body that passed OpenAI's checks. Services that take the model from the URL
/// (Azure deployments) do not require `model`.
pub(crate) fn chat_body(request: &Recorded, model_required: bool) -> Result<Value, Reply> {
    let body = json_object(request)?;
    validate_chat(&body, model_required)?;
    Ok(body)
}

pub(crate) fn is_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool) == Some(true)
}

pub(crate) fn includes_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
}

/// The error a `x-mock-status` knob asks for.
fn mock_status_error(status: u16) -> Reply {
    error(
        status,
        &format!("mock error with status {status}"),
        None,
        Some("mock_error"),
    )
}

/// The request checks OpenAI makes, with its messages.
fn validate_chat(body: &Value, model_required: bool) -> Result<(), Reply> {
    match body.get("model") {
        None | Some(Value::Null) if model_required => {
            return Err(error(400, "you must provide a model parameter", None, None));
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {}
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
                if let Some(Value::Array(parts)) = message.get("content") {
                    for (j, part) in parts.iter().enumerate() {
                        validate_part(part, &format!("messages[{i}].content[{j}]"))?;
                    }
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

/// A content part: a known type, and `text` for text parts.
fn validate_part(part: &Value, at: &str) -> Result<(), Reply> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    if ![
        "text",
        "image_url",
        "input_audio",
        "refusal",
        "audio",
        "file",
    ]
    .contains(&kind)
    {
        return Err(error(
            400,
            &format!("Invalid value: '{kind}'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'."),
            Some(&format!("{at}.type")),
            Some("invalid_value"),
        ));
    }
    if kind == "text" && !part.get("text").is_some_and(Value::is_string) {
        let param = format!("{at}.text");
        return Err(error(
            400,
            &format!("Missing required parameter: '{param}'."),
            Some(&param),
            Some("missing_required_parameter"),
        ));
    }
    Ok(())
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
