//! Real Envoy, started from `.venv` on a generated config with ports chosen by the kernel.
//!
//! Listeners and the admin interface bind port 0; the harness reads the admin address from
//! `--admin-address-path` and each listener's port from `/listeners`, so parallel tests never
//! race for a port. On a failed test the Envoy log tail is printed.

use crate::paths;
use crate::process::{rss_bytes, ChildGuard};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Envoy {
    process: ChildGuard,
    pub dir: PathBuf,
    admin: String,
    listeners: HashMap<String, u16>,
}

/// Options beside the config itself.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    pub concurrency: u32,
    pub log_level: &'static str,
    /// Where the config copy, logs and admin address go; a fresh scratch directory if `None`.
    pub work_dir: Option<PathBuf>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            concurrency: 2,
            log_level: "info",
            work_dir: None,
        }
    }
}

impl EnvoyOptions {
    fn dir(&self) -> PathBuf {
        match &self.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).expect("create envoy work dir");
                dir.clone()
            }
            None => paths::scratch_dir("envoy"),
        }
    }
}

impl Envoy {
    /// Starts Envoy on a JSON config (see [`crate::config::Gateway`]).
    pub fn start(config: &Value) -> Envoy {
        Self::start_with(config, &EnvoyOptions::default())
    }

    pub fn start_with(config: &Value, options: &EnvoyOptions) -> Envoy {
        Self::try_start_with(config, options).unwrap_or_else(|log| panic!("{log}"))
    }

    /// Starts Envoy, or returns its log when it refuses the config or does not come up.
    pub fn try_start_with(config: &Value, options: &EnvoyOptions) -> Result<Envoy, String> {
        let dir = options.dir();
        let mut config = config.clone();
        if crate::suite::enabled() {
            crate::suite::rewrite_config(&mut config);
        }
        crate::config::place_in(&mut config, &dir);
        if let Some(Value::Object(resources)) = config
            .as_object_mut()
            .and_then(|c| c.remove(crate::config::ECDS_KEY))
        {
            let ecds = dir.join("ecds");
            std::fs::create_dir_all(&ecds).expect("ecds dir");
            for (instance, resource) in resources {
                std::fs::write(ecds.join(format!("{instance}.yaml")), resource.to_string())
                    .expect("write ecds");
            }
        }
        let path = dir.join("envoy.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&config).expect("config json"),
        )
        .expect("write envoy config");
        Self::start_file_in(&path, dir, options)
    }

    /// Starts Envoy on a config file as it is (YAML or JSON).
    pub fn start_file(path: &Path, options: &EnvoyOptions) -> Envoy {
        Self::try_start_file(path, options).unwrap_or_else(|log| panic!("{log}"))
    }

    /// Starts Envoy (one worker) on a config given as text (a rendered shipped config).
    pub fn start_yaml(config: &str, label: &str) -> Envoy {
        let dir = paths::scratch_dir(label);
        let path = dir.join(format!("{label}.yaml"));
        std::fs::write(&path, config).expect("write config");
        let options = EnvoyOptions {
            concurrency: 1,
            work_dir: Some(dir),
            ..Default::default()
        };
        Self::start_file(&path, &options)
    }

    pub fn try_start_file(path: &Path, options: &EnvoyOptions) -> Result<Envoy, String> {
        Self::start_file_in(path, options.dir(), options)
    }

