//! Envoy configs for tests, built as JSON: one `gateway` listener on port 0 whose HTTP filter
//! chain holds the plugins under test, routes to static clusters, the stats tags that turn the
//! plugins' metric names into labels, and a JSON access log with the plugins' log attributes.

use crate::paths;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::path::Path;

/// Paths in a test config start with this; Envoy::start puts the run's own directory there.
pub const DIR: &str = "@DIR@";
/// Key of the ECDS resources a config carries to Envoy::start (not an Envoy field).
pub const ECDS_KEY: &str = "@ecds";

/// Stats tags for the `route.<r>.upstream.<c>.model.<m>.consumer.<u>[.status.<s>].metric.<name>`
/// names of ai-statistics and the `token_ratelimit_rule.<rule>.metric.<name>` names of
/// ai-token-ratelimit (the same lists ship in `envoy-configs/`).
pub fn stats_tags() -> Value {
    json!([
        {"tag_name": "ai_route", "regex": "^wasmcustom\\.route\\.(([^.]*)\\.)upstream\\."},
        {"tag_name": "ai_cluster", "regex": "\\.upstream\\.(([^.]*)\\.)model\\."},
        {"tag_name": "ai_model", "regex": "\\.model\\.(([^.]*)\\.)consumer\\."},
        {"tag_name": "ai_consumer", "regex": "\\.consumer\\.(([^.]*)\\.)(?:status|metric)\\."},
        {"tag_name": "ai_status", "regex": "\\.status\\.((\\d+)\\.)metric\\."},
        {"tag_name": "ai_ratelimit_rule", "regex": "^wasmcustom\\.token_ratelimit_rule\\.(([^.]*)\\.)metric\\."}
    ])
}

/// The ECDS resource (a `TypedExtensionConfig`) of a wasm plugin instance, with the module at
/// `wasm` (a new file name per version: Envoy reloads a module when its path changes).
pub fn ecds_resource(plugin: &str, instance: &str, wasm: &Path, configuration: &Value) -> Value {
    let mut filter = wasm_instance(plugin, instance, configuration);
    filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = json!(wasm);
    json!({"resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": instance,
        "typed_config": filter["typed_config"]
    }]})
}

/// A filter whose config Envoy reads from the file `<run dir>/ecds/<instance>.yaml` and
/// re-reads whenever a new file is renamed over it (extension config discovery).
pub fn ecds_filter(instance: &str) -> Value {
    json!({
        "name": instance,
        "config_discovery": {
            "config_source": {
                "path_config_source": {
                    "path": format!("{DIR}/ecds/{instance}.yaml"),
                    "watched_directory": {"path": format!("{DIR}/ecds")}
                },
                "resource_api_version": "V3"
            },
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
        }
    })
}

/// The wasm HTTP filter for a plugin crate, with its JSON configuration. Each plugin gets its
/// own VM (`vm_id` = plugin name), and a panic reloads the VM instead of failing closed forever.
pub fn wasm_filter(plugin: &str, configuration: &Value) -> Value {
    wasm_instance(plugin, plugin, configuration)
}

/// A second instance of a plugin in the same chain needs a name (and VM) of its own.
pub fn wasm_instance(plugin: &str, instance: &str, configuration: &Value) -> Value {
    let configuration = &with_mock_knobs(plugin, configuration);
    json!({
        "name": instance,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": instance,
                "root_id": instance,
                "vm_config": {
                    "vm_id": instance,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": paths::plugin_wasm(plugin)}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration.to_string()
                },
                // A plugin that pauses request headers (to rewrite them from the body) gets the
                // body before the headers leave; without this Envoy holds the body too.
                "allow_on_headers_stop_iteration": true,
                "failure_policy": "FAIL_RELOAD",
                "reload_config": {"backoff": {"base_interval": "0.1s", "max_interval": "1s"}}
            }
        }
    })
}

