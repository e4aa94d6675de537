//! The mock providers answer like the real services: their bodies have the shape of the real
//! transcripts recorded in `../shared/fixtures/providers/` (same fields, same types, same SSE
//! framing), and their errors carry the real messages. Comparisons with a recording are
//! skipped, saying so, when the fixtures folder is absent (a clone of this repository alone);
//! the checks of auth and validation run always. The official Python SDKs drive each mock once.

use e2e::client::{get_with, post_json, post_stream};
use e2e::mock::openai::content_pieces;
use e2e::paths::provider_fixture;
use e2e::{python, AnthropicMock, AzureMock, MockServer, OpenAiMock};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The structure of a JSON value: object keys with the shape of their values, the shape of an
/// array's first element, the type of a scalar. `null` matches any type, as real APIs send
/// `null` for absent optional values.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Object(BTreeMap<String, Shape>),
    Array(Option<Box<Shape>>),
    Scalar(&'static str),
    Null,
}

fn shape(value: &Value) -> Shape {
    match value {
        Value::Object(map) => {
            Shape::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => Shape::Array(items.first().map(|v| Box::new(shape(v)))),
        Value::String(_) => Shape::Scalar("string"),
        Value::Number(_) => Shape::Scalar("number"),
        Value::Bool(_) => Shape::Scalar("bool"),
        Value::Null => Shape::Null,
    }
}

/// Differences between the mock's shape and the real one, as readable paths.
fn differences(path: &str, real: &Shape, mock: &Shape, out: &mut Vec<String>) {
    match (real, mock) {
        (Shape::Null, _) | (_, Shape::Null) => {}
        (Shape::Object(a), Shape::Object(b)) => {
            for (key, real_value) in a {
                match b.get(key) {
                    Some(mock_value) => {
                        differences(&format!("{path}.{key}"), real_value, mock_value, out)
                    }
                    None => out.push(format!("{path}.{key}: missing in the mock")),
                }
            }
            // A key the mock sends as null is an absent optional value (recordings of different
            // models differ there, e.g. `logprobs`).
            for (key, _) in b
                .iter()
                .filter(|(k, v)| !a.contains_key(*k) && **v != Shape::Null)
            {
                out.push(format!("{path}.{key}: not in the real response"));
            }
        }
        (Shape::Array(Some(a)), Shape::Array(Some(b))) => {
            differences(&format!("{path}[0]"), a, b, out)
        }
        (Shape::Array(_), Shape::Array(_)) => {}
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: real {a:?}, mock {b:?}")),
    }
}

fn assert_same_shape(what: &str, real: &Value, mock: &Value) {
    assert_same_shape_but_newer(what, real, mock, &[]);
}

/// Like [`assert_same_shape`], for a recording older than fields the live service sends now:
/// the mock may add the fields at `newer` (paths like `.choices[0].content_filter_results`).
fn assert_same_shape_but_newer(what: &str, real: &Value, mock: &Value, newer: &[&str]) {
    let mut diffs = Vec::new();
    differences("", &shape(real), &shape(mock), &mut diffs);
    diffs.retain(|d| {
        !newer
            .iter()
            .any(|path| d == &format!("{path}: not in the real response"))
    });
    assert!(
        diffs.is_empty(),
        "{what}: the mock differs from the recording:\n{}",
        diffs.join("\n")
    );
}

/// A recorded file of `../shared/fixtures/providers/<folder>/`, if the fixtures are present.
fn fixture_in(folder: &str, name: &str) -> Option<String> {
    match provider_fixture(&format!("{folder}/{name}")) {
        Some(path) => Some(std::fs::read_to_string(path).expect("read fixture")),
        None => {
            println!("skipped: ../shared/fixtures/providers/{folder}/{name} not found (fixtures are not part of this repository)");
            None
        }
    }
}

fn fixture_json_in(folder: &str, name: &str) -> Option<Value> {
    fixture_in(folder, name).map(|text| serde_json::from_str(&text).expect("fixture JSON"))
}

fn fixture(name: &str) -> Option<String> {
    fixture_in("openai-chat", name)
}

fn fixture_json(name: &str) -> Option<Value> {
    fixture_json_in("openai-chat", name)
}

/// The `data:` payloads of a recorded SSE body, checking its framing on the way: every event is
/// exactly one `data:` line followed by a blank line.
fn sse_payloads(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "stream must end with a blank line");
    body.trim_end_matches('\n')
        .split("\n\n")
        .map(|event| {
            let payload = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event is not a data line: {event:?}"));
            assert!(
                !payload.contains('\n'),
                "one data line per event: {event:?}"
            );
            payload.to_string()
        })
        .collect()
}

fn chunks(payloads: &[String]) -> Vec<Value> {
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).expect("chunk JSON"))
        .collect()
}

fn mock() -> MockServer {
    MockServer::start(OpenAiMock::with_key("sk-conformance"))
}

const AUTH: (&str, &str) = ("authorization", "Bearer sk-conformance");

