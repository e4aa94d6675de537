//! Putting masked values back: placeholders the model repeats in its answer are replaced by
//! the originals before the client sees them, in whole answers and in streams, where a
//! placeholder can be split across any number of chunks.

use crate::deny::Identity;
use aigw_shared::sse::{self, Decoder};
use serde_json::Value;
use std::rc::Rc;

/// Placeholder → original value, for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vault {
    entries: Vec<(String, String)>,
}

impl Vault {
    pub fn insert(&mut self, placeholder: String, original: String) {
        if !self.entries.iter().any(|(p, _)| *p == placeholder) {
            self.entries.push((placeholder, original));
        }
    }

    /// The placeholder already given to `original`, if any.
    pub fn placeholder_of(&self, original: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, o)| o == original)
            .map(|(p, _)| p.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every placeholder in `text` replaced by its original.
    pub fn restore_all(&self, text: &str) -> String {
        let mut restorer = Restorer::new(Rc::new(self.clone()));
        let mut out = restorer.push(text);
        out.push_str(&restorer.flush());
        out
    }

    /// The longest placeholder, in bytes.
    fn longest(&self) -> usize {
        self.entries.iter().map(|(p, _)| p.len()).max().unwrap_or(0)
    }
}

/// Restores one stream of text given piece by piece, holding back a tail that could be the
/// start of a placeholder until the next piece tells.
#[derive(Debug, Clone)]
pub struct Restorer {
    vault: Rc<Vault>,
    pending: String,
    pub restored: u64,
}

impl Restorer {
    pub fn new(vault: Rc<Vault>) -> Restorer {
        Restorer {
            vault,
            pending: String::new(),
            restored: 0,
        }
    }

    /// The text that can go out now.
    pub fn push(&mut self, text: &str) -> String {
        self.pending.push_str(text);
        let hold = self.partial_suffix();
        let ready_len = self.pending.len() - hold;
        let ready: String = self.pending.drain(..ready_len).collect();
        self.replace(&ready)
    }

    /// The end of the text: what was held back goes out as it is.
    pub fn flush(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.replace(&rest)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a placeholder.
    fn partial_suffix(&self) -> usize {
        let max = self
            .vault
            .longest()
            .saturating_sub(1)
            .min(self.pending.len());
        for len in (1..=max).rev() {
            let start = self.pending.len() - len;
            if !self.pending.is_char_boundary(start) {
                continue;
            }
            let suffix = &self.pending[start..];
            if self
                .vault
                .entries
                .iter()
                .any(|(p, _)| p.len() > len && p.starts_with(suffix))
            {
                return len;
            }
        }
        0
    }

    fn replace(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'scan: while !rest.is_empty() {
            for (placeholder, original) in &self.vault.entries {
                if rest.starts_with(placeholder.as_str()) {
                    out.push_str(original);
                    rest = &rest[placeholder.len()..];
                    self.restored += 1;
                    continue 'scan;
                }
            }
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

/// Restores placeholders in a `chat.completion` body (message content and tool-call
/// arguments). Returns `None` when nothing changed.
pub fn restore_completion(body: &[u8], vault: &Vault) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    for choice in value
        .get_mut("choices")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(message) = choice.get_mut("message") else {
            continue;
        };
        changed |= restore_field(message.get_mut("content"), vault);
        for call in message
            .get_mut("tool_calls")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            changed |= restore_field(call.pointer_mut("/function/arguments"), vault);
        }
    }
    changed.then(|| serde_json::to_vec(&value).unwrap_or_default())
}

fn restore_field(field: Option<&mut Value>, vault: &Vault) -> bool {
    match field {
        Some(Value::String(s)) => {
            let restored = vault.restore_all(s);
            let changed = restored != *s;
            *s = restored;
            changed
        }
        Some(Value::Array(parts)) => parts
            .iter_mut()
            .map(|part| restore_field(part.get_mut("text"), vault))
            .fold(false, |a, b| a | b),
        _ => false,
    }
}

/// Restores placeholders in the content of a chunk stream, one restorer per choice.
pub struct StreamRestore {
    vault: Rc<Vault>,
    restorers: Vec<Restorer>,
    identity: Identity,
}

