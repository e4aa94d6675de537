//! The slice of Envoy shared data the local stores use, as a trait so that the stores' logic
//! runs in unit tests against a map.

use aigw_shared::store::{Store, WriteError};

/// A value and its compare-and-swap token.
pub type Versioned = (Option<Vec<u8>>, Option<u32>);

pub trait SharedData {
    fn get(&self, key: &str) -> Versioned;
    /// Writes `value`; with `cas`, only if nobody wrote since that token (`Err(true)` then).
    /// `Err(false)` for any other failure.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), bool>;
}

/// The shared data a stage reads through its environment.
pub struct StoreData<'a>(pub &'a dyn Store);

impl SharedData for StoreData<'_> {
    fn get(&self, key: &str) -> Versioned {
        self.0.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), bool> {
        self.0
            .set(key, value, cas)
            .map_err(|e| e == WriteError::CasMismatch)
    }
}

/// Read-modify-write with compare-and-swap, retried when another worker wrote in between.
/// `update` returns the new value, or `None` to leave it. Returns whether a value was written.
pub fn update(
    data: &impl SharedData,
    key: &str,
    mut update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> bool {
    for _ in 0..16 {
        let (current, cas) = data.get(key);
        let Some(next) = update(current.as_deref()) else {
            return false;
        };
        match data.set(key, &next, cas) {
            Ok(()) => return true,
            Err(true) => continue,
            Err(false) => return false,
        }
    }
    false
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Shared data in a map, with CAS tokens like Envoy's.
    #[derive(Default)]
    pub struct Map {
        pub values: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    }

    impl SharedData for Map {
        fn get(&self, key: &str) -> Versioned {
            match self.values.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            }
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), bool> {
            let mut values = self.values.borrow_mut();
            let current = values.get(key).map_or(0, |(_, c)| *c);
            if cas.is_some_and(|c| c != current) {
                return Err(true);
            }
            values.insert(key.to_string(), (value.to_vec(), current + 1));
            Ok(())
        }
    }
}
