//! Moderation services reached by HTTP callouts. Each turns texts into the requests its API
//! takes and its answers into a [`Verdict`]; the plugin sends them through Envoy
//! (`dispatch_http_call`) with the timeout and the failure policy of the configuration.

pub mod aliyun;
pub mod azure;
pub mod bedrock;
pub mod guard;
pub mod openai;
pub mod webhook;

use crate::verdict::{Phase, Verdict};
use aigw_shared::callout::{Callout, FailurePolicy};
use aigw_shared::rules::{parse_object, ConfigError};
use aigw_shared::sign::SignableRequest;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// What signing services need to know about the moment of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallContext {
    pub now_ms: u64,
    /// Unique per callout (signature nonces).
    pub sequence: u64,
}

/// A moderation API.
pub trait Service {
    /// Short name for metrics and logs (`openai`, `azure`, …).
    fn name(&self) -> &'static str;
    /// The requests that check `segments` (each within the service's length limit).
    fn requests(
        &self,
        endpoint: &Endpoint,
        segments: &[String],
        phase: Phase,
        ctx: CallContext,
    ) -> Vec<Callout>;
    /// The verdict of an answer; `Err` for a service error (the failure policy decides).
    fn verdict(&self, status: u16, body: &[u8]) -> Result<Verdict, String>;
}

/// Where a service is and how long to wait for it; keys shared by every service type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The Envoy cluster the callout goes to.
    pub cluster: String,
    /// `:authority` of the callout (the service's host name).
    pub host: String,
    pub path: String,
    pub timeout: Duration,
    pub failure_policy: FailurePolicy,
    /// Longest text one request may carry, in characters; longer texts are split.
    pub max_chars: usize,
}

impl Endpoint {
    pub fn post_json(&self, body: &Value) -> Callout {
        Callout::post_json(
            &self.cluster,
            &self.host,
            &self.path,
            serde_json::to_vec(body).unwrap_or_default(),
            self.timeout,
        )
    }
}

impl Endpoint {
    /// A `POST` of `body` with the headers `sign` computes over it (the request it signs has
    /// the `host` and `content-type` headers that go out).
    pub fn signed_post(
        &self,
        body: Vec<u8>,
        content_type: &str,
        sign: impl FnOnce(&SignableRequest) -> Vec<(String, String)>,
    ) -> Callout {
        let signed = sign(&SignableRequest {
            method: "POST",
            path: &self.path,
            query: Vec::new(),
            headers: vec![
                ("host".into(), self.host.clone()),
                ("content-type".into(), content_type.into()),
            ],
            body: &body,
        });
        let mut callout =
            Callout::post_json(&self.cluster, &self.host, &self.path, body, self.timeout);
        callout.headers = vec![("content-type".into(), content_type.into())];
        signed.iter().fold(callout, |c, (k, v)| c.header(k, v))
    }
}

/// A configured service: where it is, and the API that speaks to it.
pub struct Configured {
    pub endpoint: Endpoint,
    pub service: Box<dyn Service>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EndpointKeys {
    cluster: String,
    host: Option<String>,
    path: Option<String>,
    #[serde(default = "default_timeout")]
    timeout: u64,
    #[serde(default)]
    failure_policy: FailurePolicy,
    max_chars: Option<usize>,
}

fn default_timeout() -> u64 {
    2000
}

const ENDPOINT_KEYS: [&str; 6] = [
    "cluster",
    "host",
    "path",
    "timeout",
    "failurePolicy",
    "maxChars",
];

/// Defaults a service type gives to the endpoint keys.
pub struct Defaults {
    pub host: &'static str,
    pub path: &'static str,
    pub max_chars: usize,
}

/// Parses the `service` object: `type`, the endpoint keys, and the type's own keys.
pub fn parse(map: &Map<String, Value>) -> Result<Configured, ConfigError> {
    let kind = match map.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(ConfigError::new("type", "must be a string")),
        None => return Err(ConfigError::new("type", "field required")),
    };
    let mut endpoint_keys = Map::new();
    let mut own_keys = Map::new();
    for (key, value) in map {
        if key == "type" {
            continue;
        }
        if ENDPOINT_KEYS.contains(&key.as_str()) {
            endpoint_keys.insert(key.clone(), value.clone());
        } else {
            own_keys.insert(key.clone(), value.clone());
        }
    }
    let keys: EndpointKeys = parse_object(&endpoint_keys)?;
    let (defaults, service): (Defaults, Box<dyn Service>) = match kind {
        "openai" => (openai::DEFAULTS, Box::new(openai::OpenAi::parse(&own_keys)?)),
        "azure" => (azure::DEFAULTS, Box::new(azure::Azure::parse(&own_keys)?)),
        "guard_model" => (guard::DEFAULTS, Box::new(guard::GuardModel::parse(&own_keys)?)),
        "webhook" => (webhook::DEFAULTS, Box::new(webhook::Webhook::parse(&own_keys)?)),
        "aliyun" => (aliyun::DEFAULTS, Box::new(aliyun::Aliyun::parse(&own_keys)?)),
        "bedrock" => {
            let bedrock = bedrock::Bedrock::parse(&own_keys)?;
            let host = bedrock.default_host();
            let path = bedrock.path();
            let endpoint = endpoint(keys, bedrock::DEFAULTS, Some(host), Some(path))?;
            return Ok(Configured {
                endpoint,
                service: Box::new(bedrock),
            });
        }
        other => {
            return Err(ConfigError::new(
                "type",
                format!("unknown service type {other:?}; one of openai, azure, aliyun, bedrock, guard_model, webhook"),
            ))
        }
    };
    Ok(Configured {
        endpoint: endpoint(keys, defaults, None, None)?,
        service,
    })
}

