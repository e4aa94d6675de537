//! The plugin as a stage of the runner: the prompt is masked and checked before the request
//! goes on, a whole JSON answer is checked before the client sees any of it, and a streamed
//! answer is held in windows ([`hold`]) with the held bytes kept here. Checks run locally
//! first, then as callouts to the service ([`check`] gathers their answers).

use crate::check::{read_outcome, Failure, Gathering};
use crate::config::{self, Config};
use crate::deny::{self, Identity};
use crate::hold::{self, HeldBody, StreamHold};
use crate::record::{self, Record};
use crate::restore::{self, StreamRestore, Vault};
use crate::services::{self, CallContext};
use crate::verdict::{Finding, Phase, Verdict};
use crate::{extract, mask};
use aigw_shared::body::{is_event_stream, is_json};
use aigw_shared::callout::Outcome;
use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::rules::RuleSet;
use aigw_shared::stage::{
    rule_for, BodyUse, Configured, Cx, Env, Plugin, Reply, RequestBody, ResponseChunk,
    ResponseHead, Stage, Step,
};
use serde_json::Value;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

const PLUGIN: &str = "ai-content-safety";
/// The clock that wakes windows held past `maxHoldMs`.
const TICK: Duration = Duration::from_millis(100);
const MAX_METRIC_SERIES: usize = 10_000;

/// The per-worker part: the rules, and the sequence that keeps signature nonces apart.
pub struct ContentSafety {
    rules: Option<Rc<RuleSet<Config>>>,
    sequence: Rc<Cell<u64>>,
}

impl Default for ContentSafety {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // A random start (WASI's random source) keeps signature nonces apart across workers.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        ContentSafety {
            rules: None,
            sequence: Rc::new(Cell::new(seed)),
        }
    }
}

impl Plugin for ContentSafety {
    fn name(&self) -> &'static str {
        PLUGIN
    }

    fn metrics_owner(&self) -> &'static str {
        "ai_content_safety"
    }

    fn ignored_keys(&self) -> &'static [(&'static str, &'static str)] {
        &config::IGNORED_HIGRESS_KEYS
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

    fn stage(&self, env: &dyn Env) -> Option<Box<dyn Stage>> {
        let config = rule_for(self.rules.as_ref()?, env)?;
        if !config.reads_request() && !config.checks_response() {
            return None;
        }
        Some(Box::new(Safety::new(
            config,
            env.route_name(),
            self.sequence.clone(),
        )))
    }
}

/// What a check waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Request { stream: bool },
    Whole,
    Stream,
}

struct Pending {
    target: Target,
    gathering: Gathering,
    tags: Vec<u32>,
}

/// How the response is handled, decided at its headers.
enum Response {
    Untouched,
    /// A JSON answer, seen whole; `held` while its check runs.
    Whole {
        held: Vec<u8>,
    },
    /// A streamed answer; `held` is what Envoy would hold were the stream paused on it: what
    /// [`StreamHold`] works on.
    Stream {
        hold: Box<StreamHold>,
        held: Vec<u8>,
    },
}

/// Where a held stream stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Held,
    Released,
}

/// The held bytes of a stream as [`HeldBody`].
struct Held<'a>(&'a mut Vec<u8>);

impl HeldBody for Held<'_> {
    fn size(&self) -> usize {
        self.0.len()
    }

    fn read(&self, start: usize, len: usize) -> Vec<u8> {
        let start = start.min(self.0.len());
        let end = start.saturating_add(len).min(self.0.len());
        self.0[start..end].to_vec()
    }

    fn replace_prefix(&mut self, size: usize, data: &[u8]) {
        let size = size.min(self.0.len());
        self.0.splice(..size, data.iter().copied());
    }
}

/// One request on its way through the plugin.
pub struct Safety {
    config: Rc<Config>,
    route: String,
    sequence: Rc<Cell<u64>>,
    read_request: bool,
    vault: Option<Rc<Vault>>,
    record: Record,
    pending: Option<Pending>,
    next_tag: u32,
    response: Response,
    /// The response is held (the last step on it was [`Step::Hold`]).
    holding: bool,
    /// A streamed answer was accounted for.
    stream_finished: bool,
}

impl Safety {
    fn new(config: Rc<Config>, route: String, sequence: Rc<Cell<u64>>) -> Safety {
        Safety {
            config,
            route,
            sequence,
            read_request: false,
            vault: None,
            record: Record::default(),
            pending: None,
            next_tag: 0,
            response: Response::Untouched,
            holding: false,
            stream_finished: false,
        }
    }

