//! `make bench`: figures for bare Envoy and Envoy with the plugins, on the same mock provider,
//! in one run. Configurations are measured in interleaved rounds and the median round is
//! reported, so a noisy moment on the machine hits every configuration alike.
//!
//! Non-streaming load comes from wrk (`e2e/bench/chat.lua`, one thread); streaming time to first
//! byte is measured by sequential requests through the harness client. Envoy runs one worker:
//! on a 2-core machine shared with the load generator and the mock, that makes Envoy's CPU cost
//! per request decide the figures rather than how the cores happen to be shared.
//!
//! `BENCH_SECTIONS=suite,…` runs only the named sections.

mod cache;
mod content_safety;
mod fallback;
mod peers;
mod per_route;
mod ratelimit;
mod safety_matching;
mod suite;

use e2e::bench::Plan;

/// A named part of the benchmark; each plugin's own measurements are one.
type Section = (&'static str, fn(&Plan));

fn main() {
    let plan = Plan::from_env();
    let sections: Vec<Section> = vec![
        ("suite", suite::run),
        ("per-route", per_route::run),
        ("fallback", fallback::run),
        ("cache", cache::run),
        ("content-safety", content_safety::run),
        ("safety-matching", safety_matching::run),
        ("ratelimit", ratelimit::run),
    ];
    let only = std::env::var("BENCH_SECTIONS").ok();
    for (name, run) in sections {
        if only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
        {
            run(&plan);
            println!();
        }
    }
}