    fn start_file_in(config: &Path, dir: PathBuf, options: &EnvoyOptions) -> Result<Envoy, String> {
        let admin_file = dir.join("admin.txt");
        let _ = std::fs::remove_file(&admin_file);
        let mut command = Command::new(paths::envoy_binary());
        command
            .arg("-c")
            .arg(config)
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--file-flush-interval-msec")
            .arg("50")
            .arg("--concurrency")
            .arg(options.concurrency.to_string())
            .arg("-l")
            .arg(options.log_level)
            .arg("--log-path")
            .arg(dir.join("envoy.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).expect("stderr log"),
            ));
        let process = ChildGuard::spawn("envoy", command).expect("start envoy");
        let mut envoy = Envoy {
            process,
            dir,
            admin: String::new(),
            listeners: HashMap::new(),
        };
        envoy.wait_ready(&admin_file)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_file: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.process.try_wait() {
                return Err(format!(
                    "Envoy exited during start-up ({status}).\n{}",
                    self.log_tail(40)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy not ready after 60 s.\n{}",
                    self.log_tail(40)
                ));
            }
            if self.admin.is_empty() {
                if let Ok(addr) = std::fs::read_to_string(admin_file) {
                    self.admin = addr.trim().to_string();
                }
            }
            if !self.admin.is_empty() {
                if let Ok(r) = crate::client::get(&self.admin_url("/ready")) {
                    if r.status == 200 {
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let listeners = crate::client::get(&self.admin_url("/listeners?format=json"))
            .expect("admin /listeners")
            .json();
        for status in listeners["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = status["name"].as_str().unwrap_or_default().to_string();
            if let Some(port) = status.pointer("/local_address/socket_address/port_value") {
                self.listeners
                    .insert(name, port.as_u64().unwrap_or(0) as u16);
            }
        }
        Ok(())
    }

    /// URL on the `gateway` listener.
    pub fn url(&self, path: &str) -> String {
        self.listener_url("gateway", path)
    }

    pub fn listener_url(&self, listener: &str, path: &str) -> String {
        let port = self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("no listener named {listener}: {:?}", self.listeners));
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn port(&self) -> u16 {
        self.listeners["gateway"]
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// `Some(status)` once the Envoy process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.try_wait()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid()).unwrap_or(0)
    }

    /// Runs `work` while sampling Envoy's resident memory every 10 ms; returns its result and
    /// how far the peak rose above the memory before it started.
    pub fn rss_growth_during<T>(&self, work: impl FnOnce() -> T) -> (T, u64) {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let baseline = self.rss_bytes();
        let peak = Arc::new(AtomicU64::new(baseline));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done, pid) = (peak.clone(), done.clone(), self.pid());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let result = work();
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        (
            result,
            peak.load(Ordering::Relaxed).saturating_sub(baseline),
        )
    }

    /// Replaces a plugin instance's ECDS resource the way a deployment would (see
    /// [`crate::ecds::swap`]); on refusal the error carries the Envoy log tail.
    pub fn swap(&self, instance: &str, resource: &Value) -> Result<Duration, String> {
        crate::ecds::swap(
            &self.admin_url(""),
            &self.dir.join("ecds"),
            instance,
            resource,
        )
        .map_err(|why| format!("{why}\n{}", self.log_tail(20)))
    }

    /// `/stats` as name → value, counters and gauges only.
    pub fn stats(&self) -> HashMap<String, u64> {
        let text = crate::client::get(&self.admin_url("/stats"))
            .expect("admin /stats")
            .text();
        text.lines()
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// A counter or gauge by its full `/stats` name; 0 when it does not exist yet.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// Sum of every counter whose name ends with `suffix` and contains all of `parts`.
    pub fn stat_sum(&self, parts: &[&str], suffix: &str) -> u64 {
        self.stats()
            .iter()
            .filter(|(name, _)| name.ends_with(suffix) && parts.iter().all(|p| name.contains(p)))
            .map(|(_, v)| v)
            .sum()
    }

    /// Waits until `check` holds on `/stats` (metrics are written when a response ends, which
    /// can be just after the client saw its last byte).
    pub fn wait_for_stats(&self, what: &str, check: impl Fn(&HashMap<String, u64>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.stats();
            if check(&stats) {
                return;
            }
            if Instant::now() > deadline {
                let ours: Vec<_> = stats
                    .iter()
                    .filter(|(k, _)| k.starts_with("wasmcustom"))
                    .collect();
                panic!("timed out waiting for {what}; wasm stats: {ours:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn prometheus(&self) -> String {
        crate::client::get(&self.admin_url("/stats/prometheus"))
            .expect("admin /stats/prometheus")
            .text()
    }

    /// The value of a Prometheus sample `name{labels…}` whose labels include all of `labels`.
    pub fn prometheus_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.prometheus();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
                let wanted = metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                wanted.then(|| value.parse().ok()).flatten()
            })
    }

    /// Waits until a Prometheus sample equals `expected` (histograms update at each stats flush).
    pub fn wait_prometheus_value(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.prometheus_value(name, labels);
            if value == Some(expected) {
                return;
            }
            if Instant::now() >= deadline {
                let samples: Vec<String> = self
                    .prometheus()
                    .lines()
                    .filter(|l| l.contains(name))
                    .map(str::to_string)
                    .collect();
                panic!("prometheus sample {name} {labels:?} is {value:?}, expected {expected}; samples: {samples:#?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Access log lines, parsed as JSON.
    pub fn access_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for at least `n` access log lines.
    pub fn wait_access_log(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.access_log();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for file in ["envoy.log", "stderr.log"] {
            let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            out.push_str(&format!(
                "--- {} (last {} lines) ---\n",
                self.dir.join(file).display(),
                all.len() - start
            ));
            for line in &all[start..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Prints the log tail if the current test panics while the returned guard is alive (for
    /// an Envoy shared by several tests, which outlives each of them).
    pub fn report_on_failure(&self) -> FailureReport<'_> {
        FailureReport { envoy: self }
    }

    /// Lines of the Envoy log that show a plugin crashed.
    pub fn wasm_panics(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("panicked at")
                    || l.contains("Function: proxy_on_") && l.contains("failed")
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(60));
        }
    }
}

pub struct FailureReport<'a> {
    envoy: &'a Envoy,
}

impl Drop for FailureReport<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.envoy.log_tail(60));
        }
    }
}
