//! `GET /v1/models`, answered by the gateway from its configuration.

use serde_json::json;

/// OpenAI's model list for `(id, owner)` pairs.
pub fn list(models: &[(String, &str)]) -> Vec<u8> {
    let data: Vec<_> = models
        .iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn openai_list_shape() {
        let body: serde_json::Value =
            serde_json::from_slice(&super::list(&[("gpt-4o".into(), "openai")])).unwrap();
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"][0]["id"], "gpt-4o");
        assert_eq!(body["data"][0]["owned_by"], "openai");
    }
}
