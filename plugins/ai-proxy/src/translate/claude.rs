//! The provider edge for Anthropic's Messages API: canonical requests become Messages
//! requests, and Messages responses (JSON or the named SSE events) become canonical
//! completions and `chat.completion.chunk` streams.

use super::anthropic::{finish_reason, image_source};
use super::canonical::{ChunkWriter, Completion};
use super::errors;
use super::{Plan, ProviderAdapter, ResponseStage};
use aigw_shared::body::is_event_stream;
use aigw_shared::error::ApiError;
use aigw_shared::openai::{ChatRequest, Content, Message};
use aigw_shared::sse::Decoder;
use aigw_shared::usage::TokenCounts;
use serde_json::{json, Map, Value};

pub struct Claude {
    version: String,
    default_max_tokens: u64,
    created: u64,
    include_usage: bool,
    status: u16,
    mode: Mode,
    decoder: Decoder,
    whole: Vec<u8>,
    stream: StreamState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Whole,
}

/// What the stream translation remembers between events.
#[derive(Default)]
struct StreamState {
    writer: ChunkWriter,
    /// Anthropic block index of each tool call, in order: the OpenAI tool-call index.
    tool_blocks: Vec<u64>,
}

impl Claude {
    pub fn new(version: &str, default_max_tokens: u64, created: u64) -> Self {
        Claude {
            version: version.to_string(),
            default_max_tokens,
            created,
            include_usage: false,
            status: 0,
            mode: Mode::Whole,
            decoder: Decoder::new(),
            whole: Vec::new(),
            stream: StreamState {
                writer: ChunkWriter::new(created),
                tool_blocks: Vec::new(),
            },
        }
    }
}

impl ProviderAdapter for Claude {
    fn chat_request(&mut self, request: ChatRequest, model: &str) -> Result<Vec<u8>, ApiError> {
        self.include_usage = request.include_usage();
        let body = messages_request(request, model, self.default_max_tokens)?;
        serde_json::to_vec(&body)
            .map_err(|e| ApiError::new(500, "server_error", format!("cannot encode request: {e}")))
    }

    fn extra_headers(&self) -> Vec<(&'static str, String)> {
        vec![("anthropic-version", self.version.clone())]
    }
}

impl ResponseStage for Claude {
    fn plan(&mut self, status: u16, content_type: &str) -> Plan {
        self.status = status;
        if status < 300 && is_event_stream(content_type) {
            self.mode = Mode::Stream;
            self.stream.writer.include_usage = self.include_usage;
            Plan::STREAM
        } else {
            self.mode = Mode::Whole;
            Plan {
                content_type: Some("application/json"),
                ..Plan::WHOLE
            }
        }
    }

    fn translate(&mut self, input: &[u8], end: bool, out: &mut Vec<u8>) {
        match self.mode {
            Mode::Whole => {
                self.whole.extend_from_slice(input);
                if end {
                    let body = if self.status >= 300 {
                        errors::from_provider(self.status, &self.whole).body(Default::default())
                    } else {
                        completion(&self.whole, self.created)
                    };
                    out.extend_from_slice(&body);
                }
            }
            Mode::Stream => {
                for event in super::json_events(&mut self.decoder, input, end) {
                    match event {
                        Ok(event) => self.on_event(&event, out),
                        Err(_) => self
                            .stream
                            .writer
                            .error(out, "server_error", errors::UNREADABLE),
                    }
                }
                let writer = &mut self.stream.writer;
                if end && !writer.is_done() {
                    // The provider ended without `message_stop`: say so rather than let a cut
                    // stream look complete.
                    let message = if writer.is_finished() {
                        "stream ended before message_stop"
                    } else {
                        "provider ended the stream early"
                    };
                    writer.error(out, "api_error", message);
                }
            }
        }
    }
}

impl Claude {
    fn on_event(&mut self, event: &Value, out: &mut Vec<u8>) {
        let StreamState {
            writer,
            tool_blocks,
        } = &mut self.stream;
        if writer.is_done() {
            return;
        }
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                let message = &event["message"];
                writer.id = message["id"].as_str().unwrap_or_default().to_string();
                writer.model = message["model"].as_str().unwrap_or_default().to_string();
                if let Some(counts) = TokenCounts::from_json(event) {
                    writer.usage.merge(&counts);
                }
                writer.start(out);
            }
            "content_block_start" => {
                let block = &event["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") => {
                        tool_blocks.push(event["index"].as_u64().unwrap_or(0));
                        let id = block["id"].as_str().unwrap_or_default();
                        let name = block["name"].as_str().unwrap_or_default();
                        writer.tool_start(out, id, name);
                    }
                    Some("text") => writer.text(out, block["text"].as_str().unwrap_or("")),
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => writer.text(out, delta["text"].as_str().unwrap_or("")),
                    Some("thinking_delta") => {
                        writer.reasoning(out, delta["thinking"].as_str().unwrap_or(""))
                    }
                    Some("input_json_delta") => {
                        let block = event["index"].as_u64().unwrap_or(0);
                        if let Some(index) = tool_blocks.iter().position(|&b| b == block) {
                            let fragment = delta["partial_json"].as_str().unwrap_or("");
                            writer.tool_arguments(out, index, fragment);
                        }
                    }
                    _ => {} // signature_delta, citations_delta: nothing in the OpenAI format
                }
            }
            "message_delta" => {
                if let Some(counts) = TokenCounts::from_json(event) {
                    writer.usage.merge(&counts);
                }
                if let Some(reason) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    writer.finish(out, finish_reason(reason));
                }
            }
            "message_stop" => writer.end(out),
            "error" => {
                let kind = event
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                let message = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("provider error");
                writer.error(out, kind, message);
            }
            _ => {} // ping, content_block_stop
        }
    }
}

