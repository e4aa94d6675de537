//! Measuring for `make bench`: load with wrk, time to first byte, medians and percentiles.
//! Benchmarks print figures (ratios against bare Envoy in the same run); they never fail on speed.

use serde_json::Value;
use std::process::Command;

/// Rounds, seconds per wrk run and streams per round; `BENCH_ROUNDS`, `BENCH_SECONDS` and
/// `BENCH_STREAMS` shorten a run while working on performance.
pub struct Plan {
    pub rounds: usize,
    pub seconds: u32,
    pub streams: usize,
}

impl Plan {
    pub fn from_env() -> Plan {
        let get = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Plan {
            rounds: get("BENCH_ROUNDS", 3).max(1),
            seconds: get("BENCH_SECONDS", 5).max(1) as u32,
            streams: get("BENCH_STREAMS", 100).max(1),
        }
    }
}

/// How benchmarks run Envoy: one worker, so that on a 2-core machine shared with the load
/// generator and the mock, Envoy's CPU cost per request decides the figures; quiet logs.
pub fn envoy_options() -> crate::EnvoyOptions {
    crate::EnvoyOptions {
        concurrency: 1,
        log_level: "warning",
        work_dir: None,
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failures: u64,
}

/// Runs wrk with `e2e/bench/chat.lua` (a chat completion, a new question each time) against
/// `url`.
pub fn wrk(url: &str, connections: u32, seconds: u32) -> Load {
    wrk_with(url, connections, seconds, &[])
}

/// [`wrk`] with extra request headers.
pub fn wrk_with(url: &str, connections: u32, seconds: u32, headers: &[(String, String)]) -> Load {
    let script = crate::paths::repo_root().join("e2e/bench/chat.lua");
    let extra: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let output = Command::new("wrk")
        .env("BENCH_HEADERS", extra.join("|"))
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
        ])
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("wrk: {e} (make bench installs it)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no figures:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let v: Value = serde_json::from_str(line).expect("wrk figures");
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Load {
        // Answers that are errors are not throughput: only 2xx count.
        rps: (n("requests") - n("non_2xx")).max(0.0) / (n("duration_us") / 1e6),
        p50_ms: n("p50_us") / 1000.0,
        p99_ms: n("p99_us") / 1000.0,
        failures: (n("socket_errors") + n("non_2xx")) as u64,
    }
}

/// The run with the median throughput.
pub fn median_by_rps(loads: &[Load]) -> Load {
    let mut sorted = loads.to_vec();
    sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    sorted[sorted.len() / 2]
}

pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let index = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[index]
}

pub fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs wrk against each `(name, url)` in interleaved rounds and prints a table of the median
/// rounds, with throughput as a ratio of the target named `baseline`.
pub fn print_load_table(plan: &Plan, targets: &[(&str, String)], baseline: &str, connections: u32) {
    let mut rounds: Vec<Vec<Load>> = vec![Vec::new(); targets.len()];
    for _ in 0..plan.rounds {
        for (i, (_, url)) in targets.iter().enumerate() {
            rounds[i].push(wrk(url, connections, plan.seconds));
        }
    }
    let medians: Vec<Load> = rounds.iter().map(|r| median_by_rps(r)).collect();
    let base_rps = targets
        .iter()
        .zip(&medians)
        .find(|((name, _), _)| *name == baseline)
        .map_or(f64::NAN, |(_, load)| load.rps);
    println!(
        "non-streaming chat completions, {connections} connections, {} s per run",
        plan.seconds
    );
    println!(
        "  {:<40} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "configuration", "req/s", "p50 ms", "p99 ms", "vs bare", "errors"
    );
    for ((name, _), load) in targets.iter().zip(&medians) {
        println!(
            "  {:<40} {:>10.0} {:>9.2} {:>9.2} {:>8.2}x {:>8}",
            name,
            load.rps,
            load.p50_ms,
            load.p99_ms,
            load.rps / base_rps,
            load.failures
        );
    }
    println!();
}
