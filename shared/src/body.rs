//! Body handling that keeps memory bounded: accumulation with a limit, and content-type checks.

/// Default limit for a body a plugin copies to read (a chat request, a non-streamed answer).
pub const DEFAULT_BODY_LIMIT: usize = 8 << 20;

/// A copy of a body built from Envoy's chunks, never larger than `limit`.
#[derive(Debug)]
pub struct BodyBuffer {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl BodyBuffer {
    pub fn new(limit: usize) -> Self {
        BodyBuffer {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        }
    }

    /// Appends a chunk. Past the limit the copy is dropped and `false` is returned, then and for
    /// every later chunk: a truncated body is never handed out as if it were whole.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.overflowed {
            return false;
        }
        if self.bytes.len() + chunk.len() > self.limit {
            self.overflowed = true;
            self.bytes = Vec::new();
            return false;
        }
        self.bytes.extend_from_slice(chunk);
        true
    }

    /// The whole body, or `None` if it outgrew the limit.
    pub fn get(&self) -> Option<&[u8]> {
        (!self.overflowed).then_some(self.bytes.as_slice())
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// `text/event-stream`, with or without parameters, any case.
pub fn is_event_stream(content_type: &str) -> bool {
    media_type(content_type).eq_ignore_ascii_case("text/event-stream")
}

/// `application/json` or any `+json` type.
pub fn is_json(content_type: &str) -> bool {
    let media = media_type(content_type).to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json")
}

/// `text/html`: a web page (an error page of a proxy in the way), never an API answer.
pub fn is_html(content_type: &str) -> bool {
    media_type(content_type).eq_ignore_ascii_case("text/html")
}

fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn buffer_keeps_whole_bodies_and_refuses_past_the_limit() {
        let mut b = BodyBuffer::new(10);
        assert!(b.push(b"hello"));
        assert!(b.push(b"world"));
        assert_eq!(b.get(), Some(&b"helloworld"[..]));
        assert!(!b.push(b"!"));
        assert_eq!(b.get(), None);
        assert!(!b.push(b""), "stays refused");
        assert_eq!(b.len(), 0, "memory released");
    }

    #[test]
    fn content_types() {
        assert!(is_event_stream("text/event-stream; charset=utf-8"));
        assert!(is_event_stream("Text/Event-Stream"));
        assert!(!is_event_stream("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/html"));
        assert!(is_html("text/html; charset=utf-8"));
        assert!(!is_html("text/event-stream"));
    }
}
