//! The `make run` gateway: `envoy-configs/demo.yaml` rendered and started with a mock provider,
//! or with OpenAI / Anthropic when `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` is set. Shared by the
//! `demo` and `reload` binaries and the demo's e2e test.
//!
//! Every plugin of the demo is loaded through extension config discovery: its resource file in
//! `<run dir>/ecds/` names a content-addressed copy of its wasm and carries its config (from
//! `envoy-configs/demo/<filter>.json`), so `make reload` can swap either without a restart.

use crate::config::ecds_resource;
use crate::{ecds, paths, Envoy, EnvoyOptions, MockServer, OpenAiMock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The key the mock expects; the gateway sends it, clients need none.
pub const MOCK_KEY: &str = "sk-mock-demo";

/// What `make run` was started with; saved (owner-readable only: it can hold keys) so that
/// `make reload` can render the same plugins again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoSettings {
    pub port: u16,
    pub admin_port: u16,
    /// Real OpenAI key; `None` serves from the mock.
    pub openai_key: Option<String>,
    /// Real Anthropic key, used when there is no OpenAI key.
    pub anthropic_key: Option<String>,
    pub run_dir: PathBuf,
    /// Envoy's admin address once it runs (the port may have been chosen by the kernel).
    #[serde(default)]
    pub admin: Option<String>,
}

/// The demo's filters: (filter name, plugin crate). Both run the suite module, each position
/// in a VM of its own: the client edge and ai-statistics in front, the provider edge on the
/// provider clusters.
pub const FILTERS: [(&str, &str); 2] = [
    ("ai-gateway", "ai-gateway"),
    ("ai-gateway-upstream", "ai-gateway"),
];

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
            admin: None,
        })
    }

    /// The settings of the gateway `make run` started, if it runs.
    pub fn of_running_demo(run_dir: &Path) -> Result<Self, String> {
        let path = run_dir.join("settings.json");
        let text = std::fs::read_to_string(&path).map_err(|_| {
            format!(
                "no gateway started by `make run` ({} missing)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

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

    /// A filter's config: the provider edge from the keys given, the others from
    /// `envoy-configs/demo/<filter>.json`.
    pub fn filter_config(&self, filter: &str) -> Result<Value, String> {
        if filter == "ai-gateway-upstream" {
            let mut providers =
                vec![json!({"id": "mock", "type": "openai", "apiTokens": [MOCK_KEY]})];
            if let Some(key) = &self.openai_key {
                providers.push(json!({"id": "openai", "type": "openai", "apiTokens": [key]}));
            }
            if let Some(key) = &self.anthropic_key {
                providers.push(json!({"id": "anthropic", "type": "claude", "apiTokens": [key]}));
            }
            return Ok(
                json!({"stages": [{"stage": "ai-proxy", "config": {"providers": providers}}]}),
            );
        }
        let path = paths::repo_root()
            .join("envoy-configs/demo")
            .join(format!("{filter}.json"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
    }

    /// The ECDS resource of a filter, with a content-addressed copy of its current build.
    pub fn filter_resource(&self, filter: &str, plugin: &str) -> Result<Value, String> {
        let wasm = ecds::versioned_wasm(&paths::plugin_wasm(plugin), &self.run_dir.join("wasm"))
            .map_err(|e| format!("cannot copy the {plugin} module: {e}"))?;
        Ok(ecds_resource(
            plugin,
            filter,
            &wasm,
            &self.filter_config(filter)?,
        ))
    }

    /// Whether a filter's config has `stage` among its stages.
    fn runs_stage(&self, filter: &str, stage: &str) -> bool {
        self.filter_config(filter).is_ok_and(|config| {
            config["stages"]
                .as_array()
                .is_some_and(|stages| stages.iter().any(|s| s["stage"] == stage))
        })
    }

    fn ecds_dir(&self) -> PathBuf {
        self.run_dir.join("ecds")
    }
}

fn key_from_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

pub struct Demo {
    pub envoy: Envoy,
    pub mock: MockServer,
    pub settings: DemoSettings,
}

pub fn start(mut settings: DemoSettings) -> Result<Demo, String> {
    let mock = MockServer::start(OpenAiMock::with_key(MOCK_KEY));
    std::fs::create_dir_all(&settings.run_dir)
        .map_err(|e| format!("{}: {e}", settings.run_dir.display()))?;
    for (filter, plugin) in FILTERS {
        let resource = settings.filter_resource(filter, plugin)?;
        ecds::write(&settings.ecds_dir(), filter, &resource)
            .map_err(|e| format!("cannot write the {filter} resource: {e}"))?;
    }
    let template_path = paths::repo_root().join("envoy-configs/demo.yaml");
    let template = std::fs::read_to_string(&template_path)
        .map_err(|e| format!("{}: {e}", template_path.display()))?;
    let vars = [
        ("PORT", settings.port.to_string()),
        ("ADMIN_PORT", settings.admin_port.to_string()),
        ("MOCK_PORT", mock.port().to_string()),
        ("ECDS_DIR", settings.ecds_dir().display().to_string()),
        (
            "ACCESS_LOG",
            settings.run_dir.join("access.log").display().to_string(),
        ),
        ("PROVIDER_CLUSTER", settings.provider().0.to_string()),
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
    settings.admin = Some(envoy.admin_url(""));
    let saved = serde_json::to_string_pretty(&settings).map_err(|e| e.to_string())?;
    write_private(&settings.run_dir.join("settings.json"), &saved)?;
    Ok(Demo {
        envoy,
        mock,
        settings,
    })
}

/// Swaps the running demo's plugins (all, or those of one plugin crate) for their current
/// build and config. Returns one line per filter; `Err` when Envoy refused any.
pub fn reload(settings: &DemoSettings, plugin: Option<&str>) -> Result<Vec<String>, Vec<String>> {
    let admin = settings
        .admin
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", settings.admin_port));
    let mut lines = Vec::new();
    let mut refused = false;
    for (filter, crate_name) in FILTERS
        .iter()
        .filter(|(f, c)| plugin.is_none_or(|p| p == *c || p == *f || settings.runs_stage(f, p)))
    {
        let outcome = settings
            .filter_resource(filter, crate_name)
            .and_then(|resource| ecds::swap(&admin, &settings.ecds_dir(), filter, &resource));
        match outcome {
            Ok(took) => lines.push(format!("{filter}: swapped in {} ms", took.as_millis())),
            Err(why) => {
                refused = true;
                lines.push(format!("{filter}: NOT swapped: {why}"));
            }
        }
    }
    if lines.is_empty() {
        return Err(vec![format!(
            "no demo filter belongs to plugin {:?}",
            plugin.unwrap_or("")
        )]);
    }
    if refused {
        Err(lines)
    } else {
        Ok(lines)
    }
}

/// The rendered config can hold a provider key: readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
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
