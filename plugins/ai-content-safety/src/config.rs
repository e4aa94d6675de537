//! Configuration of ai-content-safety (one object, global or per `_rules_` entry). Key names
//! follow Higress's ai-security-guard where it has them (`checkRequest`, `checkResponse`,
//! `denyCode`, `denyMessage`, `requestContentJsonPath`, `responseContentJsonPath`,
//! `riskLevelBar`, `timeout`) and its ai-data-masking for masking rules (`replace_roles`).
//! Its `bufferLimit` sets the stream window; its `protocol` and `responseStreamContentJsonPath`
//! are accepted and ignored, so that its configs move over unchanged.

use crate::extract::{parse_path, PromptSource, Unparsable};
use crate::hold::Windows;
use crate::local::LocalChecker;
use crate::mask::{Detector, Masker, Mode, UserRule};
use crate::services::{self, Configured};
use aigw_shared::body::DEFAULT_BODY_LIMIT;
use aigw_shared::rules::{parse_object, ConfigError};
use serde::Deserialize;
use serde_json::{Map, Value};

pub const DEFAULT_DENY_MESSAGE: &str =
    "Sorry, I can't help with that. The content was blocked by the gateway's safety policy.";

/// The largest window of a streamed answer, when none is set.
const MAX_WINDOW_CHARS: usize = 500;
/// The first window when windows grow: a couple of words.
const FIRST_WINDOW_CHARS: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct Raw {
    check_request: bool,
    check_response: bool,
    request_content: String,
    request_content_json_path: Option<String>,
    response_content_json_path: Option<String>,
    deny_code: u16,
    deny_message: String,
    local: RawLocal,
    service: Option<Map<String, Value>>,
    stream: RawStream,
    max_body_bytes: usize,
    max_event_bytes: Option<usize>,
    log_key: String,
    data_masking: Option<RawMasking>,
    /// Higress's characters of a streamed answer checked at once: `stream.windowChars`.
    buffer_limit: Option<usize>,
    unparsable_answer: String,
}

/// Higress ai-security-guard keys that mean nothing here, and why.
pub const IGNORED_HIGRESS_KEYS: [(&str, &str); 2] = [
    (
        "protocol",
        "bodies are read as OpenAI's, or at requestContentJsonPath and responseContentJsonPath",
    ),
    (
        "responseStreamContentJsonPath",
        "streamed answers are read as OpenAI chunks (choices[].delta.content)",
    ),
];

