//! Metric names with labels encoded the way Envoy's stats tags expect.
//!
//! Envoy stats have no labels of their own: a name such as
//! `route.chat.upstream.openai.model.gpt-4o.consumer.alice.metric.input_token` is split into
//! labels by `stats_config.stats_tags` regexes (shipped in `envoy-configs/`). Values keep their
//! dots (`gpt-3.5-turbo`); everything outside a safe character set becomes `_`, so a request can
//! never inject another label.

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

fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@' | '+')
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
            "route.chat.upstream.outbound_443__api.openai.com.model.gpt-3.5-turbo.metric.input_token"
        );
    }

    #[test]
    fn label_values_cannot_inject_or_explode() {
        assert_eq!(label(""), "unknown");
        assert_eq!(label("a b\n{x}"), "a_b__x_");
        assert_eq!(label(&"m".repeat(500)).len(), MAX_LABEL_LEN);
        assert_eq!(label("模型"), "__");
    }
}