    fn next_sequence(&self) -> u64 {
        let n = self.sequence.get().wrapping_add(1);
        self.sequence.set(n);
        n
    }

    /// The step on the response, remembered for the callout answers that decide nothing.
    fn response_step(&mut self, hold: bool) -> Step {
        self.holding = hold;
        if hold {
            Step::Hold
        } else {
            Step::Continue
        }
    }
}

impl Stage for Safety {
    fn on_request_headers(&mut self, cx: &mut Cx, end_of_stream: bool) -> Step {
        let content_type = cx.env.request_header("content-type").unwrap_or_default();
        self.read_request = self.config.reads_request()
            && !end_of_stream
            && (content_type.is_empty() || is_json(&content_type));
        if self.read_request && self.config.masking.is_some() {
            // Masking changes the body's size.
            cx.effects.set_request_header("content-length", None);
        }
        Step::Continue
    }

    /// The whole body, before the headers go on: a blocked prompt never opens a connection to
    /// the provider.
    fn request_body_use(&self) -> BodyUse {
        if self.read_request {
            BodyUse::Change {
                max_bytes: self.config.max_body_bytes,
            }
        } else {
            BodyUse::None
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx, body: &mut RequestBody) -> Step {
        if !std::mem::take(&mut self.read_request) {
            return Step::Continue;
        }
        if body.bytes(self.config.max_body_bytes).is_none() {
            return refuse(&ApiError::too_large(self.config.max_body_bytes));
        }
        match self.check_request(cx, body) {
            Ok(None) => Step::Hold,
            Ok(Some(Verdict::Pass)) => Step::Continue,
            Ok(Some(Verdict::Block(finding))) => {
                let stream = aigw_shared::meter::RequestInfo::from_body(
                    body.bytes(usize::MAX).unwrap_or_default(),
                )
                .stream;
                Step::Respond(self.deny_request(cx, &finding, stream))
            }
            Err(err) => refuse(&err),
        }
    }

    fn on_response_headers(&mut self, cx: &mut Cx, head: &ResponseHead, _end: bool) -> Step {
        let restore =
            self.config.masking.as_ref().is_some_and(|m| m.restore) && self.vault.is_some();
        if !(200..300).contains(&head.status()) || !(self.config.checks_response() || restore) {
            return Step::Continue;
        }
        let config = &self.config;
        if is_event_stream(head.content_type()) {
            let restorer = self
                .vault
                .clone()
                .filter(|_| restore)
                .map(StreamRestore::new);
            let hold = StreamHold::new(
                config.windows,
                config.checks_response(),
                config.deny_message.clone(),
                Identity::local(cx.env.now_ms() / 1000),
                restorer,
                config.unparsable,
            )
            .bounded(config.max_event_bytes);
            self.response = Response::Stream {
                hold: Box::new(hold),
                held: Vec::new(),
            };
        } else if is_json(head.content_type()) {
            self.response = Response::Whole { held: Vec::new() };
        } else {
            return Step::Continue;
        }
        cx.effects.set_response_header("content-length", None);
        Step::Continue
    }

    fn wants_response_body(&self) -> bool {
        !matches!(self.response, Response::Untouched)
    }

    fn buffers_response_body(&self) -> bool {
        matches!(self.response, Response::Whole { .. })
    }

    fn on_response_body(&mut self, cx: &mut Cx, chunk: &mut ResponseChunk) -> Step {
        match &mut self.response {
            Response::Untouched => Step::Continue,
            Response::Whole { .. } => {
                let len = chunk.bytes().len();
                if len > self.config.max_body_bytes {
                    log::warn!(
                        "{PLUGIN}: answer larger than maxBodyBytes ({len} bytes) passed unchecked"
                    );
                    self.response = Response::Untouched;
                    return Step::Continue;
                }
                if !chunk.end {
                    return Step::Continue;
                }
                let hold = self.check_whole(cx, chunk);
                self.response_step(hold)
            }
            Response::Stream { hold, held } => {
                held.extend_from_slice(chunk.bytes());
                let step = hold.on_body(&mut Held(held), chunk.end, cx.env.now_ms());
                if hold.take_overflow() {
                    log::warn!("{PLUGIN}: a stream event passed maxEventBytes ({} bytes); the stream was ended with an error", self.config.max_event_bytes);
                    cx.effects.count(
                        &record::route_series(&self.route),
                        "stream_events_too_large",
                        1,
                    );
                }
                match self.run_stream(cx, step) {
                    Flow::Held => {
                        chunk.replace(Vec::new());
                        self.response_step(true)
                    }
                    Flow::Released => {
                        let out = self.take_held();
                        if out != chunk.bytes() {
                            chunk.replace(out);
                        }
                        self.response_step(false)
                    }
                }
            }
        }
    }

    fn on_callout(&mut self, cx: &mut Cx, tag: u32, outcome: Outcome) -> Step {
        let idle = if self.holding || self.pending.is_some() {
            Step::Hold
        } else {
            Step::Continue
        };
        if !self.pending.as_ref().is_some_and(|p| p.tags.contains(&tag)) {
            return idle;
        }
        let config = self.config.clone();
        let Some(configured) = config.service.as_ref() else {
            return idle;
        };
        let result = read_outcome(outcome, |status, body| {
            configured.service.verdict(status, body)
        });
        if let Err(failure) = &result {
            self.note_failure(cx, failure);
        }
        let Some(pending) = self.pending.as_mut() else {
            return idle;
        };
        let Some(verdict) = pending.gathering.record(result) else {
            return Step::Hold;
        };
        let target = pending.target;
        self.pending = None;
        match (target, verdict) {
            (Target::Request { .. }, Verdict::Pass) => Step::Continue,
            (Target::Request { stream }, Verdict::Block(finding)) => {
                Step::Respond(self.deny_request(cx, &finding, stream))
            }
            (Target::Whole, verdict) => {
                let Response::Whole { held } = &mut self.response else {
                    return self.response_step(false);
                };
                let body = std::mem::take(held);
                let out = self.finish_whole(cx, &verdict, &body);
                cx.effects.release(out.as_deref().unwrap_or(&body));
                self.response_step(false)
            }
            (Target::Stream, verdict) => {
                let step = self.stream_verdict(cx, verdict);
                self.go_on_stream(cx, step)
            }
        }
    }

    fn wake_at_ms(&self) -> Option<u64> {
        match &self.response {
            Response::Stream { hold, .. } if self.holding && self.pending.is_none() => {
                hold.due_at_ms()
            }
            _ => None,
        }
    }

    fn on_wake(&mut self, cx: &mut Cx) -> Step {
        let Response::Stream { hold, .. } = &mut self.response else {
            return self.response_step(false);
        };
        let step = hold.on_tick(cx.env.now_ms());
        self.go_on_stream(cx, step)
    }
}

/// Answers a request the plugin cannot use with an OpenAI error.
fn refuse(err: &ApiError) -> Step {
    log::info!("{PLUGIN}: refused request: {err}");
    Step::Respond(Reply::error(err, ClientApi::OpenAi))
}

impl Safety {
    /// Masks and checks the request body; `Ok(None)` while callouts run.
    fn check_request(
        &mut self,
        cx: &mut Cx,
        body: &mut RequestBody,
    ) -> Result<Option<Verdict>, ApiError> {
        let bytes = body.bytes(usize::MAX).unwrap_or_default();
        if bytes.is_empty() {
            return Ok(Some(Verdict::Pass));
        }
        let mut value: Value = aigw_shared::json::parse(bytes).map_err(|e| {
            let param = (!e.path.is_empty()).then_some(e.path.as_str());
            ApiError::invalid_request(param, format!("request body is not valid JSON: {e}"))
        })?;
        if !value.is_object() {
            return Err(ApiError::invalid_request(
                None,
                "request body must be a JSON object",
            ));
        }
        let stream = value.get("stream").and_then(Value::as_bool) == Some(true);
        let config = self.config.clone();
        let checking =
            config.check_request && (!config.local.is_empty() || config.service.is_some());
        let original = if checking {
            extract::prompt_text(&value, &config.prompt)?
        } else {
            String::new()
        };
        let mut masked_text = None;
        if let Some(masking) = &config.masking {
            let mut vault = Vault::default();
            let mut counter = mask::Counter::default();
            if mask::mask_body(&mut value, &masking.masker, &mut vault, &mut counter) {
                body.replace(serde_json::to_vec(&value).unwrap_or_default());
                self.record.masked = counter.masked;
                cx.effects
                    .count(&record::route_series(&self.route), "masked", counter.masked);
                if checking {
                    masked_text = Some(extract::prompt_text(&value, &config.prompt)?);
                }
                if !vault.is_empty() {
                    self.vault = Some(Rc::new(vault));
                }
                self.write_log(cx);
            }
        }
        if !checking || original.trim().is_empty() {
            return Ok(Some(Verdict::Pass));
        }
        let service_text = masked_text.unwrap_or_else(|| original.clone());
        Ok(self.start_check(
            cx,
            &[original],
            &service_text,
            Phase::Request,
            Target::Request { stream },
        ))
    }

