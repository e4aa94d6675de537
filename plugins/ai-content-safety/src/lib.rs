//! ai-content-safety: checks prompts before the provider is called and answers before the
//! client sees them (streamed answers in held windows), with local deny lists and moderation
//! services; masks sensitive data in prompts and restores it in answers.
//!
//! This file moves bytes between Envoy and the pure modules: [`hold`] (stream windows),
//! [`check`] (callout results), [`local`], [`services`], [`mask`] and [`restore`].

pub mod check;
pub mod config;
pub mod deny;
pub mod extract;
pub mod fold;
pub mod hold;
pub mod injection;
pub mod lanes;
pub mod local;
pub mod mask;
pub mod record;
pub mod restore;
pub mod services;
pub mod verdict;

use aigw_shared::body::{is_event_stream, is_json};
use aigw_shared::error::ApiError;
use aigw_shared::host::{self, Metrics};
use aigw_shared::rules::RuleSet;
use check::{read_outcome, Failure, Gathering};
use config::Config;
use deny::Identity;
use hold::{HeldBody, Step, StreamHold};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use record::Record;
use restore::{StreamRestore, Vault};
use serde_json::Value;
use services::CallContext;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;
use verdict::{Finding, Phase, Verdict};

const PLUGIN: &str = "ai-content-safety";
/// Ticks release windows held past `maxHoldMs` and flush metrics.
const TICK: Duration = Duration::from_millis(100);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(SafetyRoot::default()) });
}}

/// State of one VM shared by its streams.
struct Shared {
    metrics: RefCell<Metrics>,
    /// Streams holding a window, by context id, for the tick.
    holding: RefCell<HashMap<u32, Weak<RefCell<Exchange>>>>,
    /// Callouts the tick sent (they answer to the root context): token → stream context id.
    tick_callouts: RefCell<HashMap<u32, u32>>,
    sequence: Cell<u64>,
    last_flush_ms: Cell<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // A random start (WASI's random source) keeps signature nonces apart across workers.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Shared {
            metrics: RefCell::new(Metrics::new("ai_content_safety", 10_000)),
            holding: RefCell::default(),
            tick_callouts: RefCell::default(),
            sequence: Cell::new(seed),
            last_flush_ms: Cell::new(0),
        }
    }
}

impl Shared {
    fn count(&self, series: &str, metric: &'static str, n: u64) {
        if let Some(s) = self.metrics.borrow_mut().series(series) {
            s.counter(metric, n);
        }
    }

    fn next_sequence(&self) -> u64 {
        let n = self.sequence.get().wrapping_add(1);
        self.sequence.set(n);
        n
    }
}

#[derive(Default)]
struct SafetyRoot {
    rules: Option<Rc<RuleSet<Config>>>,
    shared: Rc<Shared>,
}

impl Context for SafetyRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(id) = self.shared.tick_callouts.borrow_mut().remove(&token) else {
            return;
        };
        let exchange = self
            .shared
            .holding
            .borrow()
            .get(&id)
            .and_then(Weak::upgrade);
        if let Some(exchange) = exchange {
            if host::set_effective_context(id) {
                on_callout(&exchange, &self.shared, token, body_size, true);
            }
        }
    }
}

