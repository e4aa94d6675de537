//! Configuration of ai-token-ratelimit (one object, global or per `_rules_` entry), in the shape
//! of Higress's ai-token-ratelimit: `rule_name` with `rule_items` or `global_threshold`, plus the
//! windows, request rates and concurrency limits Higress lacks.

use crate::charge::AbortCharge;
use crate::ipnet::IpNet;
use aigw_shared::body::DEFAULT_BODY_LIMIT;
use aigw_shared::callout::FailurePolicy;
use aigw_shared::quota::redis::RedisConfig;
use aigw_shared::quota::window::{Kind, Window, PERIODS};
use aigw_shared::quota::Limits;
use aigw_shared::rules::{check_log_key, parse_object, ConfigError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::rc::Rc;
use std::time::Duration;

#[derive(Debug)]
pub struct Config {
    /// Every rule whose items match a request must admit it.
    pub rules: Vec<Rule>,
    pub consumer_header: String,
    pub rejected_code: u16,
    pub rejected_msg: Option<String>,
    pub store: Store,
    pub failure_policy: FailurePolicy,
    /// Output tokens reserved when a request sets neither `max_tokens` nor `max_completion_tokens`.
    pub default_max_tokens: u64,
    pub max_body_bytes: usize,
    pub log_key: String,
    /// How long a concurrency slot stays taken if its request never reports its end (a crashed
    /// proxy, a lost connection to the store).
    pub lease_seconds: u64,
    /// Some rule limits by the connection's peer address (read only then).
    pub reads_peer: bool,
    /// Some rule limits by consumer.
    pub reads_consumer: bool,
    pub anonymous_consumers: AnonymousConsumers,
    pub abort_before_response: AbortCharge,
}

/// What consumer rules do with a request whose consumer header is missing, empty or blank.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnonymousConsumers {
    /// Such requests share the quota of one consumer, [`aigw_shared::consumer::ANONYMOUS`].
    #[default]
    Share,
    /// Such requests are refused with a 401.
    Deny,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub scope: Scope,
}

#[derive(Debug)]
pub enum Scope {
    /// One set of counters for every request the rule applies to.
    Global(Limits),
    /// The first item whose source value matches one of its keys applies.
    Items(Vec<Item>),
}

#[derive(Debug)]
pub struct Item {
    pub source: Source,
    pub keys: Vec<KeyLimits>,
}

/// Where an item reads the value it limits by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Header(String),
    Param(String),
    Consumer,
    Cookie(String),
    /// The client address: the connection's peer, or the first entry of a header.
    Ip(Option<String>),
}

#[derive(Debug)]
pub struct KeyLimits {
    pub pattern: Pattern,
    pub limits: Limits,
}

#[derive(Debug)]
pub enum Pattern {
    Exact(String),
    Any,
    Regex(regex_lite::Regex),
    Net(IpNet),
}

#[derive(Debug, Clone)]
pub enum Store {
    /// Envoy shared data: every worker of one Envoy.
    Local,
    /// Redis through Webdis: every Envoy using the same Redis.
    Redis(Rc<RedisConfig>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rule_name: Option<String>,
    rule_items: Option<Vec<RawItem>>,
    global_threshold: Option<RawLimits>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default = "default_consumer_header")]
    consumer_header: String,
    #[serde(default = "default_rejected_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
    redis: Option<RawRedis>,
    #[serde(default)]
    failure_policy: FailurePolicy,
    #[serde(default = "default_max_tokens")]
    default_max_tokens: u64,
    #[serde(default = "default_body_bytes")]
    max_body_bytes: usize,
    #[serde(default = "default_log_key")]
    log_key: String,
    #[serde(default = "default_lease_seconds")]
    lease_seconds: u64,
    #[serde(default)]
    anonymous_consumers: AnonymousConsumers,
    #[serde(default)]
    abort_before_response: AbortCharge,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    rule_name: Option<String>,
    rule_items: Option<Vec<RawItem>>,
    global_threshold: Option<RawLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    limit_by_header: Option<String>,
    limit_by_param: Option<String>,
    limit_by_consumer: Option<String>,
    limit_by_cookie: Option<String>,
    limit_by_per_header: Option<String>,
    limit_by_per_param: Option<String>,
    limit_by_per_consumer: Option<String>,
    limit_by_per_cookie: Option<String>,
    limit_by_per_ip: Option<String>,
    #[serde(default)]
    limit_keys: Vec<RawLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// A string, or a number as YAML users write it (`key: 102234`).
    key: Option<Value>,
    limit_type: Option<LimitType>,
    token_per_second: Option<u64>,
    token_per_minute: Option<u64>,
    token_per_hour: Option<u64>,
    token_per_day: Option<u64>,
    query_per_second: Option<u64>,
    query_per_minute: Option<u64>,
    query_per_hour: Option<u64>,
    query_per_day: Option<u64>,
    max_concurrent_requests: Option<u64>,
}

