//! One bound on a partial stream event, for every plugin that reads a streamed body.
//!
//! A provider that never ends an event (no blank line in SSE, no newline in NDJSON, an AWS
//! event-stream frame that claims to be huge) would make every plugin that holds or decodes
//! events grow its memory without end, and Envoy reset the stream once its buffer limit is
//! reached. [`EventBound`] scans the raw bytes for event boundaries (cheaply: no decoding) and
//! trips once the event being read passes the limit. The plugin then ends the stream with the
//! error [`stream_error_tail`] writes, a log line and a metric, and drops the rest of the body.

use crate::error::{ApiError, ClientApi};

/// The default bound: well below Envoy's 1 MiB per-connection buffer limit, so the plugin ends
/// the stream before Envoy resets it, and far above any real event (a large tool-call delta is
/// a few KiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 << 10;

/// The bound a plugin's `maxEventBytes` sets (the default when absent), checked for sense.
pub fn configured(value: Option<usize>) -> Result<usize, &'static str> {
    match value.unwrap_or(DEFAULT_MAX_EVENT_BYTES) {
        n if n < 1024 => Err("must be at least 1024 bytes"),
        n if n > 16 << 20 => Err("must be at most 16 MiB"),
        n => Ok(n),
    }
}

/// The framing a response's `content-type` announces.
pub fn framing_of(content_type: &str) -> Framing {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/vnd.amazon.eventstream") {
        Framing::EventStream
    } else if essence.eq_ignore_ascii_case("application/x-ndjson") {
        Framing::Lines
    } else {
        Framing::Sse
    }
}

/// How a streamed body separates its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-Sent Events: an event ends at a blank line (`\n\n`, `\r\n\r\n`, `\r\r`).
    Sse,
    /// Newline-delimited JSON: an event ends at `\n`.
    Lines,
    /// AWS event-stream: each frame starts with its total length (4 bytes, big-endian).
    EventStream,
}

/// What a chunk did to the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Every event is within the bound.
    Within,
    /// An event passed the bound. `keep` bytes of this chunk end on an event boundary before
    /// that event began (0 when it began in an earlier chunk): they may still be handled; the
    /// rest of the body must not.
    Tripped { keep: usize },
}

#[derive(Debug, Clone)]
pub struct EventBound {
    limit: usize,
    framing: Framing,
    /// Bytes of the event being read so far.
    partial: usize,
    /// SSE: the last byte seen ended a line (so a line end now is a blank line).
    at_line_start: bool,
    /// SSE: the last byte seen was `\r` (a `\n` now belongs to the same line end).
    after_cr: bool,
    /// Event-stream: prelude bytes of the frame being read, and bytes it still lacks.
    prelude: [u8; 4],
    frame_left: usize,
    tripped: bool,
}

