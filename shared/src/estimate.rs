//! The one token estimator of the gateway: a request's prompt, estimated from its text at about
//! four characters a token (one per character for scripts that do not use ASCII) plus each
//! message's framing, and its output cap; and the output of a `chat.completion.chunk` stream,
//! from the text it streamed, for answers whose usage is unknown.

use crate::error::ApiError;
use crate::sse::Decoder;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// Tokens OpenAI charges around each message, and to prime the reply.
const PER_MESSAGE: u64 = 4;
const PRIMING: u64 = 3;
/// A low-detail image, the least an image costs.
const PER_IMAGE: u64 = 85;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub prompt: u64,
    /// The output cap: `max_completion_tokens`, `max_tokens` or the configured default, times `n`.
    pub output: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.output)
    }

    /// Estimates a JSON request body (chat, embeddings, legacy completions). A body that is not
    /// JSON of the right shape is a 400 naming the field.
    pub fn from_body(body: &[u8], default_max_tokens: u64) -> Result<Estimate, ApiError> {
        #[derive(Deserialize)]
        struct Fields {
            messages: Option<Vec<Message>>,
            max_tokens: Option<u64>,
            max_completion_tokens: Option<u64>,
            n: Option<u64>,
            input: Option<Value>,
            prompt: Option<Value>,
            tools: Option<Value>,
            functions: Option<Value>,
        }
        #[derive(Deserialize)]
        struct Message {
            content: Option<Value>,
            tool_calls: Option<Value>,
        }
        let fields: Fields = crate::json::parse(body).map_err(|e| {
            let param = (!e.path.is_empty()).then_some(e.path.as_str());
            ApiError::invalid_request(param, format!("request body: {e}"))
        })?;
        let mut prompt: u64 = 0;
        if let Some(messages) = &fields.messages {
            prompt = PRIMING;
            for m in messages {
                prompt = prompt
                    .saturating_add(PER_MESSAGE)
                    .saturating_add(m.content.as_ref().map_or(0, content_tokens))
                    .saturating_add(m.tool_calls.as_ref().map_or(0, json_tokens));
            }
        }
        for content in [&fields.input, &fields.prompt].into_iter().flatten() {
            prompt = prompt.saturating_add(content_tokens(content));
        }
        for structured in [&fields.tools, &fields.functions].into_iter().flatten() {
            prompt = prompt.saturating_add(json_tokens(structured));
        }
        let cap = fields
            .max_completion_tokens
            .or(fields.max_tokens)
            .unwrap_or(default_max_tokens);
        Ok(Estimate {
            prompt,
            output: cap.saturating_mul(fields.n.unwrap_or(1).max(1)),
        })
    }

    /// A body too large to parse: its size stands for its text.
    pub fn from_size(bytes: usize, default_max_tokens: u64) -> Estimate {
        Estimate {
            prompt: (bytes as u64).div_ceil(4),
            output: default_max_tokens,
        }
    }
}

/// Tokens of a piece of text: a token per four ASCII bytes, one per other character.
pub fn text_tokens(text: &str) -> u64 {
    let ascii = text.bytes().filter(u8::is_ascii).count() as u64;
    let other = text.chars().filter(|c| !c.is_ascii()).count() as u64;
    ascii.div_ceil(4) + other
}

/// Message content, `input` or `prompt`: text, parts, lists of texts or of token ids.
fn content_tokens(value: &Value) -> u64 {
    match value {
        Value::String(s) => text_tokens(s),
        Value::Number(_) => 1,
        Value::Array(items) => items
            .iter()
            .fold(0, |sum, item| sum.saturating_add(content_tokens(item))),
        Value::Object(part) => match part.get("text") {
            Some(Value::String(s)) => text_tokens(s),
            _ => PER_IMAGE,
        },
        _ => 0,
    }
}

/// Structured input (tool schemas, tool calls) by the size of its JSON.
fn json_tokens(value: &Value) -> u64 {
    serde_json::to_string(value).map_or(0, |s| text_tokens(&s))
}

/// Output tokens of a `chat.completion.chunk` stream, from the text of its deltas.
#[derive(Default)]
pub struct StreamedText {
    decoder: Decoder,
    tokens: u64,
}

// Every stream is read for its text, so the texts are borrowed from the event where they can be.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl StreamedText {
    pub fn observe(&mut self, chunk: &[u8]) {
        let mut tokens = 0;
        self.decoder
            .push_with(chunk, |event| tokens += event_tokens(&event.data));
        self.tokens = self.tokens.saturating_add(tokens);
    }

    /// Output tokens of the stream so far, the last event included even without its blank line.
    pub fn finish(&mut self) -> u64 {
        if let Some(event) = self.decoder.finish() {
            self.tokens = self.tokens.saturating_add(event_tokens(&event.data));
        }
        self.tokens
    }
}

fn event_tokens(data: &str) -> u64 {
    let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
        return 0;
    };
    let text = |s: &Option<Cow<str>>| s.as_deref().map_or(0, text_tokens);
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
    use serde_json::json;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn estimate(body: Value) -> Estimate {
        Estimate::from_body(body.to_string().as_bytes(), 1000).unwrap()
    }

    #[test]
    fn prompt_estimate_counts_text_and_framing() {
        // 29 ASCII bytes: 8 tokens; 4 per message; 3 to prime the reply.
        let e = estimate(
            json!({"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}]}),
        );
        assert_eq!((e.prompt, e.output), (3 + 4 + 8, 1000));
        let e = estimate(json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": "data:…"}}]}
        ], "max_tokens": 50, "n": 2}));
        assert_eq!(e.prompt, 3 + (4 + 3) + (4 + 2 + 85));
        assert_eq!(e.output, 100, "max_tokens for each of n choices");
        assert_eq!(
            estimate(json!({"messages": [], "max_tokens": 5, "max_completion_tokens": 7})).output,
            7
        );
        assert_eq!(text_tokens("你好世界"), 4, "one token per CJK character");
    }

    #[test]
    fn embeddings_and_tools_are_counted() {
        assert_eq!(estimate(json!({"input": ["abcd", "abcdefgh"]})).prompt, 3);
        assert_eq!(
            estimate(json!({"input": [[1, 2, 3]]})).prompt,
            3,
            "token ids"
        );
        let with_tools = estimate(
            json!({"messages": [], "tools": [{"type": "function", "function": {"name": "get_weather"}}]}),
        );
        assert!(with_tools.prompt > 3 + 10, "{with_tools:?}");
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        let err = Estimate::from_body(br#"{"messages":[],"max_tokens":"ten"}"#, 1).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.param.as_deref(), Some("max_tokens"));
        let err = Estimate::from_body(b"{not json", 1).unwrap_err();
        assert_eq!((err.status, err.param), (400, None));
        let err = Estimate::from_body(br#"{"messages":{"role":"user"}}"#, 1).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));
    }

    #[test]
    fn escaped_streamed_text_counts_as_its_text() {
        let mut text = StreamedText::default();
        text.observe(
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\u4f60\\\"ab\\nc\"}}]}\n\n".as_bytes(),
        );
        assert_eq!(
            text.finish(),
            1 + 2,
            "one CJK character, then five ASCII characters"
        );
    }

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
