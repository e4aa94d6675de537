//! The proxy stage: which API a request speaks and which provider serves it, the request
//! through the [`Pipeline`] of the two edges, the access token a provider may need first, and
//! the answer back through the same pipeline. In both filter positions the request headers
//! wait for the body (`allow_on_headers_stop_iteration`), because the provider's path and
//! headers depend on it.

use crate::addressing::{client_path, is_upstream, select_provider};
use crate::config::{Config, Provider};
use crate::pipeline::Pipeline;
use crate::translate::{self, Api};
use crate::vertex_auth::{
    parse_token_response, token_request, TokenCache, TokenPlan, TOKEN_TIMEOUT,
};
use crate::{models, passthrough};
use aigw_shared::callout::Outcome;
use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::metrics::series_prefix;
use aigw_shared::rules::RuleSet;
use aigw_shared::stage::{
    rule_for, BodyUse, Configured, Cx, Env, Plugin, Reply, RequestBody, ResponseChunk,
    ResponseHead, Stage, Step,
};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

/// Labelled series per provider are few; this bounds a config with very many.
const MAX_METRIC_SERIES: usize = 1000;

#[derive(Default)]
pub struct Proxy {
    rules: Option<Rc<RuleSet<Config>>>,
    /// Vertex AI access tokens of this worker, shared by its requests.
    tokens: Rc<RefCell<TokenCache>>,
}

impl Plugin for Proxy {
    fn name(&self) -> &'static str {
        "ai-proxy"
    }

    fn metrics_owner(&self) -> &'static str {
        "ai_proxy"
    }

    fn configure(&mut self, config: &Value) -> Result<Configured, String> {
        let rules = RuleSet::parse(config, Config::from_map).map_err(|e| e.to_string())?;
        let configured = Configured {
            rules: rules.rule_count(),
            max_metric_series: MAX_METRIC_SERIES,
            tick: None,
        };
        self.rules = Some(Rc::new(rules));
        Ok(configured)
    }

    fn stage(&self, env: &dyn Env) -> Option<Box<dyn Stage>> {
        let config = rule_for(self.rules.as_ref()?, env)?;
        Some(Box::new(ProxyStage {
            config,
            tokens: self.tokens.clone(),
            pipeline: None,
            reads_body: false,
            stale_token: None,
        }))
    }
}

pub struct ProxyStage {
    config: Rc<Config>,
    tokens: Rc<RefCell<TokenCache>>,
    /// `None` when this stage has nothing to do with the request.
    pipeline: Option<Pipeline>,
    /// The body is translated before the request goes on.
    reads_body: bool,
    /// A still-valid access token this request replaces; used if the replacement fails.
    stale_token: Option<String>,
}

/// The tag of the token request.
const TOKEN_CALLOUT: u32 = 1;

/// A gateway error in the client's API.
fn reject(err: &ApiError, api: ClientApi) -> Step {
    log::info!("ai-proxy: refused request: {err}");
    Step::Respond(Reply::error(err, api))
}

impl ProxyStage {
    fn client_api(&self) -> ClientApi {
        self.pipeline
            .as_ref()
            .map_or(ClientApi::OpenAi, |p| p.client.api())
    }

    /// Models are answered from the configuration when it names them, else by the provider.
    fn models_answer(&self, api: Api, path: &str) -> Option<Step> {
        let models = self.config.model_ids();
        if models.is_empty() {
            return None;
        }
        let answer = match translate::model_of(path) {
            Some(id) if api == Api::Model => models::retrieve(&models, id),
            _ => Ok(models::list(&models)),
        };
        Some(match answer {
            Ok(body) => Step::Respond(Reply::json(200, body)),
            Err(err) => reject(&err, ClientApi::OpenAi),
        })
    }

    fn provider(&self) -> Option<Rc<Provider>> {
        let (provider, _) = self.pipeline.as_ref()?.provider.as_ref()?;
        Some(provider.clone())
    }

