//! The local store: counters in Envoy shared data, seen by every worker of one Envoy, updated
//! with compare-and-swap.
//!
//! Counters live in a fixed set of slots (shared-data keys created when the plugin starts), each
//! holding the counters whose name hashes to it. Envoy cannot create a key conditionally (a
//! write to a missing key ignores the CAS token), so two workers creating the same key at once
//! could lose an update; slots exist before traffic, so every update is a real CAS. Shared data
//! also cannot delete keys: counters of windows that are over are dropped from their slot on
//! the next write, so memory follows the keys active in the longest window, not every key ever
//! seen.

use crate::quota::ledger::{Adjustment, Ask, Held, Lease, Limited, Verdict, WindowState};
use crate::quota::window::{Kind, Window};
use crate::quota::{fnv1a, Matched};
use crate::store::Store;

pub const SLOTS: u64 = 256;
const VERSION: u8 = 1;

/// Turns a slot's current value into the one to write (`None`: write nothing).
pub type Update<'a> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'a;

/// Shared data as the local store needs it: one CAS-protected read-modify-write.
pub trait SharedData {
    /// Calls `update` with the current value (retrying on CAS conflicts) and writes what it
    /// returns; `None` from `update` writes nothing. `false` when the store failed.
    fn update(&mut self, key: &str, update: &mut Update) -> bool;
}

/// Envoy shared data, as the runner's store reaches it.
impl SharedData for &dyn Store {
    fn update(&mut self, key: &str, update: &mut Update) -> bool {
        crate::store::update(*self, key, update).is_some()
    }
}

pub fn slot_key(id: &str) -> String {
    slot_name(fnv1a(id.as_bytes()) % SLOTS)
}

/// The slots' names (from the quota plugin that had them first: counters survive an update).
fn slot_name(index: u64) -> String {
    format!("aigw.ai-token-ratelimit.slot.{index}")
}

/// Every slot, to create before traffic.
pub fn slot_keys() -> impl Iterator<Item = String> {
    (0..SLOTS).map(slot_name)
}

/// The value of a new slot.
pub fn empty_slot() -> Vec<u8> {
    Slot::default().encode()
}

/// Reserves `ask` in every slot its limits live in, all or nothing. `Err` when shared data
/// failed (what was reserved before the failure is given back).
pub fn reserve(store: &mut dyn SharedData, ask: &Ask) -> Result<Verdict, String> {
    let mut done: Vec<(String, Vec<usize>)> = Vec::new();
    let mut states = Vec::new();
    for (key, members) in by_slot(ask.limits.iter().map(|m| m.id.as_str())) {
        let mut outcome = None;
        let written = store.update(&key, &mut |current| {
            let mut slot = Slot::decode(current.unwrap_or_default());
            slot.expire(ask.now_ms);
            let mut got = Vec::new();
            for &i in &members {
                match slot.check(&ask.limits[i], ask.tokens, ask.now_ms) {
                    Ok(s) => got.extend(s),
                    Err(limited) => {
                        outcome = Some(Err(Limited {
                            limit: i,
                            ..limited
                        }));
                        return None;
                    }
                }
            }
            for &i in &members {
                slot.reserve(&ask.limits[i], ask.tokens, ask.now_ms, ask.lease);
            }
            outcome = Some(Ok(got));
            Some(slot.encode())
        });
        match outcome {
            Some(Ok(got)) if written => {
                states.extend(got);
                done.push((key, members));
            }
            Some(Err(limited)) => {
                undo(store, ask, &done);
                return Ok(Verdict::Limited(limited));
            }
            _ => {
                undo(store, ask, &done);
                return Err("shared data update failed".into());
            }
        }
    }
    Ok(Verdict::Admitted(states))
}

/// Gives back what `ask` reserved in the slots of `done` (a later slot refused).
fn undo(store: &mut dyn SharedData, ask: &Ask, done: &[(String, Vec<usize>)]) {
    for (key, members) in done {
        store.update(key, &mut |current| {
            let mut slot = Slot::decode(current.unwrap_or_default());
            for &i in members {
                slot.undo(&ask.limits[i], ask.tokens, ask.now_ms, ask.lease);
            }
            Some(slot.encode())
        });
    }
}

/// Settles a finished request: token corrections and its concurrency slots given back.
pub fn settle(
    store: &mut dyn SharedData,
    held: &Held,
    adjustments: &[Adjustment],
    now_ms: u64,
) -> bool {
    let ids = adjustments
        .iter()
        .map(|a| a.id.as_str())
        .chain(held.slots.iter().map(String::as_str));
    let mut ok = true;
    for (key, _) in by_slot(ids) {
        ok &= store.update(&key, &mut |current| {
            let mut slot = Slot::decode(current.unwrap_or_default());
            slot.expire(now_ms);
            for a in adjustments.iter().filter(|a| slot_key(&a.id) == key) {
                slot.adjust(a);
            }
            for id in held.slots.iter().filter(|id| slot_key(id) == key) {
                slot.release(id, held.lease.id);
            }
            Some(slot.encode())
        });
    }
    ok
}

