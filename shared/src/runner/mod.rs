//! The only proxy-wasm glue: a root context that configures the plugins, runs their ticks on
//! one clock and flushes their metrics, and an HTTP context that reads each thing once (the
//! request body, the response head and chunks) and runs the stages on it, in order on the way
//! in and in reverse on the way out, applying the effects they return.
//!
//! A plugin's `lib.rs` is one line: `aigw_shared::runner_main!(|| vec![Box::new(MyPlugin) as _]);`.

mod env;
mod root;
mod stream;

pub use root::{Root, Suite};

/// The `main` of a plugin module: a runner over the plugins `$make` returns, in chain order.
/// Nothing when the crate is built with its `suite` feature: inside the suite module, which
/// has its own `main`.
#[macro_export]
macro_rules! runner_main {
    ($make:expr) => {
        #[cfg(not(feature = "suite"))]
        proxy_wasm::main! {{
            proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
            proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
                Box::new($crate::runner::Root::new($make()))
            });
        }}
    };
}

/// The `main` of the suite module: a runner whose configuration lists the stages of `$suite`
/// (a [`Suite`]) to run.
#[macro_export]
macro_rules! suite_main {
    ($suite:expr) => {
        proxy_wasm::main! {{
            proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
            proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
                Box::new($crate::runner::Root::suite($suite))
            });
        }}
    };
}
