//! AWS Bedrock Guardrails, `ApplyGuardrail`
//! (`POST /guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply`), signed with
//! SigV4 (service `bedrock`). Prompts go as `source: INPUT`, answers as `OUTPUT`, all segments
//! as content blocks of one request. `action: GUARDRAIL_INTERVENED` blocks, labelled with the
//! first assessment that intervened (`topic:<name>`, `content:<TYPE>`, `word`, `pii:<TYPE>`…).

use super::{answer_json, parse_own, CallContext, Defaults, Endpoint, Service};
use crate::verdict::{Finding, Phase, Verdict};
use aigw_shared::callout::Callout;
use aigw_shared::rules::ConfigError;
use aigw_shared::sign::{sigv4, AwsCredentials, UtcTime};
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub const DEFAULTS: Defaults = Defaults {
    host: "",
    path: "",
    max_chars: 20_000,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bedrock {
    region: String,
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
    guardrail_id: String,
    #[serde(default = "default_version")]
    guardrail_version: String,
}

fn default_version() -> String {
    "DRAFT".into()
}

impl Bedrock {
    pub fn parse(map: &Map<String, Value>) -> Result<Bedrock, ConfigError> {
        let bedrock: Bedrock = parse_own(map)?;
        let valid =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid(&bedrock.region) {
            return Err(ConfigError::new(
                "region",
                "must be an AWS region such as us-east-1",
            ));
        }
        if !valid(&bedrock.guardrail_id) {
            return Err(ConfigError::new(
                "guardrailId",
                "must be a guardrail identifier",
            ));
        }
        if !valid(&bedrock.guardrail_version) {
            return Err(ConfigError::new(
                "guardrailVersion",
                "must be a version number or DRAFT",
            ));
        }
        Ok(bedrock)
    }

    pub fn default_host(&self) -> String {
        format!("bedrock-runtime.{}.amazonaws.com", self.region)
    }

    pub fn path(&self) -> String {
        format!(
            "/guardrail/{}/version/{}/apply",
            self.guardrail_id, self.guardrail_version
        )
    }

    fn credentials(&self) -> AwsCredentials {
        AwsCredentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
        }
    }
}

impl Service for Bedrock {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    fn requests(
        &self,
        endpoint: &Endpoint,
        segments: &[String],
        phase: Phase,
        ctx: CallContext,
    ) -> Vec<Callout> {
        let source = match phase {
            Phase::Request => "INPUT",
            Phase::Response => "OUTPUT",
        };
        let content: Vec<Value> = segments
            .iter()
            .map(|t| json!({"text": {"text": t}}))
            .collect();
        let body =
            serde_json::to_vec(&json!({"source": source, "content": content})).unwrap_or_default();
        let now = UtcTime::from_unix(ctx.now_ms / 1000);
        vec![endpoint.signed_post(body, "application/json", |request| {
            sigv4(request, &self.credentials(), &self.region, "bedrock", now)
        })]
    }

    fn verdict(&self, status: u16, body: &[u8]) -> Result<Verdict, String> {
        let answer: Value = answer_json(status, body)?;
        match answer.get("action").and_then(Value::as_str) {
            Some("GUARDRAIL_INTERVENED") => Ok(Verdict::Block(Finding::new(
                "bedrock",
                intervention_label(&answer),
            ))),
            Some("NONE") => Ok(Verdict::Pass),
            other => Err(format!("unexpected action {other:?}")),
        }
    }
}

/// The first policy that intervened, from `assessments`.
fn intervention_label(answer: &Value) -> String {
    let blocked = |v: &Value| {
        v.get("action")
            .and_then(Value::as_str)
            .is_some_and(|a| a != "NONE")
    };
    let policies: [(&str, &str, &str); 6] = [
        ("/topicPolicy/topics", "name", "topic"),
        ("/contentPolicy/filters", "type", "content"),
        ("/wordPolicy/customWords", "", "word"),
        ("/wordPolicy/managedWordLists", "type", "word"),
        ("/sensitiveInformationPolicy/piiEntities", "type", "pii"),
        ("/sensitiveInformationPolicy/regexes", "name", "regex"),
    ];
    for assessment in answer
        .get("assessments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (pointer, key, prefix) in policies {
            let hit = assessment
                .pointer(pointer)
                .and_then(Value::as_array)
                .and_then(|items| items.iter().find(|i| blocked(i)));
            if let Some(item) = hit {
                return match item.get(key).and_then(Value::as_str) {
                    Some(name) if !key.is_empty() => format!("{prefix}:{name}"),
                    _ => prefix.to_string(),
                };
            }
        }
    }
    "intervened".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::tests::endpoint;

    fn bedrock() -> Bedrock {
        Bedrock::parse(json!({"region": "us-east-1", "accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "secret", "guardrailId": "gr1abc", "guardrailVersion": "1"}).as_object().unwrap()).unwrap()
    }

    #[test]
    fn one_signed_request_with_every_segment() {
        let b = bedrock();
        assert_eq!(b.path(), "/guardrail/gr1abc/version/1/apply");
        assert_eq!(b.default_host(), "bedrock-runtime.us-east-1.amazonaws.com");
        let requests = b.requests(
            &endpoint(&b.path()),
            &["a".into(), "b".into()],
            Phase::Request,
            CallContext {
                now_ms: 1_440_938_160_000,
                sequence: 0,
            },
        );
        assert_eq!(requests.len(), 1);
        let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(
            body,
            json!({"source": "INPUT", "content": [{"text": {"text": "a"}}, {"text": {"text": "b"}}]})
        );
        let auth = requests[0]
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap();
        assert!(auth.1.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,"), "{}", auth.1);
    }

    #[test]
    fn verdicts() {
        let b = bedrock();
        let intervened = br#"{"usage":{"topicPolicyUnits":1},"action":"GUARDRAIL_INTERVENED","outputs":[{"text":"Sorry."}],"assessments":[{"contentPolicy":{"filters":[{"type":"VIOLENCE","confidence":"HIGH","filterStrength":"HIGH","action":"BLOCKED","detected":true}]}}]}"#;
        assert_eq!(
            b.verdict(200, intervened),
            Ok(Verdict::Block(Finding::new("bedrock", "content:VIOLENCE")))
        );
        let topic = br#"{"action":"GUARDRAIL_INTERVENED","assessments":[{"topicPolicy":{"topics":[{"name":"Investing","type":"DENY","action":"BLOCKED"}]}}]}"#;
        assert_eq!(
            b.verdict(200, topic),
            Ok(Verdict::Block(Finding::new("bedrock", "topic:Investing")))
        );
        assert_eq!(
            b.verdict(200, br#"{"action":"NONE","outputs":[],"assessments":[{}]}"#),
            Ok(Verdict::Pass)
        );
        assert_eq!(
            b.verdict(
                403,
                br#"{"message":"The security token included in the request is invalid."}"#
            ),
            Err("status 403: The security token included in the request is invalid.".into())
        );
    }
}
