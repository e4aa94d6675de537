//! ai-proxy configuration, in Higress's key names where they exist.
//!
//! ```json
//! {"provider": {"type": "openai", "apiTokens": ["sk-…"], "modelMapping": {"*": "gpt-4o-mini"}}}
//! {"providers": [{"id": "a", "type": "claude", …}, {"id": "b", "type": "qwen", …}], "activeProviderId": "a"}
//! ```
//!
//! With no provider at all the plugin is only the client-facing edge: it turns Anthropic
//! requests into the canonical (OpenAI) format and answers back in Anthropic's, and lets the
//! provider edge further down (another ai-proxy, e.g. as an upstream filter) pick the provider.

use crate::keys::KeyRing;
use crate::mapping::ModelMapping;
use crate::passthrough::PassthroughPath;
use crate::provider::{provider_type, type_names, Auth, ProviderType, WireFormat};
use crate::translate::canonical::path_model;
use crate::vertex_auth::ServiceAccount;
use aigw_shared::body::DEFAULT_BODY_LIMIT;
use aigw_shared::error::ApiError;
use aigw_shared::event_bound;
use aigw_shared::headers::HeaderAllowList;
use aigw_shared::redact::Secrets;
use aigw_shared::rules::{parse_object, ConfigError};
use aigw_shared::sign::AwsCredentials;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::rc::Rc;

#[derive(Debug)]
pub struct Config {
    pub providers: Vec<Rc<Provider>>,
    /// The provider used when the upstream endpoint does not name one.
    pub active: Option<Rc<Provider>>,
    /// Served by `GET /v1/models`, with the providers' own lists.
    pub models: Vec<String>,
    /// Endpoint metadata namespace naming each attempt's provider (`provider`) and model (`model`).
    pub metadata_namespace: String,
    pub max_request_bytes: usize,
    /// Bound on one streamed event (`maxEventBytes`): past it the stream ends with an error.
    pub max_event_bytes: usize,
    /// APIs passed to the provider untranslated (`passthroughPaths`); all others are refused.
    pub passthrough: Vec<PassthroughPath>,
    /// Client request headers the provider receives (`forwardHeaders` adds to the defaults).
    pub forward_headers: HeaderAllowList,
}

#[derive(Debug)]
pub struct Provider {
    pub id: String,
    pub kind: &'static ProviderType,
    pub keys: KeyRing,
    pub mapping: ModelMapping,
    /// `:authority` sent to the provider.
    pub authority: String,
    /// Path prefix for `/chat/completions`, `/embeddings`, `/models`.
    pub base_path: String,
    /// Query string appended to every path (Azure's `api-version=…`).
    pub query: String,
    /// Azure: a deployment fixed by `azureServiceUrl` (else the mapped model names it).
    pub deployment: Option<String>,
    pub auth: Auth,
    /// Custom auth header name (`authHeaderKey`).
    pub auth_header: Option<String>,
    pub claude_version: String,
    /// Anthropic requires `max_tokens`; used when the client gave none.
    pub default_max_tokens: u64,
    pub models: Vec<String>,
    /// Seconds a refused key is set aside.
    pub key_cooldown_seconds: u64,
    pub gemini: GeminiSettings,
    /// Bedrock: the region, and the credentials that sign requests (without API keys).
    pub aws: Option<AwsSettings>,
    /// Bedrock: `additionalModelRequestFields` merged into every request.
    pub bedrock_fields: Map<String, Value>,
    /// Vertex AI: where to call, and how to get an access token.
    pub vertex: Option<VertexSettings>,
    /// Everything secret in this provider's config, masked in whatever the provider says back.
    pub secrets: Secrets,
}

#[derive(Debug)]
pub struct VertexSettings {
    pub region: String,
    pub project_id: String,
    /// The service account whose tokens authorise requests; `None` in express mode (API keys).
    pub service_account: Option<Rc<ServiceAccount>>,
    /// The Envoy cluster of Google's token endpoint.
    pub auth_cluster: String,
    /// A token is replaced this long before it expires.
    pub refresh_ahead_ms: u64,
}

#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub region: String,
    pub credentials: Option<AwsCredentials>,
}

