//! One request through the two edges of the canonical format: the client edge (the client's
//! API ⇄ canonical) and the provider edge (canonical ⇄ the provider's wire format). Each
//! request gets its own adapters, so two streams never share state.

use crate::addressing::{self, Target};
use crate::config::{Config, Provider};
use crate::keys::{cool_down, refuses_key};
use crate::provider::WireFormat;
use crate::translate::{self, Api, BodyMode, ClientAdapter, ProviderAdapter};
use aigw_shared::body::is_html;
use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::event_bound::{self, Check, EventBound};
use aigw_shared::metrics::series_prefix;
use aigw_shared::openai::ChatRequest;
use aigw_shared::redact::Redactor;
use aigw_shared::stage::{Cx, ResponseHead};
use std::rc::Rc;

pub struct Pipeline {
    pub config: Rc<Config>,
    pub api: Api,
    /// The path the client asked for.
    client_path: String,
    /// Running as an upstream filter, after Envoy picked the route and the host.
    upstream: bool,
    pub client: Box<dyn ClientAdapter>,
    /// The provider edge, when this instance has providers.
    pub provider: Option<(Rc<Provider>, Box<dyn ProviderAdapter>)>,
    /// Model named by the endpoint's metadata; overrides the mapping for this attempt.
    model_override: Option<String>,
    /// Anthropic client to an Anthropic provider: the body passes as it is.
    native: bool,
    key_index: Option<usize>,
    response: Option<ResponseFlow>,
    /// Masks the provider's secrets in everything it sends back.
    pub redactor: Redactor,
}

/// How the response body is handled, decided at the response headers.
struct ResponseFlow {
    /// The strictest mode of the edges that translate.
    mode: BodyMode,
    /// Which of the two edges translate this body (the others pass it through).
    provider_translates: bool,
    client_translates: bool,
    /// Bounds the event being read of a translated stream.
    bound: EventBound,
}

