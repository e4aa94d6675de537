//! Provider selection and addressing: which provider serves a request (the one the upstream
//! endpoint's metadata names, else the active one), and the path, host and credentials the
//! request gets for it.

use crate::config::{Config, Provider};
use crate::keys::{read_cooldowns, Cooldowns};
use crate::translate::{self, canonical::path_model, Api, ProviderAdapter};
use aigw_shared::error::ApiError;
use aigw_shared::stage::{Cx, Env};
use std::rc::Rc;

/// Request headers that carry a client's credentials; never forwarded to a provider.
const CLIENT_CREDENTIALS: &[&str] = &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Filter state where an upstream instance keeps the client's path once it has rewritten
/// `:path`. Filter state, not a header: a client can send any header, and the provider would
/// receive it.
const CLIENT_PATH_STATE: &str = "ai_proxy.client_path";

/// Only an upstream filter knows its upstream host when the request starts.
pub fn is_upstream(env: &dyn Env) -> bool {
    env.property(&["upstream", "address"]).is_some()
}

/// The path the client asked for. Upstream, a retry gets the header map the previous attempt
/// rewrote, so the client's path is read from where the first rewrite saved it.
pub fn client_path(env: &dyn Env, upstream: bool) -> String {
    upstream
        .then(|| env.property_string(&[CLIENT_PATH_STATE]))
        .flatten()
        .or_else(|| env.request_header(":path"))
        .unwrap_or_default()
}

/// Points the request at `path`, saving the client's path first in the upstream position.
pub fn set_path(cx: &mut Cx, upstream: bool, path: &str) {
    if upstream && cx.env.property(&[CLIENT_PATH_STATE]).is_none() {
        if let Some(client) = cx.env.request_header(":path") {
            cx.effects
                .set_filter_state(CLIENT_PATH_STATE, client.into_bytes());
        }
    }
    cx.effects.set_request_header(":path", Some(path));
}

/// The provider for this request (`None` when the config has none: the client edge alone),
/// and the model the upstream endpoint names for it.
pub fn select_provider(
    config: &Config,
    env: &dyn Env,
    upstream: bool,
) -> Result<(Option<Rc<Provider>>, Option<String>), ApiError> {
    if !config.has_providers() {
        return Ok((None, None));
    }
    let metadata = |key: &str| {
        upstream
            .then(|| {
                env.property_string(&[
                    "xds",
                    "upstream_host_metadata",
                    "filter_metadata",
                    &config.metadata_namespace,
                    key,
                ])
            })
            .flatten()
            .filter(|v| !v.is_empty())
    };
    let model = metadata("model");
    let provider = match metadata("provider") {
        Some(id) => config.provider(&id).cloned().ok_or_else(|| {
            ApiError::new(500, "server_error", format!("the upstream endpoint names provider {id:?}, which ai-proxy does not configure"))
        })?,
        None => config.active.clone().ok_or_else(|| {
            ApiError::new(500, "server_error", "several providers are configured but none is active (set activeProviderId)")
        })?,
    };
    Ok((Some(provider), model))
}

/// Where a request goes: what the client asked for, and from which filter position.
pub struct Target<'a> {
    pub api: Api,
    pub client_path: &'a str,
    pub upstream: bool,
}

/// Sets path, host and credentials for the provider, and returns the index of the key it
/// chose. `model` is the provider's model, empty when the client named none. Headers are set
/// or removed, never added: in the upstream position every attempt shares one header map.
/// Downstream, Envoy matches the route again on the new path, so the route must also match
/// the provider's path (a catch-all prefix, or a match on a header `forwardHeaders` keeps).
pub fn address(
    cx: &mut Cx,
    config: &Config,
    provider: &Provider,
    adapter: &dyn ProviderAdapter,
    target: &Target,
    model: &str,
) -> Result<Option<usize>, ApiError> {
    let suffix = match target.api {
        Api::Chat | Api::Messages => "/chat/completions".to_string(),
        Api::Embeddings => {
            if !provider.kind.embeddings {
                return Err(ApiError::invalid_request(
                    None,
                    format!("provider type {} has no embeddings API", provider.kind.name),
                ));
            }
            "/embeddings".to_string()
        }
        Api::Models => "/models".to_string(),
        Api::Model => {
            let id = translate::model_of(target.client_path).unwrap_or_default();
            format!("/models/{}", path_model(id)?)
        }
        Api::Other => String::new(),
    };
    let native_path = match target.api {
        Api::Chat | Api::Messages => adapter.chat_path(),
        _ => None,
    };
    if let Some(path) = native_path {
        set_path(cx, target.upstream, &path);
    } else if !suffix.is_empty() {
        set_path(cx, target.upstream, &provider.path(&suffix, model)?);
    }
    // Envoy picks the route again when a downstream filter changes request headers; a new
    // `:authority` could select another virtual host. Downstream, the route sets the host
    // (`auto_host_rewrite` / `host_rewrite_literal`); upstream the route is already fixed.
    if target.upstream {
        cx.effects
            .set_request_header(":authority", Some(&provider.authority));
    }
    let headers = cx.env.request_headers();
    let names = headers.iter().map(|(name, _)| name.as_str());
    for name in config.forward_headers.removed(names) {
        cx.effects.set_request_header(name, None);
    }
    for name in CLIENT_CREDENTIALS
        .iter()
        .chain(translate::PROVIDER_HEADERS)
        .chain(&["accept-encoding"])
    {
        cx.effects.set_request_header(name, None);
    }
    let mut key_index = None;
    if !provider.keys.is_empty() {
        let cooldowns = if provider.keys.len() > 1 {
            read_cooldowns(cx.env.store(), &provider.id)
        } else {
            Cooldowns::default()
        };
        key_index = provider.keys.pick(&cooldowns, cx.env.now_ms());
    }
    let key = key_index.and_then(|i| provider.keys.key(i)).unwrap_or("");
    if let Some((name, value)) = provider.auth_header(key) {
        cx.effects.set_request_header(&name, Some(&value));
    }
    for (name, value) in adapter.extra_headers() {
        cx.effects.set_request_header(name, Some(&value));
    }
    cx.effects
        .set_request_header("content-type", Some("application/json"));
    Ok(key_index)
}
