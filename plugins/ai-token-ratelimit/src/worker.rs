//! What the requests of one worker share: lease names, the Redis settlements waiting for the
//! next tick and those in flight, and the metric series the plugin counts in.

use crate::matcher::Matched;
use aigw_shared::callout::Outcome;
use aigw_shared::metrics::series_prefix;
use aigw_shared::quota::ledger::{Adjustment, Held};
use aigw_shared::quota::redis::RedisConfig;
use aigw_shared::quota::redis::Settlement;
use aigw_shared::stage::Effects;
use aigw_shared::webdis;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;

pub const PLUGIN: &str = "ai-token-ratelimit";

pub struct Worker {
    /// Redis settlements waiting for the next tick, per Webdis cluster (every tick sends them
    /// all, so this holds at most one tick's worth of finished requests).
    pending: Vec<(Rc<RedisConfig>, Settlement)>,
    /// Settlement callouts in flight: tag → corrections it carries.
    settling: HashMap<u32, usize>,
    next_tag: u32,
    leases: u64,
    random: RandomState,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            pending: Vec::new(),
            settling: HashMap::new(),
            next_tag: 0,
            leases: 0,
            random: RandomState::new(),
        }
    }
}

impl Worker {
    /// A concurrency lease name, unique enough among the requests in flight on one counter.
    pub fn lease_id(&mut self, now_ms: u64) -> u32 {
        self.leases += 1;
        self.random.hash_one((self.leases, now_ms)) as u32
    }

    /// Keeps a finished request's corrections and lease releases for the next tick.
    pub fn queue(
        &mut self,
        config: &Rc<RedisConfig>,
        held: &Held,
        adjustments: &[Adjustment],
        now_ms: u64,
    ) {
        if adjustments.is_empty() && held.slots.is_empty() {
            return;
        }
        let index = match self.pending.iter().position(|(c, _)| c == config) {
            Some(index) => index,
            None => {
                self.pending.push((config.clone(), Settlement::default()));
                self.pending.len() - 1
            }
        };
        self.pending[index]
            .1
            .add(adjustments, &held.slots, held.lease.id, now_ms);
    }

    /// Sends the settlements gathered since the last tick, one `EVAL` per Webdis cluster.
    pub fn send_settlements(&mut self, effects: &mut Effects) {
        for (config, settlement) in std::mem::take(&mut self.pending) {
            let tag = self.next_tag;
            self.next_tag = self.next_tag.wrapping_add(1);
            self.settling.insert(tag, settlement.len());
            effects.call(tag, settlement.into_callout(&config));
        }
    }

    /// The answer to the settlement callout `tag`.
    pub fn settled(&mut self, effects: &mut Effects, tag: u32, outcome: Outcome) {
        let corrections = self.settling.remove(&tag).unwrap_or(0);
        if let Err(err) = outcome
            .success()
            .and_then(|body| webdis::reply("EVAL", body))
        {
            log::warn!("{PLUGIN}: {corrections} Redis corrections lost: {err}");
            count_failure(effects);
        }
    }
}

/// Counts `n` in the series of `rule`.
pub fn count(effects: &mut Effects, rule: &str, metric: &'static str, n: u64) {
    effects.count(&series_prefix(&[("token_ratelimit_rule", rule)]), metric, n);
}

pub fn count_all(effects: &mut Effects, limits: &[Matched], metric: &'static str, n: u64) {
    for m in limits {
        count(effects, &m.rule, metric, n);
    }
}

/// A settlement the store did not take.
pub fn count_failure(effects: &mut Effects) {
    effects.count("token_ratelimit.", "settle_failure", 1);
}
