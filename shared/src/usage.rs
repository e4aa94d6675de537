//! Token counts read from any provider's response or stream event, normalised to one shape.
//!
//! Recognised: OpenAI Chat (`usage.prompt_tokens`), OpenAI Responses and Anthropic
//! (`usage.input_tokens`, also under `message` / `response`), Gemini (`usageMetadata`), Bedrock
//! (`usage.inputTokens`), Cohere (`usage.tokens` / `usage.billed_units`), Ollama
//! (`prompt_eval_count`). Streams report counts cumulatively, so merging keeps the largest value
//! seen for each field.

use crate::openai::{CompletionTokensDetails, PromptTokensDetails, Usage};
use serde::Deserialize;
use serde_json::{Map, Value};

/// What a response body or stream event reports about itself: token counts and the model name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    pub counts: Option<TokenCounts>,
    pub model: Option<String>,
}

impl Reported {
    /// Parses only the fields that can carry usage or the model; the rest of the document
    /// (choices, content) is skipped without being built. `None` if `json` is not an object.
    pub fn from_slice(json: &[u8]) -> Option<Reported> {
        #[derive(Deserialize)]
        struct Fields {
            model: Option<Value>,
            #[serde(rename = "modelVersion")]
            model_version: Option<Value>,
            usage: Option<Value>,
            #[serde(rename = "usageMetadata")]
            usage_metadata: Option<Value>,
            prompt_eval_count: Option<Value>,
            eval_count: Option<Value>,
            message: Option<Value>,
            response: Option<Value>,
            delta: Option<Value>,
        }
        let f: Fields = serde_json::from_slice(json).ok()?;
        let model = f
            .model
            .as_ref()
            .or_else(|| f.message.as_ref().and_then(|m| m.get("model")))
            .or(f.model_version.as_ref())
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        let mut subset = Map::new();
        for (key, value) in [
            ("usage", f.usage),
            ("usageMetadata", f.usage_metadata),
            ("prompt_eval_count", f.prompt_eval_count),
            ("eval_count", f.eval_count),
            ("message", f.message),
            ("response", f.response),
            ("delta", f.delta),
        ] {
            if let Some(value) = value {
                subset.insert(key.to_string(), value);
            }
        }
        Some(Reported {
            counts: TokenCounts::from_json(&Value::Object(subset)),
            model,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// All prompt tokens, cached ones included.
    pub input: u64,
    pub output: u64,
    pub total: u64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_input: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic).
    pub cache_creation: u64,
    /// Output tokens spent on reasoning.
    pub reasoning: u64,
}

impl TokenCounts {
    /// Reads the counts from one JSON body or stream event, if it carries any.
    pub fn from_json(value: &Value) -> Option<TokenCounts> {
        let object = value.as_object()?;
        if let Some(meta) = object.get("usageMetadata") {
            return gemini(meta);
        }
        if object.contains_key("prompt_eval_count") || object.contains_key("eval_count") {
            return Some(TokenCounts::new(
                u(value, &["prompt_eval_count"]),
                u(value, &["eval_count"]),
                0,
            ));
        }
        let usage = object
            .get("usage")
            .or_else(|| value.pointer("/message/usage"))
            .or_else(|| value.pointer("/response/usage"))
            .or_else(|| value.pointer("/delta/usage"))?;
        if usage.is_null() {
            return None;
        }
        if usage.get("prompt_tokens").is_some() || usage.get("completion_tokens").is_some() {
            return Some(openai_chat(usage));
        }
        if usage.get("inputTokens").is_some() || usage.get("outputTokens").is_some() {
            let mut counts = TokenCounts::new(
                u(usage, &["inputTokens"]),
                u(usage, &["outputTokens"]),
                u(usage, &["totalTokens"]),
            );
            counts.cached_input = u(usage, &["cacheReadInputTokens"]);
            counts.cache_creation = u(usage, &["cacheWriteInputTokens"]);
            return Some(counts);
        }
        if let Some(tokens) = usage.get("tokens").or_else(|| usage.get("billed_units")) {
            return Some(TokenCounts::new(
                u(tokens, &["input_tokens"]),
                u(tokens, &["output_tokens"]),
                0,
            ));
        }
        if usage.get("input_tokens").is_some() || usage.get("output_tokens").is_some() {
            return Some(anthropic_or_responses(usage));
        }
        None
    }

    pub fn new(input: u64, output: u64, total: u64) -> TokenCounts {
        TokenCounts {
            input,
            output,
            total: total.max(input + output),
            ..TokenCounts::default()
        }
    }

    /// Merges a later report of the same stream (counts are cumulative).
    pub fn merge(&mut self, other: &TokenCounts) {
        self.input = self.input.max(other.input);
        self.output = self.output.max(other.output);
        self.cached_input = self.cached_input.max(other.cached_input);
        self.cache_creation = self.cache_creation.max(other.cache_creation);
        self.reasoning = self.reasoning.max(other.reasoning);
        self.total = self.total.max(other.total).max(self.input + self.output);
    }

    /// The canonical OpenAI `usage` object for these counts.
    pub fn to_openai(&self) -> Usage {
        Usage {
            prompt_tokens: self.input,
            completion_tokens: self.output,
            total_tokens: self.total.max(self.input + self.output),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: self.cached_input,
                ..Default::default()
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: self.reasoning,
                ..Default::default()
            }),
        }
    }
}

