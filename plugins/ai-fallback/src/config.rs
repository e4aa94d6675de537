//! ai-fallback configuration. One config serves both instances: the downstream one (chain
//! choice, response headers, the all-failed error, context-length fallback) and the one on the
//! provider cluster (per-attempt inspection and the circuit breaker's bookkeeping).
//!
//! ```json
//! {"chain": [{"provider": "openai", "cluster": "chain-openai"}, {"provider": "anthropic", "cluster": "chain-anthropic"}],
//!  "clusterHeader": "x-ai-fallback-cluster",
//!  "circuitBreaker": {"failureThreshold": 3, "windowSeconds": 60, "cooldownSeconds": 30},
//!  "contextLengthFallback": {"cluster": "long-context", "model": "gpt-4.1"}}
//! ```

use crate::breaker::BreakerConfig;
use aigw_shared::rules::{parse_object, ConfigError};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A provider of the chain and the cluster whose priorities start with it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The provider id in the endpoints' metadata (`aigw.provider`).
    pub provider: String,
    /// The cluster to route to when the chain starts at this provider.
    pub cluster: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CircuitBreaker {
    pub enabled: bool,
    pub failure_threshold: u32,
    pub window_seconds: u64,
    pub cooldown_seconds: u64,
    pub probe_timeout_seconds: u64,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            enabled: true,
            failure_threshold: 3,
            window_seconds: 60,
            cooldown_seconds: 30,
            probe_timeout_seconds: 30,
        }
    }
}

/// Where a request the provider refused for its length goes instead.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContextLengthFallback {
    /// A cluster with ai-proxy as its upstream filter (and not ai-fallback).
    pub cluster: String,
    /// The longer-context model to ask for.
    pub model: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    120_000
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    pub chain: Vec<Link>,
    pub cluster_header: String,
    pub circuit_breaker: CircuitBreaker,
    /// Look inside 200 answers for an error (a JSON error, an error as first stream event).
    pub error_in_body: bool,
    /// Longest start of an answer held while looking.
    pub max_inspect_bytes: usize,
    pub context_length_fallback: Option<ContextLengthFallback>,
    /// Largest request body kept for the context-length fallback.
    pub max_request_bytes: usize,
    pub metadata_namespace: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chain: Vec::new(),
            cluster_header: "x-ai-fallback-cluster".into(),
            circuit_breaker: CircuitBreaker::default(),
            error_in_body: true,
            max_inspect_bytes: 64 << 10,
            context_length_fallback: None,
            max_request_bytes: 8 << 20,
            metadata_namespace: "aigw".into(),
        }
    }
}

impl Config {
    pub fn from_map(map: &Map<String, Value>) -> Result<Config, ConfigError> {
        let config: Config = parse_object(map)?;
        if config.cluster_header.trim().is_empty() {
            return Err(ConfigError::new("clusterHeader", "must not be empty"));
        }
        let breaker = &config.circuit_breaker;
        if breaker.failure_threshold == 0 {
            return Err(ConfigError::new(
                "circuitBreaker.failureThreshold",
                "must be at least 1",
            ));
        }
        for (i, link) in config.chain.iter().enumerate() {
            if config.chain[..i]
                .iter()
                .any(|l| l.provider == link.provider)
            {
                return Err(ConfigError::new(
                    format!("chain[{i}].provider"),
                    format!("{:?} appears twice", link.provider),
                ));
            }
        }
        Ok(Config {
            cluster_header: config.cluster_header.to_ascii_lowercase(),
            ..config
        })
    }

    pub fn breaker(&self) -> BreakerConfig {
        let b = &self.circuit_breaker;
        BreakerConfig {
            failure_threshold: b.failure_threshold,
            window_ms: b.window_seconds * 1000,
            cooldown_ms: b.cooldown_seconds * 1000,
            probe_timeout_ms: b.probe_timeout_seconds * 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Result<Config, ConfigError> {
        Config::from_map(v.as_object().unwrap())
    }

    #[test]
    fn defaults_and_a_chain() {
        let c = config(json!({"chain": [{"provider": "a", "cluster": "chain-a"}], "circuitBreaker": {"cooldownSeconds": 5}})).unwrap();
        assert_eq!(c.chain[0].cluster, "chain-a");
        assert_eq!(c.breaker().cooldown_ms, 5000);
        assert_eq!(c.breaker().failure_threshold, 3);
        assert!(c.error_in_body);
    }

    #[test]
    fn mistakes_are_named() {
        assert!(config(json!({"chain": [{"provider": "a"}]}))
            .unwrap_err()
            .to_string()
            .starts_with("chain[0].cluster: field required"));
        assert_eq!(
            config(json!({"chain": [{"provider": "a", "cluster": "x"}, {"provider": "a", "cluster": "y"}]})).unwrap_err().to_string(),
            "chain[1].provider: \"a\" appears twice"
        );
        assert!(config(json!({"circuitBreaker": {"failureThreshold": 0}})).is_err());
        assert!(config(json!({"retries": 3}))
            .unwrap_err()
            .to_string()
            .contains("retries"));
    }
}