impl EventBound {
    pub fn new(framing: Framing, limit: usize) -> Self {
        EventBound {
            limit: limit.max(1),
            framing,
            partial: 0,
            at_line_start: true,
            after_cr: false,
            prelude: [0; 4],
            frame_left: 0,
            tripped: false,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bound tripped earlier: everything after it is to be dropped.
    pub fn tripped(&self) -> bool {
        self.tripped
    }

    /// Scans the next chunk of the body.
    pub fn check(&mut self, chunk: &[u8]) -> Check {
        if self.tripped {
            return Check::Tripped { keep: 0 };
        }
        let result = match self.framing {
            Framing::Sse => self.scan_sse(chunk),
            Framing::Lines => self.scan_lines(chunk),
            Framing::EventStream => self.scan_frames(chunk),
        };
        if let Check::Tripped { .. } = result {
            self.tripped = true;
        }
        result
    }

    fn scan_sse(&mut self, chunk: &[u8]) -> Check {
        let mut boundary = 0;
        let mut i = 0;
        while i < chunk.len() {
            // Skip ordinary bytes in one step: only line ends matter.
            let rest = &chunk[i..];
            let Some(offset) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.at_line_start = false;
                self.after_cr = false;
                self.partial += rest.len();
                break;
            };
            if offset > 0 {
                self.at_line_start = false;
                self.after_cr = false;
                self.partial += offset;
            }
            let b = rest[offset];
            i += offset + 1;
            if b == b'\n' && self.after_cr {
                // The `\n` of a `\r\n`: part of the line end just seen.
                self.after_cr = false;
                if self.partial == 0 {
                    boundary = i;
                } else {
                    self.partial += 1;
                }
                continue;
            }
            self.after_cr = b == b'\r';
            if self.at_line_start {
                // A blank line: the event is complete.
                self.partial = 0;
                boundary = i;
            } else {
                self.partial += 1;
                self.at_line_start = true;
            }
            if self.partial > self.limit {
                return Check::Tripped { keep: boundary };
            }
        }
        self.within_or_tripped(boundary)
    }

    fn scan_lines(&mut self, chunk: &[u8]) -> Check {
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                // Every line but the last one fits if the longest of them does.
                let longest = chunk[..=last]
                    .split(|&b| b == b'\n')
                    .enumerate()
                    .map(|(n, line)| {
                        if n == 0 {
                            self.partial + line.len()
                        } else {
                            line.len()
                        }
                    })
                    .max()
                    .unwrap_or(0);
                if longest > self.limit {
                    return Check::Tripped { keep: 0 };
                }
                self.partial = chunk.len() - last - 1;
                self.within_or_tripped(last + 1)
            }
            None => {
                self.partial += chunk.len();
                self.within_or_tripped(0)
            }
        }
    }

    fn scan_frames(&mut self, mut chunk: &[u8]) -> Check {
        let mut consumed = 0;
        loop {
            if self.frame_left > 0 {
                let n = self.frame_left.min(chunk.len());
                self.frame_left -= n;
                chunk = &chunk[n..];
                consumed += n;
                if self.frame_left > 0 {
                    return Check::Within;
                }
                self.partial = 0;
            }
            if chunk.is_empty() {
                return Check::Within;
            }
            let have = self.partial;
            let n = (4 - have).min(chunk.len());
            self.prelude[have..have + n].copy_from_slice(&chunk[..n]);
            self.partial += n;
            chunk = &chunk[n..];
            if self.partial < 4 {
                return Check::Within;
            }
            let total = u32::from_be_bytes(self.prelude) as usize;
            if total > self.limit {
                return Check::Tripped { keep: consumed };
            }
            // A frame shorter than its prelude is malformed: the translator reports it.
            self.frame_left = total.saturating_sub(4);
            consumed += n;
            if self.frame_left == 0 {
                self.partial = 0;
            }
        }
    }

    fn within_or_tripped(&self, keep: usize) -> Check {
        if self.partial > self.limit {
            Check::Tripped { keep }
        } else {
            Check::Within
        }
    }
}

/// The error a plugin answers with once the bound tripped.
pub fn event_too_large(limit: usize) -> ApiError {
    ApiError::new(
        502,
        "server_error",
        format!(
            "the provider sent a stream event larger than {limit} bytes (maxEventBytes); the stream was ended"
        ),
    )
    .with_code("event_too_large")
}