fn mock_chat(server: &MockServer, body: Value) -> Value {
    let reply = post_json(&server.url("/v1/chat/completions"), &body, &[AUTH]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn mock_stream(server: &MockServer, body: Value) -> Vec<String> {
    let streamed = post_stream(&server.url("/v1/chat/completions"), &body, &[AUTH]);
    assert_eq!(streamed.status, 200);
    assert!(streamed
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    sse_payloads(&String::from_utf8(streamed.body).unwrap())
}

#[test]
fn completion_has_the_recorded_shape() {
    let (Some(request), Some(real)) = (
        fixture_json("basic.request.json"),
        fixture_json("basic.response.json"),
    ) else {
        return;
    };
    let server = mock();
    assert_same_shape("basic completion", &real, &mock_chat(&server, request));
}

#[test]
fn tool_call_completion_has_the_recorded_shape() {
    let (Some(request), Some(real)) = (
        fixture_json("tools.request.json"),
        fixture_json("tools.response.json"),
    ) else {
        return;
    };
    let server = mock();
    let answer = mock_chat(&server, request);
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_same_shape("tool call completion", &real, &answer);
}

#[test]
fn stream_has_the_recorded_framing_and_chunks() {
    let (Some(request), Some(real)) = (
        fixture_json("streaming.request.json"),
        fixture("streaming.response.sse"),
    ) else {
        return;
    };
    let server = mock();
    let real = chunks(&sse_payloads(&real));
    let mocked = chunks(&mock_stream(&server, request));
    // First chunk: the role; middle: content deltas; last: empty delta with finish_reason.
    // Without include_usage there is no usage key at all.
    for (what, r, m) in [
        ("role chunk", &real[0], &mocked[0]),
        ("content chunk", &real[1], &mocked[1]),
        ("finish chunk", real.last().unwrap(), mocked.last().unwrap()),
    ] {
        assert_same_shape(what, r, m);
    }
    assert_eq!(mocked.last().unwrap()["choices"][0]["delta"], json!({}));
    assert!(mocked.iter().all(|c| c.get("usage").is_none()));
}

#[test]
fn stream_with_usage_has_the_recorded_usage_chunk() {
    let (Some(request), Some(real)) = (
        fixture_json("streaming-usage.request.json"),
        fixture("streaming-usage.response.sse"),
    ) else {
        return;
    };
    let server = mock();
    let real = chunks(&sse_payloads(&real));
    let mocked = chunks(&mock_stream(&server, request));
    assert_same_shape("usage chunk", real.last().unwrap(), mocked.last().unwrap());
    assert_eq!(mocked.last().unwrap()["choices"], json!([]));
    assert!(mocked[..mocked.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null() && c.get("usage").is_some()));
}

#[test]
fn streamed_tool_call_has_the_recorded_deltas() {
    let (Some(request), Some(real)) = (
        fixture_json("streaming-tool-call.1.request.json"),
        fixture("streaming-tool-call.1.response.sse"),
    ) else {
        return;
    };
    let server = mock();
    let real = chunks(&sse_payloads(&real));
    let mocked = chunks(&mock_stream(&server, request));
    assert_same_shape("tool call start", &real[0], &mocked[0]);
    assert_same_shape("argument fragment", &real[1], &mocked[1]);
    let finish = |c: &[Value]| {
        c.iter()
            .find(|c| c["choices"][0]["finish_reason"] == "tool_calls")
            .cloned()
            .unwrap()
    };
    assert_same_shape("finish chunk", &finish(&real), &finish(&mocked));
    // The argument fragments concatenate to the JSON arguments.
    let arguments = e2e::client::tool_arguments(&mocked);
    serde_json::from_str::<Map<String, Value>>(&arguments).expect("arguments are a JSON object");
}

#[test]
fn errors_match_the_recorded_bodies() {
    let server = mock();
    if let (Some(request), Some(real)) = (
        fixture_json("error-400-empty-messages.request.json"),
        fixture_json("error-400-empty-messages.response.json"),
    ) {
        let reply = post_json(&server.url("/v1/chat/completions"), &request, &[AUTH]);
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json(), real);
    }
    if let (Some(request), Some(real)) = (
        fixture_json("error-404-model-not-found.request.json"),
        fixture_json("error-404-model-not-found.response.json"),
    ) {
        let mut request = request;
        request["model"] = json!("does-not-exist-model");
        let reply = post_json(&server.url("/v1/chat/completions"), &request, &[AUTH]);
        assert_eq!(reply.status, 404);
        assert_same_shape("404", &real, &reply.json());
        assert_eq!(reply.json()["error"]["code"], "model_not_found");
        assert_eq!(
            reply.json()["error"]["message"],
            "The model `does-not-exist-model` does not exist or you do not have access to it."
        );
    }
}

#[test]
fn auth_and_malformed_requests_are_refused_like_openai() {
    let server = mock();
    let url = server.url("/v1/chat/completions");
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let missing = post_json(&url, &body, &[]);
    assert_eq!(missing.status, 401);
    assert!(missing.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("You didn't provide an API key"));
    let wrong = post_json(
        &url,
        &body,
        &[("authorization", "Bearer sk-wrong-key-123456")],
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    assert!(
        !wrong.text().contains("sk-wrong-key-123456"),
        "the key is shown redacted"
    );

    let not_json = e2e::client::post(
        &url,
        "{\"model\": ",
        &[AUTH, ("content-type", "application/json")],
    );
    assert_eq!(not_json.status, 400);
    assert!(not_json.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("could not parse the JSON body"));
    let bad_type = post_json(&url, &json!({"model": "gpt-4o", "messages": "hi"}), &[AUTH]);
    assert_eq!(bad_type.status, 400);
    assert_eq!(bad_type.json()["error"]["param"], "messages");
    assert_eq!(bad_type.json()["error"]["code"], "invalid_type");
    let bad_stream = post_json(
        &url,
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
        &[AUTH],
    );
    assert_eq!(bad_stream.status, 400);
    assert_eq!(bad_stream.json()["error"]["param"], "stream");

    let models = get_with(&server.url("/v1/models"), &[AUTH]);
    assert_eq!(models.status, 200);
    assert_eq!(models.json()["object"], "list");
}

// ---------------------------------------------------------------------------------------------
// OpenAI: OpenAI-compatible path prefixes and embeddings
// ---------------------------------------------------------------------------------------------

#[test]
fn openai_compatible_path_prefixes_are_served_and_recorded() {
    let server = mock();
    let body = json!({"model": "glm-4", "messages": [{"role": "user", "content": "hi"}]});
    for path in [
        "/api/paas/v4/chat/completions",
        "/openai/v1/chat/completions",
        "/compatible-mode/v1/chat/completions",
    ] {
        let reply = post_json(&server.url(path), &body, &[AUTH]);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.json()["object"], "chat.completion");
        assert_eq!(server.requests.last().unwrap().path, path);
    }
    let models = get_with(&server.url("/api/paas/v4/models"), &[AUTH]);
    assert_eq!(models.status, 200);
    assert_eq!(models.json()["object"], "list");
    let unknown = post_json(&server.url("/v1/completions"), &body, &[AUTH]);
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.json()["error"]["message"],
        "Invalid URL (POST /v1/completions)"
    );
}

#[test]
fn embeddings_answer_like_openai() {
    let server = mock();
    let url = server.url("/v1/embeddings");
    let embed = |input: Value| {
        let reply = post_json(
            &url,
            &json!({"model": "text-embedding-3-small", "input": input}),
            &[AUTH],
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    };
    let one = embed(json!("The food was delicious"));
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "text-embedding-3-small");
    assert_eq!(one["data"][0]["object"], "embedding");
    assert_eq!(one["data"][0]["index"], 0);
    let vector: Vec<f64> = serde_json::from_value(one["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(vector.len(), 8);
    let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "unit vector, got norm {norm}");
    assert!(one["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(one["usage"]["total_tokens"], one["usage"]["prompt_tokens"]);

    let two = embed(json!(["The food was delicious", "and the waiter"]));
    assert_eq!(two["data"].as_array().unwrap().len(), 2);
    assert_eq!(two["data"][1]["index"], 1);
    assert_eq!(
        two["data"][0]["embedding"], one["data"][0]["embedding"],
        "the same text gets the same vector"
    );
    assert_ne!(two["data"][1]["embedding"], two["data"][0]["embedding"]);

    let sized = post_json(
        &url,
        &json!({"model": "m", "input": "x", "dimensions": 16}),
        &[AUTH],
    );
    assert_eq!(
        sized.json()["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        16
    );
    let base64 = post_json(
        &url,
        &json!({"model": "m", "input": "The food was delicious", "encoding_format": "base64"}),
        &[AUTH],
    );
    assert!(base64.json()["data"][0]["embedding"].is_string());

    let no_input = post_json(&url, &json!({"model": "m"}), &[AUTH]);
    assert_eq!(no_input.status, 400);
    assert_eq!(
        no_input.json()["error"]["message"],
        "'input' is a required property"
    );
    let no_model = post_json(&url, &json!({"input": "x"}), &[AUTH]);
    assert_eq!(no_model.status, 400);
    assert_eq!(
        no_model.json()["error"]["message"],
        "you must provide a model parameter"
    );
    let empty = post_json(&url, &json!({"model": "m", "input": ["a", ""]}), &[AUTH]);
    assert_eq!(empty.status, 400);
    assert!(empty.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("'$.input' is invalid."));
    assert_eq!(
        post_json(&url, &json!({"model": "m", "input": "x"}), &[]).status,
        401
    );
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages
// ---------------------------------------------------------------------------------------------

const ANTHROPIC_KEY: &str = "sk-ant-conformance";
const ANTHROPIC_HEADERS: [(&str, &str); 2] = [
    ("x-api-key", ANTHROPIC_KEY),
    ("anthropic-version", "2023-06-01"),
];

fn anthropic_mock() -> MockServer {
    MockServer::start(AnthropicMock::with_key(ANTHROPIC_KEY))
}

fn anthropic_fixture_json(name: &str) -> Option<Value> {
    fixture_json_in("anthropic-messages", name)
}

fn anthropic_message(server: &MockServer, body: &Value) -> Value {
    let reply = post_json(
        &server.url("/v1/messages?beta=true"),
        body,
        &ANTHROPIC_HEADERS,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.header("request-id").unwrap().starts_with("req_"));
    reply.json()
}

/// The events of an Anthropic SSE body, checking the framing on the way: every event is an
/// `event:` line and one `data:` line whose JSON has the same `type`, then a blank line. The
/// JSON may be padded with spaces (the live API does that), so it is parsed, never compared
/// as text.
fn anthropic_events(body: &str) -> Vec<(String, Value)> {
    assert!(body.ends_with("\n\n"), "stream must end with a blank line");
    body.trim_end_matches('\n')
        .split("\n\n")
        .map(|event| {
            let (name, data) = event
                .split_once('\n')
                .unwrap_or_else(|| panic!("event without data: {event:?}"));
            let name = name
                .strip_prefix("event: ")
                .unwrap_or_else(|| panic!("no event line: {event:?}"));
            let data = data
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("no data line: {event:?}"));
            assert!(!data.contains('\n'), "one data line per event: {event:?}");
            let json: Value = serde_json::from_str(data).expect("event JSON");
            assert_eq!(json["type"], name, "event name and data type agree");
            (name.to_string(), json)
        })
        .collect()
}

fn anthropic_stream(server: &MockServer, body: &Value) -> Vec<(String, Value)> {
    let streamed = post_stream(&server.url("/v1/messages"), body, &ANTHROPIC_HEADERS);
    assert_eq!(streamed.status, 200);
    assert_eq!(
        streamed.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let body = String::from_utf8(streamed.body).unwrap();
    assert!(
        !body.contains("[DONE]"),
        "Anthropic streams end without [DONE]"
    );
    anthropic_events(&body)
}

/// Event names with runs of the same name collapsed (`content_block_delta` ×n → once).
fn event_sequence(events: &[(String, Value)]) -> Vec<String> {
    let mut names: Vec<String> = events.iter().map(|(name, _)| name.clone()).collect();
    names.dedup();
    names
}

/// The first event matching `pick`.
fn first_event(events: &[(String, Value)], pick: impl Fn(&Value) -> bool) -> Value {
    events
        .iter()
        .map(|(_, json)| json)
        .find(|json| pick(json))
        .cloned()
        .expect("no such event")
}

fn delta_of_type(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["type"] == "content_block_delta" && e["delta"]["type"] == kind
}

fn block_start_of_type(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["type"] == "content_block_start" && e["content_block"]["type"] == kind
}

#[test]
fn anthropic_message_has_the_recorded_shape() {
    let server = anthropic_mock();
    for name in ["basic", "basic-system"] {
        let (Some(request), Some(real)) = (
            anthropic_fixture_json(&format!("{name}.request.json")),
            anthropic_fixture_json(&format!("{name}.response.json")),
        ) else {
            continue;
        };
        let answer = anthropic_message(&server, &request);
        assert_same_shape(name, &real, &answer);
        assert_eq!(answer["stop_reason"], "end_turn");
        assert_eq!(answer["model"], request["model"]);
        assert_eq!(
            answer["content"][0]["text"],
            content_pieces(5, None).collect::<String>()
        );
        assert_eq!(answer["usage"]["output_tokens"], 5);
    }
}

#[test]
fn anthropic_system_prompt_is_charged_as_input() {
    let server = anthropic_mock();
    let mut body = json!({"model": "claude-haiku-4-5", "max_tokens": 100,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let without = anthropic_message(&server, &body)["usage"]["input_tokens"]
        .as_u64()
        .unwrap();
    body["system"] = json!("You are a helpful assistant who answers in one short sentence.");
    let with_string = anthropic_message(&server, &body)["usage"]["input_tokens"]
        .as_u64()
        .unwrap();
    body["system"] = json!([{"type": "text", "text": "You are a helpful assistant who answers in one short sentence."}]);
    let with_blocks = anthropic_message(&server, &body)["usage"]["input_tokens"]
        .as_u64()
        .unwrap();
    assert!(with_string > without, "{with_string} > {without}");
    assert_eq!(with_blocks, with_string);
}

#[test]
fn anthropic_tool_use_has_the_recorded_shape() {
    let (Some(request), Some(real)) = (
        anthropic_fixture_json("tool-call.1.request.json"),
        anthropic_fixture_json("tool-call.1.response.json"),
    ) else {
        return;
    };
    let server = anthropic_mock();
    let answer = anthropic_message(&server, &request);
    assert_eq!(answer["stop_reason"], "tool_use");
    // The recording starts with a text block; compare the message around its content, then
    // the tool_use blocks with each other.
    let without_content = |v: &Value| {
        let mut v = v.clone();
        v["content"] = json!([]);
        v
    };
    assert_same_shape(
        "tool use message",
        &without_content(&real),
        &without_content(&answer),
    );
    let tool_use = |v: &Value| {
        v["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .cloned()
            .unwrap()
    };
    assert_same_shape("tool_use block", &tool_use(&real), &tool_use(&answer));
    assert_eq!(tool_use(&answer)["name"], "retrieve_entity_info");
    assert_eq!(tool_use(&answer)["input"], json!({"name": "Paris"}));
    assert!(tool_use(&answer)["id"]
        .as_str()
        .unwrap()
        .starts_with("toolu_"));
}

#[test]
fn anthropic_stream_has_the_recorded_events() {
    let (Some(request), Some(real)) = (
        anthropic_fixture_json("streaming.request.json"),
        fixture_in("anthropic-messages", "streaming.response.sse"),
    ) else {
        return;
    };
    let server = anthropic_mock();
    let real = anthropic_events(&real);
    let mocked = anthropic_stream(&server, &request);
    assert_eq!(event_sequence(&mocked), event_sequence(&real));
    for kind in [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ] {
        let pick = |e: &Value| e["type"] == kind;
        assert_same_shape(kind, &first_event(&real, pick), &first_event(&mocked, pick));
    }
    let text: String = mocked
        .iter()
        .filter_map(|(_, e)| e.pointer("/delta/text").and_then(Value::as_str))
        .collect();
    assert_eq!(text, content_pieces(5, None).collect::<String>());
    let start = first_event(&mocked, |e| e["type"] == "message_start");
    let end = first_event(&mocked, |e| e["type"] == "message_delta");
    assert_eq!(start["message"]["usage"]["output_tokens"], 1);
    assert_eq!(end["usage"]["output_tokens"], 5, "final cumulative count");
    assert_eq!(
        end["usage"]["input_tokens"],
        start["message"]["usage"]["input_tokens"]
    );
    assert_eq!(end["delta"]["stop_reason"], "end_turn");
}

#[test]
fn anthropic_streamed_tool_use_has_the_recorded_deltas() {
    let (Some(request), Some(real)) = (
        anthropic_fixture_json("streaming-tool-call-with-args.1.request.json"),
        fixture_in(
            "anthropic-messages",
            "streaming-tool-call-with-args.1.response.sse",
        ),
    ) else {
        return;
    };
    let server = anthropic_mock();
    let real = anthropic_events(&real);
    let mocked = anthropic_stream(&server, &request);
    let pick = block_start_of_type("tool_use");
    assert_same_shape(
        "tool_use block start",
        &first_event(&real, &pick),
        &first_event(&mocked, &pick),
    );
    let pick = delta_of_type("input_json_delta");
    assert_same_shape(
        "input_json_delta",
        &first_event(&real, &pick),
        &first_event(&mocked, &pick),
    );
    // Like the recording: an empty fragment first, then pieces that join into the input.
    let fragments: Vec<&str> = mocked
        .iter()
        .filter_map(|(_, e)| e.pointer("/delta/partial_json").and_then(Value::as_str))
        .collect();
    assert_eq!(fragments[0], "");
    assert!(
        fragments.len() > 2,
        "the input arrives in several fragments"
    );
    let input: Value = serde_json::from_str(&fragments.concat()).expect("input JSON");
    assert_eq!(input, json!({"from_currency": "Paris"}));
    let end = first_event(&mocked, |e| e["type"] == "message_delta");
    assert_eq!(end["delta"]["stop_reason"], "tool_use");
}

#[test]
fn anthropic_thinking_stream_has_the_recorded_deltas() {
    let (Some(request), Some(real)) = (
        anthropic_fixture_json("streaming-thinking.request.json"),
        fixture_in("anthropic-messages", "streaming-thinking.response.sse"),
    ) else {
        return;
    };
    let server = anthropic_mock();
    let real = anthropic_events(&real);
    let mocked = anthropic_stream(&server, &request);
    assert_eq!(event_sequence(&mocked), event_sequence(&real));
    for (what, pick) in [
        (
            "thinking block start",
            Box::new(block_start_of_type("thinking")) as Box<dyn Fn(&Value) -> bool>,
        ),
        ("thinking_delta", Box::new(delta_of_type("thinking_delta"))),
        (
            "signature_delta",
            Box::new(delta_of_type("signature_delta")),
        ),
        ("text block start", Box::new(block_start_of_type("text"))),
    ] {
        assert_same_shape(
            what,
            &first_event(&real, &pick),
            &first_event(&mocked, &pick),
        );
    }
    // The thinking block comes first, the text block second.
    assert_eq!(
        first_event(&mocked, block_start_of_type("text"))["index"],
        1
    );
    assert_eq!(
        first_event(&mocked, delta_of_type("signature_delta"))["index"],
        0
    );
}

#[test]
fn anthropic_errors_match_the_recorded_bodies() {
    let server = anthropic_mock();
    if let (Some(mut request), Some(real)) = (
        anthropic_fixture_json("error-404-not-found.request.json"),
        anthropic_fixture_json("error-404-not-found.response.json"),
    ) {
        request["model"] = json!("does-not-exist-claude");
        let reply = post_json(&server.url("/v1/messages"), &request, &ANTHROPIC_HEADERS);
        assert_eq!(reply.status, 404);
        assert_same_shape("404", &real, &reply.json());
        assert_eq!(reply.json()["error"]["type"], "not_found_error");
        assert_eq!(
            reply.json()["error"]["message"],
            "model: does-not-exist-claude"
        );
        assert!(reply.json()["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_"));
    }
    if let (Some(mut request), Some(real)) = (
        anthropic_fixture_json("error-400-invalid-request.request.json"),
        anthropic_fixture_json("error-400-invalid-request.response.json"),
    ) {
        request.as_object_mut().unwrap().remove("max_tokens");
        let reply = post_json(&server.url("/v1/messages"), &request, &ANTHROPIC_HEADERS);
        assert_eq!(reply.status, 400);
        assert_same_shape("400", &real, &reply.json());
        assert_eq!(
            reply.json()["error"]["message"],
            "max_tokens: Field required"
        );
    }
}

#[test]
fn anthropic_refuses_wrong_auth_like_anthropic() {
    let server = anthropic_mock();
    let url = server.url("/v1/messages");
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}]});
    let version = ("anthropic-version", "2023-06-01");
    let refused = |headers: &[(&str, &str)], message: &str| {
        let reply = post_json(&url, &body, headers);
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.json()["type"], "error");
        assert_eq!(reply.json()["error"]["type"], "authentication_error");
        assert_eq!(reply.json()["error"]["message"], message);
    };
    refused(&[version], "x-api-key header is required");
    refused(
        &[("x-api-key", "sk-ant-wrong"), version],
        "invalid x-api-key",
    );
    let bearer = format!("Bearer {ANTHROPIC_KEY}");
    refused(
        &[("authorization", &bearer), version],
        "x-api-key header is required",
    );

    let no_version = post_json(&url, &body, &[("x-api-key", ANTHROPIC_KEY)]);
    assert_eq!(no_version.status, 400);
    assert_eq!(no_version.json()["error"]["type"], "invalid_request_error");
    assert_eq!(
        no_version.json()["error"]["message"],
        "anthropic-version: header is required"
    );

    // Any non-empty key without a configured one; bearer only when asked for.
    let open = MockServer::start(AnthropicMock::default());
    let reply = post_json(
        &open.url("/v1/messages"),
        &body,
        &[("x-api-key", "anything"), version],
    );
    assert_eq!(reply.status, 200);
    let bearer_ok = MockServer::start(AnthropicMock::with_key(ANTHROPIC_KEY).accepting_bearer());
    let reply = post_json(
        &bearer_ok.url("/v1/messages"),
        &body,
        &[("authorization", &bearer), version],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn anthropic_refuses_malformed_requests_like_anthropic() {
    let server = anthropic_mock();
    let url = server.url("/v1/messages");
    let invalid = |body: Value, message: &str| {
        let reply = post_json(&url, &body, &ANTHROPIC_HEADERS);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
        assert_eq!(reply.json()["error"]["message"], message, "{body}");
    };
    let user = json!([{"role": "user", "content": "hi"}]);
    invalid(
        json!({"max_tokens": 10, "messages": user}),
        "model: Field required",
    );
    invalid(
        json!({"model": "m", "messages": user}),
        "max_tokens: Field required",
    );
    invalid(
        json!({"model": "m", "max_tokens": 0, "messages": user}),
        "max_tokens: Input should be greater than or equal to 1",
    );
    invalid(
        json!({"model": "m", "max_tokens": "ten", "messages": user}),
        "max_tokens: Input should be a valid integer",
    );
    invalid(
        json!({"model": "m", "max_tokens": 10}),
        "messages: Field required",
    );
    invalid(
        json!({"model": "m", "max_tokens": 10, "messages": []}),
        "messages: at least one message is required",
    );
    invalid(
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}),
        "messages.0.role: Input should be 'user' or 'assistant'",
    );
    invalid(
        json!({"model": "m", "max_tokens": 10, "messages": user, "temperature": 1.5}),
        "temperature: Input should be less than or equal to 1",
    );
    invalid(
        json!({"model": "m", "max_tokens": 10, "messages": user, "system": [{"type": "image"}]}),
        "system.0.type: Input should be 'text'",
    );
    invalid(
        json!({"model": "m", "max_tokens": 10, "messages": user, "stream": "yes"}),
        "stream: Input should be a valid boolean",
    );
    let not_json = e2e::client::post(
        &url,
        "{\"model\": ",
        &[
            ANTHROPIC_HEADERS[0],
            ANTHROPIC_HEADERS[1],
            ("content-type", "application/json"),
        ],
    );
    assert_eq!(not_json.status, 400);
    assert!(not_json.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("The request body is not valid JSON"));

    let elsewhere = post_json(&server.url("/v1/complete"), &json!({}), &ANTHROPIC_HEADERS);
    assert_eq!(elsewhere.status, 404);
    assert_eq!(elsewhere.json()["error"]["type"], "not_found_error");
}

#[test]
fn anthropic_answers_follow_the_request() {
    let server = anthropic_mock();
    let ask = |extra: Value| {
        let mut body = json!({"model": "claude-haiku-4-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        anthropic_message(&server, &body)
    };
    // max_tokens stops the text.
    let short = ask(json!({"max_tokens": 2}));
    assert_eq!(short["stop_reason"], "max_tokens");
    assert_eq!(short["usage"]["output_tokens"], 2);
    assert_eq!(short["content"][0]["text"], "Hello from");
    // A stop sequence cuts the text before it.
    let stopped = ask(json!({"stop_sequences": ["mock"]}));
    assert_eq!(stopped["stop_reason"], "stop_sequence");
    assert_eq!(stopped["stop_sequence"], "mock");
    assert_eq!(stopped["content"][0]["text"], "Hello from the ");
    // Tools: called unless tool_choice is none or the user hands back a tool result.
    let weather = json!([{"name": "get_weather", "input_schema": {"type": "object",
        "properties": {"unit": {"type": "string"}, "city": {"type": "string"}}, "required": ["city"]}}]);
    let called = ask(json!({"tools": weather}));
    assert_eq!(called["content"][0]["input"], json!({"city": "Paris"}));
    let none = ask(json!({"tools": weather, "tool_choice": {"type": "none"}}));
    assert_eq!(none["content"][0]["type"], "text");
    let answered = ask(json!({"tools": weather, "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"}]}
    ]}));
    assert_eq!(answered["content"][0]["type"], "text");
    assert_eq!(answered["stop_reason"], "end_turn");
    // Thinking comes first, with a signature.
    let thought =
        ask(json!({"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}}));
    assert_eq!(thought["content"][0]["type"], "thinking");
    assert!(!thought["content"][0]["signature"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(thought["content"][1]["type"], "text");
}

#[test]
fn anthropic_knobs_shape_the_answer() {
    let server = anthropic_mock();
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}]});
    let url = server.url("/v1/messages");
    for (status, kind) in [
        ("400", "invalid_request_error"),
        ("401", "authentication_error"),
        ("403", "permission_error"),
        ("404", "not_found_error"),
        ("429", "rate_limit_error"),
        ("500", "api_error"),
        ("529", "overloaded_error"),
    ] {
        let reply = post_json(
            &url,
            &body,
            &[
                ANTHROPIC_HEADERS[0],
                ANTHROPIC_HEADERS[1],
                ("x-mock-status", status),
            ],
        );
        assert_eq!(reply.status.to_string(), status);
        assert_eq!(reply.json()["type"], "error");
        assert_eq!(reply.json()["error"]["type"], kind);
    }
    let reply = post_json(
        &url,
        &body,
        &[
            ANTHROPIC_HEADERS[0],
            ANTHROPIC_HEADERS[1],
            ("x-mock-chunks", "3"),
            ("x-mock-chunk-bytes", "10"),
        ],
    );
    let text = reply.json()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(text.len(), 30);
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let streamed = post_stream(
        &url,
        &stream_body,
        &[
            ANTHROPIC_HEADERS[0],
            ANTHROPIC_HEADERS[1],
            ("x-mock-first-delay-ms", "150"),
        ],
    );
    assert!(
        streamed.first_byte.unwrap() < Duration::from_millis(150),
        "message_start is sent before the first token"
    );
    assert!(streamed.total >= Duration::from_millis(150));
}

// ---------------------------------------------------------------------------------------------
// Azure OpenAI
// ---------------------------------------------------------------------------------------------

const AZURE_KEY: &str = "azure-conformance-key";

fn azure_mock() -> MockServer {
    MockServer::start(
        AzureMock::with_key(AZURE_KEY).deployment("gpt-5-nano", "gpt-5-nano-2025-08-07"),
    )
}

fn azure_url(server: &MockServer, deployment: &str, operation: &str) -> String {
    server.url(&format!(
        "/openai/deployments/{deployment}/{operation}?api-version=2024-12-01-preview"
    ))
}

fn azure_fixture_json(name: &str) -> Option<Value> {
    fixture_json_in("azure-openai", name)
}

/// `value` with every `content_filter_results` emptied: which categories they list depends on
/// the deployment's filter configuration (`{}` for some models), not on the wire format.
fn without_filter_categories(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "content_filter_results" {
                        json!({})
                    } else {
                        without_filter_categories(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_filter_categories).collect()),
        other => other.clone(),
    }
}

/// The `data:` payloads of a recorded Azure stream (one recording was saved without the final
/// blank line, so this does not insist on it).
fn recorded_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data line").to_string())
        .collect()
}

#[test]
fn azure_completion_has_the_recorded_shape() {
    let (Some(request), Some(real), Some(real_filtered)) = (
        azure_fixture_json("chat-basic.request.json"),
        azure_fixture_json("chat-basic.response.json"),
        azure_fixture_json("chat-basic-2.response.json"),
    ) else {
        return;
    };
    let server = azure_mock();
    let url = azure_url(&server, "gpt-5-nano", "chat/completions");
    let reply = post_json(&url, &request, &[("api-key", AZURE_KEY)]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_same_shape(
        "Azure completion",
        &without_filter_categories(&real),
        &without_filter_categories(&answer),
    );
    // The filter verdicts have the categories of a recording that lists them.
    assert_same_shape(
        "prompt filter results",
        &real_filtered["prompt_filter_results"],
        &answer["prompt_filter_results"],
    );
    assert_same_shape(
        "choice filter results",
        &real_filtered["choices"][0]["content_filter_results"],
        &answer["choices"][0]["content_filter_results"],
    );
    assert_eq!(
        answer["model"], "gpt-5-nano-2025-08-07",
        "the deployment's model"
    );
    assert_eq!(
        server.requests.last().unwrap().path,
        "/openai/deployments/gpt-5-nano/chat/completions?api-version=2024-12-01-preview"
    );
    // The body's model does not choose anything.
    let other = post_json(
        &url,
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        &[("api-key", AZURE_KEY)],
    );
    assert_eq!(other.json()["model"], "gpt-5-nano-2025-08-07");
}

#[test]
fn azure_stream_has_the_recorded_chunks() {
    let (Some(async_filter), Some(usage_stream)) = (
        fixture_in("azure-openai", "chat-streaming-async-filter.response.sse"),
        fixture_in("azure-openai", "chat-streaming-usage.chunks.jsonl"),
    ) else {
        return;
    };
    let async_filter: Vec<Value> = recorded_data(&async_filter)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let usage_stream: Vec<Value> = usage_stream
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let server = azure_mock();
    let request = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true,
        "stream_options": {"include_usage": true}});
    let streamed = post_stream(
        &azure_url(&server, "gpt-4o", "chat/completions"),
        &request,
        &[("api-key", AZURE_KEY)],
    );
    assert_eq!(streamed.status, 200);
    let mocked = chunks(&sse_payloads(&String::from_utf8(streamed.body).unwrap()));
    // prompt filter, role, 5 content, finish, 2 async filter, usage
    assert_eq!(mocked.len(), 11);
    let (first, role, content, finish) = (&mocked[0], &mocked[1], &mocked[2], &mocked[7]);
    let (filter_a, filter_b, usage) = (&mocked[8], &mocked[9], &mocked[10]);

    assert_same_shape("prompt filter chunk", &async_filter[0], first);
    assert_eq!(first["id"], "");
    assert_eq!(first["created"], 0);
    assert_eq!(first["choices"], json!([]));
    // The async-filter recording predates `obfuscation` and the per-chunk filter verdicts;
    // the newer usage recording has both.
    let newer = [".obfuscation", ".choices[0].content_filter_results"];
    for (what, real_old, real_new, mock) in [
        ("role chunk", &async_filter[1], &usage_stream[1], role),
        ("content chunk", &async_filter[2], &usage_stream[2], content),
        ("finish chunk", &async_filter[3], &usage_stream[6], finish),
    ] {
        assert_same_shape_but_newer(what, real_old, mock, &newer);
        assert_same_shape(what, real_new, mock);
    }
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_same_shape("async filter chunk", &async_filter[4], filter_a);
    assert_same_shape("async filter chunk", &async_filter[5], filter_b);
    assert!(filter_a["choices"][0].get("delta").is_none());
    assert_eq!(filter_a["id"], "");
    assert_same_shape("usage chunk", usage_stream.last().unwrap(), usage);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["model"], "gpt-4o-2024-11-20");
}

