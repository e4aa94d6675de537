//! The Messages stream, event by event as Anthropic sends it: `message_start`, then per content
//! block `content_block_start` / `content_block_delta`… / `content_block_stop` (one `ping`
//! after the first start), then `message_delta` (stop reason, final usage) and `message_stop`.
//! Every event is `event: <type>\ndata: <json>\n\n`; there is no `[DONE]`.

use super::message::{Block, Message};
use crate::mock::knobs::Knobs;
use crate::mock::openai::completion::fragments;
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;

/// Characters per `input_json_delta` fragment.
const JSON_FRAGMENT_CHARS: usize = 6;

/// The framed events of `message`, each with the pause before it.
pub fn events(message: &Message, knobs: &Knobs, pad: bool) -> Vec<(Duration, Bytes)> {
    let mut out = Events {
        framed: Vec::new(),
        pad,
        content_pieces: 0,
        knobs,
    };
    out.push(Duration::ZERO, message_start(message));
    for (index, block) in message.blocks.iter().enumerate() {
        out.push(
            Duration::ZERO,
            json!({"type": "content_block_start", "index": index, "content_block": block_start(block)}),
        );
        if index == 0 {
            out.ping();
        }
        for delta in deltas(block) {
            out.content(json!({"type": "content_block_delta", "index": index, "delta": delta}));
        }
        out.push(
            Duration::ZERO,
            json!({"type": "content_block_stop", "index": index}),
        );
    }
    out.push(
        knobs.delay,
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": message.stop_reason, "stop_sequence": message.stop_sequence, "stop_details": null},
            "usage": {
                "input_tokens": message.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": message.output_tokens
            }
        }),
    );
    out.push(Duration::ZERO, json!({"type": "message_stop"}));
    out.framed
}

struct Events<'a> {
    framed: Vec<(Duration, Bytes)>,
    pad: bool,
    /// Generated pieces so far, for the time-to-first-token pause.
    content_pieces: usize,
    knobs: &'a Knobs,
}

impl Events<'_> {
    fn push(&mut self, pause: Duration, event: Value) {
        let kind = event["type"].as_str().unwrap_or_default().to_string();
        let mut data = event.to_string();
        if self.pad {
            // The live API pads with runs of spaces before the closing brace; vary the run so
            // that parsers cannot count on any one length.
            let run = [3, 0, 11, 1, 6][self.framed.len() % 5];
            data.insert_str(data.len() - 1, &" ".repeat(run));
        }
        self.framed.push((
            pause,
            Bytes::from(format!("event: {kind}\ndata: {data}\n\n")),
        ));
    }

    fn content(&mut self, event: Value) {
        let pause = self.knobs.pause_before(self.content_pieces);
        self.content_pieces += 1;
        self.push(pause, event);
    }

    /// Written exactly as the API does, spaces included.
    fn ping(&mut self) {
        self.framed.push((
            Duration::ZERO,
            Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"),
        ));
    }
}

fn message_start(message: &Message) -> Value {
    json!({
        "type": "message_start",
        "message": {
            "model": message.model,
            "id": message.id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "stop_details": null,
            "usage": {
                "input_tokens": message.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "output_tokens": 1,
                "service_tier": "standard",
                "inference_geo": "not_available"
            }
        }
    })
}

/// A block as `content_block_start` announces it: empty, filled by the deltas.
fn block_start(block: &Block) -> Value {
    match block {
        Block::Thinking { .. } => json!({"type": "thinking", "thinking": "", "signature": ""}),
        Block::Text { .. } => json!({"type": "text", "text": ""}),
        Block::ToolUse { id, name, .. } => json!({
            "type": "tool_use", "id": id, "name": name, "input": {}, "caller": {"type": "direct"}
        }),
    }
}

/// The `delta`s that fill a block.
fn deltas(block: &Block) -> Vec<Value> {
    match block {
        Block::Thinking { pieces, signature } => pieces
            .iter()
            .map(|p| json!({"type": "thinking_delta", "thinking": p}))
            .chain(std::iter::once(
                json!({"type": "signature_delta", "signature": signature}),
            ))
            .collect(),
        Block::Text { pieces } => pieces
            .iter()
            .map(|p| json!({"type": "text_delta", "text": p}))
            .collect(),
        // An empty fragment first, then the input JSON a few characters at a time, as
        // recorded; the JSON is spaced like the API's (`{"city": "Paris"}`).
        Block::ToolUse { input, .. } => std::iter::once(String::new())
            .chain(fragments(&spaced_json(input), JSON_FRAGMENT_CHARS))
            .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
            .collect(),
    }
}

/// JSON with `", "` and `": "` separators, as the API writes tool input.
pub fn spaced_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), spaced_json(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(spaced_json).collect();
            format!("[{}]", items.join(", "))
        }
        scalar => scalar.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_input_is_spaced_like_the_api() {
        let input = json!({"from_currency": "USD", "amounts": [1, 2]});
        assert_eq!(
            spaced_json(&input),
            r#"{"from_currency": "USD", "amounts": [1, 2]}"#
        );
    }
}
