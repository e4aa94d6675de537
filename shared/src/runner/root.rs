//! The root context: configuration, the one clock, callouts asked for on a tick.

use super::env::{apply, HostEnv};
use super::stream::{Handle, Stream, StreamRef};
use crate::callout::Outcome;
use crate::chain::parse_chain;
use crate::host::{self, Metrics, METRICS_FLUSH_PERIOD};
use crate::stage::{Configured, Effects, Plugin};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// A plugin and what the runner keeps for it.
pub struct Slot {
    pub plugin: RefCell<Box<dyn Plugin>>,
    pub metrics: RefCell<Metrics>,
    tick: Cell<Option<Duration>>,
    next_tick_ms: Cell<u64>,
}

impl Slot {
    fn new(plugin: Box<dyn Plugin>) -> Slot {
        Slot {
            metrics: RefCell::new(Metrics::new(plugin.metrics_owner(), 0)),
            plugin: RefCell::new(plugin),
            tick: Cell::new(None),
            next_tick_ms: Cell::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.plugin.borrow().name()
    }
}

/// A module whose configuration lists its stages (the suite).
pub struct Suite {
    /// The module's name in logs.
    pub name: &'static str,
    /// The stages it has.
    pub stages: &'static [&'static str],
    /// Makes the plugin of a stage.
    pub make: fn(&str) -> Option<Box<dyn Plugin>>,
}

/// What the root and the streams of one worker share.
pub struct Worker {
    pub slots: Vec<Slot>,
    /// Streams a stage holds with a wake-up time, by context id, for the tick.
    pub waking: RefCell<HashMap<u32, StreamRef>>,
    /// Callouts a stream's stage sent while the root acted for it (a wake-up, or the answer
    /// to such a callout): they answer to the root. Token → the stream.
    pub stream_callouts: RefCell<HashMap<u32, (u32, StreamRef)>>,
}

impl Worker {
    fn new(slots: Vec<Slot>) -> Worker {
        Worker {
            slots,
            waking: RefCell::default(),
            stream_callouts: RefCell::default(),
        }
    }
}

pub struct Root {
    worker: Rc<Worker>,
    /// `None`: the plugins given at start, each reading the whole configuration.
    suite: Option<Suite>,
    configured: bool,
    /// Callouts asked for on a tick: token → (slot, the plugin's tag).
    callouts: HashMap<u32, (usize, u32)>,
    next_flush_ms: u64,
}

impl Root {
    /// A runner over `plugins`, in chain order.
    pub fn new(plugins: Vec<Box<dyn Plugin>>) -> Root {
        let slots = plugins.into_iter().map(Slot::new).collect();
        Root {
            worker: Rc::new(Worker::new(slots)),
            suite: None,
            configured: false,
            callouts: HashMap::new(),
            next_flush_ms: 0,
        }
    }

    /// A runner whose configuration lists the stages of `suite` to run, in chain order.
    pub fn suite(suite: Suite) -> Root {
        let mut root = Root::new(Vec::new());
        root.suite = Some(suite);
        root
    }

    /// Each slot with the configuration its plugin gets; for a suite, new slots for the
    /// stages its configuration lists.
    fn read_configuration(&mut self) -> Option<Vec<serde_json::Value>> {
        let Some(suite) = self.suite.as_ref() else {
            return self
                .worker
                .slots
                .iter()
                .map(|slot| {
                    let plugin = slot.plugin.borrow();
                    host::plugin_configuration(plugin.name(), plugin.ignored_keys())
                })
                .collect();
        };
        let json = host::plugin_configuration(suite.name, &[])?;
        let chain = match parse_chain(&json, suite.stages) {
            Ok(chain) => chain,
            Err(err) => {
                log::error!("{}: invalid configuration: {err}", suite.name);
                return None;
            }
        };
        let mut slots = Vec::with_capacity(chain.len());
        let mut configs = Vec::with_capacity(chain.len());
        for mut entry in chain {
            let plugin = (suite.make)(&entry.stage)?;
            for (key, why) in
                crate::rules::strip_ignored_keys(&mut entry.config, plugin.ignored_keys())
            {
                log::warn!("{}: config key `{key}` is ignored: {why}", plugin.name());
            }
            slots.push(Slot::new(plugin));
            configs.push(entry.config);
        }
        self.flush();
        self.callouts.clear();
        self.worker = Rc::new(Worker::new(slots));
        Some(configs)
    }

