//! Pieces every native translator needs on the canonical side: reading a canonical request
//! (system text, images, tool calls and the names behind tool results) and writing canonical
//! answers (a `chat.completion`, or `chat.completion.chunk`s in order, ending with usage and
//! `[DONE]`, or with an error chunk when the provider stopped early).

use super::errors;
use super::Plan;
use aigw_shared::error::ApiError;
use aigw_shared::openai::{ChatRequest, Message};
use aigw_shared::sse;
use aigw_shared::usage::TokenCounts;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// The system and developer messages of a request, joined.
pub fn system_text(messages: &[Message]) -> Option<String> {
    let parts: Vec<String> = messages
        .iter()
        .filter(|m| matches!(m.role.as_str(), "system" | "developer"))
        .filter_map(|m| m.content.as_ref().map(|c| c.text()))
        .filter(|t| !t.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// Tool call id → function name, from the assistant turns (tool results carry only the id, and
/// some providers want the name).
pub fn tool_names(messages: &[Message]) -> HashMap<String, String> {
    messages
        .iter()
        .flat_map(|m| m.tool_calls.iter().flatten())
        .filter_map(|c| Some((c.id.clone()?, c.function.name.clone()?)))
        .collect()
}

/// A tool call's arguments as a JSON object (`{}` when empty or not an object).
pub fn arguments_object(arguments: &str) -> Value {
    serde_json::from_str(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// `data:<mime>;base64,<data>` → (mime, data).
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("data:")?.split_once(";base64,")
}

/// A model name that can stand in a URL path as it is (providers that name the model in the
/// path): letters, digits, `.`, `_`, `-` and `@`, and not `.` or `..`; anything else could
/// reach another resource with the provider's key, and is a 400.
pub fn path_model(model: &str) -> Result<&str, ApiError> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if model.chars().all(safe) {
        path_segment(model)
    } else {
        Err(not_a_model(model))
    }
}

/// A model that becomes one path segment once encoded: anything but empty, `.` and `..`.
pub fn path_segment(model: &str) -> Result<&str, ApiError> {
    match model {
        "" | "." | ".." => Err(not_a_model(model)),
        _ => Ok(model),
    }
}

fn not_a_model(model: &str) -> ApiError {
    ApiError::invalid_request(
        Some("model"),
        format!("model: {model:?} is not a model name this provider takes"),
    )
}

/// An unsupported message role, as a 400 naming the message.
pub fn unsupported_role(index: usize, role: &str) -> ApiError {
    ApiError::invalid_request(
        Some(&format!("messages[{index}].role")),
        format!("messages[{index}].role: unsupported role {role:?}"),
    )
}

/// An image the provider cannot fetch itself, as a 400 naming the message.
pub fn inline_images_only(index: usize) -> ApiError {
    ApiError::invalid_request(
        Some(&format!("messages[{index}].content")),
        format!(
            "messages[{index}].content: this provider takes images as data: URLs (base64) only"
        ),
    )
}

/// Appends `items` as a turn of `role` (under `field`), merged into the previous turn when it
/// has the same role: providers that want turns to alternate get them so, and a model turn's
/// tool calls are answered together.
pub fn push_turn(turns: &mut Vec<Value>, role: &str, field: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|t| t["role"] == role) {
        if let Some(existing) = last[field].as_array_mut() {
            existing.extend(items);
            return;
        }
    }
    turns.push(json!({"role": role, field: items}));
}

pub fn encode(body: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(body)
        .map_err(|e| ApiError::new(500, "server_error", format!("cannot encode request: {e}")))
}

/// The sampling settings of a request, by canonical name: `max_tokens` (either cap),
/// `temperature`, `top_p`, `top_k`, `seed`, `frequency_penalty`, `presence_penalty`, `stop`
/// (always a list).
fn sampling(request: &ChatRequest) -> [(&'static str, Option<Value>); 8] {
    let extra = |key: &str| request.extra.get(key).filter(|v| !v.is_null()).cloned();
    [
        ("max_tokens", request.output_limit().map(Value::from)),
        ("temperature", request.temperature.map(Value::from)),
        ("top_p", request.top_p.map(Value::from)),
        ("top_k", extra("top_k")),
        ("seed", extra("seed")),
        ("frequency_penalty", extra("frequency_penalty")),
        ("presence_penalty", extra("presence_penalty")),
        (
            "stop",
            request.stop.as_ref().map(|s| Value::from(s.to_vec())),
        ),
    ]
}

/// Copies the request's sampling settings into `target` under the provider's names
/// (`(canonical, native)`); a setting the provider has no name for is left out.
pub fn put_sampling(
    target: &mut Map<String, Value>,
    request: &ChatRequest,
    names: &[(&str, &str)],
) {
    for (canonical, value) in sampling(request) {
        if let (Some(value), Some((_, native))) =
            (value, names.iter().find(|(c, _)| *c == canonical))
        {
            target.insert(native.to_string(), value);
        }
    }
}

/// Where a translator says what the provider answered: a [`ChunkWriter`] for a stream, a
/// [`Completion`] for a whole answer; so one reading of the provider's shape serves both when
/// its stream events and whole answers share that shape.
pub trait Answer {
    fn text(&mut self, out: &mut Vec<u8>, text: &str);
    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str);
    /// A tool call that arrives whole.
    fn tool_call(&mut self, out: &mut Vec<u8>, id: &str, name: &str, arguments: &str);
    /// Tool calls so far.
    fn tool_calls(&self) -> usize;
    fn finish(&mut self, out: &mut Vec<u8>, reason: &str);
    fn usage(&mut self, counts: &TokenCounts);
}

/// A canonical `chat.completion`.
#[derive(Default)]
pub struct Completion {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub text: String,
    pub reasoning: String,
    /// (id, name, arguments as a JSON string)
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: String,
    pub usage: TokenCounts,
}

impl Answer for Completion {
    fn text(&mut self, _: &mut Vec<u8>, text: &str) {
        self.text.push_str(text);
    }

    fn reasoning(&mut self, _: &mut Vec<u8>, text: &str) {
        self.reasoning.push_str(text);
    }

    fn tool_call(&mut self, _: &mut Vec<u8>, id: &str, name: &str, arguments: &str) {
        self.tool_calls
            .push((id.to_string(), name.to_string(), arguments.to_string()));
    }

    fn tool_calls(&self) -> usize {
        self.tool_calls.len()
    }

    fn finish(&mut self, _: &mut Vec<u8>, reason: &str) {
        self.finish_reason = reason.to_string();
    }

    fn usage(&mut self, counts: &TokenCounts) {
        self.usage.merge(counts);
    }
}

impl Completion {
    /// The JSON body; a finish reason never given is `stop`.
    pub fn to_json(&self) -> Vec<u8> {
        let finish_reason = if self.finish_reason.is_empty() {
            "stop"
        } else {
            &self.finish_reason
        };
        let content = if self.text.is_empty() && !self.tool_calls.is_empty() {
            Value::Null
        } else {
            json!(self.text)
        };
        let mut message = json!({"role": "assistant", "content": content});
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|(id, name, arguments)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
                })
                .collect();
        }
        let completion = json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": self.usage.to_openai(),
        });
        serde_json::to_vec(&completion).unwrap_or_default()
    }
}