impl StreamRestore {
    pub fn new(vault: Rc<Vault>) -> StreamRestore {
        StreamRestore {
            vault,
            restorers: Vec::new(),
            identity: Identity::default(),
        }
    }

    pub fn restored(&self) -> u64 {
        self.restorers.iter().map(|r| r.restored).sum()
    }

    fn restorer(&mut self, index: usize) -> &mut Restorer {
        while self.restorers.len() <= index.min(64) {
            self.restorers.push(Restorer::new(self.vault.clone()));
        }
        &mut self.restorers[index.min(64)]
    }

    /// Rewrites whole events (`events` ends on an event boundary); `end` flushes what is held.
    pub fn rewrite(&mut self, events: &[u8], end: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(events.len() + 64);
        let mut decoder = Decoder::new();
        let mut all: Vec<sse::Event> = decoder.push(events).collect();
        all.extend(decoder.finish());
        for event in all {
            if event.is_done() {
                self.flush_into(&mut out);
                out.extend_from_slice(sse::DONE);
                continue;
            }
            let data = match serde_json::from_str::<Value>(&event.data) {
                Ok(mut chunk) => {
                    self.restore_chunk(&mut chunk);
                    chunk.to_string()
                }
                Err(_) => event.data,
            };
            sse::write_event(&mut out, event.event.as_deref(), &data);
        }
        if end {
            self.flush_into(&mut out);
        }
        out
    }

