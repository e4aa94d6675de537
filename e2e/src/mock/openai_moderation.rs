//! A mock of OpenAI's moderation endpoint (`POST /v1/moderations`), after its API reference:
//! bearer auth (401 `invalid_api_key` in OpenAI's error shape), `input` as a string or an array
//! of strings (400 otherwise), one result per input with the full category map.

use super::moderation::{body_json, classify, Harm};
use super::openai::error;
use super::{Provider, Recorded, Reply};
use serde_json::{json, Map, Value};

pub struct OpenAiModerationMock {
    pub api_key: String,
}

const CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

fn result(text: &str) -> Value {
    let harm = classify(text);
    let flagged_category = harm.map(|h| match h {
        Harm::Violence => "violence",
        Harm::Hate => "hate",
        Harm::SelfHarm => "self-harm",
    });
    let mut categories = Map::new();
    let mut scores = Map::new();
    let mut applied = Map::new();
    for c in CATEGORIES {
        let hit = Some(*c) == flagged_category;
        categories.insert(c.to_string(), json!(hit));
        scores.insert(c.to_string(), json!(if hit { 0.93 } else { 0.0001 }));
        applied.insert(c.to_string(), json!(["text"]));
    }
    json!({"flagged": harm.is_some(), "categories": categories, "category_scores": scores, "category_applied_input_types": applied})
}

impl Provider for OpenAiModerationMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let key = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        if key != Some(self.api_key.as_str()) {
            return error(401, "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.", None, Some("invalid_api_key"));
        }
        if request.method != "POST" || !request.path.starts_with("/v1/moderations") {
            return error(
                404,
                &format!("Invalid URL ({} {})", request.method, request.path),
                None,
                None,
            );
        }
        let Some(body) = body_json(request) else {
            return error(
                400,
                "We could not parse the JSON body of your request.",
                None,
                None,
            );
        };
        let texts: Vec<String> = match body.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            None => {
                return error(
                    400,
                    "Missing required parameter: 'input'.",
                    Some("input"),
                    Some("missing_required_parameter"),
                )
            }
            Some(_) => {
                return error(
                    400,
                    "Invalid type for 'input'.",
                    Some("input"),
                    Some("invalid_type"),
                )
            }
        };
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("omni-moderation-latest");
        Reply::json(
            200,
            &json!({"id": "modr-mock", "model": model, "results": texts.iter().map(|t| result(t)).collect::<Vec<_>>()}),
        )
    }
}
