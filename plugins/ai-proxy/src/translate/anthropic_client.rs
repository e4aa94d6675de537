//! The client edge for Anthropic clients (`POST /v1/messages`): Messages requests become
//! canonical chat requests, and canonical completions, streams and errors are answered in the
//! Messages API's shapes, streaming events included. This is what lets Claude Code and the
//! Anthropic SDKs use any provider.

use super::anthropic::{
    stop_reason, ContentBlock, MessageContent, MessagesRequest, Role, SystemPrompt, ToolChoice,
    ToolResultContent,
};
use super::{errors, parse_request, ClientAdapter, Plan, ResponseStage};
use aigw_shared::body::is_event_stream;
use aigw_shared::error::{anthropic_error_type, ApiError, ClientApi};
use aigw_shared::openai::{
    ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, Message, Stop,
    StreamOptions, Tool, ToolCall,
};
use aigw_shared::sse::{self, Decoder};
use aigw_shared::usage::TokenCounts;
use serde_json::{json, Value};

#[derive(Default)]
pub struct AnthropicClient {
    status: u16,
    mode: Option<Mode>,
    decoder: Decoder,
    whole: Vec<u8>,
    stream: StreamState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Whole,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, by its OpenAI tool-call index.
    Tool(u64),
}

/// What the stream translation remembers between chunks.
#[derive(Default)]
struct StreamState {
    started: bool,
    /// The open content block and its Anthropic index.
    open: Option<(Block, usize)>,
    next_index: usize,
    stop_reason: Option<&'static str>,
    usage: Option<TokenCounts>,
    finished: bool,
}

impl ClientAdapter for AnthropicClient {
    fn request(&mut self, body: &[u8]) -> Result<ChatRequest, ApiError> {
        let request: MessagesRequest = parse_request(body)?;
        chat_request(request)
    }

    fn api(&self) -> ClientApi {
        ClientApi::Anthropic
    }
}

/// A Messages request as a canonical chat request.
fn chat_request(request: MessagesRequest) -> Result<ChatRequest, ApiError> {
    let mut messages = Vec::new();
    let system = match request.system {
        Some(SystemPrompt::Text(text)) => text,
        Some(SystemPrompt::Blocks(blocks)) => blocks_text(&blocks),
        None => String::new(),
    };
    if !system.is_empty() {
        messages.push(Message {
            role: "system".into(),
            content: Some(Content::Text(system)),
            ..Default::default()
        });
    }
    for (index, message) in request.messages.into_iter().enumerate() {
        match message.role {
            Role::User => push_user(&mut messages, message.content)
                .map_err(|block| unsupported_block(index, block))?,
            Role::Assistant => messages.push(assistant_message(message.content)),
        }
    }
    let stream = request.stream == Some(true);
    let mut chat = ChatRequest {
        model: request.model,
        messages,
        stream: stream.then_some(true),
        // Anthropic streams always report usage; ask for it so it can be passed on.
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            ..Default::default()
        }),
        max_tokens: Some(request.max_tokens),
        temperature: request.temperature,
        top_p: request.top_p,
        stop: request
            .stop_sequences
            .filter(|s| !s.is_empty())
            .map(Stop::Many),
        ..Default::default()
    };
    let tools: Vec<Tool> = request
        .tools
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| {
            Some(Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: t.name,
                    description: t.description,
                    parameters: Some(t.input_schema?),
                    ..Default::default()
                },
            })
        })
        .collect();
    if !tools.is_empty() {
        chat.tools = Some(tools);
        let (choice, no_parallel) = match request.tool_choice {
            None => (None, None),
            Some(ToolChoice::Auto {
                disable_parallel_tool_use,
            }) => (Some(json!("auto")), disable_parallel_tool_use),
            Some(ToolChoice::Any {
                disable_parallel_tool_use,
            }) => (Some(json!("required")), disable_parallel_tool_use),
            Some(ToolChoice::Tool {
                name,
                disable_parallel_tool_use,
            }) => (
                Some(json!({"type": "function", "function": {"name": name}})),
                disable_parallel_tool_use,
            ),
            Some(ToolChoice::None) => (Some(json!("none")), None),
        };
        chat.tool_choice = choice;
        if no_parallel == Some(true) {
            chat.extra
                .insert("parallel_tool_calls".into(), json!(false));
        }
    }
    // Carried for an Anthropic provider; OpenAI-style providers drop them.
    if let Some(thinking) = request.thinking {
        chat.extra.insert("thinking".into(), thinking);
    }
    if let Some(top_k) = request.top_k {
        chat.extra.insert("top_k".into(), json!(top_k));
    }
    if let Some(user) = request
        .metadata
        .as_ref()
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        chat.extra.insert("user".into(), json!(user));
    }
    Ok(chat)
}

