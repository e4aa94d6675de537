//! The exact layer in Envoy shared data, shared by every worker of one Envoy.
//!
//! Shared data has no delete and no listing, so every key written stays for the life of the
//! proxy. The store therefore writes only a fixed set of keys: a 4-way set-associative table.
//! A cache key picks its set from its hash; each set has a small tag record (per way: a key
//! fingerprint, the expiry and the time stored) and one data record per way. A lookup reads
//! the tags, then at most the one data record whose tag matches; the data record repeats the
//! full key, so a race between two writers can lose an entry but never serve a wrong one. A
//! store takes the way holding the same key, else an empty or expired way, else the oldest.
//!
//! Bounds: `maxEntries` records (rounded to whole sets), each at most `maxBytes / maxEntries`
//! bytes: larger answers are not stored locally.

use aigw_shared::store::{update, Store};

pub const WAYS: usize = 4;
const TAG_BYTES: usize = 16;

pub struct LocalStore<'a> {
    pub data: &'a dyn Store,
    pub prefix: &'a str,
    pub max_entries: usize,
    pub max_entry_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tag {
    fingerprint: u64,
    expires: u32,
    stored: u32,
}

fn decode_tags(bytes: Option<&[u8]>) -> [Tag; WAYS] {
    let mut tags = [Tag::default(); WAYS];
    if let Some(bytes) = bytes.filter(|b| b.len() == WAYS * TAG_BYTES) {
        for (tag, raw) in tags.iter_mut().zip(bytes.chunks_exact(TAG_BYTES)) {
            tag.fingerprint = u64::from_le_bytes(raw[..8].try_into().unwrap_or_default());
            tag.expires = u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
            tag.stored = u32::from_le_bytes(raw[12..16].try_into().unwrap_or_default());
        }
    }
    tags
}

fn encode_tags(tags: &[Tag; WAYS]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAYS * TAG_BYTES);
    for t in tags {
        out.extend_from_slice(&t.fingerprint.to_le_bytes());
        out.extend_from_slice(&t.expires.to_le_bytes());
        out.extend_from_slice(&t.stored.to_le_bytes());
    }
    out
}

/// 64 bits of the key's hash (never 0, which marks an empty way).
pub fn fingerprint(key: &str) -> u64 {
    // Keys end in a hex SHA-256; its last 16 digits are as good as any.
    let tail = &key[key.len().saturating_sub(16)..];
    u64::from_str_radix(tail, 16)
        .unwrap_or_else(|_| {
            tail.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            })
        })
        .max(1)
}

/// Expiry in seconds since the epoch; `u32::MAX` when `ttl` is 0 (never).
pub fn expiry(now_s: u64, ttl_s: u64) -> u32 {
    if ttl_s == 0 {
        u32::MAX
    } else {
        (now_s + ttl_s).min(u32::MAX as u64 - 1) as u32
    }
}

impl LocalStore<'_> {
    fn sets(&self) -> u64 {
        (self.max_entries / WAYS).max(1) as u64
    }

    fn set_of(&self, fp: u64) -> u64 {
        fp % self.sets()
    }

    fn tags_key(&self, set: u64) -> String {
        format!("{}t.{set}", self.prefix)
    }

    fn data_key(&self, set: u64, way: usize) -> String {
        format!("{}d.{set}.{way}", self.prefix)
    }

    /// The value stored under `key`, if it is there and has not expired.
    pub fn get(&self, key: &str, now_s: u64) -> Option<Vec<u8>> {
        let fp = fingerprint(key);
        let set = self.set_of(fp);
        let tags = decode_tags(self.data.get(&self.tags_key(set)).0.as_deref());
        let way = tags
            .iter()
            .position(|t| t.fingerprint == fp && u64::from(t.expires) > now_s)?;
        let record = self.data.get(&self.data_key(set, way)).0?;
        let (stored_key, expires, value) = split_record(&record)?;
        (stored_key == key.as_bytes() && u64::from(expires) > now_s).then(|| value.to_vec())
    }

    /// Stores `value` under `key` until `expires`; `Err` says why it was not stored.
    pub fn put(
        &self,
        key: &str,
        value: &[u8],
        expires: u32,
        now_s: u64,
    ) -> Result<(), &'static str> {
        let record_len = 2 + key.len() + 4 + value.len();
        if record_len > self.max_entry_bytes {
            return Err("answer is larger than the local store's share per entry");
        }
        let fp = fingerprint(key);
        let set = self.set_of(fp);
        let tags_key = self.tags_key(set);
        let way = choose_way(
            &decode_tags(self.data.get(&tags_key).0.as_deref()),
            fp,
            now_s,
        );
        let mut record = Vec::with_capacity(record_len);
        record.extend_from_slice(&(key.len() as u16).to_le_bytes());
        record.extend_from_slice(key.as_bytes());
        record.extend_from_slice(&expires.to_le_bytes());
        record.extend_from_slice(value);
        // Data first, then the tag: a reader that sees the new tag finds the new data, and one
        // that sees the old tag finds a key that no longer matches.
        self.data
            .set(&self.data_key(set, way), &record, None)
            .map_err(|_| "shared data refused the entry")?;
        let written = update(self.data, &tags_key, |current| {
            let mut tags = decode_tags(current);
            tags[way] = Tag {
                fingerprint: fp,
                expires,
                stored: now_s as u32,
            };
            Some(encode_tags(&tags))
        });
        written.map(|_| ()).ok_or("shared data refused the tags")
    }
}

