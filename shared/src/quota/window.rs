//! Fixed windows aligned to the epoch (a minute window starts at :00 of every minute, a day
//! window at 00:00 UTC): what a window counts, when it started, when it resets, and whether it
//! admits an amount.

/// What a window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Tokens,
    Requests,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kind: Kind,
    pub period_secs: u64,
    pub limit: u64,
}

/// The periods users can name, and their config suffix (`token_per_minute`).
pub const PERIODS: [(&str, u64); 4] = [
    ("second", 1),
    ("minute", 60),
    ("hour", 3_600),
    ("day", 86_400),
];

impl Window {
    /// Start of the window containing `now_ms`, in seconds since the epoch.
    pub fn start(&self, now_ms: u64) -> u64 {
        let now = now_ms / 1000;
        now - now % self.period_secs.max(1)
    }

    /// Milliseconds from `now_ms` to the end of its window.
    pub fn reset_ms(&self, now_ms: u64) -> u64 {
        (self.start(now_ms) + self.period_secs.max(1)) * 1000 - now_ms
    }

    /// What one request adds to this window when it reserves `tokens`.
    pub fn amount(&self, tokens: u64) -> u64 {
        match self.kind {
            Kind::Tokens => tokens,
            Kind::Requests => 1,
        }
    }

    /// Whether a window that has `used` admits `amount` more. A request with nothing to
    /// reserve still needs quota left: a used-up window refuses everything.
    pub fn admits(&self, used: u64, amount: u64) -> bool {
        used.saturating_add(amount.max(1)) <= self.limit
    }

    /// The config name of this window, e.g. `token_per_minute`.
    pub fn name(&self) -> String {
        let period = PERIODS
            .iter()
            .find(|(_, secs)| *secs == self.period_secs)
            .map_or("period", |(name, _)| name);
        match self.kind {
            Kind::Tokens => format!("token_per_{period}"),
            Kind::Requests => format!("query_per_{period}"),
        }
    }
}

impl Window {
    /// A token window of a minute.
    pub fn minute(limit: u64) -> Window {
        Window {
            kind: Kind::Tokens,
            period_secs: 60,
            limit,
        }
    }
}

/// A duration the way OpenAI's `x-ratelimit-reset-*` headers write it: `250ms`, `1s`, `6m0s`,
/// `1h2m3s`, `1.5s`.
pub fn format_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let seconds = match rest % 1000 {
        0 => format!("{}s", rest / 1000),
        frac => {
            let frac = format!("{frac:03}");
            format!("{}.{}s", rest / 1000, frac.trim_end_matches('0'))
        }
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// Whole seconds, rounded up, for `retry-after`.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let w = Window::minute(10);
        // 2026-01-01T00:00:59.250Z
        let now = 1_767_225_659_250;
        assert_eq!(w.start(now), 1_767_225_600);
        assert_eq!(w.reset_ms(now), 750);
        assert_eq!(w.start(now + 750), 1_767_225_660, "next window");
        assert_eq!(w.reset_ms(now + 750), 60_000);
        let day = Window {
            period_secs: 86_400,
            ..w
        };
        assert_eq!(day.start(now) % 86_400, 0, "days start at midnight UTC");
        assert_eq!(day.reset_ms(now), 86_400_000 - 59_250);
    }

    #[test]
    fn admission_never_goes_past_the_limit() {
        let w = Window::minute(100);
        assert!(w.admits(0, 100));
        assert!(!w.admits(0, 101));
        assert!(w.admits(60, 40));
        assert!(!w.admits(60, 41));
        assert!(w.admits(99, 0), "quota left: an empty reservation passes");
        assert!(!w.admits(100, 0), "used up: nothing passes");
        assert!(!w.admits(u64::MAX, 1), "no overflow");
    }

    #[test]
    fn request_windows_count_one_per_request() {
        let w = Window {
            kind: Kind::Requests,
            period_secs: 1,
            limit: 5,
        };
        assert_eq!(w.amount(1234), 1);
        assert_eq!(Window::minute(1).amount(1234), 1234);
        assert_eq!(w.name(), "query_per_second");
        assert_eq!(Window::minute(1).name(), "token_per_minute");
    }

    #[test]
    fn durations_read_like_openai_headers() {
        assert_eq!(format_duration(20), "20ms");
        assert_eq!(format_duration(1000), "1s");
        assert_eq!(format_duration(1500), "1.5s");
        assert_eq!(format_duration(360_000), "6m0s");
        assert_eq!(format_duration(90_250), "1m30.25s");
        assert_eq!(format_duration(3_723_000), "1h2m3s");
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1001), 2);
        assert_eq!(ceil_secs(0), 1, "retry-after is at least a second");
    }
}
