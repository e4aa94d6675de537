//! Holding a streamed answer in windows while each window is checked, then releasing it.
//!
//! Envoy keeps every byte of a response body the plugin pauses on, and hands the whole held
//! buffer to each later body callback; releasing (continue or resume) sends all of it. So the
//! plugin releases at event boundaries only: complete SSE events go out, a trailing partial
//! event is cut off ("carry") and put back in front of the next chunk. This module is that
//! logic over a [`HeldBody`], so it runs the same against Envoy and against the simulated
//! buffer of the tests.
//!
//! Every byte released has been checked: a window is due when its text reaches the window's
//! size (`first_window_chars`, doubling with each window up to `window_chars`), when the stream
//! finishes, when the held bytes reach `max_hold_bytes` or when
//! its first text has waited `max_hold_ms`. Each choice and each tool call has its own window
//! (see [`crate::lanes`]); each window repeats the last `overlap_chars` of the previous one in
//! its lane, so a phrase split across two windows is seen whole. Text that arrives while a
//! check is in flight is checked before anything is released. A blocked window is replaced by a
//! deny chunk (`finish_reason: content_filter`) and `data: [DONE]`, and the rest of the
//! provider's stream is dropped. So is a stream whose events do not parse (unless they are to be
//! checked as raw text), or that opens more lanes than it may.

use crate::deny::{stream_tail, Identity};
use crate::extract::{ChunkView, Lane, Unparsable, UNPARSABLE};
use crate::lanes::{Lanes, TooManyLanes};
use crate::local::BACKEND;
use crate::restore::StreamRestore;
use crate::verdict::{Finding, Verdict};
use aigw_shared::error::ClientApi;
use aigw_shared::event_bound::{self, EventBound, Framing};
use aigw_shared::sse::{complete_events_len, Decoder, Event};

/// Envoy's held response body as the plugin can touch it.
pub trait HeldBody {
    fn size(&self) -> usize;
    fn read(&self, start: usize, len: usize) -> Vec<u8>;
    /// Replaces the first `size` bytes with `data` (`size` 0 prepends).
    fn replace_prefix(&mut self, size: usize, data: &[u8]);
}

/// What the plugin does next with the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep holding (`Pause`).
    Hold,
    /// Send what the body now holds (`Continue`, or resume from a callback).
    Release,
    /// Check these texts (one per lane), holding meanwhile; report with
    /// [`StreamHold::on_verdict`].
    Check(Vec<String>),
    /// The stream cannot be checked: report this block with [`StreamHold::on_verdict`].
    Block(Finding),
}

/// The lane of the raw text of events that do not parse (no choice has it).
const RAW_LANE: Lane = (u32::MAX, 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// The first window of a stream; each next one is twice as large, up to `window_chars`
    /// (so the first byte waits for a few words, not for a whole window).
    pub first_window_chars: usize,
    pub window_chars: usize,
    pub overlap_chars: usize,
    pub max_hold_bytes: usize,
    pub max_hold_ms: u64,
}

pub struct StreamHold {
    windows: Windows,
    /// Check the text at all (a stream held only to restore placeholders is not checked).
    checking: bool,
    deny_message: String,
    decoder: Decoder,
    /// The bytes of the body not yet released: the carry after a release, else what Envoy holds.
    held: Vec<u8>,
    /// Envoy's buffer starts with `held` (we paused); false after a release, when `held` is
    /// the carry and must be put back in front.
    envoy_holds: bool,
    /// Text of complete held events not yet checked, by lane.
    lanes: Lanes,
    /// The size of the next window.
    window_now: usize,
    unparsable: Unparsable,
    utf8: Utf8Stream,
    /// The body held bytes that are not UTF-8: an event whose data shows a replacement
    /// character does not parse.
    invalid_utf8: bool,
    /// Why the stream cannot be checked, once known.
    refusal: Option<Finding>,
    in_check: bool,
    hold_since_ms: Option<u64>,
    /// The stream finished (`finish_reason`, `[DONE]` or end of body): check without waiting.
    finishing: bool,
    ended: bool,
    denied: bool,
    identity: Identity,
    restore: Option<StreamRestore>,
    /// Largest number of bytes held at once, for the memory figures.
    peak_held: usize,
    /// Bounds the partial event that would otherwise be carried without end.
    bound: EventBound,
    /// The bound tripped and the plugin has not reported it yet.
    overflow: bool,
}

