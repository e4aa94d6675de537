//! A guard model behind an OpenAI-compatible chat endpoint, answering like Llama Guard 3:
//! `safe`, or `unsafe` and the violated category codes on the next line (S1 violent crimes,
//! S9 indiscriminate weapons, S10 hate, S11 suicide and self-harm). It classifies the last
//! turn of the conversation. Bearer auth as OpenAI's (401 in OpenAI's shape).

use super::moderation::{body_json, classify, Harm};
use super::openai::error;
use super::{Provider, Recorded, Reply};
use serde_json::{json, Value};

pub struct GuardModelMock {
    pub api_key: Option<String>,
}

impl Provider for GuardModelMock {
    fn handle(&self, request: &Recorded) -> Reply {
        if let Some(key) = &self.api_key {
            if request.header("authorization") != Some(format!("Bearer {key}").as_str()) {
                return error(
                    401,
                    "Incorrect API key provided.",
                    None,
                    Some("invalid_api_key"),
                );
            }
        }
        if request.method != "POST" || !request.path.ends_with("/chat/completions") {
            return error(404, "Not Found", None, None);
        }
        let Some(body) = body_json(request) else {
            return error(
                400,
                "We could not parse the JSON body of your request.",
                None,
                None,
            );
        };
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or(Value::Null);
        let Some(text) = last.get("content").and_then(Value::as_str) else {
            return error(
                400,
                "messages: the last message must have string content",
                Some("messages"),
                None,
            );
        };
        let answer = match classify(text) {
            None => "safe".to_string(),
            Some(Harm::Violence) => "unsafe\nS9".into(),
            Some(Harm::Hate) => "unsafe\nS10".into(),
            Some(Harm::SelfHarm) => "unsafe\nS11".into(),
        };
        let model = body["model"].as_str().unwrap_or("llama-guard-3-8b");
        Reply::json(
            200,
            &json!({"id": "chatcmpl-guard", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}),
        )
    }
}
