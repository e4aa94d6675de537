//! How many tokens a request may spend, known before it is sent: its prompt, estimated from the
//! text at about four characters a token (one per character for scripts that do not use ASCII)
//! plus each message's framing, and its output cap. And what it did spend, once it is over.

use aigw_shared::error::ApiError;
use serde::Deserialize;
use serde_json::Value;

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
    /// The client asked for usage at the end of a stream (`stream_options.include_usage`).
    pub stream_reports_usage: bool,
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
            stream_options: Option<StreamOptions>,
        }
        #[derive(Deserialize)]
        struct StreamOptions {
            include_usage: Option<bool>,
        }
        #[derive(Deserialize)]
        struct Message {
            content: Option<Value>,
            tool_calls: Option<Value>,
        }
        let fields: Fields = aigw_shared::json::parse(body).map_err(|e| {
            let param = (!e.path.is_empty()).then_some(e.path.as_str());
            ApiError::invalid_request(param, format!("request body: {e}"))
        })?;
        let mut prompt = 0;
        if let Some(messages) = &fields.messages {
            prompt += PRIMING;
            for m in messages {
                prompt += PER_MESSAGE
                    + m.content.as_ref().map_or(0, content_tokens)
                    + m.tool_calls.as_ref().map_or(0, json_tokens);
            }
        }
        prompt += [&fields.input, &fields.prompt]
            .into_iter()
            .flatten()
            .map(content_tokens)
            .sum::<u64>();
        prompt += [&fields.tools, &fields.functions]
            .into_iter()
            .flatten()
            .map(json_tokens)
            .sum::<u64>();
        let cap = fields
            .max_completion_tokens
            .or(fields.max_tokens)
            .unwrap_or(default_max_tokens);
        Ok(Estimate {
            prompt,
            output: cap.saturating_mul(fields.n.unwrap_or(1).max(1)),
            stream_reports_usage: fields
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }

    /// A body too large to parse: its size stands for its text.
    pub fn from_size(bytes: usize, default_max_tokens: u64) -> Estimate {
        Estimate {
            prompt: (bytes as u64).div_ceil(4),
            output: default_max_tokens,
            stream_reports_usage: false,
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
        Value::Array(items) => items.iter().map(content_tokens).sum(),
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

/// How a finished request ended, as far as the plugin saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ending {
    /// Response status; `None` if no response came (the client went away first).
    pub status: Option<u16>,
    /// Total tokens the provider reported.
    pub reported: Option<u64>,
    /// Output tokens estimated from streamed text, when the stream was read.
    pub streamed_output: Option<u64>,
}

/// The tokens to charge for a request that reserved `reserved`: what the provider reported;
/// nothing when it answered with an error or not at all; otherwise the prompt estimate plus
/// the output seen, and when even that is unknown, the reservation.
pub fn charge(reserved: &Estimate, ending: &Ending) -> u64 {
    if let Some(total) = ending.reported {
        return total;
    }
    match ending.status {
        None => 0,
        Some(status) if status >= 400 => 0,
        Some(_) => match ending.streamed_output {
            Some(output) => reserved.prompt + output,
            None => reserved.total(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn charges() {
        let reserved = Estimate {
            prompt: 10,
            output: 100,
            ..Estimate::default()
        };
        let ok = |reported, streamed_output| Ending {
            status: Some(200),
            reported,
            streamed_output,
        };
        assert_eq!(charge(&reserved, &ok(Some(42), Some(5))), 42, "usage wins");
        assert_eq!(
            charge(&reserved, &ok(None, Some(5))),
            15,
            "prompt estimate + streamed text"
        );
        assert_eq!(
            charge(&reserved, &ok(None, None)),
            110,
            "nothing known: the reservation"
        );
        let failed = Ending {
            status: Some(503),
            ..Ending::default()
        };
        assert_eq!(
            charge(&reserved, &failed),
            0,
            "provider errors cost nothing"
        );
        assert_eq!(
            charge(&reserved, &Ending::default()),
            0,
            "no response: released"
        );
    }
}
