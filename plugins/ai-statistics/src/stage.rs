//! The metering stage: what a request asked for, what the response reported and how long it
//! took, written as a log record and metric samples when the response ends.

use crate::config::{Config, IGNORED_HIGRESS_KEYS};
use crate::record::{Kind, Record};
use aigw_shared::meter::{RequestInfo, ResponseMeter};
use aigw_shared::rules::RuleSet;
use aigw_shared::stage::{
    rule_for, BodyUse, Configured, Cx, Effects, Env, Plugin, RequestBody, ResponseChunk,
    ResponseHead, Stage, Step,
};
use serde_json::Value;
use std::rc::Rc;

#[derive(Default)]
pub struct Statistics {
    rules: Option<Rc<RuleSet<Config>>>,
}

impl Plugin for Statistics {
    fn name(&self) -> &'static str {
        "ai-statistics"
    }

    fn metrics_owner(&self) -> &'static str {
        "ai_statistics"
    }

    fn ignored_keys(&self) -> &'static [(&'static str, &'static str)] {
        &IGNORED_HIGRESS_KEYS
    }

    fn configure(&mut self, config: &Value) -> Result<Configured, String> {
        let rules = RuleSet::parse(config, Config::from_map).map_err(|e| e.to_string())?;
        let configured = Configured {
            rules: rules.rule_count(),
            max_metric_series: rules
                .global()
                .map_or(Config::default().max_metric_series, |c| c.max_metric_series),
            tick: None,
        };
        self.rules = Some(Rc::new(rules));
        Ok(configured)
    }

    fn stage(&self, env: &dyn Env) -> Option<Box<dyn Stage>> {
        let config = rule_for(self.rules.as_ref()?, env)?;
        Some(Box::new(Metering::new(config, env)))
    }
}

/// What is known about one request while it is in flight.
pub struct Metering {
    config: Rc<Config>,
    started_ms: u64,
    record: Record,
    reads_body: bool,
    request: RequestInfo,
    response: Option<ResponseMeter>,
    written: bool,
}

impl Metering {
    fn new(config: Rc<Config>, env: &dyn Env) -> Metering {
        Metering {
            started_ms: env.now_ms(),
            record: Record {
                route: env.route_name(),
                cluster: env.cluster_name(),
                consumer: env
                    .request_header(&config.consumer_header)
                    .unwrap_or_default(),
                ..Record::default()
            },
            reads_body: false,
            request: RequestInfo::default(),
            response: None,
            written: false,
            config,
        }
    }

    /// Writes the log record and the metrics, once per request.
    fn finish(&mut self, env: &dyn Env, effects: &mut Effects) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        let mut record = std::mem::take(&mut self.record);
        record.duration_ms = env.now_ms().saturating_sub(self.started_ms);
        record.stream = self.request.stream;
        let mut response_model = None;
        if let Some(meter) = self.response.as_mut() {
            record.usage = meter.finish();
            record.stream |= meter.is_stream();
            response_model = meter.model().map(str::to_string);
        }
        // Label by the model the client asked for; the provider's name for it is the fallback.
        record.model = self
            .request
            .model
            .take()
            .or(response_model)
            .unwrap_or_default();
        if !record.stream {
            record.first_token_ms = None;
        }
        effects.set_filter_state(&self.config.log_key, record.log_json().into_bytes());
        if self.config.enable_metrics {
            let series = record.series();
            effects.count(&record.status_series(&series), "requests", 1);
            for sample in record.samples() {
                match sample.kind {
                    Kind::Counter => effects.count(&series, sample.metric, sample.value),
                    Kind::Histogram => effects.histogram(&series, sample.metric, sample.value),
                }
            }
        }
    }
}

impl Stage for Metering {
    fn on_request_headers(&mut self, cx: &mut Cx, end_of_stream: bool) -> Step {
        if self.config.strip_accept_encoding {
            cx.effects.set_request_header("accept-encoding", None);
        }
        self.reads_body = !end_of_stream;
        Step::Continue
    }

    fn request_body_use(&self) -> BodyUse {
        if self.reads_body {
            BodyUse::Read {
                max_bytes: self.config.max_body_bytes,
            }
        } else {
            BodyUse::None
        }
    }

