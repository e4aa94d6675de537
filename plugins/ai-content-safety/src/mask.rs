//! Finding sensitive data in prompts and replacing it before the provider sees it.
//!
//! Built-in detectors: phone numbers, e-mail addresses, IPv4 and IPv6 addresses, credit card
//! numbers (Luhn-checked), Chinese resident ID numbers (checksum-verified) and API keys or
//! tokens (`sk-…`, AWS access keys, GitHub and Google keys, bearer tokens); plus user regexes.
//! A value becomes a placeholder `[KIND_N]` (numbered per request), or with `hash`
//! `[KIND_<12 hex of SHA-256>]` (the same value always gives the same token); a user rule may
//! also give a fixed replacement. Placeholders go into a [`Vault`] for the answer's restore.

use crate::restore::Vault;
use regex_lite::Regex;
use std::net::Ipv6Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    ApiKey,
    Email,
    CnId,
    CreditCard,
    Ipv6,
    Ipv4,
    Phone,
}

impl Detector {
    pub const ALL: [Detector; 7] = [
        Detector::ApiKey,
        Detector::Email,
        Detector::CnId,
        Detector::CreditCard,
        Detector::Ipv6,
        Detector::Ipv4,
        Detector::Phone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::ApiKey => "api_key",
            Detector::Email => "email",
            Detector::CnId => "cn_id",
            Detector::CreditCard => "credit_card",
            Detector::Ipv6 => "ipv6",
            Detector::Ipv4 => "ipv4",
            Detector::Phone => "phone",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    fn placeholder_kind(self) -> &'static str {
        match self {
            Detector::ApiKey => "API_KEY",
            Detector::Email => "EMAIL",
            Detector::CnId => "ID_NUMBER",
            Detector::CreditCard => "CARD",
            Detector::Ipv6 | Detector::Ipv4 => "IP",
            Detector::Phone => "PHONE",
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            Detector::ApiKey => concat!(
                r"\bsk-[A-Za-z0-9_-]{16,}|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36,}\b",
                r"|\bAIza[0-9A-Za-z_-]{35}|\b[Bb]earer\s+[A-Za-z0-9._~+/-]{16,}=*"
            ),
            Detector::Email => {
                r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
            }
            Detector::CnId => r"\b\d{17}[\dXx]\b",
            Detector::CreditCard => r"\b\d(?:[ -]?\d){12,18}\b",
            Detector::Ipv6 => r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
            Detector::Ipv4 => {
                r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"
            }
            Detector::Phone => concat!(
                r"(?:\+86[- ]?)?\b1[3-9]\d{9}\b",
                r"|\+\d{1,3}[- ]?\(?\d{1,4}\)?(?:[- ]?\d{2,4}){2,3}\b",
                r"|\(\d{3}\)\s?\d{3}[-. ]\d{4}\b|\b\d{3}[-.]\d{3}[-.]\d{4}\b"
            ),
        }
    }

    /// Checks a candidate the pattern found.
    fn accepts(self, candidate: &str) -> bool {
        match self {
            Detector::CreditCard => luhn_valid(candidate),
            Detector::CnId => cn_id_valid(candidate),
            Detector::Ipv6 => {
                candidate.bytes().any(|b| b.is_ascii_hexdigit())
                    && candidate.parse::<Ipv6Addr>().is_ok()
            }
            _ => true,
        }
    }
}

/// How a detected value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `[KIND_N]`, numbered in order of appearance in the request.
    Replace,
    /// `[KIND_<hash>]`: the same value always gives the same token.
    Hash,
}

/// A user rule: a regex, its placeholder kind and mode, or a fixed replacement.
#[derive(Debug, Clone)]
pub struct UserRule {
    pub regex: Regex,
    pub kind: String,
    pub mode: Mode,
    /// A fixed replacement (Higress `value`); such values are not restored.
    pub value: Option<String>,
}

