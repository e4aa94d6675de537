//! Which text of a request or a response gets checked.
//!
//! Requests: the newest turn by default (the last user message and every message after it:
//! in agent loops the newest text is a tool result), every message with `all`, or the strings
//! a JSON path selects. Responses: every text of every choice a client shows or executes
//! (content, reasoning, refusal, audio transcript, tool-call and legacy function-call
//! arguments), or a JSON path. The text parts of one content array are one text, so a phrase
//! split over two parts is seen whole. Paths are dotted keys with array indexes, `-1` for the
//! last element and `#` for every element: `messages.-1.content`, `messages.#.content`,
//! `input`.

use crate::local::BACKEND;
use crate::verdict::Finding;
use aigw_shared::error::ApiError;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// Which part of a request is the prompt to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptSource {
    NewestTurn,
    All,
    Path(Vec<String>),
}

/// What to do with an answer that does not parse (invalid JSON, a lone surrogate escape,
/// invalid UTF-8): its text cannot be read, so it is blocked, or checked as raw text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unparsable {
    Block,
    CheckRaw,
}

/// Label of an answer blocked because it does not parse.
pub const UNPARSABLE: &str = "unparsable_answer";

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
        PromptSource::NewestTurn | PromptSource::All => {
            match body.get("messages") {
                None | Some(Value::Null) => {}
                Some(Value::Array(messages)) => {
                    let first = match source {
                        PromptSource::NewestTurn => messages
                            .iter()
                            .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                            .unwrap_or(messages.len().saturating_sub(1)),
                        _ => 0,
                    };
                    for (i, message) in messages.iter().enumerate().skip(first) {
                        if !message.is_object() {
                            return Err(field_error(format!("messages[{i}]"), "must be an object"));
                        }
                        push_message(message, &format!("messages[{i}].content"), &mut out)?;
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

/// Appends a message's texts: its content, and the arguments of the calls it makes.
fn push_message(message: &Value, field: &str, out: &mut String) -> Result<(), ApiError> {
    match message.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_text(out, s),
        Some(Value::Array(parts)) => push_text(out, &parts_text(parts)),
        Some(_) => {
            return Err(field_error(
                field.to_string(),
                "must be a string or an array of content parts",
            ))
        }
    }
    for key in ["reasoning_content", "reasoning", "refusal"] {
        if let Some(text) = message.get(key).and_then(Value::as_str) {
            push_text(out, text);
        }
    }
    if let Some(transcript) = message.pointer("/audio/transcript").and_then(Value::as_str) {
        push_text(out, transcript);
    }
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for call in calls.into_iter().flatten() {
        push_arguments(out, call.get("function"));
    }
    push_arguments(out, message.get("function_call"));
    Ok(())
}

fn push_arguments(out: &mut String, function: Option<&Value>) {
    if let Some(arguments) = function
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str)
    {
        push_text(out, arguments);
    }
}

/// The `text` of content parts, joined as one text.
fn parts_text(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect()
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
        Value::Array(items) if items.iter().all(Value::is_object) => {
            push_text(out, &parts_text(items))
        }
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => {
            if let Some(Value::String(text)) = map.get("text") {
                push_text(out, text);
            }
        }
        _ => {}
    }
}

/// The texts to check in a non-streamed answer's body, or the block of one that does not parse.
pub fn answer_texts(
    body: &[u8],
    path: Option<&[String]>,
    unparsable: Unparsable,
) -> Result<Vec<String>, Finding> {
    match (serde_json::from_slice::<Value>(body), unparsable) {
        (Ok(value), _) => Ok(completion_texts(&value, path)),
        (Err(_), Unparsable::CheckRaw) => Ok(vec![String::from_utf8_lossy(body).into_owned()]),
        (Err(_), Unparsable::Block) => Err(Finding::new(BACKEND, UNPARSABLE)),
    }
}

/// The texts of a non-streamed completion, one per choice (or what `path` selects).
pub fn completion_texts(body: &Value, path: Option<&[String]>) -> Vec<String> {
    if let Some(path) = path {
        let mut out = String::new();
        collect_path(body, path, &mut out);
        return vec![out];
    }
    body.get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|choice| {
            let mut out = String::new();
            push_message(choice.get("message")?, "content", &mut out).ok()?;
            Some(out)
        })
        .collect()
}