#[test]
fn azure_errors_match_the_recorded_bodies() {
    let server = azure_mock();
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    if let Some(record) = azure_fixture_json("error-404-deployment-not-found.session-record.json") {
        let real = &record["Entries"][0]["ResponseBody"];
        let reply = post_json(
            &azure_url(&server, "BAD_DEPLOYMENT_ID", "chat/completions"),
            &body,
            &[("api-key", AZURE_KEY)],
        );
        assert_eq!(reply.status, 404);
        assert_eq!(&reply.json(), real);
    }
    let no_version = post_json(
        &server.url("/openai/deployments/gpt-4o/chat/completions"),
        &body,
        &[("api-key", AZURE_KEY)],
    );
    assert_eq!(no_version.status, 404);
    assert_eq!(
        no_version.json(),
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );
    let url = azure_url(&server, "gpt-4o", "chat/completions");
    let missing = post_json(&url, &body, &[]);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["code"], "401");
    assert!(missing.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Access denied due to missing subscription key"));
    let wrong = post_json(&url, &body, &[("api-key", "wrong")]);
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Access denied due to invalid subscription key"));
    let bearer = post_json(
        &url,
        &body,
        &[("authorization", "Bearer azure-conformance-key")],
    );
    assert_eq!(bearer.status, 401, "Azure keys go in the api-key header");
    let malformed = post_json(&url, &json!({"messages": []}), &[("api-key", AZURE_KEY)]);
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"]["param"], "messages");
    let knob = post_json(
        &url,
        &body,
        &[("api-key", AZURE_KEY), ("x-mock-status", "429")],
    );
    assert_eq!(knob.status, 429);
    assert_eq!(knob.json()["error"]["code"], "429");
}

