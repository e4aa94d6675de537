//! Runs the mock OpenAI provider on its own: `mock-provider [--port N] [--key KEY]
//! [--chunks N] [--delay-ms N]`. Prints `listening on <addr>` once it accepts connections.

use e2e::{MockServer, OpenAiMock};
use std::time::Duration;

fn main() {
    let mut mock = OpenAiMock::default();
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--port" => {
                port = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--port takes a number"))
            }
            "--key" => mock.api_key = Some(value()),
            "--chunks" => {
                mock.chunks = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--chunks takes a number"))
            }
            "--delay-ms" => {
                mock.delay = Duration::from_millis(
                    value()
                        .parse()
                        .unwrap_or_else(|_| usage("--delay-ms takes a number")),
                )
            }
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    let server = MockServer::start_on(([127, 0, 0, 1], port).into(), mock);
    println!("listening on {}", server.addr);
    loop {
        std::thread::park();
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("mock-provider: {problem}\nusage: mock-provider [--port N] [--key KEY] [--chunks N] [--delay-ms N]");
    std::process::exit(2);
}
