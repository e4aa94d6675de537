//! AWS event-stream framing (`application/vnd.amazon.eventstream`), decoded incrementally: body
//! chunks may split a message anywhere, and the decoder holds at most one incomplete message.
//!
//! A message is a 12-byte prelude (total length, headers length, both big-endian `u32`, then
//! the CRC32 of those 8 bytes), the headers (name length `u8`, name, value type `u8`, value),
//! the payload, and the CRC32 of everything before it. Both CRCs are checked; a bad one, or a
//! length out of bounds, ends the stream with an error: nothing after it can be trusted.

/// Longest message accepted (AWS caps event-stream messages at 16 MiB, 128 KiB of headers).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
const PRELUDE: usize = 12;
const MIN_MESSAGE: usize = PRELUDE + 4;

/// One decoded message: its string headers (other header types are skipped) and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a stream cannot be decoded further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    PreludeCrc,
    MessageCrc,
    Length(usize),
    Headers,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::PreludeCrc => write!(f, "event-stream prelude CRC mismatch"),
            FrameError::MessageCrc => write!(f, "event-stream message CRC mismatch"),
            FrameError::Length(n) => write!(f, "event-stream message length {n} out of bounds"),
            FrameError::Headers => write!(f, "event-stream headers malformed"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
    failed: bool,
}

impl Decoder {
    /// Decodes the next piece of the body, calling `on_message` for each complete message in
    /// order. After an error nothing more is decoded.
    pub fn push(&mut self, input: &[u8], mut on_message: impl FnMut(Result<Message, FrameError>)) {
        if self.failed {
            return;
        }
        self.buffer.extend_from_slice(input);
        let mut offset = 0;
        while let Some(result) = next_message(&self.buffer[offset..]) {
            match result {
                Ok((message, used)) => {
                    offset += used;
                    on_message(Ok(message));
                }
                Err(error) => {
                    self.failed = true;
                    self.buffer = Vec::new();
                    on_message(Err(error));
                    return;
                }
            }
        }
        self.buffer.drain(..offset);
    }

    /// Bytes of a message not complete yet (a stream that ends with some was cut off).
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

/// The first message of `data` and its length; `None` while it is incomplete.
fn next_message(data: &[u8]) -> Option<Result<(Message, usize), FrameError>> {
    if data.len() < PRELUDE {
        return None;
    }
    let total = be32(&data[0..4]) as usize;
    let headers_len = be32(&data[4..8]) as usize;
    if crc32(&data[..8]) != be32(&data[8..12]) {
        return Some(Err(FrameError::PreludeCrc));
    }
    if !(MIN_MESSAGE..=MAX_MESSAGE_BYTES).contains(&total) || headers_len > total - MIN_MESSAGE {
        return Some(Err(FrameError::Length(total)));
    }
    if data.len() < total {
        return None;
    }
    if crc32(&data[..total - 4]) != be32(&data[total - 4..total]) {
        return Some(Err(FrameError::MessageCrc));
    }
    let headers = match parse_headers(&data[PRELUDE..PRELUDE + headers_len]) {
        Some(headers) => headers,
        None => return Some(Err(FrameError::Headers)),
    };
    let payload = data[PRELUDE + headers_len..total - 4].to_vec();
    Some(Ok((Message { headers, payload }, total)))
}

fn parse_headers(mut data: &[u8]) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    while !data.is_empty() {
        let name_len = *data.first()? as usize;
        let name = std::str::from_utf8(data.get(1..1 + name_len)?)
            .ok()?
            .to_string();
        let kind = *data.get(1 + name_len)?;
        let rest = data.get(2 + name_len..)?;
        let value_len = match kind {
            0 | 1 => 0,                                 // bool true / false
            2 => 1,                                     // byte
            3 => 2,                                     // short
            4 => 4,                                     // int
            5 | 8 => 8,                                 // long, timestamp
            9 => 16,                                    // uuid
            6 | 7 => 2 + be16(rest.get(..2)?) as usize, // bytes, string
            _ => return None,
        };
        let value = rest.get(..value_len)?;
        if kind == 7 {
            headers.push((name, String::from_utf8_lossy(&value[2..]).into_owned()));
        }
        data = &rest[value_len..];
    }
    Some(headers)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// CRC-32 (IEEE 802.3, reflected), as the framing uses; a 1 KiB table built at compile time.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8)
    })
}

/// Frames a message with string headers (for tests and the fuzz targets; the gateway only
/// decodes).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = (PRELUDE + head.len() + payload.len() + 4) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], cuts: &[usize]) -> Vec<Result<Message, FrameError>> {
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            decoder.push(&input[start..cut], |m| out.push(m));
            start = cut;
        }
        out
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn messages_decode_at_every_split() {
        let mut stream = encode(
            &[(":event-type", "a"), (":message-type", "event")],
            b"{\"x\":1}",
        );
        stream.extend(encode(&[(":event-type", "b")], b""));
        let whole = decode_all(&stream, &[]);
        assert_eq!(whole.len(), 2);
        let first = whole[0].as_ref().unwrap();
        assert_eq!(first.header(":event-type"), Some("a"));
        assert_eq!(first.payload, b"{\"x\":1}");
        for cut in 0..=stream.len() {
            for second in cut..=stream.len() {
                assert_eq!(
                    decode_all(&stream, &[cut, second]),
                    whole,
                    "cuts {cut} {second}"
                );
            }
        }
    }

    #[test]
    fn corrupt_frames_stop_the_stream() {
        let good = encode(&[(":event-type", "a")], b"{}");
        let mut bad_payload = good.clone();
        let n = bad_payload.len();
        bad_payload[n - 5] ^= 1;
        assert_eq!(
            decode_all(&bad_payload, &[]),
            vec![Err(FrameError::MessageCrc)]
        );
        let mut bad_prelude = good.clone();
        bad_prelude[3] ^= 1;
        assert_eq!(
            decode_all(&bad_prelude, &[]),
            vec![Err(FrameError::PreludeCrc)]
        );
        let mut huge = Vec::new();
        huge.extend_from_slice(&(u32::MAX).to_be_bytes());
        huge.extend_from_slice(&0u32.to_be_bytes());
        huge.extend_from_slice(&crc32(&huge).to_be_bytes());
        assert!(matches!(
            decode_all(&huge, &[])[..],
            [Err(FrameError::Length(_))]
        ));
        // Nothing after a bad frame is decoded.
        let mut after = bad_payload;
        after.extend(good);
        assert_eq!(decode_all(&after, &[]).len(), 1);
    }

    #[test]
    fn other_header_types_are_skipped() {
        // A bool, a uuid and a string header.
        let mut head = vec![1, b'b', 0, 1, b'u', 9];
        head.extend_from_slice(&[0u8; 16]);
        head.extend_from_slice(&[1, b's', 7, 0, 2, b'o', b'k']);
        assert_eq!(parse_headers(&head), Some(vec![("s".into(), "ok".into())]));
        assert_eq!(parse_headers(&[1, b'x', 42]), None);
    }
}
