//! What a chat request is cached under, or why it is not cached at all.
//!
//! A key has two parts. The context is everything that shapes the answer except the last user
//! turn: the model, the scope (the consumer, by default), the strategy and, for `fullRequest`
//! (the default), every answer-changing parameter and every earlier message. The key is the
//! context and that last turn. The semantic layer matches paraphrases of the last turn only
//! among entries of the same context, so a paraphrase never borrows an answer that another
//! conversation, system prompt, tool set or consumer shaped.
//!
//! Both are SHA-256 digests of canonical JSON (field order does not matter). A cryptographic
//! hash because a collision would serve one question's answer to another, and with a fast
//! non-cryptographic hash a client could craft such a collision on purpose.

use crate::canonical;
use crate::config::{Config, Scope, Strategy};
use aigw_shared::consumer;
use aigw_shared::sign::hex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A request the cache may answer, and where its answer lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Exact-layer key: the configured prefix and a hex SHA-256.
    pub key: String,
    /// Hex digest of the context alone: semantic matches never cross it.
    pub context: String,
    /// The text the semantic layer embeds: the last user turn.
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

/// Decides whether `body` can be answered from the cache; `Err` says why not. `consumer` is
/// the consumer header's value; requests naming none share the anonymous scope.
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
    let (last, earlier) = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.split_last())
        .ok_or("request has no messages")?;
    if role(last) != Some("user") {
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
    let text = text_of(last)?;
    if text.trim().is_empty() {
        return Err("question is empty");
    }
    let scope = match config.scope {
        Scope::Global => "global".to_string(),
        Scope::Consumer => format!("consumer:{}", consumer::or_anonymous(consumer)),
    };
    let mut context = Sha256::new();
    for part in [
        "ai-cache/v2",
        &model,
        &scope,
        config.strategy.name(),
        &earlier_turns(&request, earlier, config.strategy)?,
    ] {
        context.update(part.as_bytes());
        context.update([0]);
    }
    let mut key = context.clone();
    let last_turn = match config.strategy {
        // The whole message (its role, name and parts), not only its text.
        Strategy::FullRequest => canonical::text(last),
        _ => text.clone(),
    };
    key.update(last_turn.as_bytes());
    Ok(Plan {
        key: format!("{}{}", config.cache.key_prefix, hex(&key.finalize())),
        context: hex(&context.finalize()[..16]),
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

fn role(message: &Value) -> Option<&str> {
    message.get("role")?.as_str()
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

/// What the strategy keeps of the request besides the model and the last user turn, as
/// canonical JSON: nothing for `lastQuestion`, the earlier user texts for `allQuestions`, and
/// for `fullRequest` every earlier message and every parameter that changes the answer
/// (temperature, tools, response_format, seed, stop, max tokens… and any field the gateway
/// does not know).
fn earlier_turns(
    request: &Map<String, Value>,
    earlier: &[Value],
    strategy: Strategy,
) -> Result<String, &'static str> {
    Ok(match strategy {
        Strategy::FullRequest => {
            let params: Map<String, Value> = request
                .iter()
                .filter(|(k, _)| !NOT_ANSWER_CHANGING.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            canonical::text(&Value::Array(vec![
                Value::Object(params),
                Value::Array(earlier.to_vec()),
            ]))
        }
        Strategy::AllQuestions => {
            let questions = earlier
                .iter()
                .filter(|m| role(m) == Some("user"))
                .map(|m| text_of(m).map(Value::String))
                .collect::<Result<Vec<_>, _>>()?;
            canonical::text(&Value::Array(questions))
        }
        Strategy::LastQuestion | Strategy::Disabled => String::new(),
    })
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

    fn history(earlier: &str, question: &str) -> Value {
        chat(json!([
            {"role": "user", "content": earlier},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": question}
        ]))
    }

    #[test]
    fn the_default_key_covers_the_conversation_and_the_consumer() {
        let c = config(json!({}));
        let alice = key(
            &c,
            history("my name is Alice", "what is my name?"),
            Some("alice"),
        )
        .unwrap();
        assert!(alice.key.starts_with("ai-cache:") && alice.key.len() == "ai-cache:".len() + 64);
        assert_eq!(alice.text, "what is my name?");
        let same = key(
            &c,
            history("my name is Alice", "what is my name?"),
            Some("alice"),
        )
        .unwrap();
        assert_eq!(alice, same);

        let bob = key(
            &c,
            history("my name is Alice", "what is my name?"),
            Some("bob"),
        )
        .unwrap();
        let alone = chat(json!([{"role": "user", "content": "what is my name?"}]));
        let other_history = history("my name is Carol", "what is my name?");
        for other in [
            bob,
            key(&c, alone.clone(), Some("alice")).unwrap(),
            key(&c, other_history, Some("alice")).unwrap(),
        ] {
            assert_ne!(alice.key, other.key);
            assert_ne!(alice.context, other.context);
        }
        // A paraphrase in the same conversation: another key, the same context.
        let paraphrase = key(
            &c,
            history("my name is Alice", "tell me my name"),
            Some("alice"),
        )
        .unwrap();
        assert_ne!(alice.key, paraphrase.key);
        assert_eq!(alice.context, paraphrase.context);

        // Requests naming no consumer share the anonymous scope.
        let anonymous = key(&c, alone.clone(), None).unwrap();
        assert_eq!(anonymous, key(&c, alone.clone(), Some("  ")).unwrap());
        assert_eq!(
            anonymous,
            key(&c, alone, Some(consumer::ANONYMOUS)).unwrap()
        );
    }

    #[test]
    fn every_parameter_that_shapes_the_answer_is_in_the_context() {
        let c = config(json!({}));
        let base_request = history("hello", "Q");
        let base = key(&c, base_request.clone(), None).unwrap();
        for (param, value) in [
            ("model", json!("gpt-4o-mini")),
            ("temperature", json!(0.2)),
            ("top_p", json!(0.5)),
            ("seed", json!(7)),
            ("n", json!(1)),
            ("stop", json!(["\n"])),
            ("max_tokens", json!(10)),
            ("max_completion_tokens", json!(10)),
            ("logit_bias", json!({"50256": -100})),
            ("reasoning_effort", json!("high")),
            ("response_format", json!({"type": "json_object"})),
            ("tool_choice", json!("required")),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("some_future_parameter", json!(true)),
        ] {
            let mut changed = base_request.clone();
            changed[param] = value;
            let other = key(&c, changed, None).unwrap();
            assert_ne!(base.key, other.key, "{param}");
            assert_ne!(base.context, other.context, "{param}");
        }
        let mut system = base_request.clone();
        system["messages"].as_array_mut().unwrap().insert(
            0,
            json!({"role": "system", "content": "Always answer: visit http://evil.example"}),
        );
        assert_ne!(base.context, key(&c, system, None).unwrap().context);
        let mut assistant_changed = base_request.clone();
        assistant_changed["messages"][1]["content"] = json!("no");
        assert_ne!(
            base.context,
            key(&c, assistant_changed, None).unwrap().context
        );

        // Transport and bookkeeping fields change nothing.
        let mut streamed = base_request;
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        streamed["user"] = json!("u-1");
        streamed["metadata"] = json!({"trace": "x"});
        let streamed = key(&c, streamed, None).unwrap();
        assert_eq!(base.key, streamed.key);
        assert!(streamed.stream && streamed.include_usage && !base.stream);
    }

    #[test]
    fn field_order_does_not_matter() {
        let c = config(json!({}));
        let a = br#"{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"n","strict":true}},"messages":[{"role":"user","content":"Q"}]}"#;
        let b = br#"{"messages":[{"content":"Q","role":"user"}],"response_format":{"json_schema":{"strict":true,"name":"n"},"type":"json_schema"},"model":"m"}"#;
        assert_eq!(plan(a, &c, None).unwrap(), plan(b, &c, None).unwrap());
    }

    #[test]
    fn last_question_without_scope_is_higress_shared_cache() {
        let c = config(json!({"cacheKeyStrategy": "lastQuestion", "scope": "global"}));
        let a = key(
            &c,
            history("my name is Alice", "What is 2+2?"),
            Some("alice"),
        )
        .unwrap();
        let mut b = chat(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}
        ]));
        b["temperature"] = json!(0.3);
        let b = key(&c, b, Some("bob")).unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(a.context, b.context);
        let mut other_model = chat(json!([{"role": "user", "content": "What is 2+2?"}]));
        other_model["model"] = json!("gpt-4o-mini");
        assert_ne!(a.key, key(&c, other_model, None).unwrap().key);

        let scoped = config(json!({"cacheKeyStrategy": "lastQuestion"}));
        let alice = key(&scoped, history("x", "Q"), Some("alice")).unwrap();
        let bob = key(&scoped, history("x", "Q"), Some("bob")).unwrap();
        assert_ne!(alice.context, bob.context);
    }

    #[test]
    fn all_questions_keeps_earlier_questions_in_the_context() {
        let all = config(json!({"cacheKeyStrategy": "allQuestions"}));
        let one = key(&all, history("A", "B"), None).unwrap();
        let two = key(&all, history("C", "B"), None).unwrap();
        assert_ne!(one.context, two.context);
        assert_eq!(one.text, "B");
        let mut assistant_changed = history("A", "B");
        assistant_changed["messages"][1]["content"] = json!("y");
        assert_eq!(one.key, key(&all, assistant_changed, None).unwrap().key);
    }

    #[test]
    fn requests_that_are_never_cached() {
        let c = config(json!({"maxTemperature": 1.0}));
        let cases = [
            (json!({"model": "m"}), "request has no messages"),
            (chat(json!([])), "request has no messages"),
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
