//! Canonical JSON text for hashing: object keys sorted at every depth, no whitespace. Two
//! requests that differ only in field order give the same text, whatever order serde_json's map
//! keeps (with its `preserve_order` feature, which another crate of the workspace turns on, it
//! keeps the order of the request).

use serde_json::Value;

/// Appends the canonical text of `value` to `out`.
pub fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The canonical text of `value`.
pub fn text(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"q":1,"p":"x"}],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[{"p":"x","q":1}]},"b":1}"#).unwrap();
        assert_eq!(text(&a), text(&b));
        assert_eq!(text(&a), r#"{"a":{"x":null,"y":[{"p":"x","q":1}]},"b":1}"#);
        // Array order is meaning (the order of messages, of stop sequences): it stays.
        assert_ne!(text(&json!([1, 2])), text(&json!([2, 1])));
        assert_eq!(text(&json!({"k\"": "a\nb"})), r#"{"k\"":"a\nb"}"#);
    }
}
