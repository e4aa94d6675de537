//! What a client gets instead of blocked content, in the canonical (OpenAI) shapes.
//!
//! As in Higress, the default answer to a blocked prompt is a normal completion (status 200)
//! whose assistant message is the deny message (streamed as chunks and `data: [DONE]` when the
//! request streams); `denyCode` 400, 403 or 451 answers an OpenAI error instead. A blocked
//! answer is always replaced in the completion's own shape with `finish_reason:
//! "content_filter"`: by then the status line has left.

use aigw_shared::canonical::{ChunkWriter, Completion};
use aigw_shared::error::{ApiError, ClientApi};

/// Response header marking every answer the plugin blocked.
pub const HEADER: &str = "x-ai-content-safety";
/// `model` of answers the plugin writes itself, as Higress's `from-security-guard`.
pub const MODEL: &str = "from-content-safety";
pub const FINISH_REASON: &str = "content_filter";

/// Identity of the completion a deny answer stands in for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl Identity {
    /// A writer of chunks in this answer's name.
    pub fn writer(&self) -> ChunkWriter {
        let mut writer = ChunkWriter::new(self.created);
        writer.id = self.id.clone();
        writer.model = self.model.clone();
        writer
    }

    pub fn local(now_s: u64) -> Identity {
        Identity {
            id: format!("chatcmpl-content-safety-{now_s}"),
            model: MODEL.into(),
            created: now_s,
        }
    }
}

/// A whole local answer: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// The answer to a blocked prompt.
pub fn request_answer(status: u16, message: &str, stream: bool, who: &Identity) -> Answer {
    if status != 200 {
        let error =
            ApiError::new(status, "invalid_request_error", message).with_code("content_filter");
        return Answer {
            status,
            content_type: "application/json",
            body: error.body(ClientApi::OpenAi),
        };
    }
    if stream {
        Answer {
            status,
            content_type: "text/event-stream",
            body: stream_tail(message, who),
        }
    } else {
        Answer {
            status,
            content_type: "application/json",
            body: completion(message, who),
        }
    }
}

/// A `chat.completion` whose answer is `message`.
pub fn completion(message: &str, who: &Identity) -> Vec<u8> {
    Completion {
        id: who.id.clone(),
        model: who.model.clone(),
        created: who.created,
        text: message.into(),
        finish_reason: FINISH_REASON.into(),
        ..Completion::default()
    }
    .to_json()
}

/// The events that end a stream: a chunk with `message` and `finish_reason: content_filter`,
/// then `data: [DONE]`.
pub fn stream_tail(message: &str, who: &Identity) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + message.len());
    who.writer().last_words(&mut out, message, FINISH_REASON);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::sse::Decoder;
    use serde_json::Value;

    fn who() -> Identity {
        Identity {
            id: "chatcmpl-1".into(),
            model: "gpt-4o".into(),
            created: 7,
        }
    }

    #[test]
    fn higress_default_is_a_completion() {
        let answer = request_answer(200, "no", false, &who());
        assert_eq!(answer.status, 200);
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "no");
        assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(body["object"], "chat.completion");
    }

    #[test]
    fn streamed_deny_ends_with_done() {
        let answer = request_answer(200, "no", true, &who());
        assert_eq!(answer.content_type, "text/event-stream");
        let events: Vec<_> = Decoder::new().push(&answer.body).collect();
        assert_eq!(events.len(), 2);
        let chunk: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(chunk["choices"][0]["delta"]["content"], "no");
        assert_eq!(chunk["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(chunk["id"], "chatcmpl-1");
        assert!(events[1].is_done());
    }

    #[test]
    fn error_statuses_answer_an_openai_error() {
        let answer = request_answer(451, "blocked", true, &who());
        assert_eq!(answer.status, 451);
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["error"]["message"], "blocked");
        assert_eq!(body["error"]["code"], "content_filter");
    }
}
