//! Real services some tests run beside Envoy (Redis with Webdis, Chroma, an embedding model),
//! each on free loopback ports and stopped with the value that started it. `make services`
//! installs them (`e2e/services/*.sh`).

pub mod chroma;
pub mod embedder;
pub mod redis;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until `ready` holds, or panics after `timeout` with `what` and `log`'s content.
pub fn wait_ready(what: &str, timeout: Duration, log: &std::path::Path, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} not ready after {timeout:?}; log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `true` when `GET url` answers 200.
pub fn answers(url: &str) -> bool {
    crate::client::get(url).is_ok_and(|r| r.status == 200)
}
