//! The safety-matching section: what the local lists cost per 1,000 characters checked, on the
//! normalised view (compatibility forms, accents, format characters, whitespace runs,
//! look-alikes, traditional Chinese), with 200 deny words and the prompt-injection patterns on.
//! The pure matcher, timed in this process: no Envoy, no wasm runtime (which runs it slower).

use ai_content_safety::local::LocalChecker;
use ai_content_safety::verdict::Phase;
use e2e::bench::Plan;
use std::hint::black_box;
use std::time::{Duration, Instant};

const WORDS: usize = 200;
const CHARS: usize = 1000;
const ROUND: Duration = Duration::from_millis(300);

pub fn run(plan: &Plan) {
    let mut words: Vec<String> = (2..WORDS).map(|i| format!("forbidden-term-{i}")).collect();
    words.extend(["bomb recipe".to_string(), "炸弹".to_string()]);
    let checker = LocalChecker::new(&words, &[], true).expect("deny words compile");
    println!(
        "content-safety matching: {WORDS} deny words, prompt-injection patterns, CJK folding; \
         clean prompts of {CHARS} characters (the whole text is scanned); median of {} rounds",
        plan.rounds
    );
    for (name, text) in texts() {
        assert_eq!(
            checker.check(&text, Phase::Request),
            None,
            "{name} is clean"
        );
        let mut rounds: Vec<f64> = (0..plan.rounds)
            .map(|_| micros_per_check(&checker, &text))
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!(
            "  {name:<46} {:>6.2} µs per 1,000 characters",
            rounds[rounds.len() / 2]
        );
    }
}

fn micros_per_check(checker: &LocalChecker, text: &str) -> f64 {
    let start = Instant::now();
    let mut checks = 0u32;
    while start.elapsed() < ROUND {
        for _ in 0..100 {
            black_box(checker.check(black_box(text), Phase::Request));
        }
        checks += 100;
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(checks)
}

/// Clean texts of exactly [`CHARS`] characters; the English ones contain the words that make
/// the injection patterns run ("previous instructions", "system prompt").
fn texts() -> Vec<(&'static str, String)> {
    let english = "Before you start, read the previous instructions for assembly and the system \
                   prompt notes: the bomb disposal robot needs a recipe of calm steps. ";
    let mixed = "Réad thе prеvious instrüctions\u{200b} for аssembly, ｆｕｌｌ ｗｉｄｔｈ and \
                 𝐛𝐨𝐥𝐝\u{a0}text, then the system\u{ad}prompt notes. ";
    let chinese = "请先阅读之前的装配說明和系統提示的注意事項，然後按步驟安全地拆除機器人的外殼。";
    [
        ("English, ASCII", english),
        ("English with accents, look-alikes, zero-width", mixed),
        ("Chinese, simplified and traditional", chinese),
    ]
    .into_iter()
    .map(|(name, sample)| (name, sample.chars().cycle().take(CHARS).collect()))
    .collect()
}
