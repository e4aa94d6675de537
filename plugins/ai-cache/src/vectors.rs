//! The embedded vector store: question vectors in Envoy shared data, searched by brute-force
//! cosine similarity, no service needed. Bounded: `maxEntries` vectors in a ring, the oldest
//! replaced first, in pages of [`PAGE`] slots under fixed keys (shared data never forgets a
//! key, so the set of keys must not grow).
//!
//! A small meta record holds the ring position and a generation per page. Each worker keeps
//! the pages it decoded and reads a page again only when its generation moved, so a lookup
//! costs one small read plus the arithmetic, not a copy of every vector.

use aigw_shared::store::{update, Store};

pub const PAGE: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct VectorEntry {
    /// The context hash of the question (see `key`): vectors of another context never match.
    pub context: u64,
    pub expires: u32,
    /// The exact-layer key of the answer.
    pub key: String,
    /// Unit length.
    pub vector: Vec<f32>,
}

/// One worker's decoded copy of the pages.
#[derive(Default)]
pub struct VectorIndex {
    pages: Vec<Option<(u32, Vec<Option<VectorEntry>>)>>,
}

pub struct VectorStore<'a> {
    pub data: &'a dyn Store,
    pub prefix: &'a str,
    pub max_entries: usize,
}

/// `v` scaled to unit length (`None` for an empty or zero vector).
pub fn normalised(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| v.iter().map(|x| x / norm).collect())
}

/// The context as a number, from its hex digest.
pub fn context_id(context: &str) -> u64 {
    u64::from_str_radix(&context[..context.len().min(16)], 16).unwrap_or(0)
}

impl VectorStore<'_> {
    fn pages(&self) -> usize {
        self.max_entries.div_ceil(PAGE)
    }

    fn meta_key(&self) -> String {
        format!("{}v.meta", self.prefix)
    }

    fn page_key(&self, page: usize) -> String {
        format!("{}v.{page}", self.prefix)
    }

    /// The nearest live vector of `context` and its cosine similarity.
    pub fn nearest(
        &self,
        index: &mut VectorIndex,
        context: u64,
        query: &[f32],
        now_s: u64,
    ) -> Option<(String, f32)> {
        let query = normalised(query)?;
        let (next, gens) = decode_meta(self.data.get(&self.meta_key()).0.as_deref());
        let used = (next as usize).min(self.max_entries).div_ceil(PAGE);
        index.pages.resize(self.pages(), None);
        let mut best: Option<(&VectorEntry, f32)> = None;
        for page in 0..used {
            let gen = gens.get(page).copied().unwrap_or(0);
            if index.pages[page].as_ref().is_none_or(|(g, _)| *g != gen) {
                let bytes = self.data.get(&self.page_key(page)).0;
                index.pages[page] = Some(decode_page(bytes.as_deref()));
            }
        }
        for (_, slots) in index.pages[..used.min(index.pages.len())].iter().flatten() {
            for entry in slots.iter().flatten() {
                if entry.context != context
                    || u64::from(entry.expires) <= now_s
                    || entry.vector.len() != query.len()
                {
                    continue;
                }
                let score: f32 = entry.vector.iter().zip(&query).map(|(a, b)| a * b).sum();
                if best.is_none_or(|(_, s)| score > s) {
                    best = Some((entry, score));
                }
            }
        }
        best.map(|(e, s)| (e.key.clone(), s))
    }

    /// Adds a vector, replacing the oldest once the store is full.
    pub fn insert(&self, mut entry: VectorEntry) -> Result<(), &'static str> {
        entry.vector = normalised(&entry.vector).ok_or("embedding is empty or zero")?;
        let pages = self.pages();
        let mut reserved = None;
        let meta_written = update(self.data, &self.meta_key(), |current| {
            let (next, mut gens) = decode_meta(current);
            gens.resize(pages, 0);
            let slot = (next % self.max_entries as u64) as usize;
            gens[slot / PAGE] = gens[slot / PAGE].wrapping_add(1);
            reserved = Some((slot, gens[slot / PAGE]));
            Some(encode_meta(next + 1, &gens))
        });
        let (Some((slot, gen)), Some(_)) = (reserved, meta_written) else {
            return Err("shared data refused the vector index");
        };
        let written = update(self.data, &self.page_key(slot / PAGE), |current| {
            let (_, mut slots) = decode_page(current);
            slots[slot % PAGE] = Some(entry.clone());
            Some(encode_page(gen, &slots))
        });
        written.map(|_| ()).ok_or("shared data refused the vector")
    }
}

