//! Redis commands over Webdis (Redis behind a small HTTP server), the way plugins reach a
//! cluster-wide store: `POST /` with the command as `/`-separated, percent-encoded arguments,
//! and a JSON reply `{"<COMMAND>": <result>}`.

use crate::callout::Callout;
use serde_json::Value;
use std::time::Duration;

/// The request for one Redis command, e.g. `["EVAL", script, "1", key, arg]`.
pub fn command(cluster: &str, args: &[&str], timeout: Duration) -> Callout {
    let body = args
        .iter()
        .map(|a| percent_encode(a))
        .collect::<Vec<_>>()
        .join("/");
    Callout {
        cluster: cluster.to_string(),
        method: "POST",
        path: "/".into(),
        authority: cluster.to_string(),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: body.into_bytes(),
        timeout,
    }
}

/// The result of a command from Webdis's JSON reply. Redis errors come back as
/// `{"CMD": [false, "message"]}`.
pub fn reply(command: &str, body: &[u8]) -> Result<Value, String> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| format!("webdis reply is not JSON ({e})"))?;
    let result = json
        .get(command.to_ascii_uppercase())
        .or_else(|| json.get(command.to_ascii_lowercase()))
        .ok_or_else(|| format!("webdis reply has no {command} result"))?;
    if let Some([Value::Bool(false), Value::String(message)]) = result.as_array().map(Vec::as_slice)
    {
        return Err(format!("redis: {message}"));
    }
    Ok(result.clone())
}

/// Everything but unreserved characters (RFC 3986) escaped: `/` separates arguments.
fn percent_encode(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    for b in arg.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn arguments_are_escaped_so_slashes_cannot_split_them() {
        let c = command(
            "webdis",
            &["SET", "key/with space", "v:1"],
            Duration::from_millis(100),
        );
        assert_eq!(c.body, b"SET/key%2Fwith%20space/v%3A1");
        assert_eq!((c.method, c.path.as_str()), ("POST", "/"));
    }

    #[test]
    fn replies_and_redis_errors() {
        assert_eq!(reply("incrby", br#"{"INCRBY":7}"#).unwrap(), json!(7));
        assert_eq!(reply("EVAL", br#"{"EVAL":[1,2]}"#).unwrap(), json!([1, 2]));
        assert_eq!(
            reply("EVAL", br#"{"EVAL":[false,"ERR syntax"]}"#).unwrap_err(),
            "redis: ERR syntax"
        );
        assert!(reply("GET", b"<html>")
            .unwrap_err()
            .starts_with("webdis reply is not JSON"));
        assert!(reply("GET", br#"{"SET":"OK"}"#).is_err());
    }
}
