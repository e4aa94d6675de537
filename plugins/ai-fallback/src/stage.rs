//! The fallback stage in its two positions. In front (a downstream filter) it starts the chain
//! at the first provider whose circuit is closed, says who served, sums up a request every
//! provider failed and sends a request refused for its length to a longer-context model. On
//! the provider cluster (an upstream filter, once per attempt) it watches one attempt and
//! turns an error hidden in a 200 into a 502 that Envoy retries.
//!
//! The two positions share each request's attempt list through the request's filter state,
//! which Envoy keeps for the downstream request and every upstream attempt alike: they need
//! not share a VM. The circuit breakers live in front, where they are read.

use crate::attempts::{all_failed_body, all_failed_status, Attempt, Outcome};
use crate::breaker::{Breaker, Decision};
use crate::config::Config;
use crate::inspect::{is_context_length_refusal, judge, worth_inspecting, Verdict};
use aigw_shared::callout::{Callout, Outcome as CalloutOutcome};
use aigw_shared::metrics::series_prefix;
use aigw_shared::rules::RuleSet;
use aigw_shared::stage::{
    rule_for, BodyUse, Configured, Cx, Effects, Env, Plugin, Reply, RequestBody, ResponseChunk,
    ResponseHead, Stage, Step,
};
use aigw_shared::store;
use serde_json::Value;
use std::rc::Rc;
use std::time::Duration;

/// The request's attempts so far (filter state, JSON).
const ATTEMPTS_STATE: &str = "ai_fallback.attempts";
/// The attempt log access logs read (filter state `wasm.ai_fallback`).
const LOG_STATE: &str = "ai_fallback";
/// Metric series kept per worker.
const MAX_METRIC_SERIES: usize = 1000;
/// The tag of the longer-context callout.
const REPLAY: u32 = 1;

#[derive(Default)]
pub struct Fallback {
    rules: Option<Rc<RuleSet<Config>>>,
}

impl Plugin for Fallback {
    fn name(&self) -> &'static str {
        "ai-fallback"
    }

    fn metrics_owner(&self) -> &'static str {
        "ai_fallback"
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
        if env.property(&["upstream", "address"]).is_some() {
            Some(Box::new(AttemptWatch::new(config, env)))
        } else {
            Some(Box::new(Front::new(config)))
        }
    }
}

fn breaker_key(provider: &str) -> String {
    format!("aigw.ai-fallback.breaker.{provider}")
}

