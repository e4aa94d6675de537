//! Azure AI Content Safety, `POST /contentsafety/text:analyze?api-version=2024-09-01`
//! (`Ocp-Apim-Subscription-Key`): one request per segment (the API takes 10,000 characters).
//! A blocklist hit blocks (label `blocklist:<name>`), and so does a category whose severity
//! reaches `severityThreshold` (label: the category, e.g. `Violence`).

use super::{answer_json, parse_own, CallContext, Defaults, Endpoint, Service};
use crate::verdict::{Finding, Phase, Verdict};
use aigw_shared::callout::Callout;
use aigw_shared::rules::ConfigError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub const DEFAULTS: Defaults = Defaults {
    host: "",
    path: "/contentsafety/text:analyze?api-version=2024-09-01",
    max_chars: 10_000,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Azure {
    api_key: String,
    /// Severity at which a category blocks (0–7; the API reports 0, 2, 4, 6 by default).
    #[serde(default = "default_threshold")]
    severity_threshold: u32,
    /// Categories analysed (`Hate`, `SelfHarm`, `Sexual`, `Violence`; all when empty).
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    blocklist_names: Vec<String>,
    #[serde(default)]
    halt_on_blocklist_hit: bool,
}

fn default_threshold() -> u32 {
    4
}

impl Azure {
    pub fn parse(map: &Map<String, Value>) -> Result<Azure, ConfigError> {
        let azure: Azure = parse_own(map)?;
        if azure.severity_threshold > 7 {
            return Err(ConfigError::new("severityThreshold", "must be 0 to 7"));
        }
        Ok(azure)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    blocklists_match: Vec<BlocklistMatch>,
    #[serde(default)]
    categories_analysis: Vec<Category>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlocklistMatch {
    #[serde(default)]
    blocklist_name: String,
}

#[derive(Deserialize)]
struct Category {
    category: String,
    #[serde(default)]
    severity: u32,
}

impl Service for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn requests(
        &self,
        endpoint: &Endpoint,
        segments: &[String],
        _phase: Phase,
        _ctx: CallContext,
    ) -> Vec<Callout> {
        segments
            .iter()
            .map(|text| {
                let mut body = json!({"text": text, "outputType": "FourSeverityLevels"});
                if !self.categories.is_empty() {
                    body["categories"] = json!(self.categories);
                }
                if !self.blocklist_names.is_empty() {
                    body["blocklistNames"] = json!(self.blocklist_names);
                    body["haltOnBlocklistHit"] = json!(self.halt_on_blocklist_hit);
                }
                endpoint
                    .post_json(&body)
                    .header("ocp-apim-subscription-key", &self.api_key)
            })
            .collect()
    }

    fn verdict(&self, status: u16, body: &[u8]) -> Result<Verdict, String> {
        let answer: Answer = answer_json(status, body)?;
        if let Some(hit) = answer.blocklists_match.first() {
            return Ok(Verdict::Block(Finding::new(
                "azure",
                format!("blocklist:{}", hit.blocklist_name),
            )));
        }
        Ok(answer
            .categories_analysis
            .iter()
            .filter(|c| c.severity >= self.severity_threshold)
            .max_by_key(|c| c.severity)
            .map_or(Verdict::Pass, |c| {
                Verdict::Block(Finding::new("azure", c.category.clone()))
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::tests::endpoint;

    fn azure() -> Azure {
        Azure::parse(
            json!({"apiKey": "az", "blocklistNames": ["words"]})
                .as_object()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_request_per_segment_with_the_subscription_key() {
        let requests = azure().requests(
            &endpoint(DEFAULTS.path),
            &["a".into(), "b".into()],
            Phase::Response,
            CallContext::default(),
        );
        assert_eq!(requests.len(), 2);
        assert!(requests[0]
            .headers
            .contains(&("ocp-apim-subscription-key".into(), "az".into())));
        let body: Value = serde_json::from_slice(&requests[1].body).unwrap();
        assert_eq!(
            body,
            json!({"text": "b", "outputType": "FourSeverityLevels", "blocklistNames": ["words"], "haltOnBlocklistHit": false})
        );
    }

    #[test]
    fn verdicts() {
        let a = azure();
        let severe = br#"{"blocklistsMatch":[],"categoriesAnalysis":[{"category":"Hate","severity":2},{"category":"Violence","severity":4}]}"#;
        assert_eq!(
            a.verdict(200, severe),
            Ok(Verdict::Block(Finding::new("azure", "Violence")))
        );
        let mild =
            br#"{"blocklistsMatch":[],"categoriesAnalysis":[{"category":"Hate","severity":2}]}"#;
        assert_eq!(a.verdict(200, mild), Ok(Verdict::Pass));
        let listed = br#"{"blocklistsMatch":[{"blocklistName":"words","blocklistItemId":"1","blocklistItemText":"x"}],"categoriesAnalysis":[]}"#;
        assert_eq!(
            a.verdict(200, listed),
            Ok(Verdict::Block(Finding::new("azure", "blocklist:words")))
        );
        let error = br#"{"error":{"code":"InvalidRequestBody","message":"The input text is too long.","target":null,"details":[],"innererror":null}}"#;
        assert_eq!(
            a.verdict(400, error),
            Err("status 400: The input text is too long.".into())
        );
    }
}
