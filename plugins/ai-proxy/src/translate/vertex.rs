//! The provider edge for Vertex AI: Gemini models through the Gemini wire format
//! (`publishers/google/models/{model}:generateContent` / `:streamGenerateContent?alt=sse`),
//! Claude models through Anthropic's Messages format (`publishers/anthropic/models/{model}:
//! rawPredict` / `:streamRawPredict`, the model in the path and
//! `anthropic_version: vertex-2023-10-16` in the body). Both under
//! `/v1/projects/{project}/locations/{region}`, or, in express mode (API keys), under `/v1`.
//!
//! The access token is not the adapter's business: the glue fetches it (see `vertex_auth`).

use super::claude::Claude;
use super::gemini::Gemini;
use super::{Plan, ProviderAdapter, ResponseStage};
use crate::config::{GeminiSettings, Provider};
use aigw_shared::error::ApiError;
use aigw_shared::openai::ChatRequest;
use serde_json::{json, Value};

const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

pub struct Vertex {
    /// `/v1/projects/{project}/locations/{region}`, or `/v1` in express mode.
    base: String,
    express: bool,
    settings: GeminiSettings,
    default_max_tokens: u64,
    created: u64,
    inner: Inner,
}

enum Inner {
    /// Before the request names the model.
    Unknown,
    Gemini(Gemini),
    Claude {
        adapter: Claude,
        path: String,
    },
}

impl Vertex {
    pub fn new(provider: &Provider, created: u64) -> Self {
        let (base, express) = match provider.vertex.as_ref() {
            Some(v) if v.service_account.is_some() => (
                format!("/v1/projects/{}/locations/{}", v.project_id, v.region),
                false,
            ),
            _ => ("/v1".to_string(), true),
        };
        Vertex {
            base,
            express,
            settings: provider.gemini.clone(),
            default_max_tokens: provider.default_max_tokens,
            created,
            inner: Inner::Unknown,
        }
    }

    fn stage(&mut self) -> Option<&mut dyn ResponseStage> {
        match &mut self.inner {
            Inner::Unknown => None,
            Inner::Gemini(g) => Some(g),
            Inner::Claude { adapter, .. } => Some(adapter),
        }
    }
}

impl ProviderAdapter for Vertex {
    fn chat_request(&mut self, request: ChatRequest, model: &str) -> Result<Vec<u8>, ApiError> {
        if !model.starts_with("claude") {
            let models = format!("{}/publishers/google/models", self.base);
            let mut gemini = Gemini::at(models, self.settings.clone(), self.created);
            let body = gemini.chat_request(request, model)?;
            self.inner = Inner::Gemini(gemini);
            return Ok(body);
        }
        if self.express {
            return Err(ApiError::invalid_request(
                Some("model"),
                format!("model: {model} needs a Vertex AI project (vertexAuthKey); express mode serves Gemini models only"),
            ));
        }
        let model = super::canonical::path_model(model)?;
        let operation = if request.is_stream() {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        let path = format!(
            "{}/publishers/anthropic/models/{model}:{operation}",
            self.base
        );
        let mut adapter = Claude::new("", self.default_max_tokens, self.created);
        let body = adapter.chat_request(request, model)?;
        let mut body: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(500, "server_error", e.to_string()))?;
        if let Some(fields) = body.as_object_mut() {
            fields.remove("model");
            fields.insert("anthropic_version".into(), json!(ANTHROPIC_VERSION));
        }
        self.inner = Inner::Claude { adapter, path };
        super::canonical::encode(&body)
    }

    fn chat_path(&self) -> Option<String> {
        match &self.inner {
            Inner::Unknown => None,
            Inner::Gemini(g) => g.chat_path(),
            Inner::Claude { path, .. } => Some(path.clone()),
        }
    }
}

impl ResponseStage for Vertex {
    fn plan(&mut self, status: u16, content_type: &str) -> Plan {
        self.stage()
            .map_or(Plan::PASSTHROUGH, |s| s.plan(status, content_type))
    }

    fn translate(&mut self, input: &[u8], end: bool, out: &mut Vec<u8>) {
        match self.stage() {
            Some(stage) => stage.translate(input, end, out),
            None => out.extend_from_slice(input),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn vertex(extra: Value) -> Vertex {
        let mut provider = json!({"type": "vertex", "vertexRegion": "us-east5"});
        provider
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let config = Config::from_map(json!({"provider": provider}).as_object().unwrap()).unwrap();
        Vertex::new(config.active.as_ref().unwrap(), 1)
    }

    fn service_account() -> Value {
        json!({"vertexAuthKey": crate::vertex_auth::tests::TEST_ONLY_KEY_FILE, "vertexProjectId": "proj", "vertexAuthServiceName": "google-auth"})
    }

    fn request(stream: bool) -> ChatRequest {
        serde_json::from_value(json!({"model": "x", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})).unwrap()
    }

    #[test]
    fn gemini_models_take_the_google_publisher_path() {
        let mut v = vertex(service_account());
        let body: Value =
            serde_json::from_slice(&v.chat_request(request(true), "gemini-2.5-flash").unwrap())
                .unwrap();
        assert_eq!(body["contents"][0]["parts"][0]["text"], "hi");
        assert_eq!(
            v.chat_path().unwrap(),
            "/v1/projects/proj/locations/us-east5/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn claude_models_take_raw_predict_with_the_vertex_version_in_the_body() {
        let mut v = vertex(service_account());
        let body: Value = serde_json::from_slice(
            &v.chat_request(request(false), "claude-sonnet-4-5@20250929")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(body["anthropic_version"], ANTHROPIC_VERSION);
        assert!(body.get("model").is_none());
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(
            v.chat_path().unwrap(),
            "/v1/projects/proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
        );
        assert!(
            v.extra_headers().is_empty(),
            "no anthropic-version header on Vertex"
        );
        v.plan(200, "application/json");
        let mut out = Vec::new();
        v.translate(br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}"#, true, &mut out);
        let completion: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(completion["choices"][0]["message"]["content"], "Hi");
    }

    #[test]
    fn express_mode_serves_gemini_under_v1_only() {
        let mut v = vertex(json!({"apiTokens": ["key"]}));
        v.chat_request(request(false), "gemini-2.5-flash").unwrap();
        assert_eq!(
            v.chat_path().unwrap(),
            "/v1/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        let err = vertex(json!({"apiTokens": ["key"]}))
            .chat_request(request(false), "claude-x")
            .unwrap_err();
        assert_eq!(err.status, 400);
    }
}
