//! The provider edge for Google's Gemini API (`models/{model}:generateContent`, and
//! `:streamGenerateContent?alt=sse`, whose events end with `\r\n\r\n`). Vertex AI serves the
//! same bodies under its own path, so the Vertex edge uses this one for Gemini models.
//!
//! Requests: `systemInstruction`, `contents` with `user` / `model` turns (images as
//! `inlineData`, tool calls as `functionCall`, tool results as `functionResponse` named after
//! the call), `generationConfig`, `tools.functionDeclarations`, `toolConfig`,
//! `safetySettings`. Answers: text, thought parts as `reasoning_content`, whole function calls,
//! `usageMetadata` (thinking and cached tokens included), safety blocks as `content_filter`.
//!
//! Gemini 3 wants a function call's `thoughtSignature` back with the call in the next turn;
//! it rides in the OpenAI tool call id (`call_…_ts_<signature>`, URL-safe base64, which the
//! API accepts), so clients hand it back without knowing.

use super::canonical::{self, Answer, ChunkWriter, Completion, ResponseBody};
use super::{errors, Plan, ProviderAdapter, ResponseStage};
use crate::config::{GeminiSettings, Provider};
use aigw_shared::body::is_event_stream;
use aigw_shared::error::ApiError;
use aigw_shared::openai::{ChatRequest, Content, Message};
use aigw_shared::sse::Decoder;
use aigw_shared::usage::TokenCounts;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Between a tool call id and the thought signature it carries.
const SIGNATURE_MARK: &str = "_ts_";

pub struct Gemini {
    /// Path up to the model: `/v1beta/models` (Vertex: `…/publishers/google/models`).
    models_path: String,
    settings: GeminiSettings,
    model: String,
    stream: bool,
    created: u64,
    response: ResponseBody,
    decoder: Decoder,
    writer: ChunkWriter,
}

impl Gemini {
    pub fn new(provider: &Provider, created: u64) -> Self {
        let models_path = format!(
            "{}/{}/models",
            provider.base_path.trim_end_matches('/'),
            provider.gemini.api_version
        );
        Self::at(models_path, provider.gemini.clone(), created)
    }

    /// The Gemini wire format under another path (Vertex AI).
    pub fn at(models_path: String, settings: GeminiSettings, created: u64) -> Self {
        Gemini {
            models_path,
            settings,
            model: String::new(),
            stream: false,
            created,
            response: ResponseBody::default(),
            decoder: Decoder::new(),
            writer: ChunkWriter::new(created),
        }
    }
}

impl ProviderAdapter for Gemini {
    fn chat_request(&mut self, request: ChatRequest, model: &str) -> Result<Vec<u8>, ApiError> {
        self.model =
            canonical::path_model(model.strip_prefix("models/").unwrap_or(model))?.to_string();
        self.stream = request.is_stream();
        self.writer.include_usage = request.include_usage();
        self.writer.model = self.model.clone();
        canonical::encode(&generate_content_request(request, &self.settings)?)
    }

    fn chat_path(&self) -> Option<String> {
        Some(if self.stream {
            format!(
                "{}/{}:streamGenerateContent?alt=sse",
                self.models_path, self.model
            )
        } else {
            format!("{}/{}:generateContent", self.models_path, self.model)
        })
    }
}

impl ResponseStage for Gemini {
    fn plan(&mut self, status: u16, content_type: &str) -> Plan {
        self.response.plan(status, is_event_stream(content_type))
    }

