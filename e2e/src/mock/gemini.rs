//! A mock of Google's Gemini API (`POST /{version}/models/{model}:generateContent` and
//! `:streamGenerateContent`), following the public API reference and the recorded transcripts:
//!
//! - auth by `x-goog-api-key` (or `?key=`): 403 `PERMISSION_DENIED` without one, 400
//!   `INVALID_ARGUMENT` "API key not valid" for a wrong one;
//! - strict request checks like the real service (unknown fields, empty `contents`, roles other
//!   than `user` / `model`, empty `parts`), with Google's error body
//!   `{"error":{"code","message","status"}}`;
//! - answers: text, a `functionCall` of the first declared function when the last turn is the
//!   user's asking (not a `functionResponse`), a thought part first when
//!   `thinkingConfig.includeThoughts`; `usageMetadata` with `thoughtsTokenCount`;
//! - `?alt=sse` streams `data: <GenerateContentResponse>` events ending with `\r\n\r\n`, usage on
//!   every event, `finishReason` on the last, no `[DONE]`; without `alt=sse` one JSON array.
//!
//! Per-request knobs: see [`super::knobs`]; also `x-mock-safety: prompt` (the prompt is
//! blocked: `promptFeedback.blockReason`, no candidates) or `response` (the answer stops with
//! `finishReason: SAFETY`), and `x-mock-cached-tokens: N` (`cachedContentTokenCount`).
//! Vertex AI serves the same bodies: see [`super::vertex`].

use super::knobs::Knobs;
use super::openai::completion::first_parameter;
use super::openai::content_pieces;
use super::{Provider, Recorded, Reply};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Model names starting with this answer 404 `NOT_FOUND`.
pub const UNKNOWN_MODEL_PREFIX: &str = "does-not-exist";
const THOUGHT: &str = "The user wants a short answer.";
const TOP_LEVEL: &[&str] = &[
    "contents",
    "systemInstruction",
    "generationConfig",
    "tools",
    "toolConfig",
    "safetySettings",
    "cachedContent",
    "labels",
];

pub struct GeminiMock {
    /// The key clients must present; `None` accepts any non-empty key.
    pub api_key: Option<String>,
    pub chunks: usize,
    pub delay: Duration,
    pub first_delay: Duration,
    /// Stamp answers with Vertex AI's `createTime` and `trafficType`.
    pub create_time: bool,
    next_id: AtomicU64,
}

impl Default for GeminiMock {
    fn default() -> Self {
        GeminiMock {
            api_key: None,
            create_time: false,
            chunks: 5,
            delay: Duration::ZERO,
            first_delay: Duration::ZERO,
            next_id: AtomicU64::new(1),
        }
    }
}

impl GeminiMock {
    pub fn with_key(key: &str) -> Self {
        GeminiMock {
            api_key: Some(key.to_string()),
            ..Default::default()
        }
    }

    /// Stamps answers with `createTime` and `usageMetadata.trafficType`, as Vertex AI does.
    pub fn stamped_with_create_time(mut self) -> Self {
        self.create_time = true;
        self
    }

    fn check_key(&self, request: &Recorded) -> Result<(), Reply> {
        let query_key = request
            .path
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("key=")));
        let presented = request
            .header("x-goog-api-key")
            .or(query_key)
            .filter(|k| !k.is_empty());
        match (presented, &self.api_key) {
            (None, _) => Err(error(403, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.")),
            (Some(key), Some(expected)) if key != expected => {
                Err(error(400, "API key not valid. Please pass a valid API key."))
            }
            _ => Ok(()),
        }
    }

    /// The answer to a generate request for `model` whose caller is already authenticated
    /// (Vertex AI shares it).
    pub fn generate(&self, request: &Recorded, model: &str, method: &str) -> Reply {
        let body = match validate(&request.body) {
            Ok(body) => body,
            Err(message) => return error(400, &message),
        };
        if model.starts_with(UNKNOWN_MODEL_PREFIX) {
            return error(404, &format!("models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."));
        }
        let knobs = Knobs::read(request, self.chunks, self.delay, self.first_delay);
        if let Some(status) = knobs.status {
            return error(status, &format!("mock error with status {status}"));
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut answer = Answer::new(&body, model, n, request, &knobs);
        answer.create_time = self.create_time;
        let sse = request.path.contains("alt=sse");
        match method {
            "generateContent" => Reply::json(200, &answer.whole()),
            "streamGenerateContent" if sse => {
                let events: Vec<(Duration, Bytes)> = answer
                    .events(&knobs)
                    .into_iter()
                    .map(|(pause, e)| (pause, Bytes::from(format!("data: {e}\r\n\r\n"))))
                    .collect();
                Reply::Stream {
                    status: 200,
                    headers: vec![("content-type".into(), "text/event-stream".into())],
                    pieces: Box::new(events.into_iter()),
                }
            }
            "streamGenerateContent" => {
                let elements: Vec<String> = answer
                    .events(&knobs)
                    .into_iter()
                    .map(|(_, e)| e.to_string())
                    .collect();
                Reply::Full {
                    status: 200,
                    headers: vec![(
                        "content-type".into(),
                        "application/json; charset=UTF-8".into(),
                    )],
                    body: Bytes::from(format!("[{}]", elements.join("\n,\r\n"))),
                }
            }
            other => error(404, &format!("Method not found: {other}")),
        }
    }
}

impl Provider for GeminiMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let path = request.path.split('?').next().unwrap_or("");
        let Some((model, method)) = path
            .split_once("/models/")
            .and_then(|(_, rest)| rest.split_once(':'))
        else {
            return error(404, &format!("Not found: {path}"));
        };
        if request.method != "POST" {
            return error(404, "Not found");
        }
        if let Err(reply) = self.check_key(request) {
            return reply;
        }
        self.generate(request, model, method)
    }
}

