//! The provider edge for AWS Bedrock's Converse API (`/model/{modelId}/converse`, and
//! `/converse-stream`, whose answer is AWS event-stream binary framing, not SSE).
//!
//! Requests: `system`, `messages` with content blocks (`text`, `image` from data URLs,
//! `toolUse`, `toolResult`), `inferenceConfig`, `toolConfig`, and the configured
//! `additionalModelRequestFields`; signed with SigV4 (service `bedrock`) unless the provider
//! has Bedrock API keys (`Authorization: Bearer`). Answers: text, reasoning, tool calls whose
//! input streams as JSON fragments, `stopReason`, usage from the `metadata` event.

use super::canonical::{self, ChunkWriter, Completion, ResponseBody};
use super::eventstream::{self, Message as Frame};
use super::{Plan, ProviderAdapter, ResponseStage};
use crate::config::{AwsSettings, Provider};
use aigw_shared::error::ApiError;
use aigw_shared::openai::{ChatRequest, Content, Message};
use aigw_shared::sign::{self, SignableRequest, UtcTime};
use aigw_shared::usage::TokenCounts;
use serde_json::{json, Map, Value};

const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

pub struct Bedrock {
    authority: String,
    aws: Option<AwsSettings>,
    additional_fields: Map<String, Value>,
    now: u64,
    model: String,
    stream: bool,
    /// The signature headers of the request, once signed.
    signed: Vec<(&'static str, String)>,
    response: ResponseBody,
    frames: eventstream::Decoder,
    writer: ChunkWriter,
    /// Converse `contentBlockIndex` of each tool call, in order: the OpenAI tool-call index.
    tool_blocks: Vec<u64>,
}

impl Bedrock {
    pub fn new(provider: &Provider, now: u64) -> Self {
        Bedrock {
            authority: provider.authority.clone(),
            // API keys, when configured, replace signing.
            aws: provider.aws.clone().filter(|_| provider.keys.is_empty()),
            additional_fields: provider.bedrock_fields.clone(),
            now,
            model: String::new(),
            stream: false,
            signed: Vec::new(),
            response: ResponseBody::default(),
            frames: eventstream::Decoder::default(),
            writer: ChunkWriter::new(now),
            tool_blocks: Vec::new(),
        }
    }

    fn path(&self) -> String {
        let operation = if self.stream {
            "converse-stream"
        } else {
            "converse"
        };
        format!(
            "/model/{}/{operation}",
            sign::uri_encode(&self.model, false)
        )
    }
}

impl ProviderAdapter for Bedrock {
    fn chat_request(&mut self, request: ChatRequest, model: &str) -> Result<Vec<u8>, ApiError> {
        // Encoded into one path segment, but `..` would still climb out of `/model/`.
        self.model = canonical::path_segment(model)?.to_string();
        self.stream = request.is_stream();
        self.writer.include_usage = request.include_usage();
        self.writer.model = model.to_string();
        self.writer.id = format!("chatcmpl-bedrock-{}", self.now);
        let body = canonical::encode(&converse_request(request, &self.additional_fields)?)?;
        if let Some(credentials) = self
            .aws
            .as_ref()
            .and_then(|a| a.credentials.as_ref().map(|c| (a, c)))
        {
            let (aws, credentials) = credentials;
            let path = self.path();
            let request = SignableRequest {
                method: "POST",
                path: &path,
                query: Vec::new(),
                headers: vec![("host".into(), self.authority.clone())],
                body: &body,
            };
            let headers = sign::sigv4(
                &request,
                credentials,
                &aws.region,
                "bedrock",
                UtcTime::from_unix(self.now),
            );
            self.signed = headers
                .into_iter()
                .filter_map(|(name, value)| Some((signature_header(&name)?, value)))
                .collect();
        }
        Ok(body)
    }

    fn chat_path(&self) -> Option<String> {
        Some(self.path())
    }

    fn extra_headers(&self) -> Vec<(&'static str, String)> {
        self.signed.clone()
    }
}

/// The static name of a header SigV4 adds.
fn signature_header(name: &str) -> Option<&'static str> {
    [
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
        "authorization",
    ]
    .into_iter()
    .find(|known| *known == name)
}

impl ResponseStage for Bedrock {
    fn plan(&mut self, status: u16, content_type: &str) -> Plan {
        let event_stream = content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(EVENT_STREAM));
        let plan = self.response.plan(status, event_stream);
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
            let (id, model, created) = (self.writer.id.clone(), self.model.clone(), self.now);
            self.response
                .whole(input, end, out, |body| completion(body, id, model, created));
            return;
        }
        let mut frames = Vec::new();
        self.frames.push(input, |frame| frames.push(frame));
        for frame in frames {
            match frame {
                Ok(frame) => self.on_frame(&frame, out),
                Err(error) => self.writer.error(
                    out,
                    "api_error",
                    &format!("provider stream broken: {error}"),
                ),
            }
        }
        if end {
            self.writer.end_of_body(out);
        }
    }
}

