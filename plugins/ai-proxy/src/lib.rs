//! ai-proxy: both edges of the canonical format. Clients speak the OpenAI API or Anthropic's
//! Messages API; providers get their native API. Works as a downstream filter (one provider per
//! route, the Higress way) and as an upstream HTTP filter on the route's cluster, where each
//! attempt takes its provider (and optionally its model) from the chosen endpoint's metadata.
//! In both positions the request headers wait for the body (`allow_on_headers_stop_iteration`
//! in the filter config), because the provider's path and headers depend on it.
//!
//! This file only moves bytes between Envoy and the pure translators in [`translate`].

pub mod config;
pub mod keys;
pub mod mapping;
pub mod models;
pub mod passthrough;
pub mod provider;
pub mod rs256;
pub mod translate;
pub mod vertex_auth;

use aigw_shared::body::is_html;
use aigw_shared::callout::{Callout, Outcome};
use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::event_bound::{self, Check, EventBound};
use aigw_shared::host::{self, Metrics};
use aigw_shared::metrics::series_prefix;
use aigw_shared::redact::Redactor;
use aigw_shared::rules::RuleSet;
use config::{Config, Provider};
use keys::{refuses_key, Cooldowns};
use provider::WireFormat;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use translate::canonical::path_model;
use translate::{Api, BodyMode, ClientAdapter, ProviderAdapter};
use vertex_auth::{parse_token_response, ServiceAccount, TokenCache, TokenPlan};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProxyRoot::default()) });
}}

/// Request headers that carry a client's credentials; never forwarded to a provider.
const CLIENT_CREDENTIALS: &[&str] = &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// How long a Vertex AI token request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

struct ProxyRoot {
    rules: Option<Rc<RuleSet<Config>>>,
    /// Vertex AI access tokens of this worker, shared by its requests.
    tokens: Rc<RefCell<TokenCache>>,
    metrics: Rc<RefCell<Metrics>>,
}

impl Default for ProxyRoot {
    fn default() -> Self {
        ProxyRoot {
            rules: None,
            tokens: Rc::default(),
            metrics: Rc::new(RefCell::new(Metrics::new("ai_proxy", 1000))),
        }
    }
}

impl Context for ProxyRoot {}

impl RootContext for ProxyRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.rules = host::load_rules("ai-proxy", Config::from_map).map(Rc::new);
        self.rules.is_some()
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProxyStream {
            rules: self.rules.clone()?,
            tokens: self.tokens.clone(),
            metrics: self.metrics.clone(),
            exchange: None,
            stale_token: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProxyStream {
    rules: Rc<RuleSet<Config>>,
    tokens: Rc<RefCell<TokenCache>>,
    metrics: Rc<RefCell<Metrics>>,
    /// `None` when no rule applies, and for local replies.
    exchange: Option<Exchange>,
    /// A still-valid access token this request replaces; used if the replacement fails.
    stale_token: Option<String>,
}

/// One request on its way through the plugin.
struct Exchange {
    config: Rc<Config>,
    api: Api,
    /// The path the client asked for.
    client_path: String,
    /// Running as an upstream filter, after Envoy picked the route and the host.
    upstream: bool,
    client: Box<dyn ClientAdapter>,
    /// The provider edge, when this instance has providers.
    provider: Option<(Rc<Provider>, Box<dyn ProviderAdapter>)>,
    /// Model named by the endpoint's metadata; overrides the mapping for this attempt.
    model_override: Option<String>,
    /// Anthropic client to an Anthropic provider: the body passes as it is.
    native: bool,
    key_index: Option<usize>,
    response: Option<ResponseFlow>,
    /// Masks the provider's secrets in everything it sends back.
    redactor: Redactor,
}

/// How the response body is handled, decided at the response headers.
struct ResponseFlow {
    /// The strictest mode of the stages that translate.
    mode: BodyMode,
    /// Which of the two edges translate this body (the others pass it through).
    provider_translates: bool,
    client_translates: bool,
    /// Bounds the event being read of a translated stream.
    bound: EventBound,
}

impl Context for ProxyStream {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let outcome = host::callout_response(body_size);
        let Some(provider_id) = self.provider_id() else {
            return;
        };
        let now = host::now_ms();
        match outcome
            .success()
            .and_then(|body| parse_token_response(body, now))
        {
            Ok(token) => {
                self.count_token(&provider_id, "token_fetches");
                self.set_bearer(&token.token);
                self.tokens.borrow_mut().put(&provider_id, token);
                host::resume_request();
            }
            Err(why) => {
                let status = match outcome {
                    Outcome::TimedOut => 504,
                    Outcome::Unreachable(_) => 503,
                    Outcome::Answered { .. } => 502,
                };
                if self.token_failed(&provider_id, status, &why) == Action::Continue {
                    host::resume_request();
                }
            }
        }
    }
}