/// Tests steer the mock providers with `x-mock-*` request headers, which ai-proxy's provider
/// edge removes like every client header outside its allow-list: every ai-proxy config with
/// providers (and no `forwardHeaders` of its own) forwards them.
fn with_mock_knobs(plugin: &str, configuration: &Value) -> Value {
    fn add(config: &mut Value) {
        if let Some(object) = config.as_object_mut() {
            let has_providers = object.contains_key("provider") || object.contains_key("providers");
            if has_providers && !object.contains_key("forwardHeaders") {
                object.insert("forwardHeaders".into(), json!(["x-mock-*"]));
            }
        }
    }
    fn add_to_proxy(config: &mut Value) {
        add(config);
        if let Some(Value::Array(rules)) = config.get_mut("_rules_") {
            rules.iter_mut().for_each(add);
        }
    }
    let mut configuration = configuration.clone();
    match plugin {
        "ai-proxy" => add_to_proxy(&mut configuration),
        "ai-gateway" => {
            if let Some(Value::Array(stages)) = configuration.get_mut("stages") {
                stages
                    .iter_mut()
                    .filter(|s| s["stage"] == "ai-proxy")
                    .for_each(|s| add_to_proxy(&mut s["config"]));
            }
        }
        _ => {}
    }
    configuration
}

/// A config from `envoy-configs/` as shipped, ready for a test: its placeholders filled in
/// (`PORT` and `ADMIN_PORT` free, `WASM_DIR` this build, `vars` the rest) and each real provider
/// endpoint pointed at a local plaintext mock. `stand_ins` are `(tls, host, mock)`: the file's
/// endpoint `{address: <host>, port_value: 443}` whose TLS settings are chosen by
/// `envoy.transport_socket_match: {tls: <tls>}`. Panics when the file has no such endpoint, so
/// the test keeps following the file.
pub fn shipped_on_mocks(
    file: &str,
    vars: &[(&str, String)],
    stand_ins: &[(&str, &str, SocketAddr)],
) -> String {
    let path = paths::repo_root().join("envoy-configs").join(file);
    let template = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let wasm_dir = paths::plugin_wasm("ai-proxy")
        .parent()
        .expect("wasm directory")
        .display()
        .to_string();
    let mut all = vec![
        ("PORT", "0".to_string()),
        ("ADMIN_PORT", "0".to_string()),
        ("WASM_DIR", wasm_dir),
    ];
    all.extend(vars.iter().cloned());
    let mut config = render(&template, &all).unwrap_or_else(|e| panic!("{file}: {e}"));
    for (tls, host, mock) in stand_ins {
        let address = format!("{{address: {host}, port_value: 443}}");
        let socket = format!("envoy.transport_socket_match: {{tls: {tls}}}");
        assert!(
            config.contains(&address) && config.contains(&socket),
            "{file} has no {tls} endpoint at {host}"
        );
        config = config
            .replace(
                &address,
                &format!("{{address: {}, port_value: {}}}", mock.ip(), mock.port()),
            )
            .replace(&socket, "envoy.transport_socket_match: {tls: none}");
    }
    config
}

/// Envoy's own API key filter: the key in `x-api-key` names the consumer (`(key, consumer)`
/// pairs), forwarded to the plugins in `x-mse-consumer`, which replaces any value a client
/// sent there; the key itself is not forwarded.
pub fn api_key_auth(credentials: &[(&str, &str)]) -> Value {
    let credentials: Vec<Value> = credentials
        .iter()
        .map(|(key, client)| json!({"key": key, "client": client}))
        .collect();
    json!({
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": credentials,
            "key_sources": [{"header": "x-api-key"}],
            "forwarding": {"header": "x-mse-consumer", "hide_credentials": true}
        }
    })
}

/// A plain HTTP/1.1 cluster with one static endpoint.
pub fn static_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": addr.ip().to_string(), "port_value": addr.port()
            }}}}]}]
        }
    })
}