/// Higress's `limit_type`: `request` makes `token_per_*` count requests.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LimitType {
    Token,
    Request,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    service_name: String,
    /// Part of the cluster name in Higress; here the cluster is named by `service_name`.
    #[allow(dead_code)]
    service_port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    #[serde(default = "default_redis_timeout")]
    timeout: u64,
    #[serde(default)]
    database: u32,
}

fn default_consumer_header() -> String {
    "x-mse-consumer".into()
}
fn default_rejected_code() -> u16 {
    429
}
fn default_max_tokens() -> u64 {
    1024
}
fn default_body_bytes() -> usize {
    DEFAULT_BODY_LIMIT
}
fn default_log_key() -> String {
    "ai_token_ratelimit".into()
}
fn default_lease_seconds() -> u64 {
    600
}
fn default_redis_timeout() -> u64 {
    1000
}

impl Config {
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_object(map)?;
        let mut rules = Vec::new();
        if raw.rule_name.is_some() || raw.rule_items.is_some() || raw.global_threshold.is_some() {
            let top = RawRule {
                rule_name: raw.rule_name,
                rule_items: raw.rule_items,
                global_threshold: raw.global_threshold,
            };
            rules.push(Rule::parse(top)?);
        }
        for (i, rule) in raw.rules.into_iter().enumerate() {
            rules.push(Rule::parse(rule).map_err(|e| e.under(&format!("rules[{i}]")))?);
        }
        if rules.is_empty() {
            return Err(ConfigError::new(
                "",
                "a rule is required: rule_name with rule_items or global_threshold",
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            if rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(ConfigError::new(
                    "rule_name",
                    format!("{:?} is used by two rules", rule.name),
                ));
            }
        }
        if !(200..=599).contains(&raw.rejected_code) {
            return Err(ConfigError::new("rejected_code", "must be 200 to 599"));
        }
        if raw.consumer_header.trim().is_empty() {
            return Err(ConfigError::new("consumer_header", "must not be empty"));
        }
        check_log_key(&raw.log_key)?;
        if raw.lease_seconds == 0 {
            return Err(ConfigError::new("lease_seconds", "must be at least 1"));
        }
        let store = match raw.redis {
            None => Store::Local,
            Some(redis) => Store::Redis(Rc::new(parse_redis(redis).map_err(|e| e.under("redis"))?)),
        };
        let reads = |source: &Source| {
            rules.iter().any(|rule| match &rule.scope {
                Scope::Items(items) => items.iter().any(|item| item.source == *source),
                Scope::Global(_) => false,
            })
        };
        let reads_peer = reads(&Source::Ip(None));
        let reads_consumer = reads(&Source::Consumer);
        Ok(Config {
            rules,
            reads_peer,
            reads_consumer,
            anonymous_consumers: raw.anonymous_consumers,
            abort_before_response: raw.abort_before_response,
            consumer_header: raw.consumer_header.trim().to_ascii_lowercase(),
            rejected_code: raw.rejected_code,
            rejected_msg: raw.rejected_msg,
            store,
            failure_policy: raw.failure_policy,
            default_max_tokens: raw.default_max_tokens,
            max_body_bytes: raw.max_body_bytes,
            log_key: raw.log_key,
            lease_seconds: raw.lease_seconds,
        })
    }
}

