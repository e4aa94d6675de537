//! A moderation webhook speaking the plugin's documented contract: `POST` of
//! `{"text", "phase"}`, answered `{"flagged", "label"}`; a missing `text` is a 400, a wrong
//! `authorization` a 401.

use super::moderation::{body_json, classify, Harm};
use super::{Provider, Recorded, Reply};
use serde_json::{json, Value};

pub struct WebhookMock {
    pub token: String,
}

impl Provider for WebhookMock {
    fn handle(&self, request: &Recorded) -> Reply {
        if request.header("authorization") != Some(format!("Bearer {}", self.token).as_str()) {
            return Reply::json(401, &json!({"error": "unauthorized"}));
        }
        let Some(text) = body_json(request)
            .and_then(|b| b.get("text").and_then(Value::as_str).map(str::to_string))
        else {
            return Reply::json(400, &json!({"error": "text is required"}));
        };
        Reply::json(
            200,
            &match classify(&text) {
                None => json!({"flagged": false}),
                Some(harm) => json!({"flagged": true, "label": match harm {
                    Harm::Violence => "violence", Harm::Hate => "hate", Harm::SelfHarm => "self_harm" }}),
            },
        )
    }
}
