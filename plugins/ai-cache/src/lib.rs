//! ai-cache: answers repeated (exact layer) and paraphrased (semantic layer) chat questions
//! from a cache instead of the model, streams included, and stores the answers of misses as
//! they pass.
//!
//! Request: the headers wait for the body (`allow_on_headers_stop_iteration`), the body gives
//! the key ([`key::plan`]), then the lookup runs: the exact layer (shared data, or Redis
//! through Webdis), then on a miss the semantic layer (an embedding callout, then the nearest
//! stored vector in shared data or Chroma, then that question's answer from the exact layer).
//! A hit is answered at once with [`replay`]; a miss, or any failing dependency, lets the
//! request go on unchanged.
//!
//! Response of a miss: [`capture`] reads the answer as it passes (nothing is held back) and at
//! the end it is stored: shared-data writes at once, callouts (Redis, Chroma) from the root
//! context on its next tick, because a stream's own callouts are cancelled when it ends.
//!
//! This file only moves bytes between Envoy and those pure modules.

pub mod canonical;
pub mod capture;
pub mod chroma;
pub mod config;
pub mod embedding;
pub mod entry;
pub mod key;
pub mod local;
pub mod replay;
pub mod shared_data;
pub mod vectors;

use aigw_shared::callout::Callout;
use aigw_shared::consumer;
use aigw_shared::host::{self, Metrics};
use aigw_shared::metrics::series_prefix;
use aigw_shared::rules::RuleSet;
use aigw_shared::webdis;
use capture::Capture;
use config::{CacheType, Config, VectorType};
use entry::Entry;
use key::Plan;
use local::{expiry, LocalStore};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};
use replay::Replay;
use shared_data::{SharedData, Versioned};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use vectors::{context_id, VectorEntry, VectorIndex, VectorStore};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CacheRoot::default()) });
}}

/// Response header (and log attribute) saying how the cache served the request.
const STATUS_HEADER: &str = "x-ai-cache";
const HIGRESS_SKIP_HEADER: &str = "x-higress-skip-ai-cache";
/// Filter state read by access logs as `%FILTER_STATE(wasm.ai_cache:PLAIN)%`.
const LOG_KEY: &str = "ai_cache";
/// Stores queued for the root context are sent this often.
const TICK: Duration = Duration::from_millis(50);
/// Stores waiting for the next tick; past this they are dropped (and counted).
const MAX_QUEUED_STORES: usize = 1024;

/// Metric names (counters), in the ai-statistics series `route.….consumer.<c>.metric.<name>`.
mod metric {
    pub const HIT: &str = "ai_cache_hit";
    pub const SEMANTIC_HIT: &str = "ai_cache_semantic_hit";
    pub const MISS: &str = "ai_cache_miss";
    pub const SKIP: &str = "ai_cache_skip";
    pub const STORED: &str = "ai_cache_stored";
    pub const NOT_STORED: &str = "ai_cache_not_stored";
    pub const CACHE_ERROR: &str = "ai_cache_cache_error";
    pub const EMBEDDING_ERROR: &str = "ai_cache_embedding_error";
    pub const VECTOR_ERROR: &str = "ai_cache_vector_error";
}

/// Envoy shared data through the host (the SDK handles every status these calls return).
struct HostData;

impl SharedData for HostData {
    fn get(&self, key: &str) -> Versioned {
        host::shared_get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), bool> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|s| s == Status::CasMismatch)
    }
}

/// A store the root context sends on its next tick.
struct Job {
    call: Callout,
    /// The metric counted when it fails (and `STORED` when an exact store succeeds).
    failure_metric: &'static str,
    series: String,
}

/// What the root context and the streams of one worker share.
struct Worker {
    metrics: RefCell<Metrics>,
    jobs: RefCell<Vec<Job>>,
    /// Decoded vector pages, per store prefix.
    vector_indexes: RefCell<HashMap<String, VectorIndex>>,
}

impl Worker {
    fn count(&self, series: &str, metric: &'static str) {
        if let Some(s) = self.metrics.borrow_mut().series(series) {
            s.counter(metric, 1);
        }
    }

    fn queue(&self, job: Job) {
        let mut jobs = self.jobs.borrow_mut();
        if jobs.len() < MAX_QUEUED_STORES {
            jobs.push(job);
        } else {
            drop(jobs);
            log::warn!("ai-cache: store queue full; answer not stored");
            self.count(&job.series, job.failure_metric);
        }
    }
}

