//! The provider edge for OpenAI-compatible providers and Azure OpenAI.
//!
//! Requests keep their shape; what differs per provider is data from the provider table: the
//! name of the output cap, whether `stream_options` is accepted. Responses pass through
//! untouched unless a provider needs normalising: Azure's filter-only chunks (the leading
//! `choices: []` prompt-filter chunk and the content-filter chunks after the finish chunk) are
//! dropped, usage reported inside `choices[0]` is lifted to the top, and errors become OpenAI
//! error objects.

use super::errors;
use super::{Plan, ProviderAdapter, ResponseStage};
use crate::provider::{MaxTokensField, ProviderType, WireFormat};
use aigw_shared::body::is_event_stream;
use aigw_shared::error::ApiError;
use aigw_shared::openai::ChatRequest;
use aigw_shared::sse::{self, Decoder};
use serde_json::Value;

/// Fields a canonical request may carry from other client APIs that OpenAI-style providers
/// would refuse as unknown parameters.
const NON_OPENAI_FIELDS: &[&str] = &["thinking", "top_k"];

pub struct OpenAiCompat {
    kind: &'static ProviderType,
    status: u16,
    decoder: Decoder,
    error_body: Vec<u8>,
}

impl OpenAiCompat {
    pub fn new(kind: &'static ProviderType) -> Self {
        OpenAiCompat {
            kind,
            status: 0,
            decoder: Decoder::new(),
            error_body: Vec::new(),
        }
    }

    fn normalises_streams(&self) -> bool {
        self.kind.wire == WireFormat::Azure || self.kind.usage_in_choice
    }

    /// The chunk as it should reach the client, or `None` to drop it.
    fn normalise_chunk(&self, data: &str) -> Option<String> {
        if data == "[DONE]" {
            return Some(data.to_string());
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
            return Some(data.to_string());
        };
        let has_usage = chunk.get("usage").is_some_and(|u| !u.is_null());
        let choices = chunk
            .get("choices")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if self.kind.wire == WireFormat::Azure {
            // Prompt-filter chunk (no choices, no usage) and asynchronous content-filter chunks
            // (choices without a delta) carry nothing a client of the OpenAI API expects.
            let filter_only = choices.iter().all(|c| {
                c.get("delta").is_none() && c.get("finish_reason").is_none_or(Value::is_null)
            });
            if !has_usage && (choices.is_empty() || filter_only) {
                return None;
            }
        }
        if self.kind.usage_in_choice && !has_usage {
            if let Some(usage) = chunk.pointer_mut("/choices/0/usage").map(Value::take) {
                if !usage.is_null() {
                    chunk["usage"] = usage;
                    if let Some(choice) = chunk
                        .pointer_mut("/choices/0")
                        .and_then(Value::as_object_mut)
                    {
                        choice.remove("usage");
                    }
                }
            }
        }
        Some(chunk.to_string())
    }
}

impl ProviderAdapter for OpenAiCompat {
    fn chat_request(&mut self, mut request: ChatRequest, model: &str) -> Result<Vec<u8>, ApiError> {
        request.model = model.to_string();
        match self.kind.max_tokens {
            MaxTokensField::MaxCompletionTokens => {
                if let Some(max) = request.max_tokens.take() {
                    request.max_completion_tokens.get_or_insert(max);
                }
            }
            MaxTokensField::MaxTokens => {
                if let Some(max) = request.max_completion_tokens.take() {
                    request.max_tokens.get_or_insert(max);
                }
            }
        }
        if !self.kind.stream_usage_option {
            // These providers report usage in their last chunk unasked, and may refuse the option.
            request.stream_options = None;
        }
        for field in NON_OPENAI_FIELDS {
            request.extra.remove(*field);
        }
        serde_json::to_vec(&request)
            .map_err(|e| ApiError::new(500, "server_error", format!("cannot encode request: {e}")))
    }
}

impl ResponseStage for OpenAiCompat {
    fn plan(&mut self, status: u16, content_type: &str) -> Plan {
        self.status = status;
        if status >= 400 {
            Plan {
                content_type: Some("application/json"),
                ..Plan::WHOLE
            }
        } else if self.normalises_streams() && is_event_stream(content_type) {
            Plan::STREAM
        } else {
            Plan::PASSTHROUGH
        }
    }

