//! The provider edge for Ollama's native API (`POST /api/chat`).
//!
//! Requests: `messages` (images as raw base64 in `images`, tool calls with object arguments,
//! tool results named by `tool_name`), `options` (`num_predict`, `temperature`, …), `format`,
//! `think`, and `stream` always set (Ollama streams unless told not to). Answers: one JSON
//! object, or NDJSON (`application/x-ndjson`: one object per line, the last with `done: true`,
//! `done_reason` and the `prompt_eval_count` / `eval_count` usage). Tool calls come whole and
//! without ids; the gateway names them.

use super::canonical::{self, Answer, ChunkWriter, Completion, ResponseBody};
use super::{Plan, ProviderAdapter, ResponseStage};
use aigw_shared::error::ApiError;
use aigw_shared::openai::{ChatRequest, Content};
use aigw_shared::usage::TokenCounts;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Longest NDJSON line held while waiting for its end.
const MAX_LINE_BYTES: usize = 1 << 20;

pub struct Ollama {
    created: u64,
    model: String,
    response: ResponseBody,
    lines: Lines,
    writer: ChunkWriter,
}

impl Ollama {
    pub fn new(created: u64) -> Self {
        Ollama {
            created,
            model: String::new(),
            response: ResponseBody::default(),
            lines: Lines::default(),
            writer: ChunkWriter::new(created),
        }
    }
}

impl ProviderAdapter for Ollama {
    fn chat_request(&mut self, request: ChatRequest, model: &str) -> Result<Vec<u8>, ApiError> {
        self.model = model.to_string();
        self.writer.include_usage = request.include_usage();
        self.writer.model = model.to_string();
        self.writer.id = format!("chatcmpl-ollama-{}", self.created);
        canonical::encode(&chat_request(request, model)?)
    }
}

impl ResponseStage for Ollama {
    fn plan(&mut self, status: u16, content_type: &str) -> Plan {
        let ndjson = content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-ndjson"));
        let plan = self.response.plan(status, ndjson);
        if self.response.streaming {
            Plan {
                content_type: Some("text/event-stream"),
                ..plan
            }
        } else {
            plan
        }
    }

    fn translate(&mut self, input: &[u8], end: bool, out: &mut Vec<u8>) {
        if !self.response.streaming {
            let (id, created, model) = (self.writer.id.clone(), self.created, self.model.clone());
            self.response
                .whole(input, end, out, |body| completion(body, id, created, model));
            return;
        }
        let mut lines = Vec::new();
        let fits = self.lines.push(input, end, |line| lines.push(line));
        for line in lines {
            match serde_json::from_slice::<Value>(&line) {
                Ok(value) => self.on_line(&value, out),
                Err(_) => {
                    self.writer
                        .error(out, "api_error", "provider sent a line that is not JSON")
                }
            }
        }
        if !fits {
            self.writer
                .error(out, "api_error", "provider sent a line longer than 1 MiB");
        }
        if end {
            self.writer.end_of_body(out);
        }
    }
}

impl Ollama {
    fn on_line(&mut self, line: &Value, out: &mut Vec<u8>) {
        if let Some(error) = line["error"].as_str() {
            self.writer.error(out, "api_error", error);
            return;
        }
        read_object(line, self.created, &mut self.writer, out);
    }
}

/// Reads a chat object (a whole answer, or one line of a stream) into `answer`.
fn read_object(object: &Value, created: u64, answer: &mut impl Answer, out: &mut Vec<u8>) {
    let message = &object["message"];
    answer.reasoning(out, message["thinking"].as_str().unwrap_or(""));
    answer.text(out, message["content"].as_str().unwrap_or(""));
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let (id, name, arguments) = tool_call(call, created, answer.tool_calls());
        answer.tool_call(out, &id, &name, &arguments);
    }
    if object["done"] == true {
        if let Some(counts) = TokenCounts::from_json(object) {
            answer.usage(&counts);
        }
        let reason = finish_reason(object["done_reason"].as_str(), answer.tool_calls() > 0);
        answer.finish(out, reason);
    }
}

/// Splits a body into lines, holding at most one incomplete line (bounded).
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
    overflowed: bool,
}