/// Slot keys in first-seen order, each with the indices of its members.
fn by_slot<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, id) in ids.enumerate() {
        let key = slot_key(id);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups
}

/// The counters of one slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Slot {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    counters: Vec<Counter>,
    /// Concurrency slots taken: lease id and when it lapses.
    leases: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counter {
    kind: Kind,
    period_secs: u64,
    start: u64,
    used: u64,
}

impl Counter {
    fn of(window: &Window) -> impl Fn(&&mut Counter) -> bool + '_ {
        move |c| c.kind == window.kind && c.period_secs == window.period_secs
    }
}

impl Slot {
    fn entry(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    fn entry_mut(&mut self, id: &str) -> &mut Entry {
        let index = match self.entries.iter().position(|e| e.id == id) {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    id: id.to_string(),
                    counters: Vec::new(),
                    leases: Vec::new(),
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[index]
    }

    /// What `window` of counter `id` has used in the window of `now_ms`.
    fn used(&self, id: &str, window: &Window, now_ms: u64) -> u64 {
        let start = window.start(now_ms);
        self.entry(id)
            .and_then(|e| {
                e.counters
                    .iter()
                    .find(|c| c.kind == window.kind && c.period_secs == window.period_secs)
            })
            .filter(|c| c.start == start)
            .map_or(0, |c| c.used)
    }

    /// Whether every window of `m` admits the request, and the states it would leave.
    pub fn check(
        &self,
        m: &Matched,
        tokens: u64,
        now_ms: u64,
    ) -> Result<Vec<WindowState>, Limited> {
        let mut states = Vec::with_capacity(m.limits.windows.len());
        for window in &m.limits.windows {
            let used = self.used(&m.id, window, now_ms);
            let amount = window.amount(tokens);
            if !window.admits(used, amount) {
                return Err(Limited {
                    limit: 0,
                    window: Some(*window),
                    used,
                    requested: amount,
                });
            }
            states.push(WindowState {
                window: *window,
                used: used + amount,
            });
        }
        if let Some(max) = m.limits.max_concurrent {
            let in_flight = self.entry(&m.id).map_or(0, |e| e.leases.len() as u64);
            if in_flight >= max {
                return Err(Limited {
                    limit: 0,
                    window: None,
                    used: in_flight,
                    requested: 1,
                });
            }
        }
        Ok(states)
    }

    pub fn reserve(&mut self, m: &Matched, tokens: u64, now_ms: u64, lease: Lease) {
        self.add(m, tokens, now_ms, true);
        if m.limits.max_concurrent.is_some() {
            self.entry_mut(&m.id)
                .leases
                .push((lease.id, lease.expires_ms));
        }
    }

    pub fn undo(&mut self, m: &Matched, tokens: u64, now_ms: u64, lease: Lease) {
        self.add(m, tokens, now_ms, false);
        self.release(&m.id, lease.id);
    }

    fn add(&mut self, m: &Matched, tokens: u64, now_ms: u64, reserve: bool) {
        let entry = self.entry_mut(&m.id);
        for window in &m.limits.windows {
            let start = window.start(now_ms);
            let amount = window.amount(tokens);
            let counter = match entry.counters.iter_mut().find(Counter::of(window)) {
                Some(c) => c,
                None => {
                    entry.counters.push(Counter {
                        kind: window.kind,
                        period_secs: window.period_secs,
                        start,
                        used: 0,
                    });
                    entry.counters.last_mut().expect("just pushed")
                }
            };
            if counter.start != start {
                *counter = Counter {
                    start,
                    used: 0,
                    ..*counter
                };
            }
            counter.used = if reserve {
                counter.used.saturating_add(amount)
            } else {
                counter.used.saturating_sub(amount)
            };
        }
    }

    pub fn adjust(&mut self, a: &Adjustment) {
        let entry = self.entry_mut(&a.id);
        match entry.counters.iter_mut().find(Counter::of(&a.window)) {
            Some(c) if c.start == a.start => {
                c.used = c.used.saturating_add_signed(a.delta);
            }
            Some(c) if a.delta > 0 => {
                *c = Counter {
                    start: a.start,
                    used: a.delta as u64,
                    ..*c
                };
            }
            None if a.delta > 0 => entry.counters.push(Counter {
                kind: a.window.kind,
                period_secs: a.window.period_secs,
                start: a.start,
                used: a.delta as u64,
            }),
            _ => {}
        }
    }

    pub fn release(&mut self, id: &str, lease: u32) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.id == id) {
            if let Some(i) = entry.leases.iter().position(|(l, _)| *l == lease) {
                entry.leases.swap_remove(i);
            }
        }
    }