impl StreamHold {
    pub fn new(
        windows: Windows,
        checking: bool,
        deny_message: String,
        identity: Identity,
        restore: Option<StreamRestore>,
        unparsable: Unparsable,
    ) -> StreamHold {
        StreamHold {
            windows,
            checking,
            deny_message,
            decoder: Decoder::new(),
            held: Vec::new(),
            envoy_holds: false,
            lanes: Lanes::default(),
            unparsable,
            utf8: Utf8Stream::default(),
            invalid_utf8: false,
            refusal: None,
            in_check: false,
            window_now: windows.first_window_chars,
            hold_since_ms: None,
            finishing: false,
            ended: false,
            denied: false,
            identity,
            restore,
            peak_held: 0,
            bound: EventBound::new(Framing::Sse, event_bound::DEFAULT_MAX_EVENT_BYTES),
            overflow: false,
        }
    }

    /// Sets the bound on one event (`maxEventBytes`).
    pub fn bounded(mut self, max_event_bytes: usize) -> StreamHold {
        self.bound = EventBound::new(Framing::Sse, max_event_bytes);
        self
    }

    /// The stream was ended for an event past the bound (reported once).
    pub fn take_overflow(&mut self) -> bool {
        std::mem::take(&mut self.overflow)
    }

    /// A body callback: `body` is everything Envoy holds, `end` the end of the stream.
    pub fn on_body(&mut self, body: &mut dyn HeldBody, end: bool, now_ms: u64) -> Step {
        if self.denied {
            if body.size() > 0 {
                body.replace_prefix(body.size(), b"");
            }
            return if self.in_check {
                Step::Hold
            } else {
                Step::Release
            };
        }
        if !self.envoy_holds && !self.held.is_empty() {
            body.replace_prefix(0, &self.held);
        }
        self.envoy_holds = true;
        let known = self.held.len();
        let len = body.size();
        if len > known {
            let new = body.read(known, len - known);
            if let event_bound::Check::Tripped { .. } = self.bound.check(&new) {
                return self.end_oversized(body);
            }
            self.feed(&new, now_ms);
            self.held.extend_from_slice(&new);
            self.peak_held = self.peak_held.max(self.held.len());
        }
        if end {
            self.ended = true;
            self.finishing = true;
            self.invalid_utf8 |= !self.utf8.is_complete();
            if let Some(event) = self.decoder.finish() {
                self.on_event(&event, now_ms);
            }
        }
        self.next(body, now_ms)
    }

    /// The verdict on the text of the last [`Step::Check`].
    pub fn on_verdict(&mut self, body: &mut dyn HeldBody, verdict: &Verdict, now_ms: u64) -> Step {
        self.in_check = false;
        if self.denied {
            return Step::Release;
        }
        if verdict.is_block() {
            let tail = stream_tail(&self.deny_message, &self.identity);
            self.end_with(body, &tail);
            return Step::Release;
        }
        self.next(body, now_ms)
    }

    /// An event passed the bound: nothing held is released (it is unchecked, and its last event
    /// incomplete); the stream ends with an error and the rest of it is dropped.
    fn end_oversized(&mut self, body: &mut dyn HeldBody) -> Step {
        let tail = event_bound::stream_error_tail(ClientApi::OpenAi, self.bound.limit(), false);
        self.end_with(body, &tail);
        self.overflow = true;
        if self.in_check {
            Step::Hold
        } else {
            Step::Release
        }
    }

    /// Replaces everything held with `tail` (a deny answer or an error); the rest of the
    /// provider's stream is dropped.
    fn end_with(&mut self, body: &mut dyn HeldBody, tail: &[u8]) {
        body.replace_prefix(body.size(), tail);
        self.denied = true;
        self.held = Vec::new();
        self.lanes = Lanes::default();
        self.envoy_holds = false;
    }

    /// A timer tick: starts the check of a window that has waited too long.
    pub fn on_tick(&mut self, now_ms: u64) -> Step {
        if self.denied || self.in_check || !self.envoy_holds || !self.window_due(now_ms) {
            return Step::Hold;
        }
        Step::Check(self.take_window())
    }

