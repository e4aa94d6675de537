//! Runs a mock provider on its own: `mock-provider [--provider openai|anthropic|azure]
//! [--port N] [--key KEY] [--chunks N] [--delay-ms N] [--accept-bearer]`. Prints
//! `listening on <addr>` once it accepts connections.
//!
//! `--accept-bearer` (Anthropic only) also takes the key from `Authorization: Bearer`, which is
//! how the official Anthropic Python SDK 2.x sends `api_key`.

use e2e::{AnthropicMock, AzureMock, MockServer, OpenAiMock};
use std::time::Duration;

const USAGE: &str = "usage: mock-provider [--provider openai|anthropic|azure] [--port N] [--key KEY] [--chunks N] [--delay-ms N] [--accept-bearer]";

#[derive(Default)]
struct Settings {
    provider: Option<String>,
    port: u16,
    key: Option<String>,
    chunks: Option<usize>,
    delay: Option<Duration>,
    accept_bearer: bool,
}

fn main() {
    let settings = parse_args();
    let bind = ([127, 0, 0, 1], settings.port).into();
    let server = match settings.provider.as_deref().unwrap_or("openai") {
        "openai" => {
            let mut mock = OpenAiMock::default();
            mock.api_key = settings.key.clone();
            mock.chunks = settings.chunks.unwrap_or(mock.chunks);
            mock.delay = settings.delay.unwrap_or(mock.delay);
            MockServer::start_on(bind, mock)
        }
        "anthropic" => {
            let mut mock = AnthropicMock::default();
            mock.api_key = settings.key.clone();
            mock.accept_bearer = settings.accept_bearer;
            mock.chunks = settings.chunks.unwrap_or(mock.chunks);
            mock.delay = settings.delay.unwrap_or(mock.delay);
            MockServer::start_on(bind, mock)
        }
        "azure" => {
            let mut mock = AzureMock::default();
            mock.api_key = settings.key.clone();
            mock.chunks = settings.chunks.unwrap_or(mock.chunks);
            mock.delay = settings.delay.unwrap_or(mock.delay);
            MockServer::start_on(bind, mock)
        }
        other => usage(&format!("unknown provider {other}")),
    };
    println!("listening on {}", server.addr);
    loop {
        std::thread::park();
    }
}

fn parse_args() -> Settings {
    let mut settings = Settings::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |text: String, flag: &str| -> u64 {
            text.parse()
                .unwrap_or_else(|_| usage(&format!("{flag} takes a number")))
        };
        match flag.as_str() {
            "--provider" => settings.provider = Some(value()),
            "--port" => {
                settings.port = u16::try_from(number(value(), "--port"))
                    .unwrap_or_else(|_| usage("--port takes a port number"))
            }
            "--key" => settings.key = Some(value()),
            "--chunks" => settings.chunks = Some(number(value(), "--chunks") as usize),
            "--delay-ms" => {
                settings.delay = Some(Duration::from_millis(number(value(), "--delay-ms")))
            }
            "--accept-bearer" => settings.accept_bearer = true,
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    settings
}

fn usage(problem: &str) -> ! {
    eprintln!("mock-provider: {problem}\n{USAGE}");
    std::process::exit(2);
}
