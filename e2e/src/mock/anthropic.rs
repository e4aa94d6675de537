//! A mock of Anthropic's Messages API (`POST /v1/messages`, `?beta=true` allowed), following
//! Anthropic's public API reference and the recorded transcripts:
//!
//! - auth by `x-api-key` (401 `authentication_error` when missing or wrong); the
//!   `anthropic-version` header is required (400 `invalid_request_error`);
//! - request validation with Anthropic's field-path messages (`max_tokens: Field required`);
//! - answers: text, a `tool_use` block for the first tool when the user's turn asks for one,
//!   a `thinking` block first when `thinking` is enabled, `max_tokens` and `stop_sequences`
//!   stops; usage with cache counts and `service_tier`;
//! - streams as `event: <type>` + `data: <json>` events (no `[DONE]`), with the live API's
//!   habit of padding the JSON with spaces before its closing brace (see
//!   [`AnthropicMock::pad_events`]);
//! - errors `{"type":"error","error":{"type","message"},"request_id"}` and a `request-id`
//!   header on every answer.
//!
//! Per-request knobs: see [`super::knobs`]; `x-mock-status` answers the Anthropic error type
//! of that status (529 is `overloaded_error`).

mod message;
mod request;
mod stream;

use super::knobs::Knobs;
use super::{Provider, Recorded, Reply};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use message::Message;
use request::MessagesRequest;

/// Model names starting with this answer 404 `not_found_error`.
pub const UNKNOWN_MODEL_PREFIX: &str = "does-not-exist";

pub struct AnthropicMock {
    /// The key clients must present in `x-api-key`; `None` accepts any non-empty key.
    pub api_key: Option<String>,
    /// Also take the key from `Authorization: Bearer <key>`. Off by default, as Anthropic
    /// documents `x-api-key`; the official Python SDK 2.x sends `api_key` as a bearer token,
    /// so tests driving the mock with that SDK directly turn this on.
    pub accept_bearer: bool,
    pub chunks: usize,
    pub delay: Duration,
    pub first_delay: Duration,
    /// Pad stream events' JSON with spaces before the closing brace, like the live API.
    pub pad_events: bool,
    next_id: AtomicU64,
}

impl Default for AnthropicMock {
    fn default() -> Self {
        AnthropicMock {
            api_key: None,
            accept_bearer: false,
            chunks: 5,
            delay: Duration::ZERO,
            first_delay: Duration::ZERO,
            pad_events: true,
            next_id: AtomicU64::new(1),
        }
    }
}

impl AnthropicMock {
    /// Requires `x-api-key: <key>`.
    pub fn with_key(key: &str) -> Self {
        AnthropicMock {
            api_key: Some(key.to_string()),
            ..Default::default()
        }
    }

    /// Also accepts the key as `Authorization: Bearer <key>` (see [`Self::accept_bearer`]).
    pub fn accepting_bearer(mut self) -> Self {
        self.accept_bearer = true;
        self
    }

    fn check_auth(&self, request: &Recorded) -> Result<(), Reply> {
        let non_empty = |v: &str| Some(v.trim().to_string()).filter(|k| !k.is_empty());
        let bearer = || {
            request
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(non_empty)
        };
        let presented = request
            .header("x-api-key")
            .and_then(non_empty)
            .or_else(|| self.accept_bearer.then(bearer).flatten());
        match (presented, &self.api_key) {
            (None, _) => Err(error(401, "x-api-key header is required")),
            (Some(key), Some(expected)) if key != *expected => Err(error(401, "invalid x-api-key")),
            _ => Ok(()),
        }
    }

    fn messages(&self, request: &Recorded) -> Reply {
        if request.header("anthropic-version").is_none() {
            return error(400, "anthropic-version: header is required");
        }
        let parsed = match MessagesRequest::parse(&request.body) {
            Ok(parsed) => parsed,
            Err(message) => return error(400, &message),
        };
        if parsed.model.starts_with(UNKNOWN_MODEL_PREFIX) {
            return error(404, &format!("model: {}", parsed.model));
        }
        let knobs = Knobs::read(request, self.chunks, self.delay, self.first_delay);
        if let Some(status) = knobs.status {
            // 529 is the API's own overload signal, always with this message.
            let message = match status {
                529 => "Overloaded".to_string(),
                _ => format!("mock error with status {status}"),
            };
            return error(status, &message);
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = Message::answer(&parsed, n, &knobs);
        if parsed.stream {
            let events = stream::events(&message, &knobs, self.pad_events);
            Reply::event_stream(&[("request-id", &request_id())], events)
        } else {
            json_reply(200, &message.json(), request_id())
        }
    }
}

impl Provider for AnthropicMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let path = request.path.split('?').next().unwrap_or("");
        if (request.method.as_str(), path) != ("POST", "/v1/messages") {
            return error(404, "Not Found");
        }
        if let Err(reply) = self.check_auth(request) {
            return reply;
        }
        self.messages(request)
    }
}

/// The error type Anthropic names for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Anthropic's error body, typed by the status.
pub fn error(status: u16, message: &str) -> Reply {
    let id = request_id();
    let body = json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
        "request_id": id
    });
    json_reply(status, &body, id)
}

fn json_reply(status: u16, value: &Value, request_id: String) -> Reply {
    Reply::Full {
        status,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("request-id".into(), request_id),
        ],
        body: Bytes::from(serde_json::to_vec(value).expect("json")),
    }
}

/// A fresh `req_…` id, as Anthropic puts in error bodies and the `request-id` header.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("req_mock{:016}", NEXT.fetch_add(1, Ordering::Relaxed))
}
