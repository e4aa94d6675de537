//! A mock of Azure OpenAI's deployment API, following its REST reference and the recorded
//! transcripts: `POST /openai/deployments/{deployment}/chat/completions?api-version=…` and
//! `…/embeddings?api-version=…`, authenticated by the `api-key` header.
//!
//! The deployment picks the model: the body's `model` is ignored and answers carry the
//! deployment's model. Answers are OpenAI's plus Azure's content-filter annotations:
//! `prompt_filter_results` and `choices[].content_filter_results` in JSON; in streams a first
//! chunk with `choices: []`, empty `id`/`model`/`object`, `created: 0` and
//! `prompt_filter_results`, annotated content chunks, and after the `finish_reason` chunk the
//! asynchronous filter's chunks (`content_filter_offsets`, empty `id`, no `delta`), then the
//! usage chunk when asked for, then `data: [DONE]`. Errors are `{"error":{"code","message"}}`.
//!
//! Per-request knobs: see [`super::knobs`].

use super::knobs::Knobs;
use super::openai::completion::{sse_events, ChunkKind, Completion};
use super::openai::{chat_body, includes_usage, is_stream, json_object};
use super::{embeddings, Provider, Recorded, Reply};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct AzureMock {
    /// The key clients must present in the `api-key` header; `None` accepts any key.
    pub api_key: Option<String>,
    /// Deployment name → the model it serves.
    pub deployments: BTreeMap<String, String>,
    pub chunks: usize,
    pub delay: Duration,
    pub first_delay: Duration,
    next_id: AtomicU64,
}

impl Default for AzureMock {
    /// Any key; deployments `gpt-4o`, `gpt-4o-mini` and `text-embedding-3-small`.
    fn default() -> Self {
        AzureMock {
            api_key: None,
            deployments: [
                ("gpt-4o", "gpt-4o-2024-11-20"),
                ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
                ("text-embedding-3-small", "text-embedding-3-small"),
            ]
            .into_iter()
            .map(|(d, m)| (d.to_string(), m.to_string()))
            .collect(),
            chunks: 5,
            delay: Duration::ZERO,
            first_delay: Duration::ZERO,
            next_id: AtomicU64::new(1),
        }
    }
}

impl AzureMock {
    /// Requires `api-key: <key>`; serves the default deployments.
    pub fn with_key(key: &str) -> Self {
        AzureMock {
            api_key: Some(key.to_string()),
            ..Default::default()
        }
    }

    /// Adds (or replaces) a deployment serving `model`.
    pub fn deployment(mut self, name: &str, model: &str) -> Self {
        self.deployments.insert(name.to_string(), model.to_string());
        self
    }

    fn check_auth(&self, request: &Recorded) -> Result<(), Reply> {
        match (request.header("api-key").map(str::trim), &self.api_key) {
            (None | Some(""), _) => Err(error(
                401,
                "401",
                "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
            )),
            (Some(key), Some(expected)) if key != expected => Err(error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
            )),
            _ => Ok(()),
        }
    }

    fn chat(&self, request: &Recorded, model: &str) -> Reply {
        let body = match chat_body(request, false) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let knobs = Knobs::read(request, self.chunks, self.delay, self.first_delay);
        if let Some(status) = knobs.status {
            return mock_status_error(status);
        }
        let id = format!(
            "chatcmpl-mock{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let completion = Completion::new(&body, id, model.to_string(), &knobs);
        if !is_stream(&body) {
            return Reply::json(200, &annotated_completion(&completion));
        }
        let events = sse_events(annotated_stream(&completion, includes_usage(&body), &knobs));
        Reply::event_stream(&[("apim-request-id", "mock-apim-request")], events)
    }

    fn embeddings(&self, request: &Recorded, model: &str) -> Reply {
        let body = match json_object(request) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let knobs = Knobs::read(request, self.chunks, self.delay, self.first_delay);
        if let Some(status) = knobs.status {
            return mock_status_error(status);
        }
        embeddings::answer(&body, Some(model))
    }
}

/// The operations a deployment offers.
enum Operation {
    Chat,
    Embeddings,
}

