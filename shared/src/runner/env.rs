//! The stages' view of the proxy, and the effects applied to it.

use crate::host::{self, Metrics};
use crate::stage::{Effects, Env, MetricKind};
use crate::store::{Store, WriteError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// The proxy as the stage being run sees it.
pub struct HostEnv;

/// Envoy shared data.
pub struct HostStore;

impl Env for HostEnv {
    fn now_ms(&self) -> u64 {
        host::now_ms()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        host::property(path)
    }

    fn request_header(&self, name: &str) -> Option<String> {
        host::request_header(name)
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        host::request_headers()
    }

    fn store(&self) -> &dyn Store {
        &HostStore
    }

    fn callout_header(&self, name: &str) -> Option<String> {
        host::callout_header(name)
    }
}

impl Store for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        host::shared_get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(WriteError::CasMismatch),
            Err(status) => Err(WriteError::Failed(format!("{status:?}"))),
        }
    }
}

/// Applies what a stage or plugin asked for, except callouts (the caller dispatches those,
/// as it keeps their tokens). `plugin` names the asker in logs.
pub fn apply(plugin: &str, effects: &mut Effects, metrics: &mut Metrics) {
    for (name, value) in effects.request_headers.drain(..) {
        host::set_request_header(&name, value.as_deref());
    }
    for (name, value) in effects.response_headers.drain(..) {
        host::set_response_header(&name, value.as_deref());
    }
    for (name, value) in effects.filter_state.drain(..) {
        if let Err(status) = host::set_filter_state(&name, &value) {
            log::debug!("{plugin}: could not set filter state {name}: host status {status}");
        }
    }
    for sample in effects.metrics.drain(..) {
        if let Some(series) = metrics.series(&sample.series) {
            match sample.kind {
                MetricKind::Counter => series.counter(sample.metric, sample.value),
                MetricKind::Histogram => series.histogram(sample.metric, sample.value),
            }
        }
    }
}
