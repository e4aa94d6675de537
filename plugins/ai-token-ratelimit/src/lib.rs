//! ai-token-ratelimit: token, request and concurrency quotas for LLM traffic that cannot be
//! overshot. A request reserves its estimated tokens in every window of every matching limit
//! before it is sent (all or nothing) and the reservation is settled with the usage the
//! provider reports when Envoy ends the stream. Counters live in Envoy shared data (one Envoy) or
//! in Redis through Webdis (every Envoy sharing it).
//!
//! This file only moves values between Envoy and the pure modules.

pub mod charge;
pub mod config;
pub mod ipnet;
pub mod ledger;
pub mod local;
pub mod matcher;
pub mod redis;
pub mod reply;
pub mod window;

use aigw_shared::body::{is_event_stream, is_json};
use aigw_shared::callout::FailurePolicy;
use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::estimate::{Estimate, StreamedText};
use aigw_shared::host::{self, Metrics};
use aigw_shared::meter::ResponseMeter;
use aigw_shared::metrics::series_prefix;
use aigw_shared::rules::RuleSet;
use aigw_shared::webdis;
use charge::{charge, Ending};
use config::{Config, RedisConfig, Store};
use ledger::{Ask, Held, Lease, Limited, Verdict, WindowState};
use matcher::{matching, refuses_anonymous, Matched, RequestFacts};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use redis::{Layout, Settlement};
use serde_json::json;
use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;
use window::Kind;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(LimitRoot::default()) });
}}

const PLUGIN: &str = "ai-token-ratelimit";
/// Settlements for Redis go out in one batch per tick; metrics are flushed every few ticks.
const TICK: Duration = Duration::from_millis(100);
const TICKS_PER_FLUSH: u32 = 5;

#[derive(Default)]
struct LimitRoot {
    rules: Option<Rc<RuleSet<Config>>>,
    shared: Rc<RefCell<Shared>>,
    ticks: u32,
}

/// What the root and the requests of one worker share.
struct Shared {
    metrics: Metrics,
    /// Redis settlements waiting for the next tick, per Webdis cluster (every tick sends them
    /// all, so this holds at most one tick's worth of finished requests).
    pending: Vec<(Rc<RedisConfig>, Settlement)>,
    /// Settlement callouts in flight: token → corrections it carries.
    settling: HashMap<u32, usize>,
    leases: u64,
    random: RandomState,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            metrics: Metrics::new("ai_token_ratelimit", 1_000),
            pending: Vec::new(),
            settling: HashMap::new(),
            leases: 0,
            random: RandomState::new(),
        }
    }
}

impl Shared {
    fn count(&mut self, rule: &str, metric: &'static str, n: u64) {
        if let Some(series) = self
            .metrics
            .series(&series_prefix(&[("token_ratelimit_rule", rule)]))
        {
            series.counter(metric, n);
        }
    }

    fn count_all(&mut self, limits: &[Matched], metric: &'static str, n: u64) {
        for m in limits {
            self.count(&m.rule, metric, n);
        }
    }

    /// A concurrency lease name, unique enough among the requests in flight on one counter.
    fn lease_id(&mut self, now_ms: u64) -> u32 {
        self.leases += 1;
        self.random.hash_one((self.leases, now_ms)) as u32
    }

    fn queue(
        &mut self,
        config: &Rc<RedisConfig>,
        held: &Held,
        adjustments: &[ledger::Adjustment],
        now_ms: u64,
    ) {
        if adjustments.is_empty() && held.slots.is_empty() {
            return;
        }
        let index = match self.pending.iter().position(|(c, _)| c == config) {
            Some(index) => index,
            None => {
                self.pending.push((config.clone(), Settlement::default()));
                self.pending.len() - 1
            }
        };
        self.pending[index]
            .1
            .add(adjustments, &held.slots, held.lease.id, now_ms);
    }

    /// Sends the settlements gathered since the last tick, one `EVAL` per Webdis cluster.
    fn send_settlements(&mut self) {
        for (config, settlement) in std::mem::take(&mut self.pending) {
            let corrections = settlement.len();
            match host::dispatch(&settlement.into_callout(&config)) {
                Ok(token) => {
                    self.settling.insert(token, corrections);
                }
                Err(err) => {
                    log::warn!("{PLUGIN}: {corrections} Redis corrections lost: {err}");
                    self.count_failure();
                }
            }
        }
    }

    fn count_failure(&mut self) {
        if let Some(series) = self.metrics.series("token_ratelimit.") {
            series.counter("settle_failure", 1);
        }
    }
}