/// The response side every native translator shares: stream or whole body, decided by status
/// and content type, and provider errors turned into OpenAI error objects.
#[derive(Default)]
pub struct ResponseBody {
    pub status: u16,
    pub streaming: bool,
    whole: Vec<u8>,
}

impl ResponseBody {
    /// Streams a 2xx answer of the provider's stream type; anything else is read whole and
    /// answered as JSON.
    pub fn plan(&mut self, status: u16, stream_type: bool) -> Plan {
        self.status = status;
        self.streaming = status < 300 && stream_type;
        if self.streaming {
            Plan::STREAM
        } else {
            Plan {
                content_type: Some("application/json"),
                ..Plan::WHOLE
            }
        }
    }

    /// Collects a whole body; at its end, the canonical body: an error object for an error
    /// status, else `completion` of the provider's body.
    pub fn whole(
        &mut self,
        input: &[u8],
        end: bool,
        out: &mut Vec<u8>,
        completion: impl FnOnce(&[u8]) -> Vec<u8>,
    ) {
        self.whole.extend_from_slice(input);
        if !end {
            return;
        }
        let body = if self.status >= 300 {
            errors::from_provider(self.status, &self.whole).body(Default::default())
        } else {
            completion(&self.whole)
        };
        out.extend_from_slice(&body);
    }
}

/// The provider's JSON body, or the canonical error for a body that is not JSON.
pub fn parse_body(body: &[u8]) -> Result<Value, Vec<u8>> {
    serde_json::from_slice::<Value>(body).map_err(|_| errors::unreadable().body(Default::default()))
}

/// Writes a canonical stream: the role chunk before anything else, deltas, the finish chunk,
/// the usage chunk when the client asked for usage, then `[DONE]`, once; or an error chunk
/// and `[DONE]` when the provider's stream breaks off.
#[derive(Default)]
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub include_usage: bool,
    pub usage: TokenCounts,
    started: bool,
    tools: usize,
    finished: bool,
    done: bool,
}