impl Bedrock {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let event: Value = serde_json::from_slice(&frame.payload).unwrap_or(Value::Null);
        match frame.header(":message-type") {
            Some("event") => {}
            _ => {
                // `exception` (throttlingException, modelStreamErrorException, …) or `error`.
                let kind = frame
                    .header(":exception-type")
                    .or_else(|| frame.header(":error-code"))
                    .unwrap_or("api_error");
                let message = event["message"]
                    .as_str()
                    .or_else(|| frame.header(":error-message"))
                    .unwrap_or("provider error");
                self.writer.error(out, kind, message);
                return;
            }
        }
        match frame.header(":event-type").unwrap_or("") {
            "messageStart" => self.writer.start(out),
            "contentBlockStart" => {
                if let Some(tool) = event.pointer("/start/toolUse") {
                    self.tool_blocks
                        .push(event["contentBlockIndex"].as_u64().unwrap_or(0));
                    let id = tool["toolUseId"].as_str().unwrap_or_default();
                    let name = tool["name"].as_str().unwrap_or_default();
                    self.writer.tool_start(out, id, name);
                }
            }
            "contentBlockDelta" => {
                let delta = &event["delta"];
                if let Some(text) = delta["text"].as_str() {
                    self.writer.text(out, text);
                } else if let Some(text) = delta
                    .pointer("/reasoningContent/text")
                    .and_then(Value::as_str)
                {
                    self.writer.reasoning(out, text);
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                {
                    let block = event["contentBlockIndex"].as_u64().unwrap_or(0);
                    if let Some(index) = self.tool_blocks.iter().position(|&b| b == block) {
                        self.writer.tool_arguments(out, index, input);
                    }
                }
            }
            "messageStop" => {
                let reason = event["stopReason"].as_str().unwrap_or("end_turn");
                self.writer.finish(out, finish_reason(reason));
            }
            "metadata" => {
                if let Some(counts) = TokenCounts::from_json(&event) {
                    self.writer.usage.merge(&counts);
                }
            }
            _ => {} // contentBlockStop
        }
    }
}

/// Converse `stopReason` → OpenAI `finish_reason`.
fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop", // end_turn, stop_sequence
    }
}

/// A Converse response as a canonical completion.
fn completion(body: &[u8], id: String, model: String, created: u64) -> Vec<u8> {
    let response = match canonical::parse_body(body) {
        Ok(response) => response,
        Err(error) => return error,
    };
    let mut completion = Completion {
        id,
        model,
        created,
        finish_reason: finish_reason(response["stopReason"].as_str().unwrap_or("end_turn")).into(),
        usage: TokenCounts::from_json(&response).unwrap_or_default(),
        ..Default::default()
    };
    for block in response
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(text) = block["text"].as_str() {
            completion.text.push_str(text);
        } else if let Some(text) = block
            .pointer("/reasoningContent/reasoningText/text")
            .and_then(Value::as_str)
        {
            completion.reasoning.push_str(text);
        } else if let Some(tool) = block.get("toolUse") {
            completion.tool_calls.push((
                tool["toolUseId"].as_str().unwrap_or_default().to_string(),
                tool["name"].as_str().unwrap_or_default().to_string(),
                tool.get("input")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
            ));
        }
    }
    completion.to_json()
}

