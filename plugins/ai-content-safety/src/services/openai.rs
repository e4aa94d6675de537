//! OpenAI's moderation endpoint, `POST /v1/moderations` (`omni-moderation-latest`): all
//! segments in one request (`input` as an array); a result with `flagged: true` blocks, with
//! its first flagged category as the label. `categories` narrows which categories count.

use super::{answer_json, parse_own, CallContext, Defaults, Endpoint, Service};
use crate::verdict::{Finding, Phase, Verdict};
use aigw_shared::callout::Callout;
use aigw_shared::rules::ConfigError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub const DEFAULTS: Defaults = Defaults {
    host: "api.openai.com",
    path: "/v1/moderations",
    max_chars: 10_000,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenAi {
    api_key: String,
    #[serde(default = "default_model")]
    model: String,
    /// Only these categories block (all flagged categories when empty).
    #[serde(default)]
    categories: Vec<String>,
}

fn default_model() -> String {
    "omni-moderation-latest".into()
}

impl OpenAi {
    pub fn parse(map: &Map<String, Value>) -> Result<OpenAi, ConfigError> {
        parse_own(map)
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<ResultEntry>,
}

#[derive(Deserialize)]
struct ResultEntry {
    #[serde(default)]
    flagged: bool,
    #[serde(default)]
    categories: Map<String, Value>,
}

impl Service for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn requests(
        &self,
        endpoint: &Endpoint,
        segments: &[String],
        _phase: Phase,
        _ctx: CallContext,
    ) -> Vec<Callout> {
        let input = if segments.len() == 1 {
            json!(segments[0])
        } else {
            json!(segments)
        };
        vec![endpoint
            .post_json(&json!({"model": self.model, "input": input}))
            .header("authorization", &format!("Bearer {}", self.api_key))]
    }

    fn verdict(&self, status: u16, body: &[u8]) -> Result<Verdict, String> {
        let answer: Answer = answer_json(status, body)?;
        for result in answer.results.iter().filter(|r| r.flagged) {
            let flagged = result
                .categories
                .iter()
                .filter(|(_, v)| v.as_bool() == Some(true))
                .map(|(k, _)| k.as_str())
                .find(|k| self.categories.is_empty() || self.categories.iter().any(|c| c == k));
            match flagged {
                Some(category) => return Ok(Verdict::Block(Finding::new("openai", category))),
                None if self.categories.is_empty() => {
                    return Ok(Verdict::Block(Finding::new("openai", "flagged")))
                }
                None => {}
            }
        }
        Ok(Verdict::Pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::tests::endpoint;

    fn service(categories: &[&str]) -> OpenAi {
        OpenAi {
            api_key: "sk-mod".into(),
            model: default_model(),
            categories: categories.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn one_request_for_all_segments() {
        let requests = service(&[]).requests(
            &endpoint("/v1/moderations"),
            &["a".into(), "b".into()],
            Phase::Request,
            CallContext::default(),
        );
        assert_eq!(requests.len(), 1);
        let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(
            body,
            json!({"model": "omni-moderation-latest", "input": ["a", "b"]})
        );
        assert!(requests[0]
            .headers
            .contains(&("authorization".into(), "Bearer sk-mod".into())));
    }

    #[test]
    fn verdicts() {
        let flagged = br#"{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":true,"categories":{"harassment":false,"violence":true},"category_scores":{"violence":0.9}}]}"#;
        assert_eq!(
            service(&[]).verdict(200, flagged),
            Ok(Verdict::Block(Finding::new("openai", "violence")))
        );
        assert_eq!(
            service(&["sexual"]).verdict(200, flagged),
            Ok(Verdict::Pass)
        );
        let clean = br#"{"results":[{"flagged":false,"categories":{"violence":false}}]}"#;
        assert_eq!(service(&[]).verdict(200, clean), Ok(Verdict::Pass));
        let err = service(&[]).verdict(429, br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#);
        assert_eq!(err, Err("status 429: Rate limit reached".into()));
    }
}
