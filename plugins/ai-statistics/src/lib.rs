//! ai-statistics: meters every LLM request passing through Envoy (model, consumer, route,
//! upstream, status, tokens, latency, time to first token) into Envoy metrics and a log record.
//! It observes only: every byte is forwarded unchanged and nothing is held back.

pub mod config;
pub mod record;

use aigw_shared::body::BodyBuffer;
use aigw_shared::host::{self, Metrics};
use aigw_shared::meter::{RequestInfo, ResponseMeter};
use aigw_shared::rules::RuleSet;
use config::Config;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use record::{Kind, Record};
use std::cell::RefCell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(StatsRoot::default()) });
}}

#[derive(Default)]
struct StatsRoot {
    rules: Option<Rc<RuleSet<Config>>>,
    metrics: Option<Rc<RefCell<Metrics>>>,
}

impl Context for StatsRoot {
    /// The plugin is being replaced (a swap) or Envoy stops: write the counters summed since
    /// the last tick, or they would be lost with the VM.
    fn on_done(&mut self) -> bool {
        if let Some(metrics) = &self.metrics {
            metrics.borrow_mut().flush();
        }
        true
    }
}

impl RootContext for StatsRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(rules) = host::load_rules_ignoring(
            "ai-statistics",
            &config::IGNORED_HIGRESS_KEYS,
            Config::from_map,
        ) else {
            return false;
        };
        let max_series = rules
            .global()
            .map_or(Config::default().max_metric_series, |c| c.max_metric_series);
        self.rules = Some(Rc::new(rules));
        self.metrics = Some(Rc::new(RefCell::new(Metrics::new(
            "ai_statistics",
            max_series,
        ))));
        let _ = hostcalls::set_tick_period(host::METRICS_FLUSH_PERIOD);
        true
    }

    fn on_tick(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.borrow_mut().flush();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(StatsStream {
            rules: self.rules.clone()?,
            metrics: self.metrics.clone()?,
            state: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct StatsStream {
    rules: Rc<RuleSet<Config>>,
    metrics: Rc<RefCell<Metrics>>,
    /// `None` when no rule applies to this request, or once the record is written.
    state: Option<Metering>,
}

/// What is known about one request while it is in flight.
struct Metering {
    config: Rc<Config>,
    started_ms: u64,
    record: Record,
    request_body: Option<BodyBuffer>,
    request: RequestInfo,
    response: Option<ResponseMeter>,
}

impl Context for StatsStream {}

impl HttpContext for StatsStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = host::request_rule(&self.rules) else {
            return Action::Continue;
        };
        if config.strip_accept_encoding {
            host::set_request_header("accept-encoding", None);
        }
        let consumer = self.header(&config.consumer_header).unwrap_or_default();
        self.state = Some(Metering {
            started_ms: host::now_ms(),
            request_body: (!end_of_stream).then(|| BodyBuffer::new(config.max_body_bytes)),
            record: Record {
                route: host::route_name(),
                cluster: host::cluster_name(),
                consumer,
                ..Record::default()
            },
            request: RequestInfo::default(),
            response: None,
            config,
        });
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(state) = self.state.as_mut() else {
            return Action::Continue;
        };
        if let Some(buffer) = state.request_body.as_mut() {
            let chunk = if body_size > 0 {
                host::request_body(body_size).unwrap_or_default()
            } else {
                Vec::new()
            };
            if end_of_stream && buffer.is_empty() {
                // The whole body in one chunk (the usual case): read it without copying.
                state.request = RequestInfo::from_body(&chunk);
            } else {
                buffer.push(&chunk);
                if end_of_stream {
                    state.request = buffer.get().map(RequestInfo::from_body).unwrap_or_default();
                }
            }
            if end_of_stream {
                state.request_body = None;
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(state) = self.state.as_mut() {
            let headers = host::ResponseHeaders::read();
            state.record.status = headers.status();
            state.response = Some(ResponseMeter::new(
                headers.get("content-type").unwrap_or(""),
                state.config.max_body_bytes,
            ));
        }
        if end_of_stream {
            self.finish();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(state) = self.state.as_mut() else {
            return Action::Continue;
        };
        if let Some(meter) = state.response.as_mut().filter(|m| m.wants_body()) {
            if body_size > 0 {
                let chunk = host::response_body(body_size).unwrap_or_default();
                if meter.observe(&chunk) && state.record.first_token_ms.is_none() {
                    state.record.first_token_ms =
                        Some(host::now_ms().saturating_sub(state.started_ms));
                }
            }
        }
        if end_of_stream {
            self.finish();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.finish();
    }
}

impl StatsStream {
    fn header(&self, name: &str) -> Option<String> {
        host::request_header(name)
    }

    /// Writes the log record and the metrics, once per request.
    fn finish(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        let mut record = std::mem::take(&mut state.record);
        record.duration_ms = host::now_ms().saturating_sub(state.started_ms);
        record.stream = state.request.stream;
        let mut response_model = None;
        if let Some(meter) = state.response.as_mut() {
            record.usage = meter.finish();
            record.stream |= meter.is_stream();
            response_model = meter.model().map(str::to_string);
        }
        // Label by the model the client asked for; the provider's name for it is the fallback.
        record.model = state
            .request
            .model
            .take()
            .or(response_model)
            .unwrap_or_default();
        if !record.stream {
            record.first_token_ms = None;
        }
        if let Err(status) =
            host::set_filter_state(&state.config.log_key, record.log_json().as_bytes())
        {
            log::debug!("ai-statistics: could not set filter state: host status {status}");
        }
        if state.config.enable_metrics {
            let mut metrics = self.metrics.borrow_mut();
            let series = record.series();
            if let Some(requests) = metrics.series(&record.status_series(&series)) {
                requests.counter("requests", 1);
            }
            if let Some(series) = metrics.series(&series) {
                for sample in record.samples() {
                    match sample.kind {
                        Kind::Counter => series.counter(sample.metric, sample.value),
                        Kind::Histogram => series.histogram(sample.metric, sample.value),
                    }
                }
            }
        }
    }
}
