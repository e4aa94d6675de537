//! ai-proxy: both edges of the canonical format. Clients speak the OpenAI API or Anthropic's
//! Messages API; providers get their native API. Works as a downstream filter (one provider per
//! route, the Higress way) and as an upstream HTTP filter on the route's cluster, where each
//! attempt takes its provider (and optionally its model) from the chosen endpoint's metadata.

pub mod addressing;
pub mod config;
pub mod keys;
pub mod mapping;
pub mod models;
pub mod passthrough;
pub mod pipeline;
pub mod provider;
pub mod rs256;
pub mod stage;
pub mod translate;
pub mod vertex_auth;

aigw_shared::runner_main!(|| vec![Box::new(stage::Proxy::default()) as _]);
