//! One finished request: its log record and the metric samples it adds.

use aigw_shared::metrics::series_prefix;
pub use aigw_shared::stage::MetricKind as Kind;
use aigw_shared::usage::TokenCounts;
use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub route: String,
    pub cluster: String,
    pub model: String,
    pub consumer: String,
    pub status: u16,
    pub stream: bool,
    pub usage: Option<TokenCounts>,
    pub duration_ms: u64,
    /// Time to the first output token, for streams.
    pub first_token_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub metric: &'static str,
    pub kind: Kind,
    pub value: u64,
}

const fn counter(metric: &'static str, value: u64) -> Sample {
    Sample {
        metric,
        kind: Kind::Counter,
        value,
    }
}

const fn histogram(metric: &'static str, value: u64) -> Sample {
    Sample {
        metric,
        kind: Kind::Histogram,
        value,
    }
}

/// The `ai_log` filter state, with Higress's key names where it has them.
#[derive(Serialize)]
struct LogRecord<'a> {
    model: &'a str,
    consumer: &'a str,
    route: &'a str,
    upstream: &'a str,
    status: u16,
    response_type: &'static str,
    llm_service_duration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_first_token_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_input_token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_token: Option<u64>,
}

impl Record {
    pub fn log_json(&self) -> String {
        let usage = self.usage.as_ref();
        let record = LogRecord {
            model: &self.model,
            consumer: &self.consumer,
            route: &self.route,
            upstream: &self.cluster,
            status: self.status,
            response_type: if self.stream { "stream" } else { "normal" },
            llm_service_duration: self.duration_ms,
            llm_first_token_duration: self.first_token_ms,
            input_token: usage.map(|u| u.input),
            output_token: usage.map(|u| u.output),
            total_token: usage.map(|u| u.total),
            cached_input_token: usage.map(|u| u.cached_input),
            reasoning_token: usage.map(|u| u.reasoning),
        };
        serde_json::to_string(&record).unwrap_or_default()
    }

    /// `route.<r>.upstream.<c>.model.<m>.consumer.<u>.`: the labels of every sample.
    pub fn series(&self) -> String {
        series_prefix(&[
            ("route", &self.route),
            ("upstream", &self.cluster),
            ("model", &self.model),
            ("consumer", &self.consumer),
        ])
    }

    /// The series of the `requests` counter, which adds the status label.
    pub fn status_series(&self, series: &str) -> String {
        format!("{series}status.{}.", self.status)
    }

    /// Higress-compatible counters plus latency histograms, for [`Record::series`].
    pub fn samples(&self) -> Vec<Sample> {
        let mut samples = vec![
            counter("llm_service_duration", self.duration_ms),
            counter("llm_duration_count", 1),
            histogram("request_duration_ms", self.duration_ms),
        ];
        if let Some(ttft) = self.first_token_ms {
            samples.push(counter("llm_first_token_duration", ttft));
            samples.push(counter("llm_stream_duration_count", 1));
            samples.push(histogram("time_to_first_token_ms", ttft));
        }
        if let Some(u) = &self.usage {
            samples.push(counter("input_token", u.input));
            samples.push(counter("output_token", u.output));
            samples.push(counter("total_token", u.total));
            samples.push(counter("cached_input_token", u.cached_input));
            samples.push(counter("reasoning_token", u.reasoning));
        }
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn record() -> Record {
        Record {
            route: "chat".into(),
            cluster: "openai".into(),
            model: "gpt-4o".into(),
            consumer: "alice".into(),
            status: 200,
            stream: true,
            usage: Some(TokenCounts::new(9, 2, 11)),
            duration_ms: 120,
            first_token_ms: Some(30),
        }
    }

    #[test]
    fn log_record_carries_every_value() {
        let log: Value = serde_json::from_str(&record().log_json()).unwrap();
        assert_eq!(log["model"], "gpt-4o");
        assert_eq!(log["consumer"], "alice");
        assert_eq!(log["status"], 200);
        assert_eq!(log["response_type"], "stream");
        assert_eq!(log["input_token"], 9);
        assert_eq!(log["output_token"], 2);
        assert_eq!(log["total_token"], 11);
        assert_eq!(log["llm_first_token_duration"], 30);
        assert_eq!(log["llm_service_duration"], 120);
    }

    #[test]
    fn series_and_samples() {
        let r = record();
        let series = r.series();
        assert_eq!(
            series,
            "route.chat.upstream.openai.model.gpt-4o.consumer.alice."
        );
        assert_eq!(r.status_series(&series), format!("{series}status.200."));
        let samples = r.samples();
        assert!(samples.contains(&counter("input_token", 9)));
        assert!(samples.contains(&counter("output_token", 2)));
        assert!(samples.contains(&histogram("time_to_first_token_ms", 30)));
        assert!(samples.contains(&histogram("request_duration_ms", 120)));
    }

    #[test]
    fn no_usage_no_token_samples_and_no_ttft_for_plain_responses() {
        let r = Record {
            usage: None,
            first_token_ms: None,
            stream: false,
            ..record()
        };
        assert!(r.samples().iter().all(|s| !s.metric.contains("token")));
        let log: Value = serde_json::from_str(&r.log_json()).unwrap();
        assert!(log.get("input_token").is_none());
        assert_eq!(log["response_type"], "normal");
    }
}