fn endpoint(
    keys: EndpointKeys,
    defaults: Defaults,
    host: Option<String>,
    path: Option<String>,
) -> Result<Endpoint, ConfigError> {
    if keys.cluster.trim().is_empty() {
        return Err(ConfigError::new("cluster", "must not be empty"));
    }
    if keys.timeout == 0 {
        return Err(ConfigError::new("timeout", "must be at least 1 ms"));
    }
    let max_chars = keys.max_chars.unwrap_or(defaults.max_chars);
    if max_chars < 16 {
        return Err(ConfigError::new("maxChars", "must be at least 16"));
    }
    let host = keys
        .host
        .or(host)
        .unwrap_or_else(|| defaults.host.to_string());
    if host.is_empty() {
        return Err(ConfigError::new(
            "host",
            "field required for this service type",
        ));
    }
    Ok(Endpoint {
        host,
        path: keys
            .path
            .or(path)
            .unwrap_or_else(|| defaults.path.to_string()),
        cluster: keys.cluster,
        timeout: Duration::from_millis(keys.timeout),
        failure_policy: keys.failure_policy,
        max_chars,
    })
}

/// Splits `text` into pieces of at most `max_chars` characters; consecutive pieces share
/// `overlap` characters so that a phrase on a boundary is seen whole in one of them.
pub fn segments(text: &str, max_chars: usize, overlap: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max_chars {
        return vec![text.to_string()];
    }
    let overlap = overlap.min(max_chars / 2);
    let step = max_chars - overlap;
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + max_chars).min(chars.len());
        out.push(chars[start..end].iter().collect());
        if end == chars.len() {
            return out;
        }
        start += step;
    }
}

/// The message of an error body in the shapes the services use
/// (`{"error":{"message"}}`, `{"error":{"code","message"}}`, `{"message"}`, `{"Message"}`).
pub fn error_message(status: u16, body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        [
            v.pointer("/error/message"),
            v.get("message"),
            v.get("Message"),
            v.pointer("/error/code"),
        ]
        .into_iter()
        .flatten()
        .find_map(|m| m.as_str().map(str::to_string))
    });
    let text = message
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    format!("status {status}: {text}")
}

/// The JSON of a 2xx answer; any other status, or an unreadable body, is a service error.
pub fn answer_json<T: serde::de::DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, String> {
    if !(200..300).contains(&status) {
        return Err(error_message(status, body));
    }
    serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))
}

/// Parses a service type's own keys (everything but `type` and the endpoint keys).
pub fn parse_own<T: serde::de::DeserializeOwned>(
    map: &Map<String, Value>,
) -> Result<T, ConfigError> {
    parse_object(map)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// An endpoint for the services' unit tests.
    pub fn endpoint(path: &str) -> Endpoint {
        Endpoint {
            cluster: "moderation".into(),
            host: "service.example.com".into(),
            path: path.into(),
            timeout: Duration::from_secs(1),
            failure_policy: FailurePolicy::Open,
            max_chars: 100,
        }
    }

    #[test]
    fn segments_cover_the_text_with_overlap() {
        assert_eq!(segments("short", 100, 10), vec!["short"]);
        let text: String = ('a'..='z').collect();
        let parts = segments(&text, 10, 3);
        assert_eq!(parts, ["abcdefghij", "hijklmnopq", "opqrstuvwx", "vwxyz"]);
        let chinese = "一二三四五六七八九十".repeat(3);
        assert!(segments(&chinese, 16, 4)
            .iter()
            .all(|s| s.chars().count() <= 16));
    }

    #[test]
    fn endpoint_keys_are_shared_and_checked() {
        let configured = parse(json!({"type": "openai", "cluster": "moderation", "apiKey": "k", "timeout": 500, "failurePolicy": "closed"}).as_object().unwrap()).unwrap();
        assert_eq!(configured.endpoint.host, "api.openai.com");
        assert_eq!(configured.endpoint.path, "/v1/moderations");
        assert_eq!(configured.endpoint.timeout, Duration::from_millis(500));
        assert_eq!(configured.endpoint.failure_policy, FailurePolicy::Closed);
        let err = parse(
            json!({"type": "openai", "cluster": "m", "apiKey": "k", "timeout": "slow"})
                .as_object()
                .unwrap(),
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "timeout");
        let err = parse(
            json!({"type": "openai", "cluster": "m", "apiKey": "k", "tiemout": 1})
                .as_object()
                .unwrap(),
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "tiemout");
        let err = parse(json!({"type": "nope", "cluster": "m"}).as_object().unwrap())
            .err()
            .unwrap();
        assert_eq!(err.path, "type");
        let err = parse(
            json!({"type": "azure", "cluster": "m", "apiKey": "k"})
                .as_object()
                .unwrap(),
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "host");
    }

    #[test]
    fn error_messages_from_every_shape() {
        assert_eq!(
            error_message(401, br#"{"error":{"message":"bad key","type":"x"}}"#),
            "status 401: bad key"
        );
        assert_eq!(
            error_message(400, br#"{"error":{"code":"InvalidRequestBody"}}"#),
            "status 400: InvalidRequestBody"
        );
        assert_eq!(
            error_message(403, br#"{"message":"denied"}"#),
            "status 403: denied"
        );
        assert_eq!(
            error_message(404, br#"{"Code":"X","Message":"not found"}"#),
            "status 404: not found"
        );
        assert_eq!(error_message(500, b"oops"), "status 500: oops");
    }
}