impl Context for LimitRoot {
    /// The plugin is swapped out or Envoy stops: what waits for the next tick goes now.
    fn on_done(&mut self) -> bool {
        let mut shared = self.shared.borrow_mut();
        shared.send_settlements();
        shared.metrics.flush();
        true
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let mut shared = self.shared.borrow_mut();
        let corrections = shared.settling.remove(&token).unwrap_or(0);
        let outcome = host::callout_response(body_size);
        if let Err(err) = outcome
            .success()
            .and_then(|body| webdis::reply("EVAL", body))
        {
            log::warn!("{PLUGIN}: {corrections} Redis corrections lost: {err}");
            shared.count_failure();
        }
    }
}

impl RootContext for LimitRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(rules) = host::load_rules(PLUGIN, Config::from_map) else {
            return false;
        };
        // Slots are created before traffic: Envoy cannot create a key conditionally.
        for key in local::slot_keys() {
            host::shared_update(&key, |current| current.is_none().then(local::empty_slot));
        }
        self.rules = Some(Rc::new(rules));
        let _ = hostcalls::set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.send_settlements();
        self.ticks = (self.ticks + 1) % TICKS_PER_FLUSH;
        if self.ticks == 0 {
            shared.metrics.flush();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(LimitStream {
            rules: self.rules.clone()?,
            shared: self.shared.clone(),
            state: State::Idle,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct LimitStream {
    rules: Rc<RuleSet<Config>>,
    shared: Rc<RefCell<Shared>>,
    state: State,
}

#[derive(Default)]
enum State {
    /// No limit applies, or the request is over.
    #[default]
    Idle,
    /// Waiting for the request body, to estimate its tokens.
    Reading(Request),
    /// Waiting for Redis to decide.
    Deciding(Box<(Decision, Layout)>),
    Admitted(Box<Admission>),
}

/// A request some limits apply to.
struct Request {
    config: Rc<Config>,
    limits: Vec<Matched>,
    json_body: bool,
}

/// A decision being taken.
struct Decision {
    request: Request,
    estimate: Estimate,
    now_ms: u64,
    lease: Lease,
}

impl Decision {
    fn ask(&self) -> Ask<'_> {
        Ask {
            limits: &self.request.limits,
            tokens: self.estimate.total(),
            now_ms: self.now_ms,
            lease: self.lease,
        }
    }
}

/// An admitted request until its response ends.
struct Admission {
    config: Rc<Config>,
    limits: Vec<Matched>,
    /// What it reserved; `None` when the store failed and the request went through unchecked.
    held: Option<Held>,
    states: Vec<WindowState>,
    estimate: Estimate,
    status: Option<u16>,
    /// The response's last byte passed (the client did not leave first).
    complete: bool,
    usage: Option<ResponseMeter>,
    /// The text of a streamed answer, for when its usage is missing or the client leaves.
    text: Option<StreamedText>,
}

/// Envoy shared data for the local store.
struct EnvoySharedData;

impl local::SharedData for EnvoySharedData {
    fn update(&mut self, key: &str, update: &mut local::Update) -> bool {
        host::shared_update(key, update).is_some()
    }
}

impl Context for LimitStream {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let State::Deciding(deciding) = std::mem::take(&mut self.state) else {
            return;
        };
        let (decision, layout) = *deciding;
        let verdict = host::callout_response(body_size)
            .success()
            .and_then(|body| redis::verdict(&layout, body));
        if self.conclude(decision, verdict) == Action::Continue {
            host::resume_request();
        }
    }
}

impl HttpContext for LimitStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = host::request_rule(&self.rules) else {
            return Action::Continue;
        };
        let headers = host::request_headers();
        let peer = config
            .reads_peer
            .then(|| host::property_string(&["source", "address"]))
            .flatten();
        let facts = RequestFacts {
            headers: &headers,
            remote_addr: peer.as_deref(),
        };
        if refuses_anonymous(&config, &facts) {
            set_log(&config, json!({"decision": "no_consumer"}));
            send_error(&reply::consumer_required(&config.consumer_header));
            return Action::Pause;
        }
        let limits = matching(&config, &facts);
        if limits.is_empty() {
            return Action::Continue;
        }
        let counts_tokens = limits
            .iter()
            .any(|m| m.limits.windows.iter().any(|w| w.kind == Kind::Tokens));
        let json_body = facts.header("content-type").is_none_or(is_json);
        let request = Request {
            config,
            limits,
            json_body,
        };
        if end_of_stream || !counts_tokens {
            return self.decide(request, Estimate::default());
        }
        // The estimate needs the body; the headers wait for it (the filter is configured with
        // `allow_on_headers_stop_iteration`, so the body still comes).
        self.state = State::Reading(request);
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.state {
            // Nothing goes on before Redis has decided (the body is held, then released).
            State::Deciding(_) => return Action::Pause,
            State::Reading(_) if !end_of_stream => return Action::Pause,
            State::Reading(_) => {}
            State::Idle | State::Admitted(_) => return Action::Continue,
        }
        let State::Reading(request) = std::mem::take(&mut self.state) else {
            return Action::Continue;
        };
        let config = &request.config;
        let estimate = if !request.json_body {
            Ok(Estimate {
                output: config.default_max_tokens,
                ..Estimate::default()
            })
        } else if body_size > config.max_body_bytes {
            Ok(Estimate::from_size(body_size, config.default_max_tokens))
        } else {
            let body = host::request_body(body_size).unwrap_or_default();
            Estimate::from_body(&body, config.default_max_tokens)
        };
        match estimate {
            Ok(estimate) => self.decide(request, estimate),
            Err(err) => {
                set_log(
                    config,
                    json!({"decision": "invalid_request", "error": err.message}),
                );
                send_error(&err);
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let State::Admitted(admission) = &mut self.state else {
            return Action::Continue;
        };
        let headers = host::ResponseHeaders::read();
        let status = headers.status();
        admission.status = Some(status);
        for (name, value) in reply::quota_headers(&admission.states, host::now_ms()) {
            host::set_response_header(name, Some(&value));
        }
        let reserved_tokens = admission
            .held
            .as_ref()
            .is_some_and(|h| !h.windows.is_empty());
        if reserved_tokens && status < 400 {
            let content_type = headers.get("content-type").unwrap_or_default();
            admission.usage = Some(ResponseMeter::new(
                content_type,
                admission.config.max_body_bytes,
            ));
            if is_event_stream(content_type) {
                admission.text = Some(StreamedText::default());
            }
        }
        admission.complete = end_of_stream;
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let State::Admitted(admission) = &mut self.state else {
            return Action::Continue;
        };
        if let Some(usage) = admission.usage.as_mut().filter(|u| u.wants_body()) {
            if body_size > 0 {
                let chunk = host::response_body(body_size).unwrap_or_default();
                usage.observe(&chunk);
                if let Some(text) = admission.text.as_mut() {
                    text.observe(&chunk);
                }
            }
        }
        admission.complete = end_of_stream;
        Action::Continue
    }

    fn on_log(&mut self) {
        if let State::Deciding(deciding) = &self.state {
            let (decision, _) = deciding.as_ref();
            // The client left while Redis decided: the concurrency slot may have been taken.
            if let Store::Redis(redis) = &decision.request.config.store {
                let held = Held::new(&decision.ask());
                self.shared
                    .borrow_mut()
                    .queue(redis, &held, &[], host::now_ms());
            }
            self.state = State::Idle;
            return;
        }
        // Envoy ends the stream here, whether the response ended or the client left: the
        // one place a request is settled and its concurrency slots are given back.
        self.finish();
    }
}

impl LimitStream {
    /// Asks the store to reserve the request's estimate.
    fn decide(&mut self, request: Request, estimate: Estimate) -> Action {
        let now_ms = host::now_ms();
        let lease = Lease {
            id: self.shared.borrow_mut().lease_id(now_ms),
            expires_ms: now_ms + request.config.lease_seconds * 1000,
        };
        let decision = Decision {
            request,
            estimate,
            now_ms,
            lease,
        };
        let store = decision.request.config.store.clone();
        match store {
            Store::Local => {
                let verdict = local::reserve(&mut EnvoySharedData, &decision.ask());
                self.conclude(decision, verdict)
            }
            Store::Redis(redis) => {
                let (callout, layout) = redis::reserve(&redis, &decision.ask());
                match host::dispatch(&callout) {
                    Ok(_) => {
                        self.state = State::Deciding(Box::new((decision, layout)));
                        Action::Pause
                    }
                    Err(err) => self.conclude(decision, Err(err)),
                }
            }
        }
    }

    /// Lets the request go on, refuses it, or applies the failure policy.
    fn conclude(&mut self, decision: Decision, verdict: Result<Verdict, String>) -> Action {
        let config = decision.request.config.clone();
        let limits = &decision.request.limits;
        let (held, states) = match verdict {
            Ok(Verdict::Admitted(states)) => {
                self.shared.borrow_mut().count_all(limits, "admitted", 1);
                (Some(Held::new(&decision.ask())), states)
            }
            Ok(Verdict::Limited(limited)) => {
                let rule = &limits[limited.limit].rule;
                self.shared.borrow_mut().count(rule, "limited", 1);
                reject(&config, rule, &limited, decision.now_ms);
                return Action::Pause;
            }
            Err(err) => {
                self.shared
                    .borrow_mut()
                    .count_all(limits, "store_failure", 1);
                let open = config.failure_policy == FailurePolicy::Open;
                let outcome = if open {
                    "let through unchecked"
                } else {
                    "refused"
                };
                log::warn!("{PLUGIN}: quota store failed ({err}); request {outcome}");
                if !open {
                    set_log(&config, json!({"decision": "store_failed_closed"}));
                    let err = ApiError::new(
                        503,
                        "server_error",
                        "The rate limit service is unavailable.",
                    );
                    send_error(&err);
                    return Action::Pause;
                }
                (None, Vec::new())
            }
        };
        self.state = State::Admitted(Box::new(Admission {
            config,
            limits: decision.request.limits,
            held,
            states,
            estimate: decision.estimate,
            status: None,
            complete: false,
            usage: None,
            text: None,
        }));
        Action::Continue
    }

    /// Settles the reservation with what the request spent, once.
    fn finish(&mut self) {
        let State::Admitted(mut admission) = std::mem::take(&mut self.state) else {
            return;
        };
        let ending = Ending {
            // Without a response, whether the provider got the request: Envoy picked a host.
            forwarded: admission.status.is_some()
                || host::property_string(&["upstream", "address"]).is_some(),
            status: admission.status,
            complete: admission.complete,
            reported: admission.usage.as_mut().and_then(ResponseMeter::finish),
            streamed_output: admission.text.as_mut().map(StreamedText::finish),
        };
        let Some(held) = &admission.held else {
            set_log(&admission.config, json!({"decision": "store_failed_open"}));
            return;
        };
        let now_ms = host::now_ms();
        let spent = if held.windows.is_empty() {
            0
        } else {
            charge(
                &admission.estimate,
                &ending,
                admission.config.abort_before_response,
            )
        };
        let adjustments = held.settle(spent, now_ms);
        let mut shared = self.shared.borrow_mut();
        match &admission.config.store {
            Store::Local => {
                let needed = !adjustments.is_empty() || !held.slots.is_empty();
                if needed && !local::settle(&mut EnvoySharedData, held, &adjustments, now_ms) {
                    log::warn!("{PLUGIN}: could not settle a request in shared data");
                    shared.count_failure();
                }
            }
            Store::Redis(redis) => shared.queue(redis, held, &adjustments, now_ms),
        }
        shared.count_all(&admission.limits, "charged_tokens", spent);
        let remaining =
            ledger::tightest(&admission.states, Kind::Tokens).map(WindowState::remaining);
        set_log(
            &admission.config,
            json!({
                "decision": "admitted",
                "rules": admission.limits.iter().map(|m| m.rule.as_str()).collect::<Vec<_>>(),
                "reserved_tokens": held.tokens,
                "charged_tokens": spent,
                "remaining_tokens": remaining,
            }),
        );
    }
}

/// The log record, filter state `wasm.<log_key>`.
fn set_log(config: &Config, record: serde_json::Value) {
    if let Err(status) = host::set_filter_state(&config.log_key, record.to_string().as_bytes()) {
        log::debug!("{PLUGIN}: could not set filter state: {status:?}");
    }
}

fn send_error(err: &ApiError) {
    host::send_response(
        err.status,
        &[("content-type", "application/json")],
        &err.body(ClientApi::OpenAi),
    );
}

/// Answers a refused request.
fn reject(config: &Config, rule: &str, limited: &Limited, now_ms: u64) {
    let rejection = reply::rejection(
        rule,
        limited,
        config.rejected_code,
        config.rejected_msg.as_deref(),
        now_ms,
    );
    let window = limited
        .window
        .map_or("max_concurrent_requests".to_string(), |w| w.name());
    set_log(
        config,
        json!({"decision": "limited", "rule": rule, "limit": window, "used": limited.used, "requested": limited.requested}),
    );
    let headers: Vec<(&str, &str)> = rejection
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    host::send_response(rejection.status, &headers, &rejection.body);
}
