//! The provider edge for Cohere's Chat API v2 (`POST /v2/chat`).
//!
//! Requests are close to OpenAI's (messages, OpenAI-shaped tools); sampling fields are renamed
//! (`p`, `k`, `stop_sequences`) and `tool_choice` is upper-case. Answers: `message.content`
//! text, the `tool_plan` (the model's reasoning before calling tools) as `reasoning_content`,
//! tool calls, `finish_reason`, usage in `usage.tokens` (and `cached_tokens`). Streams are
//! named SSE events (`message-start`, `content-delta`, `tool-plan-delta`, `tool-call-start`,
//! `tool-call-delta`, `message-end` with the finish reason and usage).

use super::canonical::{self, ChunkWriter, Completion, ResponseBody};
use super::{errors, Plan, ProviderAdapter, ResponseStage};
use aigw_shared::body::is_event_stream;
use aigw_shared::error::ApiError;
use aigw_shared::openai::{ChatRequest, Content};
use aigw_shared::sse::Decoder;
use aigw_shared::usage::TokenCounts;
use serde_json::{json, Map, Value};

pub struct Cohere {
    created: u64,
    model: String,
    response: ResponseBody,
    decoder: Decoder,
    writer: ChunkWriter,
    /// Cohere's tool-call `index` of each call, in order: the OpenAI tool-call index.
    tool_indexes: Vec<u64>,
}

impl Cohere {
    pub fn new(created: u64) -> Self {
        Cohere {
            created,
            model: String::new(),
            response: ResponseBody::default(),
            decoder: Decoder::new(),
            writer: ChunkWriter::new(created),
            tool_indexes: Vec::new(),
        }
    }
}

impl ProviderAdapter for Cohere {
    fn chat_request(&mut self, request: ChatRequest, model: &str) -> Result<Vec<u8>, ApiError> {
        self.model = model.to_string();
        self.writer.include_usage = request.include_usage();
        self.writer.model = model.to_string();
        canonical::encode(&chat_request(request, model)?)
    }
}

impl ResponseStage for Cohere {
    fn plan(&mut self, status: u16, content_type: &str) -> Plan {
        self.response.plan(status, is_event_stream(content_type))
    }

    fn translate(&mut self, input: &[u8], end: bool, out: &mut Vec<u8>) {
        if !self.response.streaming {
            let (created, model) = (self.created, self.model.clone());
            self.response
                .whole(input, end, out, |body| completion(body, created, model));
            return;
        }
        for event in super::json_events(&mut self.decoder, input, end) {
            match event {
                Ok(event) => self.on_event(&event, out),
                Err(_) => self.writer.error(out, "server_error", errors::UNREADABLE),
            }
        }
        if end {
            self.writer.end_of_body(out);
        }
    }
}

impl Cohere {
    fn on_event(&mut self, event: &Value, out: &mut Vec<u8>) {
        let message = &event["delta"]["message"];
        match event["type"].as_str().unwrap_or("") {
            "message-start" => {
                self.writer.id = event["id"].as_str().unwrap_or_default().to_string();
                self.writer.start(out);
            }
            "content-delta" => {
                let content = &message["content"];
                if let Some(text) = content["text"].as_str() {
                    self.writer.text(out, text);
                } else if let Some(thinking) = content["thinking"].as_str() {
                    self.writer.reasoning(out, thinking);
                }
            }
            "tool-plan-delta" => {
                self.writer
                    .reasoning(out, message["tool_plan"].as_str().unwrap_or(""));
            }
            "tool-call-start" => {
                let call = &message["tool_calls"];
                self.tool_indexes.push(event["index"].as_u64().unwrap_or(0));
                let index = self.writer.tool_start(
                    out,
                    call["id"].as_str().unwrap_or_default(),
                    call["function"]["name"].as_str().unwrap_or_default(),
                );
                let arguments = call["function"]["arguments"].as_str().unwrap_or("");
                self.writer.tool_arguments(out, index, arguments);
            }
            "tool-call-delta" => {
                let cohere_index = event["index"].as_u64().unwrap_or(0);
                if let Some(index) = self.tool_indexes.iter().position(|&i| i == cohere_index) {
                    let fragment = message["tool_calls"]["function"]["arguments"]
                        .as_str()
                        .unwrap_or("");
                    self.writer.tool_arguments(out, index, fragment);
                }
            }
            "message-end" => {
                self.writer.usage.merge(&usage(&event["delta"]));
                let reason = event["delta"]["finish_reason"]
                    .as_str()
                    .unwrap_or("COMPLETE");
                self.writer.finish(out, finish_reason(reason));
            }
            _ => {} // content-start/end, tool-call-end, citations
        }
    }
}

