//! The plugin as a stage of the runner. A request some limits apply to reserves its estimate
//! before it goes upstream (the request headers wait for the body when tokens are counted, and
//! for Redis when it decides), and settles the reservation with what it spent when the stream
//! is over, whether the response ended or the client left.

use crate::charge::{charge, Ending};
use crate::config::{Config, Store};
use crate::ledger::{self, Ask, Held, Lease, Limited, Verdict, WindowState};
use crate::local;
use crate::matcher::{matching, refuses_anonymous, Matched, RequestFacts};
use crate::redis::{self, Layout};
use crate::reply;
use crate::window::Kind;
use crate::worker::{count, count_all, count_failure, Worker, PLUGIN};
use aigw_shared::body::{is_event_stream, is_json};
use aigw_shared::callout::{FailurePolicy, Outcome};
use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::estimate::{Estimate, StreamedText};
use aigw_shared::meter::ResponseMeter;
use aigw_shared::rules::RuleSet;
use aigw_shared::stage::{
    rule_for, BodyUse, Configured, Cx, Effects, Env, Plugin, Reply, RequestBody, ResponseChunk,
    ResponseHead, Stage, Step,
};
use aigw_shared::store;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Settlements for Redis go out in one batch per tick.
const TICK: Duration = Duration::from_millis(100);
const MAX_METRIC_SERIES: usize = 1_000;
/// The tag of the callout that asks Redis to reserve.
const RESERVE: u32 = 0;

/// The per-worker part: the rules, and what the requests of the worker share.
#[derive(Default)]
pub struct RateLimit {
    rules: Option<Rc<RuleSet<Config>>>,
    worker: Rc<RefCell<Worker>>,
}

impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        PLUGIN
    }

    fn metrics_owner(&self) -> &'static str {
        "ai_token_ratelimit"
    }

    fn configure(&mut self, config: &Value) -> Result<Configured, String> {
        let rules = RuleSet::parse(config, Config::from_map).map_err(|e| e.to_string())?;
        let configured = Configured {
            rules: rules.rule_count(),
            max_metric_series: MAX_METRIC_SERIES,
            tick: Some(TICK),
        };
        self.rules = Some(Rc::new(rules));
        Ok(configured)
    }

    /// Slots are created before traffic: Envoy cannot create a key conditionally.
    fn on_configured(&mut self, env: &dyn Env) {
        for key in local::slot_keys() {
            store::update(env.store(), &key, |current| {
                current.is_none().then(local::empty_slot)
            });
        }
    }

    fn on_tick(&mut self, _env: &dyn Env, effects: &mut Effects) {
        self.worker.borrow_mut().send_settlements(effects);
    }

    /// The plugin is swapped out or Envoy stops: what waits for the next tick goes now.
    fn on_stop(&mut self, _env: &dyn Env, effects: &mut Effects) {
        self.worker.borrow_mut().send_settlements(effects);
    }

    fn on_callout(&mut self, _env: &dyn Env, effects: &mut Effects, tag: u32, outcome: Outcome) {
        self.worker.borrow_mut().settled(effects, tag, outcome);
    }

    fn stage(&self, env: &dyn Env) -> Option<Box<dyn Stage>> {
        let config = rule_for(self.rules.as_ref()?, env)?;
        Some(Box::new(Quota {
            config,
            worker: self.worker.clone(),
            state: State::Idle,
        }))
    }
}

/// One request's quotas.
pub struct Quota {
    config: Rc<Config>,
    worker: Rc<RefCell<Worker>>,
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

/// An admitted request until its stream ends.
struct Admission {
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

/// Envoy shared data (the runner's store) for the local store.
struct SharedData<'a>(&'a dyn store::Store);

impl local::SharedData for SharedData<'_> {
    fn update(&mut self, key: &str, update: &mut local::Update) -> bool {
        store::update(self.0, key, update).is_some()
    }
}

impl Stage for Quota {
    fn on_request_headers(&mut self, cx: &mut Cx, end_of_stream: bool) -> Step {
        let config = &self.config;
        let headers = cx.env.request_headers();
        let peer = config
            .reads_peer
            .then(|| cx.env.property_string(&["source", "address"]))
            .flatten();
        let facts = RequestFacts {
            headers: &headers,
            remote_addr: peer.as_deref(),
        };
        if refuses_anonymous(config, &facts) {
            set_log(cx.effects, config, json!({"decision": "no_consumer"}));
            return error_reply(&reply::consumer_required(&config.consumer_header));
        }
        let limits = matching(config, &facts);
        if limits.is_empty() {
            return Step::Continue;
        }
        let counts_tokens = limits
            .iter()
            .any(|m| m.limits.windows.iter().any(|w| w.kind == Kind::Tokens));
        let json_body = facts.header("content-type").is_none_or(is_json);
        let request = Request { limits, json_body };
        if end_of_stream || !counts_tokens {
            return self.decide(cx, request, Estimate::default());
        }
        // The estimate needs the body; the headers wait for it.
        self.state = State::Reading(request);
        Step::Continue
    }

