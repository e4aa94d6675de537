//! Metric names with labels encoded the way Envoy's stats tags expect, and the cap on how many
//! label combinations (series) a plugin creates.
//!
//! Envoy stats have no labels of their own: a name such as
//! `route.chat.upstream.openai.model.gpt-4o.consumer.alice.metric.input_token` is split into
//! labels by `stats_config.stats_tags` regexes (shipped in `envoy-configs/`), which take the
//! value between two dots. So a value never contains the separator `.`: it becomes `_`
//! (`gpt-4.1` is labelled `gpt-4_1`; logs keep the true name), as does everything else outside
//! a safe character set, and a request can never inject another label or book on another
//! series (a model `m.consumer.victim.metric.x` would otherwise count on consumer `victim`).

use std::collections::HashMap;

/// Longest label value kept; longer values are cut.
pub const MAX_LABEL_LEN: usize = 96;

/// Builds `k1.v1.k2.v2.` (the part of a name before `metric.<name>`), values sanitised.
pub fn series_prefix(labels: &[(&str, &str)]) -> String {
    let mut prefix = String::with_capacity(96);
    for (key, value) in labels {
        prefix.push_str(key);
        prefix.push('.');
        push_label(&mut prefix, value);
        prefix.push('.');
    }
    prefix
}

/// The full stat name of `metric` in the series `prefix`.
pub fn stat_name(prefix: &str, metric: &str) -> String {
    format!("{prefix}metric.{metric}")
}

/// Characters a label value keeps; Envoy 1.40 keeps each of them in stat names and in its
/// Prometheus output, and none of them is the name separator `.`.
fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '/' | '@' | '+')
}

/// Appends a sanitised label value: empty becomes `unknown`, unsafe characters `_`.
pub fn push_label(out: &mut String, value: &str) {
    let value = value.trim();
    if value.is_empty() {
        out.push_str("unknown");
    } else if value.len() <= MAX_LABEL_LEN && value.chars().all(is_safe) {
        out.push_str(value);
    } else {
        out.extend(
            value
                .chars()
                .take(MAX_LABEL_LEN)
                .map(|c| if is_safe(c) { c } else { '_' }),
        );
    }
}

pub fn label(value: &str) -> String {
    let mut out = String::new();
    push_label(&mut out, value);
    out
}

/// The stat name of the counter of samples a plugin (`owner`, e.g. `ai_cache`) dropped because
/// its series cap was reached.
pub fn dropped_stat_name(owner: &str) -> String {
    format!("{owner}.metric.series_dropped")
}

/// Series by name prefix, at most `max_series` of them: label values come from requests, and a
/// flood of new model or consumer names must not grow the proxy's stats without bound. Past the
/// cap, samples of new series are dropped and counted ([`CappedSeries::dropped`]); known series
/// keep counting.
pub struct CappedSeries<T> {
    /// Who logs a warning when samples are dropped.
    owner: &'static str,
    series: HashMap<String, T>,
    max_series: usize,
    dropped: u64,
}

impl<T> CappedSeries<T> {
    pub fn new(owner: &'static str, max_series: usize) -> Self {
        CappedSeries {
            owner,
            series: HashMap::new(),
            max_series,
            dropped: 0,
        }
    }

    /// The series for `prefix`, made by `create` on first use; `None` (and one more dropped
    /// sample, logged now and then) when it is new and the cap is reached.
    pub fn get_or_create(&mut self, prefix: &str, create: impl FnOnce() -> T) -> Option<&mut T> {
        if !self.series.contains_key(prefix) {
            if self.series.len() >= self.max_series {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    log::warn!(
                        "{}: metric series cap of {} reached; {} samples dropped",
                        self.owner,
                        self.max_series,
                        self.dropped
                    );
                }
                return None;
            }
            self.series.insert(prefix.to_string(), create());
        }
        self.series.get_mut(prefix)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.series.values_mut()
    }

    /// Samples dropped because the cap was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn builds_higress_style_names() {
        let prefix = series_prefix(&[
            ("route", "chat"),
            ("upstream", "outbound|443||api.openai.com"),
            ("model", "gpt-3.5-turbo"),
        ]);
        assert_eq!(
            stat_name(&prefix, "input_token"),
            "route.chat.upstream.outbound_443__api_openai_com.model.gpt-3_5-turbo.metric.input_token"
        );
    }

    #[test]
    fn a_value_never_contains_the_name_separator() {
        let forged = "gpt-4o-mini.consumer.victim-bob.metric.x";
        let prefix = series_prefix(&[("model", forged), ("consumer", "attacker")]);
        assert_eq!(
            prefix,
            "model.gpt-4o-mini_consumer_victim-bob_metric_x.consumer.attacker."
        );
        // Every value is one dot-free segment: the stats_tags regexes take it whole.
        for value in [forged, ".", "a..b", " .x. ", "gpt-4.1"] {
            assert!(!label(value).contains('.'), "{value}");
        }
        assert_eq!(label("gpt-4.1"), "gpt-4_1");
    }

    #[test]
    fn series_past_the_cap_are_dropped_and_counted() {
        let mut series: CappedSeries<u64> = CappedSeries::new("test", 2);
        for prefix in ["a.", "b.", "c.", "d.", "a."] {
            if let Some(n) = series.get_or_create(prefix, || 0) {
                *n += 1;
            }
        }
        assert_eq!(series.dropped(), 2);
        let mut counts: Vec<u64> = series.values_mut().map(|n| *n).collect();
        counts.sort();
        assert_eq!(counts, [1, 2], "known series keep counting past the cap");
        assert!(CappedSeries::<u64>::new("test", 0)
            .get_or_create("a.", || 0)
            .is_none());
    }

    #[test]
    fn label_values_cannot_inject_or_explode() {
        assert_eq!(label(""), "unknown");
        assert_eq!(label("a b\n{x}"), "a_b__x_");
        assert_eq!(label(&"m".repeat(500)).len(), MAX_LABEL_LEN);
        assert_eq!(label("模型"), "__");
    }
}
