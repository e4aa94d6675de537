//! The same tests on the suite module: with `AIGW_SUITE=1`, every wasm filter of a plugin the
//! suite has runs as `ai-gateway.wasm` instead, with that plugin as its stage and the same
//! JSON. Adjacent filters become one filter (one VM, one parse) unless a route names one of
//! them in `typed_per_filter_config` (a per-filter switch the suite keeps by keeping the
//! filter), or the run would hold a stage twice.

use crate::paths;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The stages of `plugins/ai-gateway` (its `STAGES`).
pub const STAGES: &[&str] = &[
    "ai-statistics",
    "ai-token-ratelimit",
    "ai-content-safety",
    "ai-cache",
    "ai-fallback",
    "ai-proxy",
];

pub fn enabled() -> bool {
    std::env::var("AIGW_SUITE").is_ok_and(|v| v == "1")
}

/// The plugin a wasm module path is a build of, when the suite has it: `…/ai_proxy.v3.wasm`.
fn suite_plugin(filename: &str) -> Option<&'static str> {
    let file = Path::new(filename).file_name()?.to_str()?;
    let stem = file.split('.').next()?;
    STAGES
        .iter()
        .copied()
        .find(|plugin| plugin.replace('-', "_") == stem)
}

/// A plugin's build or a copy of it (not a module a test made, such as a corrupt one).
fn suite_build(filename: &str) -> Option<&'static str> {
    let plugin = suite_plugin(filename)?;
    let built = paths::plugin_wasm_path(plugin);
    if Path::new(filename) == built {
        return Some(plugin);
    }
    let same = std::fs::read(filename).ok()? == std::fs::read(&built).ok()?;
    same.then_some(plugin)
}

/// The suite module standing in for `filename`: the build itself for a plugin's build, and a
/// copy beside a versioned file (Envoy loads a new module when the path changes).
fn suite_module(filename: &str) -> PathBuf {
    let built = paths::plugin_wasm_path("ai-gateway");
    let original = Path::new(filename);
    if original == paths::plugin_wasm_path(suite_plugin(filename).unwrap_or("ai-gateway")) {
        return built;
    }
    let file = original
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("module.wasm");
    let copy = original.with_file_name(format!("ai_gateway.{file}"));
    if !copy.exists() {
        std::fs::copy(&built, &copy).expect("copy of the suite module");
    }
    copy
}

/// The wasm `config` of a filter or ECDS resource, when it loads a plugin the suite has.
fn plugin_of(wasm: &Value) -> Option<&'static str> {
    if wasm["@type"] != WASM_TYPE {
        return None;
    }
    suite_build(wasm["config"]["vm_config"]["code"]["local"]["filename"].as_str()?)
}

fn configuration_of(wasm: &Value) -> Value {
    let text = wasm["config"]["configuration"]["value"]
        .as_str()
        .unwrap_or("");
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).expect("a plugin's configuration is JSON")
    }
}

