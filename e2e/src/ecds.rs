//! Swapping a plugin through extension config discovery, the way `make reload` and the tests
//! do it: write the new resource next to the watched file, rename it over (Envoy reacts to the
//! rename), and read Envoy's verdict from its ECDS counters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Content-addressed copy of a wasm module in `dir`: Envoy loads a new module when the path in
/// the config changes, so each build gets its own file name.
pub fn versioned_wasm(built: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(built)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let stem = built
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let target = dir.join(format!("{stem}.{:016x}.wasm", hasher.finish()));
    if !target.exists() {
        std::fs::create_dir_all(dir)?;
        let staged = dir.join(format!(".{stem}.staged"));
        std::fs::write(&staged, &bytes)?;
        std::fs::rename(&staged, &target)?;
    }
    Ok(target)
}

/// Writes `resource` as the ECDS file of `instance` in `ecds_dir` (atomically).
pub fn write(ecds_dir: &Path, instance: &str, resource: &serde_json::Value) -> std::io::Result<()> {
    std::fs::create_dir_all(ecds_dir)?;
    let mut resource = resource.clone();
    if crate::suite::enabled() {
        crate::suite::rewrite_resource(&mut resource);
    }
    let staged = ecds_dir.join(format!(".{instance}.staged"));
    std::fs::write(&staged, resource.to_string())?;
    std::fs::rename(&staged, ecds_dir.join(format!("{instance}.yaml")))
}

fn ecds_counters(admin: &str, instance: &str) -> Result<(u64, u64), String> {
    let text = crate::client::get(&format!("{admin}/stats?filter=extension_config_discovery"))
        .map_err(|e| format!("Envoy admin at {admin} did not answer: {e}"))?
        .text();
    let stats: HashMap<&str, u64> = text
        .lines()
        .filter_map(|l| {
            l.rsplit_once(": ")
                .and_then(|(k, v)| Some((k, v.trim().parse().ok()?)))
        })
        .collect();
    // Downstream filters count under `http_filter`, upstream filters under `upstream_http_filter`.
    let get = |what: &str| {
        ["http_filter", "upstream_http_filter"]
            .iter()
            .filter_map(|kind| {
                stats.get(format!("extension_config_discovery.{kind}.{instance}.{what}").as_str())
            })
            .sum::<u64>()
    };
    Ok((get("update_success"), get("update_rejected")))
}

/// Swaps `instance` and waits for Envoy's verdict: `Ok(time to apply)`, or `Err(why)` when
/// Envoy refused the resource (the previous plugin keeps serving) or did not answer.
pub fn swap(
    admin: &str,
    ecds_dir: &Path,
    instance: &str,
    resource: &serde_json::Value,
) -> Result<Duration, String> {
    let (success, rejected) = ecds_counters(admin, instance)?;
    let started = Instant::now();
    write(ecds_dir, instance, resource)
        .map_err(|e| format!("cannot write {}: {e}", ecds_dir.display()))?;
    loop {
        let (now_success, now_rejected) = ecds_counters(admin, instance)?;
        if now_success > success {
            return Ok(started.elapsed());
        }
        if now_rejected > rejected {
            return Err(format!(
                "Envoy refused the new {instance}; the previous version keeps serving"
            ));
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("Envoy gave no verdict on {instance} within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
