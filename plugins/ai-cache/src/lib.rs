//! ai-cache: answers repeated (exact layer) and paraphrased (semantic layer) chat questions
//! from a cache instead of the model, streams included, and stores the answers of misses as
//! they pass.
//!
//! [`stage`] is the plugin as a stage of the runner, over the pure modules: [`key`] (what a
//! request is cached under), [`local`] and [`vectors`] (the stores in shared data),
//! [`embedding`] and [`chroma`] (the services), [`replay`] (a hit) and [`capture`] (a miss's
//! answer); [`worker`] keeps what one worker's requests share.

pub mod canonical;
pub mod capture;
pub mod chroma;
pub mod config;
pub mod embedding;
pub mod entry;
pub mod key;
pub mod local;
pub mod replay;
pub mod stage;
pub mod vectors;
pub mod worker;

aigw_shared::runner_main!(|| vec![Box::new(stage::Cache::default()) as _]);