#[test]
fn azure_embeddings_answer_with_the_deployment_model() {
    let server = azure_mock();
    let reply = post_json(
        &azure_url(&server, "text-embedding-3-small", "embeddings"),
        &json!({"input": ["a", "b"]}),
        &[("api-key", AZURE_KEY)],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["model"], "text-embedding-3-small");
    assert_eq!(reply.json()["data"].as_array().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// The official SDKs against the mocks
// ---------------------------------------------------------------------------------------------

#[test]
fn official_anthropic_sdk_is_satisfied_by_the_anthropic_mock() {
    // The SDK sends `api_key` as a bearer token (see AnthropicMock::accept_bearer).
    let server = MockServer::start(AnthropicMock::with_key(ANTHROPIC_KEY).accepting_bearer());
    let out = python::run_script(
        "anthropic_chat.py",
        &[&server.url(""), "claude-haiku-4-5", ANTHROPIC_KEY],
        Duration::from_secs(120),
    );
    let text = content_pieces(5, None).collect::<String>();
    assert_eq!(out["plain"]["text"], text);
    assert_eq!(out["plain"]["stop_reason"], "end_turn");
    assert_eq!(out["plain"]["usage"]["output_tokens"], 5);
    assert!(out["plain"]["usage"]["input_tokens"].as_u64().unwrap() > 0);

    assert_eq!(out["stream"]["text"], text);
    assert_eq!(out["stream"]["stop_reason"], "end_turn");
    assert_eq!(out["stream"]["usage"]["output_tokens"], 5);
    let events: Vec<&str> = out["stream"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    for kind in [
        "content_block_start",
        "text",
        "content_block_stop",
        "message_delta",
    ] {
        assert!(events.contains(&kind), "{kind} in {events:?}");
    }

    assert_eq!(out["tools"]["tool_name"], "get_weather");
    assert_eq!(out["tools"]["tool_input"], json!({"city": "Paris"}));
    assert_eq!(out["tools"]["stop_reason"], "tool_use");
    assert_eq!(out["tools"]["followup_text"], text);

    let requests = server.requests.all();
    assert_eq!(requests.len(), 4);
    assert!(requests
        .iter()
        .all(|r| r.path == "/v1/messages" && r.header("anthropic-version").is_some()));
    assert_eq!(requests[1].json()["stream"], true);
    assert_eq!(
        requests[3].json()["messages"][2]["content"][0]["type"],
        "tool_result"
    );
}

#[test]
fn official_openai_sdk_completes_a_tool_round_trip_with_the_openai_mock() {
    let server = mock();
    let out = python::run_script(
        "openai_tools.py",
        &[&server.url("/v1"), "gpt-4o-mini", "sk-conformance"],
        Duration::from_secs(120),
    );
    let call = json!({"name": "get_weather", "arguments": {"city": "Paris"}, "finish_reason": "tool_calls"});
    assert_eq!(out["stream_tool"], call);
    assert_eq!(out["plain_tool"], call);
    assert_eq!(
        out["followup_text"],
        content_pieces(5, None).collect::<String>()
    );
    assert!(out["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        out["usage"]["total_tokens"].as_u64().unwrap(),
        out["usage"]["prompt_tokens"].as_u64().unwrap()
            + out["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let requests = server.requests.all();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].json()["messages"][2]["role"], "tool");
}

// ----- native providers: Gemini, Vertex AI, Bedrock, Cohere, Ollama -----

/// `value` without the fields at `paths` (`/`-separated), for fields a recording's model
/// sends and others do not (e.g. `thoughtsTokenCount` of thinking models).
fn without(mut value: Value, paths: &[&str]) -> Value {
    for path in paths {
        let (parent, key) = path.rsplit_once('/').unwrap();
        if let Some(object) = value.pointer_mut(parent).and_then(Value::as_object_mut) {
            object.remove(key);
        }
    }
    value
}

/// The JSON payloads of a Gemini `alt=sse` body, checking Google's framing: `data:` events
/// ending with `\r\n\r\n`, no `[DONE]`.
fn gemini_events(body: &str) -> Vec<Value> {
    assert!(
        body.ends_with("\r\n\r\n"),
        "events end with CRLF CRLF: {body:?}"
    );
    body.trim_end()
        .split("\r\n\r\n")
        .map(|e| {
            serde_json::from_str(e.strip_prefix("data: ").expect("data line")).expect("event JSON")
        })
        .collect()
}

const GEMINI_TEST_KEY: &str = "AIzaSy-conformance";

fn gemini_url(server: &MockServer, model: &str, method: &str) -> String {
    server.url(&format!("/v1beta/models/{model}:{method}"))
}

#[test]
fn gemini_answers_have_the_recorded_shape() {
    let server = MockServer::start(e2e::mock::gemini::GeminiMock::with_key(GEMINI_TEST_KEY));
    let key = ("x-goog-api-key", GEMINI_TEST_KEY);
    if let (Some(request), Some(real)) = (
        fixture_json_in("gemini", "basic.request.json"),
        fixture_json_in("gemini", "basic.response.json"),
    ) {
        let reply = post_json(
            &gemini_url(&server, "gemini-2.5-flash", "generateContent"),
            &request,
            &[key],
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        // The recorded model thinks unasked; the mock only when asked.
        assert_same_shape(
            "generateContent",
            &without(real, &["/usageMetadata/thoughtsTokenCount"]),
            &reply.json(),
        );
    }
    if let (Some(request), Some(real)) = (
        fixture_json_in("gemini", "tool-call.1.request.json"),
        fixture_json_in("gemini", "tool-call.1.response.json"),
    ) {
        let reply = post_json(
            &gemini_url(&server, "gemini-2.0-flash", "generateContent"),
            &request,
            &[key],
        );
        let mock = reply.json();
        assert!(
            mock.pointer("/candidates/0/content/parts/0/functionCall/name")
                .is_some(),
            "{mock}"
        );
        // Arguments follow each request's schema.
        let args = "/candidates/0/content/parts/0/functionCall/args";
        let real = without(
            real,
            &[
                "/candidates/0/avgLogprobs",
                "/usageMetadata/candidatesTokensDetails",
                args,
            ],
        );
        assert_same_shape_but_newer(
            "functionCall",
            &real,
            &without(mock, &[args]),
            &[".candidates[0].index"],
        );
    }
    if let (Some(request), Some(real)) = (
        fixture_json_in("gemini", "streaming.request.json"),
        fixture_in("gemini", "streaming.response.sse"),
    ) {
        let streamed = post_stream(
            &gemini_url(
                &server,
                "gemini-2.0-flash-exp",
                "streamGenerateContent?alt=sse",
            ),
            &request,
            &[key],
        );
        assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
        let mocked = gemini_events(&String::from_utf8(streamed.body).unwrap());
        let real = gemini_events(&real);
        let trim = |e: &Value| without(e.clone(), &["/usageMetadata/candidatesTokensDetails"]);
        assert_same_shape_but_newer(
            "first event",
            &trim(&real[0]),
            &mocked[0],
            &[".candidates[0].index"],
        );
        assert_same_shape_but_newer(
            "last event",
            &trim(real.last().unwrap()),
            mocked.last().unwrap(),
            &[".candidates[0].index"],
        );
        assert!(mocked[..mocked.len() - 1]
            .iter()
            .all(|e| e["candidates"][0].get("finishReason").is_none()));
        assert_eq!(
            mocked.last().unwrap()["candidates"][0]["finishReason"],
            "STOP"
        );
    }
    if let Some(real) = fixture_json_in("gemini", "error-404-not-found.response.json") {
        let reply = post_json(
            &gemini_url(&server, "does-not-exist-model", "generateContent"),
            &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
            &[key],
        );
        assert_eq!(reply.status, 404);
        assert_same_shape("404", &real, &reply.json());
    }
}

#[test]
fn gemini_refuses_wrong_keys_and_malformed_requests_like_google() {
    let server = MockServer::start(e2e::mock::gemini::GeminiMock::with_key(GEMINI_TEST_KEY));
    let url = gemini_url(&server, "gemini-2.5-flash", "generateContent");
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    assert_eq!(
        post_json(&url, &body, &[]).json()["error"]["status"],
        "PERMISSION_DENIED"
    );
    let wrong = post_json(&url, &body, &[("x-goog-api-key", "nope")]);
    assert_eq!(
        (
            wrong.status,
            wrong.json()["error"]["message"].as_str().unwrap()
        ),
        (400, "API key not valid. Please pass a valid API key.")
    );
    let key = [("x-goog-api-key", GEMINI_TEST_KEY)];
    for (bad, says) in [
        (json!({"contents": []}), "contents is not specified"),
        (
            json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}),
            "valid role",
        ),
        (
            json!({"contents": [{"role": "user", "parts": []}]}),
            "must not be empty",
        ),
        (
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "messages": []}),
            "Unknown name \"messages\"",
        ),
    ] {
        let reply = post_json(&url, &bad, &key);
        assert_eq!(reply.status, 400, "{bad}");
        assert!(
            reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{}",
            reply.text()
        );
    }
}

#[test]
fn vertex_answers_have_the_recorded_shape_and_need_a_fresh_token() {
    let tokens = std::sync::Arc::new(e2e::mock::vertex::IssuedTokens::default());
    let vertex = MockServer::start(e2e::mock::vertex::VertexMock::new(
        "proj",
        "us-central1",
        tokens.clone(),
    ));
    let google = MockServer::start(e2e::mock::vertex::GoogleTokenMock::new(tokens));
    let url = vertex.url("/v1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent");
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}]});
    assert_eq!(
        post_json(&url, &body, &[("authorization", "Bearer ya29.forged")]).status,
        401
    );
    // A token for an assertion signed by someone else is refused.
    let form = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln";
    let refused = e2e::client::post(
        &google.url("/token"),
        form,
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"], "invalid_grant");
    // A token for the test-only service account, its assertion signed here as the docs say.
    let account: Value = serde_json::from_str(&e2e::mock::vertex::test_service_account()).unwrap();
    let assertion = signed_assertion(&account);
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    );
    let granted = e2e::client::post(
        &google.url("/token"),
        form,
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(granted.status, 200, "{}", granted.text());
    let token = format!(
        "Bearer {}",
        granted.json()["access_token"].as_str().unwrap()
    );
    assert_eq!(granted.json()["token_type"], "Bearer");
    let reply = post_json(&url, &body, &[("authorization", &token)]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    if let Some(real) = fixture_json_in("gemini", "vertex-basic.response.json") {
        let real = without(
            real,
            &[
                "/candidates/0/avgLogprobs",
                "/usageMetadata/candidatesTokensDetails",
            ],
        );
        assert_same_shape_but_newer(
            "Vertex generateContent",
            &real,
            &reply.json(),
            &[".candidates[0].index"],
        );
    }
}

/// A JWT assertion for `account`, signed RS256 with its private key.
fn signed_assertion(account: &Value) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    let b64 = |data: &[u8]| -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        data.chunks(3)
            .flat_map(|c| {
                let n = c
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
                (0..=c.len()).map(move |i| A[(n >> (18 - 6 * i) & 63) as usize] as char)
            })
            .collect()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "RS256", "typ": "JWT"}).to_string().as_bytes()),
        b64(json!({"iss": account["client_email"], "aud": "https://oauth2.googleapis.com/token",
                   "scope": "https://www.googleapis.com/auth/cloud-platform", "iat": now, "exp": now + 3600}).to_string().as_bytes())
    );
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(account["private_key"].as_str().unwrap()).unwrap();
    use sha2::Digest;
    let signature = key
        .sign(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(input.as_bytes()),
        )
        .unwrap();
    format!("{input}.{}", b64(&signature))
}