impl HttpContext for ProxyStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = host::request_rule(&self.rules) else {
            return Action::Continue;
        };
        let method = host::request_header(":method").unwrap_or_default();
        // Only an upstream filter knows its upstream host when the request starts.
        let upstream = host::property(&["upstream", "address"]).is_some();
        let path = client_path(upstream);
        let api = Api::of(&method, &path);
        if api == Api::Other && !config.passes_through(&method, &path) {
            let err = passthrough::not_served(&method, &path);
            return self.reject(&err, passthrough::client_api_of(&path));
        }

        let (provider, model_override) = match select_provider(&config, upstream) {
            Ok(selected) => selected,
            Err(err) => return self.reject(&err, ClientApi::OpenAi),
        };
        if matches!(api, Api::Models | Api::Model) {
            // Answered from the configuration when it names models, else by the provider.
            let models = config.model_ids();
            if !models.is_empty() {
                let answer = match translate::model_of(&path) {
                    Some(id) if api == Api::Model => models::retrieve(&models, id),
                    _ => Ok(models::list(&models)),
                };
                return match answer {
                    Ok(body) => {
                        host::send_response(200, &[("content-type", "application/json")], &body);
                        Action::Pause
                    }
                    Err(err) => self.reject(&err, ClientApi::OpenAi),
                };
            }
        }
        let client = translate::client_adapter(api);
        let native = api == Api::Messages
            && provider
                .as_ref()
                .is_some_and(|p| p.kind.wire == WireFormat::Claude);
        let redactor = Redactor::new(
            provider
                .as_ref()
                .map(|p| p.secrets.clone())
                .unwrap_or_default(),
        );
        let provider = provider.map(|p| {
            let adapter = translate::provider_adapter(&p, host::now_ms() / 1000);
            (p, adapter)
        });
        let mut exchange = Exchange {
            config,
            api,
            client_path: path,
            upstream,
            client,
            provider,
            model_override,
            native,
            key_index: None,
            response: None,
            redactor,
        };
        let needs_body =
            matches!(api, Api::Chat | Api::Messages | Api::Embeddings) && !end_of_stream;
        if !needs_body {
            if exchange.provider.is_none() {
                return Action::Continue;
            }
            if let Err(err) = exchange.address_provider("") {
                return self.reject(&err, exchange.client.api());
            }
            self.exchange = Some(exchange);
            return Action::Continue;
        }
        // Path, host and credentials depend on the body: hold the headers until it is read (the
        // filter is configured with `allow_on_headers_stop_iteration`, so the body still
        // reaches it), in both filter positions.
        host::set_request_header("content-length", None);
        self.exchange = Some(exchange);
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(exchange) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        if !matches!(exchange.api, Api::Chat | Api::Messages | Api::Embeddings) {
            return Action::Continue;
        }
        if body_size > exchange.config.max_request_bytes {
            let err = ApiError::too_large(exchange.config.max_request_bytes);
            let api = exchange.client.api();
            return self.reject(&err, api);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = host::request_body(body_size).unwrap_or_default();
        match exchange.translate_request(&body) {
            Ok(new_body) => {
                if let Err(status) = host::set_request_body(0, body_size, &new_body) {
                    log::warn!(
                        "ai-proxy: could not replace the request body: host status {status}"
                    );
                }
                self.authorize()
            }
            Err(err) => {
                let api = exchange.client.api();
                self.reject(&err, api)
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(exchange) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        let headers = host::ResponseHeaders::read();
        exchange.redact_headers(&headers);
        let mut status = headers.status();
        if exchange.provider.is_some()
            && status < 300
            && headers.get("content-type").is_some_and(is_html)
            && exchange.api != Api::Other
        {
            // A web page is no API answer (a proxy's or a captive portal's error page): a 502,
            // which Envoy may retry on another provider, with the page as the error message.
            status = 502;
            host::set_response_header(":status", Some("502"));
        }
        if refuses_key(status) {
            exchange.cool_down_key(headers.get("retry-after"));
        }
        let mut content_type = headers.get("content-type").unwrap_or("").to_string();
        let mut flow = ResponseFlow {
            mode: BodyMode::Passthrough,
            provider_translates: false,
            client_translates: false,
            bound: EventBound::new(
                event_bound::framing_of(&content_type),
                exchange.config.max_event_bytes,
            ),
        };
        if !exchange.native {
            if let Some((_, adapter)) = exchange.provider.as_mut() {
                let plan = adapter.plan(status, &content_type);
                flow.provider_translates = plan.mode != BodyMode::Passthrough;
                flow.mode = flow.mode.max(plan.mode);
                content_type = plan.content_type.map_or(content_type, str::to_string);
            }
            if matches!(exchange.api, Api::Chat | Api::Messages) {
                let plan = exchange.client.plan(status, &content_type);
                flow.client_translates = plan.mode != BodyMode::Passthrough;
                flow.mode = flow.mode.max(plan.mode);
                content_type = plan.content_type.map_or(content_type, str::to_string);
            }
        }
        if flow.mode != BodyMode::Passthrough {
            host::set_response_header("content-length", None);
            host::set_response_header("content-type", Some(&content_type));
        }
        exchange.response = Some(flow);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(exchange) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        let Some(flow) = exchange.response.as_mut() else {
            return Action::Continue;
        };
        let mode = flow.mode;
        if mode == BodyMode::Whole && !end_of_stream {
            return Action::Pause;
        }
        if mode == BodyMode::Passthrough && exchange.redactor.is_idle() {
            return Action::Continue;
        }
        let input = if body_size > 0 {
            host::response_body(body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let output = match mode {
            BodyMode::Passthrough => exchange.redactor.push(&input, end_of_stream),
            _ => {
                let was_tripped = flow.bound.tripped();
                let check = if mode == BodyMode::Stream {
                    flow.bound.check(&input)
                } else {
                    Check::Within
                };
                let output = match check {
                    Check::Within => exchange.translate_response(&input, end_of_stream),
                    Check::Tripped { .. } if was_tripped => Vec::new(),
                    Check::Tripped { keep } => {
                        let provider = exchange.provider_id();
                        count_rare(&self.metrics, provider, "stream_events_too_large");
                        exchange.end_oversized_stream(&input[..keep])
                    }
                };
                let redacted = exchange.redactor.push(&output, end_of_stream);
                Some(redacted.unwrap_or(output))
            }
        };
        if let Some(output) = output {
            if let Err(status) = host::set_response_body(0, body_size, &output) {
                log::warn!("ai-proxy: could not replace the response body: host status {status}");
            }
        }
        Action::Continue
    }
}

impl ProxyStream {
    /// Providers authorised by a fetched access token (Vertex AI with a service account) get
    /// it here: from the cache, or by pausing the request until the token endpoint answers.
    fn authorize(&mut self) -> Action {
        let Some(provider) = self
            .exchange
            .as_ref()
            .and_then(|e| e.provider.as_ref())
            .map(|(p, _)| p.clone())
        else {
            return Action::Continue;
        };
        let Some(vertex) = provider.vertex.as_ref() else {
            return Action::Continue;
        };
        let Some(account) = vertex.service_account.as_ref() else {
            return Action::Continue;
        };
        let now = host::now_ms();
        let patience = TOKEN_TIMEOUT.as_millis() as u64;
        let plan =
            self.tokens
                .borrow_mut()
                .plan(&provider.id, now, vertex.refresh_ahead_ms, patience);
        match plan {
            TokenPlan::Use(token) => {
                self.set_bearer(&token);
                Action::Continue
            }
            TokenPlan::Fetch { stale } => {
                self.stale_token = stale;
                match host::dispatch(&token_request(account, &vertex.auth_cluster, now)) {
                    Ok(_) => Action::Pause,
                    Err(why) => self.token_failed(&provider.id, 503, &why),
                }
            }
        }
    }

    /// Authorises the request with an access token, which from now on is masked in the answer
    /// like the configured keys.
    fn set_bearer(&mut self, token: &str) {
        host::set_request_header("authorization", Some(&format!("Bearer {token}")));
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.redactor.add_secret(token);
        }
    }

    /// A token request failed: the request goes on with the token it replaces while that is
    /// still valid, else it is refused (fail closed: Vertex AI takes nothing else).
    fn token_failed(&mut self, provider_id: &str, status: u16, why: &str) -> Action {
        log::warn!("ai-proxy: no Vertex AI access token for provider {provider_id}: {why}");
        self.count_token(provider_id, "token_failures");
        if let Some(stale) = self.stale_token.take() {
            self.set_bearer(&stale);
            return Action::Continue;
        }
        let api = self
            .exchange
            .as_ref()
            .map_or(ClientApi::OpenAi, |e| e.client.api());
        let err = ApiError::upstream(status, format!("Vertex AI access token unavailable: {why}"));
        self.reject(&err, api)
    }

    fn provider_id(&self) -> Option<String> {
        let (provider, _) = self.exchange.as_ref()?.provider.as_ref()?;
        Some(provider.id.clone())
    }

    fn count_token(&self, provider: &str, metric: &'static str) {
        count_rare(&self.metrics, provider, metric);
    }

    /// Answers the client with a gateway error in its API's shape, and stops processing.
    fn reject(&mut self, err: &ApiError, api: ClientApi) -> Action {
        log::info!("ai-proxy: refused request: {err}");
        self.exchange = None;
        host::send_response(
            err.status,
            &[("content-type", "application/json")],
            &err.body(api),
        );
        Action::Pause
    }
}

/// The callout that exchanges a freshly signed assertion for an access token.
fn token_request(account: &ServiceAccount, cluster: &str, now_ms: u64) -> Callout {
    let (authority, path) = account.token_endpoint();
    Callout {
        cluster: cluster.to_string(),
        method: "POST",
        path,
        authority,
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: ServiceAccount::token_request_body(&account.assertion(now_ms / 1000)),
        timeout: TOKEN_TIMEOUT,
    }
}

/// Filter state where an upstream instance keeps the client's path once it has rewritten
/// `:path`. Filter state, not a header: a client can send any header, and the provider would
/// receive it.
const CLIENT_PATH_STATE: &str = "ai_proxy.client_path";

/// The path the client asked for. Upstream, a retry gets the header map the previous attempt
/// rewrote, so the client's path is read from where the first rewrite saved it.
fn client_path(upstream: bool) -> String {
    upstream
        .then(|| host::property_string(&[CLIENT_PATH_STATE]))
        .flatten()
        .or_else(|| host::request_header(":path"))
        .unwrap_or_default()
}

/// Points the request at `path`, saving the client's path first in the upstream position.
fn set_path(upstream: bool, path: &str) {
    if upstream && host::property(&[CLIENT_PATH_STATE]).is_none() {
        if let Some(client) = host::request_header(":path") {
            if let Err(status) = host::set_filter_state(CLIENT_PATH_STATE, client.as_bytes()) {
                log::warn!("ai-proxy: could not keep the client's path: host status {status}");
            }
        }
    }
    host::set_request_header(":path", Some(path));
}

/// The provider for this request: the one the upstream endpoint names, else the active one.
fn select_provider(
    config: &Config,
    upstream: bool,
) -> Result<(Option<Rc<Provider>>, Option<String>), ApiError> {
    if !config.has_providers() {
        return Ok((None, None));
    }
    let metadata = |key: &str| {
        upstream
            .then(|| {
                host::property_string(&[
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

impl Exchange {
    /// The model to ask the provider for.
    fn provider_model(&self, provider: &Provider, client_model: &str) -> String {
        self.model_override
            .clone()
            .unwrap_or_else(|| provider.mapping.resolve(client_model))
    }

    /// Sets path, host and credentials for the provider. Headers are set or removed, never
    /// added: in the upstream position every attempt shares one header map. Downstream, Envoy
    /// matches the route again on the new path, so the route must also match the provider's
    /// path (a catch-all prefix, or a match on a header `forwardHeaders` keeps).
    fn address_provider(&mut self, model: &str) -> Result<(), ApiError> {
        let Some((provider, adapter)) = self.provider.as_ref() else {
            return Ok(());
        };
        let suffix = match self.api {
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
                let id = translate::model_of(&self.client_path).unwrap_or_default();
                format!("/models/{}", path_model(id)?)
            }
            Api::Other => String::new(),
        };
        let native_path = match self.api {
            Api::Chat | Api::Messages => adapter.chat_path(),
            _ => None,
        };
        if let Some(path) = native_path {
            set_path(self.upstream, &path);
        } else if !suffix.is_empty() {
            let model = if model.is_empty() {
                String::new()
            } else {
                self.provider_model(provider, model)
            };
            set_path(self.upstream, &provider.path(&suffix, &model)?);
        }
        // Envoy picks the route again when a downstream filter changes request headers; a new
        // `:authority` could select another virtual host. Downstream, the route sets the host
        // (`auto_host_rewrite` / `host_rewrite_literal`); upstream the route is already fixed.
        if self.upstream {
            host::set_request_header(":authority", Some(&provider.authority));
        }
        let headers = host::request_headers();
        let names = headers.iter().map(|(name, _)| name.as_str());
        for name in self.config.forward_headers.removed(names) {
            host::set_request_header(name, None);
        }
        for name in CLIENT_CREDENTIALS
            .iter()
            .chain(translate::PROVIDER_HEADERS)
            .chain(&["accept-encoding"])
        {
            host::set_request_header(name, None);
        }
        if !provider.keys.is_empty() {
            let cooldowns = if provider.keys.len() > 1 {
                read_cooldowns(&provider.id)
            } else {
                Cooldowns::default()
            };
            self.key_index = provider.keys.pick(&cooldowns, host::now_ms());
        }
        let key = self
            .key_index
            .and_then(|i| provider.keys.key(i))
            .unwrap_or("");
        if let Some((name, value)) = provider.auth_header(key) {
            host::set_request_header(&name, Some(&value));
        }
        for (name, value) in adapter.extra_headers() {
            host::set_request_header(name, Some(&value));
        }
        host::set_request_header("content-type", Some("application/json"));
        Ok(())
    }

    /// Turns the client's request body into what goes upstream.
    fn translate_request(&mut self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let client_model = translate::peek_model(body).unwrap_or_default();
        if self.api == Api::Embeddings || self.native {
            // Same API on both sides: only the model changes.
            return match self.provider.as_ref() {
                Some((provider, _)) => {
                    let model = self.provider_model(provider, &client_model);
                    self.address_provider(&client_model)?;
                    with_model(body, &model)
                }
                None => Ok(body.to_vec()),
            };
        }
        let request = self.client.request(body)?;
        match self.provider.as_mut() {
            Some((provider, adapter)) => {
                let model = self
                    .model_override
                    .clone()
                    .unwrap_or_else(|| provider.mapping.resolve(&request.model));
                let out = adapter.chat_request(request, &model)?;
                self.address_provider(&client_model)?;
                Ok(out)
            }
            None => {
                // The client edge alone: pass the canonical request on, on the same route prefix,
                // labelled JSON whatever the client said, so that no plugin after this one
                // skips a body it would only read as JSON (a guardrail bypassed by
                // `content-type: text/plain`).
                if self.api == Api::Messages {
                    set_path(self.upstream, &translate::chat_path_for(&self.client_path));
                }
                host::set_request_header("content-type", Some("application/json"));
                serde_json::to_vec(&request)
                    .map_err(|e| ApiError::new(500, "server_error", e.to_string()))
            }
        }
    }

    /// Runs a piece of the response through the provider edge, then the client edge; an edge
    /// that does not translate this response passes it on as it is.
    fn translate_response(&mut self, input: &[u8], end: bool) -> Vec<u8> {
        let (provider_translates, client_translates) =
            self.response.as_ref().map_or((false, false), |f| {
                (f.provider_translates, f.client_translates)
            });
        let mut canonical = Vec::new();
        let canonical: &[u8] = match self.provider.as_mut() {
            Some((_, adapter)) if provider_translates => {
                adapter.translate(input, end, &mut canonical);
                &canonical
            }
            _ => input,
        };
        if !client_translates {
            return canonical.to_vec();
        }
        let mut out = Vec::with_capacity(canonical.len() + 64);
        self.client.translate(canonical, end, &mut out);
        out
    }

    fn provider_id(&self) -> &str {
        self.provider
            .as_ref()
            .map_or("none", |(p, _)| p.id.as_str())
    }

    /// The provider sent an event past `maxEventBytes`: what came before it is translated, then
    /// the stream ends with an error in the client's API; the rest of the body is dropped.
    fn end_oversized_stream(&mut self, complete: &[u8]) -> Vec<u8> {
        let limit = self.config.max_event_bytes;
        log::warn!("ai-proxy: a stream event passed maxEventBytes ({limit} bytes); the stream was ended with an error");
        let client_translates = self.response.as_ref().is_some_and(|f| f.client_translates);
        let api = if client_translates {
            self.client.api()
        } else {
            ClientApi::OpenAi
        };
        let mut out = self.translate_response(complete, false);
        out.extend(event_bound::stream_error_tail(api, limit, false));
        out
    }

    /// Sets the key this request used aside, shared by all workers.
    fn cool_down_key(&self, retry_after: Option<&str>) {
        let (Some((provider, _)), Some(index)) = (self.provider.as_ref(), self.key_index) else {
            return;
        };
        if provider.keys.len() < 2 {
            return;
        }
        let seconds = retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(provider.key_cooldown_seconds)
            .clamp(1, 3600);
        let now = host::now_ms();
        let key = cooldown_key(&provider.id);
        host::shared_update(&key, |current| {
            let mut cooldowns = Cooldowns::decode(current.unwrap_or_default());
            cooldowns.set(index, now + seconds * 1000, now);
            Some(cooldowns.encode())
        });
        log::info!(
            "ai-proxy: provider {} key #{index} set aside for {seconds} s",
            provider.id
        );
    }

    /// Masks the provider's secrets in the headers it answered with.
    fn redact_headers(&self, headers: &host::ResponseHeaders) {
        let Some((provider, _)) = self.provider.as_ref() else {
            return;
        };
        for (name, value) in headers.all() {
            let masked = provider.secrets.masked(value);
            if masked != *value {
                host::set_response_header(name, Some(&masked));
            }
        }
    }
}

/// Counts a rare event of a provider (token fetches and failures, oversized stream events),
/// written at once rather than on a timer.
fn count_rare(metrics: &RefCell<Metrics>, provider: &str, metric: &'static str) {
    let mut metrics = metrics.borrow_mut();
    if let Some(series) = metrics.series(&series_prefix(&[("provider", provider)])) {
        series.counter(metric, 1);
    }
    metrics.flush();
}

fn cooldown_key(provider_id: &str) -> String {
    format!("aigw.ai-proxy.key-cooldown.{provider_id}")
}

fn read_cooldowns(provider_id: &str) -> Cooldowns {
    Cooldowns::decode(
        &host::shared_get(&cooldown_key(provider_id))
            .0
            .unwrap_or_default(),
    )
}

/// The JSON body with its `model` replaced (other fields untouched).
fn with_model(body: &[u8], model: &str) -> Result<Vec<u8>, ApiError> {
    let mut value: serde_json::Value = translate::parse_request(body)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("model".into(), serde_json::Value::String(model.to_string()));
    }
    serde_json::to_vec(&value).map_err(|e| ApiError::new(500, "server_error", e.to_string()))
}