    /// The request goes upstream only once the quota has decided on its body.
    fn request_body_use(&self) -> BodyUse {
        match self.state {
            State::Reading(_) => BodyUse::Change {
                max_bytes: self.config.max_body_bytes,
            },
            _ => BodyUse::None,
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx, body: &mut RequestBody) -> Step {
        let State::Reading(request) = std::mem::take(&mut self.state) else {
            return Step::Continue;
        };
        let config = &self.config;
        let estimate = if !request.json_body {
            Ok(Estimate {
                output: config.default_max_tokens,
                ..Estimate::default()
            })
        } else {
            match body.bytes(config.max_body_bytes) {
                Some(bytes) => Estimate::from_body(bytes, config.default_max_tokens),
                None => Ok(Estimate::from_size(body.len(), config.default_max_tokens)),
            }
        };
        match estimate {
            Ok(estimate) => self.decide(cx, request, estimate),
            Err(err) => {
                set_log(
                    cx.effects,
                    config,
                    json!({"decision": "invalid_request", "error": err.message}),
                );
                error_reply(&err)
            }
        }
    }

    fn on_callout(&mut self, cx: &mut Cx, tag: u32, outcome: Outcome) -> Step {
        if tag != RESERVE {
            return Step::Continue;
        }
        let State::Deciding(deciding) = std::mem::take(&mut self.state) else {
            return Step::Continue;
        };
        let (decision, layout) = *deciding;
        let verdict = outcome
            .success()
            .and_then(|body| redis::verdict(&layout, body));
        self.conclude(cx, decision, verdict)
    }

    fn on_response_headers(&mut self, cx: &mut Cx, head: &ResponseHead, _end: bool) -> Step {
        let State::Admitted(admission) = &mut self.state else {
            return Step::Continue;
        };
        let status = head.status();
        admission.status = Some(status);
        for (name, value) in reply::quota_headers(&admission.states, cx.env.now_ms()) {
            cx.effects.set_response_header(name, Some(&value));
        }
        let reserved_tokens = admission
            .held
            .as_ref()
            .is_some_and(|h| !h.windows.is_empty());
        if reserved_tokens && status < 400 {
            let content_type = head.content_type();
            admission.usage = Some(ResponseMeter::new(content_type, self.config.max_body_bytes));
            if is_event_stream(content_type) {
                admission.text = Some(StreamedText::default());
            }
        }
        Step::Continue
    }

    fn wants_response_body(&self) -> bool {
        match &self.state {
            State::Admitted(admission) => admission
                .usage
                .as_ref()
                .is_some_and(ResponseMeter::wants_body),
            _ => false,
        }
    }

    fn on_response_body(&mut self, _cx: &mut Cx, chunk: &mut ResponseChunk) -> Step {
        let State::Admitted(admission) = &mut self.state else {
            return Step::Continue;
        };
        if let Some(usage) = admission.usage.as_mut() {
            if !chunk.bytes().is_empty() {
                usage.observe(chunk.bytes());
                if let Some(text) = admission.text.as_mut() {
                    text.observe(chunk.bytes());
                }
            }
        }
        Step::Continue
    }

    fn on_response_end(&mut self, _cx: &mut Cx) {
        if let State::Admitted(admission) = &mut self.state {
            admission.complete = true;
        }
    }

    /// Envoy ends the stream here, whether the response ended or the client left: the one
    /// place a request is settled and its concurrency slots are given back.
    fn on_done(&mut self, cx: &mut Cx) {
        match std::mem::take(&mut self.state) {
            State::Deciding(deciding) => {
                let (decision, _) = *deciding;
                // The client left while Redis decided: the concurrency slot may have been taken.
                if let Store::Redis(redis) = &self.config.store {
                    let held = Held::new(&decision.ask());
                    self.worker
                        .borrow_mut()
                        .queue(redis, &held, &[], cx.env.now_ms());
                }
            }
            State::Admitted(admission) => self.finish(cx, *admission),
            State::Idle | State::Reading(_) => {}
        }
    }
}

impl Quota {
    /// Asks the store to reserve the request's estimate.
    fn decide(&mut self, cx: &mut Cx, request: Request, estimate: Estimate) -> Step {
        let now_ms = cx.env.now_ms();
        let lease = Lease {
            id: self.worker.borrow_mut().lease_id(now_ms),
            expires_ms: now_ms + self.config.lease_seconds * 1000,
        };
        let decision = Decision {
            request,
            estimate,
            now_ms,
            lease,
        };
        match &self.config.store {
            Store::Local => {
                let verdict = local::reserve(&mut SharedData(cx.env.store()), &decision.ask());
                self.conclude(cx, decision, verdict)
            }
            Store::Redis(redis) => {
                let (callout, layout) = redis::reserve(redis, &decision.ask());
                cx.effects.call(RESERVE, callout);
                self.state = State::Deciding(Box::new((decision, layout)));
                Step::Hold
            }
        }
    }

