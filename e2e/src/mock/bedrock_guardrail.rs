//! A mock of AWS Bedrock's `ApplyGuardrail`
//! (`POST /guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply`), after the
//! Bedrock Runtime API reference: SigV4 with service `bedrock` (403 `InvalidSignatureException`
//! / `UnrecognizedClientException` in AWS's `{"message"}` shape with `x-amzn-ErrorType`), 404
//! `ResourceNotFoundException` for an unknown guardrail, 400 `ValidationException` for a bad
//! body, and `action` / `outputs` / `assessments` answers.

use super::aliyun_green::{signed_request, AuthFields};
use super::moderation::{body_json, classify, json_with, Harm};
use super::{Provider, Recorded, Reply};
use aigw_shared::sign::{sha256_hex, sigv4_authorization, AwsCredentials, UtcTime};
use serde_json::{json, Value};

pub struct BedrockGuardrailMock {
    pub credentials: AwsCredentials,
    pub region: String,
    pub guardrail_id: String,
    pub guardrail_version: String,
}

fn error(status: u16, kind: &str, message: &str) -> Reply {
    json_with(
        status,
        &[(
            "x-amzn-errortype",
            &format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        )],
        &json!({"message": message}),
    )
}

/// `20150830T123600Z` back into a time.
fn parse_amz_date(s: &str) -> Option<UtcTime> {
    let n = |range: std::ops::Range<usize>| s.get(range)?.parse::<u32>().ok();
    Some(UtcTime {
        year: i64::from(n(0..4)?),
        month: n(4..6)?,
        day: n(6..8)?,
        hour: n(9..11)?,
        minute: n(11..13)?,
        second: n(13..15)?,
    })
}

impl BedrockGuardrailMock {
    fn check_signature(&self, request: &Recorded) -> Result<(), Reply> {
        let authorization = request.header("authorization").unwrap_or_default();
        let fields = AuthFields::parse(authorization);
        let field = |name: &str| fields.get(name);
        let scope: Vec<&str> = field("Credential").split('/').collect();
        if scope.first() != Some(&self.credentials.access_key_id.as_str()) {
            return Err(error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        }
        let time = request.header("x-amz-date").and_then(parse_amz_date);
        let payload = sha256_hex(&request.body);
        let mismatch = || {
            error(403, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
        };
        let Some(time) = time else {
            return Err(mismatch());
        };
        if scope.get(2) != Some(&self.region.as_str())
            || scope.get(3) != Some(&"bedrock")
            || request.header("x-amz-content-sha256") != Some(payload.as_str())
        {
            return Err(mismatch());
        }
        let signed = signed_request(request, field("SignedHeaders"));
        let expected = sigv4_authorization(
            &signed,
            &self.credentials,
            &self.region,
            "bedrock",
            time,
            &payload,
        );
        if expected != authorization {
            return Err(mismatch());
        }
        Ok(())
    }
}

impl Provider for BedrockGuardrailMock {
    fn handle(&self, request: &Recorded) -> Reply {
        if let Err(reply) = self.check_signature(request) {
            return reply;
        }
        let expected = format!(
            "/guardrail/{}/version/{}/apply",
            self.guardrail_id, self.guardrail_version
        );
        if request.method != "POST" || request.path != expected {
            return error(
                404,
                "ResourceNotFoundException",
                "The guardrail identifier or version provided does not exist.",
            );
        }
        let Some(body) = body_json(request) else {
            return error(
                400,
                "ValidationException",
                "Malformed input request, please reformat your input and try again.",
            );
        };
        let source = body["source"].as_str().unwrap_or_default();
        let texts: Option<Vec<&str>> = body["content"].as_array().map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b.pointer("/text/text").and_then(Value::as_str))
                .collect()
        });
        let (Some(texts), true) = (texts, source == "INPUT" || source == "OUTPUT") else {
            return error(400, "ValidationException", "1 validation error detected: Value at 'source' failed to satisfy constraint: Member must satisfy enum value set: [INPUT, OUTPUT]");
        };
        let harm = texts.iter().find_map(|t| classify(t));
        let usage = json!({"topicPolicyUnits": 1, "contentPolicyUnits": 1, "wordPolicyUnits": 1, "sensitiveInformationPolicyUnits": 1, "sensitiveInformationPolicyFreeUnits": 0, "contextualGroundingPolicyUnits": 0});
        let Some(harm) = harm else {
            return Reply::json(
                200,
                &json!({"usage": usage, "action": "NONE", "outputs": [], "assessments": [{}]}),
            );
        };
        let kind = match harm {
            Harm::Violence => "VIOLENCE",
            Harm::Hate => "HATE",
            Harm::SelfHarm => "MISCONDUCT",
        };
        Reply::json(
            200,
            &json!({"usage": usage, "action": "GUARDRAIL_INTERVENED", "actionReason": "Guardrail blocked.",
                    "outputs": [{"text": "Sorry, the model cannot answer this question."}],
                    "assessments": [{"contentPolicy": {"filters": [{"type": kind, "confidence": "HIGH", "filterStrength": "HIGH", "action": "BLOCKED", "detected": true}]}}]}),
        )
    }
}
