//! Which limits apply to a request: for each rule, the first item whose source value matches
//! one of its keys (in order), and the counter that value names.

use crate::config::{AnonymousConsumers, Config, Scope, Source};
use crate::ipnet::client_ip;
use aigw_shared::consumer;
pub use aigw_shared::quota::{fnv1a, Matched};

/// What a request offers to match on, read once.
#[derive(Debug, Default)]
pub struct RequestFacts<'a> {
    /// Request headers, names lower-case (as Envoy hands them over).
    pub headers: &'a [(String, String)],
    /// The connection's peer address (`source.address`), when a rule needs it.
    pub remote_addr: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// A request header by its lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value `source` reads, if the request has one.
    fn value(&self, source: &Source, consumer_header: &str) -> Option<String> {
        let value = match source {
            Source::Header(name) => self.header(name).map(str::to_string),
            // Requests naming no consumer share one key instead of escaping consumer limits.
            Source::Consumer => {
                Some(consumer::or_anonymous(self.header(consumer_header)).to_string())
            }
            Source::Param(name) => query_param(self.header(":path")?, name),
            Source::Cookie(name) => cookie(self.header("cookie")?, name).map(str::to_string),
            Source::Ip(header) => {
                let raw = match header {
                    Some(name) => self.header(name)?,
                    None => self.remote_addr?,
                };
                client_ip(raw).map(|ip| ip.to_string())
            }
        };
        value.filter(|v| !v.is_empty())
    }
}

/// Consumer rules refuse requests that name no consumer (`anonymous_consumers: deny`).
pub fn refuses_anonymous(config: &Config, facts: &RequestFacts) -> bool {
    config.anonymous_consumers == AnonymousConsumers::Deny
        && config.reads_consumer
        && consumer::named(facts.header(&config.consumer_header)).is_none()
}

/// The limits of every rule that applies to the request.
pub fn matching(config: &Config, facts: &RequestFacts) -> Vec<Matched> {
    config
        .rules
        .iter()
        .filter_map(|rule| {
            let (tag, value, limits) = match &rule.scope {
                Scope::Global(limits) => ("global".to_string(), String::new(), limits),
                Scope::Items(items) => items.iter().find_map(|item| {
                    let value = facts.value(&item.source, &config.consumer_header)?;
                    let key = item.keys.iter().find(|k| k.pattern.matches(&value))?;
                    Some((
                        tag(&item.source),
                        counter_value(&item.source, &value),
                        &key.limits,
                    ))
                })?,
            };
            Some(Matched {
                id: format!("{}/{tag}/{value}", rule.name),
                rule: rule.name.clone(),
                limits: limits.clone(),
            })
        })
        .collect()
}

fn tag(source: &Source) -> String {
    match source {
        Source::Header(name) => format!("header:{name}"),
        Source::Param(name) => format!("param:{name}"),
        Source::Cookie(name) => format!("cookie:{name}"),
        Source::Consumer => "consumer".into(),
        Source::Ip(_) => "ip".into(),
    }
}

fn counter_value(source: &Source, value: &str) -> String {
    let readable = value.len() <= 64 && value.bytes().all(|b| b.is_ascii_graphic());
    match source {
        Source::Consumer | Source::Ip(_) if readable => value.to_string(),
        _ => format!("#{:016x}", fnv1a(value.as_bytes())),
    }
}

