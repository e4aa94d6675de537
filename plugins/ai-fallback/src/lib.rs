//! ai-fallback: what Envoy's own retries cannot see. Envoy fails over on statuses, resets,
//! refused connections and per-try timeouts (a route retry policy over a cluster whose
//! priorities are providers, each attempt translated by ai-proxy). This plugin adds:
//!
//! - on the provider cluster (an upstream filter, once per attempt): errors hidden in a 200
//!   (a JSON error, an error as the first stream event) become a 502 so that Envoy retries
//!   them, and each attempt's outcome feeds a circuit breaker per provider;
//! - in front (a downstream filter): the chain starts at the first provider whose circuit is
//!   closed (by naming the chain's cluster in a header the route reads), the answer says who
//!   served and after how many attempts, a request every provider failed gets one error that
//!   lists them, and a request refused for its length is sent again to a longer-context model.
//!
//! Both instances must share a VM (same `vm_id`): they share each request's attempt list.

pub mod attempts;
pub mod breaker;
pub mod config;
pub mod inspect;

use aigw_shared::body::BodyBuffer;
use aigw_shared::callout::Callout;
use aigw_shared::host::{self, Metrics};
use aigw_shared::metrics::series_prefix;
use aigw_shared::rules::RuleSet;
use attempts::{all_failed_body, all_failed_status, Attempt, Outcome};
use breaker::{Breaker, Decision};
use config::Config;
use inspect::{judge, worth_inspecting, Verdict};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FallbackRoot::default()) });
}}

/// Requests in flight at once whose attempts are kept (beyond it, attempts go unrecorded).
const MAX_TRACKED: usize = 10_000;

thread_local! {
    /// Each request's attempts, by request id, shared by the downstream instance and the
    /// upstream instances of the same worker (one VM).
    static ATTEMPTS: RefCell<HashMap<String, Vec<Attempt>>> = RefCell::new(HashMap::new());
}

fn attempts_of(request_id: &str, update: impl FnOnce(&mut Vec<Attempt>)) {
    ATTEMPTS.with(|all| {
        let mut all = all.borrow_mut();
        if all.len() < MAX_TRACKED || all.contains_key(request_id) {
            update(all.entry(request_id.to_string()).or_default());
        }
    });
}

fn take_attempts(request_id: &str) -> Vec<Attempt> {
    ATTEMPTS.with(|all| all.borrow_mut().remove(request_id).unwrap_or_default())
}

fn breaker_key(provider: &str) -> String {
    format!("aigw.ai-fallback.breaker.{provider}")
}

#[derive(Default)]
struct FallbackRoot {
    rules: Option<Rc<RuleSet<Config>>>,
    metrics: Option<Rc<RefCell<Metrics>>>,
}

impl Context for FallbackRoot {
    fn on_done(&mut self) -> bool {
        if let Some(metrics) = &self.metrics {
            metrics.borrow_mut().flush();
        }
        true
    }
}

impl RootContext for FallbackRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.rules = host::load_rules("ai-fallback", Config::from_map).map(Rc::new);
        self.metrics = Some(Rc::new(RefCell::new(Metrics::new("ai_fallback", 1000))));
        let _ = hostcalls::set_tick_period(host::METRICS_FLUSH_PERIOD);
        self.rules.is_some()
    }

    fn on_tick(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.borrow_mut().flush();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FallbackStream {
            rules: self.rules.clone()?,
            metrics: self.metrics.clone()?,
            role: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FallbackStream {
    rules: Rc<RuleSet<Config>>,
    metrics: Rc<RefCell<Metrics>>,
    role: Option<Role>,
}

enum Role {
    Front(Front),
    Attempt(AttemptWatch),
}

/// The downstream instance's view of a request.
struct Front {
    config: Rc<Config>,
    request_id: String,
    request_body: Option<BodyBuffer>,
    response: FrontResponse,
    /// The request's path, for sending it again (headers are gone by the response).
    path: String,
    /// The longer-context callout in flight.
    replay_token: Option<u32>,
}

#[derive(PartialEq, Eq)]
enum FrontResponse {
    /// Pass on as it is.
    Pass,
    /// Every provider failed: the body becomes the summary.
    Summarise(Vec<u8>),
    /// A 400 that may be a context-length refusal: hold it and look.
    CheckLength,
}

/// The upstream instance's view of one attempt.
struct AttemptWatch {
    config: Rc<Config>,
    request_id: String,
    provider: String,
    index: usize,
    content_type: String,
    inspecting: bool,
}

impl Context for FallbackStream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(Role::Front(front)) = self.role.as_mut() else {
            return;
        };
        if front.replay_token != Some(token_id) {
            return;
        }
        front.replay_token = None;
        let outcome = host::callout_response(body_size);
        match outcome.success() {
            Ok(body) => {
                let content_type = host::callout_header("content-type")
                    .unwrap_or_else(|| "application/json".into());
                host::set_response_header(":status", Some("200"));
                host::set_response_header("content-type", Some(&content_type));
                host::set_response_header("content-length", None);
                host::set_response_header("x-ai-fallback-reason", Some("context_length"));
                let held = host::response_body(usize::MAX).map_or(0, |b| b.len());
                if let Err(status) = host::set_response_body(0, held, body) {
                    log::warn!(
                        "ai-fallback: could not replace the refused answer: host status {status}"
                    );
                }
                self.count("context_length", "answered");
            }
            Err(why) => {
                log::info!("ai-fallback: longer-context fallback failed: {why}");
                self.count("context_length", "failed");
            }
        }
        host::resume_response();
    }
}

