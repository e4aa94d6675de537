//! The providers ai-proxy speaks to: how each is addressed and authenticated.
//!
//! OpenAI-compatible providers differ only in data (host, paths, auth, small quirks), so they are
//! rows of one table; providers with their own wire format have their own translator.

/// Which translator a provider type needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// OpenAI Chat Completions, maybe with quirks.
    OpenAi,
    /// Azure OpenAI: OpenAI's format on deployment URLs, with content-filter chunks.
    Azure,
    /// Anthropic Messages.
    Claude,
    /// Google Gemini API (`generateContent`), model and stream mode in the path.
    Gemini,
    /// Vertex AI: Gemini's format, or Anthropic's for Claude models, behind an OAuth token.
    Vertex,
    /// AWS Bedrock Converse / ConverseStream, SigV4-signed, event-stream framing.
    Bedrock,
    /// Cohere Chat v2.
    Cohere,
    /// Ollama's native `/api/chat` (NDJSON streams).
    Ollama,
}

/// How a provider takes its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>`
    Bearer,
    /// `<header>: <key>`
    Header(&'static str),
    /// No key (local servers).
    None,
}

/// The output-cap field a provider understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_completion_tokens` (OpenAI; reasoning models refuse `max_tokens`).
    MaxCompletionTokens,
    /// `max_tokens` (nearly every compatible provider).
    MaxTokens,
}

/// One provider type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderType {
    pub name: &'static str,
    pub wire: WireFormat,
    /// Default `:authority`; empty when the user must give one (`providerDomain` or
    /// `openaiCustomUrl`).
    pub host: &'static str,
    /// Path prefix before `/chat/completions`, `/embeddings`, `/models`.
    pub base_path: &'static str,
    /// Chat path when it does not follow `<base>/chat/completions`.
    pub chat_path: Option<&'static str>,
    pub embeddings: bool,
    pub auth: Auth,
    /// Accepts `stream_options.include_usage` (the others send usage in their last chunk).
    pub stream_usage_option: bool,
    pub max_tokens: MaxTokensField,
    /// Puts usage inside `choices[0].usage` of the last chunk instead of at the top level.
    pub usage_in_choice: bool,
}

const fn openai_like(
    name: &'static str,
    host: &'static str,
    base_path: &'static str,
) -> ProviderType {
    ProviderType {
        name,
        wire: WireFormat::OpenAi,
        host,
        base_path,
        chat_path: None,
        embeddings: true,
        auth: Auth::Bearer,
        stream_usage_option: true,
        max_tokens: MaxTokensField::MaxTokens,
        usage_in_choice: false,
    }
}

/// A provider with its own wire format (no OpenAI-style embeddings or stream options).
const fn native(
    wire: WireFormat,
    name: &'static str,
    host: &'static str,
    auth: Auth,
) -> ProviderType {
    ProviderType {
        wire,
        auth,
        embeddings: false,
        stream_usage_option: false,
        ..openai_like(name, host, "")
    }
}

const fn no_usage_option(mut t: ProviderType) -> ProviderType {
    t.stream_usage_option = false;
    t
}

const fn no_embeddings(mut t: ProviderType) -> ProviderType {
    t.embeddings = false;
    t
}