/// The first value of a query parameter, percent-decoded.
fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: serde_json::Value) -> Config {
        Config::from_map(value.as_object().unwrap()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ids(config: &Config, pairs: &[(&str, &str)], remote: Option<&str>) -> Vec<String> {
        let headers = headers(pairs);
        let facts = RequestFacts {
            headers: &headers,
            remote_addr: remote,
        };
        matching(config, &facts).into_iter().map(|m| m.id).collect()
    }

    #[test]
    fn first_matching_item_and_key_win() {
        let c = config(json!({
            "rule_name": "r",
            "rule_items": [
                {"limit_by_consumer": "", "limit_keys": [{"key": "alice", "token_per_minute": 10}]},
                {"limit_by_per_consumer": "", "limit_keys": [
                    {"key": "regexp:^team-", "token_per_minute": 100},
                    {"key": "*", "token_per_minute": 1000}
                ]}
            ]
        }));
        let limit_of = |consumer: &str| {
            let headers = headers(&[("x-mse-consumer", consumer)]);
            let facts = RequestFacts {
                headers: &headers,
                remote_addr: None,
            };
            matching(&c, &facts)[0].limits.windows[0].limit
        };
        assert_eq!(limit_of("alice"), 10);
        assert_eq!(limit_of("team-a"), 100);
        assert_eq!(limit_of("bob"), 1000);
        assert_eq!(
            ids(&c, &[("x-mse-consumer", "bob")], None),
            ["r/consumer/bob"]
        );
    }

    #[test]
    fn requests_naming_no_consumer_share_the_anonymous_key_or_are_refused() {
        let mut rule = json!({"rule_name": "r", "rule_items": [
            {"limit_by_per_consumer": "", "limit_keys": [{"key": "*", "token_per_minute": 1000}]}]});
        let share = config(rule.clone());
        rule["anonymous_consumers"] = json!("deny");
        let deny = config(rule);
        for anonymous in [
            &[][..],
            &[("x-mse-consumer", "")],
            &[("x-mse-consumer", " \t ")],
        ] {
            assert_eq!(
                ids(&share, anonymous, None),
                ["r/consumer/anonymous"],
                "{anonymous:?}"
            );
            let headers = headers(anonymous);
            let facts = RequestFacts {
                headers: &headers,
                remote_addr: None,
            };
            assert!(!refuses_anonymous(&share, &facts));
            assert!(refuses_anonymous(&deny, &facts), "{anonymous:?}");
        }
        let headers = headers(&[("x-mse-consumer", " bob ")]);
        let facts = RequestFacts {
            headers: &headers,
            remote_addr: None,
        };
        assert!(!refuses_anonymous(&deny, &facts));
        assert_eq!(
            ids(&share, &[("x-mse-consumer", " bob ")], None),
            ["r/consumer/bob"]
        );

        // Exact keys limit the anonymous key only when they name it.
        let exact = config(
            json!({"rule_name": "r", "rule_items": [{"limit_by_consumer": "", "limit_keys": [
            {"key": "alice", "token_per_minute": 10}]}], "anonymous_consumers": "deny"}),
        );
        assert!(ids(&exact, &[], None).is_empty());
        let global = config(
            json!({"rule_name": "g", "global_threshold": {"token_per_minute": 1}, "anonymous_consumers": "deny"}),
        );
        let facts = RequestFacts::default();
        assert!(
            !refuses_anonymous(&global, &facts),
            "no consumer rule, nothing to refuse"
        );
    }

    #[test]
    fn credentials_are_hashed_in_counter_names() {
        let c = config(json!({
            "rule_name": "keys",
            "rule_items": [{"limit_by_per_header": "X-Api-Key", "limit_keys": [{"key": "*", "token_per_minute": 10}]}]
        }));
        let id = &ids(&c, &[("x-api-key", "sk-secret-123")], None)[0];
        assert!(!id.contains("secret"), "{id}");
        assert_eq!(
            id,
            &format!("keys/header:x-api-key/#{:016x}", fnv1a(b"sk-secret-123"))
        );
        assert_ne!(id, &ids(&c, &[("x-api-key", "sk-other")], None)[0]);
    }

    #[test]
    fn ip_blocks_from_the_peer_or_a_header() {
        let c = config(json!({
            "rule_name": "ip",
            "rule_items": [{"limit_by_per_ip": "from-remote-addr", "limit_keys": [
                {"key": "10.0.0.0/8", "token_per_minute": 10},
                {"key": "0.0.0.0/0", "token_per_minute": 1}
            ]}],
            "rules": [{"rule_name": "xff", "rule_items": [{"limit_by_per_ip": "from-header-x-forwarded-for", "limit_keys": [{"key": "203.0.113.0/24", "token_per_minute": 5}]}]}]
        }));
        assert_eq!(ids(&c, &[], Some("10.1.2.3:4567")), ["ip/ip/10.1.2.3"]);
        assert_eq!(
            ids(
                &c,
                &[("x-forwarded-for", "203.0.113.9, 10.0.0.1")],
                Some("127.0.0.1:1")
            ),
            ["ip/ip/127.0.0.1", "xff/ip/203.0.113.9"]
        );
        assert!(
            ids(&c, &[], Some("::1")).is_empty(),
            "IPv6 is outside IPv4 blocks"
        );
    }

    #[test]
    fn params_and_cookies() {
        let c = config(json!({
            "rule_name": "p",
            "rule_items": [
                {"limit_by_param": "apikey", "limit_keys": [{"key": "a b", "token_per_minute": 1}]},
                {"limit_by_per_cookie": "session", "limit_keys": [{"key": "*", "token_per_minute": 2}]}
            ],
            "rules": [{"rule_name": "g", "global_threshold": {"query_per_second": 1}}]
        }));
        let by_param = ids(&c, &[(":path", "/v1/chat?x=1&apikey=a%20b")], None);
        assert_eq!(
            by_param[0],
            format!("p/param:apikey/#{:016x}", fnv1a(b"a b"))
        );
        assert_eq!(by_param[1], "g/global/");
        let by_cookie = ids(
            &c,
            &[(":path", "/v1/chat"), ("cookie", "a=1; session=\"s1\"")],
            None,
        );
        assert_eq!(
            by_cookie[0],
            format!("p/cookie:session/#{:016x}", fnv1a(b"s1"))
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
        assert_eq!(query_param("/p?k=v#frag", "k").as_deref(), Some("v"));
        assert_eq!(query_param("/p?k", "k").as_deref(), Some(""));
        assert_eq!(query_param("/p", "k"), None);
    }
}