/// Google's RPC status name for an HTTP status.
fn rpc_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Google's error body.
pub fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"code": status, "message": message, "status": rpc_status(status)}}),
    )
}

/// The checks the API makes, with its messages.
fn validate(body: &[u8]) -> Result<Value, String> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|_| "Invalid JSON payload received. Unexpected token.".to_string())?;
    let object = body
        .as_object()
        .ok_or("Invalid JSON payload received. Expected an object.")?;
    if let Some(unknown) = object.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
        ));
    }
    let contents = body["contents"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified\n")?;
    for (i, content) in contents.iter().enumerate() {
        if !matches!(content["role"].as_str(), Some("user" | "model")) {
            return Err("Please use a valid role: user, model.".into());
        }
        if content["parts"].as_array().is_none_or(|p| p.is_empty()) {
            return Err(format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            ));
        }
    }
    for (i, declaration) in body["tools"][0]["functionDeclarations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !declaration["name"].is_string() {
            return Err(format!("* GenerateContentRequest.tools[0].function_declarations[{i}].name: Name cannot be empty.\n"));
        }
        if declaration.get("parameters").is_some()
            && declaration.get("parametersJsonSchema").is_some()
        {
            return Err(format!("* GenerateContentRequest.tools[0].function_declarations[{i}]: parameters and parameters_json_schema are mutually exclusive.\n"));
        }
    }
    Ok(body)
}

/// The mock's answer, rendered whole or as stream events.
struct Answer {
    id: String,
    model: String,
    thought: bool,
    pieces: Vec<String>,
    call: Option<(String, Value)>,
    finish: &'static str,
    blocked_prompt: bool,
    prompt_tokens: u64,
    cached_tokens: u64,
    create_time: bool,
}

