//! Server-Sent Events: an incremental decoder that accepts body chunks split anywhere, and an
//! encoder.
//!
//! The decoder follows the WHATWG event-stream rules (`\n`, `\r\n` and `\r` line ends, multi-line
//! `data:`, comments, a leading BOM). It keeps only the bytes of the event being read, so memory
//! per stream is bounded by the largest single event, itself capped by `max_event_bytes`.

/// One dispatched event. `event` is `None` for the default `message` type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    pub retry: Option<u64>,
}

impl Event {
    /// An event carrying only `data`, the shape OpenAI-style streams use.
    pub fn data(data: impl Into<String>) -> Self {
        Event {
            data: data.into(),
            ..Event::default()
        }
    }

    /// `true` for OpenAI's end-of-stream marker `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// Default cap for a single event (line bytes plus accumulated data).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Incremental SSE decoder. Feed it every body chunk with [`Decoder::push`].
#[derive(Debug)]
pub struct Decoder {
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    /// The previous chunk ended in `\r`: a `\n` starting the next chunk belongs to that line end.
    skip_lf: bool,
    /// A line has begun in an earlier chunk (held in `line`, or dropped past the cap).
    in_line: bool,
    /// Bytes of a possible BOM seen at the very start; `None` once the start is behind us.
    bom_prefix: Option<usize>,
    max_event_bytes: usize,
    /// The current event grew past the cap; its bytes are dropped until the next blank line.
    discarding: bool,
    dropped_events: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Decoder {
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            event: None,
            id: None,
            retry: None,
            skip_lf: false,
            in_line: false,
            bom_prefix: Some(0),
            max_event_bytes,
            discarding: false,
            dropped_events: 0,
        }
    }

