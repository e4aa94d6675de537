//! A mock of Aliyun Content Moderation 2.0's `TextModerationPlus` (API version 2022-03-02) on
//! `green-cip.<region>.aliyuncs.com`, after its API reference: V3-signed requests
//! (ACS3-HMAC-SHA256; a wrong signature is 400 `SignatureDoesNotMatch`, an unknown key 404
//! `InvalidAccessKeyId.NotFound`), `Service` and `ServiceParameters` as form fields, content up
//! to 2,000 characters (`Code` 400 past it), and `Data.RiskLevel` / `Data.Result[].Label`.

use super::moderation::{classify, Harm};
use super::{Provider, Recorded, Reply};
use aigw_shared::sign::{acs3_authorization, sha256_hex, SignableRequest};
use serde_json::{json, Value};

pub struct AliyunGreenMock {
    pub access_key_id: String,
    pub access_key_secret: String,
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"RequestId": "B1D4E2C6-mock", "HostId": "green-cip.cn-shanghai.aliyuncs.com", "Code": code, "Message": message,
                "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}")}),
    )
}

/// Decodes `application/x-www-form-urlencoded` pairs.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Credential=…,SignedHeaders=…,Signature=…` fields of an authorization value.
pub struct AuthFields(Vec<(String, String)>);

impl AuthFields {
    pub fn parse(value: &str) -> AuthFields {
        AuthFields(
            value
                .split_once(' ')
                .map_or("", |(_, rest)| rest)
                .split(',')
                .filter_map(|f| f.trim().split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// A field's value, empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The request as it was signed: the signed headers with the values received.
pub fn signed_request<'a>(request: &'a Recorded, signed_headers: &str) -> SignableRequest<'a> {
    let (path, _) = request.path.split_once('?').unwrap_or((&request.path, ""));
    SignableRequest {
        method: &request.method,
        path,
        query: Vec::new(),
        headers: signed_headers
            .split(';')
            .map(|name| {
                (
                    name.to_string(),
                    request.header(name).unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body: &request.body,
    }
}

impl AliyunGreenMock {
    fn check_signature(&self, request: &Recorded) -> Result<(), Reply> {
        let authorization = request.header("authorization").unwrap_or_default();
        let fields = AuthFields::parse(authorization);
        let field = |name: &str| fields.get(name);
        if !authorization.starts_with("ACS3-HMAC-SHA256 ") {
            return Err(error(
                400,
                "MissingAuthorization",
                "Authorization is mandatory for this action.",
            ));
        }
        if field("Credential") != self.access_key_id {
            return Err(error(
                404,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            ));
        }
        let signed = field("SignedHeaders");
        if request.header("x-acs-content-sha256") != Some(sha256_hex(&request.body).as_str())
            || !signed.split(';').any(|h| h == "host")
        {
            return Err(error(
                400,
                "SignatureDoesNotMatch",
                "Specified signature does not match our calculation.",
            ));
        }
        let expected = acs3_authorization(
            &signed_request(request, signed),
            &self.access_key_id,
            &self.access_key_secret,
        );
        if expected != authorization {
            return Err(error(
                400,
                "SignatureDoesNotMatch",
                "Specified signature does not match our calculation.",
            ));
        }
        Ok(())
    }
}

impl Provider for AliyunGreenMock {
    fn handle(&self, request: &Recorded) -> Reply {
        if let Err(reply) = self.check_signature(request) {
            return reply;
        }
        if request.header("x-acs-action") != Some("TextModerationPlus")
            || request.header("x-acs-version") != Some("2022-03-02")
        {
            return error(
                404,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            );
        }
        let form = form_pairs(&request.body);
        let param = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let service = param("Service").unwrap_or_default();
        if !["llm_query_moderation", "llm_response_moderation"].contains(&service.as_str()) {
            return Reply::json(
                200,
                &json!({"Code": 400, "Message": "parameter error: Service", "RequestId": "mock"}),
            );
        }
        let content = param("ServiceParameters")
            .and_then(|p| serde_json::from_str::<Value>(&p).ok())
            .and_then(|p| p.get("content").and_then(Value::as_str).map(str::to_string));
        let Some(content) = content else {
            return Reply::json(
                200,
                &json!({"Code": 400, "Message": "parameter error: content", "RequestId": "mock"}),
            );
        };
        if content.chars().count() > 2000 {
            return Reply::json(
                200,
                &json!({"Code": 400, "Message": "parameter error: content too long", "RequestId": "mock"}),
            );
        }
        let (level, label) = match classify(&content) {
            None => ("none", "nonLabel"),
            Some(Harm::Violence) => ("high", "violent_explosion"),
            Some(Harm::Hate) => ("high", "hate_speech"),
            Some(Harm::SelfHarm) => ("medium", "self_harm"),
        };
        Reply::json(
            200,
            &json!({"Code": 200, "Message": "OK", "RequestId": "AAAAAA-mock",
                    "Data": {"RiskLevel": level, "Result": [{"Label": label, "Confidence": 99.9, "Description": label}], "DataId": null}}),
        )
    }
}