/// Gemini and Vertex (Gemini models) request settings.
#[derive(Debug, Clone, Default)]
pub struct GeminiSettings {
    /// Path version of the Gemini API (`v1beta`).
    pub api_version: String,
    /// `safetySettings` sent with every request: (category, threshold).
    pub safety: Vec<(String, String)>,
    /// `thinkingConfig.thinkingBudget` when the client sets no reasoning effort.
    pub thinking_budget: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    provider: Option<Value>,
    providers: Option<Vec<Value>>,
    active_provider_id: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    metadata_namespace: Option<String>,
    max_request_bytes: Option<usize>,
    max_event_bytes: Option<usize>,
    #[serde(default)]
    passthrough_paths: Vec<String>,
    #[serde(default)]
    forward_headers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProvider {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    api_tokens: Vec<String>,
    #[serde(default)]
    model_mapping: Map<String, Value>,
    provider_domain: Option<String>,
    base_path: Option<String>,
    openai_custom_url: Option<String>,
    azure_service_url: Option<String>,
    auth_header_key: Option<String>,
    claude_version: Option<String>,
    default_max_tokens: Option<u64>,
    cloudflare_account_id: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    api_token_cooldown: Option<u64>,
    api_version: Option<String>,
    #[serde(default)]
    gemini_safety_setting: Map<String, Value>,
    gemini_thinking_budget: Option<i64>,
    aws_access_key: Option<String>,
    aws_secret_key: Option<String>,
    aws_session_token: Option<String>,
    aws_region: Option<String>,
    #[serde(default)]
    bedrock_additional_fields: Map<String, Value>,
    vertex_region: Option<String>,
    vertex_project_id: Option<String>,
    vertex_auth_key: Option<String>,
    vertex_auth_service_name: Option<String>,
    vertex_token_refresh_ahead: Option<u64>,
    // Higress keys whose job Envoy does here (route timeouts, retries, health checks): accepted
    // so that Higress configs load, and otherwise unused.
    #[serde(rename = "timeout")]
    _timeout: Option<Value>,
    #[serde(rename = "failover")]
    _failover: Option<Value>,
    #[serde(rename = "retryOnFailure")]
    _retry_on_failure: Option<Value>,
    #[serde(rename = "protocol")]
    _protocol: Option<Value>,
}

/// The error of a `serde` parse, with the JSON path of the offending key.
fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ConfigError> {
    match value {
        Value::Object(map) => parse_object(&map),
        other => Err(ConfigError::new(
            "",
            format!("expected an object, got {other}"),
        )),
    }
}

impl Config {
    pub fn from_map(map: &Map<String, Value>) -> Result<Config, ConfigError> {
        let raw: RawConfig = parse(Value::Object(map.clone()))?;
        let mut providers = Vec::new();
        if let Some(provider) = raw.provider {
            providers.push(Rc::new(
                Provider::parse(provider).map_err(|e| e.under("provider"))?,
            ));
        }
        for (i, provider) in raw.providers.unwrap_or_default().into_iter().enumerate() {
            let provider =
                Provider::parse(provider).map_err(|e| e.under(&format!("providers[{i}]")))?;
            if providers.iter().any(|p: &Rc<Provider>| p.id == provider.id) {
                return Err(ConfigError::new(
                    format!("providers[{i}].id"),
                    format!("duplicate id {:?}", provider.id),
                ));
            }
            providers.push(Rc::new(provider));
        }
        let active =
            match &raw.active_provider_id {
                Some(id) => Some(providers.iter().find(|p| &p.id == id).cloned().ok_or_else(
                    || ConfigError::new("activeProviderId", format!("no provider has id {id:?}")),
                )?),
                None if providers.len() == 1 => providers.first().cloned(),
                None => None,
            };
        Ok(Config {
            providers,
            active,
            models: raw.models,
            metadata_namespace: raw.metadata_namespace.unwrap_or_else(|| "aigw".into()),
            max_request_bytes: raw.max_request_bytes.unwrap_or(DEFAULT_BODY_LIMIT),
            max_event_bytes: event_bound::configured(raw.max_event_bytes)
                .map_err(|why| ConfigError::new("maxEventBytes", why))?,
            passthrough: raw
                .passthrough_paths
                .iter()
                .enumerate()
                .map(|(i, entry)| {
                    PassthroughPath::parse(entry)
                        .map_err(|e| ConfigError::new(format!("passthroughPaths[{i}]"), e))
                })
                .collect::<Result<_, _>>()?,
            forward_headers: HeaderAllowList::new(&raw.forward_headers)
                .map_err(|e| ConfigError::new("forwardHeaders", e))?,
        })
    }

    /// Does `passthroughPaths` let `method path` through to the provider?
    pub fn passes_through(&self, method: &str, path: &str) -> bool {
        self.passthrough.iter().any(|p| p.matches(method, path))
    }

