//! What one request leaves behind: its log record (filter state `wasm.<logKey>`) and the
//! names of its metrics.

use crate::verdict::{Finding, Phase};
use aigw_shared::metrics::series_prefix;
use serde::Serialize;

/// The JSON log record, for `%FILTER_STATE(wasm.ai_content_safety:PLAIN)%`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Record {
    /// `blocked`, or `passed` for requests that only masked, restored or met a failure.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// The label that triggered the block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub masked: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub restored: u64,
    /// Callouts that failed (the failure policy decided).
    #[serde(skip_serializing_if = "is_zero")]
    pub service_failures: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record {
    pub fn block(&mut self, phase: Phase, finding: &Finding) {
        self.action = "blocked";
        self.phase = Some(phase.name());
        self.backend = Some(finding.backend);
        self.label = Some(finding.label.clone());
    }

    /// Whether there is anything to log.
    pub fn is_notable(&self) -> bool {
        self.action == "blocked"
            || self.masked > 0
            || self.restored > 0
            || self.service_failures > 0
    }

    pub fn json(&self) -> String {
        let mut record = self.clone();
        if record.action.is_empty() {
            record.action = "passed";
        }
        serde_json::to_string(&record).unwrap_or_default()
    }
}

/// `content_safety.route.<r>.` — every metric's series starts here.
pub fn route_series(route: &str) -> String {
    format!("content_safety.{}", series_prefix(&[("route", route)]))
}

/// Series of `checks`: `…phase.<p>.`
pub fn phase_series(route: &str, phase: Phase) -> String {
    format!("{}phase.{}.", route_series(route), phase.name())
}

/// Series of `blocked`: `…phase.<p>.backend.<b>.label.<l>.`
pub fn blocked_series(route: &str, phase: Phase, finding: &Finding) -> String {
    format!(
        "{}{}",
        phase_series(route, phase),
        series_prefix(&[("backend", finding.backend), ("label", &finding.label)])
    )
}

/// Series of `callout_failed`: `…backend.<b>.reason.<r>.`
pub fn failure_series(route: &str, backend: &str, reason: &str) -> String {
    format!(
        "{}{}",
        route_series(route),
        series_prefix(&[("backend", backend), ("reason", reason)])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_record() {
        let finding = Finding::new("openai", "violence/graphic");
        assert_eq!(
            blocked_series("chat", Phase::Response, &finding),
            "content_safety.route.chat.phase.response.backend.openai.label.violence/graphic."
        );
        assert_eq!(
            failure_series("chat", "azure", "timeout"),
            "content_safety.route.chat.backend.azure.reason.timeout."
        );
        let mut r = Record::default();
        assert!(!r.is_notable());
        r.masked = 2;
        assert_eq!(r.json(), r#"{"action":"passed","masked":2}"#);
        r.block(Phase::Request, &Finding::new("local", "deny_word"));
        assert_eq!(
            r.json(),
            r#"{"action":"blocked","phase":"request","backend":"local","label":"deny_word","masked":2}"#
        );
    }
}
