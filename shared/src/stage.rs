//! A plugin's logic as a stage of one runner: a plain state machine that sees the request
//! headers, the request body (read once, shared by every stage), the response head and each
//! response chunk, and answers with a [`Step`] and a list of [`Effects`]. A stage never calls
//! the host: [`crate::runner`] is the only proxy-wasm glue, so a stage is tested on the host
//! target with a fake [`Env`].
//!
//! A [`Plugin`] is the per-worker part: it takes the configuration (with `_rules_`), keeps
//! what the requests of one worker share, and makes one [`Stage`] per request its rules apply
//! to.

use crate::callout::{Callout, Outcome};
use crate::rules::{RequestKeys, RuleSet};
use crate::store::Store;
use serde_json::Value;
use std::rc::Rc;
use std::time::Duration;

/// What a stage may read from the proxy. Reads are lazy: a property or header costs a host
/// call only when some stage asks for it.
pub trait Env {
    /// Milliseconds since the epoch.
    fn now_ms(&self) -> u64;
    /// A property such as `xds.route_name`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// A request header (lower-case name), as the stages before this one left it.
    fn request_header(&self, name: &str) -> Option<String>;
    /// Every request header, in one read.
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Envoy shared data: every worker of this Envoy.
    fn store(&self) -> &dyn Store;

    /// A header of the callout answer being handled (only in [`Stage::on_callout`]).
    fn callout_header(&self, _name: &str) -> Option<String> {
        None
    }

    fn property_string(&self, path: &[&str]) -> Option<String> {
        self.property(path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The request's route name, empty when unknown.
    fn route_name(&self) -> String {
        self.property_string(&["xds", "route_name"])
            .unwrap_or_default()
    }

    /// The upstream cluster the route chose, empty when unknown.
    fn cluster_name(&self) -> String {
        self.property_string(&["xds", "cluster_name"])
            .unwrap_or_default()
    }
}

/// The `_rules_` entry (or global config) that applies to the request, `None` when none does.
/// Reads only what the rules match on: most configs have no rules, and a property read costs
/// about as much as a stage's own work on a small request.
pub fn rule_for<T>(rules: &RuleSet<T>, env: &dyn Env) -> Option<Rc<T>> {
    let route = if rules.uses_route() {
        env.route_name()
    } else {
        String::new()
    };
    let cluster = if rules.uses_service() {
        env.cluster_name()
    } else {
        String::new()
    };
    let host = if rules.uses_host() {
        env.request_header(":authority").unwrap_or_default()
    } else {
        String::new()
    };
    rules.get(&RequestKeys {
        route: &route,
        host: &host,
        service: &cluster,
    })
}

/// What a stage answers at each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Go on to the next stage.
    Continue,
    /// Pause the stream until a callout this stage sent has answered.
    Hold,
    /// Answer the client from the gateway; no later stage sees the request.
    Respond(Reply),
}

/// A response the gateway sends instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A gateway error, in the client's API: the one way every stage answers with an error.
    pub fn error(err: &crate::error::ApiError, api: crate::error::ClientApi) -> Reply {
        Reply::json(err.status, err.body(api))
    }

    pub fn json(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }
}

/// What a stage asks the host to do. The runner applies them when the stage returns, in the
/// order they were asked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    pub request_headers: Vec<(String, Option<String>)>,
    pub response_headers: Vec<(String, Option<String>)>,
    /// Callouts with the stage's own tag, which comes back with the answer.
    pub callouts: Vec<(u32, Callout)>,
    /// Filter state `wasm.<name>` (what access logs read).
    pub filter_state: Vec<(String, Vec<u8>)>,
    pub metrics: Vec<MetricSample>,
    /// Response bytes a stage that holds the response lets out now (from a callout's answer
    /// or its wake-up): they go at the end of the chunk it holds, which the stages after it
    /// and then the client get once it continues.
    pub released: Vec<u8>,
}

/// One sample for the stage's metrics, in the series `series` (see
/// [`crate::metrics::series_prefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSample {
    pub series: String,
    pub metric: &'static str,
    pub kind: MetricKind,
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Histogram,
}

