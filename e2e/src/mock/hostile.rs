//! A broken or hostile OpenAI-compatible provider: the request's `model` picks what it does
//! wrong (no header knobs, so nothing depends on which client headers reach it).
//!
//! - `key-in-error`: echoes the `Authorization` it received in an error — inside a 200 stream
//!   after a first piece of text, or as a 200 JSON `{"error":…}` body;
//! - `key-in-header`: a normal answer with the `Authorization` it received in a header;
//! - `lone-surrogate`: an answer whose text holds the lone surrogate escape `\ud83d`;
//! - `invalid-utf8`: an answer whose text holds bytes that are not UTF-8;
//! - anything else: a normal answer, [`ANSWER`].
//!
//! Gemini's `:generateContent` / `:streamGenerateContent` answer with a lone surrogate, or, for
//! the model `key-in-error`, with Google's 401 echoing the `Authorization` it received.
//! Every other path answers an empty OpenAI list, so a request let through is visible.

use super::{Provider, Recorded, Reply};
use bytes::Bytes;
use serde_json::json;
use std::time::Duration;

pub const ANSWER: &str = "Hello from the provider";
/// The text after the unreadable bytes (a word a content check would look for).
pub const HIDDEN: &str = "forbiddenword";
/// The header `key-in-header` echoes the key in.
pub const ECHO_HEADER: &str = "x-upstream-debug";

pub struct HostileMock;

impl Provider for HostileMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let path = request.path.split('?').next().unwrap_or("");
        if request.method == "POST" && path.contains("/key-in-error:") {
            let auth = request.header("authorization").unwrap_or_default();
            return Reply::json(
                401,
                &json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                    "message": format!("Request had invalid authentication credentials: {auth}")}}),
            );
        }
        if request.method == "POST" && path.contains(":generateContent") {
            return gemini(false);
        }
        if request.method == "POST" && path.contains(":streamGenerateContent") {
            return gemini(true);
        }
        if !(request.method == "POST" && path.ends_with("/chat/completions")) {
            return Reply::json(200, &json!({"object": "list", "data": []}));
        }
        let body = request.json();
        let stream = body["stream"] == true;
        let usage = body.pointer("/stream_options/include_usage") == Some(&json!(true));
        let auth = request.header("authorization").unwrap_or_default();
        let echo = format!("Incorrect API key provided: {auth}");
        let text: Vec<u8> = match body["model"].as_str().unwrap_or_default() {
            "key-in-error" if stream => {
                let error = json!({"error": {"message": echo, "type": "invalid_request_error", "code": "invalid_api_key"}});
                return sse(vec![
                    chunk(b"Hel"),
                    format!("data: {error}\n\n").into_bytes(),
                ]);
            }
            "key-in-error" => {
                return Reply::json(
                    200,
                    &json!({"error": {"message": echo, "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
                )
            }
            "key-in-header" => {
                let mut reply = answer(ANSWER.as_bytes(), stream, usage);
                if let Reply::Full { headers, .. } | Reply::Stream { headers, .. } = &mut reply {
                    headers.push((ECHO_HEADER.into(), format!("received {auth}")));
                }
                return reply;
            }
            "lone-surrogate" => format!("\\ud83d {HIDDEN}").into_bytes(),
            "invalid-utf8" => [b"\xff\xfe ".as_slice(), HIDDEN.as_bytes()].concat(),
            _ => ANSWER.as_bytes().to_vec(),
        };
        answer(&text, stream, usage)
    }
}

/// A chat answer whose content is `text`, written into the JSON string as it is.
fn answer(text: &[u8], stream: bool, usage: bool) -> Reply {
    const USAGE: &str = r#"{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}"#;
    if !stream {
        let body = [
            br#"{"id":"chatcmpl-hostile","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":""#.as_slice(),
            text,
            br#""},"finish_reason":"stop"}],"usage":"#,
            USAGE.as_bytes(),
            b"}",
        ]
        .concat();
        return Reply::Full {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body),
        };
    }
    let finish = r#"{"id":"chatcmpl-hostile","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    let mut events = vec![chunk(text), format!("data: {finish}\n\n").into_bytes()];
    if usage {
        events.push(format!("data: {{\"id\":\"chatcmpl-hostile\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[],\"usage\":{USAGE}}}\n\n").into_bytes());
    }
    events.push(b"data: [DONE]\n\n".to_vec());
    sse(events)
}

fn chunk(text: &[u8]) -> Vec<u8> {
    [
        br#"data: {"id":"chatcmpl-hostile","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":""#.as_slice(),
        text,
        b"\"},\"finish_reason\":null}]}\n\n",
    ]
    .concat()
}

fn sse(events: Vec<Vec<u8>>) -> Reply {
    Reply::event_stream(
        &[],
        events
            .into_iter()
            .map(|e| (Duration::from_millis(5), Bytes::from(e)))
            .collect(),
    )
}

fn gemini(stream: bool) -> Reply {
    let response = format!(
        r#"{{"candidates":[{{"content":{{"parts":[{{"text":"\ud83d {HIDDEN}"}}],"role":"model"}},"finishReason":"STOP"}}],"modelVersion":"gemini-2.5-flash"}}"#
    );
    if stream {
        return sse(vec![format!("data: {response}\n\n").into_bytes()]);
    }
    Reply::Full {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from(response),
    }
}