    /// The time at which a held window becomes due, for the timer.
    pub fn due_at_ms(&self) -> Option<u64> {
        (!self.in_check && !self.denied && self.envoy_holds)
            .then_some(self.hold_since_ms?)
            .map(|since| since + self.windows.max_hold_ms)
    }

    /// Bytes Envoy holds for this stream (outside a body callback, when it is paused).
    pub fn held_len(&self) -> usize {
        if self.envoy_holds {
            self.held.len()
        } else {
            0
        }
    }

    /// The whole body has been seen and nothing is held any more.
    pub fn is_done(&self) -> bool {
        (self.ended && !self.in_check && self.held.is_empty()) || self.denied
    }

    /// Placeholders restored so far.
    pub fn restored(&self) -> u64 {
        self.restore.as_ref().map_or(0, StreamRestore::restored)
    }

    pub fn peak_held_bytes(&self) -> usize {
        self.peak_held
    }

    fn next(&mut self, body: &mut dyn HeldBody, now_ms: u64) -> Step {
        if self.in_check {
            return Step::Hold;
        }
        if let Some(finding) = self.refusal.take() {
            self.in_check = true;
            return Step::Block(finding);
        }
        if self.window_due(now_ms) {
            return Step::Check(self.take_window());
        }
        if self.lanes.is_empty() {
            self.release(body);
            return Step::Release;
        }
        Step::Hold
    }

    fn window_due(&self, now_ms: u64) -> bool {
        !self.lanes.is_empty()
            && (self.finishing
                || self.lanes.fullest_chars() >= self.window_now
                || self.held.len() >= self.windows.max_hold_bytes
                || self
                    .hold_since_ms
                    .is_some_and(|since| now_ms.saturating_sub(since) >= self.windows.max_hold_ms))
    }

    fn take_window(&mut self) -> Vec<String> {
        self.hold_since_ms = None;
        self.in_check = true;
        self.window_now = (self.window_now * 2).min(self.windows.window_chars);
        self.lanes.take(self.windows.overlap_chars)
    }

    /// Sends every complete held event (all of it at the end of the stream), carrying the rest.
    fn release(&mut self, body: &mut dyn HeldBody) {
        let n = if self.ended {
            self.held.len()
        } else {
            complete_events_len(&self.held)
        };
        match self.restore.as_mut() {
            Some(restore) => {
                let out = restore.rewrite(&self.held[..n], self.ended);
                body.replace_prefix(body.size(), &out);
            }
            None if n < self.held.len() => body.replace_prefix(body.size(), &self.held[..n]),
            None => {}
        }
        self.held.drain(..n);
        self.envoy_holds = false;
    }

    fn feed(&mut self, bytes: &[u8], now_ms: u64) {
        self.invalid_utf8 |= !self.utf8.push(bytes);
        let mut events: Vec<Event> = Vec::new();
        self.decoder.push_with(bytes, |e| events.push(e));
        for event in &events {
            self.on_event(event, now_ms);
        }
    }

    fn on_event(&mut self, event: &Event, now_ms: u64) {
        if event.is_done() {
            self.finishing = true;
            return;
        }
        if !self.checking && !self.identity.id.is_empty() {
            return;
        }
        let parsed = serde_json::from_str::<ChunkView>(&event.data);
        if parsed.is_err() && event.data.trim().is_empty() {
            return;
        }
        // Bytes that were not UTF-8 show as replacement characters in the decoded data.
        if parsed.is_err()
            || (self.invalid_utf8 && event.data.contains(char::REPLACEMENT_CHARACTER))
        {
            self.on_unparsable();
        }
        let Ok(chunk) = parsed else {
            if self.unparsable == Unparsable::CheckRaw && self.checking {
                self.push_text(RAW_LANE, &event.data, now_ms);
            }
            return;
        };
        if self.identity.id.is_empty() {
            if let Some(id) = chunk.id.as_deref().filter(|id| !id.is_empty()) {
                self.identity.id = id.to_string();
                if let Some(model) = chunk.model.as_deref().filter(|m| !m.is_empty()) {
                    self.identity.model = model.to_string();
                }
                if let Some(created) = chunk.created {
                    self.identity.created = created;
                }
            }
        }
        if !self.checking {
            return;
        }
        chunk.for_each_text(|lane, text| self.push_text(lane, text, now_ms));
        if chunk.finishes() {
            self.finishing = true;
        }
    }

