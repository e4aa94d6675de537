//! The few proxy-wasm host calls every plugin needs, wrapped so that a failed call is a value,
//! never a panic (the SDK's context methods unwrap, and one panic takes the VM down).

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MetricType, Status};
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

/// Reads a property such as `xds.route_name`; `None` when absent or unreadable.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
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
pub fn set_filter_state(name: &str, value: &[u8]) -> Result<(), Status> {
    hostcalls::set_property(vec![name], Some(value))
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
pub fn set_response_body(start: usize, size: usize, data: &[u8]) -> Result<(), Status> {
    hostcalls::set_buffer(BufferType::HttpResponseBody, start, size, data)
}

pub fn set_request_body(start: usize, size: usize, data: &[u8]) -> Result<(), Status> {
    hostcalls::set_buffer(BufferType::HttpRequestBody, start, size, data)
}

pub fn response_body(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
        .ok()
        .flatten()
}

pub fn request_body(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
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
/// The number of series is capped: label values come from requests, and a flood of new model
/// names must not grow the proxy's stats without bound.
pub struct Metrics {
    series: HashMap<String, Series>,
    max_series: usize,
    dropped: u64,
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
    pub fn new(max_series: usize) -> Self {
        Metrics {
            series: HashMap::new(),
            max_series,
            dropped: 0,
        }
    }

    /// The series for `prefix`; `None` once the cap is reached and the series is new.
    pub fn series(&mut self, prefix: &str) -> Option<&mut Series> {
        if !self.series.contains_key(prefix) {
            if self.series.len() >= self.max_series {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    log::warn!(
                        "metric series cap of {} reached; {} samples dropped",
                        self.max_series,
                        self.dropped
                    );
                }
                return None;
            }
            let series = Series {
                prefix: prefix.to_string(),
                metrics: Vec::new(),
            };
            self.series.insert(prefix.to_string(), series);
        }
        self.series.get_mut(prefix)
    }

    /// Writes the summed counter increments to Envoy.
    pub fn flush(&mut self) {
        self.series.values_mut().for_each(Series::flush);
    }

    /// Samples not recorded because the series cap was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// How often plugins write summed counters to Envoy.
pub const METRICS_FLUSH_PERIOD: Duration = Duration::from_millis(500);