enum Rule<'a> {
    Builtin(Detector, &'a Regex),
    User(&'a UserRule),
}

/// The detectors of one configuration, compiled once.
#[derive(Debug, Clone)]
pub struct Masker {
    builtins: Vec<(Detector, Regex)>,
    user: Vec<UserRule>,
    mode: Mode,
}

/// One value found in a text.
struct Hit {
    start: usize,
    end: usize,
    rule: usize,
}

impl Masker {
    pub fn new(detectors: &[Detector], mode: Mode, user: Vec<UserRule>) -> Masker {
        Masker {
            builtins: detectors
                .iter()
                .filter_map(|d| Regex::new(d.pattern()).ok().map(|r| (*d, r)))
                .collect(),
            user,
            mode,
        }
    }

    fn rules(&self) -> Vec<Rule<'_>> {
        self.user
            .iter()
            .map(Rule::User)
            .chain(self.builtins.iter().map(|(d, r)| Rule::Builtin(*d, r)))
            .collect()
    }

    /// `text` with every sensitive value replaced; placeholders are added to `vault`.
    /// Returns `None` when nothing was found.
    pub fn mask(&self, text: &str, vault: &mut Vault, counter: &mut Counter) -> Option<String> {
        let rules = self.rules();
        let mut hits: Vec<Hit> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let (regex, detector) = match rule {
                Rule::Builtin(d, r) => (*r, Some(*d)),
                Rule::User(u) => (&u.regex, None),
            };
            for m in regex.find_iter(text) {
                if m.is_empty() || detector.is_some_and(|d| !d.accepts(m.as_str())) {
                    continue;
                }
                hits.push(Hit {
                    start: m.start(),
                    end: m.end(),
                    rule: index,
                });
            }
        }
        if hits.is_empty() {
            return None;
        }
        // Earliest first; at one place the rule listed first wins, then the longest match.
        hits.sort_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(a.rule.cmp(&b.rule))
                .then(b.end.cmp(&a.end))
        });
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for hit in hits {
            if hit.start < at {
                continue;
            }
            out.push_str(&text[at..hit.start]);
            let original = &text[hit.start..hit.end];
            out.push_str(&self.replacement(&rules[hit.rule], original, vault, counter));
            at = hit.end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }

    fn replacement(
        &self,
        rule: &Rule,
        original: &str,
        vault: &mut Vault,
        counter: &mut Counter,
    ) -> String {
        let (kind, mode) = match rule {
            Rule::Builtin(d, _) => (d.placeholder_kind().to_string(), self.mode),
            Rule::User(u) => {
                if let Some(value) = &u.value {
                    counter.masked += 1;
                    return value.clone();
                }
                (u.kind.clone(), u.mode)
            }
        };
        counter.masked += 1;
        if let Some(existing) = vault.placeholder_of(original) {
            return existing.to_string();
        }
        let placeholder = match mode {
            Mode::Replace => {
                let n = counter.next(&kind);
                format!("[{kind}_{n}]")
            }
            Mode::Hash => {
                let digest = aigw_shared::sign::sha256_hex(original.as_bytes());
                format!("[{kind}_{}]", &digest[..12])
            }
        };
        vault.insert(placeholder.clone(), original.to_string());
        placeholder
    }
}

/// Masks every text of a request body a provider reads: message contents (strings and text
/// parts), `prompt` and `input`. Returns whether anything changed.
pub fn mask_body(
    body: &mut serde_json::Value,
    masker: &Masker,
    vault: &mut Vault,
    counter: &mut Counter,
) -> bool {
    use serde_json::Value;
    fn mask_value(
        value: &mut Value,
        masker: &Masker,
        vault: &mut Vault,
        counter: &mut Counter,
    ) -> bool {
        match value {
            Value::String(text) => match masker.mask(text, vault, counter) {
                Some(masked) => {
                    *text = masked;
                    true
                }
                None => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .map(|item| match item {
                    Value::Object(part) => part
                        .get_mut("text")
                        .is_some_and(|t| mask_value(t, masker, vault, counter)),
                    other => mask_value(other, masker, vault, counter),
                })
                .fold(false, |a, b| a | b),
            _ => false,
        }
    }
    let mut changed = false;
    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
        for message in messages {
            if let Some(content) = message.get_mut("content") {
                changed |= mask_value(content, masker, vault, counter);
            }
        }
    }
    for key in ["prompt", "input"] {
        if let Some(value) = body.get_mut(key) {
            changed |= mask_value(value, masker, vault, counter);
        }
    }
    changed
}

/// Numbers placeholders per kind across one request.
#[derive(Debug, Default)]
pub struct Counter {
    kinds: Vec<(String, u32)>,
    /// Values replaced.
    pub masked: u64,
}

impl Counter {
    fn next(&mut self, kind: &str) -> u32 {
        match self.kinds.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.kinds.push((kind.to_string(), 1));
                1
            }
        }
    }
}

