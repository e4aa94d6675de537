//! A test-only plugin (never shipped): it panics when a request carries `x-panic: request`,
//! and otherwise marks every answer with `x-test-plugin-requests: <n>`, the number of requests
//! this VM has seen, so a test can tell a fresh VM from the one that panicked, and a request
//! that went around the plugin from one that passed through it.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use std::cell::Cell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    seen: Rc<Cell<u64>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            seen: self.seen.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    seen: Rc<Cell<u64>>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.seen.set(self.seen.get() + 1);
        let asked = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-panic");
        if matches!(asked, Ok(Some(ref v)) if v == "request") {
            panic!("panic-on-demand: the request asked for a panic");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let seen = self.seen.get().to_string();
        let _ = hostcalls::set_map_value(
            MapType::HttpResponseHeaders,
            "x-test-plugin-requests",
            Some(&seen),
        );
        Action::Continue
    }
}
