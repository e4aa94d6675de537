//! Runs the client scripts in `e2e/py/` with the project's `.venv` Python (official SDKs).

use crate::paths;
use crate::process::ChildGuard;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `e2e/py/<script>` with `args`; returns its stdout parsed as JSON. Panics with the
/// script's stderr when it fails or runs past `timeout`.
pub fn run_script(script: &str, args: &[&str], timeout: Duration) -> Value {
    let dir = paths::scratch_dir("python");
    let stdout = dir.join("stdout");
    let stderr = dir.join("stderr");
    let mut command = Command::new(paths::python());
    command
        .arg(paths::repo_root().join("e2e/py").join(script))
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    let mut child = ChildGuard::spawn(script, command).expect("start python");
    let status = child.wait_timeout(timeout);
    let out = std::fs::read_to_string(&stdout).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    match status {
        Some(s) if s.success() => serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{out}\n{err}")),
        Some(s) => panic!("{script} failed ({s}):\n{out}\n{err}"),
        None => panic!("{script} still running after {timeout:?}:\n{out}\n{err}"),
    }
}