impl Pipeline {
    pub fn new(
        config: Rc<Config>,
        api: Api,
        client_path: String,
        upstream: bool,
        provider: Option<Rc<Provider>>,
        model_override: Option<String>,
        now_s: u64,
    ) -> Pipeline {
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
            let adapter = translate::provider_adapter(&p, now_s);
            (p, adapter)
        });
        Pipeline {
            config,
            api,
            client_path,
            upstream,
            client: translate::client_adapter(api),
            provider,
            model_override,
            native,
            key_index: None,
            response: None,
            redactor,
        }
    }

    pub fn provider_id(&self) -> &str {
        self.provider
            .as_ref()
            .map_or("none", |(p, _)| p.id.as_str())
    }

    /// The model to ask the provider for, resolved once per request.
    fn provider_model(&self, provider: &Provider, client_model: &str) -> String {
        self.model_override
            .clone()
            .unwrap_or_else(|| provider.mapping.resolve(client_model))
    }

    /// Addresses a request that has no body to translate.
    pub fn address_without_body(&mut self, cx: &mut Cx) -> Result<(), ApiError> {
        self.address(cx, "")
    }

    /// Sets path, host and credentials for the provider; `model` is the provider's model,
    /// empty when the client named none.
    fn address(&mut self, cx: &mut Cx, model: &str) -> Result<(), ApiError> {
        let Some((provider, adapter)) = self.provider.as_ref() else {
            return Ok(());
        };
        let target = Target {
            api: self.api,
            client_path: &self.client_path,
            upstream: self.upstream,
        };
        self.key_index =
            addressing::address(cx, &self.config, provider, adapter.as_ref(), &target, model)?;
        Ok(())
    }

    /// Turns the client's request body into what goes upstream, and addresses it. The
    /// provider's model is resolved once, for the body and the path.
    pub fn translate_request(&mut self, cx: &mut Cx, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let client_model = translate::peek_model(body).unwrap_or_default();
        if self.api == Api::Embeddings || self.native {
            // Same API on both sides: only the model changes.
            let Some((provider, _)) = self.provider.as_ref() else {
                return Ok(body.to_vec());
            };
            let model = self.provider_model(provider, &client_model);
            self.address(cx, path_model(&client_model, &model))?;
            return with_model(body, &model);
        }
        let request = self.client.request(body)?;
        let Some((provider, adapter)) = self.provider.as_mut() else {
            return self.client_edge_alone(cx, &request);
        };
        let model = self
            .model_override
            .clone()
            .unwrap_or_else(|| provider.mapping.resolve(&request.model));
        let out = adapter.chat_request(request, &model)?;
        self.address(cx, path_model(&client_model, &model))?;
        Ok(out)
    }

    /// The client edge alone: the canonical request goes on, on the same route prefix,
    /// labelled JSON whatever the client said, so that no stage after this one skips a body it
    /// would only read as JSON (a guardrail bypassed by `content-type: text/plain`).
    fn client_edge_alone(
        &mut self,
        cx: &mut Cx,
        request: &ChatRequest,
    ) -> Result<Vec<u8>, ApiError> {
        if self.api == Api::Messages {
            addressing::set_path(
                cx,
                self.upstream,
                &translate::chat_path_for(&self.client_path),
            );
        }
        cx.effects
            .set_request_header("content-type", Some("application/json"));
        serde_json::to_vec(request).map_err(|e| ApiError::new(500, "server_error", e.to_string()))
    }

    /// Decides how the response body is handled, and fixes its head: the provider's secrets
    /// masked, a web page in place of an answer made a 502, a refused key set aside.
    pub fn on_response_head(&mut self, cx: &mut Cx, head: &ResponseHead) {
        self.redact_headers(cx, head);
        let mut status = head.status();
        if self.provider.is_some()
            && status < 300
            && head.get("content-type").is_some_and(is_html)
            && self.api != Api::Other
        {
            // A web page is no API answer (a proxy's or a captive portal's error page): a 502,
            // which Envoy may retry on another provider, with the page as the error message.
            status = 502;
            cx.effects.set_response_header(":status", Some("502"));
        }
        if refuses_key(status) {
            self.cool_down_key(cx, head.get("retry-after"));
        }
        let mut content_type = head.content_type().to_string();
        let mut flow = ResponseFlow {
            mode: BodyMode::Passthrough,
            provider_translates: false,
            client_translates: false,
            bound: EventBound::new(
                event_bound::framing_of(&content_type),
                self.config.max_event_bytes,
            ),
        };
        if !self.native {
            if let Some((_, adapter)) = self.provider.as_mut() {
                let plan = adapter.plan(status, &content_type);
                flow.provider_translates = plan.mode != BodyMode::Passthrough;
                flow.mode = flow.mode.max(plan.mode);
                content_type = plan.content_type.map_or(content_type, str::to_string);
            }
            if matches!(self.api, Api::Chat | Api::Messages) {
                let plan = self.client.plan(status, &content_type);
                flow.client_translates = plan.mode != BodyMode::Passthrough;
                flow.mode = flow.mode.max(plan.mode);
                content_type = plan.content_type.map_or(content_type, str::to_string);
            }
        }
        if flow.mode != BodyMode::Passthrough {
            cx.effects.set_response_header("content-length", None);
            cx.effects
                .set_response_header("content-type", Some(&content_type));
        }
        self.response = Some(flow);
    }

    /// Whether the response body needs reading at all.
    pub fn reads_response_body(&self) -> bool {
        self.response
            .as_ref()
            .is_some_and(|f| f.mode != BodyMode::Passthrough || !self.redactor.is_idle())
    }

    /// Whether the response body is translated as one JSON document.
    pub fn needs_whole_response(&self) -> bool {
        self.response
            .as_ref()
            .is_some_and(|f| f.mode == BodyMode::Whole)
    }

    /// What the client gets for the next piece of the response; `None`: the piece as it is.
    pub fn on_response_body(&mut self, cx: &mut Cx, input: &[u8], end: bool) -> Option<Vec<u8>> {
        let flow = self.response.as_mut()?;
        let mode = flow.mode;
        if mode == BodyMode::Passthrough {
            return self.redactor.push(input, end);
        }
        let was_tripped = flow.bound.tripped();
        let check = if mode == BodyMode::Stream {
            flow.bound.check(input)
        } else {
            Check::Within
        };
        let output = match check {
            Check::Within => self.translate_response(input, end),
            Check::Tripped { .. } if was_tripped => Vec::new(),
            Check::Tripped { keep } => {
                let series = series_prefix(&[("provider", self.provider_id())]);
                cx.effects.count(&series, "stream_events_too_large", 1);
                self.end_oversized_stream(&input[..keep])
            }
        };
        let redacted = self.redactor.push(&output, end);
        Some(redacted.unwrap_or(output))
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

    /// Sets the key this request used aside, for every worker.
    fn cool_down_key(&self, cx: &mut Cx, retry_after: Option<&str>) {
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
        cool_down(
            cx.env.store(),
            &provider.id,
            index,
            seconds,
            cx.env.now_ms(),
        );
        log::info!(
            "ai-proxy: provider {} key #{index} set aside for {seconds} s",
            provider.id
        );
    }

    /// Masks the provider's secrets in the headers it answered with.
    fn redact_headers(&self, cx: &mut Cx, head: &ResponseHead) {
        let Some((provider, _)) = self.provider.as_ref() else {
            return;
        };
        for (name, value) in &head.headers {
            let masked = provider.secrets.masked(value);
            if masked != *value {
                cx.effects.set_response_header(name, Some(&masked));
            }
        }
    }
}

/// The model in the provider's path: none when the client named none.
fn path_model<'a>(client_model: &str, model: &'a str) -> &'a str {
    if client_model.is_empty() {
        ""
    } else {
        model
    }
}

/// The JSON body with its `model` replaced (other fields untouched).
fn with_model(body: &[u8], model: &str) -> Result<Vec<u8>, ApiError> {
    let mut value: serde_json::Value = translate::parse_request(body)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("model".into(), serde_json::Value::String(model.to_string()));
    }
    serde_json::to_vec(&value).map_err(|e| ApiError::new(500, "server_error", e.to_string()))
}