    pub fn provider(&self, id: &str) -> Option<&Rc<Provider>> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// Does this instance translate towards providers (else it is only the client edge)?
    pub fn has_providers(&self) -> bool {
        !self.providers.is_empty()
    }

    /// Model ids for `GET /v1/models`: configured lists and exact mapping keys, deduplicated.
    pub fn model_ids(&self) -> Vec<(String, &'static str)> {
        let mut ids: Vec<(String, &'static str)> = Vec::new();
        let mut push = |id: &str, owner: &'static str| {
            if !id.is_empty() && !ids.iter().any(|(known, _)| known == id) {
                ids.push((id.to_string(), owner));
            }
        };
        for id in &self.models {
            push(id, "gateway");
        }
        for p in &self.providers {
            p.models.iter().for_each(|id| push(id, p.kind.name));
            let mut exact: Vec<&str> = p.mapping.exact_names().collect();
            exact.sort_unstable();
            exact.into_iter().for_each(|id| push(id, p.kind.name));
        }
        ids
    }
}

impl Provider {
    fn parse(value: Value) -> Result<Provider, ConfigError> {
        let raw: RawProvider = parse(value)?;
        let kind = provider_type(&raw.kind).ok_or_else(|| {
            ConfigError::new(
                "type",
                format!(
                    "unknown provider type {:?}; known: {}",
                    raw.kind,
                    type_names()
                ),
            )
        })?;
        let mapping =
            ModelMapping::parse(&raw.model_mapping).map_err(|e| e.under("modelMapping"))?;
        if raw
            .api_tokens
            .iter()
            .any(|t| t.trim().is_empty() || t.contains(['\r', '\n']))
        {
            return Err(ConfigError::new(
                "apiTokens",
                "keys must be non-empty single-line strings",
            ));
        }
        let aws = aws_settings(&raw, kind)?;
        let vertex = vertex_settings(&raw, kind)?;
        let signs = aws.as_ref().is_some_and(|a| a.credentials.is_some())
            || vertex.as_ref().is_some_and(|v| v.service_account.is_some());
        if raw.api_tokens.is_empty()
            && kind.auth != Auth::None
            && raw.auth_header_key.is_none()
            && !signs
        {
            return Err(ConfigError::new(
                "apiTokens",
                format!("provider type {} needs at least one key", kind.name),
            ));
        }
        let mut authority = kind.host.to_string();
        let mut base_path = raw
            .base_path
            .clone()
            .unwrap_or_else(|| kind.base_path.to_string());
        let mut query = String::new();
        let mut deployment = None;
        if let Some(url) = &raw.openai_custom_url {
            let (host, path, _) =
                split_url(url).map_err(|e| ConfigError::new("openaiCustomUrl", e))?;
            authority = host;
            base_path = path
                .strip_suffix("/chat/completions")
                .unwrap_or(&path)
                .trim_end_matches('/')
                .to_string();
        }
        if kind.wire == WireFormat::Azure {
            let url = raw
                .azure_service_url
                .as_deref()
                .ok_or_else(|| ConfigError::new("azureServiceUrl", "is required for type azure"))?;
            let (host, path, url_query) =
                split_url(url).map_err(|e| ConfigError::new("azureServiceUrl", e))?;
            authority = host;
            deployment = path
                .split("/deployments/")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .filter(|d| !d.is_empty())
                .map(str::to_string);
            let version = url_query
                .split('&')
                .find_map(|kv| kv.strip_prefix("api-version="))
                .unwrap_or("2024-10-21");
            query = format!("api-version={version}");
        }
        if let Some(account) = &raw.cloudflare_account_id {
            base_path = base_path.replace("{account}", account);
        }
        if base_path.contains("{account}") {
            return Err(ConfigError::new(
                "cloudflareAccountId",
                "is required for type cloudflare",
            ));
        }
        if let Some(aws) = &aws {
            authority = format!("bedrock-runtime.{}.amazonaws.com", aws.region);
        }
        if let Some(vertex) = &vertex {
            authority = match vertex.region.as_str() {
                "global" => "aiplatform.googleapis.com".to_string(),
                region => format!("{region}-aiplatform.googleapis.com"),
            };
        }
        if let Some(domain) = raw.provider_domain {
            authority = domain;
        }
        if authority.is_empty() {
            return Err(ConfigError::new(
                "providerDomain",
                format!("provider type {} has no default address: set providerDomain or openaiCustomUrl", kind.name),
            ));
        }
        let gemini = GeminiSettings {
            api_version: raw.api_version.unwrap_or_else(|| "v1beta".into()),
            safety: string_map(&raw.gemini_safety_setting).map_err(|e| {
                ConfigError::new(format!("geminiSafetySetting.{e}"), "must be a string")
            })?,
            thinking_budget: raw.gemini_thinking_budget,
        };
        let secrets = Secrets::new(
            raw.api_tokens
                .iter()
                .chain(&raw.aws_secret_key)
                .chain(&raw.aws_session_token)
                .map(String::as_str)
                .chain(vertex.iter().filter_map(|v| {
                    v.service_account
                        .as_ref()
                        .map(|a| a.private_key_id.as_str())
                })),
        );
        Ok(Provider {
            id: raw.id.unwrap_or_else(|| kind.name.to_string()),
            kind,
            keys: KeyRing::new(raw.api_tokens),
            mapping,
            authority,
            base_path,
            query,
            deployment,
            auth: kind.auth,
            auth_header: raw.auth_header_key.map(|h| h.to_ascii_lowercase()),
            claude_version: raw.claude_version.unwrap_or_else(|| "2023-06-01".into()),
            default_max_tokens: raw.default_max_tokens.unwrap_or(4096),
            models: raw.models,
            key_cooldown_seconds: raw.api_token_cooldown.unwrap_or(60),
            gemini,
            aws,
            bedrock_fields: raw.bedrock_additional_fields,
            vertex,
            secrets,
        })
    }

