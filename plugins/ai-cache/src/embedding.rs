//! Embedding calls: the request each supported API expects for one text, and the vector out of
//! its answer. OpenAI (and every OpenAI-compatible `/v1/embeddings` server), Azure OpenAI,
//! DashScope, Ollama and Cohere.

use crate::config::{Embedding, EmbeddingType};
use aigw_shared::callout::Callout;
use serde_json::{json, Value};

/// The callout that embeds `text`.
pub fn request(config: &Embedding, text: &str) -> Callout {
    let body = match config.kind {
        EmbeddingType::Openai | EmbeddingType::Azure => {
            let mut body =
                json!({"model": config.model, "input": text, "encoding_format": "float"});
            if let Some(d) = config.dimensions {
                body["dimensions"] = json!(d);
            }
            body
        }
        EmbeddingType::Dashscope => {
            json!({"model": config.model, "input": {"texts": [text]}, "parameters": {"text_type": "query"}})
        }
        EmbeddingType::Ollama => json!({"model": config.model, "input": text}),
        EmbeddingType::Cohere => json!({
            "model": config.model, "texts": [text], "input_type": "search_query", "embedding_types": ["float"]
        }),
    };
    let callout = Callout::post_json(
        &config.service.cluster,
        &config.service.host,
        &config.path,
        serde_json::to_vec(&body).unwrap_or_default(),
        config.service.timeout,
    );
    match (&config.api_key, config.kind) {
        (None, _) => callout,
        (Some(key), EmbeddingType::Azure) => callout.header("api-key", key),
        (Some(key), _) => callout.header("authorization", &format!("Bearer {key}")),
    }
}

/// The vector in an embedding API's answer.
pub fn parse(kind: EmbeddingType, body: &[u8]) -> Result<Vec<f32>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("embedding answer is not JSON ({e})"))?;
    let pointers: &[&str] = match kind {
        EmbeddingType::Openai | EmbeddingType::Azure => &["/data/0/embedding"],
        EmbeddingType::Dashscope => &["/output/embeddings/0/embedding"],
        // `/api/embed`, and the older `/api/embeddings`.
        EmbeddingType::Ollama => &["/embeddings/0", "/embedding"],
        // API v2 (typed embeddings), and v1.
        EmbeddingType::Cohere => &["/embeddings/float/0", "/embeddings/0"],
    };
    let array = pointers
        .iter()
        .find_map(|p| value.pointer(p).and_then(Value::as_array))
        .ok_or_else(|| "embedding answer has no vector".to_string())?;
    let vector: Vec<f32> = array
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32))
        .collect::<Option<_>>()
        .ok_or_else(|| "embedding vector has a non-number".to_string())?;
    if vector.is_empty() {
        return Err("embedding vector is empty".into());
    }
    Ok(vector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn embedding(kind: &str, extra: Value) -> Embedding {
        let mut e = json!({"type": kind, "serviceName": "emb", "apiKey": "sk-e"});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let c = Config::from_map(
            json!({"enableSemanticCache": true, "embedding": e})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        c.semantic.unwrap().embedding
    }

    #[test]
    fn requests_per_api() {
        let r = request(&embedding("openai", json!({"dimensions": 256})), "hi");
        assert_eq!(r.path, "/v1/embeddings");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"model": "text-embedding-3-small", "input": "hi", "encoding_format": "float", "dimensions": 256})
        );
        assert!(r
            .headers
            .contains(&("authorization".into(), "Bearer sk-e".into())));

        let r = request(
            &embedding("azure", json!({"apiVersion": "2024-10-21"})),
            "hi",
        );
        assert!(r.headers.contains(&("api-key".into(), "sk-e".into())));
        assert!(!r.headers.iter().any(|(k, _)| k == "authorization"));

        let r = request(&embedding("dashscope", json!({})), "hi");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["input"]["texts"], json!(["hi"]));

        let r = request(&embedding("cohere", json!({})), "hi");
        assert_eq!(r.path, "/v2/embed");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["input_type"], "search_query");

        let r = request(&embedding("ollama", json!({})), "hi");
        assert_eq!(r.path, "/api/embed");
    }

    #[test]
    fn vectors_from_each_answer_shape() {
        let cases = [
            (
                EmbeddingType::Openai,
                json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1]}]}),
            ),
            (
                EmbeddingType::Dashscope,
                json!({"output": {"embeddings": [{"text_index": 0, "embedding": [0.5, -1]}]}, "usage": {"total_tokens": 1}}),
            ),
            (
                EmbeddingType::Ollama,
                json!({"model": "m", "embeddings": [[0.5, -1]]}),
            ),
            (EmbeddingType::Ollama, json!({"embedding": [0.5, -1]})),
            (
                EmbeddingType::Cohere,
                json!({"id": "x", "embeddings": {"float": [[0.5, -1]]}}),
            ),
            (
                EmbeddingType::Cohere,
                json!({"id": "x", "embeddings": [[0.5, -1]]}),
            ),
        ];
        for (kind, body) in cases {
            assert_eq!(
                parse(kind, body.to_string().as_bytes()).unwrap(),
                vec![0.5, -1.0],
                "{body}"
            );
        }
        assert!(parse(EmbeddingType::Openai, b"{\"data\":[]}").is_err());
        assert!(parse(EmbeddingType::Openai, b"<html>").is_err());
        assert!(parse(EmbeddingType::Openai, br#"{"data":[{"embedding":["x"]}]}"#).is_err());
    }
}
