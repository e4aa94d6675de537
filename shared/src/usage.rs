//! Token counts read from any provider's response or stream event, normalised to one shape.
//!
//! Recognised: OpenAI Chat (`usage.prompt_tokens`), OpenAI Responses and Anthropic
//! (`usage.input_tokens`, also under `message` / `response`), Gemini (`usageMetadata`), Bedrock
//! (`usage.inputTokens`), Cohere (`usage.tokens` / `usage.billed_units`), Ollama
//! (`prompt_eval_count`). Streams report counts cumulatively, so merging keeps the largest value
//! seen for each field.
//!
//! A count is a non-negative integer up to [`MAX_COUNT`]; anything else (a float, a string, a
//! negative number, 10^19) reads as 0 and marks the counts [`TokenCounts::malformed`]. Sums
//! saturate, so no report can wrap a counter around.

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
    /// Some count was not a count (see the module's documentation): the others are not to be
    /// trusted either.
    pub malformed: bool,
}

/// The largest count believed: the largest integer a JSON number carries exactly everywhere.
pub const MAX_COUNT: u64 = (1 << 53) - 1;

impl TokenCounts {
    /// Reads the counts from one JSON body or stream event, if it carries any.
    pub fn from_json(value: &Value) -> Option<TokenCounts> {
        let mut read = Reader::default();
        let mut counts = read.counts(value)?;
        counts.malformed = read.malformed;
        Some(counts)
    }

    pub fn new(input: u64, output: u64, total: u64) -> TokenCounts {
        TokenCounts {
            input,
            output,
            total: total.max(input.saturating_add(output)),
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
        self.total = self
            .total
            .max(other.total)
            .max(self.input.saturating_add(self.output));
        self.malformed |= other.malformed;
    }

    /// The canonical OpenAI `usage` object for these counts; none for malformed counts, which
    /// a translated answer must not pass on as real zeros (the quota then charges what it
    /// charges a missing usage).
    pub fn to_openai(&self) -> Option<Usage> {
        if self.malformed {
            return None;
        }
        Some(Usage {
            prompt_tokens: self.input,
            completion_tokens: self.output,
            total_tokens: self.total.max(self.input.saturating_add(self.output)),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: self.cached_input,
                ..Default::default()
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: self.reasoning,
                ..Default::default()
            }),
        })
    }
}

/// Reads counts, remembering whether any of them was not a count.
#[derive(Default)]
struct Reader {
    malformed: bool,
}

impl Reader {
    /// The count at `path`: 0 when absent or null; 0 and malformed when not a count.
    fn u(&mut self, value: &Value, path: &[&str]) -> u64 {
        let mut v = value;
        for key in path {
            match v.get(key) {
                Some(next) => v = next,
                None => return 0,
            }
        }
        if v.is_null() {
            return 0;
        }
        match v.as_u64().filter(|n| *n <= MAX_COUNT) {
            Some(n) => n,
            None => {
                self.malformed = true;
                0
            }
        }
    }

