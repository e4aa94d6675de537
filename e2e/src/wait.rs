//! Waiting for what a test cannot see happen at once (counters flushed on a timer, stores
//! written after the answer).

use std::time::{Duration, Instant};

/// Polls `check` until it holds; fails the test after 10 s, naming `what`.
pub fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
