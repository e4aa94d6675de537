//! OpenAI's embeddings API (`POST …/embeddings`), shared by the OpenAI and Azure mocks.
//!
//! Vectors are deterministic: the same text always gets the same unit vector (8 dimensions
//! unless the request asks for `dimensions`), so tests can compare them across calls and
//! through the gateway. `encoding_format: "base64"` (what the official Python SDK asks for by
//! default) answers little-endian `f32`s in base64, like OpenAI.

use super::openai::error;
use super::Reply;
use serde_json::{json, Value};

/// Dimensions of a vector when the request does not ask for `dimensions`.
pub const DEFAULT_DIMENSIONS: usize = 8;
const MAX_DIMENSIONS: usize = 4096;

/// Answers an embeddings request body. `model` is the model the service answers with when it
/// does not come from the body (Azure: the deployment's model); `None` requires `model` in the
/// body, as OpenAI does.
pub fn answer(body: &Value, model: Option<&str>) -> Reply {
    let model = match (model, body.get("model")) {
        (Some(model), _) => model.to_string(),
        (None, Some(Value::String(model))) => model.clone(),
        (None, None | Some(Value::Null)) => {
            return error(400, "you must provide a model parameter", None, None)
        }
        (None, Some(_)) => return invalid_input("model"),
    };
    let Some(input) = body.get("input").filter(|v| !v.is_null()) else {
        return error(400, "'input' is a required property", None, None);
    };
    let Some(texts) = inputs(input) else {
        return invalid_input("input");
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(v) => match v.as_u64().map(|n| n as usize) {
            Some(n @ 1..=MAX_DIMENSIONS) => n,
            _ => return invalid_input("dimensions"),
        },
    };
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embedding(&text.text, dimensions);
            let encoded = if base64 {
                json!(base64_f32(&vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": encoded})
        })
        .collect();
    let tokens: u64 = texts.iter().map(|t| t.tokens).sum();
    Reply::json(
        200,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
        }),
    )
}

/// One input to embed: its text (token arrays are embedded by their JSON text) and its tokens.
struct Input {
    text: String,
    tokens: u64,
}

/// The inputs OpenAI accepts: a string, an array of strings, an array of token ids, or an
/// array of token-id arrays; none of them empty.
fn inputs(input: &Value) -> Option<Vec<Input>> {
    let text = |s: &str| {
        (!s.is_empty()).then(|| Input {
            text: s.to_string(),
            tokens: s.len().div_ceil(4).max(1) as u64,
        })
    };
    let token_ids = |ids: &[Value]| {
        (!ids.is_empty() && ids.iter().all(|t| t.as_u64().is_some())).then(|| Input {
            text: Value::Array(ids.to_vec()).to_string(),
            tokens: ids.len() as u64,
        })
    };
    match input {
        Value::String(s) => Some(vec![text(s)?]),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(Value::is_number) => Some(vec![token_ids(items)?]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => text(s),
                Value::Array(ids) => token_ids(ids),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn invalid_input(param: &str) -> Reply {
    error(
        400,
        &format!("'$.{param}' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."),
        None,
        None,
    )
}

/// A unit vector derived from a hash of `text`.
pub fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state = fnv1a(text.as_bytes());
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| {
            state = splitmix(state);
            // The top 53 bits as a float in [0, 1), moved to [-1, 1).
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// OpenAI's `base64` encoding: the vector's little-endian `f32` bytes, standard alphabet.
fn base64_f32(vector: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_vectors() {
        let a = embedding("hello", 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("hello!", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 is 00 00 80 3f little-endian.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0]), "AACAPwAAgD8=");
    }
}
