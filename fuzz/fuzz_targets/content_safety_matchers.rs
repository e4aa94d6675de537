//! ai-content-safety's matchers on any text: deny words are found exactly when the folded text
//! contains one, masking then restoring gives the original text back, and restoring a stream
//! cut anywhere gives what restoring it whole gives.
#![no_main]

use ai_content_safety::fold::fold;
use ai_content_safety::local::LocalChecker;
use ai_content_safety::mask::{Counter, Detector, Masker, Mode};
use ai_content_safety::restore::{Restorer, Vault};
use ai_content_safety::verdict::Phase;
use aigw_fuzz::{pieces, Choices};
use libfuzzer_sys::fuzz_target;
use std::rc::Rc;

/// `text` cut at `cuts`, each cut moved back to a character boundary.
fn text_pieces<'t>(text: &'t str, cuts: &[u8]) -> Vec<&'t str> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in pieces(text.as_bytes(), cuts) {
        let mut end = start + piece.len();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end >= start {
            out.push(&text[start..end]);
            start = end;
        }
    }
    out.push(&text[start..]);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices::new(data);
    let mode = choices.pick(&[Mode::Replace, Mode::Hash]);
    let cuts = choices.cuts(6);
    let input = String::from_utf8_lossy(choices.rest());
    let (words, text) = input.split_once('\n').unwrap_or(("", &input));
    let words: Vec<String> = words.split('|').take(8).map(str::to_string).collect();

    // Deny words: found exactly when one of them is in the folded text.
    let checker = LocalChecker::new(&words, &[], true).expect("words always compile");
    let folded = fold(text);
    let contains_word = words
        .iter()
        .map(|w| fold(w.trim()))
        .any(|w| !w.is_empty() && folded.contains(&w));
    let finding = checker.check(text, Phase::Request);
    assert_eq!(
        finding.as_ref().is_some_and(|f| f.label == "deny_word"),
        contains_word,
        "{finding:?} for {words:?} in {text:?}"
    );
    checker.check(text, Phase::Response);

    // Masking, then restoring, gives the text back (a text without `[` cannot hold a
    // placeholder of its own).
    let masker = Masker::new(&Detector::ALL, mode, Vec::new());
    let mut vault = Vault::default();
    let mut counter = Counter::default();
    let Some(masked) = masker.mask(text, &mut vault, &mut counter) else {
        return;
    };
    assert!(counter.masked > 0);
    let restored = vault.restore_all(&masked);
    if !text.contains('[') {
        assert_eq!(restored, text, "masked as {masked:?}");
    }

    // A stream of the masked text, cut anywhere, is restored the same.
    let mut restorer = Restorer::new(Rc::new(vault));
    let mut streamed = String::new();
    for piece in text_pieces(&masked, &cuts) {
        streamed.push_str(&restorer.push(piece));
    }
    streamed.push_str(&restorer.flush());
    assert_eq!(streamed, restored, "cut at {cuts:?}");
});