fn blocks_text(blocks: &[ContentBlock]) -> String {
    blocks
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A user turn: its tool results become `tool` messages (first, as OpenAI wants them right
/// after the assistant's calls), the rest one user message. A block that cannot be carried
/// over (a document, an image source of another kind, a type added later) is an error with
/// its index: dropping it would have the model answer without what the user sent.
fn push_user(messages: &mut Vec<Message>, content: MessageContent) -> Result<(), usize> {
    let mut parts = Vec::new();
    for (index, block) in content.blocks().into_iter().enumerate() {
        match block {
            ContentBlock::Text { text } => parts.push(ContentPart {
                kind: "text".into(),
                text: Some(text),
                ..Default::default()
            }),
            ContentBlock::Image { source } => {
                let url = source.to_url().ok_or(index)?;
                parts.push(ContentPart {
                    kind: "image_url".into(),
                    image_url: Some(ImageUrl { url, detail: None }),
                    ..Default::default()
                });
            }
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                let mut text = match content {
                    Some(ToolResultContent::Text(text)) => text,
                    Some(ToolResultContent::Blocks(blocks)) => blocks_text(&blocks),
                    None => String::new(),
                };
                if is_error == Some(true) {
                    text = format!("Error: {text}");
                }
                messages.push(Message {
                    role: "tool".into(),
                    content: Some(Content::Text(text)),
                    tool_call_id: Some(tool_use_id),
                    ..Default::default()
                });
            }
            ContentBlock::Unsupported => return Err(index),
            // The model's own blocks, sent back in a user turn: nothing to carry.
            ContentBlock::ToolUse { .. }
            | ContentBlock::Thinking { .. }
            | ContentBlock::RedactedThinking { .. } => {}
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let content = if parts.len() == 1 && parts[0].kind == "text" {
        Content::Text(parts.remove(0).text.unwrap_or_default())
    } else {
        Content::Parts(parts)
    };
    messages.push(Message {
        role: "user".into(),
        content: Some(content),
        ..Default::default()
    });
    Ok(())
}

fn unsupported_block(message: usize, block: usize) -> ApiError {
    let param = format!("messages[{message}].content[{block}]");
    ApiError::invalid_request(
        Some(&param),
        format!("{param}: this content block cannot be sent on (supported in user turns: text, image with a base64 or url source, tool_result)"),
    )
}

fn assistant_message(content: MessageContent) -> Message {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in content.blocks() {
        match block {
            ContentBlock::Text { text: t } => text.push_str(&t),
            ContentBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id: Some(id),
                kind: Some("function".into()),
                function: FunctionCall {
                    name: Some(name),
                    arguments: if input.is_null() {
                        "{}".into()
                    } else {
                        input.to_string()
                    },
                },
                ..Default::default()
            }),
            _ => {} // thinking blocks are the provider's own; other providers cannot use them
        }
    }
    Message {
        role: "assistant".into(),
        content: (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..Default::default()
    }
}

impl ResponseStage for AnthropicClient {
    fn plan(&mut self, status: u16, content_type: &str) -> Plan {
        self.status = status;
        if status < 300 && is_event_stream(content_type) {
            self.mode = Some(Mode::Stream);
            Plan::STREAM
        } else {
            // A message or an error, always JSON (Envoy's own replies are plain text).
            self.mode = Some(Mode::Whole);
            Plan {
                content_type: Some("application/json"),
                ..Plan::WHOLE
            }
        }
    }

    fn translate(&mut self, input: &[u8], end: bool, out: &mut Vec<u8>) {
        match self.mode {
            Some(Mode::Stream) => {
                let events = super::events(&mut self.decoder, input, end);
                for event in events {
                    if event.is_done() {
                        self.finish(out);
                    } else if !event.data.trim().is_empty() {
                        match serde_json::from_str::<Value>(&event.data) {
                            Ok(chunk) => self.on_chunk(&chunk, out),
                            Err(_) => self.fail(out, errors::UNREADABLE),
                        }
                    }
                }
                if end && !self.stream.finished {
                    self.finish(out);
                }
            }
            _ => {
                self.whole.extend_from_slice(input);
                if end {
                    let body = if self.status >= 300 {
                        anthropic_error(self.status, &self.whole)
                    } else {
                        message(&self.whole)
                    };
                    out.extend_from_slice(&body);
                }
            }
        }
    }
}

fn event(out: &mut Vec<u8>, kind: &str, data: Value) {
    sse::write_event(out, Some(kind), &data.to_string());
}

fn error_event(out: &mut Vec<u8>, kind: &str, message: &str) {
    event(
        out,
        "error",
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    );
}

impl AnthropicClient {
    fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.stream.finished {
            return;
        }
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("provider error");
            let kind = error
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("api_error");
            self.stream.finished = true;
            error_event(out, kind, message);
            return;
        }
        if !self.stream.started {
            self.stream.started = true;
            event(
                out,
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": message_id(chunk["id"].as_str()), "type": "message", "role": "assistant",
                    "model": chunk["model"], "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }}),
            );
            event(out, "ping", json!({"type": "ping"}));
        }
        if let Some(counts) = TokenCounts::from_json(chunk) {
            self.stream.usage = Some(counts);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(thinking) = delta["reasoning_content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            self.open_block(Block::Thinking, out);
            self.delta(out, json!({"type": "thinking_delta", "thinking": thinking}));
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.open_block(Block::Text, out);
            self.delta(out, json!({"type": "text_delta", "text": text}));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap_or(0);
            if call.get("id").is_some_and(|id| id.is_string())
                || self.stream.open.map(|(b, _)| b) != Some(Block::Tool(index))
            {
                self.close_block(out);
                let i = self.stream.next_index;
                self.stream.next_index += 1;
                self.stream.open = Some((Block::Tool(index), i));
                event(
                    out,
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": {
                        "type": "tool_use", "id": call["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("toolu_{i}")),
                        "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""), "input": {},
                    }}),
                );
            }
            if let Some(arguments) = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                self.delta(
                    out,
                    json!({"type": "input_json_delta", "partial_json": arguments}),
                );
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.close_block(out);
            self.stream.stop_reason = Some(stop_reason(reason));
        }
    }

    fn open_block(&mut self, block: Block, out: &mut Vec<u8>) {
        if self.stream.open.map(|(b, _)| b) == Some(block) {
            return;
        }
        self.close_block(out);
        let index = self.stream.next_index;
        self.stream.next_index += 1;
        self.stream.open = Some((block, index));
        let content_block = match block {
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        event(
            out,
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        );
    }

    fn delta(&self, out: &mut Vec<u8>, delta: Value) {
        if let Some((_, index)) = self.stream.open {
            event(
                out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            );
        }
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.stream.open.take() {
            event(
                out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    /// Ends the stream with an error event: what follows cannot be translated.
    fn fail(&mut self, out: &mut Vec<u8>, message: &str) {
        if self.stream.finished {
            return;
        }
        self.stream.finished = true;
        self.close_block(out);
        error_event(out, "api_error", message);
    }

    /// Ends the message. A stream that ended without a finish reason was cut: it ends with an
    /// error event, not a clean `message_stop`.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.stream.finished {
            return;
        }
        self.stream.finished = true;
        self.close_block(out);
        let Some(stop) = self.stream.stop_reason else {
            error_event(out, "api_error", "the provider ended the stream early");
            return;
        };
        let usage = self.stream.usage.unwrap_or_default();
        event(
            out,
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": anthropic_usage(&usage)}),
        );
        event(out, "message_stop", json!({"type": "message_stop"}));
    }
}

fn message_id(id: Option<&str>) -> String {
    match id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => "msg_gateway".to_string(),
    }
}

