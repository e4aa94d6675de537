//! A circuit breaker per provider: after `failure_threshold` failures in a row (within
//! `window`), requests skip the provider for `cooldown`; then one probe request is let through,
//! and its outcome closes the circuit or opens it again. The state is a few numbers, stored in
//! Envoy shared data so that every worker sees the same circuit.

/// Breaker settings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub window_ms: u64,
    pub cooldown_ms: u64,
    /// A probe that reports nothing within this time no longer blocks another probe.
    pub probe_timeout_ms: u64,
}

/// What a new request may do with a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Closed: use it.
    Use,
    /// Cool-down over and nobody probing: this request may probe.
    Probe,
    /// Open (or another request is probing): skip it.
    Skip,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breaker {
    /// Failures in a row, and when the first of them happened.
    failures: u32,
    first_failure_ms: u64,
    /// Non-zero while the circuit is open or half-open: when the cool-down ends.
    open_until_ms: u64,
    /// Non-zero while a probe is in flight: when it stops counting.
    probe_until_ms: u64,
}

impl Breaker {
    /// Reads the stored form `failures,first_failure,open_until,probe_until`.
    pub fn decode(bytes: &[u8]) -> Breaker {
        let numbers: Vec<u64> = std::str::from_utf8(bytes)
            .unwrap_or("")
            .split(',')
            .filter_map(|n| n.parse().ok())
            .collect();
        match numbers[..] {
            [failures, first, open, probe] => Breaker {
                failures: failures as u32,
                first_failure_ms: first,
                open_until_ms: open,
                probe_until_ms: probe,
            },
            _ => Breaker::default(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{},{},{},{}",
            self.failures, self.first_failure_ms, self.open_until_ms, self.probe_until_ms
        )
        .into_bytes()
    }

    pub fn decide(&self, now_ms: u64) -> Decision {
        if self.open_until_ms == 0 {
            Decision::Use
        } else if now_ms < self.open_until_ms || now_ms < self.probe_until_ms {
            Decision::Skip
        } else {
            Decision::Probe
        }
    }

    pub fn is_open(&self, now_ms: u64) -> bool {
        self.decide(now_ms) != Decision::Use
    }

    /// Marks a probe in flight (call only after [`Decision::Probe`]).
    pub fn start_probe(&mut self, now_ms: u64, config: &BreakerConfig) {
        self.probe_until_ms = now_ms + config.probe_timeout_ms;
    }

    /// Records an attempt's outcome.
    pub fn record(&mut self, success: bool, now_ms: u64, config: &BreakerConfig) {
        if success {
            *self = Breaker::default();
            return;
        }
        if self.open_until_ms != 0 {
            // A failed probe (or a straggler of the open period): open again for a full cool-down.
            self.open_until_ms = now_ms + config.cooldown_ms;
            self.probe_until_ms = 0;
            return;
        }
        if self.failures == 0 || now_ms.saturating_sub(self.first_failure_ms) > config.window_ms {
            self.failures = 0;
            self.first_failure_ms = now_ms;
        }
        self.failures += 1;
        if self.failures >= config.failure_threshold {
            self.open_until_ms = now_ms + config.cooldown_ms;
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BreakerConfig = BreakerConfig {
        failure_threshold: 3,
        window_ms: 10_000,
        cooldown_ms: 5_000,
        probe_timeout_ms: 2_000,
    };

    #[test]
    fn opens_after_threshold_failures_in_a_row() {
        let mut b = Breaker::default();
        b.record(false, 0, &CONFIG);
        b.record(false, 100, &CONFIG);
        assert_eq!(b.decide(200), Decision::Use);
        b.record(false, 200, &CONFIG);
        assert_eq!(b.decide(300), Decision::Skip);
        assert_eq!(b.decide(5_199), Decision::Skip);
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut b = Breaker::default();
        b.record(false, 0, &CONFIG);
        b.record(false, 1, &CONFIG);
        b.record(true, 2, &CONFIG);
        b.record(false, 3, &CONFIG);
        assert_eq!(b.decide(4), Decision::Use);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut b = Breaker::default();
        b.record(false, 0, &CONFIG);
        b.record(false, 1, &CONFIG);
        b.record(false, 20_000, &CONFIG);
        assert_eq!(b.decide(20_001), Decision::Use);
    }

    #[test]
    fn one_probe_after_the_cool_down_decides() {
        let mut b = Breaker::default();
        (0..3).for_each(|t| b.record(false, t, &CONFIG));
        assert_eq!(b.decide(5_002), Decision::Probe);
        b.start_probe(5_002, &CONFIG);
        assert_eq!(b.decide(5_003), Decision::Skip, "one probe at a time");
        assert_eq!(
            b.decide(7_003),
            Decision::Probe,
            "a probe that never reports stops counting"
        );
        b.record(false, 7_100, &CONFIG);
        assert_eq!(
            b.decide(7_200),
            Decision::Skip,
            "a failed probe opens the circuit again"
        );
        assert_eq!(b.decide(12_100), Decision::Probe);
        b.start_probe(12_100, &CONFIG);
        b.record(true, 12_200, &CONFIG);
        assert_eq!(b.decide(12_201), Decision::Use, "a good probe closes it");
    }

    #[test]
    fn stored_form_round_trips_and_garbage_is_closed() {
        let mut b = Breaker::default();
        (0..3).for_each(|t| b.record(false, t, &CONFIG));
        b.start_probe(6_000, &CONFIG);
        assert_eq!(Breaker::decode(&b.encode()), b);
        assert_eq!(Breaker::decode(b"nonsense"), Breaker::default());
    }
}