impl HttpContext for FallbackStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = host::request_rule(&self.rules) else {
            return Action::Continue;
        };
        let request_id = host::request_header("x-request-id").unwrap_or_default();
        if host::property(&["upstream", "address"]).is_some() {
            return self.start_attempt(config, request_id);
        }
        self.start_front(config, request_id, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if let Some(Role::Front(front)) = self.role.as_mut() {
            if let Some(buffer) = front.request_body.as_mut() {
                buffer.push(&host::request_body(body_size).unwrap_or_default());
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = host::ResponseHeaders::read();
        let status = headers.status();
        match self.role.as_mut() {
            Some(Role::Attempt(watch)) => {
                watch.content_type = headers.get("content-type").unwrap_or_default().to_string();
                let inspect = (200..300).contains(&status)
                    && watch.config.error_in_body
                    && !end_of_stream
                    && worth_inspecting(&watch.content_type);
                if inspect {
                    // Hold the headers until the first event shows whether this 200 is an error.
                    watch.inspecting = true;
                    return Action::Pause;
                }
                let outcome = if (200..300).contains(&status) {
                    Outcome::Answered
                } else {
                    Outcome::Status(status)
                };
                self.finish_attempt(outcome, None);
                Action::Continue
            }
            Some(Role::Front(_)) => self.front_response_headers(status, end_of_stream),
            None => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.role.as_mut() {
            Some(Role::Attempt(watch)) if watch.inspecting => {
                let held = host::response_body(body_size).unwrap_or_default();
                match judge(
                    &watch.content_type,
                    &held,
                    end_of_stream,
                    watch.config.max_inspect_bytes,
                ) {
                    Verdict::NeedMore => Action::Pause,
                    Verdict::Fine(model) => {
                        self.finish_attempt(Outcome::Answered, model);
                        Action::Continue
                    }
                    Verdict::Error(message) => {
                        // A 5xx is what Envoy's retry policy fails over on.
                        host::set_response_header(":status", Some("502"));
                        host::set_response_header(
                            "x-ai-fallback-error",
                            Some("error in a 200 answer"),
                        );
                        self.finish_attempt(Outcome::ErrorInBody(message), None);
                        Action::Continue
                    }
                }
            }
            Some(Role::Front(front)) => match &front.response {
                FrontResponse::Pass => Action::Continue,
                _ if !end_of_stream => Action::Pause,
                FrontResponse::Summarise(summary) => {
                    let summary = summary.clone();
                    if let Err(status) = host::set_response_body(0, body_size, &summary) {
                        log::warn!(
                            "ai-fallback: could not write the summary: host status {status}"
                        );
                    }
                    Action::Continue
                }
                FrontResponse::CheckLength => self.maybe_replay(body_size),
            },
            _ => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        if let Some(Role::Front(front)) = &self.role {
            take_attempts(&front.request_id);
        }
    }
}

impl FallbackStream {
    fn count(&self, provider: &str, outcome: &str) {
        let prefix = series_prefix(&[("provider", provider), ("outcome", outcome)]);
        if let Some(series) = self.metrics.borrow_mut().series(&prefix) {
            series.counter("fallback_attempts", 1);
        }
    }

    // ----- upstream instance: one attempt -----

    fn start_attempt(&mut self, config: Rc<Config>, request_id: String) -> Action {
        let ns = config.metadata_namespace.clone();
        let provider = host::property_string(&[
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            &ns,
            "provider",
        ])
        .unwrap_or_default();
        let mut index = 0;
        attempts_of(&request_id, |attempts| {
            index = attempts.len();
            attempts.push(Attempt {
                provider: provider.clone(),
                outcome: None,
                model: None,
            });
        });
        self.role = Some(Role::Attempt(AttemptWatch {
            config,
            request_id,
            provider,
            index,
            content_type: String::new(),
            inspecting: false,
        }));
        Action::Continue
    }

    fn finish_attempt(&mut self, outcome: Outcome, model: Option<String>) {
        let Some(Role::Attempt(watch)) = self.role.as_mut() else {
            return;
        };
        watch.inspecting = false;
        let success = !outcome.failed();
        attempts_of(&watch.request_id, |attempts| {
            if let Some(attempt) = attempts.get_mut(watch.index) {
                attempt.outcome = Some(outcome);
                attempt.model = model;
            }
        });
        if watch.config.circuit_breaker.enabled && !watch.provider.is_empty() {
            let config = watch.config.breaker();
            let now = host::now_ms();
            host::shared_update(&breaker_key(&watch.provider), |current| {
                let mut breaker = Breaker::decode(current.unwrap_or_default());
                breaker.record(success, now, &config);
                Some(breaker.encode())
            });
        }
    }

    // ----- downstream instance -----

    fn start_front(
        &mut self,
        config: Rc<Config>,
        request_id: String,
        end_of_stream: bool,
    ) -> Action {
        let mut skipped = Vec::new();
        let mut chosen = None;
        let now = host::now_ms();
        for link in &config.chain {
            let decision = if config.circuit_breaker.enabled {
                self.admit(&link.provider, &config, now)
            } else {
                Decision::Use
            };
            if decision == Decision::Skip {
                skipped.push(Attempt {
                    provider: link.provider.clone(),
                    outcome: Some(Outcome::CircuitOpen),
                    model: None,
                });
            } else {
                chosen = Some(link.cluster.clone());
                break;
            }
        }
        if chosen.is_none() && !config.chain.is_empty() {
            // The attempts are counted when the answer passes; this one is answered here.
            skipped
                .iter()
                .for_each(|a| self.count(&a.provider, "circuit_open"));
            // Every circuit is open: answer now rather than send traffic to known-bad providers.
            host::send_response(
                all_failed_status(&skipped),
                &[
                    ("content-type", "application/json"),
                    ("x-ai-fallback-attempts", "0"),
                ],
                &all_failed_body(&skipped),
            );
            return Action::Pause;
        }
        if let Some(cluster) = &chosen {
            host::set_request_header(&config.cluster_header, Some(cluster));
        }
        attempts_of(&request_id, |attempts| *attempts = skipped);
        let keep_body = config.context_length_fallback.is_some() && !end_of_stream;
        self.role = Some(Role::Front(Front {
            request_body: keep_body.then(|| BodyBuffer::new(config.max_request_bytes)),
            config,
            request_id,
            response: FrontResponse::Pass,
            path: host::request_header(":path").unwrap_or_default(),
            replay_token: None,
        }));
        Action::Continue
    }

    /// The breaker's decision for a provider; claims the probe when it is this request's.
    fn admit(&self, provider: &str, config: &Config, now: u64) -> Decision {
        let key = breaker_key(provider);
        let breaker = Breaker::decode(&host::shared_get(&key).0.unwrap_or_default());
        match breaker.decide(now) {
            Decision::Probe => {
                let breaker_config = config.breaker();
                let mut claimed = false;
                host::shared_update(&key, |current| {
                    let mut b = Breaker::decode(current.unwrap_or_default());
                    claimed = b.decide(now) == Decision::Probe;
                    if !claimed {
                        return None;
                    }
                    b.start_probe(now, &breaker_config);
                    Some(b.encode())
                });
                if claimed {
                    log::info!("ai-fallback: probing {provider} after its cool-down");
                    Decision::Probe
                } else {
                    Decision::Skip
                }
            }
            decision => decision,
        }
    }

    fn front_response_headers(&mut self, status: u16, end_of_stream: bool) -> Action {
        let Some(Role::Front(front)) = self.role.as_mut() else {
            return Action::Continue;
        };
        let attempts = take_attempts(&front.request_id);
        let tried: Vec<&Attempt> = attempts
            .iter()
            .filter(|a| a.outcome() != Outcome::CircuitOpen)
            .collect();
        host::set_response_header("x-ai-fallback-attempts", Some(&tried.len().to_string()));
        if let Some(served) = attempts
            .iter()
            .rev()
            .find(|a| a.outcome() == Outcome::Answered)
        {
            host::set_response_header("x-ai-fallback-provider", Some(&served.provider));
            if let Some(model) = &served.model {
                host::set_response_header("x-ai-fallback-model", Some(model));
            }
        }
        let log = serde_json::json!(attempts
            .iter()
            .map(|a| serde_json::json!({"provider": a.provider, "outcome": a.outcome().label()}))
            .collect::<Vec<_>>());
        let _ = host::set_filter_state("ai_fallback", log.to_string().as_bytes());
        let all_failed = !attempts.is_empty()
            && attempts.iter().all(|a| a.outcome().failed())
            && (status >= 500 || status == 429);
        if all_failed {
            host::set_response_header(":status", Some(&all_failed_status(&attempts).to_string()));
            host::set_response_header("content-type", Some("application/json"));
            host::set_response_header("content-length", None);
            front.response = FrontResponse::Summarise(all_failed_body(&attempts));
        } else if status == 400
            && front.config.context_length_fallback.is_some()
            && front.request_body.is_some()
            && !end_of_stream
        {
            // Hold the refusal (headers included) until its body shows the reason.
            front.response = FrontResponse::CheckLength;
            for a in &attempts {
                self.count(&a.provider, a.outcome().label());
            }
            return Action::Pause;
        }
        for a in &attempts {
            self.count(&a.provider, a.outcome().label());
        }
        Action::Continue
    }

    /// Sends the request again to the longer-context model when the provider refused it for
    /// its length; otherwise lets the refusal through.
    fn maybe_replay(&mut self, body_size: usize) -> Action {
        let Some(Role::Front(front)) = self.role.as_mut() else {
            return Action::Continue;
        };
        front.response = FrontResponse::Pass;
        let refusal = host::response_body(body_size).unwrap_or_default();
        let (Some(fallback), Some(request)) = (
            front.config.context_length_fallback.clone(),
            front.request_body.as_ref().and_then(|b| b.get()),
        ) else {
            return Action::Continue;
        };
        if !is_context_length_refusal(&refusal) {
            return Action::Continue;
        }
        let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(request) else {
            return Action::Continue;
        };
        body["model"] = serde_json::Value::String(fallback.model.clone());
        let callout = Callout::post_json(
            &fallback.cluster,
            &fallback.cluster,
            &front.path,
            serde_json::to_vec(&body).unwrap_or_default(),
            Duration::from_millis(fallback.timeout_ms),
        );
        match host::dispatch(&callout) {
            Ok(token) => {
                front.replay_token = Some(token);
                log::info!(
                    "ai-fallback: context length exceeded; asking {} on {}",
                    fallback.model,
                    fallback.cluster
                );
                Action::Pause
            }
            Err(why) => {
                log::warn!("ai-fallback: longer-context fallback not sent: {why}");
                Action::Continue
            }
        }
    }
}

/// Providers' ways of saying a request is too long for the model.
fn is_context_length_refusal(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = &value["error"];
    let code = error["code"].as_str().unwrap_or("");
    let message = error["message"].as_str().unwrap_or("").to_ascii_lowercase();
    code == "context_length_exceeded"
        || message.contains("context length")
        || message.contains("context window")
        || message.contains("prompt is too long")
        || message.contains("maximum context")
}

#[cfg(test)]
mod tests {
    use super::is_context_length_refusal;

    #[test]
    fn context_length_refusals_of_several_providers() {
        assert!(is_context_length_refusal(br#"{"error":{"message":"This model's maximum context length is 128000 tokens.","code":"context_length_exceeded"}}"#));
        assert!(is_context_length_refusal(br#"{"error":{"message":"prompt is too long: 210000 tokens > 200000 maximum","type":"invalid_request_error"}}"#));
        assert!(!is_context_length_refusal(
            br#"{"error":{"message":"Invalid 'messages': empty array.","code":"empty_array"}}"#
        ));
        assert!(!is_context_length_refusal(b"not json"));
    }
}