    fn translate(&mut self, input: &[u8], end: bool, out: &mut Vec<u8>) {
        if !self.response.streaming {
            let (created, model) = (self.created, self.model.clone());
            self.response
                .whole(input, end, out, |body| completion(body, created, &model));
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

impl Gemini {
    fn on_event(&mut self, event: &Value, out: &mut Vec<u8>) {
        if let Some(error) = event.get("error") {
            let message = error["message"].as_str().unwrap_or("provider error");
            self.writer.error(out, "api_error", message);
            return;
        }
        if self.writer.id.is_empty() {
            self.writer.id = event["responseId"].as_str().unwrap_or_default().to_string();
        }
        if let Some(version) = event["modelVersion"].as_str() {
            self.writer.model = version.to_string();
        }
        let id_base = call_id_base(&self.writer.id);
        read_response(event, &id_base, &mut self.writer, out);
    }
}

/// Reads a `GenerateContentResponse` (a whole answer, or one stream event) into `answer`.
fn read_response(response: &Value, id_base: &str, answer: &mut impl Answer, out: &mut Vec<u8>) {
    if let Some(counts) = TokenCounts::from_json(response) {
        answer.usage(&counts);
    }
    let candidate = &response["candidates"][0];
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(call) = part.get("functionCall") {
            let (id, name, arguments) = tool_call(part, call, id_base, answer.tool_calls());
            answer.tool_call(out, &id, &name, &arguments);
        } else if let Some(text) = part["text"].as_str() {
            if part["thought"] == true {
                answer.reasoning(out, text);
            } else {
                answer.text(out, text);
            }
        }
    }
    let reason = candidate["finishReason"]
        .as_str()
        .map(|r| finish_reason(r, answer.tool_calls() > 0))
        .or_else(|| {
            response
                .pointer("/promptFeedback/blockReason")
                .map(|_| "content_filter")
        });
    if let Some(reason) = reason {
        answer.finish(out, reason);
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if called_tools => "tool_calls",
        _ => "stop", // STOP, MALFORMED_FUNCTION_CALL, OTHER
    }
}

/// The part of a tool call id that makes it unique: the response id, letters and digits only.
fn call_id_base(response_id: &str) -> String {
    let unique: String = response_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("call_{unique}")
}

/// (id, name, arguments) of a `functionCall` part; the id carries the part's thought signature.
fn tool_call(part: &Value, call: &Value, id_base: &str, n: usize) -> (String, String, String) {
    let mut id = call["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{id_base}{n}"));
    if let Some(signature) = part["thoughtSignature"].as_str() {
        id.push_str(SIGNATURE_MARK);
        id.extend(signature.chars().filter_map(|c| match c {
            '+' => Some('-'),
            '/' => Some('_'),
            '=' => None,
            c => Some(c),
        }));
    }
    let name = call["name"].as_str().unwrap_or_default().to_string();
    let arguments = call.get("args").cloned().unwrap_or_else(|| json!({}));
    (id, name, arguments.to_string())
}

/// A `generateContent` response as a canonical completion.
fn completion(body: &[u8], created: u64, model: &str) -> Vec<u8> {
    let response = match canonical::parse_body(body) {
        Ok(response) => response,
        Err(error) => return error,
    };
    let id = response["responseId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let id_base = call_id_base(&id);
    let mut completion = Completion {
        id,
        model: response["modelVersion"]
            .as_str()
            .unwrap_or(model)
            .to_string(),
        created,
        ..Default::default()
    };
    read_response(&response, &id_base, &mut completion, &mut Vec::new());
    completion.to_json()
}

/// A canonical chat request as a `generateContent` request.
fn generate_content_request(
    request: ChatRequest,
    settings: &GeminiSettings,
) -> Result<Value, ApiError> {
    let mut body = Map::new();
    if let Some(system) = canonical::system_text(&request.messages) {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system}]}),
        );
    }
    body.insert(
        "contents".into(),
        Value::Array(contents(&request.messages)?),
    );
    let config = generation_config(&request, settings);
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        let declarations: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut declaration = json!({"name": t.function.name});
                if let Some(d) = &t.function.description {
                    declaration["description"] = json!(d);
                }
                if let Some(schema) = t.function.parameters.as_ref().filter(|p| has_properties(p)) {
                    declaration["parametersJsonSchema"] = schema.clone();
                }
                declaration
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
        if let Some(config) = tool_config(request.tool_choice.as_ref()) {
            body.insert("toolConfig".into(), config);
        }
    }
    if !settings.safety.is_empty() {
        let safety: Vec<Value> = settings
            .safety
            .iter()
            .map(|(category, threshold)| json!({"category": category, "threshold": threshold}))
            .collect();
        body.insert("safetySettings".into(), Value::Array(safety));
    }
    Ok(Value::Object(body))
}

fn has_properties(schema: &Value) -> bool {
    schema["properties"]
        .as_object()
        .is_some_and(|p| !p.is_empty())
}