    fn push_text(&mut self, lane: Lane, text: &str, now_ms: u64) {
        if text.is_empty() {
            return;
        }
        if self.lanes.is_empty() {
            self.hold_since_ms = Some(now_ms);
        }
        if let Err(TooManyLanes) = self.lanes.push(lane, text) {
            self.refuse("too_many_choices");
        }
    }

    /// Bytes or an event that cannot be read as a chunk.
    fn on_unparsable(&mut self) {
        if self.checking && self.unparsable == Unparsable::Block {
            self.refuse(UNPARSABLE);
        }
    }

    fn refuse(&mut self, label: &str) {
        self.refusal
            .get_or_insert_with(|| Finding::new(BACKEND, label));
    }
}

/// Checks that a byte stream cut anywhere is UTF-8.
#[derive(Debug, Default)]
struct Utf8Stream {
    /// The start of a character the next bytes complete.
    partial: Vec<u8>,
}

impl Utf8Stream {
    /// False once the bytes so far cannot be UTF-8.
    fn push(&mut self, bytes: &[u8]) -> bool {
        let joined;
        let bytes = if self.partial.is_empty() {
            bytes
        } else {
            joined = [std::mem::take(&mut self.partial).as_slice(), bytes].concat();
            &joined
        };
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                self.partial = bytes[e.valid_up_to()..].to_vec();
                true
            }
            Err(_) => false,
        }
    }

    /// No character was left unfinished.
    fn is_complete(&self) -> bool {
        self.partial.is_empty()
    }
}

#[cfg(test)]
pub mod sim {
    //! Envoy's held response body, simulated: paused bytes stay, released bytes go to the client.

    use super::*;

    #[derive(Default)]
    pub struct Envoy {
        pub buffer: Vec<u8>,
        pub client: Vec<u8>,
    }

    impl HeldBody for Envoy {
        fn size(&self) -> usize {
            self.buffer.len()
        }
        fn read(&self, start: usize, len: usize) -> Vec<u8> {
            self.buffer[start..start + len].to_vec()
        }
        fn replace_prefix(&mut self, size: usize, data: &[u8]) {
            self.buffer.splice(..size, data.iter().copied());
        }
    }

    /// The content a chunk stream carries, all chunks together.
    pub fn streamed_text(body: &[u8]) -> String {
        aigw_shared::sse::Decoder::new()
            .push(body)
            .filter(|e| !e.is_done())
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }

    impl Envoy {
        pub fn release(&mut self) {
            let out = std::mem::take(&mut self.buffer);
            self.client.extend_from_slice(&out);
        }
    }

    /// Feeds `stream` in pieces cut at `cuts`, checking windows with `check` right away (the
    /// local backend's way); returns what the client received.
    pub fn run(
        hold: &mut StreamHold,
        stream: &[u8],
        cuts: &[usize],
        mut check: impl FnMut(&str) -> Verdict,
    ) -> Vec<u8> {
        let mut envoy = Envoy::default();
        let mut start = 0;
        let ends: Vec<usize> = cuts.iter().copied().chain([stream.len()]).collect();
        for (i, &end) in ends.iter().enumerate() {
            envoy.buffer.extend_from_slice(&stream[start..end]);
            start = end;
            let last = i == ends.len() - 1;
            let mut step = hold.on_body(&mut envoy, last, 0);
            loop {
                let verdict = match step {
                    Step::Check(texts) => texts
                        .iter()
                        .map(|t| check(t))
                        .find(Verdict::is_block)
                        .unwrap_or(Verdict::Pass),
                    Step::Block(finding) => Verdict::Block(finding),
                    _ => break,
                };
                step = hold.on_verdict(&mut envoy, &verdict, 0);
            }
            if step == Step::Release {
                envoy.release();
            }
        }
        envoy.client
    }
}

