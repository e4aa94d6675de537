//! ai-fallback's configuration parser, inside the `_rules_` layer, on any JSON: a config or an
//! error naming the path, never a panic; the parsed rules are then looked up.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    aigw_fuzz::check_config(data, ai_fallback::config::Config::from_map);
});