/// Cohere's usage (`usage.tokens`, `usage.cached_tokens`) under `parent`.
fn usage(parent: &Value) -> TokenCounts {
    let mut counts = TokenCounts::from_json(parent).unwrap_or_default();
    counts.cached_input = parent["usage"]["cached_tokens"].as_u64().unwrap_or(0);
    counts
}

/// Cohere `finish_reason` → OpenAI `finish_reason`.
fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "TOOL_CALL" => "tool_calls",
        _ => "stop", // COMPLETE, STOP_SEQUENCE, ERROR, TIMEOUT
    }
}

/// A v2 chat response as a canonical completion.
fn completion(body: &[u8], created: u64, model: String) -> Vec<u8> {
    let response = match canonical::parse_body(body) {
        Ok(response) => response,
        Err(error) => return error,
    };
    let message = &response["message"];
    let mut completion = Completion {
        id: response["id"].as_str().unwrap_or_default().to_string(),
        model,
        created,
        reasoning: message["tool_plan"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        tool_calls: Vec::new(),
        finish_reason: finish_reason(response["finish_reason"].as_str().unwrap_or("COMPLETE"))
            .into(),
        usage: usage(&response),
        ..Default::default()
    };
    for block in message["content"].as_array().into_iter().flatten() {
        if let Some(text) = block["text"].as_str() {
            completion.text.push_str(text);
        } else if let Some(thinking) = block["thinking"].as_str() {
            completion.reasoning.push_str(thinking);
        }
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        completion.tool_calls.push((
            call["id"].as_str().unwrap_or_default().to_string(),
            call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            call["function"]["arguments"]
                .as_str()
                .unwrap_or("{}")
                .to_string(),
        ));
    }
    completion.to_json()
}

/// A canonical chat request as a v2 chat request.
fn chat_request(request: ChatRequest, model: &str) -> Result<Value, ApiError> {
    let mut messages = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let text = || {
            message
                .content
                .as_ref()
                .map(Content::text)
                .unwrap_or_default()
        };
        let converted = match message.role.as_str() {
            "system" | "developer" => json!({"role": "system", "content": text()}),
            "user" => json!({"role": "user", "content": user_content(message.content.as_ref())}),
            "assistant" => {
                let mut turn = json!({"role": "assistant"});
                let content = text();
                if !content.is_empty() {
                    turn["content"] = json!(content);
                }
                if let Some(calls) = message.tool_calls.as_ref().filter(|c| !c.is_empty()) {
                    turn["tool_calls"] = calls
                        .iter()
                        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}))
                        .collect();
                    if let Some(plan) = message.reasoning_content.as_ref().filter(|p| !p.is_empty())
                    {
                        turn["tool_plan"] = json!(plan);
                    }
                }
                turn
            }
            "tool" | "function" => {
                json!({"role": "tool", "tool_call_id": message.tool_call_id, "content": text()})
            }
            other => return Err(canonical::unsupported_role(i, other)),
        };
        messages.push(converted);
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    if request.is_stream() {
        body.insert("stream".into(), json!(true));
    }
    canonical::put_sampling(
        &mut body,
        &request,
        &[
            ("max_tokens", "max_tokens"),
            ("temperature", "temperature"),
            ("top_p", "p"),
            ("top_k", "k"),
            ("seed", "seed"),
            ("frequency_penalty", "frequency_penalty"),
            ("presence_penalty", "presence_penalty"),
            ("stop", "stop_sequences"),
        ],
    );
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value.filter(|v| !v.is_null()) {
            body.insert(key.into(), value);
        }
    };
    set(
        "response_format",
        response_format(request.extra.get("response_format")),
    );
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        set("tools", serde_json::to_value(tools).ok());
        set(
            "tool_choice",
            match request.tool_choice.as_ref().and_then(Value::as_str) {
                Some("required") => Some(json!("REQUIRED")),
                Some("none") => Some(json!("NONE")),
                _ => None,
            },
        );
    }
    Ok(Value::Object(body))
}