    /// Checks each of `local_texts` locally, then `service_text` with the service. `None`
    /// while callouts run (their answers come to [`Stage::on_callout`]).
    fn start_check(
        &mut self,
        cx: &mut Cx,
        local_texts: &[String],
        service_text: &str,
        phase: Phase,
        target: Target,
    ) -> Option<Verdict> {
        cx.effects
            .count(&record::phase_series(&self.route, phase), "checks", 1);
        let config = self.config.clone();
        if let Some(finding) = local_texts
            .iter()
            .find_map(|text| config.local.check(text, phase))
        {
            return Some(Verdict::Block(finding));
        }
        let Some(configured) = config.service.as_ref() else {
            return Some(Verdict::Pass);
        };
        if service_text.trim().is_empty() {
            return Some(Verdict::Pass);
        }
        let endpoint = &configured.endpoint;
        let segments = services::segments(
            service_text,
            endpoint.max_chars,
            config.windows.overlap_chars,
        );
        let context = CallContext {
            now_ms: cx.env.now_ms(),
            sequence: self.next_sequence(),
        };
        let callouts = configured
            .service
            .requests(endpoint, &segments, phase, context);
        if callouts.is_empty() {
            return Some(Verdict::Pass);
        }
        let gathering = Gathering::new(
            configured.service.name(),
            endpoint.failure_policy,
            callouts.len(),
        );
        let mut tags = Vec::with_capacity(callouts.len());
        for callout in callouts {
            let tag = self.next_tag;
            self.next_tag = self.next_tag.wrapping_add(1);
            cx.effects.call(tag, callout);
            tags.push(tag);
        }
        self.pending = Some(Pending {
            target,
            gathering,
            tags,
        });
        None
    }