/// A canonical chat request as a Converse request.
fn converse_request(
    request: ChatRequest,
    additional_fields: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let mut messages: Vec<Value> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let (role, blocks) = match message.role.as_str() {
            "system" | "developer" => continue,
            "user" => ("user", user_blocks(i, message.content.as_ref())?),
            "assistant" => ("assistant", assistant_blocks(message)),
            "tool" | "function" => {
                let text = message
                    .content
                    .as_ref()
                    .map(Content::text)
                    .unwrap_or_default();
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(json) if json.is_object() => json!([{"json": json}]),
                    _ => json!([{"text": text}]),
                };
                let result = json!({"toolResult": {
                    "toolUseId": message.tool_call_id.clone().unwrap_or_default(),
                    "content": content,
                    "status": "success",
                }});
                ("user", vec![result])
            }
            other => return Err(canonical::unsupported_role(i, other)),
        };
        push_turn(&mut messages, role, blocks);
    }
    let mut system = canonical::system_text(&request.messages);
    if messages.is_empty() {
        // Converse needs a user turn; a conversation of instructions only becomes one.
        if let Some(text) = system.take() {
            push_turn(&mut messages, "user", vec![json!({"text": text})]);
        }
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    if let Some(system) = system {
        body.insert("system".into(), json!([{"text": system}]));
    }
    let mut inference = Map::new();
    canonical::put_sampling(
        &mut inference,
        &request,
        &[
            ("max_tokens", "maxTokens"),
            ("temperature", "temperature"),
            ("top_p", "topP"),
            ("stop", "stopSequences"),
        ],
    );
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        let specs: Vec<Value> = tools
            .iter()
            .map(|t| {
                let schema = t
                    .function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                let mut spec = json!({"name": t.function.name, "inputSchema": {"json": schema}});
                if let Some(d) = t.function.description.as_ref().filter(|d| !d.is_empty()) {
                    spec["description"] = json!(d);
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = json!({"tools": specs});
        if let Some(choice) = tool_choice(request.tool_choice.as_ref()) {
            config["toolChoice"] = choice;
        }
        body.insert("toolConfig".into(), config);
    }
    let mut additional = additional_fields.clone();
    for key in ["thinking", "top_k"] {
        if let Some(v) = request.extra.get(key) {
            additional.insert(key.into(), v.clone());
        }
    }
    if !additional.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
    }
    Ok(Value::Object(body))
}

fn tool_choice(choice: Option<&Value>) -> Option<Value> {
    match choice? {
        Value::String(s) if s == "required" => Some(json!({"any": {}})),
        Value::String(s) if s == "auto" => Some(json!({"auto": {}})),
        Value::Object(o) => {
            let name = o.get("function")?.get("name")?.as_str()?;
            Some(json!({"tool": {"name": name}}))
        }
        // `none` has no Converse equivalent; the tools stay declared (past tool blocks need them).
        _ => None,
    }
}

/// Appends blocks as a turn of `role` (Converse wants user and assistant turns to alternate).
fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    canonical::push_turn(messages, role, "content", blocks);
}

fn user_blocks(index: usize, content: Option<&Content>) -> Result<Vec<Value>, ApiError> {
    Ok(match content {
        None => Vec::new(),
        Some(Content::Text(text)) if text.is_empty() => Vec::new(),
        Some(Content::Text(text)) => vec![json!({"text": text})],
        Some(Content::Parts(parts)) => {
            let mut out = Vec::new();
            for part in parts {
                match (part.kind.as_str(), &part.text, &part.image_url) {
                    ("text", Some(text), _) if !text.is_empty() => out.push(json!({"text": text})),
                    ("image_url", _, Some(image)) => {
                        let (mime, data) = canonical::data_url(&image.url)
                            .ok_or_else(|| canonical::inline_images_only(index))?;
                        let format = mime.strip_prefix("image/").unwrap_or(mime);
                        out.push(json!({"image": {"format": format, "source": {"bytes": data}}}));
                    }
                    _ => {}
                }
            }
            out
        }
    })
}