impl RootContext for SafetyRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(rules) =
            host::load_rules_ignoring(PLUGIN, &config::IGNORED_HIGRESS_KEYS, Config::from_map)
        else {
            return false;
        };
        self.rules = Some(Rc::new(rules));
        let _ = hostcalls::set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let now = host::now_ms();
        let shared = &self.shared;
        if now.saturating_sub(shared.last_flush_ms.get())
            >= host::METRICS_FLUSH_PERIOD.as_millis() as u64
        {
            shared.metrics.borrow_mut().flush();
            shared.last_flush_ms.set(now);
        }
        let due: Vec<(u32, Rc<RefCell<Exchange>>)> = {
            let mut holding = shared.holding.borrow_mut();
            holding.retain(|_, weak| weak.strong_count() > 0);
            holding
                .iter()
                .filter_map(|(id, weak)| Some((*id, weak.upgrade()?)))
                .filter(|(_, e)| e.borrow().stream_due_at().is_some_and(|at| at <= now))
                .collect()
        };
        for (id, exchange) in due {
            if !host::set_effective_context(id) {
                continue;
            }
            let mut e = exchange.borrow_mut();
            let step = match &mut e.response {
                Response::Stream(hold) => hold.on_tick(now),
                _ => continue,
            };
            if e.run_stream(shared, step, true) == Flow::Released {
                host::resume_response();
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(SafetyStream {
            id: context_id,
            rules: self.rules.clone()?,
            shared: self.shared.clone(),
            exchange: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct SafetyStream {
    id: u32,
    rules: Rc<RuleSet<Config>>,
    shared: Rc<Shared>,
    /// `None` where no rule applies.
    exchange: Option<Rc<RefCell<Exchange>>>,
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
    tokens: Vec<u32>,
}

/// How the response is handled, decided at its headers.
enum Response {
    Untouched,
    /// A JSON answer held whole (`len` bytes once complete).
    Whole {
        len: usize,
    },
    Stream(Box<StreamHold>),
}

/// One request on its way through the plugin.
struct Exchange {
    id: u32,
    config: Rc<Config>,
    route: String,
    read_request: bool,
    vault: Option<Rc<Vault>>,
    record: Record,
    pending: Option<Pending>,
    response: Response,
    /// The plugin answered the request itself.
    answered: bool,
    /// A streamed answer was accounted for.
    stream_finished: bool,
}

/// Where a held response stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Held,
    Released,
}

/// Envoy's response body as [`HeldBody`]: in a body callback, or paused (from a callout
/// answer or the tick).
struct EnvoyBody {
    len: usize,
}

impl HeldBody for EnvoyBody {
    fn size(&self) -> usize {
        self.len
    }

    fn read(&self, start: usize, len: usize) -> Vec<u8> {
        host::response_body_range(start, len).unwrap_or_default()
    }

    fn replace_prefix(&mut self, size: usize, data: &[u8]) {
        match host::set_response_body(0, size, data) {
            Ok(()) => self.len = self.len - size.min(self.len) + data.len(),
            Err(status) => log::warn!("{PLUGIN}: could not rewrite the response body: {status:?}"),
        }
    }
}

impl Context for SafetyStream {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(exchange) = self.exchange.clone() {
            on_callout(&exchange, &self.shared, token, body_size, false);
        }
    }
}

impl HttpContext for SafetyStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = host::request_rule(&self.rules) else {
            return Action::Continue;
        };
        if !config.reads_request() && !config.checks_response() {
            return Action::Continue;
        }
        let content_type = host::request_header("content-type").unwrap_or_default();
        let read_request = config.reads_request()
            && !end_of_stream
            && (content_type.is_empty() || is_json(&content_type));
        if read_request && config.masking.is_some() {
            // Masking changes the body's size.
            host::set_request_header("content-length", None);
        }
        self.exchange = Some(Rc::new(RefCell::new(Exchange {
            id: self.id,
            config,
            route: host::route_name(),
            read_request,
            vault: None,
            record: Record::default(),
            pending: None,
            response: Response::Untouched,
            answered: false,
            stream_finished: false,
        })));
        // Hold the headers until the body is checked, so a blocked prompt never opens a
        // connection to the provider.
        if read_request {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(exchange) = self.exchange.clone() else {
            return Action::Continue;
        };
        let mut e = exchange.borrow_mut();
        if !e.read_request {
            return Action::Continue;
        }
        if body_size > e.config.max_body_bytes {
            let err = ApiError::too_large(e.config.max_body_bytes);
            drop(e);
            return self.refuse(&err);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        e.read_request = false;
        let body = host::request_body(body_size).unwrap_or_default();
        match e.check_request(&self.shared, &body, body_size) {
            Ok(None) => Action::Pause,
            Ok(Some(Verdict::Pass)) => Action::Continue,
            Ok(Some(Verdict::Block(finding))) => {
                let stream = is_stream_request(&body);
                e.deny_request(&self.shared, &finding, stream);
                Action::Pause
            }
            Err(err) => {
                drop(e);
                self.refuse(&err)
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(exchange) = self.exchange.clone() else {
            return Action::Continue;
        };
        let mut e = exchange.borrow_mut();
        let headers = host::response_headers();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let status: u16 = header(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let content_type = header("content-type").unwrap_or("");
        let restore = e.config.masking.as_ref().is_some_and(|m| m.restore) && e.vault.is_some();
        if e.answered || !(200..300).contains(&status) || !(e.config.checks_response() || restore) {
            return Action::Continue;
        }
        if is_event_stream(content_type) {
            let restorer = e.vault.clone().filter(|_| restore).map(StreamRestore::new);
            e.response = Response::Stream(Box::new(
                StreamHold::new(
                    e.config.windows,
                    e.config.checks_response(),
                    e.config.deny_message.clone(),
                    Identity::local(host::now_ms() / 1000),
                    restorer,
                    e.config.unparsable,
                )
                .bounded(e.config.max_event_bytes),
            ));
        } else if is_json(content_type) {
            e.response = Response::Whole { len: 0 };
        } else {
            return Action::Continue;
        }
        host::set_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(exchange) = self.exchange.clone() else {
            return Action::Continue;
        };
        let mut e = exchange.borrow_mut();
        match &mut e.response {
            Response::Untouched => Action::Continue,
            Response::Whole { len } => {
                *len = body_size;
                if body_size > e.config.max_body_bytes {
                    log::warn!("{PLUGIN}: answer larger than maxBodyBytes ({body_size} bytes) passed unchecked");
                    e.response = Response::Untouched;
                    return Action::Continue;
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                match e.check_whole(&self.shared, body_size) {
                    Flow::Held => Action::Pause,
                    Flow::Released => Action::Continue,
                }
            }
            Response::Stream(hold) => {
                let mut body = EnvoyBody { len: body_size };
                let step = hold.on_body(&mut body, end_of_stream, host::now_ms());
                if hold.take_overflow() {
                    log::warn!("{PLUGIN}: a stream event passed maxEventBytes ({} bytes); the stream was ended with an error", e.config.max_event_bytes);
                    self.shared.count(
                        &record::route_series(&e.route),
                        "stream_events_too_large",
                        1,
                    );
                }
                match e.run_stream(&self.shared, step, false) {
                    Flow::Held => {
                        self.shared
                            .holding
                            .borrow_mut()
                            .insert(self.id, Rc::downgrade(&exchange));
                        Action::Pause
                    }
                    Flow::Released => Action::Continue,
                }
            }
        }
    }
}

impl SafetyStream {
    /// Answers a request the plugin cannot use with an OpenAI error.
    fn refuse(&mut self, err: &ApiError) -> Action {
        log::info!("{PLUGIN}: refused request: {err}");
        self.exchange = None;
        host::send_response(
            err.status,
            &[("content-type", "application/json")],
            &serde_json::to_vec(&err.to_openai_json()).unwrap_or_default(),
        );
        Action::Pause
    }
}

fn is_stream_request(body: &[u8]) -> bool {
    aigw_shared::meter::RequestInfo::from_body(body).stream
}

/// A callout answered (to the stream's context, or to the root for callouts the tick sent).
fn on_callout(
    exchange: &Rc<RefCell<Exchange>>,
    shared: &Shared,
    token: u32,
    body_size: usize,
    from_root: bool,
) {
    let outcome = host::callout_response(body_size);
    let mut e = exchange.borrow_mut();
    let config = e.config.clone();
    if !e
        .pending
        .as_ref()
        .is_some_and(|p| p.tokens.contains(&token))
    {
        return;
    }
    let Some(configured) = config.service.as_ref() else {
        return;
    };
    let result = read_outcome(outcome, |status, body| {
        configured.service.verdict(status, body)
    });
    if let Err(failure) = &result {
        e.note_failure(shared, failure);
    }
    let Some(pending) = e.pending.as_mut() else {
        return;
    };
    let Some(verdict) = pending.gathering.record(result) else {
        return;
    };
    let target = pending.target;
    e.pending = None;
    match (target, verdict) {
        (Target::Request { .. }, Verdict::Pass) => {
            host::resume_request();
        }
        (Target::Request { stream }, Verdict::Block(finding)) => {
            e.deny_request(shared, &finding, stream)
        }
        (Target::Whole, verdict) => {
            e.finish_whole(shared, &verdict);
            host::resume_response();
        }
        (Target::Stream, verdict) => {
            let Response::Stream(hold) = &mut e.response else {
                return;
            };
            let mut body = EnvoyBody {
                len: hold.held_len(),
            };
            let step = hold.on_verdict(&mut body, &verdict, host::now_ms());
            if let Verdict::Block(finding) = &verdict {
                e.blocked(shared, Phase::Response, finding);
            }
            if e.run_stream(shared, step, from_root) == Flow::Released {
                host::resume_response();
            }
        }
    }
}

impl Exchange {
    /// Masks and checks the request body; `Ok(None)` while callouts run.
    fn check_request(
        &mut self,
        shared: &Shared,
        body: &[u8],
        body_size: usize,
    ) -> Result<Option<Verdict>, ApiError> {
        if body.is_empty() {
            return Ok(Some(Verdict::Pass));
        }
        let mut value: Value = aigw_shared::json::parse(body).map_err(|e| {
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
                let new_body = serde_json::to_vec(&value).unwrap_or_default();
                if let Err(status) = host::set_request_body(0, body_size, &new_body) {
                    log::warn!("{PLUGIN}: could not replace the request body: {status:?}");
                }
                self.record.masked = counter.masked;
                shared.count(&record::route_series(&self.route), "masked", counter.masked);
                if checking {
                    masked_text = Some(extract::prompt_text(&value, &config.prompt)?);
                }
                if !vault.is_empty() {
                    self.vault = Some(Rc::new(vault));
                }
                self.write_log();
            }
        }
        if !checking || original.trim().is_empty() {
            return Ok(Some(Verdict::Pass));
        }
        let service_text = masked_text.unwrap_or_else(|| original.clone());
        Ok(self.start_check(
            shared,
            &[original],
            &service_text,
            Phase::Request,
            Target::Request { stream },
            false,
        ))
    }

    /// Checks each of `local_texts` locally, then `service_text` with the service. `None`
    /// while callouts run (their answers come to [`on_callout`]).
    fn start_check(
        &mut self,
        shared: &Shared,
        local_texts: &[String],
        service_text: &str,
        phase: Phase,
        target: Target,
        from_root: bool,
    ) -> Option<Verdict> {
        shared.count(&record::phase_series(&self.route, phase), "checks", 1);
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
            now_ms: host::now_ms(),
            sequence: shared.next_sequence(),
        };
        let callouts = configured
            .service
            .requests(endpoint, &segments, phase, context);
        let mut gathering = Gathering::new(
            configured.service.name(),
            endpoint.failure_policy,
            callouts.len(),
        );
        let mut tokens = Vec::with_capacity(callouts.len());
        let mut decided = None;
        for callout in &callouts {
            match host::dispatch(callout) {
                Ok(token) => tokens.push(token),
                Err(detail) => {
                    let failure = Failure {
                        reason: "unreachable",
                        detail,
                    };
                    self.note_failure(shared, &failure);
                    decided = gathering.record(Err(failure)).or(decided);
                }
            }
        }
        if let Some(verdict) = decided.filter(|v| v.is_block() || tokens.is_empty()) {
            return Some(verdict);
        }
        if tokens.is_empty() {
            return Some(Verdict::Pass);
        }
        if from_root {
            let mut map = shared.tick_callouts.borrow_mut();
            for token in &tokens {
                map.insert(*token, self.id);
            }
        }
        self.pending = Some(Pending {
            target,
            gathering,
            tokens,
        });
        None
    }

    /// Runs stream steps until the stream holds or releases.
    fn run_stream(&mut self, shared: &Shared, mut step: Step, from_root: bool) -> Flow {
        loop {
            match step {
                Step::Hold => return Flow::Held,
                Step::Release => {
                    self.finish_stream(shared);
                    return Flow::Released;
                }
                Step::Block(finding) => step = self.stream_verdict(shared, Verdict::Block(finding)),
                Step::Check(texts) => {
                    let Some(verdict) = self.start_check(
                        shared,
                        &texts,
                        &texts.join("\n\n"),
                        Phase::Response,
                        Target::Stream,
                        from_root,
                    ) else {
                        return Flow::Held;
                    };
                    step = self.stream_verdict(shared, verdict);
                }
            }
        }
    }

    /// Hands a verdict on the held window to the stream.
    fn stream_verdict(&mut self, shared: &Shared, verdict: Verdict) -> Step {
        let Response::Stream(hold) = &mut self.response else {
            return Step::Release;
        };
        let mut body = EnvoyBody {
            len: hold.held_len(),
        };
        let step = hold.on_verdict(&mut body, &verdict, host::now_ms());
        if let Verdict::Block(finding) = &verdict {
            self.blocked(shared, Phase::Response, finding);
        }
        step
    }

    fn stream_due_at(&self) -> Option<u64> {
        match &self.response {
            Response::Stream(hold) if self.pending.is_none() => hold.due_at_ms(),
            _ => None,
        }
    }

    /// Once a streamed answer is all out: restores counted, record written.
    fn finish_stream(&mut self, shared: &Shared) {
        let Response::Stream(hold) = &self.response else {
            return;
        };
        if !hold.is_done() || self.stream_finished {
            return;
        }
        self.stream_finished = true;
        if let Some(series) = shared
            .metrics
            .borrow_mut()
            .series(&record::route_series(&self.route))
        {
            series.histogram("stream_held_bytes_peak", hold.peak_held_bytes() as u64);
        }
        let restored = hold.restored();
        if restored > 0 {
            self.record.restored = restored;
            shared.count(&record::route_series(&self.route), "restored", restored);
            self.write_log();
        }
    }

    /// Checks a whole JSON answer (`len` bytes held).
    fn check_whole(&mut self, shared: &Shared, len: usize) -> Flow {
        let body = host::response_body(len).unwrap_or_default();
        let texts = if self.config.checks_response() {
            extract::answer_texts(
                &body,
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
                self.start_check(
                    shared,
                    &texts,
                    &service_text,
                    Phase::Response,
                    Target::Whole,
                    false,
                )
            }
        };
        match verdict {
            Some(verdict) => {
                self.finish_whole(shared, &verdict);
                Flow::Released
            }
            None => Flow::Held,
        }
    }

    /// Replaces a blocked answer, or restores placeholders in a passed one.
    fn finish_whole(&mut self, shared: &Shared, verdict: &Verdict) {
        let Response::Whole { len } = self.response else {
            return;
        };
        let body = host::response_body(len).unwrap_or_default();
        let replacement = match verdict {
            Verdict::Block(finding) => {
                self.blocked(shared, Phase::Response, finding);
                let value: Value = serde_json::from_slice(&body).unwrap_or_default();
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
                    .and_then(|vault| restore::restore_completion(&body, vault));
                if restored.is_some() {
                    self.record.restored += 1;
                    shared.count(&record::route_series(&self.route), "restored", 1);
                    self.write_log();
                }
                restored
            }
        };
        if let Some(new_body) = replacement {
            if let Err(status) = host::set_response_body(0, len, &new_body) {
                log::warn!("{PLUGIN}: could not replace the response body: {status:?}");
            }
        }
    }

    /// Answers a blocked prompt.
    fn deny_request(&mut self, shared: &Shared, finding: &Finding, stream: bool) {
        self.blocked(shared, Phase::Request, finding);
        // The local reply passes back through this filter: it is not checked again.
        self.answered = true;
        let config = &self.config;
        let answer = deny::request_answer(
            config.deny_code,
            &config.deny_message,
            stream,
            &Identity::local(host::now_ms() / 1000),
        );
        host::send_response(
            answer.status,
            &[
                ("content-type", answer.content_type),
                (deny::HEADER, "blocked"),
            ],
            &answer.body,
        );
    }

    /// Counts and logs a block.
    fn blocked(&mut self, shared: &Shared, phase: Phase, finding: &Finding) {
        log::info!(
            "{PLUGIN}: {} blocked by {} ({})",
            phase.name(),
            finding.backend,
            finding.label
        );
        shared.count(
            &record::blocked_series(&self.route, phase, finding),
            "blocked",
            1,
        );
        self.record.block(phase, finding);
        self.write_log();
    }

    /// Counts and logs a callout that gave no verdict (its message never carries our keys:
    /// services echo at most a redacted key).
    fn note_failure(&mut self, shared: &Shared, failure: &Failure) {
        let backend = self
            .config
            .service
            .as_ref()
            .map_or("service", |s| s.service.name());
        log::warn!(
            "{PLUGIN}: {backend} callout failed ({}): {}; failure policy {:?}",
            failure.reason,
            failure.detail,
            self.config
                .service
                .as_ref()
                .map(|s| s.endpoint.failure_policy)
        );
        shared.count(
            &record::failure_series(&self.route, backend, failure.reason),
            "callout_failed",
            1,
        );
        self.record.service_failures += 1;
        self.write_log();
    }

    fn write_log(&self) {
        if self.record.is_notable() {
            if let Err(status) =
                host::set_filter_state(&self.config.log_key, self.record.json().as_bytes())
            {
                log::debug!("{PLUGIN}: could not set filter state: {status:?}");
            }
        }
    }
}
