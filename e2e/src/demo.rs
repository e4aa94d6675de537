//! The `make run` gateway: `envoy-configs/demo.yaml` rendered and started with a mock provider,
//! or with OpenAI / Anthropic when `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` is set. Shared by the
//! `demo` binary and its e2e test.

use crate::{paths, Envoy, EnvoyOptions, MockServer, OpenAiMock};
use serde_json::json;
use std::path::PathBuf;

/// The key the mock expects; the gateway sends it, clients need none.
pub const MOCK_KEY: &str = "sk-mock-demo";

pub struct DemoSettings {
    pub port: u16,
    pub admin_port: u16,
    /// Real OpenAI key; `None` serves from the mock.
    pub openai_key: Option<String>,
    /// Real Anthropic key, used when there is no OpenAI key.
    pub anthropic_key: Option<String>,
    pub run_dir: PathBuf,
}

impl DemoSettings {
    /// From `PORT`, `ADMIN_PORT`, `OPENAI_API_KEY` and `ANTHROPIC_API_KEY`, with `.run/` for files.
    pub fn from_env() -> Result<Self, String> {
        let port = |name: &str, default: u16| match std::env::var(name) {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map_err(|_| format!("{name}={v} is not a port number")),
            _ => Ok(default),
        };
        Ok(DemoSettings {
            port: port("PORT", 10000)?,
            admin_port: port("ADMIN_PORT", 9901)?,
            openai_key: key_from_env("OPENAI_API_KEY"),
            anthropic_key: key_from_env("ANTHROPIC_API_KEY"),
            run_dir: paths::repo_root().join(".run"),
        })
    }
}

fn key_from_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

impl DemoSettings {
    /// The cluster requests go to, and a description of it.
    pub fn provider(&self) -> (&'static str, &'static str) {
        match (&self.openai_key, &self.anthropic_key) {
            (Some(_), _) => ("openai", "OpenAI (api.openai.com), key from OPENAI_API_KEY"),
            (None, Some(_)) => (
                "anthropic",
                "Anthropic (api.anthropic.com), key from ANTHROPIC_API_KEY",
            ),
            (None, None) => ("mock", "the local mock provider (OpenAI wire format)"),
        }
    }

    /// The provider edge's ai-proxy config: every provider a key is known for.
    fn provider_edge_config(&self) -> serde_json::Value {
        let mut providers = vec![json!({"id": "mock", "type": "openai", "apiTokens": [MOCK_KEY]})];
        if let Some(key) = &self.openai_key {
            providers.push(json!({"id": "openai", "type": "openai", "apiTokens": [key]}));
        }
        if let Some(key) = &self.anthropic_key {
            providers.push(json!({"id": "anthropic", "type": "claude", "apiTokens": [key]}));
        }
        json!({"providers": providers})
    }

    /// The client edge answers `/v1/models` itself only for the mock.
    fn client_edge_config(&self) -> serde_json::Value {
        match self.provider().0 {
            "mock" => json!({"models": ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"]}),
            _ => json!({}),
        }
    }
}

pub struct Demo {
    pub envoy: Envoy,
    pub mock: MockServer,
    pub settings: DemoSettings,
}

pub fn start(settings: DemoSettings) -> Result<Demo, String> {
    let mock = MockServer::start(OpenAiMock::with_key(MOCK_KEY));
    std::fs::create_dir_all(&settings.run_dir)
        .map_err(|e| format!("{}: {e}", settings.run_dir.display()))?;
    let template_path = paths::repo_root().join("envoy-configs/demo.yaml");
    let template = std::fs::read_to_string(&template_path)
        .map_err(|e| format!("{}: {e}", template_path.display()))?;
    let wasm = paths::plugin_wasm("ai-statistics");
    paths::plugin_wasm("ai-proxy");
    let vars = [
        ("PORT", settings.port.to_string()),
        ("ADMIN_PORT", settings.admin_port.to_string()),
        ("MOCK_PORT", mock.port().to_string()),
        (
            "WASM_DIR",
            wasm.parent().unwrap_or(&wasm).display().to_string(),
        ),
        (
            "ACCESS_LOG",
            settings.run_dir.join("access.log").display().to_string(),
        ),
        ("PROVIDER_CLUSTER", settings.provider().0.to_string()),
        (
            "CLIENT_EDGE_CONFIG",
            settings.client_edge_config().to_string(),
        ),
        (
            "PROVIDER_EDGE_CONFIG",
            settings.provider_edge_config().to_string(),
        ),
    ];
    let rendered = crate::config::render(&template, &vars)?;
    let config_path = settings.run_dir.join("demo.yaml");
    write_private(&config_path, &rendered)?;
    let options = EnvoyOptions {
        work_dir: Some(settings.run_dir.clone()),
        log_level: "warning",
        ..Default::default()
    };
    let envoy = Envoy::try_start_file(&config_path, &options)?;
    Ok(Demo {
        envoy,
        mock,
        settings,
    })
}

/// The rendered config can hold a provider key: readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}