#[cfg(test)]
mod tests {
    use super::sim::{run, streamed_text as text_of, Envoy};
    use super::*;
    use crate::verdict::Finding;
    use aigw_shared::sse::Decoder;
    use serde_json::{json, Value};

    const WINDOWS: Windows = Windows {
        first_window_chars: 20,
        window_chars: 20,
        // At least the longest phrase checked for, less one.
        overlap_chars: 13,
        max_hold_bytes: 1 << 20,
        max_hold_ms: 1000,
    };

    fn stream_of(pieces: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 3, "model": "gpt-x",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
        };
        aigw_shared::sse::write_data(
            &mut out,
            &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        );
        for p in pieces {
            aigw_shared::sse::write_data(&mut out, &chunk(json!({"content": p}), Value::Null));
        }
        aigw_shared::sse::write_data(&mut out, &chunk(json!({}), json!("stop")));
        out.extend_from_slice(aigw_shared::sse::DONE);
        out
    }

    fn hold() -> StreamHold {
        StreamHold::new(
            WINDOWS,
            true,
            "blocked".into(),
            Identity::default(),
            None,
            Unparsable::Block,
        )
    }

    fn deny_word(word: &'static str) -> impl FnMut(&str) -> Verdict {
        move |text: &str| {
            if text.contains(word) {
                Verdict::Block(Finding::new("local", "deny_word"))
            } else {
                Verdict::Pass
            }
        }
    }

    const PIECES: &[&str] = &[
        "Once ",
        "upon a ",
        "time there ",
        "was a ",
        "forbidden",
        " word ",
        "in the ",
        "middle ",
        "of a ",
        "long story.",
    ];

    #[test]
    fn clean_stream_passes_byte_for_byte_at_every_split() {
        let stream = stream_of(PIECES);
        for cut in 0..=stream.len() {
            let out = run(&mut hold(), &stream, &[cut], deny_word("nothing"));
            assert_eq!(out, stream, "split at {cut}");
        }
    }

    #[test]
    fn a_deny_word_split_at_any_byte_is_caught() {
        let stream = stream_of(PIECES);
        for a in 0..=stream.len() {
            for b in (a..=stream.len()).step_by(97) {
                let out = run(&mut hold(), &stream, &[a, b], deny_word("forbidden word"));
                let text = text_of(&out);
                assert!(!text.contains("forbidden word"), "splits {a},{b}: {text}");
                assert!(text.ends_with("blocked"), "splits {a},{b}: {text}");
                let events: Vec<_> = Decoder::new().push(&out).collect();
                assert!(events.last().unwrap().is_done(), "splits {a},{b}");
                let deny: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
                assert_eq!(deny["choices"][0]["finish_reason"], "content_filter");
                assert_eq!(
                    deny["id"], "chatcmpl-9",
                    "the deny chunk continues the same completion"
                );
            }
        }
    }

    #[test]
    fn a_phrase_across_two_windows_is_seen_thanks_to_the_overlap() {
        // Windows of 20 characters: "forbidden" ends the second window, " word" starts the third.
        let stream = stream_of(PIECES);
        let cuts: Vec<usize> = (1..stream.len()).step_by(40).collect();
        let mut windows = Vec::new();
        let out = run(&mut hold(), &stream, &cuts, |text: &str| {
            windows.push(text.to_string());
            deny_word("forbidden word")(text)
        });
        assert!(text_of(&out).ends_with("blocked"));
        assert!(windows.len() >= 2);
        assert!(
            windows.iter().any(|w| w.contains("forbidden word")),
            "{windows:?}"
        );
    }

    #[test]
    fn windows_hold_about_window_chars_and_release_in_order() {
        let pieces: Vec<String> = (0..100).map(|i| format!("w{i:02} ")).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let stream = stream_of(&refs);
        let mut sizes = Vec::new();
        let out = run(
            &mut hold(),
            &stream,
            &(1..stream.len()).step_by(50).collect::<Vec<_>>(),
            |t: &str| {
                sizes.push(t.chars().count());
                Verdict::Pass
            },
        );
        assert_eq!(out, stream);
        assert!(
            sizes
                .iter()
                .all(|&n| n <= WINDOWS.window_chars + WINDOWS.overlap_chars + 4),
            "{sizes:?}"
        );
    }

    #[test]
    fn windows_start_small_and_grow_to_window_chars() {
        let pieces: Vec<String> = (0..100).map(|i| format!("w{i:02} ")).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let stream = stream_of(&refs);
        let mut h = StreamHold::new(
            Windows {
                first_window_chars: 4,
                window_chars: 32,
                overlap_chars: 3,
                ..WINDOWS
            },
            true,
            "blocked".into(),
            Identity::default(),
            None,
            Unparsable::Block,
        );
        let mut new_chars = Vec::new();
        let out = run(
            &mut h,
            &stream,
            &(1..stream.len()).step_by(30).collect::<Vec<_>>(),
            |t: &str| {
                new_chars.push(t.chars().count());
                Verdict::Pass
            },
        );
        assert_eq!(out, stream);
        // Each window (overlap included) holds at least its size: 4, 8, 16, then 32 each.
        let due = [4, 8, 16, 32, 32];
        for (n, (&seen, &size)) in new_chars.iter().zip(&due).enumerate() {
            assert!(
                seen >= size && seen <= size + 3 + 8,
                "window {n}: {new_chars:?}"
            );
        }
    }

    #[test]
    fn text_arriving_during_a_callout_is_checked_before_release() {
        let stream = stream_of(PIECES);
        let mut envoy = Envoy::default();
        let mut h = hold();
        // The first 30 characters arrive and go out for checking.
        let split = stream.len() / 2;
        envoy.buffer.extend_from_slice(&stream[..split]);
        let step = h.on_body(&mut envoy, false, 0);
        assert!(matches!(step, Step::Check(_)));
        // The rest arrives while the callout is in flight: held, not released.
        envoy.buffer.extend_from_slice(&stream[split..]);
        assert_eq!(h.on_body(&mut envoy, true, 0), Step::Hold);
        // The first verdict passes; the text that arrived meanwhile must be checked too.
        match h.on_verdict(&mut envoy, &Verdict::Pass, 0) {
            Step::Check(texts) => assert!(texts[0].contains("long story")),
            other => panic!("expected a check of the late text, got {other:?}"),
        }
        assert_eq!(h.on_verdict(&mut envoy, &Verdict::Pass, 0), Step::Release);
        envoy.release();
        assert_eq!(envoy.client, stream);
    }

    #[test]
    fn a_window_that_waits_too_long_is_checked_on_the_tick() {
        let stream = stream_of(&["short"]);
        let mut envoy = Envoy::default();
        let mut h = hold();
        let cut = stream.len() - 60; // the finish chunk and [DONE] have not arrived
        envoy.buffer.extend_from_slice(&stream[..cut]);
        assert_eq!(h.on_body(&mut envoy, false, 100), Step::Hold);
        assert_eq!(h.due_at_ms(), Some(1100));
        assert_eq!(h.on_tick(500), Step::Hold);
        assert_eq!(h.on_tick(1100), Step::Check(vec!["short".into()]));
        assert_eq!(
            h.on_verdict(&mut envoy, &Verdict::Pass, 1100),
            Step::Release
        );
        envoy.release();
        assert_eq!(text_of(&envoy.client), "short");
    }

    #[test]
    fn held_bytes_are_bounded() {
        let windows = Windows {
            max_hold_bytes: 2000,
            first_window_chars: 1 << 20,
            window_chars: 1 << 20,
            ..WINDOWS
        };
        let pieces: Vec<String> = (0..500).map(|i| format!("{i} ")).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let stream = stream_of(&refs);
        let mut h = StreamHold::new(
            windows,
            true,
            "x".into(),
            Identity::default(),
            None,
            Unparsable::Block,
        );
        let cuts: Vec<usize> = (1..stream.len()).step_by(97).collect();
        let out = run(&mut h, &stream, &cuts, |_| Verdict::Pass);
        assert_eq!(out, stream);
        assert!(
            h.peak_held_bytes() < 2000 + 200,
            "held {}",
            h.peak_held_bytes()
        );
    }

    #[test]
    fn no_panic_on_any_input() {
        let mut rng = 0x9e3779b97f4a7c15u64;
        for round in 0..300 {
            let mut bytes = Vec::new();
            for _ in 0..(round % 40) * 10 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let alphabet = b"data: {}\n\r\"choices[]delta:content xyz\xff\xe4";
                bytes.push(alphabet[(rng % alphabet.len() as u64) as usize]);
            }
            let cuts: Vec<usize> = (1..bytes.len()).step_by(1 + round % 9).collect();
            let _ = run(&mut hold(), &bytes, &cuts, deny_word("xyz"));
        }
    }

    fn chunk(index: u32, delta: Value) -> String {
        json!({"id": "c", "choices": [{"index": index, "delta": delta, "finish_reason": null}]})
            .to_string()
    }

    fn events(datas: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for data in datas {
            aigw_shared::sse::write_data(&mut out, data);
        }
        out.extend_from_slice(aigw_shared::sse::DONE);
        out
    }

    #[test]
    fn each_choice_and_tool_call_has_its_own_window() {
        let stream = events(&[
            chunk(0, json!({"content": "the forbidden"})),
            chunk(1, json!({"content": "something"})),
            chunk(0, json!({"content": " word"})),
            chunk(
                0,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\": \"forbidden"}}]}),
            ),
            chunk(
                0,
                json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
            ),
            chunk(
                0,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": " phrase\"}"}}]}),
            ),
        ]);
        let out = run(&mut hold(), &stream, &[], deny_word("forbidden word"));
        assert!(text_of(&out).ends_with("blocked"), "choice 0's text");
        let out = run(&mut hold(), &stream, &[], deny_word("forbidden phrase"));
        assert!(
            text_of(&out).ends_with("blocked"),
            "tool call 0's arguments"
        );
        let out = run(&mut hold(), &stream, &[], deny_word("forbiddensomething"));
        assert_eq!(out, stream, "choices are never joined");
    }

    #[test]
    fn too_many_choices_are_cut() {
        let datas: Vec<String> = (0..20).map(|i| chunk(i, json!({"content": "x"}))).collect();
        let stream = events(&datas);
        let out = run(&mut hold(), &stream, &[], deny_word("nothing"));
        assert!(text_of(&out).ends_with("blocked"));
    }

    #[test]
    fn events_that_do_not_parse_are_blocked_or_checked_raw() {
        let mut surrogate = events(&[chunk(0, json!({"content": "hi "}))]);
        let raw = br#"data: {"choices":[{"index":0,"delta":{"content":"\ud83d forbidden word"}}]}"#;
        surrogate.splice(0..0, raw.iter().chain(b"\n\n").copied());
        let mut invalid = events(&[chunk(0, json!({"content": "hi "}))]);
        invalid.splice(
            0..0,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"\xc3 ok\"}}]}\n\n"
                .iter()
                .copied(),
        );
        for stream in [&surrogate, &invalid] {
            for cut in [0, 7, 30] {
                let out = run(&mut hold(), stream, &[cut], deny_word("nothing"));
                assert!(text_of(&out).ends_with("blocked"), "cut at {cut}");
                assert!(
                    !String::from_utf8_lossy(&out).contains("ok\""),
                    "cut at {cut}"
                );
            }
        }
        let raw_hold = || {
            StreamHold::new(
                WINDOWS,
                true,
                "blocked".into(),
                Identity::default(),
                None,
                Unparsable::CheckRaw,
            )
        };
        let out = run(
            &mut raw_hold(),
            &surrogate,
            &[9],
            deny_word("forbidden word"),
        );
        assert!(text_of(&out).ends_with("blocked"));
        let out = run(&mut raw_hold(), &surrogate, &[9], deny_word("nothing"));
        assert_eq!(out, surrogate);
        // Only event data counts: bytes in a comment are not an answer.
        let mut comment = b": \xff\n\n".to_vec();
        comment.extend(events(&[chunk(0, json!({"content": "hi"}))]));
        assert_eq!(
            run(&mut hold(), &comment, &[], deny_word("nothing")),
            comment
        );
    }

    #[test]
    fn a_character_split_across_chunks_is_valid_utf8() {
        let stream = stream_of(&["héllo wörld, 炸"]);
        for cut in 0..=stream.len() {
            let out = run(&mut hold(), &stream, &[cut], deny_word("nothing"));
            assert_eq!(out, stream, "split at {cut}");
        }
    }
}
