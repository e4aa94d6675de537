//! The checks Anthropic makes on a Messages request, with its messages (a field path and the
//! validation error, e.g. `max_tokens: Field required`), and what the mock needs from it.

use crate::mock::openai::{completion::first_parameter, prompt_tokens};
use serde_json::{json, Value};

/// A Messages request that passed validation.
#[derive(Debug)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u64,
    pub stream: bool,
    /// `thinking: {"type": "enabled", …}`.
    pub thinking: bool,
    pub stop_sequences: Vec<String>,
    /// The tool the answer calls, when the request asks for one (see [`Self::tool_to_call`]).
    pub tool_call: Option<ToolCall>,
    /// Prompt size the mock charges: the messages and the system prompt.
    pub input_tokens: u64,
}

#[derive(Debug, Clone)]
pub struct ToolCall {
    pub name: String,
    pub input: Value,
}

type Invalid = String;

impl MessagesRequest {
    /// Validates a request body; `Err` carries the message of a 400 `invalid_request_error`.
    pub fn parse(body: &[u8]) -> Result<MessagesRequest, Invalid> {
        let body: Value = serde_json::from_slice(body)
            .map_err(|e| format!("The request body is not valid JSON: {e}"))?;
        if !body.is_object() {
            return Err("body: Input should be a valid dictionary".into());
        }
        let model = match body.get("model") {
            None => return Err(required("model")),
            Some(Value::String(model)) => model.clone(),
            Some(_) => return Err("model: Input should be a valid string".into()),
        };
        let max_tokens = match body.get("max_tokens") {
            None => return Err(required("max_tokens")),
            Some(v) => match v.as_i64() {
                None => return Err("max_tokens: Input should be a valid integer".into()),
                Some(n) if n < 1 => {
                    return Err("max_tokens: Input should be greater than or equal to 1".into())
                }
                Some(n) => n as u64,
            },
        };
        let messages = match body.get("messages") {
            None => return Err(required("messages")),
            Some(Value::Array(messages)) if messages.is_empty() => {
                return Err("messages: at least one message is required".into())
            }
            Some(Value::Array(messages)) => messages,
            Some(_) => return Err("messages: Input should be a valid list".into()),
        };
        for (i, message) in messages.iter().enumerate() {
            check_message(i, message)?;
        }
        check_system(body.get("system"))?;
        check_number_range(&body, "temperature", 0.0, 1.0)?;
        check_number_range(&body, "top_p", 0.0, 1.0)?;
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("stream: Input should be a valid boolean".into()),
        };
        let stop_sequences = match body.get("stop_sequences") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or("stop_sequences: Input should be a valid list of strings")?,
            Some(_) => return Err("stop_sequences: Input should be a valid list".into()),
        };
        let thinking = thinking_enabled(body.get("thinking"), max_tokens)?;
        let tools = match body.get("tools") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(tools)) => tools.as_slice(),
            Some(_) => return Err("tools: Input should be a valid list".into()),
        };
        for (i, tool) in tools.iter().enumerate() {
            if !tool.get("name").is_some_and(Value::is_string) {
                return Err(format!("tools.{i}.name: Field required"));
            }
        }
        // The system prompt is charged like a message.
        let system = body
            .get("system")
            .filter(|s| !s.is_null())
            .map(|s| json!({"role": "system", "content": s}));
        let system_and_messages: Vec<Value> =
            system.into_iter().chain(messages.iter().cloned()).collect();
        Ok(MessagesRequest {
            model,
            max_tokens,
            stream,
            thinking,
            stop_sequences,
            tool_call: Self::tool_to_call(tools, body.get("tool_choice"), messages),
            input_tokens: prompt_tokens(&system_and_messages),
        })
    }

    /// The mock calls a tool when tools are offered, `tool_choice` is not `none`, and the last
    /// turn is the user's asking something (not only handing back `tool_result`s). It calls the
    /// tool `tool_choice` names, else the first one, with `"Paris"` for its first parameter.
    fn tool_to_call(
        tools: &[Value],
        tool_choice: Option<&Value>,
        messages: &[Value],
    ) -> Option<ToolCall> {
        let choice_type = tool_choice
            .and_then(|c| c.get("type"))
            .and_then(Value::as_str);
        if tools.is_empty() || choice_type == Some("none") {
            return None;
        }
        let last = messages.last()?;
        if last.get("role").and_then(Value::as_str) != Some("user") || only_tool_results(last) {
            return None;
        }
        let named = tool_choice
            .filter(|_| choice_type == Some("tool"))
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str);
        let tool = named
            .and_then(|name| tools.iter().find(|t| t["name"] == name))
            .unwrap_or(&tools[0]);
        let param = first_parameter(&tool["input_schema"]);
        Some(ToolCall {
            name: tool["name"].as_str().unwrap_or("tool").to_string(),
            input: json!({ param: "Paris" }),
        })
    }
}

