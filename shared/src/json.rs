//! JSON parsing whose errors name the offending field (`messages[1].content`), for 400s that
//! tell a client what to fix and config errors that tell an operator where to look.
//!
//! serde_json reports where a parse failed as a line and column; this module walks the document
//! up to that point to say which field it was in. A few hundred bytes of code instead of a
//! path-tracking wrapper around every deserializer (which doubled the deserialization code in
//! the wasm binaries).

use serde::de::DeserializeOwned;

/// A parse error: the field it concerns (empty for the whole document) and serde's message
/// without its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub path: String,
    pub message: String,
    /// The document is not JSON at all (as opposed to JSON of the wrong shape).
    pub syntax: bool,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Parses `input`; on failure says which field failed and why.
pub fn parse<T: DeserializeOwned>(input: &[u8]) -> Result<T, JsonError> {
    serde_json::from_slice(input).map_err(|e| explain(input, &e))
}

/// Turns a serde_json error on `input` into a [`JsonError`].
pub fn explain(input: &[u8], error: &serde_json::Error) -> JsonError {
    let full = error.to_string();
    // serde_json appends " at line L column C"; the position is reported separately.
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    if error.is_syntax() || error.is_eof() {
        return JsonError {
            path: String::new(),
            message,
            syntax: true,
        };
    }
    let offset = byte_offset(input, error.line(), error.column());
    let mut frames = frames_at(input, offset);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        // Reported at the end of the object that lacks the field: name the field itself.
        if let Some(Frame::Object(key)) = frames.last_mut() {
            *key = Some(field.to_string());
        }
        return JsonError {
            path: render(&frames),
            message: "field required".into(),
            syntax: false,
        };
    }
    if message.starts_with("unknown field `") {
        if let Some(Frame::Object(key)) = frames.last_mut() {
            *key = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next())
                .map(str::to_string);
        }
    }
    JsonError {
        path: render(&frames),
        message,
        syntax: false,
    }
}

fn byte_offset(input: &[u8], line: usize, column: usize) -> usize {
    if line == 0 {
        return input.len();
    }
    let mut start = 0;
    for _ in 1..line {
        match input[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start += i + 1,
            None => break,
        }
    }
    (start + column.saturating_sub(1)).min(input.len())
}

#[derive(Debug)]
enum Frame {
    /// An object and the key whose value is being read, if any.
    Object(Option<String>),
    /// An array and the index being read.
    Array(usize),
}

/// The containers open at `offset`, outermost first.
fn frames_at(input: &[u8], offset: usize) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut expecting_key = false;
    let mut i = 0;
    while i < offset.min(input.len()) {
        match input[i] {
            b'{' => {
                frames.push(Frame::Object(None));
                expecting_key = true;
            }
            b'[' => {
                frames.push(Frame::Array(0));
                expecting_key = false;
            }
            b'}' | b']' => {
                frames.pop();
                expecting_key = false;
            }
            b',' => match frames.last_mut() {
                Some(Frame::Array(index)) => *index += 1,
                Some(Frame::Object(key)) => {
                    *key = None;
                    expecting_key = true;
                }
                None => {}
            },
            b'"' => {
                let end = string_end(input, i);
                if expecting_key {
                    if let Some(Frame::Object(key)) = frames.last_mut() {
                        let raw = &input[i + 1..end.saturating_sub(1).max(i + 1)];
                        *key = Some(
                            serde_json::from_slice::<String>(&input[i..end])
                                .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned()),
                        );
                    }
                    expecting_key = false;
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    frames
}

/// Index just past the string starting at `start` (a `"`).
fn string_end(input: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    input.len()
}

fn render(frames: &[Frame]) -> String {
    let mut path = String::new();
    for frame in frames {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

/// Whether `key` (with its quotes, e.g. `"\"usage\""`) appears in the JSON text with a value
/// other than `null`: a cheap test before parsing a streamed event. Quotes inside JSON strings
/// are escaped, so a match is always a real key.
pub fn has_value(json: &str, key: &str) -> bool {
    json.match_indices(key).any(|(at, _)| {
        let rest = json[at + key.len()..].trim_start();
        rest.strip_prefix(':')
            .is_some_and(|value| !value.trim_start().starts_with("null"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_with_a_value_count() {
        assert!(!has_value(
            r#"{"finish_reason":null,"usage": null}"#,
            "\"finish_reason\""
        ));
        assert!(has_value(
            r#"{"finish_reason" : "stop"}"#,
            "\"finish_reason\""
        ));
        assert!(!has_value(r#"{"content":"\"usage\": 1"}"#, "\"usage\""));
        assert!(has_value(r#"{"usage":{"total_tokens":4}}"#, "\"usage\""));
    }
    use serde::Deserialize;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Message {
        role: String,
        content: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Request {
        model: String,
        messages: Vec<Message>,
        #[serde(default)]
        stream: Option<bool>,
        #[serde(default)]
        options: Option<Options>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Options {
        max: u32,
    }

    fn path_of(input: &str) -> (String, String) {
        let err = parse::<Request>(input.as_bytes()).unwrap_err();
        (err.path, err.message)
    }

    #[test]
    fn names_the_field_of_a_wrong_type() {
        assert_eq!(
            path_of(r#"{"model":"m","messages":[{"role":"user","content":42}]}"#).0,
            "messages[0].content"
        );
        assert_eq!(
            path_of("{\n  \"model\": \"m\",\n  \"messages\": [\n    {\"role\": \"user\", \"content\": \"a\"},\n    {\"role\": \"x\", \"content\": [1]}\n  ]\n}").0,
            "messages[1].content"
        );
        assert_eq!(
            path_of(r#"{"model":"m","messages":[],"stream":"yes"}"#).0,
            "stream"
        );
        assert_eq!(
            path_of(r#"{"model":"m","messages":[],"options":{"max":-1}}"#).0,
            "options.max"
        );
        assert_eq!(path_of(r#"{"model":"m","messages":"hi"}"#).0, "messages");
        assert_eq!(
            path_of(r#"{"model":"a \" , [ {","messages":7}"#).0,
            "messages",
            "strings are skipped whole"
        );
    }

    #[test]
    fn names_missing_and_unknown_fields() {
        assert_eq!(
            path_of(r#"{"messages":[]}"#),
            ("model".into(), "field required".into())
        );
        assert_eq!(
            path_of(r#"{"model":"m","messages":[{"role":"user"}]}"#),
            ("messages[0].content".into(), "field required".into())
        );
        let (path, message) = path_of(r#"{"model":"m","messages":[],"strem":true}"#);
        assert_eq!(path, "strem");
        assert!(message.starts_with("unknown field `strem`"), "{message}");
    }

    #[test]
    fn syntax_errors_have_no_path() {
        let err = parse::<Request>(b"{\"model\": ").unwrap_err();
        assert!(err.syntax && err.path.is_empty());
        assert!(!err.message.contains(" at line "), "{}", err.message);
        let err = parse::<Request>(b"\"text\"").unwrap_err();
        assert!(!err.syntax);
        assert_eq!(err.path, "");
        assert!(
            err.message.starts_with("invalid type: string"),
            "{}",
            err.message
        );
    }
}
