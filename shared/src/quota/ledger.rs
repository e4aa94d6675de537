//! What both stores decide and keep: a request asks every window of every matching limit for
//! its estimate at once (all or nothing), holds what it got, and at the end settles the
//! difference with what it really spent.

use crate::quota::window::{Kind, Window};
use crate::quota::Matched;

/// A decision to take: reserve `tokens` (and a request, and a concurrency slot where limited)
/// in every window of `limits`.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub limits: &'a [Matched],
    pub tokens: u64,
    pub now_ms: u64,
    /// The concurrency slot's name and when it lapses if never given back.
    pub lease: Lease,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: u32,
    pub expires_ms: u64,
}

/// A window as the decision left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub window: Window,
    /// Used after this request's reservation.
    pub used: u64,
}

impl WindowState {
    pub fn remaining(&self) -> u64 {
        self.window.limit.saturating_sub(self.used)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reserved everywhere; the state of every window of every limit, in order.
    Admitted(Vec<WindowState>),
    Limited(Limited),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Index of the limit that refused (in [`Ask::limits`]).
    pub limit: usize,
    /// The window that refused; `None` when the concurrency limit did.
    pub window: Option<Window>,
    /// Used in that window (or requests in flight) before this request.
    pub used: u64,
    /// What this request needed there.
    pub requested: u64,
}

impl Limited {
    /// The request needs more than the window could ever give.
    pub fn too_large(&self) -> bool {
        self.window.is_some_and(|w| self.requested > w.limit)
    }

    /// When trying again can succeed: the end of the window, or a moment for a slot to free.
    pub fn retry_after_ms(&self, now_ms: u64) -> u64 {
        match self.window {
            Some(w) => w.reset_ms(now_ms),
            None => 1000,
        }
    }
}

/// What an admitted request holds until it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub tokens: u64,
    /// Token windows reserved in: counter, window, window start.
    pub windows: Vec<(String, Window, u64)>,
    /// Counters whose concurrency slot this request took.
    pub slots: Vec<String>,
    pub lease: Lease,
}

impl Held {
    pub fn new(ask: &Ask) -> Held {
        let windows = ask
            .limits
            .iter()
            .flat_map(|m| {
                m.limits
                    .windows
                    .iter()
                    .filter(|w| w.kind == Kind::Tokens)
                    .map(|w| (m.id.clone(), *w, w.start(ask.now_ms)))
            })
            .collect();
        let slots = ask
            .limits
            .iter()
            .filter(|m| m.limits.max_concurrent.is_some())
            .map(|m| m.id.clone())
            .collect();
        Held {
            tokens: ask.tokens,
            windows,
            slots,
            lease: ask.lease,
        }
    }

    /// The corrections that turn the reservation into a charge of `spent` tokens: the
    /// difference in the window reserved in while it lasts; once it is over, only an excess,
    /// in the window of `now_ms` (an expired reservation cannot be refunded).
    pub fn settle(&self, spent: u64, now_ms: u64) -> Vec<Adjustment> {
        let signed = |tokens: u64| i64::try_from(tokens).unwrap_or(i64::MAX);
        let delta = signed(spent).saturating_sub(signed(self.tokens));
        self.windows
            .iter()
            .filter_map(|(id, window, start)| {
                let current = window.start(now_ms);
                let delta = if current == *start {
                    delta
                } else {
                    delta.max(0)
                };
                (delta != 0).then(|| Adjustment {
                    id: id.clone(),
                    window: *window,
                    start: current,
                    delta,
                })
            })
            .collect()
    }
}

/// A correction of one token window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub id: String,
    pub window: Window,
    pub start: u64,
    pub delta: i64,
}

/// The window a request is most constrained by, for the `x-ratelimit-*` headers.
pub fn tightest(states: &[WindowState], kind: Kind) -> Option<&WindowState> {
    states
        .iter()
        .filter(|s| s.window.kind == kind)
        .min_by_key(|s| s.remaining())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Limits;

    fn held(now_ms: u64) -> Held {
        let limits = [Matched {
            rule: "r".into(),
            id: "r/global/".into(),
            limits: Limits {
                windows: vec![
                    Window::minute(1000),
                    Window {
                        kind: Kind::Requests,
                        period_secs: 1,
                        limit: 5,
                    },
                ],
                max_concurrent: Some(2),
            },
        }];
        Held::new(&Ask {
            limits: &limits,
            tokens: 100,
            now_ms,
            lease: Lease {
                id: 7,
                expires_ms: now_ms + 1000,
            },
        })
    }

    #[test]
    fn settling_charges_the_difference_in_the_reserved_window() {
        let now = 120_000;
        let h = held(now);
        assert_eq!(h.windows.len(), 1, "request windows are not settled");
        assert_eq!(h.slots, ["r/global/"]);
        let refund = h.settle(30, now + 5_000);
        assert_eq!(refund[0].delta, -70);
        assert_eq!(refund[0].start, 120);
        assert_eq!(h.settle(130, now)[0].delta, 30);
        assert!(
            h.settle(100, now).is_empty(),
            "exact estimate: nothing to do"
        );
    }

    #[test]
    fn charges_beyond_i64_do_not_wrap() {
        let h = held(120_000);
        assert_eq!(h.settle(u64::MAX, 120_000)[0].delta, i64::MAX - 100);
        let huge = Held {
            tokens: u64::MAX,
            ..h
        };
        assert_eq!(huge.settle(0, 120_000)[0].delta, -i64::MAX);
    }

    #[test]
    fn after_the_window_only_an_excess_is_charged_to_the_next() {
        let h = held(119_000);
        assert!(
            h.settle(30, 121_000).is_empty(),
            "refund of an expired window"
        );
        let excess = h.settle(150, 121_000);
        assert_eq!((excess[0].start, excess[0].delta), (120, 50));
    }

    #[test]
    fn rejections_say_when_to_retry() {
        let limited = Limited {
            limit: 0,
            window: Some(Window::minute(100)),
            used: 90,
            requested: 20,
        };
        assert_eq!(limited.retry_after_ms(30_500), 29_500);
        assert!(!limited.too_large());
        assert!(Limited {
            requested: 101,
            ..limited.clone()
        }
        .too_large());
        let busy = Limited {
            window: None,
            ..limited
        };
        assert_eq!(busy.retry_after_ms(0), 1000);
    }

    #[test]
    fn the_tightest_window_names_the_headers() {
        let states = [
            WindowState {
                window: Window::minute(1000),
                used: 900,
            },
            WindowState {
                window: Window {
                    period_secs: 86_400,
                    ..Window::minute(5000)
                },
                used: 4950,
            },
        ];
        assert_eq!(tightest(&states, Kind::Tokens).unwrap().remaining(), 50);
        assert!(tightest(&states, Kind::Requests).is_none());
    }
}
