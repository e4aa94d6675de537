//! Chroma's HTTP API (v2) as a vector store: upsert a question's vector under its cache key,
//! query the nearest one in the same context. The collection must use the cosine space
//! (`"configuration": {"hnsw": {"space": "cosine"}}`), so that distance = 1 - similarity.

use crate::config::Vector;
use aigw_shared::callout::Callout;
use serde_json::{json, Value};

fn call(config: &Vector, action: &str, body: Value) -> Option<Callout> {
    let service = config.service.as_ref()?;
    let path = format!(
        "/api/v2/tenants/{}/databases/{}/collections/{}/{action}",
        config.tenant, config.database, config.collection_id
    );
    let callout = Callout::post_json(
        &service.cluster,
        &service.host,
        &path,
        serde_json::to_vec(&body).unwrap_or_default(),
        service.timeout,
    );
    Some(match &config.api_key {
        Some(key) => callout.header("x-chroma-token", key),
        None => callout,
    })
}

pub fn query(config: &Vector, context: &str, vector: &[f32]) -> Option<Callout> {
    call(
        config,
        "query",
        json!({"query_embeddings": [vector], "n_results": 1, "where": {"context": context}, "include": ["distances"]}),
    )
}

pub fn upsert(config: &Vector, context: &str, key: &str, vector: &[f32]) -> Option<Callout> {
    call(
        config,
        "upsert",
        json!({"ids": [key], "embeddings": [vector], "metadatas": [{"context": context}]}),
    )
}

/// The nearest id and its cosine similarity, from a query answer (`None`: nothing stored).
pub fn nearest(body: &[u8]) -> Result<Option<(String, f32)>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("chroma answer is not JSON ({e})"))?;
    let id = value.pointer("/ids/0/0");
    let distance = value.pointer("/distances/0/0").and_then(Value::as_f64);
    match (id, distance) {
        (Some(Value::String(id)), Some(d)) => Ok(Some((id.clone(), 1.0 - d as f32))),
        _ if value.pointer("/ids/0").and_then(Value::as_array).is_some() => Ok(None),
        _ => Err("chroma answer has no ids".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn calls_and_answers() {
        let c = Config::from_map(json!({"embedding": {"type": "openai", "serviceName": "e"},
            "vector": {"type": "chroma", "serviceName": "chroma", "collectionID": "1344926e-fcd2-4a4a-a8ad-a2153dc7cf3e"}}).as_object().unwrap()).unwrap();
        let v = c.semantic.unwrap().vector;
        let q = query(&v, "c1", &[0.5, 0.5]).unwrap();
        assert_eq!(q.path, "/api/v2/tenants/default_tenant/databases/default_database/collections/1344926e-fcd2-4a4a-a8ad-a2153dc7cf3e/query");
        let body: Value = serde_json::from_slice(&q.body).unwrap();
        assert_eq!(body["where"], json!({"context": "c1"}));
        let u = upsert(&v, "c1", "k", &[0.5]).unwrap();
        assert!(u.path.ends_with("/upsert"));

        let hit = br#"{"ids":[["k"]],"distances":[[0.25]],"include":["distances"]}"#;
        assert_eq!(nearest(hit).unwrap(), Some(("k".into(), 0.75)));
        assert_eq!(nearest(br#"{"ids":[[]],"distances":[[]]}"#).unwrap(), None);
        assert!(nearest(br#"{"error":"InvalidArgumentError"}"#).is_err());
    }
}
