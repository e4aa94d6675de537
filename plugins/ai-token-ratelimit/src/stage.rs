//! The plugin as a stage of the runner. A request some limits apply to reserves its estimate
//! before it goes upstream (the request headers wait for the body when tokens are counted, and
//! for Redis when it decides), and settles the reservation with what it spent when the stream
//! is over, whether the response ended or the client left.

use crate::charge::{charge, Ending};
use crate::config::{Config, Store};
use crate::matcher::{matching, refuses_anonymous, Matched, RequestFacts};
use crate::reply;
use crate::worker::{count, count_all, count_failure, Worker, PLUGIN};
use aigw_shared::body::{is_event_stream, is_json};
use aigw_shared::callout::{FailurePolicy, Outcome};
use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::estimate::{Estimate, StreamedText};
use aigw_shared::meter::ResponseMeter;
use aigw_shared::quota::ledger::{self, Ask, Held, Lease, Limited, Verdict, WindowState};
use aigw_shared::quota::local;
use aigw_shared::quota::redis::{self, Layout};
use aigw_shared::quota::window::Kind;
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
        // Every stage sees the body another stage asked for: only a request waiting for it
        // is decided here.
        let request = match std::mem::take(&mut self.state) {
            State::Reading(request) => request,
            other => {
                self.state = other;
                return Step::Continue;
            }
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
        let (decision, layout) = match std::mem::take(&mut self.state) {
            State::Deciding(deciding) if tag == RESERVE => *deciding,
            other => {
                self.state = other;
                return Step::Continue;
            }
        };
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
                let verdict = local::reserve(&mut cx.env.store(), &decision.ask());
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
                let mut store = cx.env.store();
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
    Step::Respond(Reply::error(err, ClientApi::OpenAi))
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

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::stage::{FakeEnv, MetricSample};

    fn per_user(extra: Value) -> Value {
        let mut config = json!({"rule_name": "per-user", "rule_items": [{"limit_by_per_header": "x-user",
            "limit_keys": [{"key": "*", "token_per_minute": 1_000, "max_concurrent_requests": 1}]}]});
        if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
            config.extend(extra);
        }
        config
    }

    fn redis(failure_policy: &str) -> Value {
        per_user(json!({"redis": {"service_name": "webdis"}, "failure_policy": failure_policy}))
    }

    fn plugin(config: Value, env: &FakeEnv) -> RateLimit {
        let mut plugin = RateLimit::default();
        let configured = plugin.configure(&config).unwrap();
        assert_eq!(configured.tick, Some(TICK));
        plugin.on_configured(env);
        plugin
    }

    fn user(name: &str) -> FakeEnv {
        FakeEnv::default()
            .with_header("x-user", name)
            .with_header("content-type", "application/json")
    }

    fn chat(content: &str, max_tokens: u64) -> Vec<u8> {
        json!({"model": "m", "max_tokens": max_tokens,
               "messages": [{"role": "user", "content": content}]})
        .to_string()
        .into_bytes()
    }

    fn estimate(body: &[u8]) -> u64 {
        Estimate::from_body(body, 4096).unwrap().total()
    }

    /// One request through a stage, the effects of every step kept.
    struct Run {
        stage: Box<dyn Stage>,
        effects: Effects,
    }

    impl Run {
        fn new(plugin: &RateLimit, env: &FakeEnv) -> Run {
            Run {
                stage: plugin.stage(env).expect("the global config applies"),
                effects: Effects::default(),
            }
        }

        fn cx<'a>(env: &'a FakeEnv, effects: &'a mut Effects) -> Cx<'a> {
            Cx { env, effects }
        }

        /// The request headers and then its body, as the runner shows them.
        fn request(&mut self, env: &FakeEnv, body: &[u8]) -> Step {
            let step = self
                .stage
                .on_request_headers(&mut Run::cx(env, &mut self.effects), false);
            if step != Step::Continue {
                return step;
            }
            let max_bytes = match self.stage.request_body_use() {
                BodyUse::Change { max_bytes } => max_bytes,
                other => panic!("the headers must wait for the body: {other:?}"),
            };
            let bytes = (body.len() <= max_bytes).then(|| body.to_vec());
            let mut body = RequestBody::new(bytes, body.len());
            self.stage
                .on_request_body(&mut Run::cx(env, &mut self.effects), &mut body)
        }

        fn callout(&mut self, env: &FakeEnv, outcome: Outcome) -> Step {
            self.stage
                .on_callout(&mut Run::cx(env, &mut self.effects), RESERVE, outcome)
        }

        fn response(&mut self, env: &FakeEnv, content_type: &str, chunks: &[&str]) {
            let head = ResponseHead {
                headers: vec![
                    (":status".into(), "200".into()),
                    ("content-type".into(), content_type.into()),
                ],
            };
            let mut cx = Run::cx(env, &mut self.effects);
            assert_eq!(
                self.stage.on_response_headers(&mut cx, &head, false),
                Step::Continue
            );
            for (i, piece) in chunks.iter().enumerate() {
                if self.stage.wants_response_body() {
                    let mut chunk =
                        ResponseChunk::new(piece.as_bytes().to_vec(), i + 1 == chunks.len());
                    assert_eq!(
                        self.stage.on_response_body(&mut cx, &mut chunk),
                        Step::Continue
                    );
                    assert!(!chunk.is_changed(), "the response passes unchanged");
                }
            }
            self.stage.on_response_end(&mut cx);
        }

        fn done(&mut self, env: &FakeEnv) {
            self.stage.on_done(&mut Run::cx(env, &mut self.effects));
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.effects
                .response_headers
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.as_deref())
        }

        /// The last log record.
        fn record(&self) -> Value {
            let (name, value) = self.effects.filter_state.last().expect("a log record");
            assert_eq!(name, "ai_token_ratelimit");
            serde_json::from_slice(value).unwrap()
        }

        fn counted(&self, metric: &str) -> u64 {
            self.effects
                .metrics
                .iter()
                .filter(|s: &&MetricSample| s.metric == metric)
                .map(|s| s.value)
                .sum()
        }
    }

    fn refusal(step: Step) -> (Reply, Value) {
        let Step::Respond(reply) = step else {
            panic!("expected a refusal, got {step:?}")
        };
        let body = serde_json::from_slice(&reply.body).unwrap();
        (reply, body)
    }

    fn reply_header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn an_admitted_request_is_charged_the_usage_its_answer_reports() {
        let env = user("alice");
        let plugin = plugin(per_user(json!({})), &env);
        let body = chat("hello there", 100);
        let reserved = estimate(&body);

        let mut first = Run::new(&plugin, &env);
        assert_eq!(first.request(&env, &body), Step::Continue);
        first.response(
            &env,
            "application/json",
            &[
                r#"{"usage": {"prompt_tokens": 5,"#,
                r#" "completion_tokens": 2, "total_tokens": 7}}"#,
            ],
        );
        let remaining = 1_000 - reserved;
        assert_eq!(
            first.header("x-ratelimit-remaining-tokens"),
            Some(remaining.to_string().as_str())
        );
        assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("1000"));
        first.done(&env);
        let record = first.record();
        assert_eq!(record["decision"], "admitted");
        assert_eq!(record["reserved_tokens"], reserved);
        assert_eq!(record["charged_tokens"], 7);
        assert_eq!(first.counted("admitted"), 1);
        assert_eq!(first.counted("charged_tokens"), 7);

        // The store kept the charge, not the reservation, and the slot came back.
        let mut second = Run::new(&plugin, &env);
        assert_eq!(second.request(&env, &body), Step::Continue);
        second.response(&env, "application/json", &["{}"]);
        assert_eq!(
            second.header("x-ratelimit-remaining-tokens"),
            Some((1_000 - 7 - reserved).to_string().as_str())
        );
    }

    #[test]
    fn a_quota_spent_or_a_slot_taken_refuses_before_the_upstream() {
        let env = user("bob");
        let plugin = plugin(per_user(json!({})), &env);
        let mut held = Run::new(&plugin, &env);
        assert_eq!(held.request(&env, &chat("hi", 10)), Step::Continue);

        let mut second = Run::new(&plugin, &env);
        let (reply, body) = refusal(second.request(&env, &chat("hi", 10)));
        assert_eq!(reply.status, 429);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("concurrent"),
            "{body}"
        );
        assert_eq!(second.record()["limit"], "max_concurrent_requests");
        assert_eq!(second.counted("limited"), 1);
        // A refused request holds nothing.
        second.done(&env);
        assert_eq!(second.effects.filter_state.len(), 1);

        held.done(&env);
        let mut large = Run::new(&plugin, &env);
        let (reply, body) = refusal(large.request(&env, &chat("hi", 5_000)));
        assert_eq!(reply.status, 429);
        assert!(reply_header(&reply, "retry-after").is_some());
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Request too large for rule per-user"),
            "{body}"
        );
    }

    #[test]
    fn requests_no_limit_matches_go_through_untouched() {
        let env = FakeEnv::default();
        let plugin = plugin(per_user(json!({})), &env);
        let mut run = Run::new(&plugin, &env);
        assert_eq!(
            run.stage
                .on_request_headers(&mut Run::cx(&env, &mut run.effects), false),
            Step::Continue
        );
        assert_eq!(run.stage.request_body_use(), BodyUse::None);
        run.response(&env, "application/json", &["{}"]);
        run.done(&env);
        assert!(run.effects.is_empty(), "{:?}", run.effects);
    }

    #[test]
    fn a_request_decided_at_its_headers_keeps_its_admission_when_others_read_the_body() {
        let env = user("jane");
        let requests = json!({"rule_name": "r", "rule_items": [{"limit_by_per_header": "x-user",
            "limit_keys": [{"key": "*", "query_per_minute": 5}]}]});
        let plugin = plugin(requests, &env);
        let mut run = Run::new(&plugin, &env);
        let mut cx = Run::cx(&env, &mut run.effects);
        assert_eq!(run.stage.on_request_headers(&mut cx, false), Step::Continue);
        assert_eq!(run.stage.request_body_use(), BodyUse::None);
        // A later stage of the chain asked for the body: this one sees it too.
        let mut body = RequestBody::new(Some(chat("hi", 1)), 0);
        assert_eq!(
            run.stage.on_request_body(&mut cx, &mut body),
            Step::Continue
        );
        run.response(&env, "application/json", &["{}"]);
        assert_eq!(run.header("x-ratelimit-remaining-requests"), Some("4"));
        run.done(&env);
        assert_eq!(run.record()["decision"], "admitted");
    }

    #[test]
    fn malformed_bodies_and_missing_consumers_are_refused() {
        let env = user("carol");
        let plugin = plugin(per_user(json!({})), &env);
        let mut run = Run::new(&plugin, &env);
        let (reply, body) = refusal(run.request(&env, br#"{"max_tokens": "many"}"#));
        assert_eq!(reply.status, 400);
        assert_eq!(body["error"]["param"], "max_tokens");
        assert_eq!(run.record()["decision"], "invalid_request");

        let deny = json!({"rule_name": "c", "anonymous_consumers": "deny", "rule_items": [
            {"limit_by_per_consumer": "", "limit_keys": [{"key": "*", "token_per_minute": 10}]}]});
        let plugin = self::plugin(deny, &env);
        let mut run = Run::new(&plugin, &env);
        let (reply, body) = refusal(run.request(&env, &chat("hi", 1)));
        assert_eq!(reply.status, 401);
        assert_eq!(body["error"]["code"], "consumer_required");
        assert_eq!(run.record()["decision"], "no_consumer");
    }

    #[test]
    fn a_body_past_the_limit_is_estimated_from_its_size() {
        let env = user("dave");
        let config = json!({"max_body_bytes": 16, "default_max_tokens": 10});
        let plugin = plugin(per_user(config), &env);
        let body = chat(&"x".repeat(400), 10);
        let mut run = Run::new(&plugin, &env);
        assert_eq!(run.request(&env, &body), Step::Continue);
        run.done(&env);
        assert_eq!(
            run.record()["reserved_tokens"],
            Estimate::from_size(body.len(), 10).total()
        );
    }

    #[test]
    fn a_streamed_answer_without_usage_is_charged_its_text() {
        let env = user("erin");
        let plugin = plugin(per_user(json!({})), &env);
        let body = chat("tell me", 500);
        let mut run = Run::new(&plugin, &env);
        assert_eq!(run.request(&env, &body), Step::Continue);
        run.response(
            &env,
            "text/event-stream",
            &[
                "data: {\"choices\": [{\"delta\": {\"content\": \"abcdefgh\"}}]}\n\n",
                "data: [DONE]\n\n",
            ],
        );
        run.done(&env);
        let prompt = Estimate::from_body(&body, 4096).unwrap().prompt;
        let charged = run.record()["charged_tokens"].as_u64().unwrap();
        assert!(charged > prompt && charged < prompt + 500, "{charged}");
    }

    #[test]
    fn a_client_leaving_before_the_answer_pays_only_once_the_request_went_upstream() {
        let env = user("frank");
        let plugin = plugin(per_user(json!({})), &env);
        let body = chat("hi", 10);
        let mut early = Run::new(&plugin, &env);
        assert_eq!(early.request(&env, &body), Step::Continue);
        early.done(&env);
        assert_eq!(early.record()["charged_tokens"], 0);

        let sent = user("frank").with_property("upstream.address", "10.0.0.1:80");
        let mut late = Run::new(&plugin, &sent);
        assert_eq!(late.request(&sent, &body), Step::Continue);
        late.done(&sent);
        assert_eq!(late.record()["charged_tokens"], estimate(&body));
    }

    #[test]
    fn redis_decides_by_callout_while_the_request_waits() {
        let env = user("gina");
        let mut plugin = plugin(redis("open"), &env);
        let mut run = Run::new(&plugin, &env);
        assert_eq!(run.request(&env, &chat("hi", 10)), Step::Hold);
        let (tag, callout) = &run.effects.callouts[0];
        assert_eq!((*tag, callout.cluster.as_str()), (RESERVE, "webdis"));
        assert!(callout.body.starts_with(b"EVAL/"));

        let answer = Outcome::Answered {
            status: 200,
            body: br#"{"EVAL": [1, 42]}"#.to_vec(),
        };
        assert_eq!(run.callout(&env, answer), Step::Continue);
        let usage = r#"{"usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}"#;
        run.response(&env, "application/json", &[usage]);
        assert_eq!(run.header("x-ratelimit-remaining-tokens"), Some("958"));
        run.done(&env);
        assert_eq!(run.record()["charged_tokens"], 3);

        // The correction and the slot's release go out on the next tick.
        let mut tick = Effects::default();
        plugin.on_tick(&env, &mut tick);
        assert_eq!(tick.callouts.len(), 1);
        let (tag, callout) = tick.callouts.pop().unwrap();
        assert!(callout.body.starts_with(b"EVAL/"));
        let mut answered = Effects::default();
        plugin.on_callout(&env, &mut answered, tag, Outcome::TimedOut);
        assert_eq!(answered.metrics[0].metric, "settle_failure");
        plugin.on_tick(&env, &mut tick);
        assert!(tick.callouts.is_empty(), "nothing left to send");
    }

    #[test]
    fn redis_refusals_and_failures_follow_the_reply_and_the_policy() {
        let env = user("hank");
        let plugin = plugin(redis("closed"), &env);
        let mut limited = Run::new(&plugin, &env);
        assert_eq!(limited.request(&env, &chat("hi", 10)), Step::Hold);
        let answer = Outcome::Answered {
            status: 200,
            body: br#"{"EVAL": [0, 1, 995]}"#.to_vec(),
        };
        let (reply, _) = refusal(limited.callout(&env, answer));
        assert_eq!(reply.status, 429);
        assert_eq!(limited.record()["used"], 995);

        let mut closed = Run::new(&plugin, &env);
        assert_eq!(closed.request(&env, &chat("hi", 10)), Step::Hold);
        let (reply, _) = refusal(closed.callout(&env, Outcome::TimedOut));
        assert_eq!(reply.status, 503);
        assert_eq!(closed.record()["decision"], "store_failed_closed");
        assert_eq!(closed.counted("store_failure"), 1);

        let plugin = self::plugin(redis("open"), &env);
        let mut open = Run::new(&plugin, &env);
        assert_eq!(open.request(&env, &chat("hi", 10)), Step::Hold);
        let unreachable = Outcome::Unreachable("no healthy host".into());
        assert_eq!(open.callout(&env, unreachable), Step::Continue);
        open.response(&env, "application/json", &["{}"]);
        assert_eq!(open.header("x-ratelimit-remaining-tokens"), None);
        open.done(&env);
        assert_eq!(open.record()["decision"], "store_failed_open");
    }

    #[test]
    fn a_client_leaving_while_redis_decides_gives_its_slot_back() {
        let env = user("ivan");
        let mut plugin = plugin(redis("open"), &env);
        let mut run = Run::new(&plugin, &env);
        assert_eq!(run.request(&env, &chat("hi", 10)), Step::Hold);
        run.done(&env);
        let mut tick = Effects::default();
        plugin.on_tick(&env, &mut tick);
        assert_eq!(tick.callouts.len(), 1, "the release of the slot");
    }
}