/// One endpoint of a provider cluster: its address, the provider id it serves (endpoint
/// metadata `aigw.provider`) and optionally the model to ask it for (`aigw.model`).
#[derive(Debug, Clone)]
pub struct ProviderEndpoint {
    pub addr: SocketAddr,
    pub provider: String,
    pub model: Option<String>,
}

impl ProviderEndpoint {
    pub fn new(addr: SocketAddr, provider: &str) -> Self {
        ProviderEndpoint {
            addr,
            provider: provider.to_string(),
            model: None,
        }
    }

    pub fn model(mut self, model: &str) -> Self {
        self.model = Some(model.to_string());
        self
    }
}

/// A cluster whose endpoints are tried in priority order (the first has priority 0), with
/// `upstream_filters` (e.g. ai-proxy) run for every attempt before the upstream codec.
pub fn provider_cluster(
    name: &str,
    endpoints: &[ProviderEndpoint],
    upstream_filters: Vec<Value>,
) -> Value {
    let localities: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(priority, e)| {
            let mut metadata = json!({"provider": e.provider});
            if let Some(model) = &e.model {
                metadata["model"] = json!(model);
            }
            json!({
                "priority": priority,
                "lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {"address": e.addr.ip().to_string(), "port_value": e.addr.port()}}},
                    "metadata": {"filter_metadata": {"aigw": metadata}}
                }]
            })
        })
        .collect();
    let mut filters = upstream_filters;
    filters.push(json!({
        "name": "envoy.filters.http.upstream_codec",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}
    }));
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": localities},
        // Envoy allows 3 retries in flight per cluster by default; past that a failover is
        // refused and the client gets the failed attempt's error.
        "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": filters
            }
        }
    })
}

/// Retries on the cluster's next priority (the next provider) when an attempt fails with a
/// 5xx, a reset, a refused connection or one of `statuses`. Retries start almost at once:
/// another provider gains nothing from Envoy's default 25 ms back-off.
pub fn failover_retry_policy(
    statuses: &[u16],
    num_retries: u32,
    per_try_timeout: Option<&str>,
) -> Value {
    let mut policy = json!({
        "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
        "retriable_status_codes": statuses,
        "num_retries": num_retries,
        "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.01s"},
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1
            }
        }
    });
    if let Some(timeout) = per_try_timeout {
        policy["per_try_timeout"] = json!(timeout);
    }
    policy
}

/// A route to `cluster` that fails over across its priorities (see [`failover_retry_policy`]).
pub fn failover_route(name: &str, prefix: &str, cluster: &str, statuses: &[u16]) -> Value {
    json!({
        "name": name,
        "match": {"prefix": prefix},
        "route": {
            "cluster": cluster,
            "timeout": "300s",
            "retry_policy": failover_retry_policy(statuses, 3, None)
        }
    })
}

/// The route of a provider chain as in `envoy-configs/fallback.yaml`: the cluster comes from
/// the header ai-fallback sets (the first provider whose circuit is closed).
pub fn fallback_route(num_retries: u32, per_try_timeout: &str) -> Value {
    json!({
        "name": "llm",
        "match": {"prefix": "/"},
        "route": {
            "cluster_header": "x-ai-fallback-cluster",
            "timeout": "60s",
            "retry_policy": failover_retry_policy(&[429], num_retries, Some(per_try_timeout))
        }
    })
}

/// A test gateway: filters (in order) before the router, routes, clusters.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    filters: Vec<Value>,
    routes: Vec<Value>,
    clusters: Vec<Value>,
    /// ECDS resource files by filter name.
    ecds: Map<String, Value>,
}

impl Gateway {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a wasm plugin to the filter chain.
    pub fn plugin(self, plugin: &str, configuration: Value) -> Self {
        self.filter(wasm_filter(plugin, &configuration))
    }

    /// Adds a named instance of a wasm plugin (when the chain holds the plugin twice).
    pub fn plugin_instance(self, plugin: &str, instance: &str, configuration: Value) -> Self {
        self.filter(wasm_instance(plugin, instance, &configuration))
    }

