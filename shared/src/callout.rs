//! HTTP callouts from a plugin to another service (moderation, embeddings, vector stores,
//! Redis through Webdis): the request, how it can end, and the fail-open / fail-closed switch.
//!
//! Envoy ends a callout in three ways a plugin must tell apart: the service answered (any
//! status); Envoy gave up and synthesised a 504 (timeout) or a 503 (connection refused or
//! reset), recognisable by their plain-text `upstream …` bodies; or the dispatch failed at once
//! (unknown cluster, no healthy host) and no callback will come. The host side lives in
//! [`crate::host::dispatch`] and [`crate::host::callout_response`].

use serde::Deserialize;
use std::time::Duration;

/// What to do with the request when a callout fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Carry on as if the check passed (quotas, cache: availability first).
    #[default]
    Open,
    /// Refuse the request (safety checks that must not be skipped).
    Closed,
}

/// A request to send through `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// The Envoy cluster of the service.
    pub cluster: String,
    pub method: &'static str,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl Callout {
    /// A `POST` of a JSON body.
    pub fn post_json(
        cluster: &str,
        authority: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Callout {
        Callout {
            cluster: cluster.to_string(),
            method: "POST",
            path: path.to_string(),
            authority: authority.to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
            body,
            timeout,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Callout {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// All headers, pseudo-headers first, as Envoy's async client wants them.
    pub fn all_headers(&self) -> Vec<(&str, &str)> {
        let mut all = vec![
            (":method", self.method),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
        ];
        all.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all
    }
}

/// How a callout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The service answered (any status, its own errors included).
    Answered { status: u16, body: Vec<u8> },
    /// No answer in time.
    TimedOut,
    /// The service could not be reached (refused, reset, no host, unknown cluster).
    Unreachable(String),
}

impl Outcome {
    /// Reads a callback's status and body, recognising the replies Envoy made up itself.
    pub fn classify(status: Option<u16>, body: Vec<u8>) -> Outcome {
        let Some(status) = status else {
            return Outcome::Unreachable("callout answered without a status".into());
        };
        let synthesised =
            body.starts_with(b"upstream ") || body.starts_with(b"no healthy upstream");
        match status {
            504 if synthesised || body.is_empty() => Outcome::TimedOut,
            503 if synthesised => Outcome::Unreachable(String::from_utf8_lossy(&body).into_owned()),
            _ => Outcome::Answered { status, body },
        }
    }

    /// The body of a 2xx answer, or why there is none.
    pub fn success(&self) -> Result<&[u8], String> {
        match self {
            Outcome::Answered { status, body } if (200..300).contains(status) => Ok(body),
            Outcome::Answered { status, body } => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                Err(format!("service answered {status}: {text}"))
            }
            Outcome::TimedOut => Err("service timed out".into()),
            Outcome::Unreachable(why) => Err(format!("service unreachable: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn envoy_made_up_replies_are_told_apart_from_the_service() {
        assert_eq!(
            Outcome::classify(Some(504), b"upstream request timeout".to_vec()),
            Outcome::TimedOut
        );
        assert!(matches!(
            Outcome::classify(
                Some(503),
                b"upstream connect error or disconnect/reset before headers".to_vec()
            ),
            Outcome::Unreachable(_)
        ));
        assert!(matches!(
            Outcome::classify(Some(503), b"no healthy upstream".to_vec()),
            Outcome::Unreachable(_)
        ));
        let own = Outcome::classify(Some(503), br#"{"error":"overloaded"}"#.to_vec());
        assert_eq!(
            own,
            Outcome::Answered {
                status: 503,
                body: br#"{"error":"overloaded"}"#.to_vec()
            }
        );
        assert_eq!(
            own.success().unwrap_err(),
            r#"service answered 503: {"error":"overloaded"}"#
        );
        assert_eq!(
            Outcome::classify(Some(200), b"ok".to_vec())
                .success()
                .unwrap(),
            b"ok"
        );
        assert!(matches!(
            Outcome::classify(None, Vec::new()),
            Outcome::Unreachable(_)
        ));
    }

    #[test]
    fn headers_start_with_the_pseudo_headers() {
        let c = Callout::post_json(
            "moderation",
            "api.openai.com",
            "/v1/moderations",
            b"{}".to_vec(),
            Duration::from_secs(1),
        )
        .header("Authorization", "Bearer k");
        let headers = c.all_headers();
        assert_eq!(headers[0], (":method", "POST"));
        assert_eq!(headers[1], (":path", "/v1/moderations"));
        assert_eq!(headers[2], (":authority", "api.openai.com"));
        assert!(headers.contains(&("authorization", "Bearer k")));
    }

    #[test]
    fn failure_policy_from_config() {
        assert_eq!(
            serde_json::from_str::<FailurePolicy>("\"closed\"").unwrap(),
            FailurePolicy::Closed
        );
        assert_eq!(FailurePolicy::default(), FailurePolicy::Open);
    }
}