/// Where a streamed text goes: its choice, and 0 for the message's text or 1 + the index of
/// the tool call whose arguments it continues (a legacy function call is 1).
pub type Lane = (u32, u32);

/// What the checks need from one `chat.completion.chunk`, borrowed from the event's data.
#[derive(Debug, Default, Deserialize)]
pub struct ChunkView<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
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
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<TextView<'a>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    audio: Option<AudioView<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
    #[serde(default, borrow)]
    function_call: Option<FunctionView<'a>>,
}

/// Content as a string or as parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TextView<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<PartView<'a>>),
}

#[derive(Debug, Deserialize)]
struct PartView<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct AudioView<'a> {
    #[serde(default, borrow)]
    transcript: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallView<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    function: Option<FunctionView<'a>>,
}

#[derive(Debug, Deserialize)]
struct FunctionView<'a> {
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl ChunkView<'_> {
    /// Each piece of generated text this chunk carries, with its lane.
    pub fn for_each_text(&self, mut f: impl FnMut(Lane, &str)) {
        for choice in &self.choices {
            let delta = &choice.delta;
            let text = (choice.index, 0);
            for piece in [&delta.reasoning_content, &delta.reasoning, &delta.refusal]
                .into_iter()
                .flatten()
            {
                f(text, piece);
            }
            match &delta.content {
                Some(TextView::Text(piece)) => f(text, piece),
                Some(TextView::Parts(parts)) => parts
                    .iter()
                    .filter_map(|p| p.text.as_deref())
                    .for_each(|piece| f(text, piece)),
                None => {}
            }
            if let Some(piece) = delta.audio.as_ref().and_then(|a| a.transcript.as_deref()) {
                f(text, piece);
            }
            for call in delta.tool_calls.iter().flatten() {
                if let Some(arguments) = arguments(&call.function) {
                    f((choice.index, call.index.saturating_add(1)), arguments);
                }
            }
            if let Some(arguments) = arguments(&delta.function_call) {
                f((choice.index, 1), arguments);
            }
        }
    }

    pub fn finishes(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }
}