    /// The rest of a stream step taken outside a body callback (a callout's answer, a
    /// wake-up): what is released goes out with the chunk the runner holds.
    fn go_on_stream(&mut self, cx: &mut Cx, step: hold::Step) -> Step {
        match self.run_stream(cx, step) {
            Flow::Held => self.response_step(true),
            Flow::Released => {
                let out = self.take_held();
                cx.effects.release(&out);
                self.response_step(false)
            }
        }
    }

    /// The held bytes of a released stream (the carry stays in [`StreamHold`]).
    fn take_held(&mut self) -> Vec<u8> {
        match &mut self.response {
            Response::Stream { held, .. } => std::mem::take(held),
            _ => Vec::new(),
        }
    }

    /// Runs stream steps until the stream holds or releases.
    fn run_stream(&mut self, cx: &mut Cx, mut step: hold::Step) -> Flow {
        loop {
            match step {
                hold::Step::Hold => return Flow::Held,
                hold::Step::Release => {
                    self.finish_stream(cx);
                    return Flow::Released;
                }
                hold::Step::Block(finding) => {
                    step = self.stream_verdict(cx, Verdict::Block(finding))
                }
                hold::Step::Check(texts) => {
                    let Some(verdict) = self.start_check(
                        cx,
                        &texts,
                        &texts.join("\n\n"),
                        Phase::Response,
                        Target::Stream,
                    ) else {
                        return Flow::Held;
                    };
                    step = self.stream_verdict(cx, verdict);
                }
            }
        }
    }

    /// Hands a verdict on the held window to the stream.
    fn stream_verdict(&mut self, cx: &mut Cx, verdict: Verdict) -> hold::Step {
        let Response::Stream { hold, held } = &mut self.response else {
            return hold::Step::Release;
        };
        let step = hold.on_verdict(&mut Held(held), &verdict, cx.env.now_ms());
        if let Verdict::Block(finding) = &verdict {
            self.blocked(cx, Phase::Response, finding);
        }
        step
    }

    /// Once a streamed answer is all out: restores counted, record written.
    fn finish_stream(&mut self, cx: &mut Cx) {
        let Response::Stream { hold, .. } = &self.response else {
            return;
        };
        if !hold.is_done() || self.stream_finished {
            return;
        }
        self.stream_finished = true;
        let series = record::route_series(&self.route);
        cx.effects.histogram(
            &series,
            "stream_held_bytes_peak",
            hold.peak_held_bytes() as u64,
        );
        let restored = hold.restored();
        if restored > 0 {
            self.record.restored = restored;
            cx.effects.count(&series, "restored", restored);
            self.write_log(cx);
        }
    }

