//! A cached answer as stored in either layer: the text and the counts needed to replay it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub content: String,
    /// The model that answered, as the provider named it.
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for bytes that are not an entry (another program's data under the same key).
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let e = Entry {
            content: "Paris \u{1f1eb}\u{1f1f7}".into(),
            model: "gpt-4o".into(),
            prompt_tokens: 9,
            completion_tokens: 3,
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        assert_eq!(Entry::decode(b"{\"content\":1}"), None);
    }
}
