//! Translators between the client's API, the canonical format (OpenAI Chat Completions) and
//! each provider's native API.
//!
//! A request passes two edges, each a small object created per request (so concurrent streams
//! never share state) and made of pure functions over bytes:
//!
//! - a [`ClientAdapter`] for the API the client speaks: client request → canonical request, and
//!   canonical response → client response;
//! - a [`ProviderAdapter`] for the provider's wire format: canonical request → native request,
//!   and native response → canonical response.
//!
//! A new wire format is one new module implementing one of the two traits, plus a line in
//! [`provider_adapter`] or [`client_adapter`].

pub mod anthropic;
pub mod anthropic_client;
pub mod bedrock;
pub mod canonical;
pub mod claude;
pub mod cohere;
pub mod errors;
pub mod eventstream;
pub mod gemini;
pub mod ollama;
pub mod openai_client;
pub mod openai_compat;
#[cfg(test)]
mod recorded;
pub mod vertex;

use crate::config::Provider;
use crate::provider::WireFormat;
use aigw_shared::error::{ApiError, ClientApi};
use aigw_shared::openai::ChatRequest;

/// A request path without its query string.
pub fn without_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(path, _)| path)
}

/// The API a request is for, from its method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI `POST …/chat/completions`.
    Chat,
    /// Anthropic `POST …/v1/messages`.
    Messages,
    /// OpenAI `POST …/embeddings`.
    Embeddings,
    /// OpenAI `GET …/models`.
    Models,
    /// OpenAI `GET …/models/{id}`.
    Model,
    /// Anything else: refused, or passed through when `passthroughPaths` lists it.
    Other,
}

impl Api {
    pub fn of(method: &str, path: &str) -> Api {
        let path = without_query(path);
        match method {
            "POST" if path.ends_with("/chat/completions") => Api::Chat,
            "POST" if path.ends_with("/v1/messages") => Api::Messages,
            "POST" if path.ends_with("/embeddings") => Api::Embeddings,
            "GET" if path.ends_with("/models") => Api::Models,
            "GET" if model_of(path).is_some() => Api::Model,
            _ => Api::Other,
        }
    }
}

/// The model id of `GET …/models/{id}` (the query left out).
pub fn model_of(path: &str) -> Option<&str> {
    let path = without_query(path);
    path.rsplit_once("/models/")
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

/// The complete events of the next piece of an SSE body; at the end, also an event the stream
/// did not close with a blank line.
pub fn events(
    decoder: &mut aigw_shared::sse::Decoder,
    input: &[u8],
    end: bool,
) -> Vec<aigw_shared::sse::Event> {
    let mut events = Vec::new();
    decoder.push_with(input, |e| events.push(e));
    if end {
        events.extend(decoder.finish());
    }
    events
}

/// The JSON payloads of the complete events of the next piece of an SSE body (`[DONE]` and
/// events without data are skipped). An event whose data is not JSON (a lone surrogate escape,
/// a cut-off object; invalid UTF-8 the decoder has already read as U+FFFD) is an
/// [`Unreadable`]: the translator ends the stream with an error rather than drop a piece of the
/// answer without a word.
pub fn json_events(
    decoder: &mut aigw_shared::sse::Decoder,
    input: &[u8],
    end: bool,
) -> impl Iterator<Item = Result<serde_json::Value, Unreadable>> {
    events(decoder, input, end)
        .into_iter()
        .filter(|event| !event.is_done() && !event.data.trim().is_empty())
        .map(|event| serde_json::from_str(&event.data).map_err(|_| Unreadable))
}

/// A provider event or body that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// The canonical path for a Messages request: `…/v1/messages` becomes `…/v1/chat/completions`,
/// keeping any prefix (routes often match on one) and dropping Anthropic's query (`?beta=true`).
pub fn chat_path_for(messages_path: &str) -> String {
    let path = without_query(messages_path);
    let prefix = path.strip_suffix("/v1/messages").unwrap_or("");
    format!("{prefix}/v1/chat/completions")
}

/// How a stage treats a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BodyMode {
    /// Untouched, not even read.
    Passthrough,
    /// Translated chunk by chunk as it arrives (SSE).
    Stream,
    /// Needs the whole body (a JSON document).
    Whole,
}

/// What a stage will do with a response, decided from its status and content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub mode: BodyMode,
    /// The content type the stage's output has, when it differs from its input.
    pub content_type: Option<&'static str>,
}