    /// Checks a whole JSON answer, the last chunk; true while its check runs (the answer is
    /// then held here, and the chunk empty).
    fn check_whole(&mut self, cx: &mut Cx, chunk: &mut ResponseChunk) -> bool {
        let body = chunk.bytes();
        let texts = if self.config.checks_response() {
            extract::answer_texts(
                body,
                self.config.response_path.as_deref(),
                self.config.unparsable,
            )
        } else {
            Ok(Vec::new())
        };
        let verdict = match texts {
            Err(finding) => Some(Verdict::Block(finding)),
            Ok(texts) if texts.iter().all(|t| t.trim().is_empty()) => Some(Verdict::Pass),
            Ok(texts) => {
                let service_text = texts.join("\n\n");
                self.start_check(cx, &texts, &service_text, Phase::Response, Target::Whole)
            }
        };
        match verdict {
            Some(verdict) => {
                if let Some(out) = self.finish_whole(cx, &verdict, chunk.bytes()) {
                    chunk.replace(out);
                }
                false
            }
            None => {
                self.response = Response::Whole {
                    held: chunk.bytes().to_vec(),
                };
                chunk.replace(Vec::new());
                true
            }
        }
    }

    /// The answer that replaces a blocked one, or a passed one with its placeholders
    /// restored; `None`: the answer goes as it is.
    fn finish_whole(&mut self, cx: &mut Cx, verdict: &Verdict, body: &[u8]) -> Option<Vec<u8>> {
        match verdict {
            Verdict::Block(finding) => {
                self.blocked(cx, Phase::Response, finding);
                let value: Value = serde_json::from_slice(body).unwrap_or_default();
                let identity = Identity {
                    id: value["id"]
                        .as_str()
                        .unwrap_or("chatcmpl-content-safety")
                        .to_string(),
                    model: value["model"].as_str().unwrap_or(deny::MODEL).to_string(),
                    created: value["created"].as_u64().unwrap_or_default(),
                };
                Some(deny::completion(&self.config.deny_message, &identity))
            }
            Verdict::Pass => {
                let restore = self.config.masking.as_ref().is_some_and(|m| m.restore);
                let restored = self
                    .vault
                    .as_ref()
                    .filter(|_| restore)
                    .and_then(|vault| restore::restore_completion(body, vault));
                if restored.is_some() {
                    self.record.restored += 1;
                    cx.effects
                        .count(&record::route_series(&self.route), "restored", 1);
                    self.write_log(cx);
                }
                restored
            }
        }
    }

    /// The answer to a blocked prompt.
    fn deny_request(&mut self, cx: &mut Cx, finding: &Finding, stream: bool) -> Reply {
        self.blocked(cx, Phase::Request, finding);
        let config = &self.config;
        let answer = deny::request_answer(
            config.deny_code,
            &config.deny_message,
            stream,
            &Identity::local(cx.env.now_ms() / 1000),
        );
        Reply {
            status: answer.status,
            headers: vec![
                ("content-type".into(), answer.content_type.into()),
                (deny::HEADER.into(), "blocked".into()),
            ],
            body: answer.body,
        }
    }

    /// Counts and logs a block.
    fn blocked(&mut self, cx: &mut Cx, phase: Phase, finding: &Finding) {
        log::info!(
            "{PLUGIN}: {} blocked by {} ({})",
            phase.name(),
            finding.backend,
            finding.label
        );
        cx.effects.count(
            &record::blocked_series(&self.route, phase, finding),
            "blocked",
            1,
        );
        self.record.block(phase, finding);
        self.write_log(cx);
    }

    /// Counts and logs a callout that gave no verdict (its message never carries our keys:
    /// services echo at most a redacted key).
    fn note_failure(&mut self, cx: &mut Cx, failure: &Failure) {
        let service = self.config.service.as_ref();
        let backend = service.map_or("service", |s| s.service.name());
        log::warn!(
            "{PLUGIN}: {backend} callout failed ({}): {}; failure policy {:?}",
            failure.reason,
            failure.detail,
            service.map(|s| s.endpoint.failure_policy)
        );
        cx.effects.count(
            &record::failure_series(&self.route, backend, failure.reason),
            "callout_failed",
            1,
        );
        self.record.service_failures += 1;
        self.write_log(cx);
    }