fn u(value: &Value, path: &[&str]) -> u64 {
    let mut v = value;
    for key in path {
        match v.get(key) {
            Some(next) => v = next,
            None => return 0,
        }
    }
    v.as_u64().unwrap_or(0)
}

fn openai_chat(usage: &Value) -> TokenCounts {
    let mut counts = TokenCounts::new(
        u(usage, &["prompt_tokens"]),
        u(usage, &["completion_tokens"]),
        u(usage, &["total_tokens"]),
    );
    counts.cached_input = u(usage, &["prompt_tokens_details", "cached_tokens"]);
    counts.reasoning = u(usage, &["completion_tokens_details", "reasoning_tokens"]);
    counts
}

fn anthropic_or_responses(usage: &Value) -> TokenCounts {
    // Anthropic's input_tokens excludes cache reads and writes; the Responses API's includes them.
    let cache_read = u(usage, &["cache_read_input_tokens"]);
    let cache_creation = u(usage, &["cache_creation_input_tokens"]);
    let mut counts = TokenCounts::new(
        u(usage, &["input_tokens"]) + cache_read + cache_creation,
        u(usage, &["output_tokens"]),
        u(usage, &["total_tokens"]),
    );
    counts.cached_input = cache_read.max(u(usage, &["input_tokens_details", "cached_tokens"]));
    counts.cache_creation = cache_creation;
    counts.reasoning = u(usage, &["output_tokens_details", "reasoning_tokens"]);
    counts
}

fn gemini(meta: &Value) -> Option<TokenCounts> {
    if !meta.is_object() {
        return None;
    }
    let thoughts = u(meta, &["thoughtsTokenCount"]);
    let mut counts = TokenCounts::new(
        u(meta, &["promptTokenCount"]),
        u(meta, &["candidatesTokenCount"]) + thoughts,
        u(meta, &["totalTokenCount"]),
    );
    counts.cached_input = u(meta, &["cachedContentTokenCount"]);
    counts.reasoning = thoughts;
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn openai_chat_usage_with_details() {
        let c = TokenCounts::from_json(&json!({"usage": {"prompt_tokens": 12, "completion_tokens": 100, "total_tokens": 112,
            "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 100}}}))
        .unwrap();
        assert_eq!(
            (c.input, c.output, c.total, c.cached_input, c.reasoning),
            (12, 100, 112, 4, 100)
        );
    }

    #[test]
    fn null_usage_is_no_usage() {
        assert_eq!(
            TokenCounts::from_json(&json!({"usage": null, "choices": []})),
            None
        );
        assert_eq!(TokenCounts::from_json(&json!({"choices": []})), None);
        assert_eq!(TokenCounts::from_json(&json!("text")), None);
    }

    #[test]
    fn anthropic_stream_merges_start_and_delta() {
        let mut c = TokenCounts::from_json(&json!({"type": "message_start", "message": {"usage":
            {"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2, "output_tokens": 1}}}))
        .unwrap();
        c.merge(
            &TokenCounts::from_json(
                &json!({"type": "message_delta", "usage": {"output_tokens": 42}}),
            )
            .unwrap(),
        );
        assert_eq!(
            (c.input, c.output, c.total, c.cached_input, c.cache_creation),
            (17, 42, 59, 5, 2)
        );
    }

    #[test]
    fn gemini_bedrock_cohere_ollama() {
        let g = TokenCounts::from_json(
            &json!({"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 7,
            "thoughtsTokenCount": 5, "totalTokenCount": 15, "cachedContentTokenCount": 1}}),
        )
        .unwrap();
        assert_eq!(
            (g.input, g.output, g.total, g.reasoning, g.cached_input),
            (3, 12, 15, 5, 1)
        );
        let b = TokenCounts::from_json(
            &json!({"usage": {"inputTokens": 4, "outputTokens": 6, "totalTokens": 10}}),
        )
        .unwrap();
        assert_eq!((b.input, b.output, b.total), (4, 6, 10));
        let co = TokenCounts::from_json(
            &json!({"delta": {"usage": {"tokens": {"input_tokens": 2, "output_tokens": 9}}}}),
        )
        .unwrap();
        assert_eq!((co.input, co.output, co.total), (2, 9, 11));
        let o = TokenCounts::from_json(
            &json!({"done": true, "prompt_eval_count": 26, "eval_count": 298}),
        )
        .unwrap();
        assert_eq!((o.input, o.output, o.total), (26, 298, 324));
    }

    #[test]
    fn reported_reads_usage_and_model_from_bytes() {
        let r = Reported::from_slice(
            br#"{"id":"x","model":"gpt-4o","choices":[{"message":{"content":"long text"}}],
            "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        )
        .unwrap();
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        assert_eq!(r.counts.unwrap().total, 7);
        let anthropic = Reported::from_slice(br#"{"type":"message_start","message":{"model":"claude","usage":{"input_tokens":5,"output_tokens":1}}}"#).unwrap();
        assert_eq!(anthropic.model.as_deref(), Some("claude"));
        assert_eq!(anthropic.counts.unwrap().input, 5);
        assert_eq!(Reported::from_slice(b"[1]"), None);
        assert_eq!(
            Reported::from_slice(br#"{"choices":[]}"#).unwrap(),
            Reported::default()
        );
    }

    #[test]
    fn to_openai_round_trips() {
        let mut c = TokenCounts::new(5, 6, 0);
        c.cached_input = 2;
        c.reasoning = 3;
        let usage = c.to_openai();
        let back = TokenCounts::from_json(&json!({"usage": usage})).unwrap();
        assert_eq!(back, c);
    }
}