impl Plan {
    pub const PASSTHROUGH: Plan = Plan {
        mode: BodyMode::Passthrough,
        content_type: None,
    };
    pub const STREAM: Plan = Plan {
        mode: BodyMode::Stream,
        content_type: None,
    };
    pub const WHOLE: Plan = Plan {
        mode: BodyMode::Whole,
        content_type: None,
    };
}

/// One direction of response translation, fed body bytes in order.
pub trait ResponseStage {
    /// Called once, before any body.
    fn plan(&mut self, status: u16, content_type: &str) -> Plan;
    /// Translates the next piece of the body (in [`BodyMode::Whole`], the whole body with
    /// `end`). Holds at most one incomplete event between calls.
    fn translate(&mut self, input: &[u8], end: bool, out: &mut Vec<u8>);
}

/// The client-facing edge.
pub trait ClientAdapter: ResponseStage {
    /// The client's request body as a canonical request.
    fn request(&mut self, body: &[u8]) -> Result<ChatRequest, ApiError>;
    /// Which error shape the client reads.
    fn api(&self) -> ClientApi;
}

/// The provider-facing edge.
pub trait ProviderAdapter: ResponseStage {
    /// The provider's request body for a canonical chat request, `model` already mapped.
    fn chat_request(&mut self, request: ChatRequest, model: &str) -> Result<Vec<u8>, ApiError>;
    /// The chat path, for wire formats that put the model or the stream mode in it (known
    /// after [`Self::chat_request`]); `None` for the provider's fixed chat path.
    fn chat_path(&self) -> Option<String> {
        None
    }
    /// Headers the wire format needs besides the API key (e.g. `anthropic-version`), known
    /// after [`Self::chat_request`]. Every name must be in [`PROVIDER_HEADERS`] or be
    /// `authorization`.
    fn extra_headers(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// Every header a provider adapter may set. Each attempt removes them all before setting its
/// own, so an attempt at another provider (upstream retries share one header map) inherits
/// none of them.
pub const PROVIDER_HEADERS: &[&str] = &[
    "anthropic-version",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
];

/// The client edge for a request to `api`.
pub fn client_adapter(api: Api) -> Box<dyn ClientAdapter> {
    match api {
        Api::Messages => Box::new(anthropic_client::AnthropicClient::default()),
        _ => Box::new(openai_client::OpenAiClient::default()),
    }
}

/// The provider edge for a provider. `now` (seconds) stamps synthesised chunks and signatures.
pub fn provider_adapter(provider: &Provider, now: u64) -> Box<dyn ProviderAdapter> {
    match provider.kind.wire {
        WireFormat::OpenAi | WireFormat::Azure => {
            Box::new(openai_compat::OpenAiCompat::new(provider.kind))
        }
        WireFormat::Claude => Box::new(claude::Claude::new(
            &provider.claude_version,
            provider.default_max_tokens,
            now,
        )),
        WireFormat::Gemini => Box::new(gemini::Gemini::new(provider, now)),
        WireFormat::Vertex => Box::new(vertex::Vertex::new(provider, now)),
        WireFormat::Bedrock => Box::new(bedrock::Bedrock::new(provider, now)),
        WireFormat::Cohere => Box::new(cohere::Cohere::new(now)),
        WireFormat::Ollama => Box::new(ollama::Ollama::new(now)),
    }
}

/// Parses a client's JSON request. A malformed body is a 400 whose message and `param` name the
/// offending field (`messages[1].content: invalid type: …`).
pub fn parse_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    aigw_shared::json::parse(body).map_err(|e| {
        if e.syntax {
            ApiError::invalid_request(
                None,
                format!("request body is not valid JSON: {}", e.message),
            )
        } else if e.path.is_empty() {
            ApiError::invalid_request(None, format!("request body: {}", e.message))
        } else {
            ApiError::invalid_request(Some(&e.path), e.to_string())
        }
    })
}

/// The model of a JSON request body, without parsing the rest.
pub fn peek_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        model: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Peek>(body)
        .ok()?
        .model?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for translator tests: feed a stream at every split point.

    use super::ResponseStage;