impl Effects {
    /// Sets (or with `None` removes) a request header.
    pub fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.request_headers
            .push((name.to_string(), value.map(str::to_string)));
    }

    pub fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        self.response_headers
            .push((name.to_string(), value.map(str::to_string)));
    }

    pub fn call(&mut self, tag: u32, callout: Callout) {
        self.callouts.push((tag, callout));
    }

    /// Lets out response bytes while holding the response (see [`Effects::released`]).
    pub fn release(&mut self, bytes: &[u8]) {
        self.released.extend_from_slice(bytes);
    }

    pub fn set_filter_state(&mut self, name: &str, value: Vec<u8>) {
        self.filter_state.push((name.to_string(), value));
    }

    pub fn count(&mut self, series: &str, metric: &'static str, value: u64) {
        self.sample(series, metric, MetricKind::Counter, value);
    }

    pub fn histogram(&mut self, series: &str, metric: &'static str, value: u64) {
        self.sample(series, metric, MetricKind::Histogram, value);
    }

    fn sample(&mut self, series: &str, metric: &'static str, kind: MetricKind, value: u64) {
        self.metrics.push(MetricSample {
            series: series.to_string(),
            metric,
            kind,
            value,
        });
    }

    pub fn is_empty(&self) -> bool {
        *self == Effects::default()
    }
}

/// What one callback of a stage gets: the proxy to read from, and the effects to ask for.
pub struct Cx<'a> {
    pub env: &'a dyn Env,
    pub effects: &'a mut Effects,
}

/// How much of the request body a stage needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyUse {
    #[default]
    None,
    /// Read it; the request flows on while it arrives.
    Read { max_bytes: usize },
    /// Read it whole before the request goes on, and perhaps change it: the request headers
    /// and body wait until every stage has let the whole body through (the filter needs
    /// `allow_on_headers_stop_iteration`), so a refused request never reaches the upstream and
    /// headers may still be set from the body. A body past `max_bytes` is shown by its length
    /// alone, as soon as it passes the limit.
    Change { max_bytes: usize },
}

impl BodyUse {
    pub fn max_bytes(self) -> usize {
        match self {
            BodyUse::None => 0,
            BodyUse::Read { max_bytes } | BodyUse::Change { max_bytes } => max_bytes,
        }
    }

    /// What two stages need together.
    pub fn and(self, other: BodyUse) -> BodyUse {
        let max_bytes = self.max_bytes().max(other.max_bytes());
        match (self, other) {
            (BodyUse::None, BodyUse::None) => BodyUse::None,
            (BodyUse::Change { .. }, _) | (_, BodyUse::Change { .. }) => {
                BodyUse::Change { max_bytes }
            }
            _ => BodyUse::Read { max_bytes },
        }
    }
}

/// The request body, read once for every stage. `bytes` is `None` when the body was larger
/// than every stage's limit (then only its length is known).
#[derive(Debug, Default)]
pub struct RequestBody {
    bytes: Option<Vec<u8>>,
    len: usize,
    json: std::cell::OnceCell<Option<Value>>,
    changed: bool,
}

impl RequestBody {
    pub fn new(bytes: Option<Vec<u8>>, len: usize) -> RequestBody {
        RequestBody {
            bytes,
            len,
            ..RequestBody::default()
        }
    }

    /// The whole body, if it was within the limit of `max_bytes`.
    pub fn bytes(&self, max_bytes: usize) -> Option<&[u8]> {
        self.bytes.as_deref().filter(|_| self.len <= max_bytes)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body as JSON, parsed on the first ask and shared by every stage after it.
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.bytes.as_deref()?).ok())
            .as_ref()
    }

    /// Replaces the body (what the upstream gets).
    pub fn replace(&mut self, bytes: Vec<u8>) {
        self.len = bytes.len();
        self.bytes = Some(bytes);
        self.json = std::cell::OnceCell::new();
        self.changed = true;
    }

    pub fn is_changed(&self) -> bool {
        self.changed
    }

    pub fn take_bytes(&mut self) -> Vec<u8> {
        self.bytes.take().unwrap_or_default()
    }
}

/// The response's status and headers, read once for every stage.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first value of a (lower-case) header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `:status`, or 0 when unreadable.
    pub fn status(&self) -> u16 {
        self.get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn content_type(&self) -> &str {
        self.get("content-type").unwrap_or("")
    }

    /// Sets (or with `None` removes) a header, as a stage's effect does to the real ones.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        self.headers.retain(|(k, _)| k != name);
        if let Some(value) = value {
            self.headers.push((name.to_string(), value.to_string()));
        }
    }
}

/// One piece of the response body as it passes. A stage may replace it (what the stages
/// before it, and then the client, get).
#[derive(Debug, Default)]
pub struct ResponseChunk {
    bytes: Vec<u8>,
    /// The last piece of the body.
    pub end: bool,
    changed: bool,
}

