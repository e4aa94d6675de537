//! What a check concluded, whichever backend made it.

/// A flagged text: which backend flagged it and under which label (a category, a rule kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub backend: &'static str,
    pub label: String,
}

impl Finding {
    pub fn new(backend: &'static str, label: impl Into<String>) -> Finding {
        Finding {
            backend,
            label: label.into(),
        }
    }
}

/// The outcome of checking one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Block(Finding),
}

impl Verdict {
    pub fn is_block(&self) -> bool {
        matches!(self, Verdict::Block(_))
    }
}

/// Which side of the exchange a text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
        }
    }
}
