//! Request signing for cloud APIs called from plugins: AWS Signature Version 4 (Bedrock,
//! Bedrock Guardrails) and Aliyun's ACS3-HMAC-SHA256 (V3 signature, every Aliyun OpenAPI),
//! with SHA-256 and HMAC-SHA256 helpers. The AWS test-suite vectors are the unit tests.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha256(data))
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as both AWS and
/// Aliyun canonical forms want it (space as `%20`, `~` kept).
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A UTC time as the signatures write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcTime {
    pub fn from_unix(seconds: u64) -> UtcTime {
        let days = (seconds / 86_400) as i64;
        let rest = seconds % 86_400;
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: (rest / 3600) as u32,
            minute: (rest % 3600 / 60) as u32,
            second: (rest % 60) as u32,
        }
    }

    /// `20150830`
    pub fn date(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// `20150830T123600Z` (AWS `x-amz-date`)
    pub fn basic(&self) -> String {
        format!(
            "{}T{:02}{:02}{:02}Z",
            self.date(),
            self.hour,
            self.minute,
            self.second
        )
    }

    /// `2015-08-30T12:36:00Z` (Aliyun `x-acs-date`)
    pub fn iso8601(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// A request to sign: method, path (as sent), query parameters (decoded), headers, body.
#[derive(Debug, Clone, Default)]
pub struct SignableRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Vec<(&'a str, &'a str)>,
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl SignableRequest<'_> {
    fn canonical_query(&self) -> String {
        let mut pairs: Vec<(String, String)> = self
            .query
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        pairs.sort();
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Canonical headers (`name:value\n`, sorted) and the signed header list.
    fn canonical_headers(&self) -> (String, String) {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        headers.sort();
        let mut canonical = String::new();
        let mut names: Vec<String> = Vec::new();
        for (name, value) in &headers {
            if names.last() == Some(name) {
                // Repeated headers sign as one, values comma-joined.
                canonical.pop();
                canonical.push(',');
                canonical.push_str(value);
                canonical.push('\n');
                continue;
            }
            canonical.push_str(&format!("{name}:{value}\n"));
            names.push(name.clone());
        }
        (canonical, names.join(";"))
    }

    fn canonical_request(&self, canonical_uri: &str, payload_hash: &str) -> (String, String) {
        let (headers, signed) = self.canonical_headers();
        let request = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.method,
            canonical_uri,
            self.canonical_query(),
            headers,
            signed,
            payload_hash
        );
        (request, signed)
    }
}

/// AWS credentials (`session_token` for temporary ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Signs `request` with SigV4; returns the headers to add (`x-amz-date`,
/// `x-amz-content-sha256`, optionally `x-amz-security-token`, and `authorization`). The
/// request's `host` header must be among its headers.
pub fn sigv4(
    request: &SignableRequest,
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    now: UtcTime,
) -> Vec<(String, String)> {
    let mut request = request.clone();
    let amz_date = now.basic();
    let payload_hash = sha256_hex(request.body);
    let mut added = vec![
        ("x-amz-date".to_string(), amz_date.clone()),
        ("x-amz-content-sha256".to_string(), payload_hash.clone()),
    ];
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".to_string(), token.clone()));
    }
    request.headers.extend(added.iter().cloned());
    let authorization =
        sigv4_authorization(&request, credentials, region, service, now, &payload_hash);
    added.push(("authorization".to_string(), authorization));
    added
}

