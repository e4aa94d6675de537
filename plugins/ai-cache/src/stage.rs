//! The plugin as a stage of the runner.
//!
//! Request: the headers wait for the body ([`BodyUse::Change`]), the body gives the key
//! ([`key::plan`]), then the lookup runs while the stage holds the request: the exact layer
//! (shared data, or Redis through Webdis), then on a miss the semantic layer (an embedding
//! callout, then the nearest stored vector in shared data or Chroma, then that question's
//! answer from the exact layer). A hit is answered at once with [`Replay`]; a miss, or any
//! failing dependency, lets the request go on unchanged.
//!
//! Response of a miss: [`Capture`] reads the answer as it passes (nothing is held back) and at
//! the end it is stored: shared-data writes at once, callouts (Redis, Chroma) queued for the
//! plugin's next tick ([`crate::worker`]).

use crate::capture::Capture;
use crate::config::{self, CacheType, Config, VectorType};
use crate::entry::Entry;
use crate::key::{self, Plan};
use crate::local::{expiry, LocalStore};
use crate::replay::Replay;
use crate::shared_data::StoreData;
use crate::vectors::{context_id, VectorEntry, VectorStore};
use crate::worker::{InFlight, Job, Worker};
use crate::{chroma, embedding};
use aigw_shared::callout::{Callout, Outcome};
use aigw_shared::consumer;
use aigw_shared::metrics::series_prefix;
use aigw_shared::rules::RuleSet;
use aigw_shared::stage::{
    rule_for, BodyUse, Configured, Cx, Effects, Env, Plugin, Reply, RequestBody, ResponseChunk,
    ResponseHead, Stage, Step,
};
use aigw_shared::webdis;
use serde_json::Value;
use std::rc::Rc;
use std::time::Duration;

/// Response header (and log attribute) saying how the cache served the request.
pub const STATUS_HEADER: &str = "x-ai-cache";
const HIGRESS_SKIP_HEADER: &str = "x-higress-skip-ai-cache";
/// Filter state read by access logs as `%FILTER_STATE(wasm.ai_cache:PLAIN)%`.
const LOG_KEY: &str = "ai_cache";
/// Stores queued for the root are sent this often.
const TICK: Duration = Duration::from_millis(50);

/// Metric names (counters), in the ai-statistics series `route.….consumer.<c>.metric.<name>`.
pub mod metric {
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

/// The per-worker part: the rules, what the worker's requests share, the stores in flight.
#[derive(Default)]
pub struct Cache {
    rules: Option<Rc<RuleSet<Config>>>,
    worker: Rc<Worker>,
    in_flight: InFlight,
}

impl Plugin for Cache {
    fn name(&self) -> &'static str {
        "ai-cache"
    }