fn choose_way(tags: &[Tag; WAYS], fp: u64, now_s: u64) -> usize {
    tags.iter()
        .position(|t| t.fingerprint == fp)
        .or_else(|| {
            tags.iter()
                .position(|t| t.fingerprint == 0 || u64::from(t.expires) <= now_s)
        })
        .unwrap_or_else(|| (0..WAYS).min_by_key(|&w| tags[w].stored).unwrap_or(0))
}

fn split_record(record: &[u8]) -> Option<(&[u8], u32, &[u8])> {
    let key_len = u16::from_le_bytes(record.get(..2)?.try_into().ok()?) as usize;
    let key = record.get(2..2 + key_len)?;
    let expires = u32::from_le_bytes(record.get(2 + key_len..6 + key_len)?.try_into().ok()?);
    Some((key, expires, record.get(6 + key_len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::store::MemoryStore as Map;

    fn key(n: u64) -> String {
        format!("p:{:064x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn store(data: &Map, entries: usize) -> LocalStore<'_> {
        LocalStore {
            data,
            prefix: "p:",
            max_entries: entries,
            max_entry_bytes: 200,
        }
    }

    #[test]
    fn stores_reads_and_expires() {
        let data = Map::default();
        let s = store(&data, 16);
        assert_eq!(s.get(&key(1), 100), None);
        s.put(&key(1), b"answer", expiry(100, 10), 100).unwrap();
        assert_eq!(s.get(&key(1), 105).as_deref(), Some(&b"answer"[..]));
        assert_eq!(s.get(&key(1), 110), None, "expired");
        assert_eq!(s.get(&key(2), 105), None);
        s.put(&key(1), b"newer", expiry(100, 0), 100).unwrap();
        assert_eq!(
            s.get(&key(1), 1 << 31).as_deref(),
            Some(&b"newer"[..]),
            "ttl 0 never expires"
        );
    }

    #[test]
    fn memory_is_bounded_whatever_is_stored() {
        let data = Map::default();
        let s = store(&data, 16);
        for n in 0..2000 {
            s.put(
                &key(n),
                format!("answer {n}").as_bytes(),
                expiry(n, 3600),
                n,
            )
            .unwrap();
        }
        // 4 sets: 4 tag records and 16 data records, never more.
        assert_eq!(data.len(), 4 + 16);
        // The most recent entries are there; each hit is the right answer.
        let mut hits = 0;
        for n in 0..2000 {
            if let Some(v) = s.get(&key(n), 2000) {
                assert_eq!(v, format!("answer {n}").into_bytes());
                hits += 1;
            }
        }
        assert_eq!(hits, 16);
        assert!(s.get(&key(1999), 2000).is_some());
        assert!(
            s.put(&key(5), &[b'x'; 300], u32::MAX, 0).is_err(),
            "over the share per entry"
        );
    }

    #[test]
    fn a_record_for_another_key_is_never_served() {
        let data = Map::default();
        let s = store(&data, 4);
        s.put(&key(1), b"one", u32::MAX, 0).unwrap();
        // Another writer's data lands in the way the tag points to.
        let way = decode_tags(data.get("p:t.0").0.as_deref())
            .iter()
            .position(|t| t.fingerprint == fingerprint(&key(1)))
            .unwrap();
        let mut foreign = Vec::new();
        let k2 = key(2);
        foreign.extend_from_slice(&(k2.len() as u16).to_le_bytes());
        foreign.extend_from_slice(k2.as_bytes());
        foreign.extend_from_slice(&u32::MAX.to_le_bytes());
        foreign.extend_from_slice(b"two");
        data.set(&format!("p:d.0.{way}"), &foreign, None).unwrap();
        assert_eq!(s.get(&key(1), 0), None);
    }
}