impl Lines {
    /// Calls `on_line` for every complete non-blank line (and the last one at `end`); `false`
    /// once a line outgrew the bound (it is dropped).
    fn push(&mut self, input: &[u8], end: bool, mut on_line: impl FnMut(Vec<u8>)) -> bool {
        let mut rest = input;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            let line = std::mem::take(&mut self.partial);
            if !self.overflowed && !line.iter().all(u8::is_ascii_whitespace) {
                on_line(line);
            }
            self.overflowed = false;
        }
        if self.partial.len() + rest.len() > MAX_LINE_BYTES {
            self.partial = Vec::new();
            self.overflowed = true;
            return false;
        }
        self.partial.extend_from_slice(rest);
        if end {
            let line = std::mem::take(&mut self.partial);
            if !line.iter().all(u8::is_ascii_whitespace) {
                on_line(line);
            }
        }
        true
    }
}

fn finish_reason(reason: Option<&str>, called_tools: bool) -> &'static str {
    match reason {
        Some("length") => "length",
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

/// (id, name, arguments) of a native tool call; Ollama gives no id.
fn tool_call(call: &Value, created: u64, n: usize) -> (String, String, String) {
    let function = &call["function"];
    let id = call["id"]
        .as_str()
        .map_or_else(|| format!("call_{created}_{n}"), str::to_string);
    let arguments = match &function["arguments"] {
        Value::String(s) => s.clone(),
        Value::Null => "{}".into(),
        other => other.to_string(),
    };
    (
        id,
        function["name"].as_str().unwrap_or_default().to_string(),
        arguments,
    )
}

fn completion(body: &[u8], id: String, created: u64, model: String) -> Vec<u8> {
    let response = match canonical::parse_body(body) {
        Ok(response) => response,
        Err(error) => return error,
    };
    let mut completion = Completion {
        id,
        model: response["model"].as_str().map_or(model, str::to_string),
        created,
        ..Default::default()
    };
    read_object(&response, created, &mut completion, &mut Vec::new());
    completion.to_json()
}

/// A canonical chat request as a native `/api/chat` request.
fn chat_request(request: ChatRequest, model: &str) -> Result<Value, ApiError> {
    let mut messages = Vec::new();
    // Tool call id → name, as seen so far.
    let mut names: HashMap<String, String> = HashMap::new();
    for (i, message) in request.messages.iter().enumerate() {
        let text = message
            .content
            .as_ref()
            .map(Content::text)
            .unwrap_or_default();
        let converted = match message.role.as_str() {
            "system" | "developer" => json!({"role": "system", "content": text}),
            "user" => {
                let mut turn = json!({"role": "user", "content": text});
                let images = images(i, message.content.as_ref())?;
                if !images.is_empty() {
                    turn["images"] = json!(images);
                }
                turn
            }
            "assistant" => {
                let mut turn = json!({"role": "assistant", "content": text});
                if let Some(calls) = message.tool_calls.as_ref().filter(|c| !c.is_empty()) {
                    for call in calls {
                        if let (Some(id), Some(name)) = (&call.id, &call.function.name) {
                            names.insert(id.clone(), name.clone());
                        }
                    }
                    turn["tool_calls"] = calls
                        .iter()
                        .map(|c| json!({"function": {"name": c.function.name, "arguments": canonical::arguments_object(&c.function.arguments)}}))
                        .collect();
                }
                turn
            }
            "tool" | "function" => {
                let mut turn = json!({"role": "tool", "content": text});
                let id = message.tool_call_id.clone().unwrap_or_default();
                if let Some(name) = names.get(&id).or(message.name.as_ref()) {
                    turn["tool_name"] = json!(name);
                }
                turn
            }
            other => return Err(canonical::unsupported_role(i, other)),
        };
        messages.push(converted);
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(request.is_stream()));
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        body.insert(
            "tools".into(),
            serde_json::to_value(tools).unwrap_or_default(),
        );
    }
    let mut options = Map::new();
    canonical::put_sampling(
        &mut options,
        &request,
        &[
            ("max_tokens", "num_predict"),
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("top_k", "top_k"),
            ("seed", "seed"),
            ("frequency_penalty", "frequency_penalty"),
            ("presence_penalty", "presence_penalty"),
            ("stop", "stop"),
        ],
    );
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    let format = request.extra.get("response_format");
    match format.and_then(|f| f["type"].as_str()) {
        Some("json_object") => {
            body.insert("format".into(), json!("json"));
        }
        Some("json_schema") => {
            if let Some(schema) = format.and_then(|f| f.pointer("/json_schema/schema")) {
                body.insert("format".into(), schema.clone());
            }
        }
        _ => {}
    }
    let effort = request
        .extra
        .get("reasoning_effort")
        .and_then(Value::as_str);
    let anthropic_thinking = request
        .extra
        .get("thinking")
        .map(|t| t["type"] == "enabled");
    if let Some(think) = effort.map(|e| e != "none").or(anthropic_thinking) {
        body.insert("think".into(), json!(think));
    }
    Ok(Value::Object(body))
}