/// `/openai/deployments/{deployment}/{operation}` → the deployment and the operation.
fn deployment_route(path: &str) -> Option<(&str, Operation)> {
    let (deployment, operation) = path.strip_prefix("/openai/deployments/")?.split_once('/')?;
    let operation = match operation {
        "chat/completions" => Operation::Chat,
        "embeddings" => Operation::Embeddings,
        _ => return None,
    };
    Some((deployment, operation)).filter(|(d, _)| !d.is_empty())
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

impl Provider for AzureMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let (path, query) = request
            .path
            .split_once('?')
            .unwrap_or((request.path.as_str(), ""));
        // Azure answers an unknown route and a missing api-version alike, before auth.
        let route = deployment_route(path).filter(|_| request.method == "POST");
        let has_version = query_param(query, "api-version").is_some_and(|v| !v.is_empty());
        let Some((deployment, operation)) = route.filter(|_| has_version) else {
            return error(404, "404", "Resource not found");
        };
        if let Err(reply) = self.check_auth(request) {
            return reply;
        }
        let Some(model) = self.deployments.get(deployment) else {
            return error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
            );
        };
        match operation {
            Operation::Chat => self.chat(request, model),
            Operation::Embeddings => self.embeddings(request, model),
        }
    }
}

/// Azure's error body: a code (often the status as a string) and a message, no type or param.
pub fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn mock_status_error(status: u16) -> Reply {
    error(
        status,
        &status.to_string(),
        &format!("mock error with status {status}"),
    )
}

/// A JSON completion with Azure's filter annotations (and no `service_tier`, which Azure does
/// not send).
fn annotated_completion(completion: &Completion) -> Value {
    let mut json = completion.json();
    if let Some(fields) = json.as_object_mut() {
        fields.remove("service_tier");
    }
    let mut output = output_filter();
    output.as_object_mut().expect("filter object").extend(
        protected_material_filter()
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    json["choices"][0]["content_filter_results"] = output;
    json["prompt_filter_results"] =
        json!([{"prompt_index": 0, "content_filter_results": prompt_filter()}]);
    json
}

/// The stream's chunks with Azure's additions, paced like the OpenAI ones.
fn annotated_stream(
    completion: &Completion,
    include_usage: bool,
    knobs: &Knobs,
) -> Vec<(Duration, Value)> {
    let prompt_chunk = json!({
        "choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": prompt_filter()}]
    });
    let mut out = vec![(Duration::ZERO, prompt_chunk)];
    for chunk in completion.chunks(include_usage, knobs) {
        let mut json = chunk.json;
        if let Some(fields) = json.as_object_mut() {
            fields.remove("service_tier");
        }
        let filter = match chunk.kind {
            ChunkKind::Content => Some(output_filter()),
            ChunkKind::Role | ChunkKind::Finish => Some(json!({})),
            ChunkKind::Usage => None,
        };
        if let Some(filter) = filter {
            json["choices"][0]["content_filter_results"] = filter;
        }
        out.push((chunk.pause, json));
        if chunk.kind == ChunkKind::Finish {
            let checked = completion.answer.text().len();
            out.extend(
                [output_filter(), protected_material_filter()]
                    .into_iter()
                    .map(|results| (Duration::ZERO, async_filter_chunk(checked, results))),
            );
        }
    }
    out
}

/// A chunk of the asynchronous content filter: its verdict on a span of the streamed text.
fn async_filter_chunk(text_len: usize, results: Value) -> Value {
    json!({
        "choices": [{
            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": text_len},
            "content_filter_results": results,
            "finish_reason": null,
            "index": 0
        }],
        "created": 0, "id": "", "model": "", "object": ""
    })
}

fn safe() -> Value {
    json!({"filtered": false, "severity": "safe"})
}

fn not_detected() -> Value {
    json!({"filtered": false, "detected": false})
}

fn prompt_filter() -> Value {
    json!({"hate": safe(), "jailbreak": not_detected(), "self_harm": safe(), "sexual": safe(), "violence": safe()})
}

fn output_filter() -> Value {
    json!({"hate": safe(), "self_harm": safe(), "sexual": safe(), "violence": safe()})
}

fn protected_material_filter() -> Value {
    json!({"protected_material_code": not_detected(), "protected_material_text": not_detected()})
}
