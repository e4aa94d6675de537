//! What clients see: OpenAI's `x-ratelimit-*` headers on every response, and the 429 (or the
//! configured status) with an OpenAI error, `retry-after` and Higress's `x-tokenratelimit-reset`
//! when a quota refuses; the 401 when a request must name a consumer and does not.

use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::quota::ledger::{tightest, Limited, WindowState};
use aigw_shared::quota::window::{ceil_secs, format_duration, Kind};

pub type Headers = Vec<(&'static str, String)>;

/// `x-ratelimit-{limit,remaining,reset}-{tokens,requests}` of the tightest window of each kind.
pub fn quota_headers(states: &[WindowState], now_ms: u64) -> Headers {
    let mut headers = Vec::new();
    for (kind, names) in [
        (
            Kind::Tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
        (
            Kind::Requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
    ] {
        if let Some(s) = tightest(states, kind) {
            headers.push((names[0], s.window.limit.to_string()));
            headers.push((names[1], s.remaining().to_string()));
            headers.push((names[2], format_duration(s.window.reset_ms(now_ms))));
        }
    }
    headers
}

/// The 401 for a request naming no consumer where consumers must be named.
pub fn consumer_required(consumer_header: &str) -> ApiError {
    ApiError::new(
        401,
        "invalid_request_error",
        format!("This API needs a consumer: the {consumer_header} header names none."),
    )
    .with_code("consumer_required")
}

/// The answer to a refused request.
pub struct Rejection {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

pub fn rejection(
    rule: &str,
    limited: &Limited,
    status: u16,
    custom_message: Option<&str>,
    now_ms: u64,
) -> Rejection {
    let retry_ms = limited.retry_after_ms(now_ms);
    let message = match (custom_message, limited.window) {
        (Some(message), _) => message.to_string(),
        (None, Some(w)) if limited.too_large() => format!(
            "Request too large for rule {rule} on {}: Limit {}, Requested {}.",
            w.name(),
            w.limit,
            limited.requested
        ),
        (None, Some(w)) => format!(
            "Rate limit reached for rule {rule} on {}: Limit {}, Used {}, Requested {}. Please try again in {}.",
            w.name(),
            w.limit,
            limited.used,
            limited.requested,
            format_duration(retry_ms)
        ),
        (None, None) => format!(
            "Too many concurrent requests for rule {rule}: {} in flight, the limit. Please try again when one finishes.",
            limited.used
        ),
    };
    let mut headers: Headers = vec![
        ("content-type", "application/json".into()),
        ("retry-after", ceil_secs(retry_ms).to_string()),
    ];
    if let Some(w) = limited.window {
        let state = WindowState {
            window: w,
            used: limited.used,
        };
        headers.extend(quota_headers(&[state], now_ms));
        if w.kind == Kind::Tokens {
            headers.push(("x-tokenratelimit-reset", ceil_secs(retry_ms).to_string()));
        }
    }
    let error = ApiError::rate_limited(message);
    Rejection {
        status,
        headers,
        body: ApiError { status, ..error }.body(ClientApi::OpenAi),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::quota::window::Window;
    use serde_json::Value;

    fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_missing_consumer_is_a_401_in_either_api() {
        let err = consumer_required("x-mse-consumer");
        assert_eq!(err.status, 401);
        let openai = err.to_openai_json();
        assert_eq!(openai["error"]["code"], "consumer_required");
        assert!(openai["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-mse-consumer"));
        assert_eq!(
            err.to_anthropic_json()["error"]["type"],
            "authentication_error"
        );
    }

    #[test]
    fn admitted_responses_carry_the_tightest_windows() {
        let states = [
            WindowState {
                window: Window::minute(1000),
                used: 400,
            },
            WindowState {
                window: Window {
                    period_secs: 86_400,
                    ..Window::minute(50_000)
                },
                used: 49_900,
            },
            WindowState {
                window: Window {
                    kind: Kind::Requests,
                    period_secs: 1,
                    limit: 5,
                },
                used: 2,
            },
        ];
        let h = quota_headers(&states, 30_000);
        assert_eq!(header(&h, "x-ratelimit-limit-tokens"), Some("50000"));
        assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), Some("100"));
        assert_eq!(header(&h, "x-ratelimit-reset-tokens"), Some("23h59m30s"));
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), Some("3"));
        assert_eq!(header(&h, "x-ratelimit-reset-requests"), Some("1s"));
    }

    #[test]
    fn rejections_are_openai_errors_with_retry_after() {
        let limited = Limited {
            limit: 0,
            window: Some(Window::minute(1000)),
            used: 950,
            requested: 120,
        };
        let r = rejection("per-user", &limited, 429, None, 15_500);
        assert_eq!(r.status, 429);
        assert_eq!(header(&r.headers, "retry-after"), Some("45"));
        assert_eq!(header(&r.headers, "x-tokenratelimit-reset"), Some("45"));
        assert_eq!(
            header(&r.headers, "x-ratelimit-remaining-tokens"),
            Some("50")
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(
            body["error"]["message"],
            "Rate limit reached for rule per-user on token_per_minute: Limit 1000, Used 950, Requested 120. Please try again in 44.5s."
        );
        let too_large = Limited {
            requested: 5000,
            ..limited.clone()
        };
        let body: Value =
            serde_json::from_slice(&rejection("r", &too_large, 429, None, 0).body).unwrap();
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large"));
        let custom = rejection("r", &limited, 200, Some("slow down"), 0);
        assert_eq!(custom.status, 200);
        assert!(String::from_utf8(custom.body)
            .unwrap()
            .contains("\"slow down\""));
    }

    #[test]
    fn concurrency_rejections_ask_to_retry_soon() {
        let limited = Limited {
            limit: 0,
            window: None,
            used: 3,
            requested: 1,
        };
        let r = rejection("r", &limited, 429, None, 0);
        assert_eq!(header(&r.headers, "retry-after"), Some("1"));
        assert_eq!(header(&r.headers, "x-ratelimit-limit-tokens"), None);
    }
}
