//! What a chat request is cached under, or why it is not cached at all.
//!
//! The key is a SHA-256 over a namespace (model, consumer when `scope: consumer`, strategy, and
//! for `fullRequest` the answer-changing parameters) and the key text. A cryptographic hash
//! because a collision would serve one question's answer to another, and with a fast
//! non-cryptographic hash a client could craft such a collision on purpose.

use crate::config::{Config, Scope, Strategy};
use aigw_shared::sign::hex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A request the cache may answer, and where its answer lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Exact-layer key: the configured prefix and a hex SHA-256.
    pub key: String,
    /// Hex digest of the namespace alone: semantic matches never cross it.
    pub namespace: String,
    /// The text the semantic layer embeds.
    pub text: String,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
}

/// Request fields that never change the answer; everything else does for `fullRequest`.
const NOT_ANSWER_CHANGING: &[&str] = &[
    "messages",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
];

/// Decides whether `body` can be answered from the cache; `Err` says why not.
pub fn plan(body: &[u8], config: &Config, consumer: Option<&str>) -> Result<Plan, &'static str> {
    if config.strategy == Strategy::Disabled {
        return Err("cache key strategy is disabled");
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err("request body is not a JSON object");
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("request has no messages")?;
    if role(messages.last()) != Some("user") {
        // After a tool result or an assistant turn the answer depends on more than the question.
        return Err("last message is not from the user");
    }
    if request.get("n").and_then(Value::as_u64).unwrap_or(1) != 1 {
        return Err("request asks for several choices");
    }
    if let (Some(max), Some(t)) = (
        config.max_temperature,
        request.get("temperature").and_then(Value::as_f64),
    ) {
        if t > max {
            return Err("temperature above maxTemperature");
        }
    }
    let consumer = match config.scope {
        Scope::Global => "",
        Scope::Consumer => consumer
            .filter(|c| !c.is_empty())
            .ok_or("scope is consumer and the request names none")?,
    };
    let text = match config.strategy {
        Strategy::LastQuestion => text_of(messages.last().unwrap_or(&Value::Null))?,
        _ => messages
            .iter()
            .filter(|m| role(Some(m)) == Some("user"))
            .map(text_of)
            .collect::<Result<Vec<_>, _>>()?
            .join("\n"),
    };
    if text.trim().is_empty() {
        return Err("question is empty");
    }
    let mut namespace = Sha256::new();
    for part in [
        "ai-cache/v1",
        &model,
        consumer,
        config.strategy.name(),
        &answer_parameters(&request, config.strategy),
    ] {
        namespace.update(part.as_bytes());
        namespace.update([0]);
    }
    let namespace_digest = namespace.clone().finalize();
    let keyed = match config.strategy {
        // Every message counts, roles and all, in a canonical form (keys sorted).
        Strategy::FullRequest => Value::Array(messages.clone()).to_string(),
        _ => text.clone(),
    };
    namespace.update(keyed.as_bytes());
    Ok(Plan {
        key: format!("{}{}", config.cache.key_prefix, hex(&namespace.finalize())),
        namespace: hex(&namespace_digest[..16]),
        text,
        model,
        stream: request.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: request
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true),
    })
}

fn role(message: Option<&Value>) -> Option<&str> {
    message?.get("role")?.as_str()
}

/// The text of a message. Parts other than text (images, audio, files) would make two
/// different questions share a key, so they make the request uncacheable.
fn text_of(message: &Value) -> Result<String, &'static str> {
    match message.get("content") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(
                |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    _ => Err("question has parts other than text"),
                },
            )
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        _ => Err("question has no text"),
    }
}

