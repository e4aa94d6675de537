//! Quotas that cannot be overshot: a request reserves its estimate in every window of every
//! limit that applies to it, all or nothing, and settles the difference with what it really
//! spent. The windows, the ledger both stores keep, and the two stores: Envoy shared data
//! (every worker of one Envoy) and Redis through Webdis (every Envoy sharing it). Token
//! quotas, money budgets, tool-call quotas and in-flight counts all build on this.

pub mod ledger;
pub mod local;
pub mod redis;
pub mod window;

use window::Window;

/// What one limit allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub windows: Vec<Window>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u64>,
}

/// One limit that applies to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub rule: String,
    /// The counter's name: rule, source and value. Values that may be credentials (headers,
    /// parameters, cookies) appear only hashed, so they never reach the store or the logs.
    pub id: String,
    pub limits: Limits,
}

/// FNV-1a: a stable hash for counter names and slots.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