    fn write_log(&self, cx: &mut Cx) {
        if self.record.is_notable() {
            cx.effects
                .set_filter_state(&self.config.log_key, self.record.json().into_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::stage::{Effects, FakeEnv};
    use serde_json::json;

    fn stage(config: Value) -> Box<dyn Stage> {
        let mut plugin = ContentSafety::default();
        let configured = plugin.configure(&config).unwrap();
        assert_eq!(configured.tick, Some(TICK));
        plugin.stage(&FakeEnv::default()).unwrap()
    }

    fn webhook(policy: &str) -> Value {
        json!({"type": "webhook", "cluster": "moderation", "host": "mod.local", "failurePolicy": policy})
    }

    fn env() -> FakeEnv {
        FakeEnv::default().with_header("content-type", "application/json")
    }

    /// Runs `f` with a fresh context; returns what it answered and the effects it asked for.
    fn with<R>(env: &FakeEnv, f: impl FnOnce(&mut Cx) -> R) -> (R, Effects) {
        let mut effects = Effects::default();
        let mut cx = Cx {
            env,
            effects: &mut effects,
        };
        let r = f(&mut cx);
        (r, effects)
    }

    fn prompt(text: &str, stream: bool) -> RequestBody {
        let body = json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]});
        let bytes = serde_json::to_vec(&body).unwrap();
        RequestBody::new(Some(bytes.clone()), bytes.len())
    }

    /// The request headers and body; the step and effects of the body.
    fn ask(stage: &mut Box<dyn Stage>, env: &FakeEnv, body: &mut RequestBody) -> (Step, Effects) {
        assert_eq!(
            with(env, |cx| stage.on_request_headers(cx, false)).0,
            Step::Continue
        );
        assert!(matches!(stage.request_body_use(), BodyUse::Change { .. }));
        with(env, |cx| stage.on_request_body(cx, body))
    }

    fn answer_head(stage: &mut Box<dyn Stage>, env: &FakeEnv, content_type: &str) -> Effects {
        let head = ResponseHead {
            headers: vec![
                (":status".into(), "200".into()),
                ("content-type".into(), content_type.into()),
            ],
        };
        let (step, effects) = with(env, |cx| stage.on_response_headers(cx, &head, false));
        assert_eq!(step, Step::Continue);
        effects
    }

    fn sse(text: &str) -> Vec<u8> {
        let chunk = json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": text}}]});
        format!("data: {chunk}\n\n").into_bytes()
    }

    fn flagged(flagged: bool) -> Outcome {
        Outcome::Answered {
            status: 200,
            body: serde_json::to_vec(&json!({"flagged": flagged, "label": "violence"})).unwrap(),
        }
    }

    #[test]
    fn a_prompt_with_a_deny_word_is_answered_locally() {
        let mut s = stage(json!({"local": {"denyWords": ["forbidden"]}}));
        let env = env();
        let (step, effects) = ask(&mut s, &env, &mut prompt("say forbidden things", false));
        let Step::Respond(reply) = step else {
            panic!("not denied: {step:?}");
        };
        assert!(reply
            .headers
            .contains(&(deny::HEADER.into(), "blocked".into())));
        assert!(String::from_utf8_lossy(&reply.body).contains("content_filter"));
        assert!(effects.metrics.iter().any(|m| m.metric == "blocked"));
        assert_eq!(effects.filter_state[0].0, "ai_content_safety");
    }

    #[test]
    fn a_clean_prompt_goes_on_and_a_masked_one_is_rewritten() {
        let mut s = stage(json!({"local": {"denyWords": ["forbidden"]}}));
        let env = env();
        let (step, effects) = ask(&mut s, &env, &mut prompt("hello", false));
        assert_eq!(step, Step::Continue);
        assert!(effects.filter_state.is_empty());

        let mut s = stage(json!({"dataMasking": {}}));
        let mut body = prompt("mail me at alice@example.com", false);
        assert_eq!(
            with(&env, |cx| s.on_request_headers(cx, false))
                .1
                .request_headers,
            vec![("content-length".to_string(), None)]
        );
        let (step, _) = with(&env, |cx| s.on_request_body(cx, &mut body));
        assert_eq!(step, Step::Continue);
        assert!(body.is_changed());
        let sent = String::from_utf8(body.take_bytes()).unwrap();
        assert!(!sent.contains("alice@example.com"), "{sent}");
    }