fn assistant_blocks(message: &Message) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(text) = message
        .content
        .as_ref()
        .map(Content::text)
        .filter(|t| !t.is_empty())
    {
        blocks.push(json!({"text": text}));
    }
    for call in message.tool_calls.iter().flatten() {
        blocks.push(json!({"toolUse": {
            "toolUseId": call.id.clone().unwrap_or_default(),
            "name": call.function.name.clone().unwrap_or_default(),
            "input": canonical::arguments_object(&call.function.arguments),
        }}));
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::super::eventstream::encode;
    use super::super::testing::{chunks, same_at_every_split};
    use super::*;
    use aigw_shared::sign::AwsCredentials;

    fn adapter(signed: bool) -> Bedrock {
        Bedrock {
            authority: "bedrock-runtime.us-east-1.amazonaws.com".into(),
            aws: signed.then(|| AwsSettings {
                region: "us-east-1".into(),
                credentials: Some(AwsCredentials {
                    access_key_id: "AKIDEXAMPLE".into(),
                    secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                    session_token: None,
                }),
            }),
            additional_fields: Map::new(),
            now: 1_440_938_160,
            model: String::new(),
            stream: false,
            signed: Vec::new(),
            response: ResponseBody::default(),
            frames: eventstream::Decoder::default(),
            writer: ChunkWriter::new(1),
            tool_blocks: Vec::new(),
        }
    }

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn request_blocks_tools_and_inference_config() {
        let body = converse_request(
            request(json!({
                "model": "m", "max_tokens": 100, "temperature": 0.5, "stop": ["END"], "top_k": 5,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "tooluse_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "tooluse_1", "content": "{\"temp\": 18}"},
                    {"role": "user", "content": "thanks"}
                ],
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
            })),
            &Map::new(),
        )
        .unwrap();
        assert_eq!(body["system"], json!([{"text": "be brief"}]));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert_eq!(
            messages[0]["content"][1]["image"],
            json!({"format": "jpeg", "source": {"bytes": "AAAA"}})
        );
        assert_eq!(
            messages[1]["content"][0]["toolUse"],
            json!({"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}})
        );
        assert_eq!(
            messages[2]["content"][0]["toolResult"]["content"],
            json!([{"json": {"temp": 18}}])
        );
        assert_eq!(messages[2]["content"][1]["text"], "thanks");
        assert_eq!(
            body["inferenceConfig"],
            json!({"maxTokens": 100, "temperature": 0.5, "stopSequences": ["END"]})
        );
        assert_eq!(
            body["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "get_weather"}})
        );
        assert_eq!(
            body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["city"]
                ["type"],
            "string"
        );
        assert_eq!(body["additionalModelRequestFields"], json!({"top_k": 5}));
    }

    #[test]
    fn dot_segments_are_no_model() {
        for model in ["", ".", ".."] {
            let err = adapter(false)
                .chat_request(request(json!({"model": "x", "messages": []})), model)
                .unwrap_err();
            assert_eq!(err.status, 400, "{model:?}");
        }
    }

    #[test]
    fn path_encodes_the_model_and_the_request_is_signed() {
        let mut bedrock = adapter(true);
        let body = bedrock
            .chat_request(request(json!({"model": "x", "stream": true, "messages": [{"role": "user", "content": "hi"}]})), "us.amazon.nova-micro-v1:0")
            .unwrap();
        assert_eq!(
            bedrock.chat_path().unwrap(),
            "/model/us.amazon.nova-micro-v1%3A0/converse-stream"
        );
        let headers = bedrock.extra_headers();
        let names: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            ["x-amz-date", "x-amz-content-sha256", "authorization"]
        );
        assert_eq!(headers[0].1, "20150830T123600Z");
        assert_eq!(headers[1].1, sign::sha256_hex(&body));
        assert!(headers[2].1.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
        ));
        let mut keyed = adapter(false);
        keyed
            .chat_request(request(json!({"model": "x", "messages": []})), "m")
            .unwrap();
        assert!(keyed.extra_headers().is_empty(), "API keys replace signing");
    }

    #[test]
    fn completion_with_reasoning_and_tools() {
        let out: Value = serde_json::from_slice(&completion(
            br#"{"output":{"message":{"role":"assistant","content":[{"reasoningContent":{"reasoningText":{"text":"hmm","signature":"s"}}},
                {"text":"Checking."},{"toolUse":{"toolUseId":"tooluse_1","name":"get_weather","input":{"city":"Paris"}}}]}},
                "stopReason":"tool_use","usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15},"metrics":{"latencyMs":100}}"#,
            "id".into(),
            "m".into(),
            1,
        ))
        .unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["reasoning_content"], "hmm");
        assert_eq!(choice["message"]["tool_calls"][0]["id"], "tooluse_1");
        assert_eq!(out["usage"]["total_tokens"], 15);
    }

    fn event(kind: &str, payload: Value) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        )
    }

    #[test]
    fn event_stream_becomes_openai_chunks_at_every_split() {
        let mut stream = Vec::new();
        stream.extend(event(
            "messageStart",
            json!({"role": "assistant", "p": "abc"}),
        ));
        stream.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "H\u{e9}llo"}}),
        ));
        stream.extend(event("contentBlockStop", json!({"contentBlockIndex": 0})));
        stream.extend(event(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
        ));
        stream.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}}),
        ));
        stream.extend(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
        ));
        stream.extend(event("messageStop", json!({"stopReason": "tool_use"})));
        stream.extend(event("metadata", json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}, "metrics": {"latencyMs": 1}})));
        let out = same_at_every_split(
            || {
                let mut b = adapter(false);
                b.writer.include_usage = true;
                b
            },
            200,
            EVENT_STREAM,
            &stream,
        );
        let text = String::from_utf8(out).unwrap();
        let chunks = chunks(text.as_bytes());
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "H\u{e9}llo");
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "t1"
        );
        assert_eq!(
            chunks[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "1}"
        );
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["usage"]["total_tokens"], 7);
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn exceptions_and_corrupt_frames_end_the_stream_with_an_error() {
        let mut b = adapter(false);
        assert_eq!(
            b.plan(200, EVENT_STREAM).content_type,
            Some("text/event-stream")
        );
        let mut out = Vec::new();
        let exception = encode(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"Too many requests"}"#,
        );
        b.translate(&exception, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\"type\":\"throttlingException\"") && text.contains("Too many requests"),
            "{text}"
        );
        assert_eq!(text.matches("[DONE]").count(), 1);

        let mut b = adapter(false);
        b.plan(200, EVENT_STREAM);
        let mut corrupt = event("messageStart", json!({"role": "assistant"}));
        let n = corrupt.len();
        corrupt[n - 1] ^= 0xff;
        let mut out = Vec::new();
        b.translate(&corrupt, true, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("message CRC mismatch"));
    }
}
