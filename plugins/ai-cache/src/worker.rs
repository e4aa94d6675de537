//! What the requests of one worker share: the stores that wait for the plugin's tick (a
//! stream's own callouts are cancelled when it ends, so a miss's answer is sent to Redis or
//! Chroma from the root), the stores in flight, and each store prefix's decoded vector pages.

use crate::stage::metric::{CACHE_ERROR, STORED};
use crate::vectors::VectorIndex;
use aigw_shared::callout::{Callout, Outcome};
use aigw_shared::stage::Effects;
use std::cell::RefCell;
use std::collections::HashMap;

/// Stores waiting for the next tick; past this they are dropped (and counted).
pub const MAX_QUEUED_STORES: usize = 1024;

/// A store the root sends on its next tick.
pub struct Job {
    pub call: Callout,
    /// The metric counted when it fails (and `STORED` when an exact store succeeds).
    pub failure_metric: &'static str,
    pub series: String,
}

#[derive(Default)]
pub struct Worker {
    jobs: RefCell<Vec<Job>>,
    /// Decoded vector pages, per store prefix.
    pub vector_indexes: RefCell<HashMap<String, VectorIndex>>,
}

impl Worker {
    /// Queues a store for the next tick; `false` when the queue is full.
    pub fn queue(&self, job: Job) -> bool {
        let mut jobs = self.jobs.borrow_mut();
        let room = jobs.len() < MAX_QUEUED_STORES;
        if room {
            jobs.push(job);
        }
        room
    }

    fn take_jobs(&self) -> Vec<Job> {
        std::mem::take(&mut *self.jobs.borrow_mut())
    }
}

/// The stores sent from the root and not answered yet: tag → (failure metric, series).
#[derive(Default)]
pub struct InFlight {
    stores: HashMap<u32, (&'static str, String)>,
    next_tag: u32,
}

impl InFlight {
    /// Sends the stores `worker` queued.
    pub fn send(&mut self, worker: &Worker, effects: &mut Effects) {
        for job in worker.take_jobs() {
            let tag = self.next_tag;
            self.next_tag = self.next_tag.wrapping_add(1);
            self.stores.insert(tag, (job.failure_metric, job.series));
            effects.call(tag, job.call);
        }
    }

    /// A store's answer (a refused dispatch comes here as unreachable).
    pub fn answered(&mut self, effects: &mut Effects, tag: u32, outcome: &Outcome) {
        let Some((failure_metric, series)) = self.stores.remove(&tag) else {
            return;
        };
        match outcome.success() {
            Ok(_) if failure_metric == CACHE_ERROR => effects.count(&series, STORED, 1),
            Ok(_) => {}
            Err(why) => {
                log::warn!("ai-cache: storing failed: {why}");
                effects.count(&series, failure_metric, 1);
            }
        }
    }
}
