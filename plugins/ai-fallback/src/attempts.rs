//! What happened to each provider a request tried, and the error a client gets when none
//! answered.

use serde::{Deserialize, Serialize};
use serde_json::json;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The provider answered and the answer was used.
    Answered,
    /// An error status from the provider (or from Envoy on its behalf).
    Status(u16),
    /// A 200 whose body was an error (a JSON error, or an error as the first stream event).
    ErrorInBody(String),
    /// Not tried: its circuit is open.
    CircuitOpen,
    /// No answer seen: a per-try timeout, a reset or a refused connection.
    NoAnswer,
}

impl Outcome {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Status(429) => "rate_limited",
            Outcome::Status(s) if *s >= 500 => "server_error",
            Outcome::Status(_) => "client_error",
            Outcome::ErrorInBody(_) => "error_in_body",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::NoAnswer => "no_answer",
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Outcome::Answered => "answered".into(),
            Outcome::Status(s) => format!("status {s}"),
            Outcome::ErrorInBody(message) => format!("error in a 200 answer: {message}"),
            Outcome::CircuitOpen => "skipped: circuit open".into(),
            Outcome::NoAnswer => "no answer (timeout, reset or refused connection)".into(),
        }
    }

    pub fn failed(&self) -> bool {
        *self != Outcome::Answered
    }
}

/// One provider tried (or skipped) for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider: String,
    /// `None` until the attempt ends; an attempt that never reports had no answer.
    pub outcome: Option<Outcome>,
    /// The model that answered, from the answer.
    pub model: Option<String>,
}

impl Attempt {
    pub fn outcome(&self) -> Outcome {
        self.outcome.clone().unwrap_or(Outcome::NoAnswer)
    }
}

#[derive(Serialize)]
struct AttemptView<'a> {
    provider: &'a str,
    outcome: &'static str,
    reason: String,
}

/// The status for a request every provider failed: 504 when the last had no answer, 503 when
/// nothing was even tried, else 502.
pub fn all_failed_status(attempts: &[Attempt]) -> u16 {
    match attempts
        .iter()
        .rev()
        .find(|a| a.outcome() != Outcome::CircuitOpen)
    {
        None => 503,
        Some(a) if a.outcome() == Outcome::NoAnswer => 504,
        Some(_) => 502,
    }
}

/// The OpenAI-style error listing every attempt and why it failed. Carries no keys: reasons
/// are statuses and the providers' own short messages.
pub fn all_failed_body(attempts: &[Attempt]) -> Vec<u8> {
    let summary = attempts
        .iter()
        .map(|a| format!("{}: {}", a.provider, a.outcome().reason()))
        .collect::<Vec<_>>()
        .join("; ");
    let views: Vec<AttemptView> = attempts
        .iter()
        .map(|a| AttemptView {
            provider: &a.provider,
            outcome: a.outcome().label(),
            reason: a.outcome().reason(),
        })
        .collect();
    let body = json!({"error": {
        "message": format!("every provider failed: {summary}"),
        "type": "upstream_error",
        "param": null,
        "code": "all_providers_failed",
        "attempts": views,
    }});
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn attempt(provider: &str, outcome: Option<Outcome>) -> Attempt {
        Attempt {
            provider: provider.into(),
            outcome,
            model: None,
        }
    }

    #[test]
    fn summary_lists_every_attempt_and_picks_the_status() {
        let attempts = vec![
            attempt("openai", Some(Outcome::CircuitOpen)),
            attempt("anthropic", Some(Outcome::Status(503))),
            attempt("gemini", None),
        ];
        assert_eq!(all_failed_status(&attempts), 504);
        let body: Value = serde_json::from_slice(&all_failed_body(&attempts)).unwrap();
        assert_eq!(body["error"]["code"], "all_providers_failed");
        assert_eq!(
            body["error"]["message"],
            "every provider failed: openai: skipped: circuit open; anthropic: status 503; gemini: no answer (timeout, reset or refused connection)"
        );
        assert_eq!(body["error"]["attempts"][1]["outcome"], "server_error");
        assert_eq!(all_failed_status(&attempts[..2]), 502);
        assert_eq!(all_failed_status(&attempts[..1]), 503);
    }
}
