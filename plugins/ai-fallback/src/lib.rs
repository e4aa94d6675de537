//! ai-fallback: what Envoy's own retries cannot see. Envoy fails over on statuses, resets,
//! refused connections and per-try timeouts (a route retry policy over a cluster whose
//! priorities are providers, each attempt translated by ai-proxy). This plugin adds:
//!
//! - on the provider cluster (an upstream filter, once per attempt): errors hidden in a 200
//!   (a JSON error, an error as the first stream event) become a 502 so that Envoy retries
//!   them, and each attempt's outcome is kept for the front, which feeds it to a circuit
//!   breaker per provider;
//! - in front (a downstream filter): the chain starts at the first provider whose circuit is
//!   closed (by naming the chain's cluster in a header the route reads), the answer says who
//!   served and after how many attempts, a request every provider failed gets one error that
//!   lists them, and a request refused for its length is sent again to a longer-context model.
//!
//! The two instances share each request's attempt list through its filter state, so they
//! need not share a VM.

pub mod attempts;
pub mod breaker;
pub mod config;
pub mod inspect;
pub mod stage;

aigw_shared::runner_main!(|| vec![Box::new(stage::Fallback::default()) as _]);
