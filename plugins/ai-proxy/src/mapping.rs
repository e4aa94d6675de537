//! `modelMapping`: which model a provider is asked for, given the model the client named.
//!
//! Resolution order, as in Higress: an exact key, then the longest `prefix*` key, then `~regex`
//! keys in the order written (the value may use `$1`… for captures), then `*`. An empty value
//! keeps the client's model.

use aigw_shared::rules::ConfigError;
use regex_lite::Regex;
use serde_json::{Map, Value};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct ModelMapping {
    exact: HashMap<String, String>,
    /// Longest prefix first.
    prefixes: Vec<(String, String)>,
    patterns: Vec<(Regex, String)>,
    fallback: Option<String>,
}

impl ModelMapping {
    pub fn parse(map: &Map<String, Value>) -> Result<Self, ConfigError> {
        let mut mapping = ModelMapping::default();
        for (key, value) in map {
            let target = value
                .as_str()
                .ok_or_else(|| ConfigError::new(key.as_str(), "must be a string"))?
                .to_string();
            if key == "*" {
                mapping.fallback = Some(target);
            } else if let Some(pattern) = key.strip_prefix('~') {
                let regex = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| ConfigError::new(key.as_str(), format!("invalid regex: {e}")))?;
                mapping.patterns.push((regex, target));
            } else if let Some(prefix) = key.strip_suffix('*') {
                mapping.prefixes.push((prefix.to_string(), target));
            } else {
                mapping.exact.insert(key.clone(), target);
            }
        }
        mapping
            .prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(mapping)
    }

    /// The model to ask the provider for.
    pub fn resolve(&self, model: &str) -> String {
        let mapped = if let Some(target) = self.exact.get(model) {
            target.clone()
        } else if let Some((_, target)) = self
            .prefixes
            .iter()
            .find(|(p, _)| model.starts_with(p.as_str()))
        {
            target.clone()
        } else if let Some((regex, target)) = self.patterns.iter().find(|(r, _)| r.is_match(model))
        {
            regex.replace(model, target.as_str()).into_owned()
        } else {
            self.fallback.clone().unwrap_or_default()
        };
        if mapped.is_empty() {
            model.to_string()
        } else {
            mapped
        }
    }

    /// Model names the mapping knows by exact name (for `/v1/models`).
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.exact.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.prefixes.is_empty()
            && self.patterns.is_empty()
            && self.fallback.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(v: Value) -> ModelMapping {
        ModelMapping::parse(v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn exact_then_longest_prefix_then_regex_then_default() {
        let m = mapping(json!({
            "gpt-4": "exact-target",
            "gpt-4*": "short-prefix",
            "gpt-4o*": "long-prefix",
            "~claude-(.*)-latest": "anthropic/$1",
            "~.*-mini": "",
            "*": "default-model"
        }));
        assert_eq!(m.resolve("gpt-4"), "exact-target");
        assert_eq!(m.resolve("gpt-4o-mini"), "long-prefix");
        assert_eq!(m.resolve("gpt-4-turbo"), "short-prefix");
        assert_eq!(m.resolve("claude-sonnet-latest"), "anthropic/sonnet");
        assert_eq!(
            m.resolve("o3-mini"),
            "o3-mini",
            "an empty value keeps the model"
        );
        assert_eq!(m.resolve("anything"), "default-model");
    }

    #[test]
    fn no_mapping_keeps_the_model() {
        assert_eq!(ModelMapping::default().resolve("m"), "m");
    }

    #[test]
    fn regex_must_match_the_whole_name() {
        let m = mapping(json!({"~gpt": "x"}));
        assert_eq!(m.resolve("gpt-4"), "gpt-4");
        assert_eq!(m.resolve("gpt"), "x");
    }

    #[test]
    fn bad_entries_are_named() {
        let err = ModelMapping::parse(json!({"~(": "x"}).as_object().unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("~(: invalid regex"), "{err}");
        let err = ModelMapping::parse(json!({"a": 1}).as_object().unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "a: must be a string");
    }
}
