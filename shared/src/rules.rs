//! Per-route configuration in the Higress `_rules_` format.
//!
//! ```json
//! { "key": "global", "_rules_": [ { "_match_domain_": ["*.example.com"], "key": "override" } ] }
//! ```
//!
//! Rules are tried in order and the first match wins; no match falls back to the global config
//! (the keys beside `_rules_`), and no global config means the plugin does nothing. A rule's own
//! keys are laid over the global keys before the plugin parses them. Matchers:
//! `_match_route_` (route names), `_match_route_prefix_`, `_match_domain_` (exact, `*suffix`,
//! `prefix*`, port and case ignored), `_match_service_` (cluster name, or Istio's `fqdn` / `fqdn:port`);
//! a rule with routes and services needs both, as in Higress. Lookups are hash probes whose
//! number depends on the request's keys, never on the number of rules.

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

pub const RULES_KEY: &str = "_rules_";
pub const MATCH_ROUTE: &str = "_match_route_";
pub const MATCH_ROUTE_PREFIX: &str = "_match_route_prefix_";
pub const MATCH_DOMAIN: &str = "_match_domain_";
pub const MATCH_SERVICE: &str = "_match_service_";

/// What a request is matched by, read once per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestKeys<'a> {
    /// `xds.route_name`
    pub route: &'a str,
    /// `:authority` / `request.host`, port included or not
    pub host: &'a str,
    /// `xds.cluster_name`
    pub service: &'a str,
}

/// A configuration error with the JSON path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The same error seen from a parent object: `parent.path`.
    pub fn under(self, parent: &str) -> Self {
        let path = match (parent.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => parent.to_string(),
            (false, false) if self.path.starts_with('[') => format!("{parent}{}", self.path),
            (false, false) => format!("{parent}.{}", self.path),
        };
        ConfigError { path, ..self }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks a filter-state name from a config (`log_key`, read in access logs as
/// `%FILTER_STATE(wasm.<name>:PLAIN)%`): letters, digits, `_` and `.` only.
pub fn check_log_key(name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            "log_key",
            "must be letters, digits, '_' or '.'",
        ))
    }
}

/// Deserialises one config object; errors carry the JSON path of the offending key.
pub fn parse_object<T: serde::de::DeserializeOwned>(
    map: &Map<String, Value>,
) -> Result<T, ConfigError> {
    let bytes = serde_json::to_vec(map).map_err(|e| ConfigError::new("", e.to_string()))?;
    crate::json::parse(&bytes).map_err(|e| ConfigError::new(e.path, e.message))
}

/// Removes the keys in `ignored` (each with why it means nothing here) from a plugin config:
/// its global keys and every rule. Configs moved over from Higress carry such keys. Returns
/// the ones found, each once.
pub fn strip_ignored_keys<'a>(
    config: &mut Value,
    ignored: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut found = Vec::new();
    let mut strip = |object: &mut Map<String, Value>| {
        for &(key, why) in ignored {
            if object.remove(key).is_some() && !found.contains(&(key, why)) {
                found.push((key, why));
            }
        }
    };
    let Value::Object(global) = config else {
        return found;
    };
    strip(global);
    if let Some(Value::Array(rules)) = global.get_mut(RULES_KEY) {
        for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
            strip(rule);
        }
    }
    found
}

/// Keys to probe for one kind of affix match (`*suffix` or `prefix*`).
#[derive(Debug, Default)]
struct AffixIndex {
    first_rule: HashMap<String, usize>,
    /// Distinct affix lengths, so a lookup probes once per length, not once per rule.
    lengths: BTreeSet<usize>,
}

impl AffixIndex {
    fn insert(&mut self, affix: &str, rule: usize) {
        self.lengths.insert(affix.len());
        self.first_rule.entry(affix.to_string()).or_insert(rule);
    }

    fn best_prefix(&self, s: &str) -> Option<usize> {
        self.lengths
            .iter()
            .take_while(|&&n| n <= s.len())
            .filter(|&&n| s.is_char_boundary(n))
            .filter_map(|&n| self.first_rule.get(&s[..n]).copied())
            .min()
    }

