//! The SSE decoder every streaming plugin reads with: any bytes, cut anywhere, give the same
//! events as the whole body; memory stays within the event cap; what the encoder writes decodes
//! back to the same event.
#![no_main]

use aigw_fuzz::{pieces, Choices};
use aigw_shared::sse::{complete_events_len, write_event, Decoder, Event};
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]], max_event_bytes: usize) -> Vec<Event> {
    let mut decoder = Decoder::with_max_event_bytes(max_event_bytes);
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.push_with(chunk, |e| events.push(e));
        assert!(
            decoder.held_bytes() <= max_event_bytes,
            "held {} bytes with a cap of {max_event_bytes}",
            decoder.held_bytes()
        );
    }
    events.extend(decoder.finish());
    events
}

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices::new(data);
    let max_event_bytes = choices.pick(&[8usize, 64, 1 << 20]);
    let cuts = choices.cuts(6);
    let body = choices.rest();

    let whole = decode(&[body], max_event_bytes);
    let split = decode(&pieces(body, &cuts), max_event_bytes);
    assert_eq!(whole, split, "cut at {cuts:?}");

    let boundary = complete_events_len(body);
    assert!(boundary <= body.len());
    if boundary > 0 {
        assert!(matches!(body[boundary - 1], b'\n' | b'\r'));
    }

    for event in whole {
        let mut encoded = Vec::new();
        write_event(&mut encoded, event.event.as_deref(), &event.data);
        let again = decode(&[&encoded], usize::MAX);
        assert_eq!(again.len(), 1, "{encoded:?}");
        assert_eq!(again[0].event, event.event);
        assert_eq!(again[0].data, event.data);
    }
});
