//! Looking at the start of a 200 answer for an error Envoy's retries cannot see: a JSON error
//! object, or an error as the first event of a stream. Only the first event (or the JSON body)
//! is held; a stream that starts well is passed on at once.

use aigw_shared::body::{is_event_stream, is_json};
use aigw_shared::sse::{complete_events_len, Decoder};
use serde_json::Value;

/// What the start of a body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// A normal answer; the model it names, if it does.
    Fine(Option<String>),
    /// An error, with the provider's message.
    Error(String),
}

/// Whether a 200 of this content type can hide an error worth looking for.
pub fn worth_inspecting(content_type: &str) -> bool {
    is_event_stream(content_type) || is_json(content_type)
}

/// Judges the body held so far (`end`: nothing more will come). Past `limit` bytes without a
/// verdict the answer is taken as fine: it is too long to be an error.
pub fn judge(content_type: &str, held: &[u8], end: bool, limit: usize) -> Verdict {
    let document: Option<Value> = if is_event_stream(content_type) {
        let complete = complete_events_len(held);
        let mut decoder = Decoder::new();
        let mut first = decoder.push(&held[..complete]).next();
        if first.is_none() && end {
            decoder.push_with(&held[complete..], |_| {});
            first = decoder.finish();
        }
        match first {
            Some(event) => Some(serde_json::from_str(&event.data).unwrap_or(Value::Null)),
            None if end || held.len() >= limit => return Verdict::Fine(None),
            None => return Verdict::NeedMore,
        }
    } else {
        match serde_json::from_slice::<Value>(held) {
            Ok(value) => Some(value),
            Err(_) if end || held.len() >= limit => return Verdict::Fine(None),
            Err(_) => return Verdict::NeedMore,
        }
    };
    let document = document.unwrap_or(Value::Null);
    if let Some(error) = document.get("error").filter(|e| !e.is_null()) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| error.to_string());
        return Verdict::Error(message.chars().take(300).collect());
    }
    Verdict::Fine(
        document
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string),
    )
}

/// Providers' ways of saying a request is too long for the model.
pub fn is_context_length_refusal(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = &value["error"];
    let code = error["code"].as_str().unwrap_or("");
    let message = error["message"].as_str().unwrap_or("").to_ascii_lowercase();
    code == "context_length_exceeded"
        || message.contains("context length")
        || message.contains("context window")
        || message.contains("prompt is too long")
        || message.contains("maximum context")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSE: &str = "text/event-stream";
    const JSON: &str = "application/json";

    #[test]
    fn error_as_the_first_stream_event() {
        let body = b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\ndata: [DONE]\n\n";
        for cut in 0..body.len() {
            let verdict = judge(SSE, &body[..cut], false, 1 << 16);
            let first_event_end = body.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
            if cut < first_event_end {
                assert_eq!(verdict, Verdict::NeedMore, "cut {cut}");
            } else {
                assert_eq!(verdict, Verdict::Error("overloaded".into()), "cut {cut}");
            }
        }
    }

    #[test]
    fn a_good_stream_is_judged_on_its_first_event() {
        let body =
            b"data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
        assert_eq!(
            judge(SSE, body, false, 1 << 16),
            Verdict::Fine(Some("gpt-4o".into()))
        );
    }

    #[test]
    fn json_error_bodies_and_answers() {
        assert_eq!(
            judge(JSON, br#"{"error":{"message":"quota"}}"#, true, 1 << 16),
            Verdict::Error("quota".into())
        );
        assert_eq!(
            judge(JSON, br#"{"error":"plain text"}"#, true, 1 << 16),
            Verdict::Error("\"plain text\"".into())
        );
        assert_eq!(
            judge(JSON, br#"{"model":"m","choices":[]}"#, true, 1 << 16),
            Verdict::Fine(Some("m".into()))
        );
        assert_eq!(
            judge(JSON, br#"{"model":"m","#, false, 1 << 16),
            Verdict::NeedMore
        );
        assert_eq!(
            judge(JSON, br#"{"model":"m","#, false, 4),
            Verdict::Fine(None),
            "too long to be an error"
        );
        assert_eq!(judge(JSON, b"not json", true, 1 << 16), Verdict::Fine(None));
        assert_eq!(
            judge(JSON, br#"{"error":null,"model":"m"}"#, true, 1 << 16),
            Verdict::Fine(Some("m".into()))
        );
    }

    #[test]
    fn context_length_refusals_of_several_providers() {
        assert!(is_context_length_refusal(br#"{"error":{"message":"This model's maximum context length is 128000 tokens.","code":"context_length_exceeded"}}"#));
        assert!(is_context_length_refusal(br#"{"error":{"message":"prompt is too long: 210000 tokens > 200000 maximum","type":"invalid_request_error"}}"#));
        assert!(!is_context_length_refusal(
            br#"{"error":{"message":"Invalid 'messages': empty array.","code":"empty_array"}}"#
        ));
        assert!(!is_context_length_refusal(b"not json"));
    }
}