/// The Luhn check of a card number (separators allowed), 13 to 19 digits.
pub fn luhn_valid(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 {
                    d - 9
                } else {
                    d
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The GB 11643 checksum of an 18-character Chinese resident ID number.
pub fn cn_id_valid(candidate: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let bytes = candidate.as_bytes();
    if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = bytes[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    CHECK[(sum % 11) as usize] == bytes[17].to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(mode: Mode) -> Masker {
        Masker::new(&Detector::ALL, mode, Vec::new())
    }

    fn mask(text: &str) -> (String, Vault) {
        let mut vault = Vault::default();
        let out = masker(Mode::Replace)
            .mask(text, &mut vault, &mut Counter::default())
            .unwrap_or_else(|| text.to_string());
        (out, vault)
    }

    #[test]
    fn each_detector() {
        let cases = [
            (
                "mail alice.smith+x@mail.example.co.uk now",
                "mail [EMAIL_1] now",
            ),
            (
                "call 13812345678 or +86 13912345678",
                "call [PHONE_1] or [PHONE_2]",
            ),
            (
                "US (415) 555-0100 / +1 415 555 0100",
                "US [PHONE_1] / [PHONE_2]",
            ),
            (
                "host 192.168.1.20, not 999.1.1.1",
                "host [IP_1], not 999.1.1.1",
            ),
            ("v6 2001:db8::8a2e:370:7334 and ::1", "v6 [IP_1] and [IP_2]"),
            ("card 4111 1111 1111 1111 ok", "card [CARD_1] ok"),
            (
                "card 4111 1111 1111 1112 bad",
                "card 4111 1111 1111 1112 bad",
            ),
            ("id 11010519491231002X ok", "id [ID_NUMBER_1] ok"),
            ("id 110105194912310021 bad", "id 110105194912310021 bad"),
            (
                "key sk-proj-abcdefghijklmnop1234 and AKIAIOSFODNN7EXAMPLE",
                "key [API_KEY_1] and [API_KEY_2]",
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc",
                "Authorization: [API_KEY_1]",
            ),
            ("at 12:30:45 on 2024-01-02", "at 12:30:45 on 2024-01-02"),
        ];
        for (text, expected) in cases {
            assert_eq!(mask(text).0, expected, "{text}");
        }
    }

    #[test]
    fn the_same_value_gets_the_same_placeholder_and_restores() {
        let (out, vault) = mask("a@b.io and c@d.io and a@b.io");
        assert_eq!(out, "[EMAIL_1] and [EMAIL_2] and [EMAIL_1]");
        assert_eq!(vault.len(), 2);
        assert_eq!(vault.restore_all(&out), "a@b.io and c@d.io and a@b.io");
    }

    #[test]
    fn hash_mode_is_stable_across_requests() {
        let one =
            masker(Mode::Hash).mask("x a@b.io", &mut Vault::default(), &mut Counter::default());
        let two =
            masker(Mode::Hash).mask("y a@b.io", &mut Vault::default(), &mut Counter::default());
        let token = |s: Option<String>| s.unwrap()[2..].to_string();
        assert_eq!(token(one.clone()), token(two));
        assert!(one.unwrap().starts_with("x [EMAIL_"));
    }

    #[test]
    fn user_rules_come_first() {
        let rule = UserRule {
            regex: Regex::new(r"EMP-\d{6}").unwrap(),
            kind: "EMPLOYEE".into(),
            mode: Mode::Replace,
            value: None,
        };
        let fixed = UserRule {
            regex: Regex::new(r"secret-\w+").unwrap(),
            kind: String::new(),
            mode: Mode::Replace,
            value: Some("****".into()),
        };
        let m = Masker::new(&Detector::ALL, Mode::Replace, vec![rule, fixed]);
        let mut vault = Vault::default();
        let out = m
            .mask(
                "EMP-123456 secret-abc a@b.io",
                &mut vault,
                &mut Counter::default(),
            )
            .unwrap();
        assert_eq!(out, "[EMPLOYEE_1] **** [EMAIL_1]");
        assert_eq!(vault.len(), 2, "fixed replacements are not restorable");
    }

    #[test]
    fn request_bodies() {
        let mut body = serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "admin is root@corp.example"},
            {"role": "user", "content": [{"type": "text", "text": "mail root@corp.example from 10.0.0.7"}, {"type": "image_url", "image_url": {"url": "https://x/a@b.io"}}]}
        ]});
        let mut vault = Vault::default();
        let mut counter = Counter::default();
        assert!(mask_body(
            &mut body,
            &masker(Mode::Replace),
            &mut vault,
            &mut counter
        ));
        assert_eq!(body["messages"][0]["content"], "admin is [EMAIL_1]");
        assert_eq!(
            body["messages"][1]["content"][0]["text"],
            "mail [EMAIL_1] from [IP_1]"
        );
        assert_eq!(
            body["messages"][1]["content"][1]["image_url"]["url"], "https://x/a@b.io",
            "only text is masked"
        );
        assert_eq!(counter.masked, 3);
        assert!(!mask_body(
            &mut serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
            &masker(Mode::Replace),
            &mut vault,
            &mut counter
        ));
    }

    #[test]
    fn checksums() {
        assert!(luhn_valid("4111-1111-1111-1111"));
        assert!(luhn_valid("378282246310005"));
        assert!(!luhn_valid("1234567812345678"));
        assert!(cn_id_valid("11010519491231002X"));
        assert!(cn_id_valid("11010519491231002x"));
        assert!(!cn_id_valid("110105194912310020"));
    }

    #[test]
    fn no_panic_on_any_input() {
        let m = masker(Mode::Replace);
        let mut rng = 7u64;
        for len in 0..400 {
            let mut s = String::new();
            for _ in 0..len {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push(
                    [
                        'a', '1', '@', '.', ':', '-', ' ', 'é', '中', 'X', '+', 's', 'k',
                    ][(rng >> 33) as usize % 13],
                );
            }
            let _ = m.mask(&s, &mut Vault::default(), &mut Counter::default());
        }
    }
}