impl ChunkWriter {
    pub fn new(created: u64) -> Self {
        ChunkWriter {
            created,
            ..Default::default()
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish_reason: Option<&str>) {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        sse::write_data(out, &chunk.to_string());
    }

    /// The role chunk, if not sent yet.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started && !self.done {
            self.started = true;
            self.chunk(out, json!({"role": "assistant", "content": ""}), None);
        }
    }

    fn delta(&mut self, out: &mut Vec<u8>, delta: Value) {
        if self.done {
            return;
        }
        self.start(out);
        self.chunk(out, delta, None);
    }

    pub fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if !text.is_empty() {
            self.delta(out, json!({"content": text}));
        }
    }

    pub fn reasoning(&mut self, out: &mut Vec<u8>, text: &str) {
        if !text.is_empty() {
            self.delta(out, json!({"reasoning_content": text}));
        }
    }

    /// Opens the next tool call; returns its OpenAI index.
    pub fn tool_start(&mut self, out: &mut Vec<u8>, id: &str, name: &str) -> usize {
        let index = self.tools;
        self.tools += 1;
        self.delta(
            out,
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
        );
        index
    }

    pub fn tool_arguments(&mut self, out: &mut Vec<u8>, index: usize, fragment: &str) {
        if !fragment.is_empty() {
            self.delta(
                out,
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
            );
        }
    }

    /// A tool call that arrives whole.
    pub fn tool_call(&mut self, out: &mut Vec<u8>, id: &str, name: &str, arguments: &str) {
        let index = self.tool_start(out, id, name);
        self.tool_arguments(out, index, arguments);
    }

    pub fn tool_calls_started(&self) -> usize {
        self.tools
    }

    /// The empty delta carrying `finish_reason` (once).
    pub fn finish(&mut self, out: &mut Vec<u8>, reason: &str) {
        if self.finished || self.done {
            return;
        }
        self.start(out);
        self.finished = true;
        self.chunk(out, json!({}), Some(reason));
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.include_usage {
            let chunk = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": self.usage.to_openai(),
            });
            sse::write_data(out, &chunk.to_string());
        }
        sse::write_data(out, "[DONE]");
        self.done = true;
    }

    /// An error chunk and `[DONE]`: the stream stops here.
    pub fn error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        if self.done {
            return;
        }
        sse::write_data(
            out,
            &json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
                .to_string(),
        );
        sse::write_data(out, "[DONE]");
        self.done = true;
    }

    /// At the end of the provider's body: a stream that finished ends normally; one that did
    /// not says so rather than look complete.
    pub fn end_of_body(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            self.end(out);
        } else {
            self.error(out, "api_error", "provider ended the stream early");
        }
    }
}

impl Answer for ChunkWriter {
    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        ChunkWriter::text(self, out, text);
    }

    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str) {
        ChunkWriter::reasoning(self, out, text);
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, id: &str, name: &str, arguments: &str) {
        ChunkWriter::tool_call(self, out, id, name, arguments);
    }

    fn tool_calls(&self) -> usize {
        self.tools
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: &str) {
        ChunkWriter::finish(self, out, reason);
    }

    fn usage(&mut self, counts: &TokenCounts) {
        self.usage.merge(counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_orders_role_deltas_finish_usage_done() {
        let mut w = ChunkWriter::new(7);
        w.include_usage = true;
        w.usage = TokenCounts::new(3, 4, 0);
        let mut out = Vec::new();
        w.text(&mut out, "");
        assert!(out.is_empty(), "nothing before there is something to say");
        w.text(&mut out, "hi");
        let i = w.tool_start(&mut out, "call_1", "f");
        w.tool_arguments(&mut out, i, "{}");
        w.finish(&mut out, "tool_calls");
        w.finish(&mut out, "stop");
        w.end_of_body(&mut out);
        w.end(&mut out);
        let text = String::from_utf8(out).unwrap();
        let data: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(data.len(), 7, "{text}");
        assert!(data[0].contains("\"role\":\"assistant\""));
        assert!(data[4].contains("\"finish_reason\":\"tool_calls\""));
        assert!(data[5].contains("\"total_tokens\":7"));
        assert_eq!(data[6], "[DONE]");
    }

    #[test]
    fn a_stream_without_a_finish_ends_with_an_error() {
        let mut w = ChunkWriter::new(0);
        let mut out = Vec::new();
        w.text(&mut out, "partial");
        w.end_of_body(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("provider ended the stream early"));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