    /// Lets the request go on, refuses it, or applies the failure policy.
    fn conclude(
        &mut self,
        cx: &mut Cx,
        decision: Decision,
        verdict: Result<Verdict, String>,
    ) -> Step {
        let config = &self.config;
        let limits = &decision.request.limits;
        let (held, states) = match verdict {
            Ok(Verdict::Admitted(states)) => {
                count_all(cx.effects, limits, "admitted", 1);
                (Some(Held::new(&decision.ask())), states)
            }
            Ok(Verdict::Limited(limited)) => {
                let rule = &limits[limited.limit].rule;
                count(cx.effects, rule, "limited", 1);
                return reject(cx.effects, config, rule, &limited, decision.now_ms);
            }
            Err(err) => {
                count_all(cx.effects, limits, "store_failure", 1);
                let open = config.failure_policy == FailurePolicy::Open;
                let outcome = if open {
                    "let through unchecked"
                } else {
                    "refused"
                };
                log::warn!("{PLUGIN}: quota store failed ({err}); request {outcome}");
                if !open {
                    set_log(
                        cx.effects,
                        config,
                        json!({"decision": "store_failed_closed"}),
                    );
                    return error_reply(&ApiError::new(
                        503,
                        "server_error",
                        "The rate limit service is unavailable.",
                    ));
                }
                (None, Vec::new())
            }
        };
        self.state = State::Admitted(Box::new(Admission {
            limits: decision.request.limits,
            held,
            states,
            estimate: decision.estimate,
            status: None,
            complete: false,
            usage: None,
            text: None,
        }));
        Step::Continue
    }

    /// Settles the reservation with what the request spent, once.
    fn finish(&self, cx: &mut Cx, mut admission: Admission) {
        let config = &self.config;
        let ending = Ending {
            // Without a response, whether the provider got the request: Envoy picked a host.
            forwarded: admission.status.is_some()
                || cx.env.property(&["upstream", "address"]).is_some(),
            status: admission.status,
            complete: admission.complete,
            reported: admission.usage.as_mut().and_then(ResponseMeter::finish),
            streamed_output: admission.text.as_mut().map(StreamedText::finish),
        };
        let Some(held) = &admission.held else {
            set_log(cx.effects, config, json!({"decision": "store_failed_open"}));
            return;
        };
        let now_ms = cx.env.now_ms();
        let spent = if held.windows.is_empty() {
            0
        } else {
            charge(&admission.estimate, &ending, config.abort_before_response)
        };
        let adjustments = held.settle(spent, now_ms);
        match &config.store {
            Store::Local => {
                let needed = !adjustments.is_empty() || !held.slots.is_empty();
                let mut store = SharedData(cx.env.store());
                if needed && !local::settle(&mut store, held, &adjustments, now_ms) {
                    log::warn!("{PLUGIN}: could not settle a request in shared data");
                    count_failure(cx.effects);
                }
            }
            Store::Redis(redis) => {
                self.worker
                    .borrow_mut()
                    .queue(redis, held, &adjustments, now_ms)
            }
        }
        count_all(cx.effects, &admission.limits, "charged_tokens", spent);
        let remaining =
            ledger::tightest(&admission.states, Kind::Tokens).map(WindowState::remaining);
        set_log(
            cx.effects,
            config,
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
fn set_log(effects: &mut Effects, config: &Config, record: Value) {
    effects.set_filter_state(&config.log_key, record.to_string().into_bytes());
}

fn error_reply(err: &ApiError) -> Step {
    Step::Respond(Reply::json(err.status, err.body(ClientApi::OpenAi)))
}

/// Answers a refused request.
fn reject(
    effects: &mut Effects,
    config: &Config,
    rule: &str,
    limited: &Limited,
    now_ms: u64,
) -> Step {
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
        effects,
        config,
        json!({"decision": "limited", "rule": rule, "limit": window, "used": limited.used, "requested": limited.requested}),
    );
    Step::Respond(Reply {
        status: rejection.status,
        headers: rejection
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        body: rejection.body,
    })
}