    /// The JSON chunks of a canonical SSE output (`[DONE]` left out).
    pub fn chunks(out: &[u8]) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// Output of a fresh stage fed `input` in pieces cut at `cuts`.
    pub fn run<S: ResponseStage>(
        make: impl Fn() -> S,
        status: u16,
        content_type: &str,
        input: &[u8],
        cuts: &[usize],
    ) -> Vec<u8> {
        let mut stage = make();
        stage.plan(status, content_type);
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            stage.translate(&input[start..cut], false, &mut out);
            start = cut;
        }
        stage.translate(&input[start..], true, &mut out);
        out
    }

    /// Asserts that splitting `input` anywhere gives exactly what the unsplit input gives, and
    /// returns that output. Cuts: every byte of the first 400 (the first events, their framing
    /// and JSON), 400 more spread over the rest, and random multi-cuts. (The SSE decoder's own
    /// tests cut streams at every byte and every pair of bytes; this is the same property one
    /// level up, on recorded streams, within a test-time budget.)
    pub fn same_at_every_split<S: ResponseStage>(
        make: impl Fn() -> S,
        status: u16,
        content_type: &str,
        input: &[u8],
    ) -> Vec<u8> {
        let whole = run(&make, status, content_type, input, &[]);
        let stride = input.len() / 400 + 1;
        for cut in (0..=input.len()).filter(|&c| c < 400 || c % stride == 0) {
            let split = run(&make, status, content_type, input, &[cut]);
            assert_eq!(
                String::from_utf8_lossy(&split),
                String::from_utf8_lossy(&whole),
                "split at {cut}"
            );
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..50 {
            let mut cuts: Vec<usize> = (0..6)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % (input.len() as u64 + 1)) as usize
                })
                .collect();
            cuts.sort_unstable();
            let split = run(&make, status, content_type, input, &cuts);
            assert_eq!(split, whole, "cuts {cuts:?}");
        }
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors_name_the_field() {
        let err = parse_request::<ChatRequest>(
            br#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.param.as_deref(), Some("messages[0].content"));
        assert!(
            err.message.starts_with("messages[0].content: "),
            "{}",
            err.message
        );
        let err = parse_request::<ChatRequest>(br#"{"model":"m","messages":[], "stream": "yes"}"#)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("stream"));
        let err = parse_request::<ChatRequest>(b"{\"model\": ").unwrap_err();
        assert!(
            err.message.starts_with("request body is not valid JSON"),
            "{}",
            err.message
        );
        let err = parse_request::<ChatRequest>(b"[1]").unwrap_err();
        assert!(
            err.message.starts_with("request body: invalid type"),
            "{}",
            err.message
        );
        let err = parse_request::<anthropic::MessagesRequest>(br#"{"model":"m","messages":[]}"#)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("max_tokens"));
        assert_eq!(err.message, "max_tokens: field required");
        let err = parse_request::<ChatRequest>(br#"{"model":"m"} trailing"#).unwrap_err();
        assert!(
            err.message.starts_with("request body is not valid JSON"),
            "{}",
            err.message
        );
    }

    #[test]
    fn messages_path_becomes_the_chat_path_on_the_same_prefix() {
        assert_eq!(chat_path_for("/v1/messages"), "/v1/chat/completions");
        assert_eq!(
            chat_path_for("/team-a/v1/messages?beta=true"),
            "/team-a/v1/chat/completions"
        );
    }

    #[test]
    fn api_from_method_and_path() {
        assert_eq!(Api::of("POST", "/v1/chat/completions"), Api::Chat);
        assert_eq!(
            Api::of("POST", "/compatible-mode/v1/chat/completions?x=1"),
            Api::Chat
        );
        assert_eq!(Api::of("POST", "/v1/messages"), Api::Messages);
        assert_eq!(Api::of("POST", "/v1/embeddings"), Api::Embeddings);
        assert_eq!(Api::of("GET", "/v1/models"), Api::Models);
        assert_eq!(Api::of("GET", "/v1/models/gpt-4o?x=1"), Api::Model);
        assert_eq!(model_of("/team/v1/models/org/model-a"), Some("org/model-a"));
        assert_eq!(Api::of("GET", "/v1/models/"), Api::Other);
        assert_eq!(Api::of("DELETE", "/v1/models/ft:gpt-4o:me"), Api::Other);
        assert_eq!(Api::of("GET", "/v1/chat/completions"), Api::Other);
        assert_eq!(Api::of("POST", "/v1/responses"), Api::Other);
    }
}