    fn metrics_owner(&self) -> &'static str {
        "ai_cache"
    }

    fn configure(&mut self, config: &Value) -> Result<Configured, String> {
        let rules = RuleSet::parse(config, Config::from_map).map_err(|e| e.to_string())?;
        let configured = Configured {
            rules: rules.rule_count(),
            max_metric_series: rules
                .global()
                .map_or(config::DEFAULT_MAX_METRIC_SERIES, |c| c.max_metric_series),
            tick: Some(TICK),
        };
        self.rules = Some(Rc::new(rules));
        self.worker = Rc::new(Worker::default());
        Ok(configured)
    }

    fn on_tick(&mut self, _env: &dyn Env, effects: &mut Effects) {
        self.in_flight.send(&self.worker, effects);
    }

    fn on_callout(&mut self, _env: &dyn Env, effects: &mut Effects, tag: u32, outcome: Outcome) {
        self.in_flight.answered(effects, tag, &outcome);
    }

    /// A stage for `POST …/chat/completions` requests a rule applies to.
    fn stage(&self, env: &dyn Env) -> Option<Box<dyn Stage>> {
        let config = rule_for(self.rules.as_ref()?, env)?;
        let method = env.request_header(":method").unwrap_or_default();
        let path = env.request_header(":path").unwrap_or_default();
        if method != "POST"
            || !path
                .split('?')
                .next()
                .unwrap_or("")
                .ends_with("/chat/completions")
        {
            return None;
        }
        Some(Box::new(Lookup {
            config,
            worker: self.worker.clone(),
            state: State::Off,
            labels: Labels::default(),
            next_tag: 0,
        }))
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
enum Wait {
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
    /// Nothing (more) to do for this request.
    Off,
    /// The request bypasses the cache (asked by the client, or not cacheable).
    Skip,
    /// Headers held until the body is read.
    Reading,
    Lookup {
        plan: Plan,
        wait: Wait,
        tag: u32,
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

/// One request through the cache.
struct Lookup {
    config: Rc<Config>,
    worker: Rc<Worker>,
    state: State,
    labels: Labels,
    next_tag: u32,
}

impl Stage for Lookup {
    fn on_request_headers(&mut self, cx: &mut Cx, end_of_stream: bool) -> Step {
        let env = cx.env;
        self.labels = Labels {
            route: env.route_name(),
            cluster: env.cluster_name(),
            consumer: consumer::named(env.request_header(&self.config.consumer_header).as_deref())
                .unwrap_or_default()
                .to_string(),
            series: String::new(),
        };
        self.labels.set_model("");
        let skip_asked = env
            .request_header(STATUS_HEADER)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("skip"))
            || env
                .request_header(HIGRESS_SKIP_HEADER)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("on"));
        if skip_asked {
            self.skip(cx, "the client asked to skip the cache");
        } else if end_of_stream {
            self.skip(cx, "request has no body");
        } else {
            self.state = State::Reading;
        }
        Step::Continue
    }

    /// The whole body before the request goes on: a hit never reaches the provider.
    fn request_body_use(&self) -> BodyUse {
        match self.state {
            State::Reading => BodyUse::Change {
                max_bytes: self.config.max_request_bytes,
            },
            _ => BodyUse::None,
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx, body: &mut RequestBody) -> Step {
        if !matches!(self.state, State::Reading) {
            return Step::Continue;
        }
        let Some(bytes) = body.bytes(self.config.max_request_bytes) else {
            self.skip(cx, "request body is larger than maxRequestBytes");
            return Step::Continue;
        };
        let consumer = Some(self.labels.consumer.as_str()).filter(|c| !c.is_empty());
        let plan = match key::plan(bytes, &self.config, consumer) {
            Ok(plan) => plan,
            Err(why) => {
                self.skip(cx, why);
                return Step::Continue;
            }
        };
        self.labels.set_model(&plan.model);
        let key = plan.key.clone();
        self.read_exact(cx, plan, &key, Wait::Exact, None)
    }

    fn on_callout(&mut self, cx: &mut Cx, tag: u32, outcome: Outcome) -> Step {
        match self.state {
            State::Lookup { tag: expected, .. } if expected == tag => {}
            State::Lookup { .. } => return Step::Hold,
            _ => return Step::Continue,
        }
        let State::Lookup {
            plan, wait, vector, ..
        } = std::mem::replace(&mut self.state, State::Off)
        else {
            return Step::Continue;
        };
        self.on_lookup_answer(cx, plan, wait, vector, outcome.success())
    }

    fn on_response_headers(&mut self, cx: &mut Cx, head: &ResponseHead, _end: bool) -> Step {
        match &mut self.state {
            State::Skip => cx.effects.set_response_header(STATUS_HEADER, Some("skip")),
            State::Forwarded { capture, .. } => {
                cx.effects.set_response_header(STATUS_HEADER, Some("miss"));
                match Capture::new(
                    head.status(),
                    head.content_type(),
                    self.config.max_answer_bytes,
                ) {
                    Ok(c) => *capture = Some(c),
                    Err(why) => self.not_stored(cx, why),
                }
            }
            _ => {}
        }
        Step::Continue
    }

    fn wants_response_body(&self) -> bool {
        matches!(&self.state, State::Forwarded { capture: Some(c), .. } if c.wants_body())
    }

    fn on_response_body(&mut self, cx: &mut Cx, chunk: &mut ResponseChunk) -> Step {
        if let State::Forwarded {
            capture: Some(capture),
            ..
        } = &mut self.state
        {
            if !chunk.bytes().is_empty() {
                capture.push(chunk.bytes());
            }
            if chunk.end || capture.complete() {
                self.store_answer(cx);
            }
        }
        Step::Continue
    }

    fn on_response_end(&mut self, cx: &mut Cx) {
        self.store_answer(cx);
    }
}

impl Lookup {
    fn count(&self, cx: &mut Cx, metric: &'static str) {
        cx.effects.count(&self.labels.series, metric, 1);
    }

    fn skip(&mut self, cx: &mut Cx, why: &str) {
        log::debug!("ai-cache: not cached: {why}");
        self.state = State::Skip;
        self.count(cx, metric::SKIP);
        cx.effects.set_filter_state(LOG_KEY, b"skip".to_vec());
    }

    fn not_stored(&self, cx: &mut Cx, why: &str) {
        log::debug!("ai-cache: answer not stored: {why}");
        self.count(cx, metric::NOT_STORED);
    }

    fn local_store<'a>(config: &'a Config, data: &'a StoreData<'a>) -> LocalStore<'a, StoreData<'a>> {
        LocalStore {
            data,
            prefix: &config.cache.key_prefix,
            max_entries: config.cache.max_entries,
            max_entry_bytes: config.local_entry_bytes(),
        }
    }

    fn vector_store<'a>(
        config: &'a Config,
        data: &'a StoreData<'a>,
        max_entries: usize,
    ) -> VectorStore<'a, StoreData<'a>> {
        VectorStore {
            data,
            prefix: &config.cache.key_prefix,
            max_entries,
        }
    }

    /// Sends a lookup callout and holds the request for it (a callout Envoy refuses at once
    /// comes back at once as unreachable, and fails the step).
    fn wait(
        &mut self,
        cx: &mut Cx,
        call: Callout,
        plan: Plan,
        wait: Wait,
        vector: Option<Vec<f32>>,
    ) -> Step {
        let tag = self.next_tag;
        self.next_tag += 1;
        cx.effects.call(tag, call);
        self.state = State::Lookup {
            plan,
            wait,
            tag,
            vector,
        };
        Step::Hold
    }

    /// Reads `key` from the exact layer: the request's own key ([`Wait::Exact`]) or a similar
    /// question's ([`Wait::Similar`]).
    fn read_exact(
        &mut self,
        cx: &mut Cx,
        plan: Plan,
        key: &str,
        wait: Wait,
        vector: Option<Vec<f32>>,
    ) -> Step {
        let config = self.config.clone();
        match (config.cache.kind, &config.cache.service) {
            (CacheType::Redis, Some(redis)) => {
                let call = webdis::command(&redis.cluster, &["GET", key], redis.timeout);
                self.wait(cx, call, plan, wait, vector)
            }
            _ => {
                let data = StoreData(cx.env.store());
                let found = Self::local_store(&config, &data).get(key, cx.env.now_ms() / 1000);
                self.after_exact(cx, plan, wait, vector, Ok(found))
            }
        }
    }

    fn after_exact(
        &mut self,
        cx: &mut Cx,
        plan: Plan,
        wait: Wait,
        vector: Option<Vec<f32>>,
        found: Result<Option<Vec<u8>>, String>,
    ) -> Step {
        match found.map(|bytes| bytes.as_deref().and_then(Entry::decode)) {
            Ok(Some(entry)) => {
                let similarity = match wait {
                    Wait::Similar(score) => Some(score),
                    _ => None,
                };
                return self.reply(cx, &plan, &entry, similarity);
            }
            Ok(None) => {}
            Err(why) => {
                log::warn!("ai-cache: cache lookup failed, serving as a miss: {why}");
                self.count(cx, metric::CACHE_ERROR);
            }
        }
        match wait {
            Wait::Exact => self.embed(cx, plan),
            _ => self.miss(cx, plan, vector),
        }
    }

    fn embed(&mut self, cx: &mut Cx, plan: Plan) -> Step {
        let Some(semantic) = self.config.semantic.as_ref() else {
            return self.miss(cx, plan, None);
        };
        let call = embedding::request(&semantic.embedding, &plan.text);
        self.wait(cx, call, plan, Wait::Embed, None)
    }

    fn on_lookup_answer(
        &mut self,
        cx: &mut Cx,
        plan: Plan,
        wait: Wait,
        vector: Option<Vec<f32>>,
        answer: Result<&[u8], String>,
    ) -> Step {
        let config = self.config.clone();
        match (wait, config.semantic.as_ref()) {
            (Wait::Exact | Wait::Similar(_), _) | (_, None) => {
                let found = answer.and_then(redis_value);
                self.after_exact(cx, plan, wait, vector, found)
            }
            (Wait::Embed, Some(semantic)) => {
                match answer.and_then(|b| embedding::parse(semantic.embedding.kind, b)) {
                    Ok(vector) => self.nearest(cx, plan, vector),
                    Err(why) => {
                        log::warn!("ai-cache: embedding failed, serving as a miss: {why}");
                        self.count(cx, metric::EMBEDDING_ERROR);
                        self.miss(cx, plan, None)
                    }
                }
            }
            (Wait::Nearest, Some(_)) => match answer.and_then(chroma::nearest) {
                Ok(found) => self.after_nearest(cx, plan, vector, found),
                Err(why) => {
                    log::warn!("ai-cache: vector search failed, serving as a miss: {why}");
                    self.count(cx, metric::VECTOR_ERROR);
                    self.miss(cx, plan, vector)
                }
            },
        }
    }

    fn nearest(&mut self, cx: &mut Cx, plan: Plan, vector: Vec<f32>) -> Step {
        let config = self.config.clone();
        let Some(semantic) = config.semantic.as_ref() else {
            return self.miss(cx, plan, Some(vector));
        };
        match semantic.vector.kind {
            VectorType::Local => {
                let data = StoreData(cx.env.store());
                let store = Self::vector_store(&config, &data, semantic.vector.max_entries);
                let mut indexes = self.worker.vector_indexes.borrow_mut();
                let index = indexes.entry(config.cache.key_prefix.clone()).or_default();
                let now_s = cx.env.now_ms() / 1000;
                let found = store.nearest(index, context_id(&plan.context), &vector, now_s);
                drop(indexes);
                self.after_nearest(cx, plan, Some(vector), found)
            }
            VectorType::Chroma => match chroma::query(&semantic.vector, &plan.context, &vector) {
                Some(call) => self.wait(cx, call, plan, Wait::Nearest, Some(vector)),
                None => self.miss(cx, plan, Some(vector)),
            },
        }
    }

    fn after_nearest(
        &mut self,
        cx: &mut Cx,
        plan: Plan,
        vector: Option<Vec<f32>>,
        found: Option<(String, f32)>,
    ) -> Step {
        let min = self
            .config
            .semantic
            .as_ref()
            .map_or(f32::INFINITY, |s| s.vector.min_similarity);
        match found {
            Some((key, score)) if score >= min => {
                log::debug!("ai-cache: similar question found (similarity {score:.4})");
                self.read_exact(cx, plan, &key, Wait::Similar(score), vector)
            }
            _ => self.miss(cx, plan, vector),
        }
    }

    fn miss(&mut self, cx: &mut Cx, plan: Plan, vector: Option<Vec<f32>>) -> Step {
        self.count(cx, metric::MISS);
        cx.effects.set_filter_state(LOG_KEY, b"miss".to_vec());
        self.state = State::Forwarded {
            plan,
            vector,
            capture: None,
        };
        Step::Continue
    }

    /// Answers from the cache, as a stream when the request asked for one.
    fn reply(&mut self, cx: &mut Cx, plan: &Plan, entry: &Entry, similarity: Option<f32>) -> Step {
        let now_ms = cx.env.now_ms();
        let replay = Replay {
            entry,
            id: format!(
                "chatcmpl-cache-{}{now_ms:x}",
                &plan.key[plan.key.len().saturating_sub(8)..]
            ),
            created: now_ms / 1000,
        };
        let (content_type, body) = if plan.stream {
            (
                "text/event-stream",
                replay.stream(plan.include_usage, self.config.replay_chunk_chars),
            )
        } else {
            ("application/json", replay.completion())
        };
        let matched = if similarity.is_some() {
            "semantic"
        } else {
            "exact"
        };
        let mut headers = vec![
            ("content-type".to_string(), content_type.to_string()),
            (STATUS_HEADER.to_string(), "hit".to_string()),
            ("x-ai-cache-match".to_string(), matched.to_string()),
        ];
        if let Some(score) = similarity {
            headers.push(("x-ai-cache-similarity".to_string(), format!("{score:.4}")));
        }
        if plan.stream {
            headers.push(("cache-control".to_string(), "no-cache".to_string()));
        }
        self.count(cx, metric::HIT);
        if similarity.is_some() {
            self.count(cx, metric::SEMANTIC_HIT);
        }
        cx.effects.set_filter_state(LOG_KEY, b"hit".to_vec());
        self.state = State::Replied;
        Step::Respond(Reply {
            status: 200,
            headers,
            body,
        })
    }

    /// Queues a store for the plugin's next tick; a full queue drops it (and counts it).
    fn queue(&self, cx: &mut Cx, call: Callout, failure_metric: &'static str) {
        let job = Job {
            call,
            failure_metric,
            series: self.labels.series.clone(),
        };
        if let Err(job) = self.worker.queue(job) {
            log::warn!("ai-cache: store queue full; answer not stored");
            self.count(cx, job.failure_metric);
        }
    }

    /// Stores a miss's answer once its response has ended (if it can be cached).
    fn store_answer(&mut self, cx: &mut Cx) {
        if !matches!(self.state, State::Forwarded { .. }) {
            return;
        }
        let State::Forwarded {
            plan,
            vector,
            capture,
        } = std::mem::replace(&mut self.state, State::Off)
        else {
            return;
        };
        let Some(capture) = capture else {
            return;
        };
        let entry = match capture.finish() {
            Ok(entry) => entry,
            Err(why) => return self.not_stored(cx, why),
        };
        let config = self.config.clone();
        let now_s = cx.env.now_ms() / 1000;
        let ttl = config.cache.ttl_seconds;
        let expires = expiry(now_s, ttl);
        let value = entry.encode();
        let data = StoreData(cx.env.store());
        match (config.cache.kind, &config.cache.service) {
            (CacheType::Redis, Some(redis)) => {
                let value = String::from_utf8_lossy(&value);
                let ttl = ttl.to_string();
                let mut args = vec!["SET", plan.key.as_str(), &value];
                if config.cache.ttl_seconds > 0 {
                    args.extend(["EX", ttl.as_str()]);
                }
                let call = webdis::command(&redis.cluster, &args, redis.timeout);
                self.queue(cx, call, metric::CACHE_ERROR);
            }
            _ => match Self::local_store(&config, &data).put(&plan.key, &value, expires, now_s) {
                Ok(()) => self.count(cx, metric::STORED),
                Err(why) => return self.not_stored(cx, why),
            },
        }
        let (Some(semantic), Some(vector)) = (config.semantic.as_ref(), vector) else {
            return;
        };
        match semantic.vector.kind {
            VectorType::Local => {
                let store = Self::vector_store(&config, &data, semantic.vector.max_entries);
                let added = store.insert(VectorEntry {
                    context: context_id(&plan.context),
                    expires,
                    key: plan.key.clone(),
                    vector,
                });
                if let Err(why) = added {
                    log::warn!("ai-cache: vector not stored: {why}");
                    self.count(cx, metric::VECTOR_ERROR);
                }
            }
            VectorType::Chroma => {
                if let Some(call) =
                    chroma::upsert(&semantic.vector, &plan.context, &plan.key, &vector)
                {
                    self.queue(cx, call, metric::VECTOR_ERROR);
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