/// User content: a string, or OpenAI's text and image parts (Cohere takes the same shapes).
fn user_content(content: Option<&Content>) -> Value {
    match content {
        None => json!(""),
        Some(Content::Text(text)) => json!(text),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match (p.kind.as_str(), &p.text, &p.image_url) {
                ("text", Some(text), _) => Some(json!({"type": "text", "text": text})),
                ("image_url", _, Some(image)) => {
                    Some(json!({"type": "image_url", "image_url": {"url": image.url}}))
                }
                _ => None,
            })
            .collect(),
    }
}

fn response_format(format: Option<&Value>) -> Option<Value> {
    let format = format?;
    match format["type"].as_str()? {
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => Some(
            json!({"type": "json_object", "json_schema": format.pointer("/json_schema/schema")?}),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{chunks, same_at_every_split};
    use super::*;

    #[test]
    fn request_renames_sampling_and_keeps_tools() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "x", "stream": true, "max_completion_tokens": 20, "top_p": 0.9, "top_k": 3, "stop": "END",
            "response_format": {"type": "json_object"}, "tool_choice": "required",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "reasoning_content": "I will look it up.", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        }))
        .unwrap();
        let body = chat_request(request, "command-a").unwrap();
        assert_eq!(body["model"], "command-a");
        assert_eq!(body["stream"], true);
        assert_eq!(
            (
                body["max_tokens"].as_u64(),
                body["p"].as_f64(),
                body["k"].as_u64()
            ),
            (Some(20), Some(0.9), Some(3))
        );
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["tool_choice"], "REQUIRED");
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        assert_eq!(
            body["messages"][1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(body["messages"][2]["tool_plan"], "I will look it up.");
        assert!(body["messages"][2].get("content").is_none());
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "done"})
        );
        assert_eq!(body["tools"][0]["function"]["name"], "f");
    }

    const STREAM: &str = "event: message-start\ndata: {\"id\":\"m1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}\n\n\
        event: tool-plan-delta\ndata: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"I will\"}}}\n\n\
        event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"f_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}}}}\n\n\
        event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"a\\\":\"}}}}}\n\n\
        event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"1}\"}}}}}\n\n\
        event: tool-call-end\ndata: {\"type\":\"tool-call-end\",\"index\":0}\n\n\
        event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"billed_units\":{\"input_tokens\":2,\"output_tokens\":3},\"tokens\":{\"input_tokens\":20,\"output_tokens\":30},\"cached_tokens\":16}}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn stream_becomes_openai_chunks_at_every_split() {
        let out = same_at_every_split(
            || {
                let mut c = Cohere::new(1);
                c.writer.include_usage = true;
                c
            },
            200,
            "text/event-stream",
            STREAM.as_bytes(),
        );
        let text = String::from_utf8(out).unwrap();
        let chunks = chunks(text.as_bytes());
        assert_eq!(chunks[0]["id"], "m1");
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["reasoning_content"],
            "I will"
        );
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "f_1"
        );
        assert_eq!(
            chunks[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "1}"
        );
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        let usage = &chunks[6]["usage"];
        assert_eq!(
            (
                usage["prompt_tokens"].as_u64(),
                usage["completion_tokens"].as_u64()
            ),
            (Some(20), Some(30))
        );
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 16);
        assert_eq!(text.matches("[DONE]").count(), 1);
    }

    #[test]
    fn errors_keep_status_and_message() {
        let mut c = Cohere::new(1);
        c.plan(404, "application/json");
        let mut out = Vec::new();
        c.translate(
            br#"{"id":"x","message":"model 'nonexistent' not found"}"#,
            true,
            &mut out,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "model 'nonexistent' not found");
    }
}
