//! Golden tests against real provider transcripts in `../shared/fixtures/providers/` (recorded
//! by other projects; read at test time, never copied here). Each recorded stream is translated
//! at every split point and must give the same output, which must carry the recording's text,
//! tool calls, finish reason and usage. When the folder is absent the tests say so and pass.

use super::anthropic_client::AnthropicClient;
use super::bedrock::Bedrock;
use super::claude::Claude;
use super::cohere::Cohere;
use super::gemini::Gemini;
use super::ollama::Ollama;
use super::openai_compat::OpenAiCompat;
use super::testing::same_at_every_split;
use super::{ClientAdapter, ProviderAdapter, ResponseStage};
use crate::provider::provider_type;
use aigw_shared::openai::ChatRequest;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("AIGW_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/providers")
        });
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "skipped: no recorded transcripts at {} (they are not part of this repository)",
            dir.display()
        );
        None
    }
}

/// The fixture files of a folder whose names end with `suffix`.
fn files(folder: &str, suffix: &str) -> Vec<(String, Vec<u8>)> {
    files_between(folder, "", suffix)
}

/// The fixture files of a folder whose names start with `prefix` and end with `suffix`.
fn files_between(folder: &str, prefix: &str, suffix: &str) -> Vec<(String, Vec<u8>)> {
    let Some(dir) = fixtures() else {
        return Vec::new();
    };
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join(folder))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {prefix}*{suffix} files in {folder}");
    found
}

/// Recordings in OpenAI's Chat Completions format, named `<folder>/<file>`: OpenAI's own,
/// Mistral's, and, for whole bodies (none of its streams was recorded), Ollama's
/// OpenAI-compatible API.
fn openai_format(suffix: &str) -> Vec<(String, Vec<u8>)> {
    let mut sources = vec![("openai-chat", ""), ("mistral", "")];
    if suffix.ends_with(".json") {
        sources.push(("ollama", "openai-compat-"));
    }
    sources
        .into_iter()
        .flat_map(|(folder, prefix)| {
            files_between(folder, prefix, suffix)
                .into_iter()
                .map(move |(name, body)| (format!("{folder}/{name}"), body))
        })
        .collect()
}

/// A stage's answer to a whole JSON body with `status`, parsed.
fn whole_answer<S: ResponseStage>(mut stage: S, status: u16, body: &[u8]) -> Value {
    stage.plan(status, "application/json; charset=utf-8");
    let mut out = Vec::new();
    stage.translate(body, true, &mut out);
    serde_json::from_slice(&out).unwrap()
}

/// `(event type, data)` of every event of an SSE body, parsed independently of the translators.
fn sse(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|event| {
            let kind = event
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(|k| k.trim().to_string())
                .unwrap_or_default();
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("data:")
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                })
                .collect();
            (!data.is_empty()).then(|| (kind, data.join("\n")))
        })
        .collect()
}

fn json_events(body: &[u8]) -> Vec<Value> {
    sse(body)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect()
}

/// What a stream says, whatever its format.
#[derive(Debug, Default, Clone, PartialEq)]
struct Said {
    text: String,
    reasoning: String,
    /// Tool calls in order: (id, name, arguments).
    tools: Vec<(String, String, String)>,
    stop: String,
    output_tokens: Option<u64>,
}

