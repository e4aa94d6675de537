//! What every moderation mock shares: the phrases they flag, and a slow variant for timeouts.
//!
//! The mocks flag a text when it contains (in any case) one of [`FLAGGED`]; each service then
//! reports it in its own shape. Everything else passes.

use super::{Provider, Recorded, Reply};
use std::time::Duration;

/// Flagged phrases and the harm category each stands for.
pub const FLAGGED: &[(&str, Harm)] = &[
    ("build a bomb", Harm::Violence),
    ("hateful slur", Harm::Hate),
    ("hurt myself", Harm::SelfHarm),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harm {
    Violence,
    Hate,
    SelfHarm,
}

/// The harm a text carries, if any.
pub fn classify(text: &str) -> Option<Harm> {
    let lower = text.to_lowercase();
    FLAGGED
        .iter()
        .find(|(phrase, _)| lower.contains(phrase))
        .map(|(_, harm)| *harm)
}

/// A service that answers only after `delay` (headers included), to exceed a callout timeout.
pub struct Slow<P> {
    pub inner: P,
    pub delay: Duration,
}

impl<P: Provider> Provider for Slow<P> {
    fn handle(&self, request: &Recorded) -> Reply {
        std::thread::sleep(self.delay);
        self.inner.handle(request)
    }
}

/// A JSON reply with extra headers.
pub fn json_with(status: u16, extra: &[(&str, &str)], value: &serde_json::Value) -> Reply {
    match Reply::json(status, value) {
        Reply::Full {
            status,
            mut headers,
            body,
        } => {
            headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Reply::Full {
                status,
                headers,
                body,
            }
        }
        other => other,
    }
}

/// The request body as JSON, or `None`.
pub fn body_json(request: &Recorded) -> Option<serde_json::Value> {
    serde_json::from_slice(&request.body).ok()
}
