//! Per-request knobs every mock understands, sent as request headers (they pass through the
//! gateway unchanged):
//!
//! - `x-mock-chunks`: content pieces in the answer (default: the mock's `chunks`);
//! - `x-mock-chunk-bytes`: size of each piece, for large answers (default: one word a piece);
//! - `x-mock-delay-ms`: pause between pieces (default: the mock's `delay`);
//! - `x-mock-first-delay-ms`: pause before the first piece, the time to first token (default:
//!   the mock's `first_delay`);
//! - `x-mock-status`: answer this error status (400 and up) in the provider's error shape.

use super::Recorded;
use std::time::Duration;

/// The knobs of one request, defaults filled in.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub chunks: usize,
    pub chunk_bytes: Option<usize>,
    pub delay: Duration,
    pub first_delay: Duration,
    pub status: Option<u16>,
}

impl Knobs {
    /// Reads the knobs of `request`, falling back to a mock's configured pace.
    pub fn read(
        request: &Recorded,
        chunks: usize,
        delay: Duration,
        first_delay: Duration,
    ) -> Knobs {
        let num = |name: &str| {
            request
                .header(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Knobs {
            chunks: num("x-mock-chunks").map_or(chunks, |n| n as usize),
            chunk_bytes: num("x-mock-chunk-bytes").map(|n| n as usize),
            delay: num("x-mock-delay-ms").map_or(delay, Duration::from_millis),
            first_delay: num("x-mock-first-delay-ms").map_or(first_delay, Duration::from_millis),
            status: num("x-mock-status")
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (400..=599).contains(s)),
        }
    }

    /// The pause before the `i`-th piece of generated content (0-based): the time to first
    /// token before the first, the inter-token delay after that.
    pub fn pause_before(&self, i: usize) -> Duration {
        if i == 0 {
            self.first_delay
        } else {
            self.delay
        }
    }
}