    #[test]
    fn bodies_that_cannot_be_checked_are_refused() {
        let mut s = stage(json!({"local": {"denyWords": ["x"]}, "maxBodyBytes": 10}));
        let (step, _) = ask(&mut s, &env(), &mut RequestBody::new(None, 11));
        assert!(
            matches!(step, Step::Respond(Reply { status: 413, .. })),
            "{step:?}"
        );

        let mut s = stage(json!({"local": {"denyWords": ["x"]}}));
        let bytes = b"[1]".to_vec();
        let (step, _) = ask(&mut s, &env(), &mut RequestBody::new(Some(bytes), 3));
        assert!(
            matches!(step, Step::Respond(Reply { status: 400, .. })),
            "{step:?}"
        );

        let mut s = stage(json!({"local": {"denyWords": ["x"]}}));
        let env = FakeEnv::default().with_header("content-type", "text/plain");
        with(&env, |cx| s.on_request_headers(cx, false));
        assert_eq!(s.request_body_use(), BodyUse::None);
    }

    #[test]
    fn a_prompt_waits_for_the_service_and_goes_on_or_is_denied() {
        let env = env();
        let mut s = stage(json!({"service": webhook("open")}));
        let (step, effects) = ask(&mut s, &env, &mut prompt("hello", false));
        assert_eq!(step, Step::Hold);
        assert_eq!(effects.callouts.len(), 1);
        assert_eq!(effects.callouts[0].1.cluster, "moderation");
        let tag = effects.callouts[0].0;
        assert_eq!(
            with(&env, |cx| s.on_callout(cx, tag + 1, flagged(true))).0,
            Step::Hold
        );
        assert_eq!(
            with(&env, |cx| s.on_callout(cx, tag, flagged(false))).0,
            Step::Continue
        );

        let mut s = stage(json!({"service": webhook("open")}));
        let (_, effects) = ask(&mut s, &env, &mut prompt("hello", true));
        let tag = effects.callouts[0].0;
        let (step, _) = with(&env, |cx| s.on_callout(cx, tag, flagged(true)));
        let Step::Respond(reply) = step else {
            panic!("not denied: {step:?}");
        };
        assert!(String::from_utf8_lossy(&reply.body).contains("data: [DONE]"));
    }

    #[test]
    fn a_failed_callout_follows_the_failure_policy() {
        let env = env();
        for (policy, denied) in [("open", false), ("closed", true)] {
            let mut s = stage(json!({"service": webhook(policy)}));
            let (_, effects) = ask(&mut s, &env, &mut prompt("hello", false));
            let tag = effects.callouts[0].0;
            let (step, effects) = with(&env, |cx| {
                s.on_callout(cx, tag, Outcome::Unreachable("no host".into()))
            });
            assert_eq!(
                matches!(step, Step::Respond(_)),
                denied,
                "{policy}: {step:?}"
            );
            assert!(effects.metrics.iter().any(|m| m.metric == "callout_failed"));
        }
    }

    #[test]
    fn a_whole_answer_is_seen_whole_and_a_flagged_one_replaced() {
        let env = env();
        let mut s = stage(json!({"checkRequest": false, "local": {"denyWords": ["forbidden"]}}));
        let effects = answer_head(&mut s, &env, "application/json");
        assert_eq!(
            effects.response_headers,
            vec![("content-length".to_string(), None)]
        );
        assert!(s.wants_response_body() && s.buffers_response_body());
        let answer = json!({"id": "x", "model": "m", "choices": [{"message": {"role": "assistant", "content": "a forbidden answer"}}]});
        let mut chunk = ResponseChunk::new(serde_json::to_vec(&answer).unwrap(), true);
        let (step, _) = with(&env, |cx| s.on_response_body(cx, &mut chunk));
        assert_eq!(step, Step::Continue);
        let out = String::from_utf8(chunk.into_bytes()).unwrap();
        assert!(
            !out.contains("forbidden answer") && out.contains("content_filter"),
            "{out}"
        );
    }

    #[test]
    fn a_whole_answer_is_held_while_the_service_checks_it() {
        let env = env();
        let mut s = stage(json!({"checkRequest": false, "service": webhook("open")}));
        answer_head(&mut s, &env, "application/json");
        let answer =
            serde_json::to_vec(&json!({"choices": [{"message": {"content": "fine"}}]})).unwrap();
        let mut chunk = ResponseChunk::new(answer.clone(), true);
        let (step, effects) = with(&env, |cx| s.on_response_body(cx, &mut chunk));
        assert_eq!(step, Step::Hold);
        assert!(chunk.bytes().is_empty());
        let tag = effects.callouts[0].0;
        let (step, effects) = with(&env, |cx| s.on_callout(cx, tag, flagged(false)));
        assert_eq!(step, Step::Continue);
        assert_eq!(effects.released, answer);
    }