/// For `fullRequest`, the parameters that change the answer (temperature, top_p, tools,
/// response_format, seed, stop, max tokens… and any field the gateway does not know), in a
/// canonical form; empty for the other strategies.
fn answer_parameters(request: &Map<String, Value>, strategy: Strategy) -> String {
    if strategy != Strategy::FullRequest {
        return String::new();
    }
    let params: Map<String, Value> = request
        .iter()
        .filter(|(k, _)| !NOT_ANSWER_CHANGING.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // serde_json's map is ordered by key here, so equal parameters give equal text.
    Value::Object(params).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: Value) -> Config {
        Config::from_map(extra.as_object().unwrap()).unwrap()
    }

    fn key(config: &Config, body: Value, consumer: Option<&str>) -> Result<Plan, &'static str> {
        plan(body.to_string().as_bytes(), config, consumer)
    }

    fn chat(messages: Value) -> Value {
        json!({"model": "gpt-4o", "messages": messages})
    }

    #[test]
    fn last_question_ignores_earlier_turns_and_stream_flags() {
        let c = config(json!({}));
        let a = key(
            &c,
            chat(json!([{"role": "user", "content": "What is 2+2?"}])),
            None,
        )
        .unwrap();
        let mut b = chat(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}
        ]));
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
        let b = key(&c, b, None).unwrap();
        assert_eq!(a.key, b.key);
        assert!(a.key.starts_with("ai-cache:") && a.key.len() == "ai-cache:".len() + 64);
        assert!(b.stream && b.include_usage && !a.stream);
        assert_eq!(b.text, "What is 2+2?");
    }

    #[test]
    fn namespaced_by_model_and_by_consumer_when_asked() {
        let c = config(json!({}));
        let q = json!([{"role": "user", "content": "Q"}]);
        let a = key(&c, chat(q.clone()), Some("alice")).unwrap();
        let mut other_model = chat(q.clone());
        other_model["model"] = json!("gpt-4o-mini");
        assert_ne!(a.key, key(&c, other_model, None).unwrap().key);
        assert_eq!(a.key, key(&c, chat(q.clone()), Some("bob")).unwrap().key);

        let scoped = config(json!({"scope": "consumer"}));
        let alice = key(&scoped, chat(q.clone()), Some("alice")).unwrap();
        let bob = key(&scoped, chat(q.clone()), Some("bob")).unwrap();
        assert_ne!(alice.key, bob.key);
        assert_ne!(alice.namespace, bob.namespace);
        assert_eq!(
            key(&scoped, chat(q), None).unwrap_err(),
            "scope is consumer and the request names none"
        );
    }

    #[test]
    fn all_questions_and_full_request() {
        let all = config(json!({"cacheKeyStrategy": "allQuestions"}));
        let one = chat(
            json!([{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "B"}]),
        );
        let two = chat(
            json!([{"role": "user", "content": "C"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "B"}]),
        );
        assert_ne!(
            key(&all, one.clone(), None).unwrap().key,
            key(&all, two, None).unwrap().key
        );
        assert_eq!(key(&all, one.clone(), None).unwrap().text, "A\nB");

        let full = config(json!({"cacheKeyStrategy": "fullRequest"}));
        let base = key(&full, one.clone(), None).unwrap();
        for (param, value) in [
            ("temperature", json!(0.2)),
            ("top_p", json!(0.5)),
            ("seed", json!(7)),
            ("stop", json!(["\n"])),
            ("max_tokens", json!(10)),
            ("response_format", json!({"type": "json_object"})),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
        ] {
            let mut changed = one.clone();
            changed[param] = value;
            let other = key(&full, changed, None).unwrap();
            assert_ne!(base.key, other.key, "{param}");
            assert_ne!(base.namespace, other.namespace, "{param}");
        }
        let mut streamed = one.clone();
        streamed["stream"] = json!(true);
        streamed["user"] = json!("u-1");
        assert_eq!(base.key, key(&full, streamed, None).unwrap().key);
        let mut assistant_changed = one;
        assistant_changed["messages"][1]["content"] = json!("y");
        assert_ne!(base.key, key(&full, assistant_changed, None).unwrap().key);
    }

    #[test]
    fn requests_that_are_never_cached() {
        let c = config(json!({"maxTemperature": 1.0}));
        let cases = [
            (json!({"model": "m"}), "request has no messages"),
            (
                chat(
                    json!([{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "1", "content": "r"}]),
                ),
                "last message is not from the user",
            ),
            (
                chat(
                    json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
                ),
                "question has parts other than text",
            ),
            (
                chat(json!([{"role": "user", "content": "  "}])),
                "question is empty",
            ),
        ];
        for (body, why) in cases {
            assert_eq!(key(&c, body, None).unwrap_err(), why);
        }
        let mut hot = chat(json!([{"role": "user", "content": "q"}]));
        hot["temperature"] = json!(1.5);
        assert_eq!(
            key(&c, hot.clone(), None).unwrap_err(),
            "temperature above maxTemperature"
        );
        hot["temperature"] = json!(1.0);
        assert!(key(&c, hot.clone(), None).is_ok());
        hot["n"] = json!(3);
        assert!(key(&c, hot, None).is_err());
        assert!(plan(b"not json", &c, None).is_err());
        let off = config(json!({"cacheKeyStrategy": "disabled"}));
        assert!(key(&off, chat(json!([{"role": "user", "content": "q"}])), None).is_err());
    }
}
