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
use aigw_shared::store::Store;
use aigw_shared::webdis;
use serde_json::Value;
use std::rc::Rc;
use std::time::Duration;

/// Response header (and log attribute) saying how the cache served the request.
const STATUS_HEADER: &str = "x-ai-cache";
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

    fn stage(&self, env: &dyn Env) -> Option<Box<dyn Stage>> {
        let config = rule_for(self.rules.as_ref()?, env)?;
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
    /// Only `POST …/chat/completions` requests are cached; their headers wait for the body.
    fn on_request_headers(&mut self, cx: &mut Cx, end_of_stream: bool) -> Step {
        let env = cx.env;
        let method = env.request_header(":method").unwrap_or_default();
        let path = env.request_header(":path").unwrap_or_default();
        if method != "POST"
            || !path
                .split('?')
                .next()
                .unwrap_or("")
                .ends_with("/chat/completions")
        {
            return Step::Continue;
        }
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

    fn local_store<'a>(config: &'a Config, data: &'a dyn Store) -> LocalStore<'a> {
        LocalStore {
            data,
            prefix: &config.cache.key_prefix,
            max_entries: config.cache.max_entries,
            max_entry_bytes: config.local_entry_bytes(),
        }
    }

    fn vector_store<'a>(
        config: &'a Config,
        data: &'a dyn Store,
        max_entries: usize,
    ) -> VectorStore<'a> {
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
                let data = cx.env.store();
                let found = Self::local_store(&config, data).get(key, cx.env.now_ms() / 1000);
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
                let data = cx.env.store();
                let store = Self::vector_store(&config, data, semantic.vector.max_entries);
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
        if !self.worker.queue(job) {
            log::warn!("ai-cache: store queue full; answer not stored");
            self.count(cx, failure_metric);
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
        let data = cx.env.store();
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
            _ => match Self::local_store(&config, data).put(&plan.key, &value, expires, now_s) {
                Ok(()) => self.count(cx, metric::STORED),
                Err(why) => return self.not_stored(cx, why),
            },
        }
        let (Some(semantic), Some(vector)) = (config.semantic.as_ref(), vector) else {
            return;
        };
        match semantic.vector.kind {
            VectorType::Local => {
                let store = Self::vector_store(&config, data, semantic.vector.max_entries);
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

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::stage::{FakeEnv, MetricSample};
    use serde_json::json;

    fn plugin(config: Value) -> Cache {
        let mut plugin = Cache::default();
        let configured = plugin.configure(&config).unwrap();
        assert_eq!(configured.tick, Some(TICK));
        plugin
    }

    fn env() -> FakeEnv {
        FakeEnv::default()
            .with_header(":method", "POST")
            .with_header(":path", "/v1/chat/completions")
    }

    /// Runs `f` with a fresh context; returns what it answered and the effects it asked for.
    fn with<R>(env: &FakeEnv, f: impl FnOnce(&mut Cx) -> R) -> (R, Effects) {
        let mut effects = Effects::default();
        let r = f(&mut Cx {
            env,
            effects: &mut effects,
        });
        (r, effects)
    }

    fn metrics(effects: &Effects) -> Vec<&'static str> {
        effects
            .metrics
            .iter()
            .map(|m: &MetricSample| m.metric)
            .collect()
    }

    fn question(text: &str, stream: bool) -> RequestBody {
        let body = json!({"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": text}]});
        let bytes = serde_json::to_vec(&body).unwrap();
        RequestBody::new(Some(bytes.clone()), bytes.len())
    }

    /// A new request's stage through its headers and body: the body's step and effects.
    fn ask(
        plugin: &Cache,
        env: &FakeEnv,
        body: &mut RequestBody,
    ) -> (Box<dyn Stage>, Step, Effects) {
        let mut stage = plugin.stage(env).expect("a stage for a chat request");
        let (step, _) = with(env, |cx| stage.on_request_headers(cx, false));
        assert_eq!(step, Step::Continue);
        assert!(matches!(stage.request_body_use(), BodyUse::Change { .. }));
        let (step, effects) = with(env, |cx| stage.on_request_body(cx, body));
        (stage, step, effects)
    }

    fn head(content_type: &str) -> ResponseHead {
        ResponseHead {
            headers: vec![
                (":status".into(), "200".into()),
                ("content-type".into(), content_type.into()),
            ],
        }
    }

    fn completion(text: &str) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"id": "c", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}),
        )
        .unwrap()
    }

    /// The answer of a miss, in one chunk: the effects of its headers and of its body.
    fn answer(stage: &mut Box<dyn Stage>, env: &FakeEnv, body: Vec<u8>) -> (Effects, Effects) {
        let (step, on_head) = with(env, |cx| {
            stage.on_response_headers(cx, &head("application/json"), false)
        });
        assert_eq!(step, Step::Continue);
        assert!(stage.wants_response_body());
        let mut chunk = ResponseChunk::new(body, true);
        let (step, on_body) = with(env, |cx| {
            let step = stage.on_response_body(cx, &mut chunk);
            stage.on_response_end(cx);
            step
        });
        assert_eq!(step, Step::Continue);
        assert!(!chunk.is_changed());
        (on_head, on_body)
    }

    fn reply(step: Step) -> Reply {
        match step {
            Step::Respond(reply) => reply,
            other => panic!("not answered from the cache: {other:?}"),
        }
    }

    fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn only_chat_completion_posts_are_cached() {
        let plugin = plugin(json!({}));
        let get = FakeEnv::default()
            .with_header(":method", "GET")
            .with_header(":path", "/v1/chat/completions");
        let embeddings = FakeEnv::default()
            .with_header(":method", "POST")
            .with_header(":path", "/v1/embeddings?x=/chat/completions");
        for env in [get, embeddings] {
            let mut stage = plugin.stage(&env).unwrap();
            let (step, effects) = with(&env, |cx| stage.on_request_headers(cx, false));
            assert_eq!(step, Step::Continue);
            assert!(effects.is_empty());
            assert_eq!(stage.request_body_use(), BodyUse::None);
            let (_, effects) = with(&env, |cx| {
                stage.on_response_headers(cx, &head("application/json"), false)
            });
            assert!(effects.is_empty());
        }
    }

    #[test]
    fn a_miss_goes_on_its_answer_is_stored_and_the_next_ask_is_a_hit() {
        let plugin = plugin(json!({}));
        let env = env();
        let (mut stage, step, effects) = ask(&plugin, &env, &mut question("hi", false));
        assert_eq!(step, Step::Continue);
        assert_eq!(metrics(&effects), [metric::MISS]);
        assert_eq!(effects.filter_state, [(LOG_KEY.into(), b"miss".to_vec())]);
        let (on_head, on_body) = answer(&mut stage, &env, completion("Hello"));
        assert_eq!(
            on_head.response_headers,
            [(STATUS_HEADER.into(), Some("miss".into()))]
        );
        assert_eq!(metrics(&on_body), [metric::STORED]);

        let (_, step, effects) = ask(&plugin, &env, &mut question("hi", false));
        let hit = reply(step);
        assert_eq!(hit.status, 200);
        assert_eq!(header(&hit, STATUS_HEADER), Some("hit"));
        assert_eq!(header(&hit, "x-ai-cache-match"), Some("exact"));
        assert_eq!(header(&hit, "content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "Hello");
        assert_eq!(metrics(&effects), [metric::HIT]);
        assert_eq!(effects.filter_state, [(LOG_KEY.into(), b"hit".to_vec())]);

        let (_, step, _) = ask(&plugin, &env, &mut question("hi", true));
        let streamed = reply(step);
        assert_eq!(header(&streamed, "content-type"), Some("text/event-stream"));
        assert_eq!(header(&streamed, "cache-control"), Some("no-cache"));
        assert!(streamed.body.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn skipped_requests_are_not_read_and_say_so_on_the_answer() {
        let plugin = plugin(json!({}));
        let env = env().with_header(STATUS_HEADER, "skip");
        let mut stage = plugin.stage(&env).unwrap();
        let (step, effects) = with(&env, |cx| stage.on_request_headers(cx, false));
        assert_eq!(step, Step::Continue);
        assert_eq!(stage.request_body_use(), BodyUse::None);
        assert_eq!(metrics(&effects), [metric::SKIP]);
        let (_, effects) = with(&env, |cx| {
            stage.on_response_headers(cx, &head("application/json"), false)
        });
        assert_eq!(
            effects.response_headers,
            [(STATUS_HEADER.into(), Some("skip".into()))]
        );
        assert!(!stage.wants_response_body());

        let plugin = self::plugin(json!({"maxRequestBytes": 10}));
        let env = self::env();
        let (_, step, effects) = ask(&plugin, &env, &mut RequestBody::new(None, 11));
        assert_eq!(step, Step::Continue);
        assert_eq!(metrics(&effects), [metric::SKIP]);
    }

    #[test]
    fn answers_that_cannot_be_cached_are_not_stored() {
        let plugin = plugin(json!({}));
        let env = env();
        let (mut stage, _, _) = ask(&plugin, &env, &mut question("hi", false));
        let error = ResponseHead {
            headers: vec![(":status".into(), "500".into())],
        };
        let (_, effects) = with(&env, |cx| stage.on_response_headers(cx, &error, false));
        assert_eq!(metrics(&effects), [metric::NOT_STORED]);
        assert!(!stage.wants_response_body());
        assert!(with(&env, |cx| stage.on_response_end(cx)).1.is_empty());

        let (mut stage, _, _) = ask(&plugin, &env, &mut question("hi", false));
        let (_, on_body) = answer(&mut stage, &env, b"{\"choices\":[]}".to_vec());
        assert_eq!(metrics(&on_body), [metric::NOT_STORED]);
    }

    fn redis() -> Cache {
        plugin(json!({"cache": {"type": "redis", "serviceName": "redis", "cacheTTL": 60}}))
    }

    #[test]
    fn a_redis_lookup_holds_the_request_until_it_answers() {
        let plugin = redis();
        let env = env();
        let (mut stage, step, effects) = ask(&plugin, &env, &mut question("hi", false));
        assert_eq!(step, Step::Hold);
        let (tag, call) = effects.callouts[0].clone();
        assert_eq!(call.cluster, "redis");
        assert!(String::from_utf8_lossy(&call.body).starts_with("GET/"));
        let other = Outcome::Answered {
            status: 200,
            body: b"{\"GET\":null}".to_vec(),
        };
        assert_eq!(
            with(&env, |cx| stage.on_callout(cx, tag + 1, other)).0,
            Step::Hold
        );
        let entry = Entry {
            content: "cached".into(),
            model: "m".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
        };
        let value = String::from_utf8(entry.encode()).unwrap();
        let found = Outcome::Answered {
            status: 200,
            body: serde_json::to_vec(&json!({ "GET": value })).unwrap(),
        };
        let hit = reply(with(&env, |cx| stage.on_callout(cx, tag, found)).0);
        assert!(String::from_utf8_lossy(&hit.body).contains("cached"));
    }

    #[test]
    fn a_redis_down_is_a_miss_and_the_store_goes_out_on_the_tick() {
        let mut plugin = redis();
        let env = env();
        let (mut stage, _, effects) = ask(&plugin, &env, &mut question("hi", false));
        let tag = effects.callouts[0].0;
        let (step, effects) = with(&env, |cx| stage.on_callout(cx, tag, Outcome::TimedOut));
        assert_eq!(step, Step::Continue);
        assert_eq!(metrics(&effects), [metric::CACHE_ERROR, metric::MISS]);

        let (_, on_body) = answer(&mut stage, &env, completion("Hello"));
        assert!(on_body.is_empty(), "stored from the root: {on_body:?}");
        let mut tick = Effects::default();
        plugin.on_tick(&env, &mut tick);
        assert_eq!(tick.callouts.len(), 1);
        let (tag, call) = tick.callouts[0].clone();
        assert!(String::from_utf8_lossy(&call.body).ends_with("/EX/60"));
        let mut tick = Effects::default();
        plugin.on_tick(&env, &mut tick);
        assert!(tick.callouts.is_empty(), "sent once");

        let mut done = Effects::default();
        let ok = Outcome::Answered {
            status: 200,
            body: b"{\"SET\":[true,\"OK\"]}".to_vec(),
        };
        plugin.on_callout(&env, &mut done, tag, ok);
        assert_eq!(metrics(&done), [metric::STORED]);
        assert_eq!(done.metrics[0].series, effects.metrics[0].series);
        let mut late = Effects::default();
        plugin.on_callout(&env, &mut late, tag, Outcome::TimedOut);
        assert!(late.is_empty(), "answered once");
    }

    #[test]
    fn a_failed_store_is_counted() {
        let mut plugin = redis();
        let env = env();
        let (mut stage, _, effects) = ask(&plugin, &env, &mut question("hi", false));
        let miss = Outcome::Answered {
            status: 200,
            body: b"{\"GET\":null}".to_vec(),
        };
        let tag = effects.callouts[0].0;
        assert_eq!(
            with(&env, |cx| stage.on_callout(cx, tag, miss)).0,
            Step::Continue
        );
        answer(&mut stage, &env, completion("Hello"));
        let mut tick = Effects::default();
        plugin.on_tick(&env, &mut tick);
        let tag = tick.callouts[0].0;
        let mut done = Effects::default();
        plugin.on_callout(&env, &mut done, tag, Outcome::Unreachable("refused".into()));
        assert_eq!(metrics(&done), [metric::CACHE_ERROR]);
    }

    fn semantic(vector: Value) -> Cache {
        plugin(json!({
            "embedding": {"type": "openai", "serviceName": "embed"},
            "vector": vector,
        }))
    }

    fn embedded(vector: &[f32]) -> Outcome {
        Outcome::Answered {
            status: 200,
            body: serde_json::to_vec(&json!({"data": [{"embedding": vector}]})).unwrap(),
        }
    }

    #[test]
    fn a_paraphrase_hits_through_the_embedded_vectors() {
        let plugin = semantic(json!({"type": "local", "threshold": 0.9}));
        let env = env();
        let (mut stage, step, effects) = ask(&plugin, &env, &mut question("capital?", false));
        assert_eq!(step, Step::Hold);
        let (tag, call) = effects.callouts[0].clone();
        assert_eq!(call.cluster, "embed");
        let (step, _) = with(&env, |cx| stage.on_callout(cx, tag, embedded(&[1.0, 0.0])));
        assert_eq!(step, Step::Continue, "nothing stored yet");
        answer(&mut stage, &env, completion("Paris"));

        let (mut stage, _, effects) = ask(&plugin, &env, &mut question("the capital?", false));
        let tag = effects.callouts[0].0;
        let (step, effects) = with(&env, |cx| {
            stage.on_callout(cx, tag, embedded(&[0.99, 0.05]))
        });
        let hit = reply(step);
        assert_eq!(header(&hit, "x-ai-cache-match"), Some("semantic"));
        assert!(header(&hit, "x-ai-cache-similarity").is_some());
        assert_eq!(metrics(&effects), [metric::HIT, metric::SEMANTIC_HIT]);

        let (mut stage, _, effects) = ask(&plugin, &env, &mut question("weather?", false));
        let tag = effects.callouts[0].0;
        let (step, _) = with(&env, |cx| stage.on_callout(cx, tag, embedded(&[0.0, 1.0])));
        assert_eq!(step, Step::Continue);
    }

    #[test]
    fn the_embedding_or_chroma_down_is_a_miss() {
        let chroma = json!({"type": "chroma", "serviceName": "chroma",
            "collectionID": "1344926e-fcd2-4a4a-a8ad-a2153dc7cf3e"});
        let plugin = semantic(chroma);
        let env = env();
        let (mut stage, _, effects) = ask(&plugin, &env, &mut question("q", false));
        let tag = effects.callouts[0].0;
        let down = Outcome::Unreachable("refused".into());
        let (step, effects) = with(&env, |cx| stage.on_callout(cx, tag, down));
        assert_eq!(step, Step::Continue);
        assert_eq!(metrics(&effects), [metric::EMBEDDING_ERROR, metric::MISS]);

        let (mut stage, _, effects) = ask(&plugin, &env, &mut question("q", false));
        let tag = effects.callouts[0].0;
        let (step, effects) = with(&env, |cx| stage.on_callout(cx, tag, embedded(&[1.0])));
        assert_eq!(step, Step::Hold);
        let (tag, call) = effects.callouts[0].clone();
        assert_eq!(call.cluster, "chroma");
        let (step, effects) = with(&env, |cx| stage.on_callout(cx, tag, Outcome::TimedOut));
        assert_eq!(step, Step::Continue);
        assert_eq!(metrics(&effects), [metric::VECTOR_ERROR, metric::MISS]);

        // The miss's vector goes to Chroma from the root, after the answer.
        answer(&mut stage, &env, completion("A"));
        let mut tick = Effects::default();
        let mut plugin = plugin;
        plugin.on_tick(&env, &mut tick);
        assert_eq!(tick.callouts.len(), 1);
        assert!(tick.callouts[0].1.path.ends_with("/upsert"));
    }

    #[test]
    fn a_full_store_queue_drops_the_store_and_counts_it() {
        let plugin = redis();
        let env = env();
        for _ in 0..crate::worker::MAX_QUEUED_STORES {
            let job = Job {
                call: webdis::command("redis", &["PING"], Duration::from_secs(1)),
                failure_metric: metric::CACHE_ERROR,
                series: String::new(),
            };
            assert!(plugin.worker.queue(job));
        }
        let (mut stage, _, effects) = ask(&plugin, &env, &mut question("hi", false));
        let tag = effects.callouts[0].0;
        let miss = Outcome::Answered {
            status: 200,
            body: b"{\"GET\":null}".to_vec(),
        };
        with(&env, |cx| stage.on_callout(cx, tag, miss));
        let (_, on_body) = answer(&mut stage, &env, completion("Hello"));
        assert_eq!(metrics(&on_body), [metric::CACHE_ERROR]);
    }
}