    /// Decodes one chunk and returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> impl Iterator<Item = Event> {
        let mut events = Vec::new();
        self.push_with(chunk, |event| events.push(event));
        events.into_iter()
    }

    /// Like [`Decoder::push`], calling `on_event` for each completed event instead of collecting.
    pub fn push_with(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(Event)) {
        chunk = self.strip_bom(chunk);
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line_end_len = if chunk[end] == b'\r' {
                match chunk.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None => {
                        self.skip_lf = true;
                        1
                    }
                }
            } else {
                1
            };
            let completed = if !self.in_line {
                // A whole line in one chunk counts against the cap as a line held across
                // chunks would, so the events never depend on where the body was cut.
                let line = &chunk[..end];
                if !line.is_empty() && self.held_bytes() + line.len() > self.max_event_bytes {
                    self.start_discarding();
                }
                self.process_line(line)
            } else {
                self.append_to_line(&chunk[..end]);
                self.in_line = false;
                if self.discarding {
                    // The line grew past the cap and was dropped with its event: it is not
                    // the blank line that would end the event.
                    None
                } else {
                    let line = std::mem::take(&mut self.line);
                    let event = self.process_line(&line);
                    self.line = line;
                    self.line.clear();
                    event
                }
            };
            if let Some(event) = completed {
                on_event(event);
            }
            chunk = &chunk[end + line_end_len..];
        }
        self.append_to_line(chunk);
    }

    /// Ends the stream: an event the stream did not close with a blank line is dispatched (some
    /// servers end `data: [DONE]` without one).
    pub fn finish(&mut self) -> Option<Event> {
        let line = std::mem::take(&mut self.line);
        self.skip_lf = false;
        self.in_line = false;
        let pending = if line.is_empty() {
            None
        } else {
            self.process_line(&line)
        };
        pending.or_else(|| self.dispatch())
    }

    /// Bytes held for the event being read (a partial line plus its data so far).
    pub fn held_bytes(&self) -> usize {
        self.line.len() + self.data.len()
    }

    /// Events dropped because they exceeded `max_event_bytes`.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    fn strip_bom<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let Some(seen) = self.bom_prefix else {
            return chunk;
        };
        let want = &BOM[seen..];
        let n = want.len().min(chunk.len());
        if chunk[..n] != want[..n] {
            // Not a BOM after all: give back any BOM bytes swallowed by earlier chunks.
            self.bom_prefix = None;
            if seen > 0 {
                self.append_to_line(&BOM[..seen]);
            }
            return chunk;
        }
        if n == want.len() {
            self.bom_prefix = None;
        } else {
            self.bom_prefix = Some(seen + n);
        }
        &chunk[n..]
    }

    fn append_to_line(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.in_line = true;
        if self.discarding || self.held_bytes() + bytes.len() > self.max_event_bytes {
            self.start_discarding();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn start_discarding(&mut self) {
        if !self.discarding {
            self.discarding = true;
            self.dropped_events += 1;
        }
        self.line.clear();
        self.data.clear();
    }

    /// Handles one complete line; returns the event a blank line completes.
    fn process_line(&mut self, line: &[u8]) -> Option<Event> {
        self.bom_prefix = None;
        if line.is_empty() {
            return self.dispatch();
        }
        if self.discarding || line[0] == b':' {
            return None;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                // Measured once decoded: each invalid byte becomes a 3-byte U+FFFD.
                let value = String::from_utf8_lossy(value);
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    self.start_discarding();
                    return None;
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned())
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Event> {
        let discarded = std::mem::replace(&mut self.discarding, false);
        let has_data = std::mem::replace(&mut self.has_data, false);
        let event = self.event.take();
        let retry = self.retry.take();
        let data = std::mem::take(&mut self.data);
        if discarded || !has_data {
            return None;
        }
        Some(Event {
            event,
            data,
            // The last event id persists across events, as in the spec.
            id: self.id.clone(),
            retry,
        })
    }
}

/// Length of the longest prefix of `buf` that ends on an event boundary (a blank line), so a
/// plugin that holds events can release whole events and carry the rest. A trailing `\r` counts
/// as a line end.
pub fn complete_events_len(buf: &[u8]) -> usize {
    let mut boundary = 0;
    let mut line_start = 0;
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        if b == b'\n' || b == b'\r' {
            let mut next = i + 1;
            if b == b'\r' && buf.get(next) == Some(&b'\n') {
                next += 1;
            }
            if i == line_start {
                boundary = next;
            }
            line_start = next;
            i = next;
        } else {
            i += 1;
        }
    }
    boundary
}

/// Appends `data: <line>` for every line of `data`, then the blank line that ends the event.
pub fn write_data(out: &mut Vec<u8>, data: &str) {
    write_event(out, None, data);
}

/// Appends an event with an optional `event:` type line.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// OpenAI's end-of-stream event.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn decode_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut decoder = Decoder::new();
        chunks
            .iter()
            .flat_map(|c| decoder.push(c).collect::<Vec<_>>())
            .collect()
    }

    fn decode_split(stream: &[u8], cuts: &[usize]) -> Vec<Event> {
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            events.extend(decoder.push(&stream[start..cut]));
            start = cut;
        }
        events
    }

    /// A stream with every feature the decoder must get right at any split point: CRLF and CR
    /// line ends, multi-line data, comments, event types, ids, retry, multi-byte UTF-8 and a BOM.
    const MIXED: &[u8] = "\u{feff}: comment\r\n\
        event: message_start\r\ndata: {\"a\":\"h\u{e9}llo \u{4f60}\u{597d} \u{1f600}\"}\r\n\r\n\
        data: line one\ndata: line two\nid: 7\n\n\
        data:no-space\rretry: 1500\r\r\
        event: ping\ndata\n\n\
        data: \u{1f680}\u{1f680}\n\n\
        data: [DONE]\n\n"
        .as_bytes();

    fn expected_mixed() -> Vec<Event> {
        vec![
            Event {
                event: Some("message_start".into()),
                data: "{\"a\":\"h\u{e9}llo \u{4f60}\u{597d} \u{1f600}\"}".into(),
                ..Event::default()
            },
            Event {
                data: "line one\nline two".into(),
                id: Some("7".into()),
                ..Event::default()
            },
            Event {
                data: "no-space".into(),
                id: Some("7".into()),
                retry: Some(1500),
                ..Event::default()
            },
            Event {
                event: Some("ping".into()),
                data: "".into(),
                id: Some("7".into()),
                ..Event::default()
            },
            Event {
                data: "\u{1f680}\u{1f680}".into(),
                id: Some("7".into()),
                ..Event::default()
            },
            Event {
                data: "[DONE]".into(),
                id: Some("7".into()),
                ..Event::default()
            },
        ]
    }

    #[test]
    fn decodes_whole_stream() {
        assert_eq!(decode_all(&[MIXED]), expected_mixed());
    }

    #[test]
    fn every_single_split_gives_the_same_events() {
        let expected = expected_mixed();
        for cut in 0..=MIXED.len() {
            assert_eq!(decode_split(MIXED, &[cut]), expected, "split at {cut}");
        }
    }

    #[test]
    fn every_pair_of_splits_gives_the_same_events() {
        let expected = expected_mixed();
        for a in 0..=MIXED.len() {
            for b in a..=MIXED.len() {
                assert_eq!(decode_split(MIXED, &[a, b]), expected, "splits at {a},{b}");
            }
        }
    }

    #[test]
    fn byte_by_byte_and_random_splits_give_the_same_events() {
        let expected = expected_mixed();
        let cuts: Vec<usize> = (1..MIXED.len()).collect();
        assert_eq!(decode_split(MIXED, &cuts), expected);
        let mut rng = crate::testutil::Rng::new(0x5eed);
        for _ in 0..2000 {
            let cuts = rng.cuts(MIXED.len(), 12);
            assert_eq!(decode_split(MIXED, &cuts), expected, "cuts {cuts:?}");
        }
    }

    #[test]
    fn holds_at_most_one_partial_event() {
        let mut decoder = Decoder::new();
        let event = b"data: 0123456789\n\n";
        for _ in 0..1000 {
            assert_eq!(decoder.push(event).count(), 1);
            assert_eq!(decoder.held_bytes(), 0);
        }
        assert_eq!(decoder.push(b"data: part").count(), 0);
        assert_eq!(decoder.held_bytes(), "data: part".len());
    }

    #[test]
    fn oversized_event_is_dropped_and_the_stream_recovers() {
        let mut decoder = Decoder::with_max_event_bytes(64);
        let big = format!("data: {}\n\n", "x".repeat(200));
        assert_eq!(decoder.push(big.as_bytes()).count(), 0);
        assert!(decoder.held_bytes() <= 64);
        assert_eq!(decoder.dropped_events(), 1);
        let next: Vec<_> = decoder.push(b"data: ok\n\n").collect();
        assert_eq!(next, vec![Event::data("ok")]);
    }

    #[test]
    fn an_oversized_line_is_dropped_wherever_the_body_is_cut() {
        let stream = format!("event: {}\ndata: x\n\ndata: ok\n\n", "e".repeat(100));
        let expected = vec![Event::data("ok")];
        for cut in 0..=stream.len() {
            let mut decoder = Decoder::with_max_event_bytes(64);
            let mut events: Vec<Event> = decoder.push(&stream.as_bytes()[..cut]).collect();
            events.extend(decoder.push(&stream.as_bytes()[cut..]));
            assert_eq!(events, expected, "cut at {cut}");
        }
    }

    #[test]
    fn invalid_utf8_counts_against_the_cap_as_decoded() {
        let mut decoder = Decoder::with_max_event_bytes(64);
        let mut line = b"data: ".to_vec();
        line.extend_from_slice(&[0xd4; 40]);
        line.push(b'\n');
        assert_eq!(decoder.push(&line).count(), 0);
        assert!(decoder.held_bytes() <= 64, "{}", decoder.held_bytes());
        assert_eq!(decoder.push(b"\ndata: ok\n\n").count(), 1);
    }

    #[test]
    fn finish_dispatches_an_unterminated_last_event() {
        let mut decoder = Decoder::new();
        assert_eq!(decoder.push(b"data: a\n\ndata: [DONE]").count(), 1);
        assert!(decoder.finish().unwrap().is_done());
        assert_eq!(decoder.finish(), None);
        let mut decoder = Decoder::new();
        assert_eq!(decoder.push(b"data: x\n").count(), 0);
        assert_eq!(decoder.finish(), Some(Event::data("x")));
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert!(decode_all(&[b"event: ping\n\n: keep-alive\n\n"]).is_empty());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let events = decode_all(&[b"data: a\xffb\n\n"]);
        assert_eq!(events[0].data, "a\u{fffd}b");
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_end() {
        let events = decode_all(&[b"data: x\r", b"\n\r", b"\n"]);
        assert_eq!(events, vec![Event::data("x")]);
    }

    #[test]
    fn encoder_output_decodes_to_the_same_event() {
        let mut out = Vec::new();
        write_event(&mut out, Some("content_block_delta"), "{\"a\":1}\nsecond");
        write_data(&mut out, "[DONE]");
        let events = decode_all(&[&out]);
        assert_eq!(events[0].event.as_deref(), Some("content_block_delta"));
        assert_eq!(events[0].data, "{\"a\":1}\nsecond");
        assert!(events[1].is_done());
    }

    #[test]
    fn complete_events_len_finds_the_last_boundary() {
        assert_eq!(complete_events_len(b"data: a\n\ndata: b"), 9);
        assert_eq!(complete_events_len(b"data: a\r\n\r\ndata: b\r\n"), 11);
        assert_eq!(complete_events_len(b"data: a\n"), 0);
        assert_eq!(complete_events_len(b"data: a\n\n"), 9);
        assert_eq!(complete_events_len(b"data: a\r\r"), 9);
    }

    #[test]
    fn complete_events_len_covers_exactly_the_completed_events() {
        // A holder that releases `complete_events_len` bytes releases exactly the events a
        // streaming decoder has completed so far, at every possible split.
        for cut in 0..=MIXED.len() {
            let streamed = Decoder::new().push(&MIXED[..cut]).count();
            let released = complete_events_len(&MIXED[..cut]);
            let fresh = Decoder::new().push(&MIXED[..released]).count();
            assert_eq!(fresh, streamed, "split at {cut}");
        }
    }
}