    /// The path for an API, with the provider's prefix and query. A model that names an Azure
    /// deployment must be a plain name: anything else could reach another resource with the
    /// provider's key.
    pub fn path(&self, suffix: &str, model: &str) -> Result<String, ApiError> {
        let path = match (self.kind.wire, suffix) {
            (WireFormat::Azure, _) => {
                let deployment = match self.deployment.as_deref() {
                    Some(deployment) => deployment,
                    None if model.is_empty() => "",
                    None => path_model(model)?,
                };
                format!("/openai/deployments/{deployment}{suffix}")
            }
            (_, "/chat/completions")
                if self.kind.chat_path.is_some() && self.base_path == self.kind.base_path =>
            {
                self.kind.chat_path.unwrap_or_default().to_string()
            }
            _ => format!("{}{suffix}", self.base_path),
        };
        Ok(if self.query.is_empty() {
            path
        } else {
            format!("{path}?{}", self.query)
        })
    }

    /// The header and value carrying key `key`.
    pub fn auth_header(&self, key: &str) -> Option<(String, String)> {
        if self.keys.is_empty() {
            // Providers whose requests are signed, or carry a fetched token, instead.
            return None;
        }
        if let Some(name) = &self.auth_header {
            let value = if name == "authorization" {
                format!("Bearer {key}")
            } else {
                key.to_string()
            };
            return Some((name.clone(), value));
        }
        match self.auth {
            Auth::Bearer => Some(("authorization".into(), format!("Bearer {key}"))),
            Auth::Header(name) => Some((name.to_string(), key.to_string())),
            Auth::None => None,
        }
    }
}

/// Bedrock's region and signing credentials (`awsAccessKey` and `awsSecretKey` together).
fn aws_settings(
    raw: &RawProvider,
    kind: &ProviderType,
) -> Result<Option<AwsSettings>, ConfigError> {
    if kind.wire != WireFormat::Bedrock {
        return Ok(None);
    }
    let region = raw
        .aws_region
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ConfigError::new("awsRegion", "is required for type bedrock"))?;
    let credentials = match (&raw.aws_access_key, &raw.aws_secret_key) {
        (Some(id), Some(secret)) => Some(AwsCredentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: raw.aws_session_token.clone(),
        }),
        (None, None) => None,
        (None, _) => {
            return Err(ConfigError::new(
                "awsAccessKey",
                "is required with awsSecretKey",
            ))
        }
        (_, None) => {
            return Err(ConfigError::new(
                "awsSecretKey",
                "is required with awsAccessKey",
            ))
        }
    };
    Ok(Some(AwsSettings {
        region,
        credentials,
    }))
}