    fn configure_slot(slot: &Slot, json: &serde_json::Value) -> Option<Configured> {
        let mut plugin = slot.plugin.borrow_mut();
        let name = plugin.name();
        match plugin.configure(json) {
            Ok(configured) => {
                log::info!("{name}: configured with {} rules", configured.rules);
                plugin.on_configured(&HostEnv);
                Some(configured)
            }
            Err(err) => {
                log::error!("{name}: invalid configuration: {err}");
                None
            }
        }
    }

    fn flush(&self) {
        for slot in &self.worker.slots {
            slot.metrics.borrow_mut().flush();
        }
    }

    /// Dispatches the callouts of `effects` for the plugin in `slot` and applies the rest; a
    /// callout Envoy refuses at once is answered at once as unreachable.
    fn settle(&mut self, index: usize, mut effects: Effects) {
        loop {
            let slot = &self.worker.slots[index];
            apply(slot.name(), &mut effects, &mut slot.metrics.borrow_mut());
            let mut refused = Vec::new();
            for (tag, callout) in std::mem::take(&mut effects.callouts) {
                match host::dispatch(&callout) {
                    Ok(token) => {
                        self.callouts.insert(token, (index, tag));
                    }
                    Err(why) => refused.push((tag, why)),
                }
            }
            if refused.is_empty() {
                return;
            }
            let mut plugin = slot.plugin.borrow_mut();
            for (tag, why) in refused {
                plugin.on_callout(&HostEnv, &mut effects, tag, Outcome::Unreachable(why));
            }
        }
    }
}

impl Root {
    /// Wakes the streams whose holding stage's time has come.
    fn wake_streams(&self, now: u64) {
        let streams: Vec<(u32, Rc<RefCell<Stream>>)> = {
            let mut waking = self.worker.waking.borrow_mut();
            waking.retain(|_, stream| stream.strong_count() > 0);
            waking
                .iter()
                .filter_map(|(id, stream)| Some((*id, stream.upgrade()?)))
                .collect()
        };
        for (id, stream) in streams {
            let awake = Stream::for_root(&stream, id, |s| s.wake(now));
            if awake == Some(false) {
                self.worker.waking.borrow_mut().remove(&id);
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        let Some((index, tag)) = self.callouts.remove(&token) else {
            let stream = self.worker.stream_callouts.borrow_mut().remove(&token);
            if let Some((id, stream)) = stream {
                if let Some(stream) = stream.upgrade() {
                    Stream::for_root(&stream, id, |s| {
                        s.on_http_call_response(token, headers, body_size, trailers)
                    });
                }
            }
            return;
        };
        let outcome = host::callout_response(body_size);
        let mut effects = Effects::default();
        self.worker.slots[index].plugin.borrow_mut().on_callout(
            &HostEnv,
            &mut effects,
            tag,
            outcome,
        );
        self.settle(index, effects);
    }

    /// The plugin is being replaced (a swap) or Envoy stops: write the counters summed since
    /// the last flush, or they would be lost with the VM.
    fn on_done(&mut self) -> bool {
        for index in 0..self.worker.slots.len() {
            let mut effects = Effects::default();
            self.worker.slots[index]
                .plugin
                .borrow_mut()
                .on_stop(&HostEnv, &mut effects);
            self.settle(index, effects);
        }
        self.flush();
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let mut period = METRICS_FLUSH_PERIOD;
        let Some(configs) = self.read_configuration() else {
            return false;
        };
        for (slot, json) in self.worker.slots.iter().zip(&configs) {
            let Some(configured) = Root::configure_slot(slot, json) else {
                return false;
            };
            let mut metrics = slot.metrics.borrow_mut();
            metrics.flush();
            *metrics = Metrics::new(
                slot.plugin.borrow().metrics_owner(),
                configured.max_metric_series,
            );
            slot.tick.set(configured.tick);
            if let Some(tick) = configured.tick {
                period = period.min(tick);
            }
        }
        self.configured = true;
        let _ = hostcalls::set_tick_period(period);
        true
    }

    fn on_tick(&mut self) {
        let now = host::now_ms();
        for index in 0..self.worker.slots.len() {
            let slot = &self.worker.slots[index];
            let Some(tick) = slot.tick.get() else {
                continue;
            };
            if now < slot.next_tick_ms.get() {
                continue;
            }
            slot.next_tick_ms.set(now + tick.as_millis() as u64);
            let mut effects = Effects::default();
            slot.plugin.borrow_mut().on_tick(&HostEnv, &mut effects);
            self.settle(index, effects);
        }
        self.wake_streams(now);
        if now >= self.next_flush_ms {
            self.next_flush_ms = now + METRICS_FLUSH_PERIOD.as_millis() as u64;
            self.flush();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.configured.then(|| {
            Box::new(Handle::new(Stream::new(self.worker.clone(), context_id)))
                as Box<dyn HttpContext>
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