fn anthropic_said(body: &[u8]) -> Said {
    let mut said = Said::default();
    let mut tool_at: BTreeMap<u64, usize> = BTreeMap::new();
    for event in json_events(body) {
        match event["type"].as_str().unwrap_or("") {
            "content_block_start" if event["content_block"]["type"] == "tool_use" => {
                tool_at.insert(event["index"].as_u64().unwrap(), said.tools.len());
                let block = &event["content_block"];
                said.tools.push((
                    block["id"].as_str().unwrap().into(),
                    block["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            "content_block_delta" => {
                let d = &event["delta"];
                match d["type"].as_str().unwrap_or("") {
                    "text_delta" => said.text.push_str(d["text"].as_str().unwrap()),
                    "thinking_delta" => said.reasoning.push_str(d["thinking"].as_str().unwrap()),
                    "input_json_delta" => {
                        if let Some(&i) = tool_at.get(&event["index"].as_u64().unwrap()) {
                            said.tools[i]
                                .2
                                .push_str(d["partial_json"].as_str().unwrap());
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                said.stop = event["delta"]["stop_reason"].as_str().unwrap_or("").into();
                said.output_tokens = event["usage"]["output_tokens"].as_u64();
            }
            _ => {}
        }
    }
    said
}

fn openai_said(body: &[u8]) -> Said {
    let mut said = Said::default();
    for chunk in json_events(body) {
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            said.output_tokens = u["completion_tokens"].as_u64();
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            continue;
        };
        let delta = &choice["delta"];
        said.text.push_str(delta["content"].as_str().unwrap_or(""));
        said.reasoning
            .push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        for (position, call) in delta["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            // Mistral sends each call whole, without `index`.
            let index = call["index"].as_u64().unwrap_or(position as u64) as usize;
            if said.tools.len() <= index {
                said.tools.resize(index + 1, Default::default());
            }
            let entry = &mut said.tools[index];
            if let Some(id) = call["id"].as_str() {
                entry.0 = id.into();
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                entry.1.push_str(name);
            }
            entry.2.push_str(
                call.pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            );
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            said.stop = reason.into();
        }
    }
    said
}

/// Tool arguments compare as JSON (an empty argument string is `{}`).
fn normalise(mut said: Said) -> Said {
    for tool in &mut said.tools {
        let parsed: Value = if tool.2.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(&tool.2).unwrap()
        };
        tool.2 = parsed.to_string();
    }
    said
}

/// Asserts that a translated canonical stream says what the recording said, finishes with
/// `finish`, and ends with exactly one `[DONE]`.
fn assert_says(name: &str, out: &[u8], expected: Said, finish: &str) {
    let (got, expected) = (normalise(openai_said(out)), normalise(expected));
    assert_eq!(got.text, expected.text, "{name}");
    assert_eq!(got.reasoning, expected.reasoning, "{name}");
    assert_eq!(got.tools, expected.tools, "{name}");
    assert_eq!(got.stop, finish, "{name}");
    assert_eq!(
        got.output_tokens, expected.output_tokens,
        "{name}: usage chunk"
    );
    let events = sse(out);
    assert_eq!(
        events.last().map(|(_, d)| d.as_str()),
        Some("[DONE]"),
        "{name}"
    );
    assert_eq!(
        events.iter().filter(|(_, d)| d == "[DONE]").count(),
        1,
        "{name}"
    );
}

#[test]
fn anthropic_streams_become_the_same_openai_chunks_at_every_split() {
    for (name, body) in files("anthropic-messages", ".response.sse") {
        let out = same_at_every_split(
            || {
                let mut claude = Claude::new("2023-06-01", 1024, 1);
                claude.chat_request(serde_json::from_value(serde_json::json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}})).unwrap(), "m").unwrap();
                claude
            },
            200,
            "text/event-stream",
            &body,
        );
        let expected = anthropic_said(&body);
        let finish = super::anthropic::finish_reason(&expected.stop);
        assert_says(&name, &out, expected, finish);
    }
}

#[test]
fn openai_streams_become_the_same_anthropic_events_at_every_split() {
    for (name, body) in openai_format(".response.sse") {
        let out = same_at_every_split(AnthropicClient::default, 200, "text/event-stream", &body);
        let expected = normalise(openai_said(&body));
        let got = normalise(anthropic_said(&out));
        assert_eq!(got.text, expected.text, "{name}");
        assert_eq!(got.tools, expected.tools, "{name}");
        assert_eq!(
            got.stop,
            super::anthropic::stop_reason(&expected.stop),
            "{name}"
        );
        if expected.output_tokens.is_some() {
            assert_eq!(got.output_tokens, expected.output_tokens, "{name}");
        }
        let kinds: Vec<String> = sse(&out).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("message_start"),
            "{name}"
        );
        assert_eq!(
            kinds.last().map(String::as_str),
            Some("message_stop"),
            "{name}"
        );
    }
}