impl Answer {
    fn new(body: &Value, model: &str, n: u64, request: &Recorded, knobs: &Knobs) -> Answer {
        let contents = body["contents"].as_array().cloned().unwrap_or_default();
        let last_asks = contents.last().is_some_and(|c| {
            c["role"] == "user"
                && c["parts"]
                    .as_array()
                    .is_some_and(|p| p.iter().all(|p| p.get("functionResponse").is_none()))
        });
        let mode = body
            .pointer("/toolConfig/functionCallingConfig/mode")
            .and_then(Value::as_str);
        let declarations = body["tools"][0]["functionDeclarations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let call = (last_asks && mode != Some("NONE") && !declarations.is_empty()).then(|| {
            let allowed = body
                .pointer("/toolConfig/functionCallingConfig/allowedFunctionNames/0")
                .and_then(Value::as_str);
            let function = allowed
                .and_then(|name| declarations.iter().find(|d| d["name"] == name))
                .unwrap_or(&declarations[0]);
            let schema = function
                .get("parametersJsonSchema")
                .or(function.get("parameters"))
                .cloned()
                .unwrap_or(Value::Null);
            (
                function["name"].as_str().unwrap_or("tool").to_string(),
                json!({ first_parameter(&schema): "Paris" }),
            )
        });
        let mut pieces: Vec<String> = content_pieces(knobs.chunks, knobs.chunk_bytes).collect();
        let mut finish = "STOP";
        if let Some(max) = body
            .pointer("/generationConfig/maxOutputTokens")
            .and_then(Value::as_u64)
        {
            if pieces.len() as u64 > max {
                pieces.truncate(max as usize);
                finish = "MAX_TOKENS";
            }
        }
        let safety = request.header("x-mock-safety");
        if safety == Some("response") {
            pieces.truncate(1);
            finish = "SAFETY";
        }
        let text: usize = contents
            .iter()
            .chain(body.pointer("/systemInstruction"))
            .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
            .map(|p| p["text"].as_str().map_or(20, str::len))
            .sum();
        Answer {
            id: format!("mockResponse{n:06}"),
            model: model.to_string(),
            thought: body.pointer("/generationConfig/thinkingConfig/includeThoughts")
                == Some(&json!(true)),
            pieces: if call.is_some() { Vec::new() } else { pieces },
            call,
            finish,
            blocked_prompt: safety == Some("prompt"),
            prompt_tokens: 3 + text.div_ceil(4) as u64 + 4 * contents.len() as u64,
            cached_tokens: request
                .header("x-mock-cached-tokens")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            create_time: false,
        }
    }

    fn usage(&self, candidates: u64, thoughts: u64) -> Value {
        let mut usage = json!({
            "promptTokenCount": self.prompt_tokens,
            "totalTokenCount": self.prompt_tokens + candidates + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}],
        });
        if candidates > 0 {
            // Absent before the first token is counted, as in the recordings.
            usage["candidatesTokenCount"] = json!(candidates);
        }
        if thoughts > 0 {
            usage["thoughtsTokenCount"] = json!(thoughts);
        }
        if self.cached_tokens > 0 {
            usage["cachedContentTokenCount"] = json!(self.cached_tokens);
        }
        usage
    }

    fn candidate_tokens(&self) -> u64 {
        if self.call.is_some() {
            8
        } else {
            self.pieces.len() as u64
        }
    }

    fn response(
        &self,
        parts: Vec<Value>,
        finish: Option<&str>,
        candidates: u64,
        thoughts: u64,
    ) -> Value {
        if self.blocked_prompt {
            return json!({
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]},
                "usageMetadata": self.usage(0, 0), "modelVersion": self.model, "responseId": self.id,
            });
        }
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(finish) = finish {
            candidate["finishReason"] = json!(finish);
        }
        let mut response = json!({"candidates": [candidate], "usageMetadata": self.usage(candidates, thoughts), "modelVersion": self.model, "responseId": self.id});
        if self.create_time {
            response["createTime"] = json!("2025-01-01T00:00:00.000000Z");
            response["usageMetadata"]["trafficType"] = json!("ON_DEMAND");
        }
        response
    }

    fn thoughts(&self) -> u64 {
        if self.thought {
            6
        } else {
            0
        }
    }

    fn whole(&self) -> Value {
        let mut parts = Vec::new();
        if self.thought {
            parts.push(json!({"text": THOUGHT, "thought": true}));
        }
        match &self.call {
            Some((name, args)) => parts.push(json!({"functionCall": {"name": name, "args": args}})),
            None => parts.push(json!({"text": self.pieces.concat()})),
        }
        self.response(
            parts,
            Some(self.finish),
            self.candidate_tokens(),
            self.thoughts(),
        )
    }

    /// The stream's events, each with the pause before it: a thought, then a piece of text per
    /// event (or the whole call), the last with `finishReason`.
    fn events(&self, knobs: &Knobs) -> Vec<(Duration, Value)> {
        if self.blocked_prompt {
            return vec![(knobs.first_delay, self.response(Vec::new(), None, 0, 0))];
        }
        let mut parts: Vec<Value> = Vec::new();
        if self.thought {
            parts.push(json!({"text": THOUGHT, "thought": true}));
        }
        match &self.call {
            Some((name, args)) => parts.push(json!({"functionCall": {"name": name, "args": args}})),
            None => parts.extend(self.pieces.iter().map(|p| json!({"text": p}))),
        }
        let count = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let done = i + 1 == count;
                let candidates = if done {
                    self.candidate_tokens()
                } else {
                    i as u64
                };
                let event = self.response(
                    vec![part],
                    done.then_some(self.finish),
                    candidates,
                    self.thoughts(),
                );
                (knobs.pause_before(i), event)
            })
            .collect()
    }
}
