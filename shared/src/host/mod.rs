//! The few proxy-wasm host calls every plugin needs, wrapped so that a failed call is a value,
//! never a panic (the SDK's context methods and many of its `hostcalls` unwrap, and one panic
//! takes the VM down). Plugins call these, not the SDK's context methods.

mod abi;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

/// Reads the plugin configuration (JSON, empty means `{}`) and parses it into per-route rules.
/// Errors are logged with their JSON path; `None` tells `on_configure` to refuse the config.
pub fn load_rules<T>(
    plugin: &str,
    parse: impl Fn(&serde_json::Map<String, serde_json::Value>) -> Result<T, crate::rules::ConfigError>,
) -> Option<crate::rules::RuleSet<T>> {
    load_rules_ignoring(plugin, &[], parse)
}

/// [`load_rules`] for a config that may carry keys meaning nothing here (`ignored`, each with
/// why): they are removed, and each one found is named in one warning.
pub fn load_rules_ignoring<T>(
    plugin: &str,
    ignored: &[(&str, &str)],
    parse: impl Fn(&serde_json::Map<String, serde_json::Value>) -> Result<T, crate::rules::ConfigError>,
) -> Option<crate::rules::RuleSet<T>> {
    let json = plugin_configuration(plugin, ignored)?;
    match crate::rules::RuleSet::parse(&json, parse) {
        Ok(rules) => {
            log::info!("{plugin}: configured with {} rules", rules.rule_count());
            Some(rules)
        }
        Err(err) => {
            log::error!("{plugin}: invalid configuration: {err}");
            None
        }
    }
}

/// The plugin configuration as JSON (empty means `null`), with the keys in `ignored` removed
/// and each one found named in a warning. `None` (logged) when it is not JSON.
pub fn plugin_configuration(plugin: &str, ignored: &[(&str, &str)]) -> Option<serde_json::Value> {
    let raw = abi::buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut json = if raw.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&raw) {
            Ok(json) => json,
            Err(err) => {
                log::error!("{plugin}: configuration is not valid JSON: {err}");
                return None;
            }
        }
    };
    for (key, why) in crate::rules::strip_ignored_keys(&mut json, ignored) {
        log::warn!("{plugin}: config key `{key}` is ignored: {why}");
    }
    Some(json)
}

/// The `_rules_` config for the current request, `None` when no rule and no global config
/// apply. Reads only what the rules match on: a property read costs about as much as a plugin's
/// own work on a small request, and most configs have no rules at all.
pub fn request_rule<T>(rules: &crate::rules::RuleSet<T>) -> Option<std::rc::Rc<T>> {
    let read = |uses: bool, read: fn() -> String| if uses { read() } else { String::new() };
    let route = read(rules.uses_route(), route_name);
    let cluster = read(rules.uses_service(), cluster_name);
    let host = read(rules.uses_host(), || {
        request_header(":authority").unwrap_or_default()
    });
    rules.get(&crate::rules::RequestKeys {
        route: &route,
        host: &host,
        service: &cluster,
    })
}

/// The name of the request's route (`xds.route_name`), empty when unknown.
pub fn route_name() -> String {
    property_string(&["xds", "route_name"]).unwrap_or_default()
}

/// The name of the upstream cluster the route chose (`xds.cluster_name`), empty when unknown.
pub fn cluster_name() -> String {
    property_string(&["xds", "cluster_name"]).unwrap_or_default()
}

/// Reads a property such as `xds.route_name`; `None` when absent or unreadable.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    abi::property(path).ok().flatten()
}