/// What ends a stream whose bound tripped, in the client's API: OpenAI clients get an error
/// event and `[DONE]`, Anthropic clients an `error` event. `after_partial` closes an event
/// whose first bytes already went out, so the error is an event of its own.
pub fn stream_error_tail(api: ClientApi, limit: usize, after_partial: bool) -> Vec<u8> {
    let err = event_too_large(limit);
    let mut out = Vec::with_capacity(256);
    if after_partial {
        out.extend_from_slice(b"\n\n");
    }
    match api {
        ClientApi::OpenAi => {
            crate::sse::write_data(&mut out, &err.to_openai_json().to_string());
            out.extend_from_slice(crate::sse::DONE);
        }
        ClientApi::Anthropic => crate::sse::write_event(
            &mut out,
            Some("error"),
            &err.to_anthropic_json().to_string(),
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Feeds `body` in pieces of `step` bytes; returns where it tripped (absolute keep offset).
    fn trip_point(framing: Framing, limit: usize, body: &[u8], step: usize) -> Option<usize> {
        let mut bound = EventBound::new(framing, limit);
        let mut offset = 0;
        for piece in body.chunks(step.max(1)) {
            if let Check::Tripped { keep } = bound.check(piece) {
                return Some(offset + keep);
            }
            offset += piece.len();
        }
        None
    }

    fn sse_event(data_len: usize) -> Vec<u8> {
        let mut event = b"data: ".to_vec();
        event.extend(std::iter::repeat_n(b'x', data_len));
        event.extend_from_slice(b"\n\n");
        event
    }

    #[test]
    fn sse_events_within_the_bound_pass_at_every_chunking() {
        let mut body = Vec::new();
        for n in [10, 90, 3, 0, 91] {
            body.extend(sse_event(n));
        }
        body.extend_from_slice(b"data: a\r\n\r\ndata: b\r\rdata: [DONE]\n\n");
        for step in 1..body.len() {
            assert_eq!(
                trip_point(Framing::Sse, 100, &body, step),
                None,
                "step {step}"
            );
        }
    }

    #[test]
    fn a_never_ending_sse_event_trips_at_every_chunking() {
        let mut body = sse_event(20);
        let start = body.len();
        body.extend_from_slice(b"data: ");
        body.extend(std::iter::repeat_n(b'y', 500));
        for step in [1, 7, 64] {
            assert!(
                trip_point(Framing::Sse, 100, &body, step).is_some(),
                "step {step}"
            );
        }
        // In one chunk, the complete event before the oversized one is kept.
        assert_eq!(
            trip_point(Framing::Sse, 100, &body, body.len()),
            Some(start)
        );
    }

    #[test]
    fn many_data_lines_without_a_blank_line_are_one_event() {
        let body = b"data: 0123456789\n".repeat(20);
        assert!(trip_point(Framing::Sse, 100, &body, 5).is_some());
        assert!(trip_point(Framing::Sse, 100, &body, body.len()).is_some());
    }

    #[test]
    fn ndjson_lines() {
        let ok = b"{\"a\":1}\n".repeat(50);
        for step in 1..40 {
            assert_eq!(trip_point(Framing::Lines, 10, &ok, step), None);
        }
        let mut bad = ok.clone();
        bad.extend(std::iter::repeat_n(b'z', 11));
        assert!(trip_point(Framing::Lines, 10, &bad, 3).is_some());
        assert_eq!(
            trip_point(Framing::Lines, 10, &bad, bad.len()),
            Some(ok.len())
        );
        let mut long_inside = b"{}\n".to_vec();
        long_inside.extend(std::iter::repeat_n(b'z', 30));
        long_inside.extend_from_slice(b"\n{}\n");
        assert!(trip_point(Framing::Lines, 10, &long_inside, long_inside.len()).is_some());
    }

    #[test]
    fn event_stream_frames_are_judged_by_their_declared_length() {
        let frame = |total: u32| {
            let mut f = total.to_be_bytes().to_vec();
            f.extend(std::iter::repeat_n(0u8, total.saturating_sub(4) as usize));
            f
        };
        let mut ok = Vec::new();
        for total in [16, 40, 100, 16] {
            ok.extend(frame(total));
        }
        for step in 1..ok.len() {
            assert_eq!(
                trip_point(Framing::EventStream, 100, &ok, step),
                None,
                "step {step}"
            );
        }
        let mut bad = ok.clone();
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        for step in [1, 3, 50] {
            assert!(trip_point(Framing::EventStream, 100, &bad, step).is_some());
        }
        assert_eq!(
            trip_point(Framing::EventStream, 100, &bad, bad.len()),
            Some(ok.len())
        );
    }

    #[test]
    fn configured_bounds() {
        assert_eq!(configured(None), Ok(DEFAULT_MAX_EVENT_BYTES));
        assert_eq!(configured(Some(4096)), Ok(4096));
        assert!(configured(Some(10)).is_err());
        assert!(configured(Some(1 << 30)).is_err());
        assert_eq!(
            framing_of("application/x-ndjson; charset=utf-8"),
            Framing::Lines
        );
        assert_eq!(
            framing_of("application/vnd.amazon.eventstream"),
            Framing::EventStream
        );
        assert_eq!(framing_of("text/event-stream"), Framing::Sse);
    }

    #[test]
    fn once_tripped_every_later_chunk_is_dropped() {
        let mut bound = EventBound::new(Framing::Sse, 4);
        assert!(matches!(bound.check(b"data: long"), Check::Tripped { .. }));
        assert!(bound.tripped());
        assert_eq!(bound.check(b"\n\ndata: x\n\n"), Check::Tripped { keep: 0 });
    }

    #[test]
    fn the_tail_is_a_well_formed_error_in_the_clients_api() {
        let openai = String::from_utf8(stream_error_tail(ClientApi::OpenAi, 4096, true)).unwrap();
        assert!(openai.starts_with("\n\ndata: {"));
        assert!(openai.contains("\"code\":\"event_too_large\"") && openai.contains("4096"));
        assert!(openai.ends_with("data: [DONE]\n\n"));
        let anthropic =
            String::from_utf8(stream_error_tail(ClientApi::Anthropic, 4096, false)).unwrap();
        let data: serde_json::Value = serde_json::from_str(
            anthropic
                .strip_prefix("event: error\ndata: ")
                .unwrap()
                .trim(),
        )
        .unwrap();
        assert_eq!(data["type"], "error");
        assert_eq!(data["error"]["type"], "api_error");
    }
}
