//! `make reload [PLUGIN=<crate or filter>]`: swaps the plugins of the gateway `make run` started
//! for their current build and config (`envoy-configs/demo/*.json`), without a restart. Requests
//! in flight finish on the old plugin; Envoy refuses a bad module or config and keeps the old one.

fn main() {
    let plugin = std::env::args().nth(1).filter(|p| !p.is_empty());
    let run_dir = e2e::paths::repo_root().join(".run");
    let settings = e2e::demo::DemoSettings::of_running_demo(&run_dir).unwrap_or_else(|e| {
        eprintln!("make reload: {e}; start the gateway with `make run` first");
        std::process::exit(2);
    });
    match e2e::demo::reload(&settings, plugin.as_deref()) {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(lines) => {
            lines.iter().for_each(|l| eprintln!("{l}"));
            eprintln!(
                "make reload: not every plugin was swapped (see {}/envoy.log)",
                run_dir.display()
            );
            std::process::exit(1);
        }
    }
}