/// Azure's streams lose their filter-only chunks and keep everything else.
#[test]
fn azure_streams_are_normalised_at_every_split() {
    let mut streams = files("azure-openai", ".response.sse");
    // The recorder of the `.chunks.jsonl` files kept only the data payloads: frame them again.
    for (name, lines) in files("azure-openai", "chat-streaming-usage.chunks.jsonl") {
        let framed: String = String::from_utf8(lines)
            .unwrap()
            .lines()
            .map(|l| format!("data: {l}\n\n"))
            .collect::<String>()
            + "data: [DONE]\n\n";
        streams.push((name, framed.into_bytes()));
    }
    let azure = provider_type("azure").unwrap();
    for (name, body) in streams {
        let out = same_at_every_split(|| OpenAiCompat::new(azure), 200, "text/event-stream", &body);
        let chunks = json_events(&out);
        assert!(
            chunks
                .iter()
                .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())
                    || !c["usage"].is_null()),
            "{name}: {chunks:#?}"
        );
        assert!(
            chunks.iter().all(|c| c
                .pointer("/choices/0")
                .is_none_or(|choice| choice.get("delta").is_some())),
            "{name}"
        );
        assert_eq!(openai_said(&out).text, openai_said(&body).text, "{name}");
        assert_eq!(
            sse(&out).last().map(|(_, d)| d.as_str()),
            Some("[DONE]"),
            "{name}: the unterminated last event is kept"
        );
    }
}

