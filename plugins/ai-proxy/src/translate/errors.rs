//! Provider error bodies, whatever their shape, as OpenAI error objects with the provider's
//! status and message.

use aigw_shared::error::{openai_error_type, ApiError};
use serde_json::Value;

/// Longest provider text carried into an error message.
const MAX_MESSAGE: usize = 1000;

/// Reads OpenAI's `{"error":{…}}`, Anthropic's `{"type":"error","error":{…}}`, Azure's
/// `{"error":{"code","message"}}`, bare `{"message"|"msg"|"detail": …}` and plain text.
pub fn from_provider(status: u16, body: &[u8]) -> ApiError {
    let fallback_type = openai_error_type(status);
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        let raw = String::from_utf8_lossy(body);
        let message = if raw.trim().is_empty() {
            format!("upstream error {status} with an empty body")
        } else {
            format!("upstream error {status}: {}", truncate(raw.trim()))
        };
        return ApiError::new(status, fallback_type, message);
    };
    let error = json.get("error").unwrap_or(&json);
    let message = ["message", "msg", "detail"]
        .iter()
        .find_map(|k| error.get(*k).and_then(text))
        .or_else(|| error.as_str().map(str::to_string))
        .unwrap_or_else(|| truncate(&json.to_string()));
    let mut api_error = ApiError::new(status, fallback_type, truncate(&message));
    if let Some(kind) = error
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| *t != "error")
    {
        api_error.error_type = leak_known(kind).unwrap_or(fallback_type);
    }
    api_error.code = error.get("code").and_then(text);
    api_error.param = error.get("param").and_then(text);
    api_error
}

/// What the client gets for a provider answer that does not parse (a lone surrogate escape,
/// invalid UTF-8, no JSON at all): a 502 in its API, without the provider's bytes, which may
/// hold anything (text no check has seen, an echoed key).
pub const UNREADABLE: &str = "the provider's answer could not be read: it is not valid JSON";

pub fn unreadable() -> ApiError {
    ApiError::new(502, "server_error", UNREADABLE).with_code("unreadable_answer")
}

/// Error types are `&'static str`; keep a provider's own type when it is one we know.
fn leak_known(kind: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "request_too_large",
        "server_error",
        "insufficient_quota",
        "tokens",
        "requests",
        "timeout_error",
    ];
    KNOWN.iter().find(|k| **k == kind).copied()
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_becomes_an_openai_error() {
        let e = from_provider(404, br#"{"type":"error","error":{"type":"not_found_error","message":"model: x"},"request_id":"r"}"#);
        assert_eq!(
            (e.status, e.error_type, e.message.as_str()),
            (404, "not_found_error", "model: x")
        );
        let e = from_provider(400, br#"{"error":{"message":"bad","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}"#);
        assert_eq!(
            (e.param.as_deref(), e.code.as_deref()),
            (Some("max_tokens"), Some("unsupported_parameter"))
        );
        let e = from_provider(404, br#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#);
        assert_eq!(
            (e.error_type, e.code.as_deref()),
            ("invalid_request_error", Some("DeploymentNotFound"))
        );
        let e = from_provider(
            429,
            br#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{}}}"#,
        );
        assert_eq!(
            (e.error_type, e.code.as_deref()),
            ("rate_limit_error", Some("429"))
        );
        let e = from_provider(502, b"<html>Bad Gateway</html>");
        assert_eq!(e.message, "upstream error 502: <html>Bad Gateway</html>");
        let e = from_provider(500, b"");
        assert_eq!(e.message, "upstream error 500 with an empty body");
        let e = from_provider(400, br#"{"detail":"nope"}"#);
        assert_eq!(e.message, "nope");
    }
}