/// Vertex AI's region, project and service account (`vertexAuthKey`, the key file's JSON);
/// without a key, `apiTokens` are express-mode API keys.
fn vertex_settings(
    raw: &RawProvider,
    kind: &ProviderType,
) -> Result<Option<VertexSettings>, ConfigError> {
    if kind.wire != WireFormat::Vertex {
        return Ok(None);
    }
    let region = raw.vertex_region.clone().unwrap_or_else(|| "global".into());
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ConfigError::new(
            "vertexRegion",
            format!("{region:?} is not a region"),
        ));
    }
    let service_account = match raw.vertex_auth_key.as_deref() {
        None => None,
        Some(json) => Some(Rc::new(
            ServiceAccount::parse(json).map_err(|e| ConfigError::new("vertexAuthKey", e))?,
        )),
    };
    let project_id = raw
        .vertex_project_id
        .clone()
        .or_else(|| service_account.as_ref().and_then(|a| a.project_id.clone()))
        .unwrap_or_default();
    let auth_cluster = raw.vertex_auth_service_name.clone().unwrap_or_default();
    if service_account.is_some() {
        if project_id.is_empty() {
            return Err(ConfigError::new(
                "vertexProjectId",
                "is required with vertexAuthKey",
            ));
        }
        if auth_cluster.is_empty() {
            return Err(ConfigError::new(
                "vertexAuthServiceName",
                "is required with vertexAuthKey (the Envoy cluster of oauth2.googleapis.com)",
            ));
        }
    }
    Ok(Some(VertexSettings {
        region,
        project_id,
        service_account,
        auth_cluster,
        refresh_ahead_ms: raw.vertex_token_refresh_ahead.unwrap_or(300) * 1000,
    }))
}

/// The entries of a JSON object of strings; `Err` names the first key whose value is not one.
fn string_map(map: &Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(k.clone()),
        })
        .collect()
}