    fn translate(&mut self, input: &[u8], end: bool, out: &mut Vec<u8>) {
        if self.status >= 400 {
            self.error_body.extend_from_slice(input);
            if end {
                out.extend_from_slice(
                    &errors::from_provider(self.status, &self.error_body).body(Default::default()),
                );
            }
            return;
        }
        let events = super::events(&mut self.decoder, input, end);
        for event in events {
            if let Some(data) = self.normalise_chunk(&event.data) {
                sse::write_data(out, &data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::same_at_every_split;
    use super::*;
    use crate::provider::provider_type;
    use serde_json::json;

    fn request(kind: &str, body: Value) -> Value {
        let mut adapter = OpenAiCompat::new(provider_type(kind).unwrap());
        let request: ChatRequest = serde_json::from_value(body).unwrap();
        serde_json::from_slice(&adapter.chat_request(request, "mapped").unwrap()).unwrap()
    }

    #[test]
    fn output_cap_and_usage_option_per_provider() {
        let body = json!({"model": "m", "messages": [], "stream": true, "stream_options": {"include_usage": true},
                          "max_tokens": 10, "thinking": {"type": "enabled"}, "response_format": {"type": "json_object"}});
        let openai = request("openai", body.clone());
        assert_eq!(openai["model"], "mapped");
        assert_eq!(openai["max_completion_tokens"], 10);
        assert!(openai.get("max_tokens").is_none() && openai.get("thinking").is_none());
        assert_eq!(openai["response_format"]["type"], "json_object");
        assert_eq!(openai["stream_options"]["include_usage"], true);
        let zhipu = request("zhipuai", body);
        assert_eq!(zhipu["max_tokens"], 10);
        assert!(zhipu.get("stream_options").is_none());
        let deepseek = request(
            "deepseek",
            json!({"model": "m", "messages": [], "max_completion_tokens": 5}),
        );
        assert_eq!(deepseek["max_tokens"], 5);
    }

    const AZURE_STREAM: &str = "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0}]}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0}],\"id\":\"c1\",\"object\":\"chat.completion.chunk\"}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"Kind\"},\"finish_reason\":null,\"index\":0,\"content_filter_results\":{}}],\"id\":\"c1\"}\n\n\
        data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}],\"id\":\"c1\"}\n\n\
        data: {\"choices\":[{\"content_filter_offsets\":{\"check_offset\":1},\"content_filter_results\":{},\"finish_reason\":null,\"index\":0}],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\"}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n\
        data: [DONE]";

    #[test]
    fn azure_filter_chunks_are_dropped_at_every_split() {
        let kind = provider_type("azure").unwrap();
        let out = same_at_every_split(
            || OpenAiCompat::new(kind),
            200,
            "text/event-stream",
            format!("{AZURE_STREAM}\n\n").as_bytes(),
        );
        let out = String::from_utf8(out).unwrap();
        let chunks: Vec<&str> = out.split("\n\n").filter(|s| !s.is_empty()).collect();
        assert_eq!(chunks.len(), 5, "{out}");
        assert!(
            !out.contains("prompt_filter_results") && !out.contains("content_filter_offsets"),
            "{out}"
        );
        assert!(
            out.contains("\"Kind\"")
                && out.contains("prompt_tokens")
                && out.ends_with("data: [DONE]\n\n")
        );
    }

    #[test]
    fn usage_inside_the_choice_is_lifted() {
        let kind = provider_type("moonshot").unwrap();
        let mut adapter = OpenAiCompat::new(kind);
        adapter.plan(200, "text/event-stream");
        let mut out = Vec::new();
        adapter.translate(b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}]}\n\n", true, &mut out);
        let data: Value = serde_json::from_str(
            String::from_utf8(out)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap()
                .trim(),
        )
        .unwrap();
        assert_eq!(data["usage"]["total_tokens"], 3);
        assert!(data["choices"][0].get("usage").is_none());
    }

    #[test]
    fn plain_openai_streams_pass_through_and_errors_are_normalised() {
        let mut adapter = OpenAiCompat::new(provider_type("openai").unwrap());
        assert_eq!(adapter.plan(200, "text/event-stream"), Plan::PASSTHROUGH);
        let mut adapter = OpenAiCompat::new(provider_type("openrouter").unwrap());
        assert_eq!(
            adapter.plan(429, "application/json").mode,
            super::super::BodyMode::Whole
        );
        let mut out = Vec::new();
        adapter.translate(
            br#"{"error":{"code":429,"message":"slow down"}}"#,
            true,
            &mut out,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "slow down");
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}