    fn counts(&mut self, value: &Value) -> Option<TokenCounts> {
        let object = value.as_object()?;
        if let Some(meta) = object.get("usageMetadata") {
            return self.gemini(meta);
        }
        if object.contains_key("prompt_eval_count") || object.contains_key("eval_count") {
            return Some(TokenCounts::new(
                self.u(value, &["prompt_eval_count"]),
                self.u(value, &["eval_count"]),
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
            return Some(self.openai_chat(usage));
        }
        if usage.get("inputTokens").is_some() || usage.get("outputTokens").is_some() {
            let mut counts = TokenCounts::new(
                self.u(usage, &["inputTokens"]),
                self.u(usage, &["outputTokens"]),
                self.u(usage, &["totalTokens"]),
            );
            counts.cached_input = self.u(usage, &["cacheReadInputTokens"]);
            counts.cache_creation = self.u(usage, &["cacheWriteInputTokens"]);
            return Some(counts);
        }
        if let Some(tokens) = usage.get("tokens").or_else(|| usage.get("billed_units")) {
            return Some(TokenCounts::new(
                self.u(tokens, &["input_tokens"]),
                self.u(tokens, &["output_tokens"]),
                0,
            ));
        }
        if usage.get("input_tokens").is_some() || usage.get("output_tokens").is_some() {
            return Some(self.anthropic_or_responses(usage));
        }
        None
    }

    fn openai_chat(&mut self, usage: &Value) -> TokenCounts {
        let mut counts = TokenCounts::new(
            self.u(usage, &["prompt_tokens"]),
            self.u(usage, &["completion_tokens"]),
            self.u(usage, &["total_tokens"]),
        );
        counts.cached_input = self.u(usage, &["prompt_tokens_details", "cached_tokens"]);
        counts.reasoning = self.u(usage, &["completion_tokens_details", "reasoning_tokens"]);
        counts
    }

    fn anthropic_or_responses(&mut self, usage: &Value) -> TokenCounts {
        // Anthropic's input_tokens excludes cache reads and writes; the Responses API's includes them.
        let cache_read = self.u(usage, &["cache_read_input_tokens"]);
        let cache_creation = self.u(usage, &["cache_creation_input_tokens"]);
        let input = self
            .u(usage, &["input_tokens"])
            .saturating_add(cache_read)
            .saturating_add(cache_creation);
        let mut counts = TokenCounts::new(
            input,
            self.u(usage, &["output_tokens"]),
            self.u(usage, &["total_tokens"]),
        );
        counts.cached_input =
            cache_read.max(self.u(usage, &["input_tokens_details", "cached_tokens"]));
        counts.cache_creation = cache_creation;
        counts.reasoning = self.u(usage, &["output_tokens_details", "reasoning_tokens"]);
        counts
    }

    fn gemini(&mut self, meta: &Value) -> Option<TokenCounts> {
        if !meta.is_object() {
            return None;
        }
        let thoughts = self.u(meta, &["thoughtsTokenCount"]);
        let mut counts = TokenCounts::new(
            self.u(meta, &["promptTokenCount"]),
            self.u(meta, &["candidatesTokenCount"])
                .saturating_add(thoughts),
            self.u(meta, &["totalTokenCount"]),
        );
        counts.cached_input = self.u(meta, &["cachedContentTokenCount"]);
        counts.reasoning = thoughts;
        Some(counts)
    }
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
    fn counts_that_are_not_counts_are_malformed() {
        for bad in [
            json!(9.5),
            json!("9"),
            json!(-9),
            json!(10_000_000_000_000_000_000u64),
            json!(true),
        ] {
            let c = TokenCounts::from_json(
                &json!({"usage": {"prompt_tokens": bad, "completion_tokens": 2}}),
            )
            .unwrap();
            assert!(c.malformed, "{bad}");
            assert_eq!((c.input, c.output, c.total), (0, 2, 2), "{bad}");
        }
        let c =
            TokenCounts::from_json(&json!({"usageMetadata": {"promptTokenCount": "3"}})).unwrap();
        assert!(c.malformed);
        let fine = TokenCounts::from_json(
            &json!({"usage": {"prompt_tokens": MAX_COUNT, "completion_tokens": null}}),
        )
        .unwrap();
        assert!(!fine.malformed);
        assert_eq!(fine.total, MAX_COUNT);
    }

    #[test]
    fn sums_saturate() {
        let huge = json!({"usage": {"prompt_tokens": MAX_COUNT, "completion_tokens": MAX_COUNT,
            "cache_read_input_tokens": MAX_COUNT}});
        let c = TokenCounts::from_json(&huge).unwrap();
        assert_eq!(c.total, 2 * MAX_COUNT);
        let mut c = TokenCounts::new(u64::MAX, u64::MAX, 0);
        assert_eq!(c.total, u64::MAX);
        c.merge(&TokenCounts::new(u64::MAX, 1, 0));
        assert_eq!(c.total, u64::MAX);
        assert_eq!(c.to_openai().unwrap().total_tokens, u64::MAX);
        let anthropic = TokenCounts::from_json(&json!({"usage": {"input_tokens": MAX_COUNT,
            "cache_read_input_tokens": MAX_COUNT, "cache_creation_input_tokens": MAX_COUNT, "output_tokens": MAX_COUNT}}))
        .unwrap();
        assert_eq!(anthropic.total, 4 * MAX_COUNT);
    }

    #[test]
    fn malformed_reports_stay_malformed_when_merged() {
        let mut c = TokenCounts::new(5, 1, 0);
        c.merge(&TokenCounts::from_json(&json!({"usage": {"output_tokens": 2.5}})).unwrap());
        assert!(c.malformed);
        assert!(
            c.to_openai().is_none(),
            "malformed counts are not passed on as zeros"
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