/// The raw base64 of a user message's images (Ollama takes no URLs).
fn images(index: usize, content: Option<&Content>) -> Result<Vec<String>, ApiError> {
    let Some(Content::Parts(parts)) = content else {
        return Ok(Vec::new());
    };
    parts
        .iter()
        .filter_map(|p| p.image_url.as_ref())
        .map(|image| {
            canonical::data_url(&image.url)
                .map(|(_, data)| data.to_string())
                .ok_or_else(|| canonical::inline_images_only(index))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{chunks, same_at_every_split};
    use super::*;

    #[test]
    fn request_options_images_and_tool_results() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "x", "max_tokens": 10, "temperature": 0.1, "stop": ["END"], "reasoning_effort": "low",
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"}
            ]
        }))
        .unwrap();
        let body = chat_request(request, "llama3.2").unwrap();
        assert_eq!(body["stream"], false, "Ollama streams unless told not to");
        assert_eq!(
            body["messages"][0],
            json!({"role": "user", "content": "look", "images": ["AAAA"]})
        );
        assert_eq!(
            body["messages"][1]["tool_calls"][0],
            json!({"function": {"name": "f", "arguments": {"a": 1}}})
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "tool", "content": "ok", "tool_name": "f"})
        );
        assert_eq!(
            body["options"],
            json!({"num_predict": 10, "temperature": 0.1, "stop": ["END"]})
        );
        assert_eq!(
            (body["format"].as_str(), body["think"].as_bool()),
            (Some("json"), Some(true))
        );
    }

    const STREAM: &str = "{\"model\":\"qwen3\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"hm\"},\"done\":false}\n\
        {\"model\":\"qwen3\",\"message\":{\"role\":\"assistant\",\"content\":\"H\u{e9}llo\"},\"done\":false}\n\
        {\"model\":\"qwen3\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1}}}]},\"done\":false}\n\
        {\"model\":\"qwen3\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"prompt_eval_count\":10,\"eval_count\":20}";

    #[test]
    fn ndjson_becomes_openai_chunks_at_every_split() {
        let out = same_at_every_split(
            || {
                let mut o = Ollama::new(5);
                o.writer.include_usage = true;
                o
            },
            200,
            "application/x-ndjson",
            STREAM.as_bytes(),
        );
        let text = String::from_utf8(out).unwrap();
        let chunks = chunks(text.as_bytes());
        assert_eq!(chunks[1]["choices"][0]["delta"]["reasoning_content"], "hm");
        assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "H\u{e9}llo");
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "call_5_0"
        );
        assert_eq!(
            chunks[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["usage"]["total_tokens"], 30);
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn errors_and_overlong_lines() {
        let mut o = Ollama::new(1);
        o.plan(404, "application/json; charset=utf-8");
        let mut out = Vec::new();
        o.translate(br#"{"error":"model 'x' not found"}"#, true, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "model 'x' not found");

        let mut o = Ollama::new(1);
        o.plan(200, "application/x-ndjson");
        let mut out = Vec::new();
        o.translate(&vec![b'x'; MAX_LINE_BYTES + 1], false, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("longer than 1 MiB"));
    }
}