fn bedrock_mock() -> MockServer {
    MockServer::start(
        e2e::mock::bedrock::BedrockMock::new("AKIDCONFORMANCE", "secret", "us-east-1")
            .with_api_key("conformance-key"),
    )
}

const BEDROCK_KEY: (&str, &str) = ("authorization", "Bearer conformance-key");

#[test]
fn bedrock_answers_have_the_recorded_shape_and_framing() {
    let server = bedrock_mock();
    if let (Some(request), Some(real)) = (
        fixture_json_in("bedrock-converse", "basic.request.json"),
        fixture_json_in("bedrock-converse", "basic.response.json"),
    ) {
        let reply = post_json(
            &server.url("/model/us.amazon.nova-micro-v1%3A0/converse"),
            &request,
            &[BEDROCK_KEY],
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_same_shape("converse", &real, &reply.json());
    }
    if let (Some(request), Some(real)) = (
        fixture_json_in("bedrock-converse", "streaming.request.json"),
        fixture_json_in("bedrock-converse", "streaming.response.events.json"),
    ) {
        let streamed = post_stream(
            &server.url("/model/us.amazon.nova-micro-v1%3A0/converse-stream"),
            &request,
            &[BEDROCK_KEY],
        );
        assert_eq!(
            streamed.header("content-type"),
            Some("application/vnd.amazon.eventstream")
        );
        let frames = e2e::mock::bedrock::decode(&streamed.body).expect("frames with valid CRCs");
        let kinds: Vec<String> = frames
            .iter()
            .map(|(h, _)| {
                h.iter()
                    .find(|(k, _)| k == ":event-type")
                    .unwrap()
                    .1
                    .clone()
            })
            .collect();
        let real_kinds: Vec<&str> = real
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["headers"][":event-type"].as_str().unwrap())
            .collect();
        let collapse = |k: &[&str]| {
            let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
            v.dedup();
            v
        };
        assert_eq!(
            collapse(&kinds.iter().map(String::as_str).collect::<Vec<_>>()),
            collapse(&real_kinds),
            "event sequence"
        );
        for (headers, payload) in &frames {
            let kind = &headers.iter().find(|(k, _)| k == ":event-type").unwrap().1;
            let recorded = real
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["headers"][":event-type"] == kind.as_str())
                .unwrap();
            let header_names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
            let real_names: Vec<&str> = recorded["headers"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(header_names, real_names, "{kind}");
            assert_same_shape(
                kind,
                &recorded["payload"],
                &serde_json::from_slice(payload).unwrap(),
            );
        }
    }
    if let (Some(request), Some(real)) = (
        fixture_json_in("bedrock-converse", "error-400-validation.request.json"),
        fixture_json_in("bedrock-converse", "error-400-validation.response.json"),
    ) {
        let reply = post_json(
            &server.url("/model/does-not-exist-model-v1%3A0/converse"),
            &request,
            &[BEDROCK_KEY],
        );
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json(), real);
        assert!(reply
            .header("x-amzn-errortype")
            .unwrap()
            .starts_with("ValidationException"));
    }
}