    fn restore_chunk(&mut self, chunk: &mut Value) {
        if self.identity.id.is_empty() {
            self.identity = Identity {
                id: chunk["id"].as_str().unwrap_or_default().to_string(),
                model: chunk["model"].as_str().unwrap_or_default().to_string(),
                created: chunk["created"].as_u64().unwrap_or_default(),
            };
        }
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return;
        };
        for choice in choices {
            let index = choice["index"].as_u64().unwrap_or(0) as usize;
            let finished = !choice["finish_reason"].is_null();
            let content = choice
                .pointer("/delta/content")
                .and_then(Value::as_str)
                .map(str::to_string);
            let mut text = match content {
                Some(c) => self.restorer(index).push(&c),
                None if finished => String::new(),
                None => continue,
            };
            if finished {
                text.push_str(&self.restorer(index).flush());
            }
            if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                if !text.is_empty() || delta.contains_key("content") {
                    delta.insert("content".into(), Value::String(text));
                }
            }
        }
    }

    /// Emits what every choice still holds as one last content chunk.
    fn flush_into(&mut self, out: &mut Vec<u8>) {
        for index in 0..self.restorers.len() {
            let tail = self.restorers[index].flush();
            if !tail.is_empty() {
                self.identity.writer().choice_text(out, index, &tail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::sim::streamed_text;
    use serde_json::json;

    fn vault() -> Rc<Vault> {
        let mut v = Vault::default();
        v.insert("[EMAIL_1]".into(), "alice@example.com".into());
        v.insert("[PHONE_1]".into(), "+1 415 555 0100".into());
        v.insert("[EMAIL_10]".into(), "zed@example.com".into());
        Rc::new(v)
    }

    const ANSWER: &str =
        "Write to [EMAIL_1] or call [PHONE_1]; cc [EMAIL_10]. [Not a placeholder] [EMAIL_";

    fn expected() -> String {
        "Write to alice@example.com or call +1 415 555 0100; cc zed@example.com. [Not a placeholder] [EMAIL_".into()
    }

    #[test]
    fn restores_at_every_split_of_the_text() {
        for a in 0..=ANSWER.len() {
            for b in a..=ANSWER.len() {
                if !ANSWER.is_char_boundary(a) || !ANSWER.is_char_boundary(b) {
                    continue;
                }
                let mut r = Restorer::new(vault());
                let mut out = r.push(&ANSWER[..a]);
                out += &r.push(&ANSWER[a..b]);
                out += &r.push(&ANSWER[b..]);
                out += &r.flush();
                assert_eq!(out, expected(), "splits {a},{b}");
            }
        }
    }

    #[test]
    fn holds_back_only_what_could_be_a_placeholder() {
        let mut r = Restorer::new(vault());
        assert_eq!(r.push("hello [EM"), "hello ");
        assert_eq!(r.push("AIL_1] and [x"), "alice@example.com and [x");
        assert_eq!(r.flush(), "");
    }

    #[test]
    fn no_panic_on_any_input() {
        let mut rng = 11u64;
        for len in 0..300 {
            let mut r = Restorer::new(vault());
            let mut input = String::new();
            let mut out = String::new();
            for _ in 0..len {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let c = [
                    '[', ']', 'E', 'M', 'A', 'I', 'L', '_', '1', '0', 'é', '中', ' ',
                ][(rng >> 33) as usize % 13];
                input.push(c);
                out.push_str(&r.push(&c.to_string()));
            }
            out.push_str(&r.flush());
            assert_eq!(
                out,
                vault().restore_all(&input),
                "piecewise and whole agree"
            );
        }
        assert!(restore_completion(b"{not json", &vault()).is_none());
    }

    #[test]
    fn completion_bodies() {
        let body = serde_json::to_vec(&json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "mail [EMAIL_1]",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "send", "arguments": "{\"to\":\"[EMAIL_1]\"}"}}]}}]})).unwrap();
        let out: Value =
            serde_json::from_slice(&restore_completion(&body, &vault()).unwrap()).unwrap();
        assert_eq!(
            out["choices"][0]["message"]["content"],
            "mail alice@example.com"
        );
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"to\":\"alice@example.com\"}"
        );
        assert!(restore_completion(
            br#"{"choices":[{"message":{"content":"plain"}}]}"#,
            &vault()
        )
        .is_none());
    }

    fn stream() -> Vec<u8> {
        let mut out = Vec::new();
        let pieces = ["Contact ", "[EMA", "IL_1", "] now", " or [PHONE", "_1]"];
        for p in pieces {
            sse::write_data(&mut out, &json!({"id": "c1", "model": "m", "created": 1, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]}).to_string());
        }
        sse::write_data(&mut out, &json!({"id": "c1", "model": "m", "created": 1, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).to_string());
        out.extend_from_slice(sse::DONE);
        out
    }

    #[test]
    fn stream_placeholders_split_across_chunks_are_restored() {
        let body = stream();
        let mut restore = StreamRestore::new(vault());
        let out = restore.rewrite(&body, true);
        assert_eq!(
            streamed_text(&out),
            "Contact alice@example.com now or +1 415 555 0100"
        );
        assert_eq!(restore.restored(), 2);
        assert!(Decoder::new().push(&out).last().unwrap().is_done());
    }

    #[test]
    fn a_placeholder_split_at_any_byte_of_the_stream_is_restored() {
        use crate::hold::{sim, StreamHold, Windows};
        let body = stream();
        let windows = Windows {
            first_window_chars: 500,
            window_chars: 500,
            overlap_chars: 0,
            max_hold_bytes: 1 << 20,
            max_hold_ms: 1000,
        };
        for cut in 0..=body.len() {
            for second in (cut..=body.len()).step_by(41) {
                let mut hold = StreamHold::new(
                    windows,
                    false,
                    String::new(),
                    Identity::default(),
                    Some(StreamRestore::new(vault())),
                    crate::extract::Unparsable::Block,
                );
                let out = sim::run(&mut hold, &body, &[cut, second], |_| {
                    unreachable!("not checking")
                });
                assert_eq!(
                    streamed_text(&out),
                    "Contact alice@example.com now or +1 415 555 0100",
                    "splits {cut},{second}"
                );
            }
        }
    }

    #[test]
    fn a_stream_that_ends_on_a_partial_placeholder_flushes_it() {
        let mut out = Vec::new();
        sse::write_data(&mut out, &json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "see [EMAIL_"}, "finish_reason": null}]}).to_string());
        out.extend_from_slice(sse::DONE);
        let rewritten = StreamRestore::new(vault()).rewrite(&out, true);
        assert_eq!(streamed_text(&rewritten), "see [EMAIL_");
    }
}
