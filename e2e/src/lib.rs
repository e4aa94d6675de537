//! End-to-end harness: real Envoy with the wasm plugins, mock providers, real clients.
//!
//! Everything a test starts is stopped when the test ends, also when it fails (see `process`).

pub mod bench;
pub mod client;
pub mod config;
pub mod demo;
pub mod ecds;
pub mod envoy;
pub mod mock;
pub mod paths;
pub mod process;
pub mod python;
pub mod services;
pub mod suite;
pub mod wait;

pub use config::Gateway;
pub use envoy::{Envoy, EnvoyOptions};
pub use mock::{anthropic::AnthropicMock, azure::AzureMock, openai::OpenAiMock, MockServer};