/// One suite config running `stages` (plugin, its typed config) in order, named `name`.
fn suite_wasm(name: &str, stages: &[(&'static str, Value)]) -> Value {
    let first = &stages[0].1;
    let chain: Vec<Value> = stages
        .iter()
        .map(|(plugin, wasm)| json!({"stage": plugin, "config": configuration_of(wasm)}))
        .collect();
    let filename = first["config"]["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .unwrap_or_default();
    let mut wasm = first.clone();
    let config = &mut wasm["config"];
    config["name"] = json!(name);
    config["root_id"] = json!(name);
    config["vm_config"]["vm_id"] = json!(format!("ai-gateway:{name}"));
    config["vm_config"]["code"]["local"]["filename"] = json!(suite_module(filename));
    config["configuration"]["value"] = json!(json!({"stages": chain}).to_string());
    config["allow_on_headers_stop_iteration"] = json!(stages
        .iter()
        .any(|(_, w)| w["config"]["allow_on_headers_stop_iteration"] == true));
    wasm
}

/// Rewrites an Envoy bootstrap (as the harness builds it, with its ECDS resources).
pub fn rewrite_config(config: &mut Value) {
    paths::plugin_wasm("ai-gateway"); // fails clearly when the suite module is not built
    // ECDS resources first: they are lists of filters too, but each keeps its own shape.
    if let Some(Value::Object(resources)) = config.get_mut(crate::config::ECDS_KEY) {
        resources.values_mut().for_each(rewrite_resource);
    }
    let mut pinned = HashSet::new();
    per_filter_names(config, &mut pinned);
    rewrite_filter_lists(config, &pinned);
}

/// Rewrites an ECDS resource (a `TypedExtensionConfig` list) of a plugin the suite has.
pub fn rewrite_resource(resource: &mut Value) {
    let Some(Value::Array(items)) = resource.get_mut("resources") else {
        return;
    };
    for item in items {
        let wasm = &item["typed_config"];
        let Some(plugin) = plugin_of(wasm) else {
            continue;
        };
        let name = wasm["config"]["name"]
            .as_str()
            .unwrap_or(plugin)
            .to_string();
        item["typed_config"] = suite_wasm(&name, &[(plugin, wasm.clone())]);
    }
}

fn per_filter_names(value: &Value, names: &mut HashSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                if key == "typed_per_filter_config" {
                    if let Some(filters) = inner.as_object() {
                        names.extend(filters.keys().cloned());
                    }
                }
                per_filter_names(inner, names);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| per_filter_names(v, names)),
        _ => {}
    }
}

fn rewrite_filter_lists(value: &mut Value, pinned: &HashSet<String>) {
    match value {
        Value::Array(items)
            if items
                .iter()
                .any(|f| plugin_of(&f["typed_config"]).is_some()) =>
        {
            *items = merged(std::mem::take(items), pinned);
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| rewrite_filter_lists(v, pinned)),
        Value::Object(object) => object
            .values_mut()
            .for_each(|v| rewrite_filter_lists(v, pinned)),
        _ => {}
    }
}

/// A filter list with each run of adjacent suite filters made one suite filter.
fn merged(filters: Vec<Value>, pinned: &HashSet<String>) -> Vec<Value> {
    let mut out = Vec::with_capacity(filters.len());
    let mut run: Vec<(String, &'static str, Value)> = Vec::new();
    let flush = |run: &mut Vec<(String, &'static str, Value)>, out: &mut Vec<Value>| {
        if run.is_empty() {
            return;
        }
        let name = run
            .iter()
            .map(|(n, _, _)| n.as_str())
            .collect::<Vec<_>>()
            .join("+");
        let stages: Vec<(&'static str, Value)> = run
            .drain(..)
            .map(|(_, plugin, wasm)| (plugin, wasm))
            .collect();
        out.push(json!({"name": name, "typed_config": suite_wasm(&name, &stages)}));
    };
    for filter in filters {
        let Some(plugin) = plugin_of(&filter["typed_config"]) else {
            flush(&mut run, &mut out);
            out.push(filter);
            continue;
        };
        let name = filter["name"].as_str().unwrap_or(plugin).to_string();
        let alone = pinned.contains(&name);
        if alone || run.iter().any(|(_, p, _)| *p == plugin) {
            flush(&mut run, &mut out);
        }
        run.push((name, plugin, filter["typed_config"].clone()));
        if alone {
            flush(&mut run, &mut out);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_recognised_by_their_file_name() {
        assert_eq!(
            suite_plugin("/t/wasm32-wasip1/release/ai_proxy.wasm"),
            Some("ai-proxy")
        );
        assert_eq!(suite_plugin("/run/wasm/ai_proxy.v3.wasm"), Some("ai-proxy"));
        assert_eq!(suite_plugin("/t/panic_on_demand.wasm"), None);
    }

    fn filter(name: &str, plugin: &str) -> Value {
        json!({"name": name, "typed_config": {"@type": WASM_TYPE, "config": {
            "vm_config": {"code": {"local": {"filename": paths::plugin_wasm_path(plugin)}}},
            "configuration": {"value": "{}"}}}})
    }

    #[test]
    fn adjacent_suite_filters_become_one_unless_pinned_or_repeated() {
        let statistics = filter("stats", "ai-statistics");
        let proxy = filter("proxy", "ai-proxy");
        let router = json!({"name": "envoy.filters.http.router"});
        let names = |list: &[Value]| -> Vec<String> {
            list.iter()
                .map(|f| f["name"].as_str().unwrap().to_string())
                .collect()
        };

        let one = merged(
            vec![statistics.clone(), proxy.clone(), router.clone()],
            &HashSet::new(),
        );
        assert_eq!(names(&one), ["stats+proxy", "envoy.filters.http.router"]);
        let chain: Value = serde_json::from_str(
            one[0]["typed_config"]["config"]["configuration"]["value"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(chain["stages"][0]["stage"], "ai-statistics");
        assert_eq!(chain["stages"][1]["stage"], "ai-proxy");

        let pinned = HashSet::from(["proxy".to_string()]);
        let apart = merged(vec![statistics.clone(), proxy.clone()], &pinned);
        assert_eq!(names(&apart), ["stats", "proxy"]);

        let twice = merged(vec![proxy.clone(), proxy], &HashSet::new());
        assert_eq!(twice.len(), 2);
    }
}
