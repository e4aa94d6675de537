//! The configuration of a module that runs several plugins as one chain (the suite): the
//! stages in chain order, each with the JSON its own plugin takes, so a per-plugin config
//! moves over key for key.
//!
//! ```json
//! {"stages": [
//!   {"stage": "ai-statistics", "config": {}},
//!   {"stage": "ai-proxy", "config": {"provider": {"type": "openai", "apiTokens": ["sk-…"]}}}
//! ]}
//! ```

use serde_json::Value;

/// One stage of the chain and its plugin's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainEntry {
    pub stage: String,
    pub config: Value,
}

/// Reads the chain; `known` are the stage names this module has.
pub fn parse_chain(config: &Value, known: &[&str]) -> Result<Vec<ChainEntry>, String> {
    let stages = config
        .get("stages")
        .and_then(Value::as_array)
        .ok_or("`stages` must be a list of {\"stage\": name, \"config\": {…}} in chain order")?;
    if let Some(object) = config.as_object() {
        if let Some(other) = object.keys().find(|k| *k != "stages") {
            return Err(format!(
                "unknown key `{other}`: each stage's settings go in its own `config`"
            ));
        }
    }
    let mut chain: Vec<ChainEntry> = Vec::with_capacity(stages.len());
    for (i, entry) in stages.iter().enumerate() {
        let name = entry
            .get("stage")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("stages[{i}].stage: a stage name is required"))?;
        if !known.contains(&name) {
            return Err(format!(
                "stages[{i}].stage: unknown stage {name:?} (this module has {})",
                known.join(", ")
            ));
        }
        if chain.iter().any(|e| e.stage == name) {
            return Err(format!("stages[{i}].stage: {name:?} is listed twice"));
        }
        let config = entry.get("config").cloned().unwrap_or(Value::Null);
        if !(config.is_object() || config.is_null()) {
            return Err(format!("stages[{i}].config: must be an object"));
        }
        chain.push(ChainEntry {
            stage: name.to_string(),
            config,
        });
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KNOWN: &[&str] = &["ai-statistics", "ai-proxy"];

    #[test]
    fn stages_keep_their_order_and_their_own_config() {
        let chain = parse_chain(
            &json!({"stages": [
                {"stage": "ai-proxy", "config": {"provider": {"type": "openai"}}},
                {"stage": "ai-statistics"}
            ]}),
            KNOWN,
        )
        .unwrap();
        assert_eq!(chain[0].stage, "ai-proxy");
        assert_eq!(chain[0].config["provider"]["type"], "openai");
        assert_eq!(chain[1].stage, "ai-statistics");
        assert_eq!(chain[1].config, Value::Null);
    }

    #[test]
    fn mistakes_name_the_entry() {
        let err = |config: Value| parse_chain(&config, KNOWN).unwrap_err();
        assert!(err(json!({})).contains("`stages`"));
        assert!(err(json!({"stages": [{"stage": "ai-cash"}]})).contains("stages[0].stage"));
        assert!(
            err(json!({"stages": [{"stage": "ai-proxy"}, {"stage": "ai-proxy"}]}))
                .contains("twice")
        );
        assert!(
            err(json!({"stages": [{"stage": "ai-proxy", "config": []}]}))
                .contains("stages[0].config")
        );
        assert!(err(json!({"stages": [], "provider": {}})).contains("`provider`"));
    }
}