    /// Drops windows that are over, lapsed leases, and counters left with neither.
    pub fn expire(&mut self, now_ms: u64) {
        let now = now_ms / 1000;
        for entry in &mut self.entries {
            entry.counters.retain(|c| c.start + c.period_secs > now);
            entry.leases.retain(|(_, expires)| *expires > now_ms);
        }
        self.entries
            .retain(|e| !(e.counters.is_empty() && e.leases.is_empty()));
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend((self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend((e.id.len() as u16).to_le_bytes());
            out.extend(e.id.as_bytes());
            out.push(e.counters.len() as u8);
            for c in &e.counters {
                out.push(matches!(c.kind, Kind::Requests) as u8);
                out.extend(c.period_secs.to_le_bytes());
                out.extend(c.start.to_le_bytes());
                out.extend(c.used.to_le_bytes());
            }
            out.extend((e.leases.len() as u32).to_le_bytes());
            for (id, expires) in &e.leases {
                out.extend(id.to_le_bytes());
                out.extend(expires.to_le_bytes());
            }
        }
        out
    }

    /// Reads a slot; anything unreadable (another version, a torn value) reads as empty, which
    /// forgets those counters rather than failing requests.
    pub fn decode(bytes: &[u8]) -> Slot {
        let mut r = Reader(bytes);
        Self::read(&mut r).unwrap_or_default()
    }

    fn read(r: &mut Reader) -> Option<Slot> {
        if r.take(1)? != [VERSION] {
            return None;
        }
        let mut entries = Vec::new();
        for _ in 0..r.u32()? {
            let len = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
            let id = String::from_utf8(r.take(len)?.to_vec()).ok()?;
            let mut counters = Vec::new();
            for _ in 0..r.take(1)?[0] {
                let kind = if r.take(1)?[0] == 1 {
                    Kind::Requests
                } else {
                    Kind::Tokens
                };
                counters.push(Counter {
                    kind,
                    period_secs: r.u64()?,
                    start: r.u64()?,
                    used: r.u64()?,
                });
            }
            let mut leases = Vec::new();
            for _ in 0..r.u32()? {
                leases.push((r.u32()?, r.u64()?));
            }
            entries.push(Entry {
                id,
                counters,
                leases,
            });
        }
        Some(Slot { entries })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Limits;
    use std::collections::HashMap;

    /// Shared data in a map; `fail` makes every update fail.
    #[derive(Default)]
    struct Map {
        values: HashMap<String, Vec<u8>>,
        fail: bool,
    }

    impl SharedData for Map {
        fn update(&mut self, key: &str, update: &mut Update) -> bool {
            if self.fail {
                return false;
            }
            if let Some(next) = update(self.values.get(key).map(Vec::as_slice)) {
                self.values.insert(key.to_string(), next);
            }
            true
        }
    }

    fn limit(id: &str, windows: &[(Kind, u64, u64)], max_concurrent: Option<u64>) -> Matched {
        Matched {
            rule: "r".into(),
            id: id.into(),
            limits: Limits {
                windows: windows
                    .iter()
                    .map(|&(kind, period_secs, limit)| Window {
                        kind,
                        period_secs,
                        limit,
                    })
                    .collect(),
                max_concurrent,
            },
        }
    }

    fn ask(limits: &[Matched], tokens: u64, now_ms: u64, lease: u32) -> Ask<'_> {
        Ask {
            limits,
            tokens,
            now_ms,
            lease: Lease {
                id: lease,
                expires_ms: now_ms + 60_000,
            },
        }
    }

    fn admitted(v: Verdict) -> Vec<WindowState> {
        match v {
            Verdict::Admitted(states) => states,
            Verdict::Limited(l) => panic!("limited: {l:?}"),
        }
    }

    #[test]
    fn every_window_must_admit() {
        let mut store = Map::default();
        let limits = [limit(
            "a",
            &[(Kind::Tokens, 60, 100), (Kind::Tokens, 86_400, 150)],
            None,
        )];
        let states = admitted(reserve(&mut store, &ask(&limits, 80, 0, 1)).unwrap());
        assert_eq!(
            states.iter().map(|s| s.remaining()).collect::<Vec<_>>(),
            [20, 70]
        );
        // The next minute has room again, the day does not.
        let Verdict::Limited(l) = reserve(&mut store, &ask(&limits, 80, 61_000, 2)).unwrap() else {
            panic!("the day window must refuse")
        };
        assert_eq!(
            (l.window.unwrap().period_secs, l.used, l.requested),
            (86_400, 80, 80)
        );
        admitted(reserve(&mut store, &ask(&limits, 70, 61_000, 3)).unwrap());
    }

    #[test]
    fn a_refusal_anywhere_reserves_nothing_anywhere() {
        let mut store = Map::default();
        // Two counters in different slots; the second one is full.
        let (a, b) = (0..)
            .map(|i| (format!("a{i}"), format!("b{i}")))
            .find(|(a, b)| slot_key(a) != slot_key(b))
            .unwrap();
        let limits = [
            limit(
                &a,
                &[(Kind::Tokens, 60, 100), (Kind::Requests, 60, 10)],
                Some(5),
            ),
            limit(&b, &[(Kind::Tokens, 60, 10)], None),
        ];
        let Verdict::Limited(l) = reserve(&mut store, &ask(&limits, 50, 0, 1)).unwrap() else {
            panic!()
        };
        assert_eq!(l.limit, 1);
        let slot = Slot::decode(&store.values[&slot_key(&a)]);
        assert_eq!(
            slot.used(&a, &limits[0].limits.windows[0], 0),
            0,
            "tokens given back"
        );
        assert_eq!(
            slot.used(&a, &limits[0].limits.windows[1], 0),
            0,
            "request given back"
        );
        assert!(slot.entry(&a).unwrap().leases.is_empty(), "slot given back");
    }

    #[test]
    fn concurrency_slots_are_taken_and_given_back() {
        let mut store = Map::default();
        let limits = [limit("c", &[], Some(2))];
        let first = ask(&limits, 0, 0, 1);
        admitted(reserve(&mut store, &first).unwrap());
        admitted(reserve(&mut store, &ask(&limits, 0, 0, 2)).unwrap());
        let Verdict::Limited(l) = reserve(&mut store, &ask(&limits, 0, 0, 3)).unwrap() else {
            panic!()
        };
        assert_eq!((l.window, l.used), (None, 2));
        assert!(settle(&mut store, &Held::new(&first), &[], 10));
        admitted(reserve(&mut store, &ask(&limits, 0, 10, 4)).unwrap());
        // A lease never given back lapses.
        admitted(reserve(&mut store, &ask(&limits, 0, 60_001, 5)).unwrap());
    }

    #[test]
    fn settling_refunds_and_charges_what_was_spent() {
        let mut store = Map::default();
        let limits = [limit("s", &[(Kind::Tokens, 60, 100)], None)];
        let first = ask(&limits, 90, 1_000, 1);
        admitted(reserve(&mut store, &first).unwrap());
        assert!(matches!(
            reserve(&mut store, &ask(&limits, 20, 2_000, 2)).unwrap(),
            Verdict::Limited(_)
        ));
        let held = Held::new(&first);
        assert!(settle(&mut store, &held, &held.settle(30, 3_000), 3_000));
        let states = admitted(reserve(&mut store, &ask(&limits, 20, 4_000, 3)).unwrap());
        assert_eq!(states[0].used, 50);
    }

    #[test]
    fn a_failing_store_is_an_error_not_a_decision() {
        let mut store = Map {
            fail: true,
            ..Map::default()
        };
        let limits = [limit("f", &[(Kind::Tokens, 60, 100)], None)];
        assert!(reserve(&mut store, &ask(&limits, 1, 0, 1)).is_err());
    }

    #[test]
    fn old_windows_and_idle_counters_are_dropped() {
        let mut slot = Slot::default();
        let m = limit("x", &[(Kind::Tokens, 1, 100)], None);
        slot.reserve(
            &m,
            10,
            0,
            Lease {
                id: 1,
                expires_ms: 0,
            },
        );
        assert_eq!(Slot::decode(&slot.encode()), slot, "round trip");
        slot.expire(999);
        assert_eq!(slot.entries.len(), 1);
        slot.expire(1_000);
        assert!(slot.entries.is_empty());
    }

    #[test]
    fn unreadable_slots_read_as_empty() {
        assert_eq!(Slot::decode(b""), Slot::default());
        assert_eq!(Slot::decode(&[9, 1, 2]), Slot::default());
        let mut slot = Slot::default();
        slot.reserve(
            &limit("t", &[(Kind::Tokens, 60, 5)], Some(1)),
            1,
            0,
            Lease {
                id: 1,
                expires_ms: 9,
            },
        );
        let bytes = slot.encode();
        for cut in 0..bytes.len() {
            assert_eq!(Slot::decode(&bytes[..cut]), Slot::default(), "cut {cut}");
        }
    }
}