    /// Providers authorised by a fetched access token (Vertex AI with a service account) get
    /// it here: from the cache, or by holding the request until the token endpoint answers.
    fn authorize(&mut self, cx: &mut Cx) -> Step {
        let Some(provider) = self.provider() else {
            return Step::Continue;
        };
        let Some(vertex) = provider.vertex.as_ref() else {
            return Step::Continue;
        };
        let Some(account) = vertex.service_account.as_ref() else {
            return Step::Continue;
        };
        let now = cx.env.now_ms();
        let patience = TOKEN_TIMEOUT.as_millis() as u64;
        let plan =
            self.tokens
                .borrow_mut()
                .plan(&provider.id, now, vertex.refresh_ahead_ms, patience);
        match plan {
            TokenPlan::Use(token) => {
                self.set_bearer(cx, &token);
                Step::Continue
            }
            TokenPlan::Fetch { stale } => {
                self.stale_token = stale;
                cx.effects.call(
                    TOKEN_CALLOUT,
                    token_request(account, &vertex.auth_cluster, now),
                );
                Step::Hold
            }
        }
    }

    /// Authorises the request with an access token, which from now on is masked in the answer
    /// like the configured keys.
    fn set_bearer(&mut self, cx: &mut Cx, token: &str) {
        cx.effects
            .set_request_header("authorization", Some(&format!("Bearer {token}")));
        if let Some(pipeline) = self.pipeline.as_mut() {
            pipeline.redactor.add_secret(token);
        }
    }

    /// A token request failed: the request goes on with the token it replaces while that is
    /// still valid, else it is refused (fail closed: Vertex AI takes nothing else).
    fn token_failed(&mut self, cx: &mut Cx, provider_id: &str, status: u16, why: &str) -> Step {
        log::warn!("ai-proxy: no Vertex AI access token for provider {provider_id}: {why}");
        count(cx, provider_id, "token_failures");
        if let Some(stale) = self.stale_token.take() {
            self.set_bearer(cx, &stale);
            return Step::Continue;
        }
        let err = ApiError::upstream(status, format!("Vertex AI access token unavailable: {why}"));
        reject(&err, self.client_api())
    }
}

/// Counts a rare event of a provider (token fetches and failures).
fn count(cx: &mut Cx, provider: &str, metric: &'static str) {
    cx.effects
        .count(&series_prefix(&[("provider", provider)]), metric, 1);
}

impl Stage for ProxyStage {
    fn on_request_headers(&mut self, cx: &mut Cx, end_of_stream: bool) -> Step {
        let method = cx.env.request_header(":method").unwrap_or_default();
        let upstream = is_upstream(cx.env);
        let path = client_path(cx.env, upstream);
        let api = Api::of(&method, &path);
        if api == Api::Other && !self.config.passes_through(&method, &path) {
            let err = passthrough::not_served(&method, &path);
            return reject(&err, passthrough::client_api_of(&path));
        }
        let (provider, model_override) = match select_provider(&self.config, cx.env, upstream) {
            Ok(selected) => selected,
            Err(err) => return reject(&err, ClientApi::OpenAi),
        };
        if matches!(api, Api::Models | Api::Model) {
            if let Some(answer) = self.models_answer(api, &path) {
                return answer;
            }
        }
        let has_provider = provider.is_some();
        let mut pipeline = Pipeline::new(
            self.config.clone(),
            api,
            path,
            upstream,
            provider,
            model_override,
            cx.env.now_ms() / 1000,
        );
        self.reads_body =
            matches!(api, Api::Chat | Api::Messages | Api::Embeddings) && !end_of_stream;
        if !self.reads_body {
            if !has_provider {
                return Step::Continue;
            }
            if let Err(err) = pipeline.address_without_body(cx) {
                return reject(&err, pipeline.client.api());
            }
            self.pipeline = Some(pipeline);
            return Step::Continue;
        }
        // The translated body has another length.
        cx.effects.set_request_header("content-length", None);
        // It is read as JSON whatever the client labelled it, and goes on labelled JSON: the
        // stages after this one see that at once, so none skips a body it reads only as JSON.
        cx.effects
            .set_request_header("content-type", Some("application/json"));
        self.pipeline = Some(pipeline);
        Step::Continue
    }