#[test]
fn bedrock_refuses_unsigned_and_malformed_requests_like_aws() {
    let server = bedrock_mock();
    let url = server.url("/model/m/converse");
    let body = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]});
    let unsigned = post_json(&url, &body, &[]);
    assert_eq!(
        (
            unsigned.status,
            unsigned.json()["message"].as_str().unwrap()
        ),
        (403, "Missing Authentication Token")
    );
    let forged = post_json(&url, &body, &[("authorization", "AWS4-HMAC-SHA256 Credential=AKIDCONFORMANCE/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"), ("x-amz-date", "20250101T000000Z")]);
    assert_eq!(forged.status, 403);
    assert!(
        forged
            .header("x-amzn-errortype")
            .unwrap()
            .starts_with("InvalidSignatureException"),
        "{}",
        forged.text()
    );
    for (bad, says) in [
        (
            json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}),
            "must start with a user message",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": " "}]}]}),
            "is blank",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "x"}]}, {"role": "user", "content": [{"text": "y"}]}]}),
            "must alternate",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "x"}]}}]}]}),
            "toolConfig field must be defined",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "x"}]}], "max_tokens": 5}),
            "extraneous key [max_tokens]",
        ),
    ] {
        let reply = post_json(&url, &bad, &[BEDROCK_KEY]);
        assert_eq!(reply.status, 400, "{bad}");
        assert!(
            reply.json()["message"].as_str().unwrap().contains(says),
            "{}",
            reply.text()
        );
    }
}