    fn on_request_body(&mut self, _cx: &mut Cx, body: &mut RequestBody) -> Step {
        if let Some(bytes) = body.bytes(self.config.max_body_bytes) {
            self.request = RequestInfo::from_body(bytes);
        }
        Step::Continue
    }

    fn on_response_headers(&mut self, _cx: &mut Cx, head: &ResponseHead, _end: bool) -> Step {
        self.record.status = head.status();
        self.response = Some(ResponseMeter::new(
            head.content_type(),
            self.config.max_body_bytes,
        ));
        Step::Continue
    }

    fn wants_response_body(&self) -> bool {
        !self.written
            && self
                .response
                .as_ref()
                .is_some_and(ResponseMeter::wants_body)
    }

    fn on_response_body(&mut self, cx: &mut Cx, chunk: &mut ResponseChunk) -> Step {
        if let Some(meter) = self.response.as_mut() {
            if meter.observe(chunk.bytes()) && self.record.first_token_ms.is_none() {
                self.record.first_token_ms = Some(cx.env.now_ms().saturating_sub(self.started_ms));
            }
        }
        Step::Continue
    }

    fn on_response_end(&mut self, cx: &mut Cx) {
        self.finish(cx.env, cx.effects);
    }

    fn on_done(&mut self, cx: &mut Cx) {
        self.finish(cx.env, cx.effects);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::stage::{FakeEnv, MetricKind};
    use serde_json::json;

    fn metering(env: &FakeEnv) -> Box<dyn Stage> {
        let mut plugin = Statistics::default();
        plugin.configure(&json!({})).unwrap();
        plugin.stage(env).expect("the global config applies")
    }

    #[test]
    fn a_streamed_answer_is_logged_and_counted_when_it_ends() {
        let env = FakeEnv::default()
            .with_header("x-mse-consumer", "alice")
            .with_property("xds.route_name", "chat");
        let mut stage = metering(&env);
        let mut effects = Effects::default();
        let mut cx = Cx {
            env: &env,
            effects: &mut effects,
        };
        stage.on_request_headers(&mut cx, false);
        let mut body = RequestBody::new(Some(br#"{"model":"gpt-4o","stream":true}"#.to_vec()), 32);
        stage.on_request_body(&mut cx, &mut body);
        let head = ResponseHead {
            headers: vec![
                (":status".into(), "200".into()),
                ("content-type".into(), "text/event-stream".into()),
            ],
        };
        stage.on_response_headers(&mut cx, &head, false);
        env.advance(40);
        let mut chunk = ResponseChunk::new(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n".to_vec(),
            false,
        );
        assert!(stage.wants_response_body());
        stage.on_response_body(&mut cx, &mut chunk);
        let usage = br#"data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}

data: [DONE]

"#;
        stage.on_response_body(&mut cx, &mut ResponseChunk::new(usage.to_vec(), true));
        assert!(
            effects.filter_state.is_empty(),
            "nothing is written before the end"
        );
        let mut cx = Cx {
            env: &env,
            effects: &mut effects,
        };
        stage.on_response_end(&mut cx);
        stage.on_done(&mut cx);

        let [(key, record)] = &effects.filter_state[..] else {
            panic!("one log record: {:?}", effects.filter_state);
        };
        assert_eq!(key, "ai_log");
        let record: Value = serde_json::from_slice(record).unwrap();
        assert_eq!(record["model"], "gpt-4o");
        assert_eq!(record["consumer"], "alice");
        assert_eq!(record["route"], "chat");
        assert_eq!(record["llm_first_token_duration"], 40);
        assert_eq!(record["input_token"], 7);
        assert_eq!(record["output_token"], 3);
        let counted = |metric: &str| {
            effects
                .metrics
                .iter()
                .filter(|s| s.metric == metric && s.kind == MetricKind::Counter)
                .map(|s| s.value)
                .sum::<u64>()
        };
        assert_eq!(counted("requests"), 1);
        assert_eq!(counted("input_token"), 7);
        assert_eq!(
            effects.request_headers,
            vec![("accept-encoding".into(), None)]
        );
    }

    #[test]
    fn no_rule_no_stage() {
        let mut plugin = Statistics::default();
        plugin
            .configure(&json!({"_rules_": [{"_match_route_": ["other"]}]}))
            .unwrap();
        assert!(plugin.stage(&FakeEnv::default()).is_none());
    }
}
