//! Several API keys per provider: round-robin, and a key the provider refused (401, 403, 429)
//! is set aside for a cool-down. Cool-downs live in Envoy shared data so that every worker
//! skips the key (read and written through the [`Store`] trait, so this stays host-free).

use aigw_shared::store::{self, Store};
use std::cell::Cell;

/// When a set-aside key may be used again, by key index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cooldowns(Vec<(usize, u64)>);

impl Cooldowns {
    /// Reads the stored form `index:until_ms,…`; anything unreadable is ignored.
    pub fn decode(bytes: &[u8]) -> Cooldowns {
        let text = std::str::from_utf8(bytes).unwrap_or("");
        Cooldowns(
            text.split(',')
                .filter_map(|entry| {
                    let (index, until) = entry.split_once(':')?;
                    Some((index.parse().ok()?, until.parse().ok()?))
                })
                .collect(),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        self.0
            .iter()
            .map(|(index, until)| format!("{index}:{until}"))
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes()
    }

    /// Sets key `index` aside until `until_ms`, dropping cool-downs that ended before `now_ms`.
    pub fn set(&mut self, index: usize, until_ms: u64, now_ms: u64) {
        self.0.retain(|&(i, until)| i != index && until > now_ms);
        self.0.push((index, until_ms));
    }

    fn until(&self, index: usize) -> Option<u64> {
        self.0
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, until)| *until)
    }

    fn cooling(&self, index: usize, now_ms: u64) -> bool {
        self.until(index).is_some_and(|until| until > now_ms)
    }
}

/// The keys of one provider, taken in turn.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<String>,
    next: Cell<usize>,
}

impl KeyRing {
    pub fn new(keys: Vec<String>) -> Self {
        KeyRing {
            keys,
            next: Cell::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key(&self, index: usize) -> Option<&str> {
        self.keys.get(index).map(String::as_str)
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The next key not cooling down; when all are, the one whose cool-down ends first (a
    /// request is never refused only because every key was refused once).
    pub fn pick(&self, cooldowns: &Cooldowns, now_ms: u64) -> Option<usize> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        let start = self.next.get() % n;
        let chosen = (0..n)
            .map(|offset| (start + offset) % n)
            .find(|&i| !cooldowns.cooling(i, now_ms))
            .unwrap_or_else(|| {
                (0..n)
                    .min_by_key(|&i| cooldowns.until(i).unwrap_or(0))
                    .unwrap_or(start)
            });
        self.next.set(chosen + 1);
        Some(chosen)
    }
}

/// Does this status mean the key itself should be set aside?
pub fn refuses_key(status: u16) -> bool {
    matches!(status, 401 | 403 | 429)
}

fn cooldown_key(provider_id: &str) -> String {
    format!("aigw.ai-proxy.key-cooldown.{provider_id}")
}

/// The cool-downs every worker has set for a provider's keys.
pub fn read_cooldowns(store: &dyn Store, provider_id: &str) -> Cooldowns {
    Cooldowns::decode(&store.get(&cooldown_key(provider_id)).0.unwrap_or_default())
}

/// Sets key `index` of a provider aside for `seconds`, for every worker.
pub fn cool_down(store: &dyn Store, provider_id: &str, index: usize, seconds: u64, now_ms: u64) {
    store::update(store, &cooldown_key(provider_id), |current| {
        let mut cooldowns = Cooldowns::decode(current.unwrap_or_default());
        cooldowns.set(index, now_ms + seconds * 1000, now_ms);
        Some(cooldowns.encode())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_set_aside_is_skipped_by_every_reader_of_the_store() {
        let store = aigw_shared::store::MemoryStore::default();
        cool_down(&store, "openai", 0, 30, 1_000);
        let cooldowns = read_cooldowns(&store, "openai");
        assert_eq!(ring(2).pick(&cooldowns, 2_000), Some(1));
        assert_eq!(read_cooldowns(&store, "other"), Cooldowns::default());
    }

    fn ring(n: usize) -> KeyRing {
        KeyRing::new((0..n).map(|i| format!("k{i}")).collect())
    }

    #[test]
    fn round_robin() {
        let r = ring(3);
        let none = Cooldowns::default();
        let picks: Vec<_> = (0..6).map(|_| r.pick(&none, 0).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn cooling_keys_are_skipped_until_their_time() {
        let r = ring(3);
        let mut c = Cooldowns::default();
        c.set(1, 1000, 0);
        let picks: Vec<_> = (0..4).map(|_| r.pick(&c, 500).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
        assert_eq!(r.pick(&c, 1000), Some(0));
        assert_eq!(r.pick(&c, 1000), Some(1), "back after the cool-down");
    }

    #[test]
    fn all_cooling_picks_the_one_free_soonest() {
        let r = ring(2);
        let mut c = Cooldowns::default();
        c.set(0, 900, 0);
        c.set(1, 500, 0);
        assert_eq!(r.pick(&c, 100), Some(1));
    }

    #[test]
    fn stored_form_round_trips_and_prunes() {
        let mut c = Cooldowns::default();
        c.set(0, 100, 0);
        c.set(3, 5000, 0);
        assert_eq!(Cooldowns::decode(&c.encode()), c);
        c.set(2, 6000, 200);
        assert_eq!(
            c,
            Cooldowns(vec![(3, 5000), (2, 6000)]),
            "ended cool-downs are dropped"
        );
        assert_eq!(
            Cooldowns::decode(b"garbage,1:x,2:7"),
            Cooldowns(vec![(2, 7)])
        );
    }

    #[test]
    fn empty_ring_has_no_key() {
        assert_eq!(ring(0).pick(&Cooldowns::default(), 0), None);
    }
}