impl Rule {
    fn parse(raw: RawRule) -> Result<Rule, ConfigError> {
        let name = raw
            .rule_name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| ConfigError::new("rule_name", "required"))?;
        let scope = match (raw.rule_items, raw.global_threshold) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "global_threshold",
                    "give rule_items or global_threshold, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "rule_items",
                    "rule_items or global_threshold is required",
                ))
            }
            (None, Some(limits)) => {
                if limits.key.is_some() {
                    return Err(ConfigError::new("global_threshold.key", "not allowed here"));
                }
                Scope::Global(limits.parse().map_err(|e| e.under("global_threshold"))?)
            }
            (Some(items), None) => {
                if items.is_empty() {
                    return Err(ConfigError::new("rule_items", "must not be empty"));
                }
                let items = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        item.parse()
                            .map_err(|e| e.under(&format!("rule_items[{i}]")))
                    })
                    .collect::<Result<_, _>>()?;
                Scope::Items(items)
            }
        };
        Ok(Rule { name, scope })
    }
}

impl RawItem {
    fn parse(self) -> Result<Item, ConfigError> {
        let sources = [
            ("limit_by_header", self.limit_by_header, false),
            ("limit_by_param", self.limit_by_param, false),
            ("limit_by_consumer", self.limit_by_consumer, false),
            ("limit_by_cookie", self.limit_by_cookie, false),
            ("limit_by_per_header", self.limit_by_per_header, true),
            ("limit_by_per_param", self.limit_by_per_param, true),
            ("limit_by_per_consumer", self.limit_by_per_consumer, true),
            ("limit_by_per_cookie", self.limit_by_per_cookie, true),
            ("limit_by_per_ip", self.limit_by_per_ip, true),
        ];
        let mut given = sources.into_iter().filter(|(_, v, _)| v.is_some());
        let Some((kind, Some(value), per_value)) = given.next() else {
            return Err(ConfigError::new(
                "",
                "one of limit_by_header, limit_by_param, limit_by_consumer, limit_by_cookie, limit_by_per_header, limit_by_per_param, limit_by_per_consumer, limit_by_per_cookie, limit_by_per_ip is required",
            ));
        };
        if let Some((other, ..)) = given.next() {
            return Err(ConfigError::new(
                other,
                format!("only one limit_by_* per item; {kind} is already given"),
            ));
        }
        let name = value.trim();
        if name.is_empty() && !kind.ends_with("consumer") {
            return Err(ConfigError::new(
                kind,
                "must name the header, parameter or cookie",
            ));
        }
        let source = match kind
            .trim_start_matches("limit_by_")
            .trim_start_matches("per_")
        {
            "header" => Source::Header(name.to_ascii_lowercase()),
            // Parameter and cookie names are case-sensitive.
            "param" => Source::Param(name.to_string()),
            "cookie" => Source::Cookie(name.to_string()),
            "consumer" => Source::Consumer,
            _ => {
                if name == "from-remote-addr" {
                    Source::Ip(None)
                } else if let Some(header) =
                    name.strip_prefix("from-header-").filter(|h| !h.is_empty())
                {
                    Source::Ip(Some(header.to_ascii_lowercase()))
                } else {
                    return Err(ConfigError::new(
                        kind,
                        "must be from-remote-addr or from-header-<name>",
                    ));
                }
            }
        };
        if self.limit_keys.is_empty() {
            return Err(ConfigError::new("limit_keys", "must not be empty"));
        }
        let keys = self
            .limit_keys
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let path = format!("limit_keys[{i}]");
                let key = match raw.key.as_ref() {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => {
                        return Err(ConfigError::new(
                            format!("{path}.key"),
                            "required, a string",
                        ))
                    }
                };
                let pattern = Pattern::parse(&key, &source, per_value)
                    .map_err(|reason| ConfigError::new(format!("{path}.key"), reason))?;
                let limits = raw.parse().map_err(|e| e.under(&path))?;
                Ok(KeyLimits { pattern, limits })
            })
            .collect::<Result<_, _>>()?;
        Ok(Item { source, keys })
    }
}

