//! Mocks of Vertex AI and of Google's OAuth token endpoint, following Google's documented
//! contracts:
//!
//! - [`GoogleTokenMock`]: `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:
//!   jwt-bearer&assertion=<JWT>`. The JWT must be RS256, name the service account (`iss`), the
//!   token endpoint (`aud`) and a scope, be short-lived (`exp - iat` at most an hour, `iat` not
//!   in the future), and its signature must verify with the account's public key (the
//!   test-only key in `e2e/testdata/`). Answers `{"access_token","expires_in","token_type"}`,
//!   or Google's `{"error":"invalid_grant","error_description":…}` errors.
//! - [`VertexMock`]: `POST /v1/projects/{project}/locations/{region}/publishers/google/models/
//!   {model}:generateContent|streamGenerateContent` (Gemini's bodies, see [`super::gemini`])
//!   and `…/publishers/anthropic/models/{model}:rawPredict|streamRawPredict` (Anthropic's
//!   Messages bodies without `model`, with `anthropic_version: vertex-2023-10-16`, see
//!   [`super::anthropic`]), authorised by `Authorization: Bearer <token>` with a token the
//!   token mock issued and that has not expired (401 `UNAUTHENTICATED` otherwise).

use super::anthropic::AnthropicMock;
use super::gemini::{self, GeminiMock};
use super::{Provider, Recorded, Reply};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The test-only service account ai-proxy is configured with in the e2e tests.
pub fn test_service_account() -> String {
    std::fs::read_to_string(
        crate::paths::repo_root().join("e2e/testdata/test-only-service-account.json"),
    )
    .expect("test-only service account")
}

/// Access tokens the token mock issued and until when they are valid.
#[derive(Default)]
pub struct IssuedTokens {
    tokens: Mutex<HashMap<String, Instant>>,
    /// Token requests answered with a token.
    pub issued: AtomicU64,
    /// Refuse every token request from now on (an outage of the token endpoint).
    pub refuse: AtomicBool,
}

impl IssuedTokens {
    fn valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .is_some_and(|until| *until > Instant::now())
    }

    pub fn count(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }
}

pub struct GoogleTokenMock {
    client_email: String,
    public_key: RsaPublicKey,
    tokens: Arc<IssuedTokens>,
    /// `expires_in` of the tokens issued (Google: 3599).
    pub expires_in: u64,
}

impl GoogleTokenMock {
    /// Knows the test-only service account's email and public key.
    pub fn new(tokens: Arc<IssuedTokens>) -> Self {
        let account: Value = serde_json::from_str(&test_service_account()).expect("key file");
        let pem = std::fs::read_to_string(
            crate::paths::repo_root().join("e2e/testdata/test-only-service-account.pub.pem"),
        )
        .expect("public key");
        GoogleTokenMock {
            client_email: account["client_email"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            public_key: RsaPublicKey::from_public_key_pem(&pem).expect("public key PEM"),
            tokens,
            expires_in: 3599,
        }
    }

    fn check(&self, body: &str) -> Result<(), String> {
        let form: HashMap<&str, &str> = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let grant = form.get("grant_type").copied().unwrap_or("");
        if grant != "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
            && grant != "urn:ietf:params:oauth:grant-type:jwt-bearer"
        {
            return Err(format!(
                "unsupported_grant_type|Invalid grant_type: {grant}"
            ));
        }
        let assertion = form.get("assertion").copied().unwrap_or("");
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err("invalid_grant|Invalid JWT: malformed".into());
        };
        let decode = |part: &str| {
            base64url_decode(part)
                .ok_or_else(|| "invalid_grant|Invalid JWT: not base64url".to_string())
        };
        let header: Value = serde_json::from_slice(&decode(header)?)
            .map_err(|_| "invalid_grant|Invalid JWT header")?;
        let claims: Value = serde_json::from_slice(&decode(claims)?)
            .map_err(|_| "invalid_grant|Invalid JWT claims")?;
        if header["alg"] != "RS256" {
            return Err("invalid_grant|Invalid JWT: unsupported algorithm".into());
        }
        if claims["iss"] != self.client_email.as_str() {
            return Err("invalid_grant|Invalid issuer: No such service account".into());
        }
        if claims["aud"] != "https://oauth2.googleapis.com/token" {
            return Err("invalid_grant|Invalid JWT audience".into());
        }
        if !claims["scope"]
            .as_str()
            .is_some_and(|s| s.contains("https://www.googleapis.com/auth/cloud-platform"))
        {
            return Err("invalid_scope|Empty or missing scope not allowed.".into());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap_or(0),
            claims["exp"].as_u64().unwrap_or(0),
        );
        if iat > now + 60 || exp <= now || exp.saturating_sub(iat) > 3600 {
            return Err("invalid_grant|Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.".into());
        }
        let signed = format!("{}.{}", parts[0], parts[1]);
        self.public_key
            .verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(signed.as_bytes()),
                &decode(signature)?,
            )
            .map_err(|_| "invalid_grant|Invalid JWT Signature.".to_string())
    }
}