    fn request_body_use(&self) -> BodyUse {
        if self.reads_body {
            BodyUse::Change {
                max_bytes: self.config.max_request_bytes,
            }
        } else {
            BodyUse::None
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx, body: &mut RequestBody) -> Step {
        let max_bytes = self.config.max_request_bytes;
        let Some(pipeline) = self.pipeline.as_mut() else {
            return Step::Continue;
        };
        let api = pipeline.client.api();
        let Some(bytes) = body.bytes(max_bytes) else {
            return reject(&ApiError::too_large(max_bytes), api);
        };
        match pipeline.translate_request(cx, bytes) {
            Ok(new_body) => {
                body.replace(new_body);
                self.authorize(cx)
            }
            Err(err) => reject(&err, api),
        }
    }

    fn on_callout(&mut self, cx: &mut Cx, _tag: u32, outcome: Outcome) -> Step {
        let Some(provider) = self.provider() else {
            return Step::Continue;
        };
        let now = cx.env.now_ms();
        match outcome
            .success()
            .and_then(|body| parse_token_response(body, now))
        {
            Ok(token) => {
                count(cx, &provider.id, "token_fetches");
                self.set_bearer(cx, &token.token);
                self.tokens.borrow_mut().put(&provider.id, token);
                Step::Continue
            }
            Err(why) => {
                let status = match outcome {
                    Outcome::TimedOut => 504,
                    Outcome::Unreachable(_) => 503,
                    Outcome::Answered { .. } => 502,
                };
                self.token_failed(cx, &provider.id, status, &why)
            }
        }
    }

    fn on_response_headers(&mut self, cx: &mut Cx, head: &ResponseHead, _end: bool) -> Step {
        if let Some(pipeline) = self.pipeline.as_mut() {
            pipeline.on_response_head(cx, head);
        }
        Step::Continue
    }

    fn wants_response_body(&self) -> bool {
        self.pipeline
            .as_ref()
            .is_some_and(Pipeline::reads_response_body)
    }

    fn buffers_response_body(&self) -> bool {
        self.pipeline
            .as_ref()
            .is_some_and(Pipeline::needs_whole_response)
    }

    fn on_response_body(&mut self, cx: &mut Cx, chunk: &mut ResponseChunk) -> Step {
        let Some(pipeline) = self.pipeline.as_mut() else {
            return Step::Continue;
        };
        if let Some(output) = pipeline.on_response_body(cx, chunk.bytes(), chunk.end) {
            chunk.replace(output);
        }
        Step::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::stage::{Effects, FakeEnv};
    use serde_json::json;

    fn proxy(config: Value) -> Proxy {
        let mut proxy = Proxy::default();
        proxy.configure(&config).unwrap();
        proxy
    }

    fn openai() -> Proxy {
        proxy(
            json!({"provider": {"id": "openai", "type": "openai", "apiTokens": ["sk-one"],
            "modelMapping": {"gpt-4o": "gpt-4o-2024-11-20"}}}),
        )
    }

    fn request(method: &str, path: &str) -> FakeEnv {
        FakeEnv::default()
            .with_header(":method", method)
            .with_header(":path", path)
            .with_header("authorization", "Bearer client-key")
    }

    fn header<'a>(effects: &'a Effects, name: &str) -> Option<Option<&'a str>> {
        effects
            .request_headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    #[test]
    fn an_api_the_gateway_does_not_translate_never_goes_upstream() {
        let env = request("GET", "/v1/files");
        let mut stage = openai().stage(&env).unwrap();
        let mut effects = Effects::default();
        let step = stage.on_request_headers(
            &mut Cx {
                env: &env,
                effects: &mut effects,
            },
            true,
        );
        let Step::Respond(reply) = step else {
            panic!("forwarded: {step:?}");
        };
        assert_eq!(reply.status, 404);
        assert!(String::from_utf8_lossy(&reply.body).contains("/v1/files"));
        assert!(effects.request_headers.is_empty());
    }

    #[test]
    fn a_chat_request_is_mapped_addressed_and_keyed_once_its_body_is_read() {
        let env = request("POST", "/v1/chat/completions");
        let mut stage = openai().stage(&env).unwrap();
        let mut effects = Effects::default();
        let mut cx = Cx {
            env: &env,
            effects: &mut effects,
        };
        assert_eq!(stage.on_request_headers(&mut cx, false), Step::Continue);
        assert!(matches!(stage.request_body_use(), BodyUse::Change { .. }));
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        let mut body = RequestBody::new(Some(body.to_vec()), body.len());
        assert_eq!(stage.on_request_body(&mut cx, &mut body), Step::Continue);
        let sent: Value = serde_json::from_slice(&body.take_bytes()).unwrap();
        assert_eq!(sent["model"], "gpt-4o-2024-11-20");
        assert_eq!(header(&effects, "content-length"), Some(None));
        assert_eq!(
            header(&effects, ":path"),
            Some(Some("/v1/chat/completions"))
        );
        assert_eq!(
            header(&effects, "authorization"),
            Some(Some("Bearer sk-one"))
        );
    }

    #[test]
    fn a_body_past_the_limit_is_refused_in_the_clients_api() {
        let env = request("POST", "/v1/messages");
        let mut stage = openai().stage(&env).unwrap();
        let mut effects = Effects::default();
        let mut cx = Cx {
            env: &env,
            effects: &mut effects,
        };
        stage.on_request_headers(&mut cx, false);
        let mut body = RequestBody::new(None, 100 << 20);
        let Step::Respond(reply) = stage.on_request_body(&mut cx, &mut body) else {
            panic!("a body past the limit went on");
        };
        assert_eq!(reply.status, 413);
        let error: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(error["type"], "error", "Anthropic's error shape: {error}");
    }

    fn vertex(token_cluster: &str) -> Proxy {
        proxy(
            json!({"provider": {"id": "vertex", "type": "vertex", "vertexRegion": "us-east5",
            "vertexProjectId": "p", "vertexAuthServiceName": token_cluster,
            "vertexAuthKey": include_str!("../../../e2e/testdata/test-only-service-account.json")}}),
        )
    }

    /// Runs a Vertex request up to its token: the step after the body, and the effects.
    fn vertex_request(proxy: &Proxy, env: &FakeEnv) -> (Box<dyn Stage>, Step, Effects) {
        let mut stage = proxy.stage(env).unwrap();
        let mut effects = Effects::default();
        let mut cx = Cx {
            env,
            effects: &mut effects,
        };
        stage.on_request_headers(&mut cx, false);
        let body = br#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#;
        let mut body = RequestBody::new(Some(body.to_vec()), body.len());
        let step = stage.on_request_body(&mut cx, &mut body);
        (stage, step, effects)
    }

    #[test]
    fn a_vertex_request_waits_for_its_token_and_the_next_uses_the_cached_one() {
        let proxy = vertex("google-auth");
        let env = request("POST", "/v1/chat/completions");
        let (mut stage, step, effects) = vertex_request(&proxy, &env);
        assert_eq!(step, Step::Hold);
        assert_eq!(effects.callouts.len(), 1);
        assert_eq!(effects.callouts[0].1.cluster, "google-auth");
        let mut effects = Effects::default();
        let answer = br#"{"access_token":"ya29.fresh","expires_in":3599,"token_type":"Bearer"}"#;
        let outcome = Outcome::Answered {
            status: 200,
            body: answer.to_vec(),
        };
        let step = stage.on_callout(
            &mut Cx {
                env: &env,
                effects: &mut effects,
            },
            TOKEN_CALLOUT,
            outcome,
        );
        assert_eq!(step, Step::Continue);
        assert_eq!(
            header(&effects, "authorization"),
            Some(Some("Bearer ya29.fresh"))
        );

        let (_, step, effects) = vertex_request(&proxy, &env);
        assert_eq!(
            step,
            Step::Continue,
            "the cached token serves the next request"
        );
        assert!(effects.callouts.is_empty());
        assert_eq!(
            header(&effects, "authorization"),
            Some(Some("Bearer ya29.fresh"))
        );
    }

    #[test]
    fn without_a_token_a_vertex_request_is_refused() {
        let proxy = vertex("google-auth");
        let env = request("POST", "/v1/chat/completions");
        let (mut stage, _, _) = vertex_request(&proxy, &env);
        let mut effects = Effects::default();
        let outcome = Outcome::Unreachable("no healthy upstream".into());
        let step = stage.on_callout(
            &mut Cx {
                env: &env,
                effects: &mut effects,
            },
            TOKEN_CALLOUT,
            outcome,
        );
        let Step::Respond(reply) = step else {
            panic!("went on without a token: {step:?}");
        };
        assert_eq!(reply.status, 503);
        assert!(!String::from_utf8_lossy(&reply.body).contains("PRIVATE KEY"));
    }
}