impl Default for Raw {
    fn default() -> Self {
        Raw {
            check_request: true,
            check_response: true,
            request_content: "last_user".into(),
            request_content_json_path: None,
            response_content_json_path: None,
            deny_code: 200,
            deny_message: DEFAULT_DENY_MESSAGE.into(),
            local: RawLocal::default(),
            service: None,
            stream: RawStream::default(),
            max_body_bytes: DEFAULT_BODY_LIMIT,
            max_event_bytes: None,
            log_key: "ai_content_safety".into(),
            data_masking: None,
            buffer_limit: None,
            unparsable_answer: "block".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct RawLocal {
    deny_words: Vec<String>,
    deny_regexes: Vec<String>,
    prompt_injection: bool,
}

impl Default for RawLocal {
    fn default() -> Self {
        RawLocal {
            deny_words: Vec::new(),
            deny_regexes: Vec::new(),
            prompt_injection: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct RawStream {
    /// The first window when windows grow (they do when no window size is set).
    first_window_chars: Option<usize>,
    window_chars: Option<usize>,
    overlap_chars: Option<usize>,
    max_hold_ms: u64,
    max_hold_bytes: usize,
}

impl Default for RawStream {
    fn default() -> Self {
        RawStream {
            first_window_chars: None,
            window_chars: None,
            overlap_chars: None,
            max_hold_ms: 1000,
            max_hold_bytes: 256 << 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMasking {
    /// Built-in detectors by name (all when absent).
    types: Option<Vec<String>>,
    mode: String,
    restore: bool,
    replace_roles: Vec<RawRule>,
}

impl Default for RawMasking {
    fn default() -> Self {
        RawMasking {
            types: None,
            mode: "replace".into(),
            restore: true,
            replace_roles: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    regex: String,
    #[serde(rename = "type", default = "replace")]
    mode: String,
    #[serde(default)]
    value: Option<String>,
    /// Placeholder kind, `[<name>_1]` (`MASKED` by default).
    #[serde(default)]
    name: Option<String>,
}

fn replace() -> String {
    "replace".into()
}

/// Data masking of requests.
#[derive(Debug)]
pub struct Masking {
    pub masker: Masker,
    pub restore: bool,
}

/// One parsed configuration.
pub struct Config {
    pub check_request: bool,
    pub check_response: bool,
    pub prompt: PromptSource,
    pub response_path: Option<Vec<String>>,
    pub deny_code: u16,
    pub deny_message: String,
    pub local: LocalChecker,
    pub service: Option<Configured>,
    pub windows: Windows,
    pub unparsable: Unparsable,
    pub max_body_bytes: usize,
    /// Bound on one streamed event (`maxEventBytes`): past it the stream ends with an error.
    pub max_event_bytes: usize,
    pub log_key: String,
    pub masking: Option<Masking>,
}

impl Config {
    pub fn from_map(map: &Map<String, Value>) -> Result<Config, ConfigError> {
        let raw: Raw = parse_object(map)?;
        if !(raw.deny_code == 200 || (400..500).contains(&raw.deny_code)) {
            return Err(ConfigError::new(
                "denyCode",
                "must be 200 or a 4xx status (400, 403, 451…)",
            ));
        }
        let prompt = match (
            raw.request_content_json_path.as_deref(),
            raw.request_content.as_str(),
        ) {
            (Some(path), _) if !path.trim().is_empty() => PromptSource::Path(parse_path(path)),
            (_, "last_user") => PromptSource::NewestTurn,
            (_, "all") => PromptSource::All,
            _ => {
                return Err(ConfigError::new(
                    "requestContent",
                    "must be last_user or all",
                ))
            }
        };
        let unparsable = match raw.unparsable_answer.as_str() {
            "block" => Unparsable::Block,
            "check_raw" => Unparsable::CheckRaw,
            _ => {
                return Err(ConfigError::new(
                    "unparsableAnswer",
                    "must be block or check_raw",
                ))
            }
        };
        let local = LocalChecker::new(
            &raw.local.deny_words,
            &raw.local.deny_regexes,
            raw.local.prompt_injection,
        )
        .map_err(|(i, e)| ConfigError::new(format!("local.denyRegexes[{i}]"), e))?;
        let service = raw
            .service
            .as_ref()
            .map(services::parse)
            .transpose()
            .map_err(|e| e.under("service"))?;
        let s = &raw.stream;
        let fixed = s.window_chars.or(raw.buffer_limit);
        let window_chars = fixed.unwrap_or(MAX_WINDOW_CHARS);
        // A window size set by hand is every window's; otherwise they start small and grow.
        let first_window_chars = s
            .first_window_chars
            .unwrap_or(if fixed.is_some() {
                window_chars
            } else {
                FIRST_WINDOW_CHARS
            })
            .min(window_chars);
        if window_chars == 0
            || first_window_chars == 0
            || s.max_hold_ms == 0
            || s.max_hold_bytes < 1024
        {
            return Err(ConfigError::new(
                "stream",
                "firstWindowChars, windowChars and maxHoldMs must be positive, maxHoldBytes at least 1024",
            ));
        }
        // A deny word split across two windows must be whole in the second one.
        let words = LocalChecker::longest_word_chars(&raw.local.deny_words).saturating_sub(1);
        let overlap = s
            .overlap_chars
            .unwrap_or_else(|| words.max((window_chars / 4).min(64)))
            .max(words);
        if overlap >= window_chars {
            return Err(ConfigError::new(
                "stream.overlapChars",
                "must be less than windowChars",
            ));
        }
        if raw.log_key.is_empty()
            || !raw
                .log_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(ConfigError::new(
                "logKey",
                "must be letters, digits, '_' or '.'",
            ));
        }
        let masking = raw
            .data_masking
            .map(parse_masking)
            .transpose()
            .map_err(|e| e.under("dataMasking"))?;
        Ok(Config {
            check_request: raw.check_request,
            check_response: raw.check_response,
            prompt,
            response_path: raw
                .response_content_json_path
                .as_deref()
                .filter(|p| !p.trim().is_empty())
                .map(parse_path),
            deny_code: raw.deny_code,
            deny_message: raw.deny_message,
            local,
            service,
            windows: Windows {
                first_window_chars,
                window_chars,
                overlap_chars: overlap,
                max_hold_bytes: s.max_hold_bytes,
                max_hold_ms: s.max_hold_ms,
            },
            unparsable,
            max_body_bytes: raw.max_body_bytes,
            max_event_bytes: aigw_shared::event_bound::configured(raw.max_event_bytes)
                .map_err(|why| ConfigError::new("maxEventBytes", why))?,
            log_key: raw.log_key,
            masking,
        })
    }

    /// Whether the request body must be read.
    pub fn reads_request(&self) -> bool {
        self.masking.is_some() || (self.check_request && self.has_checks())
    }

    /// Whether responses are checked at all.
    pub fn checks_response(&self) -> bool {
        self.check_response && self.has_checks()
    }

    fn has_checks(&self) -> bool {
        !self.local.is_empty() || self.service.is_some()
    }
}

fn mode(name: &str, path: &str) -> Result<Mode, ConfigError> {
    match name {
        "replace" => Ok(Mode::Replace),
        "hash" => Ok(Mode::Hash),
        _ => Err(ConfigError::new(path, "must be replace or hash")),
    }
}

fn parse_masking(raw: RawMasking) -> Result<Masking, ConfigError> {
    let detectors = match &raw.types {
        None => Detector::ALL.to_vec(),
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                Detector::from_name(n).ok_or_else(|| {
                    ConfigError::new(
                        format!("types[{i}]"),
                        "one of phone, email, ipv4, ipv6, credit_card, cn_id, api_key",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let rules = raw
        .replace_roles
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let path = format!("replace_roles[{i}]");
            Ok(UserRule {
                regex: regex_lite::Regex::new(&r.regex)
                    .map_err(|e| ConfigError::new(format!("{path}.regex"), e.to_string()))?,
                kind: r
                    .name
                    .map(|n| n.to_ascii_uppercase())
                    .filter(|n| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
                    .unwrap_or_else(|| "MASKED".into()),
                mode: mode(&r.mode, &format!("{path}.type"))?,
                value: r.value,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(Masking {
        masker: Masker::new(&detectors, mode(&raw.mode, "mode")?, rules),
        restore: raw.restore,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Config, ConfigError> {
        Config::from_map(v.as_object().unwrap())
    }

    #[test]
    fn defaults() {
        let c = parse(json!({})).unwrap();
        assert!(c.check_request && c.check_response);
        assert_eq!(c.deny_code, 200);
        assert_eq!(c.prompt, PromptSource::NewestTurn);
        assert_eq!(c.unparsable, Unparsable::Block);
        assert_eq!(c.windows.window_chars, 500);
        assert_eq!(
            c.windows.first_window_chars, 8,
            "windows grow from a couple of words"
        );
        assert_eq!(c.windows.overlap_chars, 64);
        assert!(
            c.reads_request(),
            "prompt-injection patterns are on by default"
        );
        assert!(!c.checks_response() || !c.local.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let path = |v: Value| parse(v).err().unwrap().path;
        assert_eq!(path(json!({"denyCode": 302})), "denyCode");
        assert_eq!(path(json!({"checkRequst": true})), "checkRequst");
        assert_eq!(
            path(json!({"local": {"denyRegexes": ["ok", "("]}})),
            "local.denyRegexes[1]"
        );
        assert_eq!(
            path(json!({"local": {"denyWords": "bomb"}})),
            "local.denyWords"
        );
        assert_eq!(
            path(json!({"service": {"type": "openai", "cluster": "c"}})),
            "service.apiKey"
        );
        assert_eq!(
            path(json!({"dataMasking": {"types": ["phone", "dna"]}})),
            "dataMasking.types[1]"
        );
        assert_eq!(
            path(json!({"dataMasking": {"replace_roles": [{"regex": "["}]}})),
            "dataMasking.replace_roles[0].regex"
        );
        assert_eq!(
            path(json!({"stream": {"windowChars": 10, "overlapChars": 10}})),
            "stream.overlapChars"
        );
        assert_eq!(path(json!({"requestContent": "first"})), "requestContent");
        assert_eq!(
            path(json!({"unparsableAnswer": "pass"})),
            "unparsableAnswer"
        );
    }

    /// A config as `on_configure` parses it, the ignored keys removed.
    fn parse_migrated(mut v: Value) -> Result<Config, ConfigError> {
        aigw_shared::rules::strip_ignored_keys(&mut v, &IGNORED_HIGRESS_KEYS);
        parse(v)
    }

    #[test]
    fn a_higress_ai_security_guard_config_parses() {
        let c = parse_migrated(json!({
            "checkRequest": true, "checkResponse": true, "denyCode": 200, "denyMessage": "no",
            "protocol": "openai", "bufferLimit": 1000,
            "requestContentJsonPath": "messages.@reverse.0.content",
            "responseContentJsonPath": "choices.0.message.content",
            "responseStreamContentJsonPath": "choices.0.delta.content"
        }))
        .unwrap();
        assert_eq!(c.windows.window_chars, 1000, "bufferLimit is the window");
        assert_eq!(
            c.windows.first_window_chars, 1000,
            "a window set by hand does not grow"
        );
        let c = parse(json!({"bufferLimit": 1000, "stream": {"windowChars": 300}})).unwrap();
        assert_eq!(c.windows.window_chars, 300, "stream.windowChars wins");
        let err = parse_migrated(json!({"protocol": "openai", "riskLevel": "high"})).err();
        assert_eq!(err.unwrap().path, "riskLevel");
    }

    #[test]
    fn overlap_covers_the_longest_deny_word() {
        let long = "x".repeat(200);
        let c =
            parse(json!({"local": {"denyWords": [long]}, "stream": {"overlapChars": 10}})).unwrap();
        assert_eq!(c.windows.overlap_chars, 199);
    }
}
