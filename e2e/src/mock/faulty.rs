//! An OpenAI provider that fails on request: the `x-mock-fault` header picks the failure,
//! without it the request goes to [`OpenAiMock`]. Streams start like a real answer (the
//! mock's first chunks), then fail:
//!
//! - `reset-mid-stream`: three chunks, then the connection is cut;
//! - `hangup`: the connection is closed before any answer;
//! - `stall-mid-stream`: two chunks, then nothing for a minute;
//! - `error-mid-stream`: two chunks, then OpenAI's in-stream rate-limit error, and the end;
//! - `garbage-stream`: a 200 `text/event-stream` of bytes that are no SSE;
//! - `garbage-json`: a 200 `application/json` that is not JSON;
//! - `html`: a 200 `text/html` page, as a misconfigured proxy or captive portal answers;
//! - `unexpected-json`: a 200 JSON object of the wrong shape (for callouts: a service that
//!   changed its API);
//! - `echo-key`: a 401 whose message repeats the `Authorization` it received, whole (some
//!   providers echo the key they refuse).
//!
//! Every other knob of [`super::knobs`] works as for [`OpenAiMock`].

use super::openai::completion::{sse_events, Completion};
use super::openai::{chat_body, error, includes_usage, OpenAiMock};
use super::{knobs::Knobs, Provider, Recorded, Reply};
use bytes::Bytes;
use serde_json::json;
use std::time::Duration;

pub const FAULT_HEADER: &str = "x-mock-fault";

#[derive(Default)]
pub struct FaultyMock {
    pub inner: OpenAiMock,
}

impl FaultyMock {
    pub fn with_key(key: &str) -> Self {
        FaultyMock {
            inner: OpenAiMock::with_key(key),
        }
    }

    /// The first `n` SSE events of the answer the mock would stream to `request`.
    fn first_events(&self, request: &Recorded, n: usize) -> Vec<(Duration, Bytes)> {
        let body = chat_body(request, false).unwrap_or_default();
        let knobs = Knobs::read(request, 5, Duration::ZERO, Duration::ZERO);
        let model = body["model"].as_str().unwrap_or("gpt-4o").to_string();
        let completion = Completion::new(&body, "chatcmpl-faulty".into(), model, &knobs);
        let chunks = completion.chunks(includes_usage(&body), &knobs);
        let mut events = sse_events(chunks.into_iter().map(|c| (c.pause, c.json)));
        events.truncate(n);
        events
    }
}

/// The whole answer of a fault that is not a stream of the mock's chunks.
pub fn fault_reply(fault: &str) -> Option<Reply> {
    let full = |content_type: &str, body: &'static [u8]| Reply::Full {
        status: 200,
        headers: vec![("content-type".into(), content_type.into())],
        body: Bytes::from_static(body),
    };
    Some(match fault {
        "hangup" => Reply::Hangup,
        "garbage-stream" => full(
            "text/event-stream",
            b"\x00\xff\xfe garbage \r\n{{{ not an event\n:\n\x1b[2J\x07\nretry: nope\n\n\xc3\x28",
        ),
        "garbage-json" => full("application/json", b"<<<< \x00\xff not json {{{"),
        "html" => full(
            "text/html; charset=utf-8",
            b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>",
        ),
        "unexpected-json" => Reply::json(200, &json!({"unexpected": true, "results": "none"})),
        _ => return None,
    })
}

impl Provider for FaultyMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let Some(fault) = request.header(FAULT_HEADER).map(str::to_string) else {
            return self.inner.handle(request);
        };
        let stream_headers = || vec![("content-type".into(), "text/event-stream".into())];
        match fault.as_str() {
            "reset-mid-stream" => Reply::Broken {
                status: 200,
                headers: stream_headers(),
                pieces: Box::new(self.first_events(request, 3).into_iter()),
            },
            "stall-mid-stream" => {
                let mut pieces = self.first_events(request, 2);
                pieces.push((
                    Duration::from_secs(60),
                    Bytes::from_static(b"data: [DONE]\n\n"),
                ));
                Reply::Stream {
                    status: 200,
                    headers: stream_headers(),
                    pieces: Box::new(pieces.into_iter()),
                }
            }
            "error-mid-stream" => {
                let mut pieces = self.first_events(request, 2);
                pieces.push((
                    Duration::from_millis(10),
                    Bytes::from_static(b"data: {\"error\":{\"message\":\"Rate limit reached for gpt-4o\",\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}\n\n"),
                ));
                Reply::Stream {
                    status: 200,
                    headers: stream_headers(),
                    pieces: Box::new(pieces.into_iter()),
                }
            }
            "echo-key" => error(
                401,
                &format!(
                    "Incorrect API key provided: {}",
                    request.header("authorization").unwrap_or_default()
                ),
                None,
                Some("invalid_api_key"),
            ),
            other => fault_reply(other).unwrap_or_else(|| self.inner.handle(request)),
        }
    }
}

/// A service that answers every request with one fault of [`fault_reply`] (`html`,
/// `garbage-json`, `unexpected-json`, `hangup`…): a dependency that is up but broken.
pub struct AlwaysFaulty(pub &'static str);

impl Provider for AlwaysFaulty {
    fn handle(&self, _request: &Recorded) -> Reply {
        fault_reply(self.0).unwrap_or_else(|| panic!("unknown fault {}", self.0))
    }
}
