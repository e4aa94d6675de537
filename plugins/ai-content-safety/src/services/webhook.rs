//! Any moderation service behind a small JSON contract.
//!
//! Request: `POST <path>` with `{"text": "...", "phase": "request" | "response"}` and the
//! configured `headers`. Answer: `200` with `{"flagged": true | false, "label": "..."}`
//! (`label` optional, `unlabelled` when absent). Any other status is a service error, handled
//! by the failure policy.

use super::{error_message, parse_own, CallContext, Defaults, Endpoint, Service};
use crate::verdict::{Finding, Phase, Verdict};
use aigw_shared::callout::Callout;
use aigw_shared::rules::ConfigError;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const DEFAULTS: Defaults = Defaults {
    host: "",
    path: "/moderate",
    max_chars: 20_000,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Webhook {
    /// Headers sent with every request (for example an `authorization`).
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl Webhook {
    pub fn parse(map: &Map<String, Value>) -> Result<Webhook, ConfigError> {
        parse_own(map)
    }
}

#[derive(Deserialize)]
struct Answer {
    flagged: bool,
    #[serde(default)]
    label: Option<String>,
}

impl Service for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
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
                self.headers.iter().fold(
                    endpoint.post_json(&json!({"text": text, "phase": phase.name()})),
                    |callout, (name, value)| callout.header(name, value),
                )
            })
            .collect()
    }

    fn verdict(&self, status: u16, body: &[u8]) -> Result<Verdict, String> {
        if status != 200 {
            return Err(error_message(status, body));
        }
        let answer: Answer =
            serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
        Ok(if answer.flagged {
            let label = answer
                .label
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| "unlabelled".into());
            Verdict::Block(Finding::new("webhook", label))
        } else {
            Verdict::Pass
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::tests::endpoint;

    #[test]
    fn contract() {
        let hook = Webhook::parse(
            json!({"headers": {"Authorization": "Bearer h"}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let requests = hook.requests(
            &endpoint("/moderate"),
            &["t".into()],
            Phase::Request,
            CallContext::default(),
        );
        assert!(requests[0]
            .headers
            .contains(&("authorization".into(), "Bearer h".into())));
        let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(body, json!({"text": "t", "phase": "request"}));
        assert_eq!(
            hook.verdict(200, br#"{"flagged":true,"label":"pii"}"#),
            Ok(Verdict::Block(Finding::new("webhook", "pii")))
        );
        assert_eq!(
            hook.verdict(200, br#"{"flagged":false}"#),
            Ok(Verdict::Pass)
        );
        assert!(hook.verdict(200, br#"{"ok":1}"#).is_err());
        assert!(hook.verdict(500, b"down").is_err());
    }
}
