//! A mock of Azure AI Content Safety's text analysis
//! (`POST /contentsafety/text:analyze?api-version=…`), after its REST reference: the
//! `Ocp-Apim-Subscription-Key` header (401 otherwise), `text` up to 10,000 characters
//! (400 `InvalidRequestBody` past it), severities 0/2/4/6 for `Hate`, `SelfHarm`, `Sexual`,
//! `Violence` (a flagged phrase scores 6), blocklist matches for `blocklistNames` it knows.

use super::moderation::{body_json, classify, Harm};
use super::{Provider, Recorded, Reply};
use serde_json::{json, Value};

pub struct AzureContentSafetyMock {
    pub api_key: String,
    /// Blocklist name → its items (matched case-insensitively).
    pub blocklists: Vec<(String, Vec<String>)>,
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"code": code, "message": message, "target": null, "details": [], "innererror": null}}),
    )
}

impl Provider for AzureContentSafetyMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
        if request.method != "POST"
            || path != "/contentsafety/text:analyze"
            || !query.contains("api-version=")
        {
            return Reply::json(
                404,
                &json!({"error": {"code": "404", "message": "Resource not found"}}),
            );
        }
        if request.header("ocp-apim-subscription-key") != Some(self.api_key.as_str()) {
            return Reply::json(
                401,
                &json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}),
            );
        }
        let Some(text) = body_json(request)
            .and_then(|b| b.get("text").and_then(Value::as_str).map(str::to_string))
        else {
            return error(
                400,
                "InvalidRequestBody",
                "The request body is invalid: 'text' is required.",
            );
        };
        if text.chars().count() > 10_000 {
            return error(
                400,
                "InvalidRequestBody",
                "The text is too long. The maximum length is 10000 characters.",
            );
        }
        let names: Vec<String> = body_json(request)
            .and_then(|b| b.get("blocklistNames").cloned())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let lower = text.to_lowercase();
        let matches: Vec<Value> = self
            .blocklists
            .iter()
            .filter(|(name, _)| names.contains(name))
            .flat_map(|(name, items)| {
                items
                    .iter()
                    .filter(|item| lower.contains(&item.to_lowercase()))
                    .map(move |item| json!({"blocklistName": name, "blocklistItemId": format!("{name}-{item}"), "blocklistItemText": item}))
            })
            .collect();
        let harm = classify(&text);
        let severity = |h: Harm| if harm == Some(h) { 6 } else { 0 };
        Reply::json(
            200,
            &json!({"blocklistsMatch": matches, "categoriesAnalysis": [
                {"category": "Hate", "severity": severity(Harm::Hate)},
                {"category": "SelfHarm", "severity": severity(Harm::SelfHarm)},
                {"category": "Sexual", "severity": 0},
                {"category": "Violence", "severity": severity(Harm::Violence)}
            ]}),
        )
    }
}
