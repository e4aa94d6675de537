//! ai-content-safety: checks prompts before the provider is called and answers before the
//! client sees them (streamed answers in held windows), with local deny lists and moderation
//! services; masks sensitive data in prompts and restores it in answers.
//!
//! [`stage`] is the plugin as a stage of the runner, over the pure modules: [`hold`] (stream
//! windows), [`check`] (callout results), [`local`], [`services`], [`mask`] and [`restore`].

pub mod check;
pub mod config;
pub mod deny;
pub mod extract;
pub mod fold;
pub mod hold;
pub mod injection;
pub mod lanes;
pub mod local;
pub mod mask;
pub mod record;
pub mod restore;
pub mod services;
pub mod stage;
pub mod verdict;

aigw_shared::runner_main!(|| vec![Box::new(stage::ContentSafety::default()) as _]);