impl Pattern {
    fn parse(key: &str, source: &Source, per_value: bool) -> Result<Pattern, String> {
        if matches!(source, Source::Ip(_)) {
            return if key == "*" {
                Ok(Pattern::Any)
            } else {
                IpNet::parse(key).map(Pattern::Net)
            };
        }
        let pattern = if key == "*" {
            Pattern::Any
        } else if let Some(expr) = key.strip_prefix("regexp:") {
            Pattern::Regex(
                regex_lite::Regex::new(expr)
                    .map_err(|e| format!("invalid regular expression: {e}"))?,
            )
        } else {
            Pattern::Exact(key.to_string())
        };
        if !per_value && !matches!(pattern, Pattern::Exact(_)) {
            return Err("`*` and `regexp:` keys need a limit_by_per_* item".into());
        }
        Ok(pattern)
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(key) => key == value,
            Pattern::Any => true,
            Pattern::Regex(re) => re.is_match(value),
            Pattern::Net(net) => crate::ipnet::client_ip(value).is_some_and(|ip| net.contains(ip)),
        }
    }
}

impl RawLimits {
    fn parse(&self) -> Result<Limits, ConfigError> {
        let token_kind = match self.limit_type {
            Some(LimitType::Request) => Kind::Requests,
            _ => Kind::Tokens,
        };
        let tokens = [
            self.token_per_second,
            self.token_per_minute,
            self.token_per_hour,
            self.token_per_day,
        ];
        let queries = [
            self.query_per_second,
            self.query_per_minute,
            self.query_per_hour,
            self.query_per_day,
        ];
        let mut windows = Vec::new();
        for (kind, limits) in [(token_kind, tokens), (Kind::Requests, queries)] {
            for ((_, period_secs), limit) in PERIODS.iter().zip(limits) {
                let Some(limit) = limit else { continue };
                let window = Window {
                    kind,
                    period_secs: *period_secs,
                    limit,
                };
                if windows
                    .iter()
                    .any(|w: &Window| w.kind == kind && w.period_secs == *period_secs)
                {
                    return Err(ConfigError::new(
                        window.name(),
                        "the same window is limited twice (limit_type: request makes token_per_* count requests)",
                    ));
                }
                windows.push(window);
            }
        }
        if self.max_concurrent_requests == Some(0) {
            return Err(ConfigError::new(
                "max_concurrent_requests",
                "must be at least 1",
            ));
        }
        if windows.is_empty() && self.max_concurrent_requests.is_none() {
            return Err(ConfigError::new(
                "",
                "needs a limit: token_per_*, query_per_* or max_concurrent_requests",
            ));
        }
        Ok(Limits {
            windows,
            max_concurrent: self.max_concurrent_requests,
        })
    }
}