/// Every supported provider type, by the `type` name Higress users know.
pub const PROVIDER_TYPES: &[ProviderType] = &[
    ProviderType {
        max_tokens: MaxTokensField::MaxCompletionTokens,
        ..openai_like("openai", "api.openai.com", "/v1")
    },
    ProviderType {
        wire: WireFormat::Azure,
        auth: Auth::Header("api-key"),
        ..openai_like("azure", "", "/openai/deployments")
    },
    ProviderType {
        wire: WireFormat::Claude,
        auth: Auth::Header("x-api-key"),
        embeddings: false,
        chat_path: Some("/v1/messages"),
        ..openai_like("claude", "api.anthropic.com", "/v1")
    },
    no_embeddings(openai_like("deepseek", "api.deepseek.com", "/v1")),
    openai_like("qwen", "dashscope.aliyuncs.com", "/compatible-mode/v1"),
    ProviderType {
        usage_in_choice: true,
        ..no_usage_option(no_embeddings(openai_like(
            "moonshot",
            "api.moonshot.cn",
            "/v1",
        )))
    },
    no_usage_option(openai_like("zhipuai", "open.bigmodel.cn", "/api/paas/v4")),
    no_usage_option(openai_like("baichuan", "api.baichuan-ai.com", "/v1")),
    no_usage_option(no_embeddings(openai_like(
        "yi",
        "api.lingyiwanwu.com",
        "/v1",
    ))),
    ProviderType {
        chat_path: Some("/v1/text/chatcompletion_v2"),
        ..no_usage_option(openai_like("minimax", "api.minimax.chat", "/v1"))
    },
    openai_like("doubao", "ark.cn-beijing.volces.com", "/api/v3"),
    no_usage_option(openai_like(
        "hunyuan",
        "api.hunyuan.cloud.tencent.com",
        "/v1",
    )),
    no_usage_option(openai_like("stepfun", "api.stepfun.com", "/v1")),
    no_usage_option(no_embeddings(openai_like(
        "spark",
        "spark-api-open.xf-yun.com",
        "/v1",
    ))),
    openai_like("siliconflow", "api.siliconflow.cn", "/v1"),
    no_usage_option(openai_like("mistral", "api.mistral.ai", "/v1")),
    no_embeddings(openai_like("groq", "api.groq.com", "/openai/v1")),
    openai_like("grok", "api.x.ai", "/v1"),
    openai_like("together-ai", "api.together.xyz", "/v1"),
    openai_like("fireworks", "api.fireworks.ai", "/inference/v1"),
    openai_like("openrouter", "openrouter.ai", "/api/v1"),
    ProviderType {
        chat_path: Some("/chat/completions"),
        ..no_usage_option(no_embeddings(openai_like(
            "perplexity",
            "api.perplexity.ai",
            "",
        )))
    },
    openai_like("github", "models.github.ai", "/inference"),
    no_usage_option(openai_like(
        "cloudflare",
        "api.cloudflare.com",
        "/client/v4/accounts/{account}/ai/v1",
    )),
    openai_like("vllm", "", "/v1"),
    ProviderType {
        auth: Auth::None,
        ..openai_like("ollama", "localhost:11434", "/v1")
    },
    ProviderType {
        auth: Auth::None,
        ..openai_like("lmstudio", "localhost:1234", "/v1")
    },
    no_usage_option(openai_like("ai360", "api.360.cn", "/v1")),
    openai_like("generic", "", "/v1"),
    no_usage_option(no_embeddings(openai_like(
        "cerebras",
        "api.cerebras.ai",
        "/v1",
    ))),
    openai_like("nvidia", "integrate.api.nvidia.com", "/v1"),
    no_embeddings(openai_like("sambanova", "api.sambanova.ai", "/v1")),
    openai_like("deepinfra", "api.deepinfra.com", "/v1/openai"),
    native(
        WireFormat::Gemini,
        "gemini",
        "generativelanguage.googleapis.com",
        Auth::Header("x-goog-api-key"),
    ),
    // The host comes from `vertexRegion`; `apiTokens` are express-mode keys, else a service
    // account's tokens authorise requests.
    native(
        WireFormat::Vertex,
        "vertex",
        "",
        Auth::Header("x-goog-api-key"),
    ),
    // The host comes from `awsRegion`; `apiTokens` are Bedrock API keys, else requests are signed.
    native(WireFormat::Bedrock, "bedrock", "", Auth::Bearer),
    ProviderType {
        chat_path: Some("/v2/chat"),
        ..native(WireFormat::Cohere, "cohere", "api.cohere.com", Auth::Bearer)
    },
    ProviderType {
        chat_path: Some("/api/chat"),
        ..native(
            WireFormat::Ollama,
            "ollama-native",
            "localhost:11434",
            Auth::None,
        )
    },
];

pub fn provider_type(name: &str) -> Option<&'static ProviderType> {
    PROVIDER_TYPES.iter().find(|t| t.name == name)
}

pub fn type_names() -> String {
    PROVIDER_TYPES
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_known() {
        let mut names: Vec<_> = PROVIDER_TYPES.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROVIDER_TYPES.len());
        assert_eq!(provider_type("groq").unwrap().base_path, "/openai/v1");
        assert!(provider_type("nope").is_none());
    }
}
