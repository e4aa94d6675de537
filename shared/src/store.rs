//! Envoy shared data as a trait: values every worker of one Envoy sees, written with
//! compare-and-swap. The runner gives stages the host's; tests use [`MemoryStore`].

use std::cell::RefCell;
use std::collections::HashMap;

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// Another worker wrote since the value was read: read again and retry.
    CasMismatch,
    /// The host refused (a reason for the log).
    Failed(String),
}

pub trait Store {
    /// The value under `key` and its version (`None` when absent).
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` if the version is still `cas` (`None`: whatever it is).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError>;
}

/// Updates a value with compare-and-swap, retrying when another worker wrote in between.
/// `update` gets the current value and returns the new one (`None` leaves it as it is).
/// Returns the value written, or `None` if nothing was written.
pub fn update(
    store: &dyn Store,
    key: &str,
    mut update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    for _ in 0..16 {
        let (current, cas) = store.get(key);
        let next = update(current.as_deref())?;
        match store.set(key, &next, cas) {
            Ok(()) => return Some(next),
            Err(WriteError::CasMismatch) => continue,
            Err(WriteError::Failed(reason)) => {
                log::warn!("shared data {key}: {reason}");
                return None;
            }
        }
    }
    log::warn!("shared data {key}: gave up after repeated concurrent updates");
    None
}

/// Shared data in memory, with versions like Envoy's.
#[derive(Debug, Default)]
pub struct MemoryStore {
    values: RefCell<HashMap<String, (Vec<u8>, u32)>>,
}

impl MemoryStore {
    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.values.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.values.borrow().get(key) {
            Some((value, version)) => (Some(value.clone()), Some(*version)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
        let mut values = self.values.borrow_mut();
        let version = values.get(key).map(|(_, v)| *v);
        if cas.is_some() && cas != version {
            return Err(WriteError::CasMismatch);
        }
        let next = version.map_or(1, |v| v.wrapping_add(1));
        values.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_version_is_refused() {
        let store = MemoryStore::default();
        store.set("k", b"1", None).unwrap();
        let (_, cas) = store.get("k");
        store.set("k", b"2", cas).unwrap();
        assert_eq!(store.set("k", b"3", cas), Err(WriteError::CasMismatch));
        assert_eq!(store.get("k").0.as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn update_reads_modifies_and_writes() {
        let store = MemoryStore::default();
        let add = |v: Option<&[u8]>| {
            let n: u32 = v.map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
            Some((n + 1).to_string().into_bytes())
        };
        update(&store, "n", add);
        assert_eq!(update(&store, "n", add), Some(b"2".to_vec()));
        assert_eq!(update(&store, "n", |_| None), None);
        assert_eq!(store.get("n").0.as_deref(), Some(&b"2"[..]));
    }
}