    fn best_suffix(&self, s: &str) -> Option<usize> {
        self.lengths
            .iter()
            .take_while(|&&n| n <= s.len())
            .filter(|&&n| s.is_char_boundary(s.len() - n))
            .filter_map(|&n| self.first_rule.get(&s[s.len() - n..]).copied())
            .min()
    }
}

/// Parsed `_rules_` plus the global config, with O(1) lookup.
#[derive(Debug)]
pub struct RuleSet<T> {
    global: Option<Rc<T>>,
    rules: Vec<Rc<T>>,
    routes: HashMap<String, usize>,
    route_prefixes: AffixIndex,
    /// Rules naming both routes and services: route → (rule, services) in rule order.
    route_and_service: HashMap<String, Vec<(usize, Vec<String>)>>,
    hosts: HashMap<String, usize>,
    host_suffixes: AffixIndex,
    host_prefixes: AffixIndex,
    services: HashMap<String, usize>,
}

impl<T> RuleSet<T> {
    /// Parses a plugin configuration. `parse` turns one merged JSON object into the plugin's
    /// config; its errors are reported with their place in the document.
    pub fn parse(
        config: &Value,
        parse: impl Fn(&Map<String, Value>) -> Result<T, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let empty = Map::new();
        let object = match config {
            Value::Object(map) => map,
            Value::Null => &empty,
            _ => return Err(ConfigError::new("", "configuration must be a JSON object")),
        };
        let mut global_keys = object.clone();
        let rules_json = match global_keys.remove(RULES_KEY) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(rules)) => rules,
            Some(_) => return Err(ConfigError::new(RULES_KEY, "must be an array")),
        };

        // As in Higress: an empty config enables the plugin everywhere with defaults; global keys
        // that do not parse on their own are fine when rules complete them.
        let global = if global_keys.is_empty() && !rules_json.is_empty() {
            None
        } else {
            match parse(&global_keys) {
                Ok(global) => Some(Rc::new(global)),
                Err(err) if rules_json.is_empty() => return Err(err),
                Err(err) => {
                    log::info!("global config not used on its own ({err}); only _rules_ apply");
                    None
                }
            }
        };

        let mut set = RuleSet {
            global,
            rules: Vec::with_capacity(rules_json.len()),
            routes: HashMap::new(),
            route_prefixes: AffixIndex::default(),
            route_and_service: HashMap::new(),
            hosts: HashMap::new(),
            host_suffixes: AffixIndex::default(),
            host_prefixes: AffixIndex::default(),
            services: HashMap::new(),
        };
        for (index, rule) in rules_json.iter().enumerate() {
            let path = format!("{RULES_KEY}[{index}]");
            let Value::Object(rule) = rule else {
                return Err(ConfigError::new(path, "a rule must be a JSON object"));
            };
            let matchers = Matchers::from_rule(rule).map_err(|e| e.under(&path))?;
            let mut merged = global_keys.clone();
            for (key, value) in rule {
                if !key.starts_with("_match_") {
                    merged.insert(key.clone(), value.clone());
                }
            }
            let config = parse(&merged).map_err(|e| e.under(&path))?;
            set.rules.push(Rc::new(config));
            set.index(index, matchers);
        }
        Ok(set)
    }

    fn index(&mut self, rule: usize, m: Matchers) {
        if !m.routes.is_empty() && !m.services.is_empty() {
            for route in m.routes {
                self.route_and_service
                    .entry(route)
                    .or_default()
                    .push((rule, m.services.clone()));
            }
        } else if !m.routes.is_empty() {
            for route in m.routes {
                self.routes.entry(route).or_insert(rule);
            }
        } else if !m.domains.is_empty() {
            for domain in m.domains {
                if let Some(suffix) = domain.strip_prefix('*') {
                    self.host_suffixes.insert(suffix, rule);
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    self.host_prefixes.insert(prefix, rule);
                } else {
                    self.hosts.entry(domain).or_insert(rule);
                }
            }
        } else if !m.services.is_empty() {
            for service in m.services {
                self.services.entry(service).or_insert(rule);
            }
        } else {
            for prefix in m.route_prefixes {
                self.route_prefixes.insert(&prefix, rule);
            }
        }
    }

    /// The config for a request: the first matching rule, else the global config, else `None`.
    pub fn get(&self, keys: &RequestKeys) -> Option<Rc<T>> {
        match self.first_match(keys) {
            Some(rule) => Some(self.rules[rule].clone()),
            None => self.global.clone(),
        }
    }

    /// Index of the first rule matching the request.
    pub fn first_match(&self, keys: &RequestKeys) -> Option<usize> {
        // Host names are case-insensitive; configured domains are stored lower-case.
        let host = strip_port(keys.host);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let service_keys = service_lookup_keys(keys.service);
        let candidates = [
            self.routes.get(keys.route).copied(),
            self.route_prefixes.best_prefix(keys.route),
            self.hosts.get(host).copied(),
            self.host_suffixes.best_suffix(host),
            self.host_prefixes.best_prefix(host),
            service_keys
                .iter()
                .filter_map(|k| self.services.get(k.as_str()).copied())
                .min(),
            self.route_and_service.get(keys.route).and_then(|rules| {
                rules
                    .iter()
                    .find(|(_, services)| services.iter().any(|s| service_keys.contains(s)))
                    .map(|(rule, _)| *rule)
            }),
        ];
        candidates.into_iter().flatten().min()
    }

    /// Whether any rule matches on the host, so callers can skip reading it otherwise.
    pub fn uses_host(&self) -> bool {
        !(self.hosts.is_empty()
            && self.host_suffixes.first_rule.is_empty()
            && self.host_prefixes.first_rule.is_empty())
    }

    /// Whether any rule matches on the route name (callers skip reading it otherwise).
    pub fn uses_route(&self) -> bool {
        !(self.routes.is_empty()
            && self.route_prefixes.first_rule.is_empty()
            && self.route_and_service.is_empty())
    }

    /// Whether any rule matches on the upstream cluster (service).
    pub fn uses_service(&self) -> bool {
        !(self.services.is_empty() && self.route_and_service.is_empty())
    }

    pub fn global(&self) -> Option<&Rc<T>> {
        self.global.as_ref()
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

struct Matchers {
    routes: Vec<String>,
    route_prefixes: Vec<String>,
    domains: Vec<String>,
    services: Vec<String>,
}

impl Matchers {
    fn from_rule(rule: &Map<String, Value>) -> Result<Self, ConfigError> {
        let list = |key: &str| -> Result<Vec<String>, ConfigError> {
            match rule.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .filter(|(_, item)| item.as_str() != Some(""))
                    .map(|(i, item)| {
                        item.as_str().map(str::to_string).ok_or_else(|| {
                            ConfigError::new(format!("{key}[{i}]"), "must be a string")
                        })
                    })
                    .collect(),
                Some(_) => Err(ConfigError::new(key, "must be an array of strings")),
            }
        };
        let m = Matchers {
            routes: list(MATCH_ROUTE)?,
            route_prefixes: list(MATCH_ROUTE_PREFIX)?,
            domains: list(MATCH_DOMAIN)?
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            services: list(MATCH_SERVICE)?,
        };
        if m.routes.is_empty()
            && m.route_prefixes.is_empty()
            && m.domains.is_empty()
            && m.services.is_empty()
        {
            return Err(ConfigError::new(
                "",
                "a rule needs one of _match_route_, _match_route_prefix_, _match_domain_, _match_service_",
            ));
        }
        Ok(m)
    }
}