#[derive(Default)]
struct CacheRoot {
    rules: Option<Rc<RuleSet<Config>>>,
    worker: Option<Rc<Worker>>,
    /// Stores in flight: token → (failure metric, series).
    in_flight: HashMap<u32, (&'static str, String)>,
    /// Ticks since the metrics were last written to Envoy.
    ticks: u32,
}

impl Context for CacheRoot {
    /// The plugin is being replaced (a swap) or Envoy stops: write the counters summed since
    /// the last tick, or they would be lost with the VM.
    fn on_done(&mut self) -> bool {
        if let Some(worker) = &self.worker {
            worker.metrics.borrow_mut().flush();
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let (Some((failure_metric, series)), Some(worker)) =
            (self.in_flight.remove(&token), self.worker.as_ref())
        else {
            return;
        };
        match host::callout_response(body_size).success() {
            Ok(_) if failure_metric == metric::CACHE_ERROR => worker.count(&series, metric::STORED),
            Ok(_) => {}
            Err(why) => {
                log::warn!("ai-cache: storing failed: {why}");
                worker.count(&series, failure_metric);
            }
        }
    }
}

impl RootContext for CacheRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(rules) = host::load_rules("ai-cache", Config::from_map) else {
            return false;
        };
        let max_series = rules
            .global()
            .map_or(config::DEFAULT_MAX_METRIC_SERIES, |c| c.max_metric_series);
        self.rules = Some(Rc::new(rules));
        self.worker = Some(Rc::new(Worker {
            metrics: RefCell::new(Metrics::new("ai_cache", max_series)),
            jobs: RefCell::new(Vec::new()),
            vector_indexes: RefCell::new(HashMap::new()),
        }));
        let _ = hostcalls::set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let jobs = std::mem::take(&mut *worker.jobs.borrow_mut());
        for job in jobs {
            match host::dispatch(&job.call) {
                Ok(token) => {
                    self.in_flight
                        .insert(token, (job.failure_metric, job.series));
                }
                Err(why) => {
                    log::warn!("ai-cache: storing failed: {why}");
                    worker.count(&job.series, job.failure_metric);
                }
            }
        }
        self.ticks += 1;
        if self.ticks >= (host::METRICS_FLUSH_PERIOD.as_millis() / TICK.as_millis()) as u32 {
            self.ticks = 0;
            worker.metrics.borrow_mut().flush();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CacheStream {
            rules: self.rules.clone()?,
            worker: self.worker.clone()?,
            config: None,
            state: State::Off,
            labels: Labels::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Metric labels of one request.
#[derive(Default)]
struct Labels {
    route: String,
    cluster: String,
    consumer: String,
    series: String,
}

impl Labels {
    fn set_model(&mut self, model: &str) {
        self.series = series_prefix(&[
            ("route", &self.route),
            ("upstream", &self.cluster),
            ("model", model),
            ("consumer", &self.consumer),
        ]);
    }
}

/// Where a lookup waits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// The exact layer, for the request's own key.
    Exact,
    Embed,
    /// The nearest vector in Chroma.
    Nearest,
    /// The exact layer, for a similar question's key.
    Similar(f32),
}

// One per stream, never in a collection: boxing the plan would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum State {
    /// The plugin does nothing for this request.
    Off,
    /// The request bypasses the cache (asked by the client, or not cacheable).
    Skip,
    /// Headers held until the body is read.
    Reading,
    Lookup {
        plan: Plan,
        step: Step,
        token: u32,
        vector: Option<Vec<f32>>,
    },
    /// Answered from the cache.
    Replied,
    /// A miss on its way to the provider; its answer is read as it comes back.
    Forwarded {
        plan: Plan,
        vector: Option<Vec<f32>>,
        capture: Option<Capture>,
    },
}

/// Where a lookup ended up.
enum Flow {
    Waiting,
    Hit,
    Miss,
}

struct CacheStream {
    rules: Rc<RuleSet<Config>>,
    worker: Rc<Worker>,
    config: Option<Rc<Config>>,
    state: State,
    labels: Labels,
}

impl Context for CacheStream {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let State::Lookup {
            token: expected, ..
        } = &self.state
        else {
            return;
        };
        if *expected != token {
            return;
        }
        let outcome = host::callout_response(body_size);
        let State::Lookup {
            plan, step, vector, ..
        } = std::mem::replace(&mut self.state, State::Off)
        else {
            return;
        };
        let flow = self.on_lookup_answer(plan, step, vector, outcome.success());
        match flow {
            Flow::Waiting | Flow::Hit => {}
            Flow::Miss => {
                host::resume_request();
            }
        }
    }
}

impl HttpContext for CacheStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = host::request_rule(&self.rules) else {
            return Action::Continue;
        };
        let method = host::request_header(":method").unwrap_or_default();
        let path = host::request_header(":path").unwrap_or_default();
        if method != "POST"
            || !path
                .split('?')
                .next()
                .unwrap_or("")
                .ends_with("/chat/completions")
        {
            return Action::Continue;
        }
        self.labels = Labels {
            route: host::route_name(),
            cluster: host::cluster_name(),
            consumer: consumer::named(host::request_header(&config.consumer_header).as_deref())
                .unwrap_or_default()
                .to_string(),
            series: String::new(),
        };
        self.labels.set_model("");
        let skip_asked = host::request_header(STATUS_HEADER)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("skip"))
            || host::request_header(HIGRESS_SKIP_HEADER)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("on"));
        self.config = Some(config);
        if skip_asked || end_of_stream {
            self.skip(if skip_asked {
                "the client asked to skip the cache"
            } else {
                "request has no body"
            });
            return Action::Continue;
        }
        self.state = State::Reading;
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !matches!(self.state, State::Reading) {
            return Action::Continue;
        }
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        if body_size > config.max_request_bytes {
            self.skip("request body is larger than maxRequestBytes");
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = host::request_body(body_size).unwrap_or_default();
        let consumer = Some(self.labels.consumer.as_str()).filter(|c| !c.is_empty());
        let plan = match key::plan(&body, &config, consumer) {
            Ok(plan) => plan,
            Err(why) => {
                self.skip(why);
                return Action::Continue;
            }
        };
        self.labels.set_model(&plan.model);
        let key = plan.key.clone();
        match self.read_exact(plan, &key, Step::Exact, None) {
            Flow::Miss => Action::Continue,
            Flow::Waiting | Flow::Hit => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match &mut self.state {
            State::Skip => host::set_response_header(STATUS_HEADER, Some("skip")),
            State::Forwarded { capture, .. } => {
                host::set_response_header(STATUS_HEADER, Some("miss"));
                let headers = host::ResponseHeaders::read();
                let max = self.config.as_ref().map_or(0, |c| c.max_answer_bytes);
                let content_type = headers.get("content-type").unwrap_or("");
                match Capture::new(headers.status(), content_type, max) {
                    Ok(c) => *capture = Some(c),
                    Err(why) => self.not_stored(why),
                }
                if end_of_stream {
                    self.store_answer();
                }
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let State::Forwarded {
            capture: Some(capture),
            ..
        } = &mut self.state
        {
            if capture.wants_body() && body_size > 0 {
                capture.push(&host::response_body(body_size).unwrap_or_default());
            }
            if end_of_stream || capture.complete() {
                self.store_answer();
            }
        }
        Action::Continue
    }
}

impl CacheStream {
    fn count(&self, metric: &'static str) {
        self.worker.count(&self.labels.series, metric);
    }

    fn skip(&mut self, why: &str) {
        log::debug!("ai-cache: not cached: {why}");
        self.state = State::Skip;
        self.count(metric::SKIP);
        let _ = host::set_filter_state(LOG_KEY, b"skip");
    }

    fn not_stored(&self, why: &str) {
        log::debug!("ai-cache: answer not stored: {why}");
        self.count(metric::NOT_STORED);
    }

    fn now_s() -> u64 {
        host::now_ms() / 1000
    }

    fn local_store<'a>(config: &'a Config, data: &'a HostData) -> LocalStore<'a, HostData> {
        LocalStore {
            data,
            prefix: &config.cache.key_prefix,
            max_entries: config.cache.max_entries,
            max_entry_bytes: config.local_entry_bytes(),
        }
    }

    fn vector_store<'a>(
        config: &'a Config,
        data: &'a HostData,
        max_entries: usize,
    ) -> VectorStore<'a, HostData> {
        VectorStore {
            data,
            prefix: &config.cache.key_prefix,
            max_entries,
        }
    }

    /// Sends a lookup callout and waits for it; a callout Envoy refuses at once fails the step.
    fn wait(&mut self, call: Callout, plan: Plan, step: Step, vector: Option<Vec<f32>>) -> Flow {
        match host::dispatch(&call) {
            Ok(token) => {
                self.state = State::Lookup {
                    plan,
                    step,
                    token,
                    vector,
                };
                Flow::Waiting
            }
            Err(why) => self.on_lookup_answer(plan, step, vector, Err(why)),
        }
    }

    /// Reads `key` from the exact layer: the request's own key ([`Step::Exact`]) or a similar
    /// question's ([`Step::Similar`]).
    fn read_exact(&mut self, plan: Plan, key: &str, step: Step, vector: Option<Vec<f32>>) -> Flow {
        let Some(config) = self.config.clone() else {
            return self.miss(plan, vector);
        };
        match (config.cache.kind, &config.cache.service) {
            (CacheType::Redis, Some(redis)) => {
                let call = webdis::command(&redis.cluster, &["GET", key], redis.timeout);
                self.wait(call, plan, step, vector)
            }
            _ => {
                let found = Self::local_store(&config, &HostData).get(key, Self::now_s());
                self.after_exact(plan, step, vector, Ok(found))
            }
        }
    }

    fn after_exact(
        &mut self,
        plan: Plan,
        step: Step,
        vector: Option<Vec<f32>>,
        found: Result<Option<Vec<u8>>, String>,
    ) -> Flow {
        match found.map(|bytes| bytes.as_deref().and_then(Entry::decode)) {
            Ok(Some(entry)) => {
                let similarity = match step {
                    Step::Similar(score) => Some(score),
                    _ => None,
                };
                return self.reply(&plan, &entry, similarity);
            }
            Ok(None) => {}
            Err(why) => {
                log::warn!("ai-cache: cache lookup failed, serving as a miss: {why}");
                self.count(metric::CACHE_ERROR);
            }
        }
        match step {
            Step::Exact => self.embed(plan),
            _ => self.miss(plan, vector),
        }
    }

    fn embed(&mut self, plan: Plan) -> Flow {
        let Some(semantic) = self.config.as_ref().and_then(|c| c.semantic.as_ref()) else {
            return self.miss(plan, None);
        };
        let call = embedding::request(&semantic.embedding, &plan.text);
        self.wait(call, plan, Step::Embed, None)
    }

    fn on_lookup_answer(
        &mut self,
        plan: Plan,
        step: Step,
        vector: Option<Vec<f32>>,
        answer: Result<&[u8], String>,
    ) -> Flow {
        let Some(config) = self.config.clone() else {
            return self.miss(plan, vector);
        };
        match (step, config.semantic.as_ref()) {
            (Step::Exact | Step::Similar(_), _) | (_, None) => {
                let found = answer.and_then(redis_value);
                self.after_exact(plan, step, vector, found)
            }
            (Step::Embed, Some(semantic)) => {
                match answer.and_then(|b| embedding::parse(semantic.embedding.kind, b)) {
                    Ok(vector) => self.nearest(plan, vector),
                    Err(why) => {
                        log::warn!("ai-cache: embedding failed, serving as a miss: {why}");
                        self.count(metric::EMBEDDING_ERROR);
                        self.miss(plan, None)
                    }
                }
            }
            (Step::Nearest, Some(_)) => match answer.and_then(chroma::nearest) {
                Ok(found) => self.after_nearest(plan, vector, found),
                Err(why) => {
                    log::warn!("ai-cache: vector search failed, serving as a miss: {why}");
                    self.count(metric::VECTOR_ERROR);
                    self.miss(plan, vector)
                }
            },
        }
    }

    fn nearest(&mut self, plan: Plan, vector: Vec<f32>) -> Flow {
        let Some(config) = self.config.clone() else {
            return self.miss(plan, Some(vector));
        };
        let Some(semantic) = config.semantic.as_ref() else {
            return self.miss(plan, Some(vector));
        };
        match semantic.vector.kind {
            VectorType::Local => {
                let store = Self::vector_store(&config, &HostData, semantic.vector.max_entries);
                let mut indexes = self.worker.vector_indexes.borrow_mut();
                let index = indexes.entry(config.cache.key_prefix.clone()).or_default();
                let found = store.nearest(index, context_id(&plan.context), &vector, Self::now_s());
                drop(indexes);
                self.after_nearest(plan, Some(vector), found)
            }
            VectorType::Chroma => match chroma::query(&semantic.vector, &plan.context, &vector) {
                Some(call) => self.wait(call, plan, Step::Nearest, Some(vector)),
                None => self.miss(plan, Some(vector)),
            },
        }
    }

    fn after_nearest(
        &mut self,
        plan: Plan,
        vector: Option<Vec<f32>>,
        found: Option<(String, f32)>,
    ) -> Flow {
        let min = self
            .config
            .as_ref()
            .and_then(|c| c.semantic.as_ref())
            .map_or(f32::INFINITY, |s| s.vector.min_similarity);
        match found {
            Some((key, score)) if score >= min => {
                log::debug!("ai-cache: similar question found (similarity {score:.4})");
                self.read_exact(plan, &key, Step::Similar(score), vector)
            }
            _ => self.miss(plan, vector),
        }
    }

    fn miss(&mut self, plan: Plan, vector: Option<Vec<f32>>) -> Flow {
        self.count(metric::MISS);
        let _ = host::set_filter_state(LOG_KEY, b"miss");
        self.state = State::Forwarded {
            plan,
            vector,
            capture: None,
        };
        Flow::Miss
    }

    /// Answers from the cache, as a stream when the request asked for one.
    fn reply(&mut self, plan: &Plan, entry: &Entry, similarity: Option<f32>) -> Flow {
        let now_ms = host::now_ms();
        let replay = Replay {
            entry,
            id: format!(
                "chatcmpl-cache-{}{now_ms:x}",
                &plan.key[plan.key.len().saturating_sub(8)..]
            ),
            created: now_ms / 1000,
        };
        let chunk_chars = self.config.as_ref().map_or(24, |c| c.replay_chunk_chars);
        let (content_type, body) = if plan.stream {
            (
                "text/event-stream",
                replay.stream(plan.include_usage, chunk_chars),
            )
        } else {
            ("application/json", replay.completion())
        };
        let score = similarity.map(|s| format!("{s:.4}"));
        let mut headers = vec![
            ("content-type", content_type),
            (STATUS_HEADER, "hit"),
            (
                "x-ai-cache-match",
                if similarity.is_some() {
                    "semantic"
                } else {
                    "exact"
                },
            ),
        ];
        if let Some(score) = &score {
            headers.push(("x-ai-cache-similarity", score));
        }
        if plan.stream {
            headers.push(("cache-control", "no-cache"));
        }
        host::send_response(200, &headers, &body);
        self.count(metric::HIT);
        if similarity.is_some() {
            self.count(metric::SEMANTIC_HIT);
        }
        let _ = host::set_filter_state(LOG_KEY, b"hit");
        self.state = State::Replied;
        Flow::Hit
    }

    /// Stores a miss's answer once its response has ended (if it can be cached).
    fn store_answer(&mut self) {
        let State::Forwarded {
            plan,
            vector,
            capture,
        } = std::mem::replace(&mut self.state, State::Off)
        else {
            return;
        };
        let (Some(config), Some(capture)) = (self.config.clone(), capture) else {
            return;
        };
        let entry = match capture.finish() {
            Ok(entry) => entry,
            Err(why) => return self.not_stored(why),
        };
        let now_s = Self::now_s();
        let ttl = config.cache.ttl_seconds;
        let expires = expiry(now_s, ttl);
        let value = entry.encode();
        match (config.cache.kind, &config.cache.service) {
            (CacheType::Redis, Some(redis)) => {
                let value = String::from_utf8_lossy(&value);
                let ttl = ttl.to_string();
                let mut args = vec!["SET", plan.key.as_str(), &value];
                if config.cache.ttl_seconds > 0 {
                    args.extend(["EX", ttl.as_str()]);
                }
                self.worker.queue(Job {
                    call: webdis::command(&redis.cluster, &args, redis.timeout),
                    failure_metric: metric::CACHE_ERROR,
                    series: self.labels.series.clone(),
                });
            }
            _ => match Self::local_store(&config, &HostData).put(&plan.key, &value, expires, now_s)
            {
                Ok(()) => self.count(metric::STORED),
                Err(why) => return self.not_stored(why),
            },
        }
        let (Some(semantic), Some(vector)) = (config.semantic.as_ref(), vector) else {
            return;
        };
        match semantic.vector.kind {
            VectorType::Local => {
                let store = Self::vector_store(&config, &HostData, semantic.vector.max_entries);
                let added = store.insert(VectorEntry {
                    context: context_id(&plan.context),
                    expires,
                    key: plan.key.clone(),
                    vector,
                });
                if let Err(why) = added {
                    log::warn!("ai-cache: vector not stored: {why}");
                    self.count(metric::VECTOR_ERROR);
                }
            }
            VectorType::Chroma => {
                if let Some(call) =
                    chroma::upsert(&semantic.vector, &plan.context, &plan.key, &vector)
                {
                    self.worker.queue(Job {
                        call,
                        failure_metric: metric::VECTOR_ERROR,
                        series: self.labels.series.clone(),
                    });
                }
            }
        }
    }
}

/// The value of a Webdis `GET` answer (`None` when the key is absent).
fn redis_value(body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let value = webdis::reply("GET", body)?;
    Ok(value.as_str().map(|s| s.as_bytes().to_vec()))
}