/// A canonical chat request as an Anthropic Messages request.
fn messages_request(
    request: ChatRequest,
    model: &str,
    default_max_tokens: u64,
) -> Result<Value, ApiError> {
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, message) in request.messages.into_iter().enumerate() {
        match message.role.as_str() {
            "system" | "developer" => {
                system.push(message.content.map(|c| c.text()).unwrap_or_default())
            }
            "user" => push_turn(&mut messages, "user", user_blocks(message.content)),
            "assistant" => push_turn(&mut messages, "assistant", assistant_blocks(message)),
            "tool" | "function" => {
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                    "content": message.content.map(|c| c.text()).unwrap_or_default(),
                });
                push_turn(&mut messages, "user", vec![block]);
            }
            other => {
                return Err(ApiError::invalid_request(
                    Some(&format!("messages[{i}].role")),
                    format!("messages[{i}].role: unsupported role {other:?}"),
                ))
            }
        }
    }
    if messages.is_empty() && !system.is_empty() {
        // OpenAI accepts a conversation of instructions only; Anthropic needs a user turn.
        push_turn(
            &mut messages,
            "user",
            vec![json!({"type": "text", "text": system.join("\n\n")})],
        );
        system.clear();
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(request
            .max_completion_tokens
            .or(request.max_tokens)
            .unwrap_or(default_max_tokens)),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = request.temperature {
        // Anthropic's range is 0..=1, OpenAI's 0..=2.
        body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = request.stop {
        body.insert("stop_sequences".into(), json!(stop.to_vec()));
    }
    if request.stream == Some(true) {
        body.insert("stream".into(), json!(true));
    }
    let parallel = request
        .extra
        .get("parallel_tool_calls")
        .and_then(Value::as_bool);
    if let Some(tools) = request.tools.filter(|t| !t.is_empty()) {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|t| {
                let mut tool = json!({"name": t.function.name, "input_schema": t.function.parameters.unwrap_or(json!({"type": "object"}))});
                if let Some(d) = t.function.description {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = tool_choice(request.tool_choice.as_ref(), parallel) {
            body.insert("tool_choice".into(), choice);
        }
    }
    for key in ["thinking", "top_k", "metadata"] {
        if let Some(v) = request.extra.get(key) {
            body.insert(key.into(), v.clone());
        }
    }
    if let Some(user) = request.extra.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(body))
}

fn tool_choice(choice: Option<&Value>, parallel: Option<bool>) -> Option<Value> {
    let mut out = match choice {
        None => json!({"type": "auto"}),
        Some(Value::String(s)) if s == "none" => return Some(json!({"type": "none"})),
        Some(Value::String(s)) if s == "required" => json!({"type": "any"}),
        Some(Value::Object(o)) => match o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
        {
            Some(name) => json!({"type": "tool", "name": name}),
            None => json!({"type": "auto"}),
        },
        Some(_) => json!({"type": "auto"}),
    };
    if parallel == Some(false) {
        out["disable_parallel_tool_use"] = json!(true);
    }
    Some(out)
}

/// Appends blocks as a turn of `role` (Anthropic wants user and assistant turns to alternate).
fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    super::canonical::push_turn(messages, role, "content", blocks);
}

fn user_blocks(content: Option<Content>) -> Vec<Value> {
    match content {
        None => Vec::new(),
        Some(Content::Text(text)) => vec![json!({"type": "text", "text": text})],
        Some(Content::Parts(parts)) => parts
            .into_iter()
            .filter_map(
                |part| match (part.kind.as_str(), part.text, part.image_url) {
                    ("text", Some(text), _) => Some(json!({"type": "text", "text": text})),
                    ("image_url", _, Some(image)) => {
                        Some(json!({"type": "image", "source": image_source(&image.url)}))
                    }
                    _ => None,
                },
            )
            .collect(),
    }
}

fn assistant_blocks(message: Message) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(text) = message.content.map(|c| c.text()).filter(|t| !t.is_empty()) {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for call in message.tool_calls.unwrap_or_default() {
        let input: Value = serde_json::from_str(&call.function.arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        blocks.push(json!({"type": "tool_use", "id": call.id.unwrap_or_default(), "name": call.function.name.unwrap_or_default(), "input": input}));
    }
    blocks
}

/// An Anthropic message (JSON) as a canonical completion.
fn completion(body: &[u8], created: u64) -> Vec<u8> {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return errors::unreadable().body(Default::default());
    };
    let text_of = |value: &Value| value.as_str().unwrap_or_default().to_string();
    let mut answer = Completion {
        id: text_of(&message["id"]),
        model: text_of(&message["model"]),
        created,
        finish_reason: finish_reason(message["stop_reason"].as_str().unwrap_or("end_turn"))
            .to_string(),
        usage: TokenCounts::from_json(&message).unwrap_or_default(),
        ..Completion::default()
    };
    for block in message["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => answer.text.push_str(block["text"].as_str().unwrap_or("")),
            Some("thinking") => answer
                .reasoning
                .push_str(block["thinking"].as_str().unwrap_or("")),
            Some("tool_use") => answer.tool_calls.push((
                text_of(&block["id"]),
                text_of(&block["name"]),
                block["input"].to_string(),
            )),
            _ => {}
        }
    }
    answer.to_json()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{chunks, same_at_every_split};
    use super::*;

    fn translate_request(body: Value) -> Value {
        let request: ChatRequest = serde_json::from_value(body).unwrap();
        messages_request(request, "claude-x", 4096).unwrap()
    }

    #[test]
    fn request_system_tools_images_and_tool_results() {
        let body = translate_request(json!({
            "model": "gpt", "temperature": 1.5, "stop": "END", "parallel_tool_calls": false,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        }));
        assert_eq!(body["model"], "claude-x");
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["temperature"], 1.0);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(
            messages.len(),
            3,
            "tool result and the next user text merge into one user turn: {messages:#?}"
        );
        assert_eq!(
            messages[0]["content"][1]["source"]["media_type"],
            "image/png"
        );
        assert_eq!(
            messages[1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}})
        );
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][1]["text"], "thanks");
        assert_eq!(
            body["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn unknown_roles_are_refused_with_their_index() {
        let request: ChatRequest = serde_json::from_value(
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
        )
        .unwrap();
        let err = messages_request(request, "m", 1).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].role"));
    }

    #[test]
    fn completion_with_text_thinking_and_tools() {
        let out: Value = serde_json::from_slice(&completion(
            br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","stop_reason":"tool_use",
                 "content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"text","text":"Let me check."},
                            {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],
                 "usage":{"input_tokens":10,"cache_read_input_tokens":4,"output_tokens":7}}"#,
            5,
        ))
        .unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me check.");
        assert_eq!(choice["message"]["reasoning_content"], "hmm");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(out["usage"]["prompt_tokens"], 14);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(out["usage"]["total_tokens"], 21);
    }

    const STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}   }\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
        event: ping\ndata: {\"type\": \"ping\"}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"H\u{e9}llo\"}}\n\n\
        event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n\
        event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n\
        event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn stream_adapter(include_usage: bool) -> Claude {
        let mut c = Claude::new("2023-06-01", 1024, 7);
        c.include_usage = include_usage;
        c
    }

    #[test]
    fn stream_becomes_openai_chunks_at_every_split() {
        let out = same_at_every_split(
            || stream_adapter(true),
            200,
            "text/event-stream",
            STREAM.as_bytes(),
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        let chunks = chunks(&out);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "H\u{e9}llo");
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "toolu_1"
        );
        let args: String = chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/tool_calls/0/function/arguments")?
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"city": "Paris"})
        );
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        let usage = &chunks[chunks.len() - 1]["usage"];
        assert_eq!(
            (
                usage["prompt_tokens"].as_u64(),
                usage["completion_tokens"].as_u64()
            ),
            (Some(12), Some(30))
        );
    }

    #[test]
    fn stream_without_usage_request_has_no_usage_chunk() {
        let out = same_at_every_split(
            || stream_adapter(false),
            200,
            "text/event-stream",
            STREAM.as_bytes(),
        );
        assert!(chunks(&out).iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn cut_stream_ends_with_an_error_not_a_clean_finish() {
        let cut = &STREAM[..STREAM.find("event: message_delta").unwrap()];
        let mut c = stream_adapter(true);
        c.plan(200, "text/event-stream");
        let mut out = Vec::new();
        c.translate(cut.as_bytes(), true, &mut out);
        let last = chunks(&out).pop().unwrap();
        assert_eq!(last["error"]["message"], "provider ended the stream early");
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn errors_become_openai_errors() {
        let mut c = stream_adapter(false);
        c.plan(404, "application/json");
        let mut out = Vec::new();
        c.translate(br#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-nope"}}"#, true, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "model: claude-nope", "type": "not_found_error", "param": null, "code": null}})
        );
    }
}
