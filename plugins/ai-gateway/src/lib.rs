//! ai-gateway: the plugins of the suite as stages of one runner in one filter. Its
//! configuration lists the stages in chain order, each with the JSON its own plugin takes.

use aigw_shared::runner::Suite;
use aigw_shared::stage::Plugin;

/// The stages this module has.
pub const STAGES: &[&str] = &[
    "ai-statistics",
    "ai-token-ratelimit",
    "ai-content-safety",
    "ai-cache",
    "ai-fallback",
    "ai-proxy",
];

/// The plugin of a stage, by its plugin's name.
pub fn make(stage: &str) -> Option<Box<dyn Plugin>> {
    Some(match stage {
        "ai-statistics" => Box::new(ai_statistics::stage::Statistics::default()),
        "ai-token-ratelimit" => Box::new(ai_token_ratelimit::stage::RateLimit::default()),
        "ai-content-safety" => Box::new(ai_content_safety::stage::ContentSafety::default()),
        "ai-cache" => Box::new(ai_cache::stage::Cache::default()),
        "ai-fallback" => Box::new(ai_fallback::stage::Fallback::default()),
        "ai-proxy" => Box::new(ai_proxy::stage::Proxy::default()),
        _ => return None,
    })
}

aigw_shared::suite_main!(Suite {
    name: "ai-gateway",
    stages: STAGES,
    make,
});