/// The `Authorization` value for a request whose headers are final.
pub fn sigv4_authorization(
    request: &SignableRequest,
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    now: UtcTime,
    payload_hash: &str,
) -> String {
    // Every service but S3 encodes each path segment once more.
    let canonical_uri = if request.path.is_empty() {
        "/".to_string()
    } else {
        uri_encode(request.path, true)
    };
    let (canonical, signed) = request.canonical_request(&canonical_uri, payload_hash);
    let date = now.date();
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        now.basic(),
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac_sha256(
        format!("AWS4{}", credentials.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    let signature = hex(&hmac_sha256(&k_signing, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        credentials.access_key_id
    )
}

/// Signs `request` with Aliyun's V3 signature (ACS3-HMAC-SHA256) for `action` of API
/// `version`; returns the headers to add (`x-acs-action`, `x-acs-version`, `x-acs-date`,
/// `x-acs-signature-nonce`, `x-acs-content-sha256`, `authorization`). The request's `host`
/// header must be among its headers.
pub fn acs3(
    request: &SignableRequest,
    access_key_id: &str,
    access_key_secret: &str,
    action: &str,
    version: &str,
    nonce: &str,
    now: UtcTime,
) -> Vec<(String, String)> {
    let mut request = request.clone();
    let payload_hash = sha256_hex(request.body);
    let mut added = vec![
        ("x-acs-action".to_string(), action.to_string()),
        ("x-acs-version".to_string(), version.to_string()),
        ("x-acs-date".to_string(), now.iso8601()),
        ("x-acs-signature-nonce".to_string(), nonce.to_string()),
        ("x-acs-content-sha256".to_string(), payload_hash),
    ];
    request.headers.extend(added.iter().cloned());
    added.push((
        "authorization".to_string(),
        acs3_authorization(&request, access_key_id, access_key_secret),
    ));
    added
}

/// The `Authorization` value for an Aliyun request whose headers are final.
pub fn acs3_authorization(
    request: &SignableRequest,
    access_key_id: &str,
    access_key_secret: &str,
) -> String {
    let canonical_uri = if request.path.is_empty() {
        "/".to_string()
    } else {
        uri_encode(request.path, true)
    };
    let (canonical, signed) = request.canonical_request(&canonical_uri, &sha256_hex(request.body));
    let string_to_sign = format!("ACS3-HMAC-SHA256\n{}", sha256_hex(canonical.as_bytes()));
    let signature = hex(&hmac_sha256(
        access_key_secret.as_bytes(),
        string_to_sign.as_bytes(),
    ));
    format!(
        "ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={signed},Signature={signature}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn example() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn suite_time() -> UtcTime {
        UtcTime::from_unix(1_440_938_160) // 2015-08-30T12:36:00Z
    }

    #[test]
    fn hash_and_mac_vectors() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn utc_dates() {
        let t = suite_time();
        assert_eq!(t.basic(), "20150830T123600Z");
        assert_eq!(t.iso8601(), "2015-08-30T12:36:00Z");
        assert_eq!(UtcTime::from_unix(951_782_400).date(), "20000229");
        assert_eq!(UtcTime::from_unix(0).iso8601(), "1970-01-01T00:00:00Z");
    }

    /// The AWS SigV4 test suite (`get-vanilla`, `post-vanilla`, `get-vanilla-query-order-key-case`),
    /// service `service`, region `us-east-1`.
    #[test]
    fn aws_test_suite() {
        let headers = vec![
            ("Host".to_string(), "example.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let empty_hash = sha256_hex(b"");
        let cases = [
            (
                "GET",
                vec![],
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "POST",
                vec![],
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                "GET",
                vec![("Param2", "value2"), ("Param1", "value1")],
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
        ];
        for (method, query, signature) in cases {
            let request = SignableRequest {
                method,
                path: "/",
                query,
                headers: headers.clone(),
                body: b"",
            };
            let auth = sigv4_authorization(
                &request,
                &example(),
                "us-east-1",
                "service",
                suite_time(),
                &empty_hash,
            );
            assert_eq!(
                auth,
                format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"),
                "{method}"
            );
        }
    }

    /// The worked example of AWS's SigV4 documentation (IAM `ListUsers`).
    #[test]
    fn aws_documentation_example() {
        let request = SignableRequest {
            method: "GET",
            path: "/",
            query: vec![("Action", "ListUsers"), ("Version", "2010-05-08")],
            headers: vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                ),
                ("host".into(), "iam.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            body: b"",
        };
        let auth = sigv4_authorization(
            &request,
            &example(),
            "us-east-1",
            "iam",
            suite_time(),
            &sha256_hex(b""),
        );
        assert!(
            auth.ends_with(
                "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            ),
            "{auth}"
        );
    }

    #[test]
    fn sigv4_adds_date_payload_hash_token_and_authorization() {
        let mut creds = example();
        creds.session_token = Some("token".into());
        let request = SignableRequest {
            method: "POST",
            path: "/guardrail/abc123/version/1/apply",
            query: vec![],
            headers: vec![(
                "host".into(),
                "bedrock-runtime.us-east-1.amazonaws.com".into(),
            )],
            body: b"{}",
        };
        let added = sigv4(&request, &creds, "us-east-1", "bedrock", suite_time());
        let names: Vec<&str> = added.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-amz-date",
                "x-amz-content-sha256",
                "x-amz-security-token",
                "authorization"
            ]
        );
        assert!(added[3]
            .1
            .contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
        // Signing is deterministic: the same request at the same time verifies.
        assert_eq!(
            added,
            sigv4(&request, &creds, "us-east-1", "bedrock", suite_time())
        );
    }

    #[test]
    fn acs3_canonical_form() {
        let request = SignableRequest {
            method: "POST",
            path: "/",
            query: vec![
                ("Service", "llm_query_moderation"),
                ("ServiceParameters", "{\"content\":\"a b*\"}"),
            ],
            headers: vec![("host".into(), "green-cip.cn-shanghai.aliyuncs.com".into())],
            body: b"",
        };
        let (canonical, signed) = request.canonical_request("/", &sha256_hex(b""));
        assert_eq!(
            canonical,
            format!(
                "POST\n/\nService=llm_query_moderation&ServiceParameters=%7B%22content%22%3A%22a%20b%2A%22%7D\nhost:green-cip.cn-shanghai.aliyuncs.com\n\nhost\n{}",
                sha256_hex(b"")
            )
        );
        assert_eq!(signed, "host");
        let added = acs3(
            &request,
            "ak",
            "secret",
            "TextModerationPlus",
            "2022-03-02",
            "n1",
            suite_time(),
        );
        let auth = &added.last().unwrap().1;
        assert!(auth.starts_with("ACS3-HMAC-SHA256 Credential=ak,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature="), "{auth}");
        // The signature is HMAC-SHA256 of the string to sign, recomputed here by hand.
        let mut signed_request = request.clone();
        signed_request.headers.extend(added[..5].iter().cloned());
        let (canonical, _) = signed_request.canonical_request("/", &sha256_hex(b""));
        let expected = hex(&hmac_sha256(
            b"secret",
            format!("ACS3-HMAC-SHA256\n{}", sha256_hex(canonical.as_bytes())).as_bytes(),
        ));
        assert!(auth.ends_with(&format!("Signature={expected}")));
    }
}
