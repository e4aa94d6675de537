//! One check of one text: the local lists first, then the service's callouts, whose results
//! are gathered here. A failed callout counts as passed under `failurePolicy: open` and as
//! blocked (label `service_unavailable`) under `closed`; the first block decides.

use crate::verdict::{Finding, Verdict};
use aigw_shared::callout::{FailurePolicy, Outcome};

/// Why a callout gave no verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `timeout`, `unreachable` or `error`, for the metric.
    pub reason: &'static str,
    pub detail: String,
}

/// The verdict a service's answer gives, or why there is none.
pub fn read_outcome(
    outcome: Outcome,
    verdict: impl FnOnce(u16, &[u8]) -> Result<Verdict, String>,
) -> Result<Verdict, Failure> {
    match outcome {
        Outcome::Answered { status, body } => verdict(status, &body).map_err(|detail| Failure {
            reason: "error",
            detail,
        }),
        Outcome::TimedOut => Err(Failure {
            reason: "timeout",
            detail: "no answer within the timeout".into(),
        }),
        Outcome::Unreachable(why) => Err(Failure {
            reason: "unreachable",
            detail: why,
        }),
    }
}

/// Callouts of one check still in flight, and what they said so far.
#[derive(Debug)]
pub struct Gathering {
    backend: &'static str,
    policy: FailurePolicy,
    remaining: usize,
    verdict: Verdict,
}

impl Gathering {
    pub fn new(backend: &'static str, policy: FailurePolicy, callouts: usize) -> Gathering {
        Gathering {
            backend,
            policy,
            remaining: callouts,
            verdict: Verdict::Pass,
        }
    }

    /// Records one callout's result; returns the verdict once it is decided (a block, or the
    /// last result in).
    pub fn record(&mut self, result: Result<Verdict, Failure>) -> Option<Verdict> {
        self.remaining = self.remaining.saturating_sub(1);
        if !self.verdict.is_block() {
            self.verdict = match result {
                Ok(verdict) => verdict,
                Err(_) => self.on_failure(),
            };
        }
        (self.verdict.is_block() || self.remaining == 0).then(|| self.verdict.clone())
    }

    /// The verdict a failure stands for.
    pub fn on_failure(&self) -> Verdict {
        match self.policy {
            FailurePolicy::Open => Verdict::Pass,
            FailurePolicy::Closed => {
                Verdict::Block(Finding::new(self.backend, "service_unavailable"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Verdict {
        Verdict::Block(Finding::new("azure", "Violence"))
    }

    fn failure() -> Result<Verdict, Failure> {
        Err(Failure {
            reason: "timeout",
            detail: String::new(),
        })
    }

    #[test]
    fn the_last_result_or_the_first_block_decides() {
        let mut g = Gathering::new("azure", FailurePolicy::Open, 3);
        assert_eq!(g.record(Ok(Verdict::Pass)), None);
        assert_eq!(g.record(Ok(block())), Some(block()));
        let mut g = Gathering::new("azure", FailurePolicy::Open, 2);
        assert_eq!(g.record(Ok(Verdict::Pass)), None);
        assert_eq!(g.record(Ok(Verdict::Pass)), Some(Verdict::Pass));
    }

    #[test]
    fn failures_follow_the_policy() {
        let mut open = Gathering::new("azure", FailurePolicy::Open, 1);
        assert_eq!(open.record(failure()), Some(Verdict::Pass));
        let mut closed = Gathering::new("azure", FailurePolicy::Closed, 2);
        assert_eq!(
            closed.record(failure()),
            Some(Verdict::Block(Finding::new("azure", "service_unavailable")))
        );
    }

    #[test]
    fn outcomes() {
        let ok = |_: u16, _: &[u8]| Ok(Verdict::Pass);
        assert_eq!(
            read_outcome(Outcome::TimedOut, ok).unwrap_err().reason,
            "timeout"
        );
        assert_eq!(
            read_outcome(Outcome::Unreachable("refused".into()), ok)
                .unwrap_err()
                .reason,
            "unreachable"
        );
        let bad = |s: u16, _: &[u8]| Err(format!("status {s}"));
        let answered = Outcome::Answered {
            status: 500,
            body: Vec::new(),
        };
        assert_eq!(
            read_outcome(answered, bad).unwrap_err().detail,
            "status 500"
        );
    }
}