pub fn property_string(path: &[&str]) -> Option<String> {
    property(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Integer properties come back as 8-byte little-endian.
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes = property(path)?;
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

/// Sets filter state `wasm.<name>` (readable in access logs as `%FILTER_STATE(wasm.<name>:PLAIN)%`).
pub fn set_filter_state(name: &str, value: &[u8]) -> Result<(), u32> {
    match abi::set_property(&[name], value) {
        abi::OK => Ok(()),
        status => Err(status),
    }
}

/// A request header (`None` when absent, unreadable in this phase, or not UTF-8).
pub fn request_header(name: &str) -> Option<String> {
    header(MapType::HttpRequestHeaders, name)
}

pub fn response_header(name: &str) -> Option<String> {
    header(MapType::HttpResponseHeaders, name)
}

/// A header of the response to the callout whose `on_http_call_response` is running.
pub fn callout_header(name: &str) -> Option<String> {
    header(MapType::HttpCallResponseHeaders, name)
}

fn header(map: MapType, name: &str) -> Option<String> {
    let bytes = abi::header(map, name).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

/// Sets (or with `None` removes) a request header; never adds a second value.
pub fn set_request_header(name: &str, value: Option<&str>) {
    abi::set_header(MapType::HttpRequestHeaders, name, value.map(str::as_bytes));
}

pub fn set_response_header(name: &str, value: Option<&str>) {
    abi::set_header(MapType::HttpResponseHeaders, name, value.map(str::as_bytes));
}

/// All request headers in one host call; values that are not UTF-8 are decoded lossily.
pub fn request_headers() -> Vec<(String, String)> {
    abi::headers(MapType::HttpRequestHeaders).unwrap_or_default()
}

/// All response headers in one host call (cheaper than one call per header).
pub fn response_headers() -> Vec<(String, String)> {
    abi::headers(MapType::HttpResponseHeaders).unwrap_or_default()
}

/// Response headers read in one host call, looked up by name.
pub struct ResponseHeaders(Vec<(String, String)>);

impl ResponseHeaders {
    /// All response headers (one host call: cheaper than one per header).
    pub fn read() -> Self {
        ResponseHeaders(response_headers())
    }

    /// The first value of a (lower-case) header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in order.
    pub fn all(&self) -> &[(String, String)] {
        &self.0
    }

    /// `:status`, or 0 when unreadable.
    pub fn status(&self) -> u16 {
        self.get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Answers the request from the plugin (status, headers, body).
pub fn send_response(status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let status = abi::send_local_response(status as u32, headers, body);
    if status != abi::OK {
        log::warn!("could not send a local response: host status {status}");
    }
}

/// Resumes a request paused in a callback (after a callout answered).
pub fn resume_request() {
    abi::continue_stream(0);
}

pub fn resume_response() {
    abi::continue_stream(1);
}

/// Acts on the stream `context_id` from its root context (a timer, a callout the root sent):
/// the host calls that follow apply to that stream. `false` when the stream is gone.
pub fn set_effective_context(context_id: u32) -> bool {
    abi::set_effective_context(context_id) == abi::OK
}

/// Sends a callout. `Err` means Envoy refused it at once (unknown cluster, no healthy host)
/// and no `on_http_call_response` will come: treat it like an unreachable service.
pub fn dispatch(callout: &crate::callout::Callout) -> Result<u32, String> {
    hostcalls::dispatch_http_call(
        &callout.cluster,
        callout.all_headers(),
        Some(&callout.body),
        Vec::new(),
        callout.timeout,
    )
    .map_err(|status| format!("cannot call cluster {}: {status:?}", callout.cluster))
}

/// The response of the callout whose `on_http_call_response` is running.
pub fn callout_response(body_size: usize) -> crate::callout::Outcome {
    let status = callout_header(":status").and_then(|s| s.parse().ok());
    let body = abi::buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    crate::callout::Outcome::classify(status, body)
}

/// A value in Envoy shared data (all workers of one Envoy) and its CAS token.
pub fn shared_get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Updates a shared-data value with compare-and-swap, retrying when another worker wrote in
/// between. `update` gets the current value and returns the new one (or `None` to leave it).
/// Returns the value written, or `None` if nothing was written.
pub fn shared_update(
    key: &str,
    mut update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    for _ in 0..16 {
        let (current, cas) = shared_get(key);
        let next = update(current.as_deref())?;
        match hostcalls::set_shared_data(key, Some(&next), cas) {
            Ok(()) => return Some(next),
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log::warn!("shared data {key}: {status:?}");
                return None;
            }
        }
    }
    log::warn!("shared data {key}: gave up after repeated concurrent updates");
    None
}

/// Milliseconds since the epoch from the proxy's clock.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Replaces `size` bytes at `start` of the response body. Envoy 1.40 accepts only `start == 0`
/// (replace a prefix) and `start >= len` (append); anything else is an error, not a panic.
pub fn set_response_body(start: usize, size: usize, data: &[u8]) -> Result<(), u32> {
    set_body(BufferType::HttpResponseBody, start, size, data)
}

pub fn set_request_body(start: usize, size: usize, data: &[u8]) -> Result<(), u32> {
    set_body(BufferType::HttpRequestBody, start, size, data)
}

fn set_body(buffer: BufferType, start: usize, size: usize, data: &[u8]) -> Result<(), u32> {
    match abi::set_buffer(buffer, start, size, data) {
        abi::OK => Ok(()),
        status => Err(status),
    }
}

pub fn response_body(size: usize) -> Option<Vec<u8>> {
    abi::buffer(BufferType::HttpResponseBody, 0, size)
        .ok()
        .flatten()
}

/// `len` bytes of the response body from `start` (in a body callback, or while it is paused).
pub fn response_body_range(start: usize, len: usize) -> Option<Vec<u8>> {
    abi::buffer(BufferType::HttpResponseBody, start, len)
        .ok()
        .flatten()
}

pub fn request_body(size: usize) -> Option<Vec<u8>> {
    abi::buffer(BufferType::HttpRequestBody, 0, size)
        .ok()
        .flatten()
}

/// Envoy metrics, defined on first use and cached per series (one label combination, see
/// [`crate::metrics::series_prefix`]): a request costs one lookup, not one per metric.
///
/// Counters are summed in the VM and written to Envoy by [`Metrics::flush`] (call it from
/// `on_tick`): a host call costs far more than an addition, and a dozen of them per request
/// showed in throughput. Histograms need every sample and are recorded at once.
///
/// The number of series per worker is capped ([`crate::metrics::CappedSeries`]): past it,
/// samples of new series are dropped, counted in `<owner>.metric.series_dropped` and logged.
pub struct Metrics {
    owner: &'static str,
    series: crate::metrics::CappedSeries<Series>,
    /// The id of the dropped-sample counter, once defined.
    dropped: Option<u32>,
    /// Dropped samples already written to it.
    dropped_written: u64,
}

/// The metrics of one series, by metric name.
pub struct Series {
    prefix: String,
    metrics: Vec<Metric>,
}

struct Metric {
    name: &'static str,
    id: u32,
    /// Counter increments not yet written to Envoy.
    pending: u64,
}

impl Series {
    pub fn counter(&mut self, metric: &'static str, add: u64) {
        if let Some(m) = self.metric(MetricType::Counter, metric) {
            m.pending += add;
        }
    }

    pub fn histogram(&mut self, metric: &'static str, value: u64) {
        if let Some(m) = self.metric(MetricType::Histogram, metric) {
            let _ = hostcalls::record_metric(m.id, value);
        }
    }

    fn metric(&mut self, kind: MetricType, name: &'static str) -> Option<&mut Metric> {
        let index = match self.metrics.iter().position(|m| m.name == name) {
            Some(index) => index,
            None => {
                let id =
                    hostcalls::define_metric(kind, &crate::metrics::stat_name(&self.prefix, name))
                        .ok()?;
                self.metrics.push(Metric {
                    name,
                    id,
                    pending: 0,
                });
                self.metrics.len() - 1
            }
        };
        self.metrics.get_mut(index)
    }

    fn flush(&mut self) {
        for m in self.metrics.iter_mut().filter(|m| m.pending > 0) {
            let _ = hostcalls::increment_metric(m.id, m.pending as i64);
            m.pending = 0;
        }
    }
}

impl Metrics {
    /// Metrics of the plugin `owner` (the first part of its dropped-sample counter's name).
    pub fn new(owner: &'static str, max_series: usize) -> Self {
        Metrics {
            owner,
            series: crate::metrics::CappedSeries::new(owner, max_series),
            dropped: None,
            dropped_written: 0,
        }
    }

    /// The series for `prefix`; `None` once the cap is reached and the series is new.
    pub fn series(&mut self, prefix: &str) -> Option<&mut Series> {
        self.series.get_or_create(prefix, || Series {
            prefix: prefix.to_string(),
            metrics: Vec::new(),
        })
    }

    /// Writes the summed counter increments to Envoy.
    pub fn flush(&mut self) {
        self.series.values_mut().for_each(Series::flush);
        let unwritten = self.series.dropped() - self.dropped_written;
        if unwritten > 0 {
            if self.dropped.is_none() {
                let name = crate::metrics::dropped_stat_name(self.owner);
                self.dropped = hostcalls::define_metric(MetricType::Counter, &name).ok();
            }
            if let Some(id) = self.dropped {
                let _ = hostcalls::increment_metric(id, unwritten as i64);
                self.dropped_written = self.series.dropped();
            }
        }
    }
}

/// How often plugins write summed counters to Envoy.
pub const METRICS_FLUSH_PERIOD: Duration = Duration::from_millis(500);