#[test]
fn anthropic_messages_become_completions() {
    for (name, body) in files("anthropic-messages", ".response.json") {
        let message: Value = serde_json::from_slice(&body).unwrap();
        let status = if message["type"] == "error" { 400 } else { 200 };
        let got = whole_answer(Claude::new("2023-06-01", 1024, 1), status, &body);
        if status != 200 {
            assert_eq!(
                got["error"]["message"], message["error"]["message"],
                "{name}"
            );
            assert_eq!(got["error"]["type"], message["error"]["type"], "{name}");
            continue;
        }
        let blocks = message["content"].as_array().unwrap();
        let text: String = blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .map(|b| b["text"].as_str().unwrap())
            .collect();
        let reply = &got["choices"][0]["message"];
        assert_eq!(reply["content"].as_str().unwrap_or(""), text, "{name}");
        let tools = blocks.iter().filter(|b| b["type"] == "tool_use").count();
        assert_eq!(
            reply["tool_calls"].as_array().map_or(0, Vec::len),
            tools,
            "{name}"
        );
        let u = &message["usage"];
        let prompt = [
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ]
        .iter()
        .map(|k| u[k].as_u64().unwrap_or(0))
        .sum::<u64>();
        assert_eq!(
            got["usage"]["prompt_tokens"].as_u64(),
            Some(prompt),
            "{name}"
        );
        assert_eq!(
            got["usage"]["completion_tokens"], u["output_tokens"],
            "{name}"
        );
        assert_eq!(
            got["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
            Some(u["cache_read_input_tokens"].as_u64().unwrap_or(0)),
            "{name}"
        );
    }
}

#[test]
fn openai_completions_and_errors_become_anthropic_messages() {
    for (name, body) in openai_format(".response.json") {
        let completion: Value = serde_json::from_slice(&body).unwrap();
        let status = if completion.get("error").is_some() {
            400
        } else {
            200
        };
        let got = whole_answer(AnthropicClient::default(), status, &body);
        if status != 200 {
            assert_eq!(got["type"], "error", "{name}");
            assert_eq!(
                got["error"]["message"], completion["error"]["message"],
                "{name}"
            );
            continue;
        }
        let reply = &completion["choices"][0]["message"];
        let text: String = got["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "text")
            .map(|b| b["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, reply["content"].as_str().unwrap_or(""), "{name}");
        let calls = reply["tool_calls"].as_array().map_or(0, Vec::len);
        assert_eq!(
            got["content"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .count(),
            calls,
            "{name}"
        );
        assert_eq!(
            got["usage"]["output_tokens"], completion["usage"]["completion_tokens"],
            "{name}"
        );
    }
}

#[test]
fn recorded_anthropic_requests_survive_the_round_trip_through_the_canonical_format() {
    for (name, body) in files("anthropic-messages", ".request.json") {
        let original: Value = serde_json::from_slice(&body).unwrap();
        let canonical = AnthropicClient::default()
            .request(&body)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut claude = Claude::new("2023-06-01", 1024, 1);
        let back: Value = serde_json::from_slice(
            &claude
                .chat_request(canonical, original["model"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(back["model"], original["model"], "{name}");
        assert_eq!(back["max_tokens"], original["max_tokens"], "{name}");
        let roles = |v: &Value| {
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["role"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(roles(&back), roles(&original), "{name}");
        let tool_names = |v: &Value| {
            v["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t.get("input_schema").is_some())
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(tool_names(&back), tool_names(&original), "{name}");
    }
}

#[test]
fn recorded_openai_requests_become_valid_anthropic_requests() {
    for (name, body) in openai_format(".request.json") {
        if name.contains("/error-") {
            continue; // requests the provider refused as recorded
        }
        let request: ChatRequest =
            super::parse_request(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut claude = Claude::new("2023-06-01", 1024, 1);
        let out: Value =
            serde_json::from_slice(&claude.chat_request(request, "claude").unwrap()).unwrap();
        let roles: Vec<&str> = out["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert!(
            roles.windows(2).all(|w| w[0] != w[1]),
            "{name}: turns alternate: {roles:?}"
        );
        assert_eq!(roles.first(), Some(&"user"), "{name}");
        assert!(out["max_tokens"].as_u64().unwrap() > 0, "{name}");
    }
}

/// A canonical chat request for the recorded answers: streaming with usage, or not.
fn canonical_request(stream: bool) -> ChatRequest {
    serde_json::from_value(serde_json::json!({"messages": [], "stream": stream,
        "stream_options": {"include_usage": stream}}))
    .unwrap()
}

fn gemini_adapter(stream: bool) -> Gemini {
    let mut gemini = Gemini::at("/v1beta/models".into(), Default::default(), 1);
    gemini
        .chat_request(canonical_request(stream), "gemini")
        .unwrap();
    gemini
}

/// What a Gemini answer (stream events or one response) says; usage from the last report.
fn gemini_said(responses: &[Value]) -> Said {
    let mut said = Said::default();
    for response in responses {
        let candidate = &response["candidates"][0];
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(call) = part.get("functionCall") {
                said.tools.push((
                    String::new(),
                    call["name"].as_str().unwrap().into(),
                    call["args"].to_string(),
                ));
            } else if part["thought"] == true {
                said.reasoning.push_str(part["text"].as_str().unwrap());
            } else if let Some(text) = part["text"].as_str() {
                said.text.push_str(text);
            }
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            said.stop = reason.into();
        }
        if let Some(meta) = response.get("usageMetadata") {
            let count = |k: &str| meta[k].as_u64().unwrap_or(0);
            said.output_tokens = Some(count("candidatesTokenCount") + count("thoughtsTokenCount"));
        }
    }
    said
}

fn gemini_finish(reason: &str, tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" => "content_filter",
        _ if tools => "tool_calls",
        _ => "stop",
    }
}

#[test]
fn gemini_streams_become_the_same_openai_chunks_at_every_split() {
    for (name, body) in files("gemini", ".response.sse") {
        let out = same_at_every_split(|| gemini_adapter(true), 200, "text/event-stream", &body);
        let expected = gemini_said(&json_events(&body));
        let finish = gemini_finish(&expected.stop, !expected.tools.is_empty());
        let got = openai_said(&out);
        assert!(got.tools.iter().all(|t| t.0.starts_with("call_")), "{name}");
        // The recording has no ids to compare: the gateway names the calls.
        let mut named = expected;
        for (call, got) in named.tools.iter_mut().zip(&got.tools) {
            call.0 = got.0.clone();
        }
        assert_says(&name, &out, named, finish);
    }
}

#[test]
fn gemini_responses_and_errors_become_completions() {
    for (name, body) in files("gemini", ".response.json") {
        let response: Value = serde_json::from_slice(&body).unwrap();
        if response.is_array() {
            continue; // streamed without `alt=sse`, which the gateway never asks for
        }
        let status = response["error"]["code"].as_u64().unwrap_or(200) as u16;
        let got = whole_answer(gemini_adapter(false), status, &body);
        if status != 200 {
            assert_eq!(
                got["error"]["message"], response["error"]["message"],
                "{name}"
            );
            continue;
        }
        let expected = gemini_said(std::slice::from_ref(&response));
        let reply = &got["choices"][0]["message"];
        assert_eq!(
            reply["content"].as_str().unwrap_or(""),
            expected.text,
            "{name}"
        );
        let calls: Vec<(String, String, String)> = reply["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    String::new(),
                    c["function"]["name"].as_str().unwrap().into(),
                    c["function"]["arguments"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            normalise(Said {
                tools: calls,
                ..Default::default()
            })
            .tools,
            normalise(expected.clone()).tools,
            "{name}"
        );
        assert_eq!(
            got["choices"][0]["finish_reason"],
            gemini_finish(&expected.stop, !expected.tools.is_empty()),
            "{name}"
        );
        assert_eq!(
            got["usage"]["completion_tokens"].as_u64(),
            expected.output_tokens,
            "{name}"
        );
        assert_eq!(
            got["usage"]["prompt_tokens"], response["usageMetadata"]["promptTokenCount"],
            "{name}"
        );
    }
}

#[test]
fn recorded_openai_requests_become_valid_gemini_requests() {
    for (name, body) in openai_format(".request.json") {
        let request: ChatRequest =
            super::parse_request(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let remote_image = String::from_utf8_lossy(&body).contains("\"url\": \"http");
        let out = match gemini_adapter(false).chat_request(request, "gemini") {
            Err(e) if remote_image => {
                // Gemini reads images inline only; the gateway cannot fetch them.
                assert_eq!(e.status, 400, "{name}");
                continue;
            }
            out => out.unwrap_or_else(|e| panic!("{name}: {e}")),
        };
        let out: Value = serde_json::from_slice(&out).unwrap();
        let contents = out["contents"].as_array().unwrap();
        assert!(
            contents.windows(2).all(|w| w[0]["role"] != w[1]["role"]),
            "{name}: turns alternate"
        );
        assert!(
            contents
                .iter()
                .all(|c| ["user", "model"].contains(&c["role"].as_str().unwrap())),
            "{name}"
        );
    }
}

fn bedrock_adapter(stream: bool) -> Bedrock {
    let provider = crate::config::Config::from_map(
        serde_json::json!({"provider": {"type": "bedrock", "awsRegion": "us-east-1", "apiTokens": ["k"]}})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let mut bedrock = Bedrock::new(provider.active.as_ref().unwrap(), 1);
    bedrock
        .chat_request(canonical_request(stream), "m")
        .unwrap();
    bedrock
}

/// What a Converse answer says, from its decoded events (`{"<type>": payload}`) in order.
fn bedrock_said(events: &[(String, Value)]) -> Said {
    let mut said = Said::default();
    let mut tool_at: BTreeMap<u64, usize> = BTreeMap::new();
    for (kind, payload) in events {
        match kind.as_str() {
            "contentBlockStart" => {
                if let Some(tool) = payload.pointer("/start/toolUse") {
                    tool_at.insert(
                        payload["contentBlockIndex"].as_u64().unwrap(),
                        said.tools.len(),
                    );
                    said.tools.push((
                        tool["toolUseId"].as_str().unwrap().into(),
                        tool["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
            }
            "contentBlockDelta" => {
                let delta = &payload["delta"];
                if let Some(text) = delta["text"].as_str() {
                    said.text.push_str(text);
                } else if let Some(text) = delta
                    .pointer("/reasoningContent/text")
                    .and_then(Value::as_str)
                {
                    said.reasoning.push_str(text);
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                {
                    let i = tool_at[&payload["contentBlockIndex"].as_u64().unwrap()];
                    said.tools[i].2.push_str(input);
                }
            }
            "messageStop" => said.stop = payload["stopReason"].as_str().unwrap().into(),
            "metadata" => said.output_tokens = payload["usage"]["outputTokens"].as_u64(),
            _ => {}
        }
    }
    said
}

fn bedrock_finish(reason: &str) -> &'static str {
    match reason {
        "tool_use" => "tool_calls",
        "max_tokens" => "length",
        _ => "stop",
    }
}

/// The recorded binary streams translate to the same chunks cut at every byte, and say what
/// their frames (decoded independently, `.events.json`) say.
#[test]
fn bedrock_event_streams_become_the_same_openai_chunks_at_every_byte() {
    for (name, body) in files("bedrock-converse", ".response.bin") {
        let whole = super::testing::run(
            || bedrock_adapter(true),
            200,
            "application/vnd.amazon.eventstream",
            &body,
            &[],
        );
        for cut in 0..=body.len() {
            let split = super::testing::run(
                || bedrock_adapter(true),
                200,
                "application/vnd.amazon.eventstream",
                &body,
                &[cut],
            );
            assert!(split == whole, "{name}: split at {cut}");
        }
        let decoded = files("bedrock-converse", &name.replace(".bin", ".events.json"));
        let events: Vec<Value> = serde_json::from_slice(&decoded[0].1).unwrap();
        let events: Vec<(String, Value)> = events
            .into_iter()
            .map(|e| {
                (
                    e["headers"][":event-type"].as_str().unwrap().to_string(),
                    e["payload"].clone(),
                )
            })
            .collect();
        let expected = bedrock_said(&events);
        let finish = bedrock_finish(&expected.stop);
        assert_says(&name, &whole, expected, finish);
    }
}

#[test]
fn bedrock_responses_and_errors_become_completions() {
    for (name, body) in files("bedrock-converse", ".response.json") {
        let response: Value = serde_json::from_slice(&body).unwrap();
        let status = if name.starts_with("error-400") {
            400
        } else {
            200
        };
        let got = whole_answer(bedrock_adapter(false), status, &body);
        if status != 200 {
            assert_eq!(got["error"]["message"], response["message"], "{name}");
            continue;
        }
        let blocks = response["output"]["message"]["content"].as_array().unwrap();
        let events: Vec<(String, Value)> = blocks
            .iter()
            .enumerate()
            .flat_map(|(i, b)| match b.get("toolUse") {
                Some(t) => vec![
                    ("contentBlockStart".to_string(), serde_json::json!({"contentBlockIndex": i, "start": {"toolUse": t}})),
                    ("contentBlockDelta".to_string(), serde_json::json!({"contentBlockIndex": i, "delta": {"toolUse": {"input": t["input"].to_string()}}})),
                ],
                None => vec![("contentBlockDelta".to_string(), serde_json::json!({"delta": b.get("reasoningContent").map_or(b.clone(), |r| serde_json::json!({"reasoningContent": r["reasoningText"]}))}))],
            })
            .collect();
        let expected = normalise(bedrock_said(&events));
        let reply = &got["choices"][0]["message"];
        assert_eq!(
            reply["content"].as_str().unwrap_or(""),
            expected.text,
            "{name}"
        );
        assert_eq!(
            reply["reasoning_content"].as_str().unwrap_or(""),
            expected.reasoning,
            "{name}"
        );
        let calls = reply["tool_calls"].as_array().map_or(0, Vec::len);
        assert_eq!(calls, expected.tools.len(), "{name}");
        assert_eq!(
            got["choices"][0]["finish_reason"],
            bedrock_finish(response["stopReason"].as_str().unwrap()),
            "{name}"
        );
        assert_eq!(
            got["usage"]["completion_tokens"], response["usage"]["outputTokens"],
            "{name}"
        );
        assert_eq!(
            got["usage"]["prompt_tokens"], response["usage"]["inputTokens"],
            "{name}"
        );
    }
}

#[test]
fn recorded_openai_requests_become_valid_converse_requests() {
    for (name, body) in openai_format(".request.json") {
        if name.contains("/error-") {
            continue; // requests the provider refused as recorded
        }
        let request: ChatRequest =
            super::parse_request(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let remote_image = String::from_utf8_lossy(&body).contains("\"url\": \"http");
        let out = match bedrock_adapter(false).chat_request(request, "m") {
            Err(e) if remote_image => {
                assert_eq!(e.status, 400, "{name}");
                continue;
            }
            out => out.unwrap_or_else(|e| panic!("{name}: {e}")),
        };
        let out: Value = serde_json::from_slice(&out).unwrap();
        let roles: Vec<&str> = out["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert!(
            roles.windows(2).all(|w| w[0] != w[1]),
            "{name}: turns alternate: {roles:?}"
        );
        assert_eq!(roles.first(), Some(&"user"), "{name}");
        assert!(
            out["messages"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|m| m["content"].as_array().unwrap())
                .all(|b| b
                    .get("text")
                    .is_none_or(|t| !t.as_str().unwrap().is_empty())),
            "{name}: no blank text blocks"
        );
    }
}

fn cohere_adapter(stream: bool) -> Cohere {
    let mut cohere = Cohere::new(1);
    cohere
        .chat_request(canonical_request(stream), "command")
        .unwrap();
    cohere
}

/// What a Cohere v2 stream says, from its events.
fn cohere_said(events: &[Value]) -> Said {
    let mut said = Said::default();
    for event in events {
        let message = &event["delta"]["message"];
        match event["type"].as_str().unwrap_or("") {
            "content-delta" => said
                .text
                .push_str(message["content"]["text"].as_str().unwrap_or("")),
            "tool-plan-delta" => said
                .reasoning
                .push_str(message["tool_plan"].as_str().unwrap()),
            "tool-call-start" => {
                let call = &message["tool_calls"];
                said.tools.push((
                    call["id"].as_str().unwrap().into(),
                    call["function"]["name"].as_str().unwrap().into(),
                    call["function"]["arguments"].as_str().unwrap_or("").into(),
                ));
            }
            "tool-call-delta" => {
                let i = event["index"].as_u64().unwrap() as usize;
                said.tools[i].2.push_str(
                    message["tool_calls"]["function"]["arguments"]
                        .as_str()
                        .unwrap(),
                );
            }
            "message-end" => {
                said.stop = event["delta"]["finish_reason"].as_str().unwrap().into();
                said.output_tokens = event["delta"]["usage"]["tokens"]["output_tokens"].as_u64();
            }
            _ => {}
        }
    }
    said
}

fn cohere_finish(reason: &str) -> &'static str {
    match reason {
        "TOOL_CALL" => "tool_calls",
        "MAX_TOKENS" => "length",
        _ => "stop",
    }
}

#[test]
fn cohere_streams_become_the_same_openai_chunks_at_every_split() {
    let mut streams = files("cohere", ".response.sse");
    // The `.chunks.jsonl` recorder kept only the payloads: frame them as Cohere does.
    for (name, lines) in files("cohere", ".chunks.jsonl") {
        let framed: String = String::from_utf8(lines)
            .unwrap()
            .lines()
            .map(|l| {
                let kind = serde_json::from_str::<Value>(l).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string();
                format!("event: {kind}\ndata: {l}\n\n")
            })
            .collect::<String>()
            + "data: [DONE]\n\n";
        streams.push((name, framed.into_bytes()));
    }
    for (name, body) in streams {
        let out = same_at_every_split(|| cohere_adapter(true), 200, "text/event-stream", &body);
        let expected = cohere_said(&json_events(&body));
        let finish = cohere_finish(&expected.stop);
        assert_says(&name, &out, expected, finish);
    }
}

#[test]
fn cohere_responses_and_errors_become_completions() {
    for (name, body) in files("cohere", ".response.json") {
        let response: Value = serde_json::from_slice(&body).unwrap();
        let status = if name.starts_with("error-404") {
            404
        } else {
            200
        };
        let got = whole_answer(cohere_adapter(false), status, &body);
        if status != 200 {
            assert_eq!(got["error"]["message"], response["message"], "{name}");
            continue;
        }
        let message = &response["message"];
        let text: String = message["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["text"].as_str())
            .collect();
        let reply = &got["choices"][0]["message"];
        assert_eq!(reply["content"].as_str().unwrap_or(""), text, "{name}");
        assert_eq!(
            reply["tool_calls"].as_array().map_or(0, Vec::len),
            message["tool_calls"].as_array().map_or(0, Vec::len),
            "{name}"
        );
        assert_eq!(
            got["choices"][0]["finish_reason"],
            cohere_finish(response["finish_reason"].as_str().unwrap()),
            "{name}"
        );
        assert_eq!(
            got["usage"]["completion_tokens"], response["usage"]["tokens"]["output_tokens"],
            "{name}"
        );
        assert_eq!(
            got["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
            Some(response["usage"]["cached_tokens"].as_u64().unwrap_or(0)),
            "{name}"
        );
    }
}

fn ollama_adapter(stream: bool) -> Ollama {
    let mut ollama = Ollama::new(1);
    ollama
        .chat_request(canonical_request(stream), "llama")
        .unwrap();
    ollama
}

#[test]
fn ollama_ndjson_streams_and_responses_become_canonical() {
    for (name, body) in files("ollama", "native-chat-streaming.response.ndjson") {
        let out = same_at_every_split(|| ollama_adapter(true), 200, "application/x-ndjson", &body);
        let lines: Vec<Value> = String::from_utf8_lossy(&body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let text: String = lines
            .iter()
            .filter_map(|l| l["message"]["content"].as_str())
            .collect();
        let last = lines.last().unwrap();
        let got = openai_said(&out);
        assert_eq!(got.text, text, "{name}");
        assert_eq!(got.stop, "stop", "{name}");
        assert_eq!(
            got.output_tokens,
            last["eval_count"].as_u64(),
            "{name}: usage chunk"
        );
        assert_eq!(
            sse(&out).last().map(|(_, d)| d.as_str()),
            Some("[DONE]"),
            "{name}"
        );
    }
    for (name, body) in files("ollama", ".response.json")
        .into_iter()
        .filter(|(n, _)| n.starts_with("native-"))
    {
        let response: Value = serde_json::from_slice(&body).unwrap();
        let got = whole_answer(ollama_adapter(false), 200, &body);
        let reply = &got["choices"][0]["message"];
        let calls = response["message"]["tool_calls"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(
            reply["tool_calls"].as_array().map_or(0, Vec::len),
            calls,
            "{name}"
        );
        if calls > 0 {
            let call = &response["message"]["tool_calls"][0]["function"];
            assert_eq!(
                reply["tool_calls"][0]["function"]["name"], call["name"],
                "{name}"
            );
            assert_eq!(
                serde_json::from_str::<Value>(
                    reply["tool_calls"][0]["function"]["arguments"]
                        .as_str()
                        .unwrap()
                )
                .unwrap(),
                call["arguments"],
                "{name}"
            );
            assert_eq!(got["choices"][0]["finish_reason"], "tool_calls", "{name}");
        } else {
            assert_eq!(reply["content"], response["message"]["content"], "{name}");
        }
        assert_eq!(
            got["usage"]["prompt_tokens"], response["prompt_eval_count"],
            "{name}"
        );
        assert_eq!(
            got["usage"]["completion_tokens"], response["eval_count"],
            "{name}"
        );
    }
}