fn parse_redis(raw: RawRedis) -> Result<RedisConfig, ConfigError> {
    if raw.service_name.trim().is_empty() {
        return Err(ConfigError::new(
            "service_name",
            "must name the Envoy cluster of Webdis",
        ));
    }
    if raw.timeout == 0 {
        return Err(ConfigError::new("timeout", "must be at least 1 ms"));
    }
    let authorization = match (raw.username, raw.password) {
        (None, None) => None,
        (user, password) => {
            use base64::Engine;
            let credentials = format!(
                "{}:{}",
                user.unwrap_or_default(),
                password.unwrap_or_default()
            );
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ))
        }
    };
    Ok(RedisConfig {
        cluster: raw.service_name.trim().to_string(),
        timeout: Duration::from_millis(raw.timeout),
        database: raw.database,
        authorization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::rules::{RequestKeys, RuleSet};
    use serde_json::json;

    fn parse(value: Value) -> Result<Config, ConfigError> {
        Config::from_map(value.as_object().unwrap())
    }

    fn error(value: Value) -> String {
        parse(value).unwrap_err().to_string()
    }

    #[test]
    fn higress_config_with_several_windows() {
        let c = parse(json!({
            "rule_name": "default",
            "rule_items": [
                {"limit_by_per_consumer": "", "limit_keys": [
                    {"key": "regexp:^vip-", "token_per_minute": 10000, "token_per_day": 500000},
                    {"key": "*", "token_per_minute": 1000, "query_per_second": 2, "max_concurrent_requests": 3}
                ]},
                {"limit_by_per_ip": "from-header-X-Forwarded-For", "limit_keys": [{"key": "10.0.0.0/8", "token_per_hour": 5}]},
                {"limit_by_header": "x-api-key", "limit_keys": [{"key": 102234, "token_per_minute": 7}]}
            ]
        }))
        .unwrap();
        assert_eq!(c.consumer_header, "x-mse-consumer");
        assert_eq!(c.rejected_code, 429);
        assert!(matches!(c.store, Store::Local));
        let Scope::Items(items) = &c.rules[0].scope else {
            panic!()
        };
        assert_eq!(items[0].source, Source::Consumer);
        let vip = &items[0].keys[0].limits;
        assert_eq!(
            vip.windows,
            vec![
                Window {
                    kind: Kind::Tokens,
                    period_secs: 60,
                    limit: 10000
                },
                Window {
                    kind: Kind::Tokens,
                    period_secs: 86_400,
                    limit: 500000
                },
            ]
        );
        let rest = &items[0].keys[1].limits;
        assert_eq!(rest.max_concurrent, Some(3));
        assert_eq!(
            rest.windows[1],
            Window {
                kind: Kind::Requests,
                period_secs: 1,
                limit: 2
            }
        );
        assert!(items[0].keys[0].pattern.matches("vip-acme"));
        assert!(!items[0].keys[0].pattern.matches("acme"));
        assert_eq!(items[1].source, Source::Ip(Some("x-forwarded-for".into())));
        assert!(items[1].keys[0].pattern.matches("10.2.3.4"));
        assert!(matches!(&items[2].keys[0].pattern, Pattern::Exact(k) if k == "102234"));
        assert!(!c.reads_peer, "the client address comes from a header");
    }

    #[test]
    fn global_threshold_and_more_rules() {
        let c = parse(json!({
            "rule_name": "per-consumer",
            "rule_items": [{"limit_by_per_consumer": "", "limit_keys": [{"key": "*", "token_per_minute": 100}]}],
            "rules": [{"rule_name": "route-total", "global_threshold": {"token_per_minute": 1000, "limit_type": "request"}}],
            "redis": {"service_name": "webdis", "timeout": 50, "username": "u", "password": "p"},
            "failure_policy": "closed"
        }))
        .unwrap();
        assert_eq!(c.rules.len(), 2);
        let Scope::Global(limits) = &c.rules[1].scope else {
            panic!()
        };
        assert_eq!(
            limits.windows[0].kind,
            Kind::Requests,
            "limit_type: request"
        );
        let Store::Redis(redis) = &c.store else {
            panic!()
        };
        assert_eq!(redis.cluster, "webdis");
        assert_eq!(redis.timeout, Duration::from_millis(50));
        assert_eq!(redis.authorization.as_deref(), Some("Basic dTpw"));
        assert_eq!(c.failure_policy, FailurePolicy::Closed);
    }

    #[test]
    fn anonymous_consumers_and_early_aborts() {
        let by_consumer = json!({"rule_name": "r", "rule_items": [{"limit_by_per_consumer": "", "limit_keys": [{"key": "*", "token_per_day": 1}]}]});
        let c = parse(by_consumer.clone()).unwrap();
        assert!(c.reads_consumer && !c.reads_peer);
        assert_eq!(c.anonymous_consumers, AnonymousConsumers::Share);
        assert_eq!(c.abort_before_response, AbortCharge::Reservation);
        let mut strict = by_consumer;
        strict["anonymous_consumers"] = json!("deny");
        strict["abort_before_response"] = json!("prompt");
        let c = parse(strict.clone()).unwrap();
        assert_eq!(c.anonymous_consumers, AnonymousConsumers::Deny);
        assert_eq!(c.abort_before_response, AbortCharge::Prompt);
        strict["anonymous_consumers"] = json!("allow");
        assert!(error(strict).starts_with("anonymous_consumers: unknown variant `allow`"));
        let global =
            parse(json!({"rule_name": "r", "global_threshold": {"token_per_day": 1}})).unwrap();
        assert!(!global.reads_consumer);
    }

    #[test]
    fn mistakes_are_refused_with_their_path() {
        assert_eq!(
            error(json!({})),
            "a rule is required: rule_name with rule_items or global_threshold"
        );
        assert_eq!(
            error(json!({"rule_name": "r", "global_threshold": {}})),
            "global_threshold: needs a limit: token_per_*, query_per_* or max_concurrent_requests"
        );
        assert_eq!(
            error(json!({"rule_name": "r", "rule_items": [{"limit_by_header": "x", "limit_by_param": "y", "limit_keys": [{"key": "a", "token_per_day": 1}]}]})),
            "rule_items[0].limit_by_param: only one limit_by_* per item; limit_by_header is already given"
        );
        assert_eq!(
            error(
                json!({"rule_name": "r", "rule_items": [{"limit_by_header": "x", "limit_keys": [{"key": "*", "token_per_day": 1}]}]})
            ),
            "rule_items[0].limit_keys[0].key: `*` and `regexp:` keys need a limit_by_per_* item"
        );
        assert_eq!(
            error(
                json!({"rule_name": "r", "rule_items": [{"limit_by_per_ip": "from-remote-addr", "limit_keys": [{"key": "10.0.0.0/40", "token_per_day": 1}]}]})
            ),
            "rule_items[0].limit_keys[0].key: \"10.0.0.0/40\": prefix length must be 0 to 32"
        );
        assert_eq!(
            error(
                json!({"rule_name": "r", "rule_items": [{"limit_by_per_ip": "x-real-ip", "limit_keys": [{"key": "*", "token_per_day": 1}]}]})
            ),
            "rule_items[0].limit_by_per_ip: must be from-remote-addr or from-header-<name>"
        );
        assert!(error(json!({"rule_name": "r", "rule_items": [{"limit_by_per_header": "x", "limit_keys": [{"key": "regexp:(", "token_per_day": 1}]}]}))
            .starts_with("rule_items[0].limit_keys[0].key: invalid regular expression"));
        assert!(
            error(json!({"rule_name": "r", "global_threshold": {"token_per_minute": "many"}}))
                .starts_with("global_threshold.token_per_minute: invalid type")
        );
        assert!(
            error(json!({"rule_name": "r", "global_threshold": {"token_per_minut": 1}}))
                .starts_with("global_threshold.token_per_minut: unknown field")
        );
        assert_eq!(
            error(json!({"rule_name": "r", "global_threshold": {"token_per_minute": 1, "limit_type": "request", "query_per_minute": 2}})),
            "global_threshold.query_per_minute: the same window is limited twice (limit_type: request makes token_per_* count requests)"
        );
        assert_eq!(
            error(
                json!({"rule_name": "r", "global_threshold": {"token_per_minute": 1}, "rules": [{"rule_name": "r", "global_threshold": {"token_per_day": 1}}]})
            ),
            "rule_name: \"r\" is used by two rules"
        );
        assert_eq!(
            error(
                json!({"rule_name": "r", "global_threshold": {"token_per_minute": 1}, "redis": {"service_name": ""}})
            ),
            "redis.service_name: must name the Envoy cluster of Webdis"
        );
        assert_eq!(
            error(json!({"rules": [{"global_threshold": {"token_per_minute": 1}}]})),
            "rules[0].rule_name: required"
        );
    }

    #[test]
    fn per_route_rules_replace_the_global_rule() {
        let set = RuleSet::parse(
            &json!({
                "rule_name": "default", "global_threshold": {"token_per_minute": 100},
                "_rules_": [{"_match_route_": ["premium"], "rule_name": "premium", "global_threshold": {"token_per_minute": 10000}}]
            }),
            Config::from_map,
        )
        .unwrap();
        let premium = set
            .get(&RequestKeys {
                route: "premium",
                ..Default::default()
            })
            .unwrap();
        assert_eq!(premium.rules[0].name, "premium");
        let Scope::Global(limits) = &premium.rules[0].scope else {
            panic!()
        };
        assert_eq!(limits.windows[0].limit, 10000);
        assert_eq!(
            set.get(&RequestKeys::default()).unwrap().rules[0].name,
            "default"
        );
    }
}
