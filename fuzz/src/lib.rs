//! Helpers shared by the fuzz targets: reading choices out of the fuzzer's bytes, cutting a
//! body into the pieces Envoy might deliver, and checking a plugin's config parser.
//!
//! Only `aigw-shared` here: each target links the one plugin it exercises (every plugin crate
//! defines the same proxy-wasm entry point, so two cannot share a binary).

use aigw_shared::rules::{ConfigError, RequestKeys, RuleSet};
use serde_json::{Map, Value};

/// Reads small choices from the front of the input; the rest is the payload.
pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Choices { data }
    }

    /// The next byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// One of `options`, picked by the next byte.
    pub fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.byte() as usize % options.len()]
    }

    /// Up to `max` cut points, each a byte, scaled into `0..=len` later by [`pieces`].
    pub fn cuts(&mut self, max: usize) -> Vec<u8> {
        let n = self.byte() as usize % (max + 1);
        (0..n).map(|_| self.byte()).collect()
    }

    /// What is left: the payload.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// `body` cut at `cuts` (each a fraction of the length out of 255), in order.
pub fn pieces<'b>(body: &'b [u8], cuts: &[u8]) -> Vec<&'b [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| body.len() * c as usize / 255)
        .collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for cut in at {
        out.push(&body[start..cut]);
        start = cut;
    }
    out.push(&body[start..]);
    out
}

/// A plugin configuration as Envoy hands it over: parsed with the plugin's own parser inside
/// the `_rules_` layer, then looked up with request keys taken from the input. Errors are
/// fine; a panic is what the fuzzer looks for.
pub fn check_config<T>(data: &[u8], parse: impl Fn(&Map<String, Value>) -> Result<T, ConfigError>) {
    let Ok(json) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(rules) = RuleSet::parse(&json, parse) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || "-_.*:|".contains(c)))
        .filter(|w| !w.is_empty())
        .take(8)
        .collect();
    for (i, word) in words.iter().enumerate() {
        let other = words[(i + 1) % words.len()];
        rules.get(&RequestKeys {
            route: word,
            host: other,
            service: word,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_body_in_order() {
        let body = b"0123456789";
        let joined: Vec<u8> = pieces(body, &[200, 0, 255, 100]).concat();
        assert_eq!(joined, body);
        assert_eq!(pieces(body, &[]).len(), 1);
        assert_eq!(pieces(b"", &[7, 9]).concat(), b"");
    }
}