/// Anthropic counts cache reads and writes apart from `input_tokens`.
fn anthropic_usage(usage: &TokenCounts) -> Value {
    json!({
        "input_tokens": usage.input.saturating_sub(usage.cached_input + usage.cache_creation),
        "cache_creation_input_tokens": usage.cache_creation,
        "cache_read_input_tokens": usage.cached_input,
        "output_tokens": usage.output,
    })
}

/// A canonical completion (JSON) as an Anthropic message. An error object (a provider's error
/// sent with status 200) and a body that does not parse become Anthropic errors.
fn message(body: &[u8]) -> Vec<u8> {
    let Ok(completion) = serde_json::from_slice::<Value>(body) else {
        return errors::unreadable().body(ClientApi::Anthropic);
    };
    if completion.get("error").is_some_and(|e| !e.is_null()) {
        return anthropic_error(502, body);
    }
    let choice = &completion["choices"][0];
    let reply = &choice["message"];
    let mut content = Vec::new();
    if let Some(thinking) = reply["reasoning_content"]
        .as_str()
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    if let Some(text) = reply["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in reply["tool_calls"].as_array().into_iter().flatten() {
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input = serde_json::from_str::<Value>(arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use", "id": call["id"], "name": call.pointer("/function/name"), "input": input}));
    }
    let usage = TokenCounts::from_json(&completion).unwrap_or_default();
    let message = json!({
        "id": message_id(completion["id"].as_str()), "type": "message", "role": "assistant",
        "model": completion["model"], "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": null,
        "usage": anthropic_usage(&usage),
    });
    serde_json::to_vec(&message).unwrap_or_default()
}

/// A canonical (OpenAI-shaped) error as Anthropic's error body.
fn anthropic_error(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let error = json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}});
    serde_json::to_vec(&error).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::testing::same_at_every_split;
    use super::*;

    fn canonical(body: Value) -> ChatRequest {
        AnthropicClient::default()
            .request(&serde_json::to_vec(&body).unwrap())
            .unwrap()
    }

    #[test]
    fn user_blocks_that_cannot_be_sent_on_are_refused_naming_them() {
        for (block, param) in [
            (
                json!({"type": "image_url", "image_url": {"url": "https://x/a.png"}}),
                "messages[1].content[1]",
            ),
            (
                json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}),
                "messages[1].content[1]",
            ),
            (
                json!({"type": "image", "source": {"type": "file", "file_id": "f1"}}),
                "messages[1].content[1]",
            ),
        ] {
            let body = json!({"model": "m", "max_tokens": 10, "messages": [
                {"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "read this"}, block]}
            ]});
            let err = AnthropicClient::default()
                .request(&serde_json::to_vec(&body).unwrap())
                .unwrap_err();
            assert_eq!(
                (err.status, err.param.as_deref()),
                (400, Some(param)),
                "{err}"
            );
        }
    }

    #[test]
    fn request_with_system_images_tools_and_results() {
        let chat = canonical(json!({
            "model": "claude-sonnet", "max_tokens": 100, "stream": true, "stop_sequences": ["END"], "top_k": 5,
            "system": [{"type": "text", "text": "be brief"}],
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "checking"}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]}, {"type": "text", "text": "and tomorrow?"}]}
            ],
            "tools": [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
        }));
        assert!(chat.is_stream() && chat.include_usage());
        assert_eq!(chat.max_tokens, Some(100));
        let roles: Vec<&str> = chat.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, vec!["system", "user", "assistant", "tool", "user"]);
        assert_eq!(
            chat.messages[0].content.as_ref().unwrap().text(),
            "be brief"
        );
        let Content::Parts(parts) = chat.messages[1].content.clone().unwrap() else {
            panic!()
        };
        assert_eq!(
            parts[1].image_url.as_ref().unwrap().url,
            "data:image/png;base64,AAAA"
        );
        let call = &chat.messages[2].tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            (call.id.as_deref(), call.function.arguments.as_str()),
            (Some("toolu_1"), "{\"city\":\"Paris\"}")
        );
        assert_eq!(chat.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(
            chat.tools.as_ref().unwrap().len(),
            1,
            "server tools are not forwarded"
        );
        assert_eq!(chat.tool_choice, Some(json!("required")));
        assert_eq!(chat.extra["parallel_tool_calls"], false);
        assert_eq!(chat.extra["thinking"]["budget_tokens"], 2000);
        assert_eq!(chat.stop, Some(Stop::Many(vec!["END".into()])));
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let mut client = AnthropicClient::default();
        let err = client
            .request(br#"{"model":"m","max_tokens":1,"messages":[{"role":"robot","content":"x"}]}"#)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].role"));
        let err = client
            .request(br#"{"model":"m","messages":[]}"#)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("max_tokens"));
    }

    const CANONICAL_STREAM: &str = "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \u{4f60}\"}}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
        data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":9,\"total_tokens\":29,\"prompt_tokens_details\":{\"cached_tokens\":5}}}\n\n\
        data: [DONE]\n\n";

    fn events(out: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut lines = e.lines();
                let kind = lines
                    .next()
                    .unwrap()
                    .strip_prefix("event: ")
                    .unwrap()
                    .to_string();
                let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
                (kind, serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    #[test]
    fn stream_becomes_anthropic_events_at_every_split() {
        let out = same_at_every_split(
            AnthropicClient::default,
            200,
            "text/event-stream",
            CANONICAL_STREAM.as_bytes(),
        );
        let events = events(&out);
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["id"], "msg_chatcmpl-1");
        assert_eq!(events[2].1["content_block"]["type"], "thinking");
        assert_eq!(events[6].1["delta"]["text"], "Hi \u{4f60}");
        assert_eq!(
            events[8].1["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}})
        );
        assert_eq!(events[8].1["index"], 2);
        let delta = &events[12].1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            delta["usage"],
            json!({"input_tokens": 15, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5, "output_tokens": 9})
        );
    }

    #[test]
    fn cut_stream_ends_with_an_error_event() {
        let cut = &CANONICAL_STREAM[..CANONICAL_STREAM.find("data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},").unwrap()];
        let mut client = AnthropicClient::default();
        client.plan(200, "text/event-stream");
        let mut out = Vec::new();
        client.translate(cut.as_bytes(), true, &mut out);
        let (kind, data) = events(&out).pop().unwrap();
        assert_eq!(kind, "error");
        assert_eq!(data["error"]["type"], "api_error");
    }

    #[test]
    fn completion_and_error_in_anthropic_shape() {
        let mut client = AnthropicClient::default();
        client.plan(200, "application/json");
        let mut out = Vec::new();
        client.translate(br#"{"id":"chatcmpl-9","model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#, true, &mut out);
        let m: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(m["type"], "message");
        assert_eq!(m["content"], json!([{"type": "text", "text": "Hello"}]));
        assert_eq!(m["stop_reason"], "max_tokens");
        assert_eq!(m["usage"]["output_tokens"], 4);
        let mut client = AnthropicClient::default();
        client.plan(429, "application/json");
        let mut out = Vec::new();
        client.translate(
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
            true,
            &mut out,
        );
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
    }

    fn whole(status: u16, body: &[u8]) -> Value {
        let mut client = AnthropicClient::default();
        client.plan(status, "application/json");
        let mut out = Vec::new();
        client.translate(body, true, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn an_error_sent_with_status_200_is_an_anthropic_error() {
        let e = whole(
            200,
            br#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#,
        );
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "api_error", "message": "Incorrect API key"}})
        );
    }

    #[test]
    fn answers_that_do_not_parse_are_errors_without_the_provider_bytes() {
        for body in [
            &br#"{"choices":[{"message":{"content":"\ud83d secret"}}]}"#[..],
            b"{\"choices\":[{\"message\":{\"content\":\"\xff secret\"}}]}",
        ] {
            let e = whole(200, body);
            assert_eq!(e["type"], "error");
            assert_eq!(e["error"]["type"], "api_error");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        let stream = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
                      data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\ud83d secret\"}}]}\n\n\
                      data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                      data: [DONE]\n\n";
        let out = same_at_every_split(
            AnthropicClient::default,
            200,
            "text/event-stream",
            stream.as_bytes(),
        );
        let events = events(&out);
        let (kind, data) = events.last().unwrap();
        assert_eq!(kind, "error", "{events:?}");
        assert_eq!(data["error"]["message"], errors::UNREADABLE);
        assert!(
            !events.iter().any(|(k, _)| k == "message_stop"),
            "{events:?}"
        );
    }
}
