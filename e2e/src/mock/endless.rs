//! An OpenAI chat provider whose stream breaks the framing: after a role chunk, one event that
//! never ends. `x-mock-endless: never-ends` sends `x-mock-pieces` pieces (default 200) of 64 KiB
//! of text with no line end, 10 ms apart, and then closes the event; `x-mock-endless: huge`
//! sends one complete event whose content is 1.5 MiB, then `[DONE]`. Every request is recorded.

use super::{Provider, Recorded, Reply};
use bytes::Bytes;
use std::time::Duration;

pub const ENDLESS_HEADER: &str = "x-mock-endless";
const PIECE: usize = 64 << 10;

#[derive(Default)]
pub struct EndlessMock;

const ROLE_CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-endless\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
const OPEN_CONTENT: &[u8] = b"data: {\"id\":\"chatcmpl-endless\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"";
const CLOSE_CONTENT: &[u8] = b"\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"chatcmpl-endless\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

impl Provider for EndlessMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let pieces = request
            .header("x-mock-pieces")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(200);
        let text = Bytes::from(vec![b'x'; PIECE]);
        let body: Vec<(Duration, Bytes)> = match request.header(ENDLESS_HEADER) {
            Some("huge") => {
                let mut event = OPEN_CONTENT.to_vec();
                event.extend(std::iter::repeat_n(b'y', 3 * (1 << 19)));
                event.extend_from_slice(CLOSE_CONTENT);
                vec![
                    (Duration::ZERO, Bytes::from_static(ROLE_CHUNK)),
                    (Duration::from_millis(10), Bytes::from(event)),
                ]
            }
            _ => std::iter::once((Duration::ZERO, Bytes::from_static(ROLE_CHUNK)))
                .chain(std::iter::once((
                    Duration::ZERO,
                    Bytes::from_static(OPEN_CONTENT),
                )))
                .chain((0..pieces).map(|_| (Duration::from_millis(10), text.clone())))
                .chain(std::iter::once((
                    Duration::ZERO,
                    Bytes::from_static(CLOSE_CONTENT),
                )))
                .collect(),
        };
        Reply::event_stream(&[], body)
    }
}
