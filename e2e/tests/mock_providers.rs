//! The mock providers answer like the real services: their bodies have the shape of the real
//! transcripts recorded in `../shared/fixtures/providers/` (same fields, same types, same SSE
//! framing), and their errors carry the real messages. Skipped, and saying so, when the
//! fixtures folder is absent (a clone of this repository alone).

use e2e::client::{get_with, post_json, post_stream};
use e2e::paths::provider_fixture;
use e2e::{MockServer, OpenAiMock};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

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
    let mut diffs = Vec::new();
    differences("", &shape(real), &shape(mock), &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what}: the mock differs from the recording:\n{}",
        diffs.join("\n")
    );
}

fn fixture(name: &str) -> Option<String> {
    match provider_fixture(&format!("openai-chat/{name}")) {
        Some(path) => Some(std::fs::read_to_string(path).expect("read fixture")),
        None => {
            println!("skipped: ../shared/fixtures/providers/openai-chat/{name} not found (fixtures are not part of this repository)");
            None
        }
    }
}

fn fixture_json(name: &str) -> Option<Value> {
    fixture(name).map(|text| serde_json::from_str(&text).expect("fixture JSON"))
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
    let arguments: String = mocked
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")?
                .as_str()
                .map(str::to_string)
        })
        .collect();
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