impl ResponseChunk {
    pub fn new(bytes: Vec<u8>, end: bool) -> ResponseChunk {
        ResponseChunk {
            bytes,
            end,
            changed: false,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn replace(&mut self, bytes: Vec<u8>) {
        self.bytes = bytes;
        self.changed = true;
    }

    pub fn is_changed(&self) -> bool {
        self.changed
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Adds `bytes` at the end (a change of the chunk).
    pub fn extend(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.bytes.extend_from_slice(bytes);
            self.changed = true;
        }
    }

    /// Adds the piece of the body that came after this one (the runner, while a stage holds
    /// the response): changed when either was.
    pub fn append(&mut self, next: ResponseChunk) {
        self.bytes.extend(next.bytes);
        self.end = next.end;
        self.changed |= next.changed;
    }
}

/// One request's part of a plugin. Every method has a default that lets the request through
/// unchanged, so a stage writes only the steps it cares about.
pub trait Stage {
    /// The request headers are there (read them through `cx.env`). `end_of_stream`: no body.
    fn on_request_headers(&mut self, _cx: &mut Cx, _end_of_stream: bool) -> Step {
        Step::Continue
    }

    /// How much of the request body this stage needs; asked once the headers are done.
    fn request_body_use(&self) -> BodyUse {
        BodyUse::None
    }

    /// The whole request body, once (only when [`Stage::request_body_use`] asked for it).
    fn on_request_body(&mut self, _cx: &mut Cx, _body: &mut RequestBody) -> Step {
        Step::Continue
    }

    /// The response status and headers. `end_of_stream`: no body follows.
    fn on_response_headers(
        &mut self,
        _cx: &mut Cx,
        _head: &ResponseHead,
        _end_of_stream: bool,
    ) -> Step {
        Step::Continue
    }

    /// Whether this stage wants to see the next response chunk (asked before each one, so a
    /// stage that has read what it needs stops costing a copy).
    fn wants_response_body(&self) -> bool {
        false
    }

    /// Whether the response headers wait for the body (asked after each stage's
    /// [`Stage::on_response_headers`]): the stage may still change them while it reads the body,
    /// which it must want ([`Stage::wants_response_body`]); they go with the first piece every
    /// stage lets through.
    fn holds_response_headers(&self) -> bool {
        false
    }

    /// Whether this stage needs the whole response body before the client sees any of it
    /// (asked before each chunk): Envoy then buffers it, and every stage sees it once, whole,
    /// with its end.
    fn buffers_response_body(&self) -> bool {
        false
    }

    /// A piece of the response body, on its way to the client. A stage may hold the response
    /// ([`Step::Hold`]): the pieces that arrive meanwhile come to it too (the stages before it
    /// see them as usual), and what it leaves of them is added to the chunk it holds; it lets
    /// out more with [`Effects::release`] and goes on with a callout's answer, a later piece or
    /// [`Stage::on_wake`].
    fn on_response_body(&mut self, _cx: &mut Cx, _chunk: &mut ResponseChunk) -> Step {
        Step::Continue
    }

    /// The response has ended (after its last chunk, or with its headers when it has no body).
    fn on_response_end(&mut self, _cx: &mut Cx) {}

    /// The answer to a callout this stage asked for with `tag`.
    fn on_callout(&mut self, _cx: &mut Cx, _tag: u32, _outcome: Outcome) -> Step {
        Step::Continue
    }

    /// While this stage holds the stream: when it wants [`Stage::on_wake`] without waiting
    /// for a callout (milliseconds since the epoch; asked on each tick of the runner's clock).
    fn wake_at_ms(&self) -> Option<u64> {
        None
    }

    /// The time [`Stage::wake_at_ms`] asked for has come, and the stage still holds the
    /// stream: what it answers is its step, as for a callout's answer.
    fn on_wake(&mut self, _cx: &mut Cx) -> Step {
        Step::Continue
    }

    /// The stream is over (also after a local reply or a reset): the last chance to log and
    /// count. Called exactly once.
    fn on_done(&mut self, _cx: &mut Cx) {}
}

/// The per-worker part of a plugin.
pub trait Plugin {
    /// Its name in logs: `ai-statistics`.
    fn name(&self) -> &'static str;

    /// The first part of its metrics' names: `ai_statistics`.
    fn metrics_owner(&self) -> &'static str;

    /// Config keys that mean nothing here, each with why: they are removed and named in one
    /// warning (Higress configs move over key for key).
    fn ignored_keys(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Takes a configuration (already JSON, `_rules_` included); an error refuses it.
    fn configure(&mut self, config: &Value) -> Result<Configured, String>;

    /// A configuration was taken, before any request sees it: the moment to prepare what the
    /// plugin keeps in the store (shared data).
    fn on_configured(&mut self, _env: &dyn Env) {}

    /// Called on the runner's clock, with the effects the plugin asks for (callouts,
    /// metrics); only when [`Configured::tick`] asked for it.
    fn on_tick(&mut self, _env: &dyn Env, _effects: &mut Effects) {}

    /// The plugin is being replaced (a swap) or Envoy stops: the last chance to send what
    /// waits for the next tick.
    fn on_stop(&mut self, _env: &dyn Env, _effects: &mut Effects) {}

    /// The answer to a callout asked for on a tick.
    fn on_callout(&mut self, _env: &dyn Env, _effects: &mut Effects, _tag: u32, _outcome: Outcome) {
    }

    /// The stage for a new request; `None` when no rule applies to it.
    fn stage(&self, env: &dyn Env) -> Option<Box<dyn Stage>>;
}

/// What a configuration asks of the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// Rules in the configuration, for the log line.
    pub rules: usize,
    /// Upper bound on distinct metric series per worker.
    pub max_metric_series: usize,
    /// How often [`Plugin::on_tick`] runs; `None`: never.
    pub tick: Option<Duration>,
}

/// An [`Env`] for tests: a clock the test moves, properties and headers it sets, a store in
/// memory.
#[derive(Default)]
pub struct FakeEnv {
    pub now_ms: std::cell::Cell<u64>,
    pub properties: Vec<(String, Vec<u8>)>,
    pub request_headers: Vec<(String, String)>,
    pub store: crate::store::MemoryStore,
}

impl FakeEnv {
    pub fn with_header(mut self, name: &str, value: &str) -> FakeEnv {
        self.request_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    /// Sets a property by its dotted path: `xds.route_name`.
    pub fn with_property(mut self, path: &str, value: &str) -> FakeEnv {
        self.properties
            .push((path.to_string(), value.as_bytes().to_vec()));
        self
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get() + ms);
    }
}

impl Env for FakeEnv {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let path = path.join(".");
        self.properties
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, v)| v.clone())
    }

    fn request_header(&self, name: &str) -> Option<String> {
        self.request_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        self.request_headers.clone()
    }

    fn store(&self) -> &dyn Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_uses_combine_to_the_strongest_and_the_largest() {
        let read = BodyUse::Read { max_bytes: 10 };
        let change = BodyUse::Change { max_bytes: 5 };
        assert_eq!(BodyUse::None.and(BodyUse::None), BodyUse::None);
        assert_eq!(BodyUse::None.and(read), read);
        assert_eq!(read.and(change), BodyUse::Change { max_bytes: 10 });
        assert_eq!(change.and(BodyUse::None), change);
    }

    #[test]
    fn a_body_over_a_stages_limit_is_not_shown_to_it() {
        let body = RequestBody::new(Some(b"{\"model\":\"m\"}".to_vec()), 13);
        assert_eq!(body.bytes(13), Some(&b"{\"model\":\"m\"}"[..]));
        assert_eq!(body.bytes(12), None);
        assert_eq!(body.json().and_then(|j| j["model"].as_str()), Some("m"));
    }

    #[test]
    fn a_replaced_body_is_parsed_again() {
        let mut body = RequestBody::new(Some(b"{\"a\":1}".to_vec()), 7);
        assert_eq!(body.json().unwrap()["a"], 1);
        body.replace(b"{\"a\":2}".to_vec());
        assert!(body.is_changed());
        assert_eq!(body.json().unwrap()["a"], 2);
    }

    #[test]
    fn rules_see_the_route_only_when_they_match_on_it() {
        let rules = RuleSet::parse(
            &serde_json::json!({"n": 0, "_rules_": [{"_match_route_": ["chat"], "n": 1}]}),
            |m| Ok(m["n"].as_u64().unwrap()),
        )
        .unwrap();
        let env = FakeEnv::default().with_property("xds.route_name", "chat");
        assert_eq!(rule_for(&rules, &env).as_deref(), Some(&1));
        assert_eq!(rule_for(&rules, &FakeEnv::default()).as_deref(), Some(&0));
    }

    #[test]
    fn the_response_head_reads_status_and_content_type() {
        let head = ResponseHead {
            headers: vec![
                (":status".into(), "429".into()),
                ("content-type".into(), "text/event-stream".into()),
            ],
        };
        assert_eq!(head.status(), 429);
        assert_eq!(head.content_type(), "text/event-stream");
        assert_eq!(ResponseHead::default().status(), 0);
    }
}
