//! The peer gateways users would pick instead, started on the same mock: the LiteLLM proxy and
//! the Portkey gateway (installed into `.bench/` by `e2e/bench/install-peers.sh`). Each runs as
//! one process with its default workers, on loopback, and ends with the bench.

use e2e::process::ChildGuard;
use e2e::{client, paths};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Peer {
    pub name: &'static str,
    pub base: String,
    /// Headers every request needs (Portkey's provider and custom host).
    pub headers: Vec<(String, String)>,
    _process: ChildGuard,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `command` in `dir` (stdout to `{program}.log`, stderr to `stderr.log`) and waits
/// until `base` + `ready_path` answers 200; returns the running process.
fn start(
    name: &str,
    program: &str,
    mut command: Command,
    dir: &std::path::Path,
    base: &str,
    ready_path: &str,
) -> Result<ChildGuard, String> {
    let log = dir.join(format!("{program}.log"));
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("stderr.log")).expect("log"),
        ));
    let mut process =
        ChildGuard::spawn(program, command).map_err(|e| format!("start {program}: {e}"))?;
    wait_ready(name, &format!("{base}{ready_path}"), &mut process, &log)?;
    Ok(process)
}

/// Waits until `url` answers 200; why not, with the end of the peer's log.
fn wait_ready(
    name: &str,
    url: &str,
    process: &mut ChildGuard,
    log: &std::path::Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let log_tail = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_string()
    };
    loop {
        if client::get(url).is_ok_and(|r| r.status == 200) {
            return Ok(());
        }
        if let Some(status) = process.try_wait() {
            return Err(format!("{name} exited ({status}):\n{}", log_tail()));
        }
        if Instant::now() > deadline {
            return Err(format!("{name} not ready after 180 s:\n{}", log_tail()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The LiteLLM proxy with one model routed to the mock. Its master key is the mock's key, so
/// the same client requests work against every configuration.
pub fn litellm(mock: SocketAddr, key: &str) -> Result<Peer, String> {
    let dir = paths::scratch_dir("litellm");
    let config = dir.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: http://{mock}/v1\n      api_key: {key}\ngeneral_settings:\n  master_key: {key}\n"
        ),
    )
    .expect("litellm config");
    let port = free_port();
    let mut command = Command::new(paths::repo_root().join(".bench/litellm/bin/litellm"));
    command
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        // Otherwise it downloads its model price map at start.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True");
    let base = format!("http://127.0.0.1:{port}");
    let process = start(
        "LiteLLM",
        "litellm",
        command,
        &dir,
        &base,
        "/health/liveliness",
    )?;
    Ok(Peer {
        name: "LiteLLM proxy",
        base,
        headers: Vec::new(),
        _process: process,
    })
}

/// The Portkey gateway; requests name the provider and the mock as its custom host.
pub fn portkey(mock: SocketAddr) -> Result<Peer, String> {
    let dir = paths::scratch_dir("portkey");
    let port = free_port();
    let package = paths::repo_root().join(".bench/portkey/node_modules/@portkey-ai/gateway");
    let mut command = Command::new("node");
    command
        .arg("--import")
        .arg(paths::repo_root().join("e2e/bench/loopback.mjs"))
        .arg(package.join("build/start-server.js"))
        .arg(format!("--port={port}"))
        .arg("--headless");
    let base = format!("http://127.0.0.1:{port}");
    let process = start("Portkey", "portkey", command, &dir, &base, "/")?;
    Ok(Peer {
        name: "Portkey gateway",
        base,
        headers: vec![
            ("x-portkey-provider".into(), "openai".into()),
            ("x-portkey-custom-host".into(), format!("http://{mock}/v1")),
        ],
        _process: process,
    })
}
