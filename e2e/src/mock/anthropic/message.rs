//! The answer of the Anthropic mock: content blocks, why it stopped, usage; and the
//! non-streaming `message` object.

use super::request::MessagesRequest;
use crate::mock::knobs::Knobs;
use crate::mock::openai::content_pieces;
use serde_json::{json, Value};

/// What the mock thinks before answering, piece by piece, when thinking is enabled.
const THOUGHTS: &[&str] = &["The user", " wants a short", " answer; keep", " it brief."];
/// Signatures are opaque to clients; they hand them back unchanged.
const SIGNATURE: &str = "bW9jay10aGlua2luZy1zaWduYXR1cmU=";

/// A content block of the answer, with its text in the pieces it streams as.
#[derive(Debug, Clone)]
pub enum Block {
    Thinking {
        pieces: Vec<String>,
        signature: String,
    },
    Text {
        pieces: Vec<String>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

impl Block {
    /// The non-streaming form of the block.
    pub fn json(&self) -> Value {
        match self {
            Block::Thinking { pieces, signature } => {
                json!({"type": "thinking", "thinking": pieces.concat(), "signature": signature})
            }
            Block::Text { pieces } => json!({"type": "text", "text": pieces.concat()}),
            Block::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        }
    }
}

/// A complete mock answer.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub model: String,
    pub blocks: Vec<Block>,
    pub stop_reason: &'static str,
    pub stop_sequence: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Message {
    /// The answer to `request`; `n` numbers the message (and its tool-use ids).
    pub fn answer(request: &MessagesRequest, n: u64, knobs: &Knobs) -> Message {
        let mut blocks = Vec::new();
        let mut output_tokens = 0u64;
        if request.thinking {
            let pieces: Vec<String> = THOUGHTS.iter().map(|s| s.to_string()).collect();
            output_tokens += pieces.len() as u64;
            blocks.push(Block::Thinking {
                pieces,
                signature: SIGNATURE.to_string(),
            });
        }
        let (mut stop_reason, mut stop_sequence) = ("end_turn", None);
        if let Some(call) = &request.tool_call {
            // Roughly what a model spends on a short tool call.
            output_tokens += 10 + call.input.to_string().len().div_ceil(4) as u64;
            stop_reason = "tool_use";
            blocks.push(Block::ToolUse {
                id: format!("toolu_mock{n}"),
                name: call.name.clone(),
                input: call.input.clone(),
            });
        } else {
            let budget = request.max_tokens.saturating_sub(output_tokens) as usize;
            let mut pieces: Vec<String> = content_pieces(knobs.chunks, knobs.chunk_bytes).collect();
            if pieces.len() > budget {
                pieces.truncate(budget);
                stop_reason = "max_tokens";
            }
            if let Some((cut, sequence)) = cut_at_stop_sequence(&pieces, &request.stop_sequences) {
                pieces = cut;
                stop_reason = "stop_sequence";
                stop_sequence = Some(sequence);
            }
            output_tokens += pieces.len() as u64;
            blocks.push(Block::Text { pieces });
        }
        Message {
            id: format!("msg_mock{n}"),
            model: request.model.clone(),
            blocks,
            stop_reason,
            stop_sequence,
            input_tokens: request.input_tokens,
            output_tokens,
        }
    }

    /// The final usage, as in the non-streaming message.
    pub fn usage(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": self.output_tokens,
            "service_tier": "standard"
        })
    }

    /// The `message` object Anthropic answers without `stream`.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.blocks.iter().map(Block::json).collect::<Vec<_>>(),
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage()
        })
    }
}

/// The pieces up to the first stop sequence in their text (which is not included), and that
/// sequence; `None` when no stop sequence occurs.
fn cut_at_stop_sequence(pieces: &[String], stops: &[String]) -> Option<(Vec<String>, String)> {
    let text = pieces.concat();
    let (at, sequence) = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s.clone())))
        .min_by_key(|(at, _)| *at)?;
    let mut cut = Vec::new();
    let mut start = 0;
    for piece in pieces {
        if start >= at {
            break;
        }
        let keep = (at - start).min(piece.len());
        cut.push(piece[..keep].to_string());
        start += piece.len();
    }
    Some((cut, sequence))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn stop_sequences_cut_the_text_before_them() {
        let text = pieces(&["Hello", " from", " the", " mock"]);
        let (cut, seq) = cut_at_stop_sequence(&text, &["the".into(), "mock".into()]).unwrap();
        assert_eq!(cut, pieces(&["Hello", " from", " "]));
        assert_eq!(seq, "the");
        assert!(cut_at_stop_sequence(&text, &["absent".into()]).is_none());
    }
}
