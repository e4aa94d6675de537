//! The AWS event-stream decoder of Bedrock answers: any bytes, cut anywhere, give the same
//! messages and the same error as the whole body, and an encoded message decodes back.
#![no_main]

use ai_proxy::translate::eventstream::{encode, Decoder, FrameError, Message};
use aigw_fuzz::{pieces, Choices};
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]]) -> (Vec<Result<Message, FrameError>>, usize) {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk, |m| out.push(m));
    }
    (out, decoder.pending())
}

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices::new(data);
    let cuts = choices.cuts(6);
    let body = choices.rest();

    let whole = decode(&[body]);
    let split = decode(&pieces(body, &cuts));
    assert_eq!(whole, split, "cut at {cuts:?}");

    // Framing what the fuzzer gave as headers and payload decodes back to it.
    let text = String::from_utf8_lossy(body);
    let (name, value) = text.split_once('=').unwrap_or((":event-type", &text));
    if !name.is_empty() && name.len() < 256 && value.len() < u16::MAX as usize {
        let framed = encode(&[(name, value)], body);
        let (messages, pending) = decode(&pieces(&framed, &cuts));
        assert_eq!(pending, 0);
        let message = messages[0].as_ref().expect("own framing decodes");
        assert_eq!(message.header(name), Some(value));
        assert_eq!(message.payload, body);
    }
});