#[test]
fn cohere_answers_have_the_recorded_shape() {
    let server = MockServer::start(e2e::mock::cohere::CohereMock::with_key("co-conformance"));
    let auth = ("authorization", "Bearer co-conformance");
    if let (Some(request), Some(real)) = (
        fixture_json_in("cohere", "basic-2.request.json"),
        fixture_json_in("cohere", "basic-2.response.json"),
    ) {
        let reply = post_json(&server.url("/v2/chat"), &request, &[auth]);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_same_shape("chat", &real, &reply.json());
    }
    if let (Some(request), Some(real)) = (
        fixture_json_in("cohere", "tool-call.request.json"),
        fixture_json_in("cohere", "tool-call.response.json"),
    ) {
        let reply = post_json(&server.url("/v2/chat"), &request, &[auth]);
        assert_same_shape("tool call", &real, &reply.json());
    }
    for (name, request) in [
        ("streaming", "streaming.request.json"),
        ("streaming-tool-call", "streaming-tool-call.request.json"),
    ] {
        let (Some(request), Some(real)) = (
            fixture_json_in("cohere", request),
            fixture_in("cohere", &format!("{name}.response.sse")),
        ) else {
            continue;
        };
        let streamed = post_stream(&server.url("/v2/chat"), &request, &[auth]);
        let parse = |body: &str| -> Vec<(String, Value)> {
            body.split("\n\n")
                .filter(|e| !e.trim().is_empty() && !e.contains("[DONE]"))
                .map(|e| {
                    let kind = e
                        .lines()
                        .find_map(|l| l.strip_prefix("event: "))
                        .unwrap()
                        .to_string();
                    (
                        kind,
                        serde_json::from_str(
                            e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap(),
                        )
                        .unwrap(),
                    )
                })
                .collect()
        };
        let body = String::from_utf8(streamed.body).unwrap();
        assert!(
            body.ends_with("data: [DONE]\n\n") && real.ends_with("data: [DONE]\n\n"),
            "{name}"
        );
        let (mocked, real) = (parse(&body), parse(&real));
        let kinds = |events: &[(String, Value)]| {
            let mut k: Vec<String> = events.iter().map(|(k, _)| k.clone()).collect();
            k.dedup();
            k
        };
        assert_eq!(kinds(&mocked), kinds(&real), "{name}: event sequence");
        for (kind, event) in &mocked {
            let recorded = &real.iter().find(|(k, _)| k == kind).unwrap().1;
            assert_same_shape(&format!("{name} {kind}"), recorded, event);
        }
    }
    if let Some(real) = fixture_json_in("cohere", "error-404-model-not-found.response.json") {
        let reply = post_json(
            &server.url("/v2/chat"),
            &json!({"model": "does-not-exist", "messages": [{"role": "user", "content": "hi"}]}),
            &[auth],
        );
        assert_eq!(reply.status, 404);
        assert_same_shape("404", &real, &reply.json());
    }
}