fn read_attempts(env: &dyn Env) -> Vec<Attempt> {
    env.property(&[ATTEMPTS_STATE])
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write_attempts(effects: &mut Effects, attempts: &[Attempt]) {
    effects.set_filter_state(
        ATTEMPTS_STATE,
        serde_json::to_vec(attempts).unwrap_or_default(),
    );
}

fn count(effects: &mut Effects, provider: &str, outcome: &str) {
    let series = series_prefix(&[("provider", provider), ("outcome", outcome)]);
    effects.count(&series, "fallback_attempts", 1);
}

// ----- on the provider cluster: one attempt -----

struct AttemptWatch {
    config: Rc<Config>,
    provider: String,
    index: usize,
    content_type: String,
    /// Holding a 200 until its first event shows whether it is an error: what came so far.
    inspecting: Option<Vec<u8>>,
}

impl AttemptWatch {
    fn new(config: Rc<Config>, env: &dyn Env) -> AttemptWatch {
        let ns = config.metadata_namespace.clone();
        let provider = env
            .property_string(&[
                "xds",
                "upstream_host_metadata",
                "filter_metadata",
                &ns,
                "provider",
            ])
            .unwrap_or_default();
        AttemptWatch {
            config,
            provider,
            index: 0,
            content_type: String::new(),
            inspecting: None,
        }
    }

    fn finish(&mut self, cx: &mut Cx, outcome: Outcome, model: Option<String>) {
        self.inspecting = None;
        let mut attempts = read_attempts(cx.env);
        if let Some(attempt) = attempts.get_mut(self.index) {
            attempt.outcome = Some(outcome);
            attempt.model = model;
            write_attempts(cx.effects, &attempts);
        }
    }
}

impl Stage for AttemptWatch {
    fn on_request_headers(&mut self, cx: &mut Cx, _end_of_stream: bool) -> Step {
        let mut attempts = read_attempts(cx.env);
        self.index = attempts.len();
        attempts.push(Attempt {
            provider: self.provider.clone(),
            outcome: None,
            model: None,
        });
        write_attempts(cx.effects, &attempts);
        Step::Continue
    }

    fn on_response_headers(&mut self, cx: &mut Cx, head: &ResponseHead, end: bool) -> Step {
        let status = head.status();
        self.content_type = head.content_type().to_string();
        let success = (200..300).contains(&status);
        if success && self.config.error_in_body && !end && worth_inspecting(&self.content_type) {
            // The headers wait until the first event shows whether this 200 is an error.
            self.inspecting = Some(Vec::new());
            return Step::Continue;
        }
        let outcome = if success {
            Outcome::Answered
        } else {
            Outcome::Status(status)
        };
        self.finish(cx, outcome, None);
        Step::Continue
    }

    fn holds_response_headers(&self) -> bool {
        self.inspecting.is_some()
    }

    fn wants_response_body(&self) -> bool {
        self.inspecting.is_some()
    }

    fn on_response_body(&mut self, cx: &mut Cx, chunk: &mut ResponseChunk) -> Step {
        let Some(seen) = self.inspecting.as_mut() else {
            return Step::Continue;
        };
        seen.extend_from_slice(chunk.bytes());
        match judge(
            &self.content_type,
            seen,
            chunk.end,
            self.config.max_inspect_bytes,
        ) {
            Verdict::NeedMore => Step::Hold,
            Verdict::Fine(model) => {
                self.finish(cx, Outcome::Answered, model);
                Step::Continue
            }
            Verdict::Error(message) => {
                // A 5xx is what Envoy's retry policy fails over on.
                cx.effects.set_response_header(":status", Some("502"));
                cx.effects
                    .set_response_header("x-ai-fallback-error", Some("error in a 200 answer"));
                self.finish(cx, Outcome::ErrorInBody(message), None);
                Step::Continue
            }
        }
    }
}

// ----- in front -----

#[derive(PartialEq, Eq)]
enum FrontResponse {
    /// Pass on as it is.
    Pass,
    /// Every provider failed: the body becomes the summary.
    Summarise(Vec<u8>),
    /// A 400 that may be a context-length refusal: hold it and look.
    CheckLength,
    /// The refusal, held while the longer-context model is asked.
    Replaying(Vec<u8>),
}

struct Front {
    config: Rc<Config>,
    /// The request body, kept for a longer-context replay.
    keeps_body: bool,
    request: Option<Vec<u8>>,
    /// The request's path, for sending it again.
    path: String,
    response: FrontResponse,
    /// The attempts have fed the circuit breakers.
    recorded: bool,
}

impl Front {
    fn new(config: Rc<Config>) -> Front {
        Front {
            config,
            keeps_body: false,
            request: None,
            path: String::new(),
            response: FrontResponse::Pass,
            recorded: false,
        }
    }

    /// The breaker's decision for a provider; claims the probe when it is this request's.
    fn admit(&self, env: &dyn Env, provider: &str, now: u64) -> Decision {
        let key = breaker_key(provider);
        let breaker = Breaker::decode(&env.store().get(&key).0.unwrap_or_default());
        match breaker.decide(now) {
            Decision::Probe => {
                let config = self.config.breaker();
                let mut claimed = false;
                store::update(env.store(), &key, |current| {
                    let mut b = Breaker::decode(current.unwrap_or_default());
                    claimed = b.decide(now) == Decision::Probe;
                    if !claimed {
                        return None;
                    }
                    b.start_probe(now, &config);
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

    /// Feeds each attempt that had an answer to its provider's breaker, once per request.
    fn record(&mut self, env: &dyn Env, attempts: &[Attempt]) {
        if std::mem::replace(&mut self.recorded, true) || !self.config.circuit_breaker.enabled {
            return;
        }
        let config = self.config.breaker();
        let now = env.now_ms();
        for attempt in attempts {
            let Some(outcome) = attempt.outcome.as_ref() else {
                continue;
            };
            if *outcome == Outcome::CircuitOpen || attempt.provider.is_empty() {
                continue;
            }
            let success = !outcome.failed();
            store::update(env.store(), &breaker_key(&attempt.provider), |current| {
                let mut breaker = Breaker::decode(current.unwrap_or_default());
                breaker.record(success, now, &config);
                Some(breaker.encode())
            });
        }
    }

    /// Sends the request again to the longer-context model when the provider refused it for
    /// its length; otherwise lets the refusal through.
    fn replay(&mut self, cx: &mut Cx, chunk: &mut ResponseChunk) -> Step {
        self.response = FrontResponse::Pass;
        let (Some(fallback), Some(request)) = (
            self.config.context_length_fallback.as_ref(),
            self.request.as_deref(),
        ) else {
            return Step::Continue;
        };
        if !is_context_length_refusal(chunk.bytes()) {
            return Step::Continue;
        }
        let Ok(mut body) = serde_json::from_slice::<Value>(request) else {
            return Step::Continue;
        };
        body["model"] = Value::String(fallback.model.clone());
        cx.effects.call(
            REPLAY,
            Callout::post_json(
                &fallback.cluster,
                &fallback.cluster,
                &self.path,
                serde_json::to_vec(&body).unwrap_or_default(),
                Duration::from_millis(fallback.timeout_ms),
            ),
        );
        log::info!(
            "ai-fallback: context length exceeded; asking {} on {}",
            fallback.model,
            fallback.cluster
        );
        // The refusal waits out of the chunk: the longer model's answer may take its place.
        let refusal = chunk.bytes().to_vec();
        chunk.replace(Vec::new());
        self.response = FrontResponse::Replaying(refusal);
        Step::Hold
    }
}

impl Stage for Front {
    fn on_request_headers(&mut self, cx: &mut Cx, end_of_stream: bool) -> Step {
        let mut skipped = Vec::new();
        let mut chosen = None;
        let now = cx.env.now_ms();
        for link in &self.config.chain {
            let decision = if self.config.circuit_breaker.enabled {
                self.admit(cx.env, &link.provider, now)
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
        let Some(cluster) = chosen else {
            if self.config.chain.is_empty() {
                return Step::Continue;
            }
            // Every circuit is open: answer now rather than send traffic to known-bad providers.
            for attempt in &skipped {
                count(cx.effects, &attempt.provider, "circuit_open");
            }
            self.recorded = true;
            let mut reply = Reply::json(all_failed_status(&skipped), all_failed_body(&skipped));
            reply
                .headers
                .push(("x-ai-fallback-attempts".into(), "0".into()));
            return Step::Respond(reply);
        };
        cx.effects
            .set_request_header(&self.config.cluster_header, Some(&cluster));
        write_attempts(cx.effects, &skipped);
        self.keeps_body = self.config.context_length_fallback.is_some() && !end_of_stream;
        self.path = cx.env.request_header(":path").unwrap_or_default();
        Step::Continue
    }

    fn request_body_use(&self) -> BodyUse {
        if self.keeps_body {
            BodyUse::Read {
                max_bytes: self.config.max_request_bytes,
            }
        } else {
            BodyUse::None
        }
    }

    fn on_request_body(&mut self, _cx: &mut Cx, body: &mut RequestBody) -> Step {
        self.request = body
            .bytes(self.config.max_request_bytes)
            .map(<[u8]>::to_vec);
        Step::Continue
    }

    fn on_response_headers(&mut self, cx: &mut Cx, head: &ResponseHead, end: bool) -> Step {
        let status = head.status();
        let attempts = read_attempts(cx.env);
        self.record(cx.env, &attempts);
        let tried = attempts
            .iter()
            .filter(|a| a.outcome() != Outcome::CircuitOpen)
            .count();
        let effects = &mut *cx.effects;
        effects.set_response_header("x-ai-fallback-attempts", Some(&tried.to_string()));
        if let Some(served) = attempts
            .iter()
            .rev()
            .find(|a| a.outcome() == Outcome::Answered)
        {
            effects.set_response_header("x-ai-fallback-provider", Some(&served.provider));
            if let Some(model) = &served.model {
                effects.set_response_header("x-ai-fallback-model", Some(model));
            }
        }
        let log: Vec<Value> = attempts
            .iter()
            .map(|a| serde_json::json!({"provider": a.provider, "outcome": a.outcome().label()}))
            .collect();
        effects.set_filter_state(LOG_STATE, Value::Array(log).to_string().into_bytes());
        for attempt in &attempts {
            count(effects, &attempt.provider, attempt.outcome().label());
        }
        let all_failed = !attempts.is_empty()
            && attempts.iter().all(|a| a.outcome().failed())
            && (status >= 500 || status == 429);
        if all_failed {
            effects.set_response_header(":status", Some(&all_failed_status(&attempts).to_string()));
            effects.set_response_header("content-type", Some("application/json"));
            effects.set_response_header("content-length", None);
            self.response = FrontResponse::Summarise(all_failed_body(&attempts));
        } else if status == 400 && self.request.is_some() && !end {
            // The refusal (headers included) waits until its body shows the reason.
            self.response = FrontResponse::CheckLength;
        }
        Step::Continue
    }

    fn holds_response_headers(&self) -> bool {
        matches!(
            self.response,
            FrontResponse::CheckLength | FrontResponse::Replaying(_)
        )
    }

    fn wants_response_body(&self) -> bool {
        self.response != FrontResponse::Pass
    }

    fn buffers_response_body(&self) -> bool {
        self.wants_response_body()
    }

    fn on_response_body(&mut self, cx: &mut Cx, chunk: &mut ResponseChunk) -> Step {
        match &self.response {
            FrontResponse::Summarise(summary) => {
                chunk.replace(summary.clone());
                Step::Continue
            }
            FrontResponse::CheckLength => self.replay(cx, chunk),
            FrontResponse::Pass | FrontResponse::Replaying(_) => Step::Continue,
        }
    }

    fn on_callout(&mut self, cx: &mut Cx, tag: u32, outcome: CalloutOutcome) -> Step {
        let FrontResponse::Replaying(refusal) =
            std::mem::replace(&mut self.response, FrontResponse::Pass)
        else {
            return Step::Continue;
        };
        if tag != REPLAY {
            return Step::Continue;
        }
        match outcome.success() {
            Ok(answer) => {
                let content_type = cx
                    .env
                    .callout_header("content-type")
                    .unwrap_or_else(|| "application/json".into());
                let effects = &mut *cx.effects;
                effects.set_response_header(":status", Some("200"));
                effects.set_response_header("content-type", Some(&content_type));
                effects.set_response_header("content-length", None);
                effects.set_response_header("x-ai-fallback-reason", Some("context_length"));
                effects.release(answer);
                count(effects, "context_length", "answered");
            }
            Err(why) => {
                log::info!("ai-fallback: longer-context fallback failed: {why}");
                cx.effects.release(&refusal);
                count(cx.effects, "context_length", "failed");
            }
        }
        Step::Continue
    }

    fn on_done(&mut self, cx: &mut Cx) {
        if !self.recorded {
            let attempts = read_attempts(cx.env);
            self.record(cx.env, &attempts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::stage::FakeEnv;
    use serde_json::json;

    fn plugin(breaker: Value) -> Fallback {
        let mut plugin = Fallback::default();
        plugin
            .configure(&json!({
                "chain": [
                    {"provider": "primary", "cluster": "chain-primary"},
                    {"provider": "backup", "cluster": "chain-backup"}
                ],
                "circuitBreaker": breaker,
                "contextLengthFallback": {"cluster": "long", "model": "long-model"}
            }))
            .unwrap();
        plugin
    }

    fn upstream(provider: &str) -> FakeEnv {
        FakeEnv::default()
            .with_property("upstream.address", "127.0.0.1:1")
            .with_property(
                "xds.upstream_host_metadata.filter_metadata.aigw.provider",
                provider,
            )
    }

    fn head(status: u16, content_type: &str) -> ResponseHead {
        ResponseHead {
            headers: vec![
                (":status".into(), status.to_string()),
                ("content-type".into(), content_type.into()),
            ],
        }
    }

    /// Where `env` stands: downstream (no provider) or upstream, with the request's filter
    /// state as `effects` left it.
    fn place(env: &mut FakeEnv, provider: Option<&str>, effects: &Effects) {
        env.properties = provider.map_or_else(Vec::new, |p| upstream(p).properties);
        if let Some((key, value)) = effects
            .filter_state
            .iter()
            .rev()
            .find(|(k, _)| k == ATTEMPTS_STATE)
        {
            env.properties.push((key.clone(), value.clone()));
        }
    }

    /// One request: the front, then one attempt per (provider, status), then the front's
    /// response headers. Returns the front's effects at the response.
    fn request(plugin: &Fallback, env: &mut FakeEnv, tries: &[(&str, u16)]) -> Effects {
        let mut state = Effects::default();
        place(env, None, &state);
        let mut front = plugin.stage(env).unwrap();
        front.on_request_headers(
            &mut Cx {
                env,
                effects: &mut state,
            },
            true,
        );
        for (provider, status) in tries {
            place(env, Some(provider), &state);
            let mut attempt = plugin.stage(env).unwrap();
            attempt.on_request_headers(
                &mut Cx {
                    env,
                    effects: &mut state,
                },
                true,
            );
            place(env, Some(provider), &state);
            let head = head(*status, "application/json");
            attempt.on_response_headers(
                &mut Cx {
                    env,
                    effects: &mut state,
                },
                &head,
                true,
            );
        }
        place(env, None, &state);
        let mut effects = Effects::default();
        let head = head(tries.last().map_or(200, |t| t.1), "application/json");
        front.on_response_headers(
            &mut Cx {
                env,
                effects: &mut effects,
            },
            &head,
            true,
        );
        effects
    }

    fn header<'a>(effects: &'a Effects, name: &str) -> Option<&'a str> {
        effects
            .response_headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    #[test]
    fn the_front_names_who_served_after_how_many_attempts() {
        let plugin = plugin(json!({"enabled": false}));
        let effects = request(
            &plugin,
            &mut FakeEnv::default(),
            &[("primary", 500), ("backup", 200)],
        );
        assert_eq!(header(&effects, "x-ai-fallback-attempts"), Some("2"));
        assert_eq!(header(&effects, "x-ai-fallback-provider"), Some("backup"));
        let log = effects
            .filter_state
            .iter()
            .find(|(k, _)| k == LOG_STATE)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&log.1).unwrap(),
            json!([{"provider": "primary", "outcome": "server_error"}, {"provider": "backup", "outcome": "answered"}])
        );
    }

    #[test]
    fn failures_open_the_circuit_and_the_chain_starts_past_it() {
        let plugin =
            plugin(json!({"failureThreshold": 2, "cooldownSeconds": 60, "windowSeconds": 60}));
        let mut env = FakeEnv::default();
        for _ in 0..2 {
            request(&plugin, &mut env, &[("primary", 500), ("backup", 200)]);
        }
        place(&mut env, None, &Effects::default());
        let mut front = plugin.stage(&env).unwrap();
        let mut effects = Effects::default();
        front.on_request_headers(
            &mut Cx {
                env: &env,
                effects: &mut effects,
            },
            true,
        );
        assert_eq!(
            effects.request_headers.last(),
            Some(&(
                "x-ai-fallback-cluster".to_string(),
                Some("chain-backup".to_string())
            )),
            "{effects:?}"
        );
    }

    #[test]
    fn an_error_in_a_200_holds_the_headers_and_becomes_a_502() {
        let plugin = plugin(json!({"enabled": false}));
        let env = upstream("primary");
        let mut attempt = plugin.stage(&env).unwrap();
        let mut effects = Effects::default();
        let mut cx = Cx {
            env: &env,
            effects: &mut effects,
        };
        attempt.on_request_headers(&mut cx, false);
        attempt.on_response_headers(&mut cx, &head(200, "application/json"), false);
        assert!(attempt.holds_response_headers() && attempt.wants_response_body());
        let mut first = ResponseChunk::new(br#"{"error": {"mess"#.to_vec(), false);
        assert_eq!(attempt.on_response_body(&mut cx, &mut first), Step::Hold);
        let mut rest = ResponseChunk::new(br#"age": "overloaded"}}"#.to_vec(), true);
        assert_eq!(attempt.on_response_body(&mut cx, &mut rest), Step::Continue);
        assert_eq!(header(&effects, ":status"), Some("502"));
        assert!(!attempt.holds_response_headers());
    }

    #[test]
    fn a_length_refusal_is_answered_by_the_longer_context_model() {
        let plugin = plugin(json!({"enabled": false}));
        let env = FakeEnv::default().with_header(":path", "/v1/chat/completions");
        let mut front = plugin.stage(&env).unwrap();
        let mut effects = Effects::default();
        let mut cx = Cx {
            env: &env,
            effects: &mut effects,
        };
        front.on_request_headers(&mut cx, false);
        assert!(matches!(front.request_body_use(), BodyUse::Read { .. }));
        let mut body = RequestBody::new(Some(br#"{"model":"short","messages":[]}"#.to_vec()), 31);
        front.on_request_body(&mut cx, &mut body);
        front.on_response_headers(&mut cx, &head(400, "application/json"), false);
        assert!(front.holds_response_headers() && front.buffers_response_body());
        let refusal = br#"{"error":{"message":"too long","code":"context_length_exceeded"}}"#;
        let mut chunk = ResponseChunk::new(refusal.to_vec(), true);
        assert_eq!(front.on_response_body(&mut cx, &mut chunk), Step::Hold);
        assert!(chunk.bytes().is_empty(), "the refusal waits");
        let (tag, callout) = effects.callouts.pop().unwrap();
        let sent: Value = serde_json::from_slice(&callout.body).unwrap();
        assert_eq!(sent["model"], "long-model");
        let mut cx = Cx {
            env: &env,
            effects: &mut effects,
        };
        let answer = br#"{"choices":[]}"#;
        let step = front.on_callout(
            &mut cx,
            tag,
            CalloutOutcome::Answered {
                status: 200,
                body: answer.to_vec(),
            },
        );
        assert_eq!(step, Step::Continue);
        assert_eq!(effects.released, answer);
        assert_eq!(header(&effects, ":status"), Some("200"));
        assert_eq!(
            header(&effects, "x-ai-fallback-reason"),
            Some("context_length")
        );
    }

    #[test]
    fn a_failed_replay_lets_the_refusal_through() {
        let plugin = plugin(json!({"enabled": false}));
        let env = FakeEnv::default();
        let mut front = plugin.stage(&env).unwrap();
        let mut effects = Effects::default();
        let mut cx = Cx {
            env: &env,
            effects: &mut effects,
        };
        front.on_request_headers(&mut cx, false);
        front.on_request_body(&mut cx, &mut RequestBody::new(Some(b"{}".to_vec()), 2));
        front.on_response_headers(&mut cx, &head(400, "application/json"), false);
        let refusal = br#"{"error":{"message":"prompt is too long"}}"#;
        let mut chunk = ResponseChunk::new(refusal.to_vec(), true);
        assert_eq!(front.on_response_body(&mut cx, &mut chunk), Step::Hold);
        let step = front.on_callout(&mut cx, REPLAY, CalloutOutcome::TimedOut);
        assert_eq!(step, Step::Continue);
        assert_eq!(effects.released, refusal);
    }
}
