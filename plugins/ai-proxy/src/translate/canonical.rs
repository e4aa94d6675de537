//! Pieces every native translator needs on the canonical side: reading a canonical request
//! (system text, images, tool calls and the names behind tool results) and writing canonical
//! answers (a `chat.completion`, or `chat.completion.chunk`s in order, ending with usage and
//! `[DONE]`, or with an error chunk when the provider stopped early).

use super::errors;
use super::Plan;
use aigw_shared::error::ApiError;
use aigw_shared::openai::{ChatRequest, Message};
use serde_json::{json, Map, Value};

pub use aigw_shared::canonical::{Answer, ChunkWriter, Completion};
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
