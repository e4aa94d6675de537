//! ai-token-ratelimit: token, request and concurrency quotas for LLM traffic that cannot be
//! overshot. A request reserves its estimated tokens in every window of every matching limit
//! before it is sent (all or nothing) and the reservation is settled with the usage the
//! provider reports when Envoy ends the stream. Counters live in Envoy shared data (one Envoy) or
//! in Redis through Webdis (every Envoy sharing it).

//!
//! The ledger, the windows and both stores are `aigw_shared::quota`.

pub mod charge;
pub mod config;
pub mod ipnet;
pub mod matcher;
pub mod reply;
pub mod stage;
pub mod worker;

aigw_shared::runner_main!(|| vec![Box::new(stage::RateLimit::default()) as _]);
