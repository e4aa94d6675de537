//! Output tokens estimated from the text of a `chat.completion.chunk` stream, for streams that
//! report no usage (a client that did not ask for it, with no ai-proxy in front to ask).

use crate::estimate::text_tokens;
use aigw_shared::sse::Decoder;
use serde::Deserialize;

#[derive(Default)]
pub struct StreamedText {
    decoder: Decoder,
    tokens: u64,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    function: Option<Function>,
}

#[derive(Deserialize)]
struct Function {
    name: Option<String>,
    arguments: Option<String>,
}

impl StreamedText {
    pub fn observe(&mut self, chunk: &[u8]) {
        let mut tokens = 0;
        self.decoder
            .push_with(chunk, |event| tokens += event_tokens(&event.data));
        self.tokens += tokens;
    }

    /// Output tokens of the whole stream.
    pub fn finish(&mut self) -> u64 {
        if let Some(event) = self.decoder.finish() {
            self.tokens += event_tokens(&event.data);
        }
        self.tokens
    }
}

fn event_tokens(data: &str) -> u64 {
    let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
        return 0;
    };
    let text = |s: &Option<String>| s.as_deref().map_or(0, text_tokens);
    chunk
        .choices
        .iter()
        .filter_map(|c| c.delta.as_ref())
        .map(|d| {
            let tools: u64 = d
                .tool_calls
                .iter()
                .flatten()
                .filter_map(|t| t.function.as_ref())
                .map(|f| text(&f.name) + text(&f.arguments))
                .sum();
            text(&d.content) + text(&d.reasoning_content) + text(&d.refusal) + tools
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_streamed_text_at_any_split() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hello there\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        for cut in 0..=stream.len() {
            let mut text = StreamedText::default();
            text.observe(&stream.as_bytes()[..cut]);
            text.observe(&stream.as_bytes()[cut..]);
            assert_eq!(text.finish(), 3 + 2, "cut {cut}");
        }
    }
}
