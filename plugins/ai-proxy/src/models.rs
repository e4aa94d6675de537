//! `GET /v1/models` and `GET /v1/models/{id}`, answered by the gateway from its configuration.

use aigw_shared::error::ApiError;
use serde_json::{json, Value};

fn model(id: &str, owner: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
}

/// OpenAI's model list for `(id, owner)` pairs.
pub fn list(models: &[(String, &str)]) -> Vec<u8> {
    let data: Vec<_> = models.iter().map(|(id, owner)| model(id, owner)).collect();
    serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default()
}

/// OpenAI's model object for `id`, or its 404 when the list does not hold it.
pub fn retrieve(models: &[(String, &str)], id: &str) -> Result<Vec<u8>, ApiError> {
    let (id, owner) = models
        .iter()
        .find(|(known, _)| known == id)
        .ok_or_else(|| {
            let shown: String = id.chars().take(200).collect();
            ApiError::new(
                404,
                "invalid_request_error",
                format!("The model {shown:?} does not exist"),
            )
            .with_code("model_not_found")
        })?;
    Ok(serde_json::to_vec(&model(id, owner)).unwrap_or_default())
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

    #[test]
    fn one_model_or_a_404() {
        let models = [("gpt-4o".to_string(), "openai")];
        let body: serde_json::Value =
            serde_json::from_slice(&super::retrieve(&models, "gpt-4o").unwrap()).unwrap();
        assert_eq!(
            (body["id"].as_str(), body["object"].as_str()),
            (Some("gpt-4o"), Some("model"))
        );
        let err = super::retrieve(&models, "gpt-5").unwrap_err();
        assert_eq!(
            (err.status, err.code.as_deref()),
            (404, Some("model_not_found"))
        );
    }
}
