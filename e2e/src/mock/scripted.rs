//! An OpenAI chat provider, open to any client, whose answer the test writes: with
//! `x-mock-content` (percent-encoded text, `|` between the pieces it is streamed in) the answer
//! is that text; without it, the pieces of [`OpenAiMock`]'s answer. Other paths go to
//! [`OpenAiMock`]. `x-mock-pause-before: N` with `x-mock-pause-ms: M` pauses the
//! stream M ms before piece N (a provider that stalls mid-answer). Other knobs as in
//! [`super::knobs`]. Every request is recorded, so tests see what reached the provider.

use super::aliyun_green::percent_decode;
use super::knobs::Knobs;
use super::openai::completion::{sse_events, Answer, Completion};
use super::openai::{chat_body, content_pieces, includes_usage, is_stream, OpenAiMock};
use super::{Provider, Recorded, Reply};
use std::time::Duration;

#[derive(Default)]
pub struct ScriptedMock {
    pub fallback: OpenAiMock,
}

impl Provider for ScriptedMock {
    fn handle(&self, request: &Recorded) -> Reply {
        if !request.path.ends_with("/chat/completions") {
            return self.fallback.handle(request);
        }
        let body = match chat_body(request, true) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let knobs = Knobs::read(request, 5, Duration::ZERO, Duration::ZERO);
        let pieces: Vec<String> = match request.header("x-mock-content") {
            Some(content) => percent_decode(content)
                .split('|')
                .map(str::to_string)
                .collect(),
            None => content_pieces(knobs.chunks, knobs.chunk_bytes).collect(),
        };
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let mut completion = Completion::new(&body, "chatcmpl-scripted".into(), model, &knobs);
        completion.answer = Answer::Text { pieces };
        if !is_stream(&body) {
            return Reply::json(200, &completion.json());
        }
        let num = |name: &str| request.header(name).and_then(|v| v.parse::<usize>().ok());
        let pause = (num("x-mock-pause-before"), num("x-mock-pause-ms"));
        let mut chunks = completion.chunks(includes_usage(&body), &knobs);
        if let (Some(before), Some(ms)) = pause {
            // Chunk 0 is the role chunk: piece N is chunk N + 1.
            if let Some(chunk) = chunks.get_mut(before + 1) {
                chunk.pause = Duration::from_millis(ms as u64);
            }
        }
        Reply::event_stream(
            &[],
            sse_events(chunks.into_iter().map(|c| (c.pause, c.json))),
        )
    }
}

/// The `x-mock-content` value for `pieces`.
pub fn content_header(pieces: &[&str]) -> String {
    let joined = pieces.join("|");
    let mut out = String::with_capacity(joined.len());
    for b in joined.bytes() {
        if b.is_ascii_alphanumeric() || b" .,!?-_'|".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
