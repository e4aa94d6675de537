//! ai-statistics: meters every LLM request passing through Envoy (model, consumer, route,
//! upstream, status, tokens, latency, time to first token) into Envoy metrics and a log record.
//! It observes only: every byte is forwarded unchanged and nothing is held back.

pub mod config;
pub mod record;
pub mod stage;

aigw_shared::runner_main!(|| vec![Box::new(stage::Statistics::default()) as _]);
