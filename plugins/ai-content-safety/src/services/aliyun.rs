//! Aliyun Content Moderation 2.0, `TextModerationPlus` (API version 2022-03-02), signed with
//! Aliyun's V3 signature (ACS3-HMAC-SHA256). `Service` is `llm_query_moderation` for prompts
//! and `llm_response_moderation` for answers; `ServiceParameters` carries the text (2,000
//! characters at most, so one request per segment). A `RiskLevel` at or above `riskLevelBar`
//! blocks, labelled with the first `Result[].Label`.

use super::{answer_json, parse_own, CallContext, Defaults, Endpoint, Service};
use crate::verdict::{Finding, Phase, Verdict};
use aigw_shared::callout::Callout;
use aigw_shared::rules::ConfigError;
use aigw_shared::sign::{acs3, uri_encode, UtcTime};
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub const DEFAULTS: Defaults = Defaults {
    host: "green-cip.cn-shanghai.aliyuncs.com",
    path: "/",
    max_chars: 2_000,
};

pub const ACTION: &str = "TextModerationPlus";
pub const VERSION: &str = "2022-03-02";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Aliyun {
    access_key_id: String,
    access_key_secret: String,
    #[serde(default = "default_request_service")]
    request_service: String,
    #[serde(default = "default_response_service")]
    response_service: String,
    #[serde(default = "default_bar")]
    risk_level_bar: String,
}

fn default_request_service() -> String {
    "llm_query_moderation".into()
}

fn default_response_service() -> String {
    "llm_response_moderation".into()
}

fn default_bar() -> String {
    "high".into()
}

/// Risk levels in increasing order.
const LEVELS: [&str; 4] = ["none", "low", "medium", "high"];

fn level(name: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.eq_ignore_ascii_case(name))
}

impl Aliyun {
    pub fn parse(map: &Map<String, Value>) -> Result<Aliyun, ConfigError> {
        let aliyun: Aliyun = parse_own(map)?;
        if level(&aliyun.risk_level_bar).is_none_or(|l| l == 0) {
            return Err(ConfigError::new(
                "riskLevelBar",
                "must be low, medium or high",
            ));
        }
        Ok(aliyun)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Data {
    #[serde(default)]
    risk_level: Option<String>,
    #[serde(default)]
    result: Vec<LabelResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LabelResult {
    #[serde(default)]
    label: String,
}

/// `application/x-www-form-urlencoded` body of the given pairs.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Service for Aliyun {
    fn name(&self) -> &'static str {
        "aliyun"
    }

    fn requests(
        &self,
        endpoint: &Endpoint,
        segments: &[String],
        phase: Phase,
        ctx: CallContext,
    ) -> Vec<Callout> {
        let service = match phase {
            Phase::Request => &self.request_service,
            Phase::Response => &self.response_service,
        };
        let now = UtcTime::from_unix(ctx.now_ms / 1000);
        segments
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let parameters = json!({"content": text}).to_string();
                let body = form(&[("Service", service), ("ServiceParameters", &parameters)]);
                let nonce = format!("{:x}-{:x}-{i}", ctx.now_ms, ctx.sequence);
                endpoint.signed_post(
                    body.into_bytes(),
                    "application/x-www-form-urlencoded",
                    |request| {
                        acs3(
                            request,
                            &self.access_key_id,
                            &self.access_key_secret,
                            ACTION,
                            VERSION,
                            &nonce,
                            now,
                        )
                    },
                )
            })
            .collect()
    }

    fn verdict(&self, status: u16, body: &[u8]) -> Result<Verdict, String> {
        let answer: Answer = answer_json(status, body)?;
        let code_ok = match &answer.code {
            Some(Value::Number(n)) => n.as_u64() == Some(200),
            Some(Value::String(s)) => s == "200",
            _ => false,
        };
        if !code_ok {
            return Err(format!(
                "code {}: {}",
                answer.code.unwrap_or(Value::Null),
                answer.message.unwrap_or_default()
            ));
        }
        let data = answer.data.ok_or("answer without Data")?;
        let risk = data.risk_level.as_deref().and_then(level).unwrap_or(0);
        let bar = level(&self.risk_level_bar).unwrap_or(3);
        if risk < bar {
            return Ok(Verdict::Pass);
        }
        let label = data
            .result
            .iter()
            .map(|r| r.label.as_str())
            .find(|l| !l.is_empty() && *l != "nonLabel")
            .unwrap_or("risk");
        Ok(Verdict::Block(Finding::new("aliyun", label)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::tests::endpoint;

    fn aliyun(bar: &str) -> Aliyun {
        Aliyun::parse(
            json!({"accessKeyId": "ak", "accessKeySecret": "sk", "riskLevelBar": bar})
                .as_object()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn signed_form_requests() {
        let requests = aliyun("high").requests(
            &endpoint("/"),
            &["hello world".into()],
            Phase::Response,
            CallContext {
                now_ms: 1_700_000_000_000,
                sequence: 1,
            },
        );
        let r = &requests[0];
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert_eq!(body, "Service=llm_response_moderation&ServiceParameters=%7B%22content%22%3A%22hello%20world%22%7D");
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-acs-action"), Some("TextModerationPlus"));
        assert_eq!(header("x-acs-version"), Some("2022-03-02"));
        assert_eq!(header("x-acs-date"), Some("2023-11-14T22:13:20Z"));
        assert!(header("authorization").unwrap().starts_with(
            "ACS3-HMAC-SHA256 Credential=ak,SignedHeaders=content-type;host;x-acs-action;"
        ));
        assert!(
            !format!("{:?}", r.headers).contains("\"sk\""),
            "the secret is never sent"
        );
    }

    #[test]
    fn verdicts() {
        let high = br#"{"Code":200,"Data":{"Result":[{"Label":"political_entity","Confidence":100.0,"RiskWords":"x"}],"RiskLevel":"high"},"Message":"OK","RequestId":"r"}"#;
        assert_eq!(
            aliyun("high").verdict(200, high),
            Ok(Verdict::Block(Finding::new("aliyun", "political_entity")))
        );
        let medium = br#"{"Code":200,"Data":{"Result":[{"Label":"abuse"}],"RiskLevel":"medium"},"Message":"OK"}"#;
        assert_eq!(aliyun("high").verdict(200, medium), Ok(Verdict::Pass));
        assert!(aliyun("medium").verdict(200, medium).unwrap().is_block());
        let none = br#"{"Code":200,"Data":{"Result":[{"Label":"nonLabel"}],"RiskLevel":"none"},"Message":"OK"}"#;
        assert_eq!(aliyun("low").verdict(200, none), Ok(Verdict::Pass));
        let denied = br#"{"RequestId":"r","HostId":"green-cip.cn-shanghai.aliyuncs.com","Code":"SignatureDoesNotMatch","Message":"Specified signature does not match our calculation."}"#;
        assert_eq!(
            aliyun("high").verdict(400, denied),
            Err("status 400: Specified signature does not match our calculation.".into())
        );
        assert!(aliyun("high")
            .verdict(200, br#"{"Code":408,"Message":"permission denied"}"#)
            .is_err());
        assert!(Aliyun::parse(
            json!({"accessKeyId": "a", "accessKeySecret": "b", "riskLevelBar": "none"})
                .as_object()
                .unwrap()
        )
        .is_err());
    }
}