fn arguments<'a>(function: &'a Option<FunctionView>) -> Option<&'a str> {
    function.as_ref()?.arguments.as_deref()
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
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": " question"}]}
        ]})
    }

    #[test]
    fn the_newest_turn_by_default() {
        assert_eq!(
            prompt_text(&body(), &PromptSource::NewestTurn).unwrap(),
            "second question"
        );
        assert_eq!(
            prompt_text(&body(), &PromptSource::All).unwrap(),
            "be brief\nfirst question\nan answer\nsecond question"
        );
        assert_eq!(
            prompt_text(
                &json!({"input": ["a", "b"], "model": "m"}),
                &PromptSource::NewestTurn
            )
            .unwrap(),
            "a\nb"
        );
    }

    #[test]
    fn the_newest_turn_is_everything_after_the_last_user_message() {
        let body = json!({"messages": [
            {"role": "user", "content": "old"},
            {"role": "user", "content": "look it up"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"q\": 1}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "res"}, {"type": "text", "text": "ult"}]}
        ]});
        assert_eq!(
            prompt_text(&body, &PromptSource::NewestTurn).unwrap(),
            "look it up\n{\"q\": 1}\nresult"
        );
        let no_user = json!({"messages": [{"role": "system", "content": "a"}, {"role": "tool", "content": "b"}]});
        assert_eq!(
            prompt_text(&no_user, &PromptSource::NewestTurn).unwrap(),
            "b"
        );
    }

    #[test]
    fn json_paths() {
        let text = |p: &str| prompt_text(&body(), &PromptSource::Path(parse_path(p))).unwrap();
        assert_eq!(text("messages.0.content"), "be brief");
        assert_eq!(text("messages.-2.content"), "an answer");
        assert_eq!(text("messages.#.role"), "system\nuser\nassistant\nuser");
        assert_eq!(text("messages.-1.content"), "second question");
        assert_eq!(text("nothing.here"), "");
        assert_eq!(text("messages.99.content"), "");
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let err = prompt_text(&json!({"messages": "hi"}), &PromptSource::NewestTurn).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.param.as_deref(), Some("messages"));
        let err = prompt_text(
            &json!({"messages": [{"role": "user", "content": 42}]}),
            &PromptSource::NewestTurn,
        )
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].content"));
        assert!(err.message.starts_with("messages[0].content: "));
    }

    #[test]
    fn answers_that_do_not_parse() {
        let surrogate = br#"{"choices":[{"message":{"content":"\ud83d bad"}}]}"#;
        let block = Err(Finding::new(BACKEND, UNPARSABLE));
        assert_eq!(answer_texts(surrogate, None, Unparsable::Block), block);
        assert_eq!(answer_texts(b"\xff{}", None, Unparsable::Block), block);
        let raw = answer_texts(surrogate, None, Unparsable::CheckRaw).unwrap();
        assert!(raw[0].contains(r"\ud83d bad"));
        assert_eq!(
            answer_texts(
                br#"{"choices":[{"message":{"content":"ok"}}]}"#,
                None,
                Unparsable::Block
            ),
            Ok(vec!["ok".to_string()])
        );
    }

    #[test]
    fn every_text_of_every_choice_of_a_completion() {
        let completion = json!({"choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello", "reasoning_content": "think"}},
            {"index": 1, "message": {"role": "assistant", "content": null, "refusal": "no"}},
            {"index": 2, "message": {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "audio": {"transcript": "said"}, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                "function_call": {"name": "g", "arguments": "[]"}}}
        ]});
        assert_eq!(
            completion_texts(&completion, None),
            ["hello\nthink", "no", "ab\nsaid\n{}\n[]"]
        );
    }

    fn lanes(data: &str) -> Vec<(Lane, String)> {
        let chunk: ChunkView = serde_json::from_str(data).unwrap();
        let mut out = Vec::new();
        chunk.for_each_text(|lane, text| out.push((lane, text.to_string())));
        out
    }

    #[test]
    fn chunk_texts_by_choice_and_tool_call() {
        let chunk: ChunkView = serde_json::from_str(
            r#"{"id":"c1","model":"m","created":5,"choices":[{"index":0,"delta":{"content":"a\"b"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert!(!chunk.finishes());
        assert_eq!(chunk.id.as_deref(), Some("c1"));
        assert_eq!(
            lanes(r#"{"choices":[{"index":0,"delta":{"content":"a\"b"}}]}"#),
            [((0, 0), "a\"b".to_string())]
        );
        assert_eq!(
            lanes(
                r#"{"choices":[{"index":1,"delta":{"refusal":"r","audio":{"transcript":"t"},"content":null,
                "tool_calls":[{"index":1,"function":{"arguments":"{\"x"}}],"function_call":{"arguments":"y"}}}]}"#
            ),
            [
                ((1, 0), "r".to_string()),
                ((1, 0), "t".into()),
                ((1, 2), "{\"x".into()),
                ((1, 1), "y".into())
            ]
        );
        assert_eq!(
            lanes(
                r#"{"choices":[{"delta":{"content":[{"type":"text","text":"p"}],"tool_calls":null}}]}"#
            ),
            [((0, 0), "p".to_string())]
        );
        assert!(serde_json::from_str::<ChunkView>(
            r#"{"choices":[{"delta":{"content":"\ud83d x"}}]}"#
        )
        .is_err());
    }
}