    /// Adds a wasm plugin instance whose config comes from an ECDS file (hot-swappable with
    /// [`crate::Envoy::swap`]).
    pub fn plugin_ecds(mut self, plugin: &str, instance: &str, configuration: Value) -> Self {
        let resource = ecds_resource(
            plugin,
            instance,
            &paths::plugin_wasm(plugin),
            &configuration,
        );
        self.ecds.insert(instance.to_string(), resource);
        self.filter(ecds_filter(instance))
    }

    /// Adds any HTTP filter (e.g. Envoy's own) to the chain.
    pub fn filter(mut self, filter: Value) -> Self {
        self.filters.push(filter);
        self
    }

    /// Adds a static cluster `name` → `addr`.
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push(static_cluster(name, addr));
        self
    }

    pub fn raw_cluster(mut self, cluster: Value) -> Self {
        self.clusters.push(cluster);
        self
    }

    /// Adds a named route for a path prefix to a cluster.
    pub fn route(self, name: &str, prefix: &str, cluster: &str) -> Self {
        self.raw_route(json!({
            "name": name,
            "match": {"prefix": prefix},
            "route": {"cluster": cluster, "timeout": "300s"}
        }))
    }

    pub fn raw_route(mut self, route: Value) -> Self {
        self.routes.push(route);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut filters = self.filters.clone();
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let routes = if self.routes.is_empty() {
            vec![
                json!({"name": "default", "match": {"prefix": "/"}, "route": {"cluster": "provider", "timeout": "300s"}}),
            ]
        } else {
            self.routes.clone()
        };
        json!({
            "node": {"id": "gateway", "cluster": "gateway"},
            ECDS_KEY: self.ecds,
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "stats_config": {"stats_tags": stats_tags()},
            "stats_flush_interval": "0.5s",
            "static_resources": {
                "listeners": [{
                    "name": "gateway",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "gateway",
                            "access_log": [access_log(&format!("{DIR}/access.log"))],
                            "route_config": {
                                "name": "gateway",
                                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]
                            },
                            "http_filters": filters
                        }
                    }]}]
                }],
                "clusters": self.clusters
            }
        })
    }
}

/// The JSON access log line the configs ship: request facts plus the plugins' log records.
pub fn access_log(path: &str) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": {
                "start_time": "%START_TIME%",
                "method": "%REQ(:METHOD)%",
                "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                "status": "%RESPONSE_CODE%",
                "duration_ms": "%DURATION%",
                "upstream_host": "%UPSTREAM_HOST%",
                "ai_log": "%FILTER_STATE(wasm.ai_log:PLAIN)%",
                "ai_cache": "%FILTER_STATE(wasm.ai_cache:PLAIN)%",
                "ai_token_ratelimit": "%FILTER_STATE(wasm.ai_token_ratelimit:PLAIN)%"
            }}
        }
    })
}

/// Puts the run's directory in place of every `@DIR@` in a config.
pub fn place_in(config: &mut Value, dir: &Path) {
    match config {
        Value::String(s) if s.starts_with(DIR) => {
            *s = s.replacen(DIR, &dir.display().to_string(), 1);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| place_in(v, dir)),
        Value::Object(map) => map.values_mut().for_each(|v| place_in(v, dir)),
        _ => {}
    }
}

/// Fills `${NAME}` placeholders (as in `envoy-configs/*.yaml`); every placeholder must be given.
pub fn render(template: &str, vars: &[(&str, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("unclosed ${ in template")?;
        let name = &after[..end];
        let value = vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("template placeholder ${{{name}}} has no value"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn render_fills_every_placeholder_or_fails() {
        let vars = [("A", "1".to_string()), ("B", "two".to_string())];
        assert_eq!(
            super::render("x ${A} y ${B}${A}", &vars).unwrap(),
            "x 1 y two1"
        );
        assert!(super::render("${C}", &vars).unwrap_err().contains("${C}"));
    }
}
