//! Errors the gateway answers itself, in the shape each client API expects.
//!
//! OpenAI: `{"error":{"message","type","param","code"}}`.
//! Anthropic: `{"type":"error","error":{"type","message"}}`.

use serde_json::{json, Value};

/// Which API the client spoke, and so which error shape it can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientApi {
    #[default]
    OpenAi,
    Anthropic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI `type`, e.g. `invalid_request_error`.
    pub error_type: &'static str,
    pub code: Option<String>,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, error_type: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            error_type,
            code: None,
            param: None,
        }
    }

    /// 400 for a request the gateway cannot use; `param` names the offending field.
    pub fn invalid_request(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            param: param.map(str::to_string),
            ..Self::new(400, "invalid_request_error", message)
        }
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            format!("request body is larger than the gateway's limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    }

    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(429, "rate_limit_error", message).with_code("rate_limit_exceeded")
    }

    /// 502/503/504 when no provider could answer; `message` says why, without secrets.
    pub fn upstream(status: u16, message: impl Into<String>) -> Self {
        Self::new(status, "upstream_error", message)
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn to_openai_json(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }})
    }

    pub fn to_anthropic_json(&self) -> Value {
        json!({"type": "error", "error": {
            "type": anthropic_error_type(self.status),
            "message": self.message,
        }})
    }

    pub fn body(&self, api: ClientApi) -> Vec<u8> {
        let value = match api {
            ClientApi::OpenAi => self.to_openai_json(),
            ClientApi::Anthropic => self.to_anthropic_json(),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error_type, self.message)
    }
}

/// Anthropic's documented error types by HTTP status.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// OpenAI error `type` for a status when a provider did not give one.
pub fn openai_error_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn openai_shape_names_the_field() {
        let err = ApiError::invalid_request(Some("messages"), "messages: expected an array");
        assert_eq!(
            err.to_openai_json(),
            json!({"error": {"message": "messages: expected an array", "type": "invalid_request_error", "param": "messages", "code": null}})
        );
    }

    #[test]
    fn anthropic_shape_uses_anthropic_types() {
        let err = ApiError::rate_limited("quota used up");
        let body: Value = serde_json::from_slice(&err.body(ClientApi::Anthropic)).unwrap();
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "quota used up"}})
        );
        assert_eq!(anthropic_error_type(529), "overloaded_error");
    }
}