#[test]
fn ollama_answers_have_the_recorded_shape() {
    let server = MockServer::start(e2e::mock::ollama::OllamaMock::default());
    let url = server.url("/api/chat");
    let ask = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    if let Some(real) = fixture_json_in("ollama", "native-chat.response.json") {
        assert_same_shape("chat", &real, &post_json(&url, &ask, &[]).json());
    }
    if let Some(real) = fixture_json_in("ollama", "native-chat-tool-call.response.json") {
        let mut tools = ask.clone();
        tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"testInput": {"type": "string"}}}}}]);
        assert_same_shape("tool call", &real, &post_json(&url, &tools, &[]).json());
    }
    if let Some(real) = fixture_in("ollama", "native-chat-streaming.response.ndjson") {
        let mut stream = ask.clone();
        stream.as_object_mut().unwrap().remove("stream");
        let streamed = post_stream(&url, &stream, &[]);
        assert_eq!(
            streamed.header("content-type"),
            Some("application/x-ndjson"),
            "streams unless told not to"
        );
        let lines = |body: &str| -> Vec<Value> {
            body.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (mocked, real) = (
            lines(&String::from_utf8(streamed.body).unwrap()),
            lines(&real),
        );
        assert_same_shape("first line", &real[0], &mocked[0]);
        assert_same_shape("last line", real.last().unwrap(), mocked.last().unwrap());
        assert_eq!(mocked.iter().filter(|l| l["done"] == true).count(), 1);
    }
    let missing = post_json(
        &url,
        &json!({"model": "does-not-exist", "messages": []}),
        &[],
    );
    assert_eq!(
        (missing.status, missing.json()["error"].is_string()),
        (404, true)
    );
}
