//! Which text of a request or a response gets checked.
//!
//! Requests: the last user message by default, every message with `all`, or the strings a
//! JSON path selects. Responses: the assistant's content (and reasoning) of every choice, or a
//! JSON path. Paths are dotted keys with array indexes, `-1` for the last element and `#` for
//! every element: `messages.-1.content`, `messages.#.content`, `input`.

use aigw_shared::error::ApiError;
use serde::Deserialize;
use serde_json::Value;

/// Which part of a request is the prompt to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptSource {
    LastUser,
    All,
    Path(Vec<String>),
}

/// Parses a dotted path (`messages.-1.content`).
pub fn parse_path(path: &str) -> Vec<String> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The text to check in a JSON request body; a body of the wrong shape is a 400 naming the field.
pub fn prompt_text(body: &Value, source: &PromptSource) -> Result<String, ApiError> {
    let mut out = String::new();
    match source {
        PromptSource::Path(path) => collect_path(body, path, &mut out),
        PromptSource::LastUser | PromptSource::All => {
            match body.get("messages") {
                None | Some(Value::Null) => {}
                Some(Value::Array(messages)) => {
                    let picked: Vec<(usize, &Value)> = match source {
                        PromptSource::LastUser => messages
                            .iter()
                            .enumerate()
                            .rev()
                            .find(|(_, m)| m.get("role").and_then(Value::as_str) == Some("user"))
                            .into_iter()
                            .collect(),
                        _ => messages.iter().enumerate().collect(),
                    };
                    for (i, message) in picked {
                        if !message.is_object() {
                            return Err(field_error(format!("messages[{i}]"), "must be an object"));
                        }
                        append_content(
                            message.get("content"),
                            &format!("messages[{i}].content"),
                            &mut out,
                        )?;
                    }
                }
                Some(_) => return Err(field_error("messages".into(), "must be an array")),
            }
            // Completions, embeddings and moderation-style bodies carry their text here.
            for key in ["prompt", "input"] {
                match body.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => push_text(&mut out, s),
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .for_each(|s| push_text(&mut out, s)),
                    Some(_) => {}
                }
            }
        }
    }
    Ok(out)
}

/// Appends a message's content: a string, or the `text` of its parts.
fn append_content(content: Option<&Value>, field: &str, out: &mut String) -> Result<(), ApiError> {
    match content {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) => {
            push_text(out, s);
            Ok(())
        }
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    push_text(out, text);
                }
            }
            Ok(())
        }
        Some(_) => Err(field_error(
            field.to_string(),
            "must be a string or an array of content parts",
        )),
    }
}

fn field_error(field: String, reason: &str) -> ApiError {
    ApiError::invalid_request(Some(&field), format!("{field}: {reason}"))
}

fn push_text(out: &mut String, text: &str) {
    if text.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(text);
}

/// Appends every string the path selects (strings inside selected arrays or parts too).
pub fn collect_path(value: &Value, path: &[String], out: &mut String) {
    let Some((head, rest)) = path.split_first() else {
        collect_strings(value, out);
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(v) = map.get(head.as_str()) {
                collect_path(v, rest, out);
            }
        }
        Value::Array(items) => {
            if head == "#" {
                items.iter().for_each(|v| collect_path(v, rest, out));
            } else if let Ok(index) = head.parse::<i64>() {
                let index = if index < 0 {
                    items.len() as i64 + index
                } else {
                    index
                };
                if let Some(v) = usize::try_from(index).ok().and_then(|i| items.get(i)) {
                    collect_path(v, rest, out);
                }
            }
        }
        _ => {}
    }
}

fn collect_strings(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => push_text(out, s),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => {
            if let Some(Value::String(text)) = map.get("text") {
                push_text(out, text);
            }
        }
        _ => {}
    }
}

/// The assistant text of a non-streamed completion: content, reasoning and refusal of every
/// choice, or what `path` selects.
pub fn completion_text(body: &Value, path: Option<&[String]>) -> String {
    let mut out = String::new();
    if let Some(path) = path {
        collect_path(body, path, &mut out);
        return out;
    }
    for choice in body
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(message) = choice.get("message") else {
            continue;
        };
        for key in ["reasoning_content", "content", "refusal"] {
            let _ = append_content(message.get(key), key, &mut out);
        }
    }
    out
}

/// What the checks need from one `chat.completion.chunk`, borrowed from the event's data.
#[derive(Debug, Default, Deserialize)]
pub struct ChunkView<'a> {
    #[serde(default, borrow)]
    pub id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(default, borrow)]
    pub choices: Vec<ChoiceView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChoiceView<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(default, borrow)]
    pub delta: DeltaView<'a>,
    #[serde(default, borrow)]
    pub finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeltaView<'a> {
    #[serde(default, borrow)]
    pub content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning_content: Option<std::borrow::Cow<'a, str>>,
}

impl ChunkView<'_> {
    /// The generated text this chunk carries, all choices together.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for choice in &self.choices {
            for part in [&choice.delta.reasoning_content, &choice.delta.content]
                .into_iter()
                .flatten()
            {
                out.push_str(part);
            }
        }
        out
    }

    pub fn finishes(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "question"}]}
        ]})
    }

    #[test]
    fn last_user_message_by_default() {
        assert_eq!(
            prompt_text(&body(), &PromptSource::LastUser).unwrap(),
            "second\nquestion"
        );
        assert_eq!(
            prompt_text(&body(), &PromptSource::All).unwrap(),
            "be brief\nfirst question\nan answer\nsecond\nquestion"
        );
        assert_eq!(
            prompt_text(
                &json!({"input": ["a", "b"], "model": "m"}),
                &PromptSource::LastUser
            )
            .unwrap(),
            "a\nb"
        );
    }

    #[test]
    fn json_paths() {
        let text = |p: &str| prompt_text(&body(), &PromptSource::Path(parse_path(p))).unwrap();
        assert_eq!(text("messages.0.content"), "be brief");
        assert_eq!(text("messages.-2.content"), "an answer");
        assert_eq!(text("messages.#.role"), "system\nuser\nassistant\nuser");
        assert_eq!(text("messages.-1.content"), "second\nquestion");
        assert_eq!(text("nothing.here"), "");
        assert_eq!(text("messages.99.content"), "");
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let err = prompt_text(&json!({"messages": "hi"}), &PromptSource::LastUser).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.param.as_deref(), Some("messages"));
        let err = prompt_text(
            &json!({"messages": [{"role": "user", "content": 42}]}),
            &PromptSource::LastUser,
        )
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].content"));
        assert!(err.message.starts_with("messages[0].content: "));
    }

    #[test]
    fn completion_and_chunk_text() {
        let completion = json!({"choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello", "reasoning_content": "think"}},
            {"index": 1, "message": {"role": "assistant", "content": null, "refusal": "no"}}
        ]});
        assert_eq!(completion_text(&completion, None), "think\nhello\nno");
        let chunk: ChunkView = serde_json::from_str(
            r#"{"id":"c1","model":"m","created":5,"choices":[{"index":0,"delta":{"content":"a\"b"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(chunk.text(), "a\"b");
        assert!(!chunk.finishes());
        assert_eq!(chunk.id.as_deref(), Some("c1"));
    }
}
