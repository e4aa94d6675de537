//! A Chroma server (the Rust server the `chromadb` wheel bundles) and its collections.

use super::{answers, free_port, loopback, wait_ready};
use crate::paths;
use crate::process::ChildGuard;
use serde_json::json;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Chroma {
    pub addr: SocketAddr,
    _process: ChildGuard,
}

const COLLECTIONS: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

impl Chroma {
    pub fn start() -> Chroma {
        let dir = paths::scratch_dir("chroma");
        let port = free_port();
        let log = dir.join("chroma.log");
        let run = format!(
            "import chromadb_rust_bindings as c; c.cli(['chroma', 'run', '--path', {:?}, '--host', '127.0.0.1', '--port', '{port}'])",
            dir.join("data").display().to_string()
        );
        let mut command = Command::new(paths::python());
        command
            .args(["-c", &run])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("chroma log"))
            .stderr(Stdio::null());
        let process =
            ChildGuard::spawn("chroma", command).expect("start chroma (make services installs it)");
        let heartbeat = format!("http://127.0.0.1:{port}/api/v2/heartbeat");
        wait_ready("chroma", Duration::from_secs(30), &log, || {
            answers(&heartbeat)
        });
        Chroma {
            addr: loopback(port),
            _process: process,
        }
    }

    /// Creates (or gets) a collection in cosine space; returns its id.
    pub fn collection(&self, name: &str) -> String {
        let reply = crate::client::post_json(
            &format!("http://{}{COLLECTIONS}", self.addr),
            &json!({"name": name, "get_or_create": true, "configuration": {"hnsw": {"space": "cosine"}}}),
            &[],
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["id"]
            .as_str()
            .expect("collection id")
            .to_string()
    }

    /// Number of vectors in a collection.
    pub fn count(&self, id: &str) -> u64 {
        let reply = crate::client::get(&format!("http://{}{COLLECTIONS}/{id}/count", self.addr))
            .expect("chroma count");
        reply.json().as_u64().unwrap_or(0)
    }
}
