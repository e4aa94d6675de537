//! `make run`: the demo gateway in the foreground until Ctrl-C, which stops everything it started.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            request_stop as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            request_stop as *const () as libc::sighandler_t,
        );
    }
    let settings = e2e::demo::DemoSettings::from_env().unwrap_or_else(|e| fail(&e));
    let demo = e2e::demo::start(settings).unwrap_or_else(|e| {
        fail(&format!(
            "{e}\nIs the port taken? Choose others: PORT=10080 ADMIN_PORT=9902 make run"
        ))
    });
    let url = demo.envoy.url("");
    let provider = demo.settings.provider().1;
    println!(
        r#"
AI gateway running: {url}   (Ctrl-C stops it)
  provider:  {provider}
  metrics:   {admin}/stats/prometheus
  logs:      {run}/access.log, {run}/envoy.log

Try:
  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello!"}}]}}'
  curl -sN {url}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"gpt-4o-mini","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"Hello!"}}]}}'
  curl -s {url}/v1/messages -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
    -d '{{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{{"role":"user","content":"Hello!"}}]}}'
  curl -s {admin}/stats/prometheus | grep token

SDKs: OpenAI(base_url="{url}/v1"), Anthropic(base_url="{url}") — any API key.
"#,
        admin = demo.envoy.admin_url(""),
        run = demo.settings.run_dir.display(),
    );
    let mut demo = demo;
    while !STOP.load(Ordering::SeqCst) {
        if let Some(status) = demo.envoy.exited() {
            eprintln!("Envoy exited ({status}).\n{}", demo.envoy.log_tail(30));
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping the gateway");
}

fn fail(message: &str) -> ! {
    eprintln!("make run: {message}");
    std::process::exit(1);
}
