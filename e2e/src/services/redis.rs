//! Redis behind Webdis (Redis over HTTP, the way plugins reach it from Envoy).

use super::{accepts_connections, answers, free_port, loopback, wait_ready};
use crate::paths;
use crate::process::ChildGuard;
use serde_json::json;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Redis {
    /// Webdis's HTTP address (what an Envoy cluster points at).
    pub webdis: SocketAddr,
    pub redis_port: u16,
    _webdis: ChildGuard,
    _redis: ChildGuard,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = paths::scratch_dir("redis");
        let redis_port = free_port();
        let log = dir.join("redis.log");
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let redis = ChildGuard::spawn("redis-server", command)
            .expect("start redis-server (make services installs it)");
        wait_ready("redis", Duration::from_secs(10), &log, || {
            accepts_connections(redis_port)
        });

        let http_port = free_port();
        let webdis_log = dir.join("webdis.log");
        let config = json!({
            "redis_host": "127.0.0.1", "redis_port": redis_port, "redis_auth": null,
            "http_host": "127.0.0.1", "http_port": http_port, "threads": 2,
            "daemonize": false, "database": 0,
            "verbosity": 3, "logfile": webdis_log.display().to_string()
        });
        let config_path = dir.join("webdis.json");
        std::fs::write(&config_path, config.to_string()).expect("webdis config");
        let mut command = Command::new("webdis");
        command
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let webdis =
            ChildGuard::spawn("webdis", command).expect("start webdis (make services installs it)");
        let ping = format!("http://127.0.0.1:{http_port}/PING");
        wait_ready("webdis", Duration::from_secs(10), &webdis_log, || {
            answers(&ping)
        });
        Redis {
            webdis: loopback(http_port),
            redis_port,
            _webdis: webdis,
            _redis: redis,
        }
    }

    /// Runs a Redis command through Webdis and returns its JSON result.
    pub fn command(&self, args: &[&str]) -> serde_json::Value {
        let path: Vec<String> = args.iter().map(|a| encode(a)).collect();
        let reply = crate::client::get(&format!("http://{}/{}", self.webdis, path.join("/")))
            .expect("webdis command");
        reply.json()[args[0].to_ascii_uppercase()].clone()
    }
}

fn encode(arg: &str) -> String {
    arg.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