    #[test]
    fn a_stream_is_released_in_checked_windows_and_cut_at_a_flagged_one() {
        let env = env();
        let mut s = stage(
            json!({"checkRequest": false, "local": {"denyWords": ["forbidden"]},
            "stream": {"windowChars": 12, "overlapChars": 4}}),
        );
        answer_head(&mut s, &env, "text/event-stream");
        assert!(!s.buffers_response_body());
        // Under a window: held, nothing goes yet.
        let mut chunk = ResponseChunk::new(sse("hello "), false);
        assert_eq!(
            with(&env, |cx| s.on_response_body(cx, &mut chunk)).0,
            Step::Hold
        );
        assert!(chunk.bytes().is_empty());
        assert!(s.wake_at_ms().is_some());
        // A full clean window: both events go.
        let mut chunk = ResponseChunk::new(sse("there world"), false);
        assert_eq!(
            with(&env, |cx| s.on_response_body(cx, &mut chunk)).0,
            Step::Continue
        );
        assert_eq!(chunk.bytes(), [sse("hello "), sse("there world")].concat());
        // A flagged window: a deny chunk, then the end.
        let mut chunk = ResponseChunk::new(sse("so forbidden!"), false);
        let (step, effects) = with(&env, |cx| s.on_response_body(cx, &mut chunk));
        assert_eq!(step, Step::Continue);
        let out = String::from_utf8(chunk.into_bytes()).unwrap();
        assert!(
            !out.contains("forbidden!") && out.contains("content_filter"),
            "{out}"
        );
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        assert!(effects.metrics.iter().any(|m| m.metric == "blocked"));
        // The rest of the provider's stream is dropped.
        let mut chunk = ResponseChunk::new(sse("more"), true);
        assert_eq!(
            with(&env, |cx| s.on_response_body(cx, &mut chunk)).0,
            Step::Continue
        );
        assert!(chunk.bytes().is_empty());
    }

    #[test]
    fn a_window_checked_by_the_service_is_let_out_with_its_answer() {
        let env = env();
        let mut s = stage(json!({"checkRequest": false, "service": webhook("open"),
            "stream": {"windowChars": 4}}));
        answer_head(&mut s, &env, "text/event-stream");
        let mut chunk = ResponseChunk::new(sse("hello"), false);
        let (step, effects) = with(&env, |cx| s.on_response_body(cx, &mut chunk));
        assert_eq!(step, Step::Hold);
        assert!(chunk.bytes().is_empty());
        assert_eq!(s.wake_at_ms(), None, "no wake-up while a check runs");
        // What comes while the check runs is held too.
        let mut more = ResponseChunk::new(b"data: [DONE]\n\n".to_vec(), true);
        assert_eq!(
            with(&env, |cx| s.on_response_body(cx, &mut more)).0,
            Step::Hold
        );
        assert!(more.bytes().is_empty());
        let tag = effects.callouts[0].0;
        let (step, effects) = with(&env, |cx| s.on_callout(cx, tag, flagged(false)));
        assert_eq!(step, Step::Continue);
        assert_eq!(
            effects.released,
            [sse("hello"), b"data: [DONE]\n\n".to_vec()].concat()
        );
    }

    #[test]
    fn a_window_held_past_max_hold_ms_is_checked_on_wake() {
        let env = env();
        let mut s = stage(
            json!({"checkRequest": false, "local": {"denyWords": ["forbidden"]},
            "stream": {"windowChars": 1000, "maxHoldMs": 200}}),
        );
        answer_head(&mut s, &env, "text/event-stream");
        let mut chunk = ResponseChunk::new(sse("slow"), false);
        assert_eq!(
            with(&env, |cx| s.on_response_body(cx, &mut chunk)).0,
            Step::Hold
        );
        assert_eq!(s.wake_at_ms(), Some(200));
        env.advance(200);
        let (step, effects) = with(&env, |cx| s.on_wake(cx));
        assert_eq!(step, Step::Continue);
        assert_eq!(effects.released, sse("slow"));
        assert_eq!(s.wake_at_ms(), None);
    }

    #[test]
    fn answers_pass_untouched_when_not_checked() {
        let env = env();
        let mut s = stage(json!({"checkResponse": false, "local": {"denyWords": ["x"]}}));
        let effects = answer_head(&mut s, &env, "application/json");
        assert!(effects.is_empty());
        assert!(!s.wants_response_body());
        let mut plugin = ContentSafety::default();
        plugin
            .configure(&json!({"checkRequest": false, "checkResponse": false, "local": {"denyWords": ["x"]}}))
            .unwrap();
        assert!(plugin.stage(&env).is_none());
    }
}