/// The conversation as `contents`: consecutive turns of one role merged (a model turn's
/// function calls must be answered together in the next user turn).
fn contents(messages: &[Message]) -> Result<Vec<Value>, ApiError> {
    let mut contents: Vec<Value> = Vec::new();
    // Tool call id → name, as seen so far (ids may repeat across turns).
    let mut names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let (role, parts) = match message.role.as_str() {
            "system" | "developer" => continue,
            "user" => ("user", user_parts(i, message.content.as_ref())?),
            "assistant" => {
                for call in message.tool_calls.iter().flatten() {
                    if let (Some(id), Some(name)) = (&call.id, &call.function.name) {
                        names.insert(id.clone(), name.clone());
                    }
                }
                ("model", model_parts(message))
            }
            "tool" | "function" => {
                let id = message.tool_call_id.clone().unwrap_or_default();
                let name = names
                    .get(&id)
                    .cloned()
                    .or_else(|| message.name.clone())
                    .unwrap_or(id);
                let text = message
                    .content
                    .as_ref()
                    .map(Content::text)
                    .unwrap_or_default();
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"result": text}));
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => return Err(canonical::unsupported_role(i, other)),
        };
        push_turn(&mut contents, role, parts);
    }
    Ok(contents)
}

fn push_turn(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    canonical::push_turn(contents, role, "parts", parts);
}

fn user_parts(index: usize, content: Option<&Content>) -> Result<Vec<Value>, ApiError> {
    Ok(match content {
        None => Vec::new(),
        Some(Content::Text(text)) => vec![json!({"text": text})],
        Some(Content::Parts(parts)) => {
            let mut out = Vec::new();
            for part in parts {
                match (part.kind.as_str(), &part.text, &part.image_url) {
                    ("text", Some(text), _) => out.push(json!({"text": text})),
                    ("image_url", _, Some(image)) => {
                        let (mime, data) = canonical::data_url(&image.url)
                            .ok_or_else(|| canonical::inline_images_only(index))?;
                        out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                    }
                    _ => {}
                }
            }
            out
        }
    })
}

fn model_parts(message: &Message) -> Vec<Value> {
    let mut parts = Vec::new();
    if let Some(text) = message
        .content
        .as_ref()
        .map(Content::text)
        .filter(|t| !t.is_empty())
    {
        parts.push(json!({"text": text}));
    }
    for call in message.tool_calls.iter().flatten() {
        let mut part = json!({"functionCall": {
            "name": call.function.name.clone().unwrap_or_default(),
            "args": canonical::arguments_object(&call.function.arguments),
        }});
        if let Some((_, signature)) = call
            .id
            .as_deref()
            .and_then(|id| id.split_once(SIGNATURE_MARK))
        {
            part["thoughtSignature"] = json!(signature);
        }
        parts.push(part);
    }
    parts
}

fn generation_config(request: &ChatRequest, settings: &GeminiSettings) -> Map<String, Value> {
    let mut config = Map::new();
    canonical::put_sampling(
        &mut config,
        request,
        &[
            ("max_tokens", "maxOutputTokens"),
            ("temperature", "temperature"),
            ("top_p", "topP"),
            ("top_k", "topK"),
            ("seed", "seed"),
            ("presence_penalty", "presencePenalty"),
            ("frequency_penalty", "frequencyPenalty"),
            ("stop", "stopSequences"),
        ],
    );
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value.filter(|v| !v.is_null()) {
            config.insert(key.into(), value);
        }
    };
    set("candidateCount", request.extra.get("n").cloned());
    match request
        .extra
        .get("response_format")
        .and_then(|f| f["type"].as_str())
    {
        Some("json_object") => set("responseMimeType", Some(json!("application/json"))),
        Some("json_schema") => {
            set("responseMimeType", Some(json!("application/json")));
            set(
                "responseJsonSchema",
                request
                    .extra
                    .get("response_format")
                    .and_then(|f| f.pointer("/json_schema/schema"))
                    .cloned(),
            );
        }
        _ => {}
    }
    set("thinkingConfig", thinking_config(request, settings));
    config
}

