//! The `make run` gateway: `envoy-configs/demo.yaml` rendered and started with a mock provider,
//! or with OpenAI when `OPENAI_API_KEY` is set. Shared by the `demo` binary and its e2e test.

use crate::{paths, Envoy, EnvoyOptions, MockServer, OpenAiMock};
use std::path::PathBuf;

/// The key the mock expects; the gateway sends it, clients need none.
pub const MOCK_KEY: &str = "sk-mock-demo";

pub struct DemoSettings {
    pub port: u16,
    pub admin_port: u16,
    /// Real OpenAI key; `None` serves from the mock.
    pub openai_key: Option<String>,
    pub run_dir: PathBuf,
}

impl DemoSettings {
    /// From `PORT`, `ADMIN_PORT` and `OPENAI_API_KEY`, with `.run/` for files.
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
            openai_key: std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.trim().is_empty()),
            run_dir: paths::repo_root().join(".run"),
        })
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
    let (cluster, key) = match &settings.openai_key {
        Some(key) => ("openai", key.clone()),
        None => ("mock", MOCK_KEY.to_string()),
    };
    let wasm = paths::plugin_wasm("ai-statistics");
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
        ("PROVIDER_CLUSTER", cluster.to_string()),
        ("PROVIDER_KEY", key),
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
