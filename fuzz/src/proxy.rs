#![allow(dead_code)] // each target uses part of it
//! ai-proxy's edges as the glue drives them, for the translator targets (included with
//! `#[path]` by the targets that link ai-proxy).

use ai_proxy::config::{Config, Provider};
use ai_proxy::translate::{BodyMode, ResponseStage};
use std::rc::Rc;

/// One provider of each wire format (and an OpenAI-compatible one with a quirk).
const PROVIDERS: &[&str] = &[
    r#"{"type": "openai", "apiTokens": ["sk-fuzz"]}"#,
    r#"{"type": "azure", "apiTokens": ["k"], "azureServiceUrl": "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"}"#,
    r#"{"type": "azure", "apiTokens": ["k"], "azureServiceUrl": "https://r.openai.azure.com?api-version=2024-10-21"}"#,
    r#"{"type": "moonshot", "apiTokens": ["k"]}"#,
    r#"{"type": "claude", "apiTokens": ["k"]}"#,
    r#"{"type": "gemini", "apiTokens": ["k"]}"#,
    r#"{"type": "vertex", "vertexRegion": "us-east5", "apiTokens": ["k"]}"#,
    r#"{"type": "bedrock", "awsRegion": "us-east-1", "awsAccessKey": "AKIDFUZZ", "awsSecretKey": "fuzz-secret"}"#,
    r#"{"type": "cohere", "apiTokens": ["k"]}"#,
    r#"{"type": "ollama-native"}"#,
];

thread_local! {
    static CONFIGURED: Vec<Rc<Provider>> = PROVIDERS
        .iter()
        .map(|p| {
            let config = format!(r#"{{"provider": {p}}}"#);
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&config).expect("provider json");
            let config = Config::from_map(&map).unwrap_or_else(|e| panic!("{p}: {e}"));
            config.active.clone().expect("one provider is active")
        })
        .collect();
}

/// The provider picked by `choice`.
pub fn provider(choice: u8) -> Rc<Provider> {
    CONFIGURED.with(|all| all[choice as usize % all.len()].clone())
}

pub const STATUSES: &[u16] = &[200, 200, 200, 400, 401, 429, 500, 503];
pub const CONTENT_TYPES: &[&str] = &[
    "text/event-stream",
    "application/json",
    "application/vnd.amazon.eventstream",
    "application/x-ndjson",
    "text/html; charset=utf-8",
    "",
];

/// A response body through a stage as the glue feeds it: untouched when passed through, at
/// once with `end` when the stage needs it whole, else piece by piece, the last with `end`.
pub fn run(
    stage: &mut dyn ResponseStage,
    status: u16,
    content_type: &str,
    pieces: &[&[u8]],
) -> Vec<u8> {
    let plan = stage.plan(status, content_type);
    let mut out = Vec::new();
    match plan.mode {
        BodyMode::Passthrough => out = pieces.concat(),
        BodyMode::Whole => stage.translate(&pieces.concat(), true, &mut out),
        BodyMode::Stream => {
            for (i, piece) in pieces.iter().enumerate() {
                stage.translate(piece, i + 1 == pieces.len(), &mut out);
            }
        }
    }
    out
}