/// Thinking from OpenAI's `reasoning_effort`, Anthropic's `thinking` (carried in the canonical
/// request), or the configured budget; thoughts are asked for whenever a client asked to think.
fn thinking_config(request: &ChatRequest, settings: &GeminiSettings) -> Option<Value> {
    let effort = request
        .extra
        .get("reasoning_effort")
        .and_then(Value::as_str);
    let budget = match effort {
        Some("minimal") | Some("none") => Some(0),
        Some("low") => Some(1024),
        Some("medium") => Some(8192),
        Some("high") => Some(24576),
        _ => None,
    };
    let anthropic = request
        .extra
        .get("thinking")
        .filter(|t| t["type"] == "enabled")
        .map(|t| t["budget_tokens"].as_i64().unwrap_or(-1));
    match (budget.or(anthropic), settings.thinking_budget) {
        (Some(budget), _) => {
            Some(json!({"thinkingBudget": budget, "includeThoughts": budget != 0}))
        }
        (None, Some(budget)) => Some(json!({"thinkingBudget": budget})),
        (None, None) => None,
    }
}

fn tool_config(choice: Option<&Value>) -> Option<Value> {
    let mode = |mode: &str| json!({"functionCallingConfig": {"mode": mode}});
    match choice? {
        Value::String(s) if s == "none" => Some(mode("NONE")),
        Value::String(s) if s == "required" => Some(mode("ANY")),
        Value::Object(o) => {
            let name = o.get("function")?.get("name")?.as_str()?;
            Some(json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}))
        }
        _ => Some(mode("AUTO")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{chunks, same_at_every_split};
    use super::*;

    fn settings() -> GeminiSettings {
        GeminiSettings {
            api_version: "v1beta".into(),
            safety: vec![("HARM_CATEGORY_HARASSMENT".into(), "BLOCK_ONLY_HIGH".into())],
            thinking_budget: None,
        }
    }

    fn adapter() -> Gemini {
        Gemini::at("/v1beta/models".into(), settings(), 9)
    }

    #[test]
    fn answers_that_do_not_parse_are_errors_without_the_provider_bytes() {
        let unreadable = r#"{"candidates":[{"content":{"parts":[{"text":"\ud83d secret"}]}}]}"#;
        let stream = format!("data: {unreadable}\n\n");
        let out = same_at_every_split(adapter, 200, "text/event-stream", stream.as_bytes());
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(errors::UNREADABLE) && !out.contains("secret"),
            "{out}"
        );
        let mut gemini = adapter();
        gemini.plan(200, "application/json");
        let mut out = Vec::new();
        gemini.translate(unreadable.as_bytes(), true, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(errors::UNREADABLE) && !out.contains("secret"),
            "{out}"
        );
    }

    fn translate_request(body: Value) -> Value {
        let request: ChatRequest = serde_json::from_value(body).unwrap();
        generate_content_request(request, &settings()).unwrap()
    }

    #[test]
    fn request_system_images_tools_and_results() {
        let body = translate_request(json!({
            "model": "m", "max_tokens": 64, "temperature": 0.2, "stop": "END", "reasoning_effort": "low",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_x0_ts_c2ln-_", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_x0_ts_c2ln-_", "content": "sunny"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required"
        }));
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
        let contents = body["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3, "{contents:#?}");
        assert_eq!(
            contents[0]["parts"][1]["inlineData"],
            json!({"mimeType": "image/png", "data": "AAAA"})
        );
        assert_eq!(contents[1]["role"], "model");
        assert_eq!(
            contents[1]["parts"][0]["functionCall"],
            json!({"name": "get_weather", "args": {"city": "Paris"}})
        );
        assert_eq!(contents[1]["parts"][0]["thoughtSignature"], "c2ln-_");
        assert_eq!(
            contents[2]["parts"][0]["functionResponse"],
            json!({"name": "get_weather", "response": {"result": "sunny"}})
        );
        assert_eq!(contents[2]["parts"][1]["text"], "thanks");
        let config = &body["generationConfig"];
        assert_eq!(config["maxOutputTokens"], 64);
        assert_eq!(config["stopSequences"], json!(["END"]));
        assert_eq!(
            config["thinkingConfig"],
            json!({"thinkingBudget": 1024, "includeThoughts": true})
        );
        assert_eq!(
            body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["properties"]
                ["city"]["type"],
            "string"
        );
        assert_eq!(body["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
        assert_eq!(body["safetySettings"][0]["threshold"], "BLOCK_ONLY_HIGH");
    }

    #[test]
    fn models_that_would_change_the_path_are_refused() {
        let request = || {
            serde_json::from_value::<ChatRequest>(json!({"model": "x", "messages": []})).unwrap()
        };
        for model in [
            "../../v1beta/files",
            "m:countTokens",
            "a/b",
            "m?key=x",
            "",
            "..",
            ".",
        ] {
            assert_eq!(
                adapter().chat_request(request(), model).unwrap_err().status,
                400,
                "{model}"
            );
        }
        assert!(adapter()
            .chat_request(request(), "gemini-2.5-flash-preview-05-20")
            .is_ok());
    }

    #[test]
    fn image_urls_must_be_inline() {
        let request: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}))
        .unwrap();
        let err = generate_content_request(request, &settings()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].content"));
    }

    #[test]
    fn path_names_the_model_and_the_stream_mode() {
        let mut g = adapter();
        let request: ChatRequest =
            serde_json::from_value(json!({"model": "x", "messages": [], "stream": true})).unwrap();
        g.chat_request(request, "models/gemini-2.5-flash").unwrap();
        assert_eq!(
            g.chat_path().unwrap(),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let request: ChatRequest =
            serde_json::from_value(json!({"model": "x", "messages": []})).unwrap();
        g.chat_request(request, "gemini-2.5-flash").unwrap();
        assert_eq!(
            g.chat_path().unwrap(),
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
    }

    #[test]
    fn completion_with_thoughts_calls_and_usage() {
        let out: Value = serde_json::from_slice(&completion(
            br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hmm","thought":true},{"text":"Let me check."},
                 {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"a+b/c=="}]},"finishReason":"STOP"}],
                 "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":3,"cachedContentTokenCount":4,"totalTokenCount":18},
                 "modelVersion":"gemini-2.5-flash","responseId":"r-1"}"#,
            5,
            "m",
        ))
        .unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me check.");
        assert_eq!(choice["message"]["reasoning_content"], "hmm");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_r10_ts_a-b_c");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(out["model"], "gemini-2.5-flash");
        assert_eq!(out["usage"]["completion_tokens"], 8);
        assert_eq!(
            out["usage"]["completion_tokens_details"]["reasoning_tokens"],
            3
        );
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    }

    #[test]
    fn safety_blocks_are_content_filter() {
        let out: Value = serde_json::from_slice(&completion(
            br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3,"totalTokenCount":3}}"#,
            1,
            "m",
        ))
        .unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        let out: Value = serde_json::from_slice(&completion(
            br#"{"candidates":[{"finishReason":"SAFETY","safetyRatings":[]}]}"#,
            1,
            "m",
        ))
        .unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    }

    const STREAM: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Th\u{e9}\",\"thought\": true}],\"role\": \"model\"}}],\"usageMetadata\": {\"promptTokenCount\": 7,\"totalTokenCount\": 9,\"thoughtsTokenCount\": 2},\"modelVersion\": \"gemini-2.5-pro\",\"responseId\": \"abc\"}\r\n\r\n\
        data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hello\"}],\"role\": \"model\"}}],\"modelVersion\": \"gemini-2.5-pro\",\"responseId\": \"abc\"}\r\n\r\n\
        data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"f\",\"args\": {\"a\": 1}}}],\"role\": \"model\"},\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 7,\"candidatesTokenCount\": 4,\"totalTokenCount\": 13,\"thoughtsTokenCount\": 2},\"modelVersion\": \"gemini-2.5-pro\",\"responseId\": \"abc\"}\r\n\r\n";

    #[test]
    fn stream_becomes_openai_chunks_at_every_split() {
        let out = same_at_every_split(
            || {
                let mut g = adapter();
                g.writer.include_usage = true;
                g
            },
            200,
            "text/event-stream",
            STREAM.as_bytes(),
        );
        let text = String::from_utf8(out).unwrap();
        let chunks = chunks(text.as_bytes());
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["reasoning_content"],
            "Th\u{e9}"
        );
        assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "Hello");
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(
            chunks[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["usage"]["completion_tokens"], 6);
        assert_eq!(
            chunks[6]["usage"]["completion_tokens_details"]["reasoning_tokens"],
            2
        );
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn errors_keep_status_and_message() {
        let mut g = adapter();
        g.plan(404, "application/json");
        let mut out = Vec::new();
        g.translate(
            br#"{"error":{"code":404,"message":"models/x is not found","status":"NOT_FOUND"}}"#,
            true,
            &mut out,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "models/x is not found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}
