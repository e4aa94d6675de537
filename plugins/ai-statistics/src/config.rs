//! Configuration of ai-statistics (one object, global or per `_rules_` entry).

use aigw_shared::body::DEFAULT_BODY_LIMIT;
use aigw_shared::rules::{check_log_key, parse_object, ConfigError};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Request header naming the consumer (set by an auth filter in front).
    pub consumer_header: String,
    /// Filter state key for the JSON log record: `%FILTER_STATE(wasm.<log_key>:PLAIN)%`.
    pub log_key: String,
    /// Emit Envoy metrics (the log record is always written).
    pub enable_metrics: bool,
    /// Largest request or non-streamed response body copied to read `model` and `usage`.
    pub max_body_bytes: usize,
    /// Remove `accept-encoding` from requests so responses arrive uncompressed and can be read.
    pub strip_accept_encoding: bool,
    /// Upper bound on distinct metric names (label combinations) per worker.
    pub max_metric_series: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            consumer_header: "x-mse-consumer".into(),
            log_key: "ai_log".into(),
            enable_metrics: true,
            max_body_bytes: DEFAULT_BODY_LIMIT,
            strip_accept_encoding: true,
            max_metric_series: 10_000,
        }
    }
}

/// Higress ai-statistics keys that mean nothing here, and why.
pub const IGNORED_HIGRESS_KEYS: [(&str, &str); 1] = [(
    "attributes",
    "custom log and span attributes are not supported; the log record has a fixed set of fields",
)];

impl Config {
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, ConfigError> {
        let config: Config = parse_object(map)?;
        if config.consumer_header.trim().is_empty() {
            return Err(ConfigError::new("consumer_header", "must not be empty"));
        }
        check_log_key(&config.log_key)?;
        Ok(Config {
            consumer_header: config.consumer_header.to_ascii_lowercase(),
            ..config
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::rules::{RequestKeys, RuleSet};
    use serde_json::json;

    #[test]
    fn defaults_from_empty_config() {
        let c = Config::from_map(&Map::new()).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn unknown_and_mistyped_keys_are_rejected_with_their_name() {
        let err =
            Config::from_map(json!({"consumer_heder": "x"}).as_object().unwrap()).unwrap_err();
        assert!(err.to_string().contains("consumer_heder"), "{err}");
        let err =
            Config::from_map(json!({"max_body_bytes": "big"}).as_object().unwrap()).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = Config::from_map(json!({"log_key": "a b"}).as_object().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "log_key: must be letters, digits, '_' or '.'"
        );
    }

    #[test]
    fn higress_attributes_are_accepted_and_ignored() {
        let parse_migrated = |mut v: Value| {
            aigw_shared::rules::strip_ignored_keys(&mut v, &IGNORED_HIGRESS_KEYS);
            Config::from_map(v.as_object().unwrap())
        };
        let higress = json!({"attributes": [
            {"key": "question", "value_source": "request_body", "value": "messages.@reverse.0.content", "apply_to_log": true}
        ]});
        assert_eq!(parse_migrated(higress).unwrap(), Config::default());
        let err = parse_migrated(json!({"attributes": [], "atributes": []})).unwrap_err();
        assert_eq!(err.path, "atributes");
    }

    #[test]
    fn per_route_rules_override_the_consumer_header() {
        let set = RuleSet::parse(
            &json!({"_rules_": [{"_match_route_": ["tenant"], "consumer_header": "X-Tenant"}], "enable_metrics": true}),
            Config::from_map,
        )
        .unwrap();
        let keys = RequestKeys {
            route: "tenant",
            ..Default::default()
        };
        assert_eq!(set.get(&keys).unwrap().consumer_header, "x-tenant");
        assert_eq!(
            set.get(&RequestKeys::default()).unwrap().consumer_header,
            "x-mse-consumer"
        );
    }
}