/// `host:port` → `host`, leaving IPv6 literals (`[::1]`) intact.
pub fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon) if host.rfind(']').is_none_or(|bracket| bracket < colon) => &host[..colon],
        _ => host,
    }
}

/// The names a cluster is known by: itself, and for Istio's `outbound|port||fqdn`, `fqdn` and
/// `fqdn:port`.
fn service_lookup_keys(cluster: &str) -> Vec<String> {
    let mut keys = vec![cluster.to_string()];
    let parts: Vec<&str> = cluster.split('|').collect();
    if let [_, port, _, fqdn] = parts[..] {
        keys.push(fqdn.to_string());
        keys.push(format!("{fqdn}:{port}"));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn ignored_keys_are_stripped_everywhere_and_reported_once() {
        let ignored = [("protocol", "why"), ("bufferSize", "why not")];
        let mut config = json!({"protocol": "openai", "name": "g", "_rules_": [
            {"_match_route_": ["r"], "protocol": "original", "name": "r"}, {"name": "s"}]});
        let found = strip_ignored_keys(&mut config, &ignored);
        assert_eq!(found, vec![("protocol", "why")]);
        assert_eq!(
            config,
            json!({"name": "g", "_rules_": [{"_match_route_": ["r"], "name": "r"}, {"name": "s"}]})
        );
    }

    fn name_of(map: &Map<String, Value>) -> Result<String, ConfigError> {
        match map.get("name") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ConfigError::new("name", "must be a string")),
            None => Err(ConfigError::new("name", "is required")),
        }
    }

    fn keys<'a>(route: &'a str, host: &'a str, service: &'a str) -> RequestKeys<'a> {
        RequestKeys {
            route,
            host,
            service,
        }
    }

    fn lookup(set: &RuleSet<String>, k: RequestKeys) -> Option<String> {
        set.get(&k).map(|c| (*c).clone())
    }

    #[test]
    fn global_only() {
        let set = RuleSet::parse(&json!({"name": "g"}), name_of).unwrap();
        assert_eq!(lookup(&set, keys("r", "h", "s")).as_deref(), Some("g"));
        assert!(!set.uses_host());
    }

    #[test]
    fn rules_without_global_do_nothing_when_unmatched() {
        let set = RuleSet::parse(
            &json!({"_rules_": [{"_match_route_": ["a"], "name": "ra"}]}),
            name_of,
        )
        .unwrap();
        assert_eq!(lookup(&set, keys("a", "", "")).as_deref(), Some("ra"));
        assert_eq!(lookup(&set, keys("b", "", "")), None);
    }

    #[test]
    fn rule_keys_override_global_keys() {
        let set = RuleSet::parse(
            &json!({"name": "g", "other": 1, "_rules_": [{"_match_route_": ["a"], "name": "ra"}]}),
            |m: &Map<String, Value>| Ok((name_of(m)?, m.get("other").cloned())),
        )
        .unwrap();
        let (name, other) = (*set.get(&keys("a", "", "")).unwrap()).clone();
        assert_eq!(name, "ra");
        assert_eq!(other, Some(json!(1)));
    }

    #[test]
    fn domain_matching_like_higress() {
        let set = RuleSet::parse(
            &json!({"_rules_": [
                {"_match_domain_": ["api.foo.com"], "name": "exact"},
                {"_match_domain_": ["*.example.com"], "name": "wild"},
                {"_match_domain_": ["www.*"], "name": "prefix"},
                {"_match_domain_": ["*"], "name": "any"}
            ]}),
            name_of,
        )
        .unwrap();
        let host = |h| lookup(&set, keys("", h, "")).unwrap();
        assert_eq!(host("api.foo.com:8443"), "exact");
        assert_eq!(
            host("API.Foo.com"),
            "exact",
            "host names are case-insensitive"
        );
        assert_eq!(host("a.b.example.com"), "wild");
        assert_eq!(
            host("example.com"),
            "any",
            "*.example.com needs a subdomain"
        );
        assert_eq!(host("www.example.com"), "wild", "earlier rule wins");
        assert_eq!(host("www.other.org"), "prefix");
        assert_eq!(host("[::1]:80"), "any");
    }

    #[test]
    fn first_match_in_order_wins_across_matcher_kinds() {
        let set = RuleSet::parse(
            &json!({"name": "g", "_rules_": [
                {"_match_service_": ["outbound|443||api.openai.com"], "name": "svc"},
                {"_match_route_": ["chat"], "name": "route"},
                {"_match_route_prefix_": ["ch"], "name": "prefix"},
                {"_match_domain_": ["*"], "name": "any"}
            ]}),
            name_of,
        )
        .unwrap();
        assert_eq!(
            lookup(&set, keys("chat", "h", "outbound|443||api.openai.com")).unwrap(),
            "svc"
        );
        assert_eq!(lookup(&set, keys("chat", "h", "other")).unwrap(), "route");
        assert_eq!(
            lookup(&set, keys("chatty", "h", "other")).unwrap(),
            "prefix"
        );
        assert_eq!(lookup(&set, keys("x", "h", "other")).unwrap(), "any");
    }

    #[test]
    fn service_matches_cluster_name_fqdn_and_port() {
        let set = RuleSet::parse(
            &json!({"_rules_": [
                {"_match_service_": ["api.openai.com:443"], "name": "port"},
                {"_match_service_": ["api.anthropic.com"], "name": "fqdn"},
                {"_match_service_": ["openai"], "name": "plain"}
            ]}),
            name_of,
        )
        .unwrap();
        let svc = |s| lookup(&set, keys("", "", s));
        assert_eq!(svc("outbound|443||api.openai.com").as_deref(), Some("port"));
        assert_eq!(svc("outbound|80||api.openai.com"), None);
        assert_eq!(
            svc("outbound|443||api.anthropic.com").as_deref(),
            Some("fqdn")
        );
        assert_eq!(svc("openai").as_deref(), Some("plain"));
    }

    #[test]
    fn route_and_service_rule_needs_both() {
        let set = RuleSet::parse(
            &json!({"_rules_": [
                {"_match_route_": ["r"], "_match_service_": ["s"], "name": "both"}
            ]}),
            name_of,
        )
        .unwrap();
        assert_eq!(lookup(&set, keys("r", "", "s")).as_deref(), Some("both"));
        assert_eq!(lookup(&set, keys("r", "", "t")), None);
        assert_eq!(lookup(&set, keys("q", "", "s")), None);
    }

    #[test]
    fn errors_name_the_rule_and_key() {
        let err = RuleSet::parse(
            &json!({"_rules_": [{"_match_route_": ["a"], "name": "ok"}, {"_match_route_": ["b"], "name": 3}]}),
            name_of,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "_rules_[1].name: must be a string");
        let err = RuleSet::parse(&json!({"_rules_": [{"name": "x"}]}), name_of).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("_rules_[0]: a rule needs one of"));
        let err =
            RuleSet::parse(&json!({"_rules_": [{"_match_domain_": "x"}]}), name_of).unwrap_err();
        assert_eq!(
            err.to_string(),
            "_rules_[0]._match_domain_: must be an array of strings"
        );
        let err = RuleSet::parse(&json!({"name": 1}), name_of).unwrap_err();
        assert_eq!(err.to_string(), "name: must be a string");
    }

    #[test]
    fn ten_thousand_rules_load_and_resolve() {
        let mut rules = Vec::new();
        for i in 0..10_000 {
            let rule = match i % 4 {
                0 => {
                    json!({"_match_domain_": [format!("tenant{i}.example.com")], "name": format!("d{i}")})
                }
                1 => {
                    json!({"_match_domain_": [format!("*.t{i}.example.org")], "name": format!("w{i}")})
                }
                2 => json!({"_match_route_": [format!("route-{i}")], "name": format!("r{i}")}),
                _ => json!({"_match_service_": [format!("svc{i}.ns:80")], "name": format!("s{i}")}),
            };
            rules.push(rule);
        }
        let set = RuleSet::parse(&json!({"name": "g", "_rules_": rules}), name_of).unwrap();
        assert_eq!(set.rule_count(), 10_000);
        assert!(set.uses_host());
        assert_eq!(
            lookup(&set, keys("", "tenant9996.example.com", "")).unwrap(),
            "d9996"
        );
        assert_eq!(
            lookup(&set, keys("", "a.b.t9997.example.org:443", "")).unwrap(),
            "w9997"
        );
        assert_eq!(lookup(&set, keys("route-9998", "", "")).unwrap(), "r9998");
        assert_eq!(
            lookup(&set, keys("", "", "outbound|80||svc9999.ns")).unwrap(),
            "s9999"
        );
        assert_eq!(
            lookup(&set, keys("route-x", "nobody.example.com", "")).unwrap(),
            "g"
        );
        // Wildcard suffixes of one length share a single probe.
        assert!(set.host_suffixes.lengths.len() < 10);
    }

    #[test]
    fn null_and_empty_config_enable_global_defaults() {
        let set = RuleSet::parse(&json!({}), |_| Ok("default".to_string())).unwrap();
        assert_eq!(lookup(&set, keys("", "", "")).as_deref(), Some("default"));
        let set = RuleSet::parse(&Value::Null, |_| Ok("default".to_string())).unwrap();
        assert!(set.global().is_some());
        assert!(RuleSet::parse(&json!([1]), |_| Ok(())).is_err());
    }
}