/// `scheme://host[:port]/path?query` → (host[:port], path, query).
fn split_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    Ok((authority.to_string(), path.to_string(), query.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Result<Config, ConfigError> {
        Config::from_map(v.as_object().unwrap())
    }

    #[test]
    fn passthrough_paths_forward_headers_and_secrets() {
        let c = config(json!({"passthroughPaths": ["GET /v1/files*"], "forwardHeaders": ["x-team-*"],
            "provider": {"type": "bedrock", "awsRegion": "us-east-1", "awsAccessKey": "AKIA0123456789",
                         "awsSecretKey": "secret/key+0123456789", "awsSessionToken": "session-token-0123"}}))
        .unwrap();
        assert!(c.passes_through("GET", "/v1/files/f1"));
        assert!(!c.passes_through("POST", "/v1/files"));
        assert!(c.forward_headers.allows("x-team-a"));
        let secrets = &c.active.as_ref().unwrap().secrets;
        let masked = secrets.masked("secret/key+0123456789 and session-token-0123");
        assert!(
            !masked.contains("secret/key") && !masked.contains("session-token"),
            "{masked}"
        );
        let err = config(json!({"passthroughPaths": ["/v1/files"]})).unwrap_err();
        assert_eq!(err.path, "passthroughPaths[0]");
        let err = config(json!({"forwardHeaders": ["bad header"]})).unwrap_err();
        assert_eq!(err.path, "forwardHeaders");
    }

    #[test]
    fn single_provider_is_active() {
        let c = config(json!({"provider": {"type": "openai", "apiTokens": ["sk-1"]}})).unwrap();
        let p = c.active.as_ref().unwrap();
        assert_eq!(
            (p.id.as_str(), p.authority.as_str()),
            ("openai", "api.openai.com")
        );
        assert_eq!(
            p.path("/chat/completions", "m").unwrap(),
            "/v1/chat/completions"
        );
        assert_eq!(
            p.auth_header("sk-1"),
            Some(("authorization".into(), "Bearer sk-1".into()))
        );
    }

    #[test]
    fn table_paths() {
        let path = |t: &str, extra: Value| {
            let mut p = json!({"type": t, "apiTokens": ["k"]});
            p.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let c = config(json!({"provider": p})).unwrap();
            let p = c.active.unwrap();
            (
                p.authority.clone(),
                p.path("/chat/completions", "m").unwrap(),
            )
        };
        assert_eq!(
            path("zhipuai", json!({})),
            (
                "open.bigmodel.cn".into(),
                "/api/paas/v4/chat/completions".into()
            )
        );
        assert_eq!(path("groq", json!({})).1, "/openai/v1/chat/completions");
        assert_eq!(path("minimax", json!({})).1, "/v1/text/chatcompletion_v2");
        assert_eq!(path("perplexity", json!({})).1, "/chat/completions");
        assert_eq!(
            path("claude", json!({})),
            ("api.anthropic.com".into(), "/v1/messages".into())
        );
        assert_eq!(
            path("cloudflare", json!({"cloudflareAccountId": "acc"})).1,
            "/client/v4/accounts/acc/ai/v1/chat/completions"
        );
        assert_eq!(
            path(
                "generic",
                json!({"openaiCustomUrl": "http://llm.internal:8000/api/v1/chat/completions"})
            ),
            (
                "llm.internal:8000".into(),
                "/api/v1/chat/completions".into()
            )
        );
        assert_eq!(
            path(
                "qwen",
                json!({"providerDomain": "dashscope-intl.aliyuncs.com"})
            )
            .0,
            "dashscope-intl.aliyuncs.com"
        );
    }

    #[test]
    fn azure_url_gives_host_deployment_and_version() {
        let c = config(json!({"provider": {"type": "azure", "apiTokens": ["k"],
            "azureServiceUrl": "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-12-01-preview"}}))
        .unwrap();
        let p = c.active.unwrap();
        assert_eq!(p.authority, "res.openai.azure.com");
        assert_eq!(
            p.path("/chat/completions", "ignored").unwrap(),
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-12-01-preview"
        );
        assert_eq!(p.auth_header("k"), Some(("api-key".into(), "k".into())));
        let c = config(json!({"provider": {"type": "azure", "apiTokens": ["k"], "azureServiceUrl": "https://res.openai.azure.com"}})).unwrap();
        let p = c.active.unwrap();
        assert_eq!(
            p.path("/embeddings", "text-embedding-3-small").unwrap(),
            "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
        );
        // The model names the deployment: it must not climb out of it.
        for model in [
            "../../files",
            "gpt-4o/../../x",
            "m?api-version=1",
            "a b",
            "..",
        ] {
            assert_eq!(
                p.path("/chat/completions", model).unwrap_err().status,
                400,
                "{model}"
            );
        }
    }

    #[test]
    fn errors_name_the_key() {
        let err = |v: Value| config(v).unwrap_err().to_string();
        assert!(
            err(json!({"provider": {"type": "nope", "apiTokens": ["k"]}}))
                .starts_with("provider.type: unknown provider type \"nope\"")
        );
        assert_eq!(
            err(json!({"provider": {"type": "openai"}})),
            "provider.apiTokens: provider type openai needs at least one key"
        );
        assert!(
            err(json!({"provider": {"type": "openai", "apiTokens": ["k"], "apiTokenz": 1}}))
                .contains("apiTokenz")
        );
        assert_eq!(
            err(json!({"provider": {"type": "vllm", "apiTokens": ["k"]}}))
                .split(':')
                .next()
                .unwrap(),
            "provider.providerDomain"
        );
        assert_eq!(
            err(
                json!({"providers": [{"type": "openai", "apiTokens": ["k"]}], "activeProviderId": "x"})
            ),
            "activeProviderId: no provider has id \"x\""
        );
        assert!(err(
            json!({"provider": {"type": "openai", "apiTokens": ["k"], "modelMapping": {"~(": "x"}}})
        )
        .starts_with("provider.modelMapping.~(:"));
        assert_eq!(
            err(
                json!({"providers": [{"type": "openai", "apiTokens": ["k"]}, {"type": "openai", "apiTokens": ["k"]}]})
            ),
            "providers[1].id: duplicate id \"openai\""
        );
        assert!(
            err(json!({"provider": {"type": "openai", "apiTokens": [3]}}))
                .starts_with("provider.apiTokens[0]")
        );
    }

    #[test]
    fn no_provider_is_the_client_edge_only() {
        let c = config(json!({})).unwrap();
        assert!(!c.has_providers() && c.active.is_none());
    }

    #[test]
    fn local_servers_need_no_key_and_higress_keys_load() {
        let c = config(json!({"provider": {"type": "ollama", "timeout": 30000, "failover": {"enabled": false}}})).unwrap();
        assert_eq!(c.active.unwrap().auth_header("x"), None);
    }

    #[test]
    fn model_ids_from_lists_and_exact_mappings() {
        let c = config(json!({"models": ["a"], "providers": [
            {"id": "p1", "type": "openai", "apiTokens": ["k"], "models": ["b", "a"], "modelMapping": {"c": "x", "d*": "y"}}
        ]}))
        .unwrap();
        let ids: Vec<_> = c.model_ids().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec!["a", "b", "c"]);
    }
}