fn required(field: &str) -> Invalid {
    format!("{field}: Field required")
}

fn only_tool_results(message: &Value) -> bool {
    match message.get("content") {
        Some(Value::Array(blocks)) => {
            !blocks.is_empty() && blocks.iter().all(|b| b["type"] == "tool_result")
        }
        _ => false,
    }
}

fn check_message(i: usize, message: &Value) -> Result<(), Invalid> {
    if !message.is_object() {
        return Err(format!("messages.{i}: Input should be a valid dictionary"));
    }
    match message.get("role").and_then(Value::as_str) {
        None if message.get("role").is_none() => {
            return Err(format!("messages.{i}.role: Field required"))
        }
        Some("user" | "assistant") => {}
        _ => {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ))
        }
    }
    match message.get("content") {
        None => Err(format!("messages.{i}.content: Field required")),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (j, block) in blocks.iter().enumerate() {
                if !block.get("type").is_some_and(Value::is_string) {
                    return Err(format!("messages.{i}.content.{j}.type: Field required"));
                }
            }
            Ok(())
        }
        Some(_) => Err(format!(
            "messages.{i}.content: Input should be a valid list"
        )),
    }
}

/// `system` is a string or a list of text blocks.
fn check_system(system: Option<&Value>) -> Result<(), Invalid> {
    match system {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(format!("system.{i}.type: Input should be 'text'"));
                }
                if !block.get("text").is_some_and(Value::is_string) {
                    return Err(format!("system.{i}.text: Field required"));
                }
            }
            Ok(())
        }
        Some(_) => Err("system: Input should be a valid list".into()),
    }
}

fn check_number_range(body: &Value, field: &str, min: f64, max: f64) -> Result<(), Invalid> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(v) => match v.as_f64() {
            None => Err(format!("{field}: Input should be a valid number")),
            Some(x) if x < min => Err(format!(
                "{field}: Input should be greater than or equal to {min}"
            )),
            Some(x) if x > max => Err(format!(
                "{field}: Input should be less than or equal to {max}"
            )),
            Some(_) => Ok(()),
        },
    }
}

/// Whether extended thinking is on, with the API's checks of `budget_tokens`.
fn thinking_enabled(thinking: Option<&Value>, max_tokens: u64) -> Result<bool, Invalid> {
    let Some(thinking) = thinking.filter(|t| !t.is_null()) else {
        return Ok(false);
    };
    match thinking.get("type").and_then(Value::as_str) {
        Some("enabled") => {}
        Some("disabled" | "adaptive") => return Ok(false),
        _ => {
            return Err(
                "thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'"
                    .into(),
            )
        }
    }
    let budget = match thinking.get("budget_tokens").map(Value::as_u64) {
        None => return Err("thinking.enabled.budget_tokens: Field required".into()),
        Some(None) => {
            return Err("thinking.enabled.budget_tokens: Input should be a valid integer".into())
        }
        Some(Some(budget)) => budget,
    };
    if budget < 1024 {
        return Err(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024".into(),
        );
    }
    if max_tokens <= budget {
        return Err(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
                .into(),
        );
    }
    Ok(true)
}