impl Provider for GoogleTokenMock {
    fn handle(&self, request: &Recorded) -> Reply {
        if (request.method.as_str(), request.path.as_str()) != ("POST", "/token") {
            return Reply::json(404, &json!({"error": "not_found"}));
        }
        if self.tokens.refuse.load(Ordering::Relaxed) {
            return Reply::json(
                503,
                &json!({"error": "internal_failure", "error_description": "Backend Error"}),
            );
        }
        if let Err(why) = self.check(&String::from_utf8_lossy(&request.body)) {
            let (error, description) = why.split_once('|').unwrap_or(("invalid_request", &why));
            return Reply::json(
                400,
                &json!({"error": error, "error_description": description}),
            );
        }
        let n = self.tokens.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!("ya29.mock-access-token-{n}");
        self.tokens
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.clone(),
                Instant::now() + Duration::from_secs(self.expires_in),
            );
        Reply::json(
            200,
            &json!({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}),
        )
    }
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        acc = acc << 6 | ALPHABET.iter().position(|&a| a == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

pub struct VertexMock {
    pub project: String,
    pub region: String,
    tokens: Arc<IssuedTokens>,
    gemini: GeminiMock,
    anthropic: AnthropicMock,
}

impl VertexMock {
    pub fn new(project: &str, region: &str, tokens: Arc<IssuedTokens>) -> Self {
        VertexMock {
            project: project.into(),
            region: region.into(),
            tokens,
            gemini: GeminiMock::default().stamped_with_create_time(),
            anthropic: AnthropicMock::with_key("vertex-internal"),
        }
    }

    /// Claude on Vertex: Anthropic's Messages API with the model in the path.
    fn raw_predict(&self, request: &Recorded, model: &str, method: &str) -> Reply {
        let Ok(mut body) = serde_json::from_slice::<Value>(&request.body) else {
            return gemini::error(400, "Invalid JSON payload received.");
        };
        if body["anthropic_version"] != "vertex-2023-10-16" {
            return gemini::error(
                400,
                "anthropic_version: Input should be 'vertex-2023-10-16'",
            );
        }
        if body.get("model").is_some() {
            return gemini::error(400, "model: Extra inputs are not permitted");
        }
        if (method == "streamRawPredict") != (body["stream"] == true) {
            return gemini::error(
                400,
                "stream: must be true for streamRawPredict and absent for rawPredict",
            );
        }
        let object = body.as_object_mut().expect("object");
        object.remove("anthropic_version");
        object.insert("model".into(), json!(model));
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-mock-"))
            .cloned()
            .collect();
        headers.push(("x-api-key".into(), "vertex-internal".into()));
        headers.push(("anthropic-version".into(), "2023-06-01".into()));
        let messages = Recorded {
            method: "POST".into(),
            path: "/v1/messages".into(),
            headers,
            body: serde_json::to_vec(&body).expect("json").into(),
        };
        self.anthropic.handle(&messages)
    }
}

impl Provider for VertexMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let path = request.path.split('?').next().unwrap_or("");
        let prefix = format!(
            "/v1/projects/{}/locations/{}/publishers/",
            self.project, self.region
        );
        let Some((publisher, rest)) = path
            .strip_prefix(&prefix)
            .and_then(|p| p.split_once("/models/"))
        else {
            return gemini::error(
                404,
                &format!("The requested URL {path} was not found on this server."),
            );
        };
        let Some((model, method)) = rest.split_once(':') else {
            return gemini::error(404, "Method not found.");
        };
        let token = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        if !token.is_some_and(|t| self.tokens.valid(t)) {
            return gemini::error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.");
        }
        match (publisher, method) {
            ("google", _) => self.gemini.generate(request, model, method),
            ("anthropic", "rawPredict" | "streamRawPredict") => {
                self.raw_predict(request, model, method)
            }
            _ => gemini::error(404, "Method not found."),
        }
    }
}
