//! A guard model behind any OpenAI-compatible chat endpoint, Llama Guard style: the text goes
//! in as the conversation to classify and the model answers `safe`, or `unsafe` and the
//! violated categories on the next line (`unsafe\nS1,S10`), which become the label. Prompts are
//! classified as the user's turn; answers as the assistant's turn after a placeholder user turn.

use super::{answer_json, parse_own, CallContext, Defaults, Endpoint, Service};
use crate::verdict::{Finding, Phase, Verdict};
use aigw_shared::callout::Callout;
use aigw_shared::rules::ConfigError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub const DEFAULTS: Defaults = Defaults {
    host: "",
    path: "/v1/chat/completions",
    max_chars: 8_000,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GuardModel {
    model: String,
    #[serde(default)]
    api_key: Option<String>,
}

impl GuardModel {
    pub fn parse(map: &Map<String, Value>) -> Result<GuardModel, ConfigError> {
        parse_own(map)
    }
}

impl Service for GuardModel {
    fn name(&self) -> &'static str {
        "guard_model"
    }

    fn requests(
        &self,
        endpoint: &Endpoint,
        segments: &[String],
        phase: Phase,
        _ctx: CallContext,
    ) -> Vec<Callout> {
        segments
            .iter()
            .map(|text| {
                let messages = match phase {
                    Phase::Request => json!([{"role": "user", "content": text}]),
                    Phase::Response => json!([
                        {"role": "user", "content": "(the user's request)"},
                        {"role": "assistant", "content": text}
                    ]),
                };
                let callout = endpoint.post_json(&json!({
                    "model": self.model, "messages": messages, "temperature": 0, "max_tokens": 20, "stream": false
                }));
                match &self.api_key {
                    Some(key) => callout.header("authorization", &format!("Bearer {key}")),
                    None => callout,
                }
            })
            .collect()
    }

    fn verdict(&self, status: u16, body: &[u8]) -> Result<Verdict, String> {
        let answer: Value = answer_json(status, body)?;
        let content = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or("the guard model's answer has no message content")?;
        classify(content)
    }
}

/// Reads a Llama Guard answer.
pub fn classify(content: &str) -> Result<Verdict, String> {
    let mut lines = content.trim().lines().map(str::trim);
    match lines.next().map(str::to_ascii_lowercase).as_deref() {
        Some("safe") => Ok(Verdict::Pass),
        Some("unsafe") => {
            let categories = lines.next().filter(|l| !l.is_empty()).unwrap_or("unsafe");
            Ok(Verdict::Block(Finding::new(
                "guard_model",
                categories.replace(' ', ""),
            )))
        }
        _ => Err(format!(
            "the guard model answered neither safe nor unsafe: {:?}",
            content.chars().take(60).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::tests::endpoint;

    #[test]
    fn llama_guard_answers() {
        assert_eq!(classify("safe"), Ok(Verdict::Pass));
        assert_eq!(classify("\n\nsafe"), Ok(Verdict::Pass));
        assert_eq!(
            classify("unsafe\nS1"),
            Ok(Verdict::Block(Finding::new("guard_model", "S1")))
        );
        assert_eq!(
            classify("unsafe\nS1, S10"),
            Ok(Verdict::Block(Finding::new("guard_model", "S1,S10")))
        );
        assert_eq!(
            classify("unsafe"),
            Ok(Verdict::Block(Finding::new("guard_model", "unsafe")))
        );
        assert!(classify("I cannot answer").is_err());
    }

    #[test]
    fn answers_are_classified_as_the_assistant_turn() {
        let guard = GuardModel {
            model: "llama-guard-3-8b".into(),
            api_key: Some("g".into()),
        };
        let requests = guard.requests(
            &endpoint(DEFAULTS.path),
            &["text".into()],
            Phase::Response,
            CallContext::default(),
        );
        let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": "text"})
        );
        assert_eq!(body["model"], "llama-guard-3-8b");
        let answer = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"unsafe\nS9"},"finish_reason":"stop"}]}"#;
        assert_eq!(
            guard.verdict(200, answer),
            Ok(Verdict::Block(Finding::new("guard_model", "S9")))
        );
    }
}