fn decode_meta(bytes: Option<&[u8]>) -> (u64, Vec<u32>) {
    let Some(bytes) = bytes.filter(|b| b.len() >= 8) else {
        return (0, Vec::new());
    };
    let next = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    let gens = bytes[8..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    (next, gens)
}

fn encode_meta(next: u64, gens: &[u32]) -> Vec<u8> {
    let mut out = next.to_le_bytes().to_vec();
    gens.iter()
        .for_each(|g| out.extend_from_slice(&g.to_le_bytes()));
    out
}

fn encode_page(gen: u32, slots: &[Option<VectorEntry>]) -> Vec<u8> {
    let mut out = gen.to_le_bytes().to_vec();
    for slot in slots {
        let Some(e) = slot else {
            out.extend_from_slice(&0u32.to_le_bytes());
            continue;
        };
        let len = 8 + 4 + 2 + e.key.len() + 2 + 4 * e.vector.len();
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&e.context.to_le_bytes());
        out.extend_from_slice(&e.expires.to_le_bytes());
        out.extend_from_slice(&(e.key.len() as u16).to_le_bytes());
        out.extend_from_slice(e.key.as_bytes());
        out.extend_from_slice(&(e.vector.len() as u16).to_le_bytes());
        e.vector
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
    out
}

/// A page's generation and its slots; anything unreadable is an empty slot.
fn decode_page(bytes: Option<&[u8]>) -> (u32, Vec<Option<VectorEntry>>) {
    let mut slots = vec![None; PAGE];
    let Some(bytes) = bytes.filter(|b| b.len() >= 4) else {
        return (0, slots);
    };
    let gen = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default());
    let mut rest = &bytes[4..];
    for slot in slots.iter_mut() {
        let Some(len) = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
        else {
            break;
        };
        let Some(record) = rest.get(4..4 + len as usize) else {
            break;
        };
        *slot = decode_entry(record);
        rest = &rest[4 + len as usize..];
    }
    (gen, slots)
}

fn decode_entry(r: &[u8]) -> Option<VectorEntry> {
    let context = u64::from_le_bytes(r.get(..8)?.try_into().ok()?);
    let expires = u32::from_le_bytes(r.get(8..12)?.try_into().ok()?);
    let key_len = u16::from_le_bytes(r.get(12..14)?.try_into().ok()?) as usize;
    let key = String::from_utf8(r.get(14..14 + key_len)?.to_vec()).ok()?;
    let at = 14 + key_len;
    let dim = u16::from_le_bytes(r.get(at..at + 2)?.try_into().ok()?) as usize;
    let vector = r
        .get(at + 2..at + 2 + 4 * dim)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    Some(VectorEntry {
        context,
        expires,
        key,
        vector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_shared::store::MemoryStore as Map;

    fn entry(context: u64, key: &str, v: &[f32]) -> VectorEntry {
        VectorEntry {
            context,
            expires: 1000,
            key: key.into(),
            vector: v.to_vec(),
        }
    }

    #[test]
    fn nearest_in_the_context_by_cosine() {
        let data = Map::default();
        let s = VectorStore {
            data: &data,
            prefix: "p:",
            max_entries: 100,
        };
        let mut index = VectorIndex::default();
        assert_eq!(s.nearest(&mut index, 1, &[1.0, 0.0], 0), None);
        s.insert(entry(1, "a", &[2.0, 0.0])).unwrap();
        s.insert(entry(1, "b", &[0.0, 3.0])).unwrap();
        s.insert(entry(2, "c", &[1.0, 0.1])).unwrap();
        let (key, score) = s.nearest(&mut index, 1, &[0.9, 0.1], 0).unwrap();
        assert_eq!(key, "a");
        assert!((score - 0.9939).abs() < 1e-3, "{score}");
        assert_eq!(s.nearest(&mut index, 2, &[0.0, 1.0], 0).unwrap().0, "c");
        assert_eq!(s.nearest(&mut index, 3, &[0.0, 1.0], 0), None);
        assert_eq!(s.nearest(&mut index, 1, &[0.9, 0.1], 1000), None, "expired");
        assert_eq!(
            s.nearest(&mut index, 1, &[0.9, 0.1, 0.0], 0),
            None,
            "other dimensions"
        );
    }

    #[test]
    fn a_worker_sees_vectors_another_worker_added() {
        let data = Map::default();
        let s = VectorStore {
            data: &data,
            prefix: "p:",
            max_entries: 100,
        };
        let mut worker = VectorIndex::default();
        s.insert(entry(1, "a", &[1.0, 0.0])).unwrap();
        assert_eq!(s.nearest(&mut worker, 1, &[0.0, 1.0], 0).unwrap().0, "a");
        s.insert(entry(1, "b", &[0.0, 1.0])).unwrap();
        assert_eq!(s.nearest(&mut worker, 1, &[0.0, 1.0], 0).unwrap().0, "b");
    }

    #[test]
    fn bounded_ring_replaces_the_oldest() {
        let data = Map::default();
        let s = VectorStore {
            data: &data,
            prefix: "p:",
            max_entries: 40,
        };
        let mut index = VectorIndex::default();
        for n in 0..100 {
            let angle = n as f32 / 100.0;
            s.insert(entry(1, &format!("k{n}"), &[angle.cos(), angle.sin()]))
                .unwrap();
        }
        assert_eq!(data.len(), 1 + 2, "meta and two pages");
        let angle = 5.0f32 / 100.0;
        let (key, _) = s
            .nearest(&mut index, 1, &[angle.cos(), angle.sin()], 0)
            .unwrap();
        assert_eq!(
            key, "k60",
            "k5 was replaced; the nearest left is the oldest kept"
        );
        let angle = 80.0f32 / 100.0;
        assert_eq!(
            s.nearest(&mut index, 1, &[angle.cos(), angle.sin()], 0)
                .unwrap()
                .0,
            "k80"
        );
        assert!(s.insert(entry(1, "z", &[0.0, 0.0])).is_err());
    }
}
