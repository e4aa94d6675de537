//! A cached answer replayed as the provider would have sent it: a `chat.completion`, or for a
//! streaming request a real `chat.completion.chunk` SSE stream (role chunk, the content over
//! several chunks, finish chunk, usage chunk when asked, `data: [DONE]`).
//!
//! Usage reports the cached counts, marked as served from cache: every prompt token is counted
//! in `prompt_tokens_details.cached_tokens`, and `system_fingerprint` is `ai-cache`, so meters
//! and quotas can tell a hit from a model call (the `x-ai-cache: hit` header says it too).

use crate::entry::Entry;
use aigw_shared::canonical::{ChunkWriter, Completion};
use aigw_shared::usage::TokenCounts;

/// `system_fingerprint` of every replayed answer.
pub const FINGERPRINT: &str = "ai-cache";

/// Identity of one replay.
pub struct Replay<'a> {
    pub entry: &'a Entry,
    pub id: String,
    pub created: u64,
}

impl Replay<'_> {
    /// The stored counts, every prompt token marked as served from cache.
    fn usage(&self) -> TokenCounts {
        let e = self.entry;
        TokenCounts {
            cached_input: e.prompt_tokens,
            ..TokenCounts::new(e.prompt_tokens, e.completion_tokens, 0)
        }
    }

    /// The non-streaming answer.
    pub fn completion(&self) -> Vec<u8> {
        Completion {
            id: self.id.clone(),
            model: self.entry.model.clone(),
            created: self.created,
            text: self.entry.content.clone(),
            finish_reason: "stop".into(),
            usage: self.usage(),
            system_fingerprint: Some(FINGERPRINT.into()),
            ..Completion::default()
        }
        .to_json()
    }

    /// The streaming answer, whole, with content in pieces of `chunk_chars` characters.
    pub fn stream(&self, include_usage: bool, chunk_chars: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entry.content.len() * 2 + 1024);
        let mut writer = ChunkWriter::new(self.created);
        writer.id = self.id.clone();
        writer.model = self.entry.model.clone();
        writer.include_usage = include_usage;
        writer.usage = self.usage();
        writer.system_fingerprint = Some(FINGERPRINT.into());
        writer.start(&mut out);
        for piece in pieces(&self.entry.content, chunk_chars) {
            writer.text(&mut out, piece);
        }
        writer.finish(&mut out, "stop");
        writer.end(&mut out);
        out
    }
}

/// `text` cut into pieces of at most `chars` characters (never inside a character).
fn pieces(text: &str, chars: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (count, (i, _)) in text.char_indices().enumerate() {
        if count > 0 && count % chars.max(1) == 0 {
            out.push(&text[start..i]);
            start = i;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::openai::{ChatChunk, ChatCompletion};
    use aigw_shared::sse::Decoder;

    fn entry() -> Entry {
        Entry {
            content: "The capital of France is Paris. \u{1f5fc}".into(),
            model: "gpt-4o-2024".into(),
            prompt_tokens: 14,
            completion_tokens: 8,
        }
    }

    fn replay(entry: &Entry) -> Replay<'_> {
        Replay {
            entry,
            id: "chatcmpl-cache-1".into(),
            created: 1700000000,
        }
    }

    #[test]
    fn completion_parses_as_the_canonical_type_with_cached_usage() {
        let e = entry();
        let c: ChatCompletion = serde_json::from_slice(&replay(&e).completion()).unwrap();
        assert_eq!(c.object, "chat.completion");
        assert_eq!(
            c.choices[0].message.content.as_ref().unwrap().text(),
            e.content
        );
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
        let usage = c.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (14, 8, 22)
        );
        assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, 14);
    }

    #[test]
    fn stream_has_role_pieces_finish_usage_and_done() {
        let e = entry();
        let body = replay(&e).stream(true, 5);
        let events: Vec<_> = Decoder::new().push(&body).collect();
        assert!(events.last().unwrap().is_done());
        let chunks: Vec<ChatChunk> = events[..events.len() - 1]
            .iter()
            .map(|ev| serde_json::from_str(&ev.data).unwrap())
            .collect();
        assert_eq!(
            chunks[0].choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        let text: String = chunks
            .iter()
            .filter_map(|c| c.choices.first()?.delta.content.clone())
            .collect();
        assert_eq!(text, e.content);
        let content_chunks = chunks
            .iter()
            .filter(|c| c.choices.first().is_some_and(|ch| ch.delta.has_output()))
            .count();
        assert_eq!(content_chunks, e.content.chars().count().div_ceil(5));
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish.choices[0].finish_reason.as_deref(), Some("stop"));
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        assert_eq!(last.usage.as_ref().unwrap().total_tokens, 22);
        assert!(chunks
            .iter()
            .all(|c| c.id == "chatcmpl-cache-1" && c.model == "gpt-4o-2024"));
    }

    #[test]
    fn stream_without_usage_has_no_usage_chunk() {
        let e = entry();
        let body = String::from_utf8(replay(&e).stream(false, 100)).unwrap();
        assert!(!body.contains("usage"));
        assert_eq!(body.matches("data: ").count(), 4);
    }

    #[test]
    fn pieces_respect_characters() {
        assert_eq!(
            pieces("h\u{e9}llo w\u{f6}rld", 4),
            vec!["h\u{e9}ll", "o w\u{f6}", "rld"]
        );
        assert_eq!(pieces("", 4), Vec::<&str>::new());
        assert_eq!(pieces("abc", 3), vec!["abc"]);
    }
}
