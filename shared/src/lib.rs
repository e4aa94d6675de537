//! `aigw-shared`: the library every plugin of the AI gateway builds on.
//!
//! The core modules are pure (plain values in, plain values out) and are tested on the host and
//! in wasm; `host` holds the thin wrappers over proxy-wasm host calls.

pub mod body;
pub mod callout;
pub mod canonical;
pub mod chain;
pub mod consumer;
pub mod error;
pub mod estimate;
pub mod event_bound;
pub mod headers;
pub mod json;
pub mod meter;
pub mod metrics;
pub mod openai;
pub mod quota;
pub mod redact;
pub mod rules;
pub mod sign;
pub mod sse;
pub mod stage;
pub mod store;
pub mod usage;
pub mod webdis;

#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "host")]
pub mod runner;

#[cfg(test)]
mod testutil;
