//! Vertex AI authentication with a service-account key, as Google documents it for server
//! applications: a JWT naming the account, the `cloud-platform` scope and the token endpoint,
//! signed RS256 with the account's private key, is exchanged at the token endpoint
//! (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`) for an access token that lives
//! about an hour. The token is cached (per worker) until shortly before it expires.
//!
//! Pure: the proxy stage sends the exchange as a callout and keeps the cache per worker.

use crate::rs256::PrivateKey;
use aigw_shared::callout::Callout;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// How long a token request may take.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Lifetime asked for the signed assertion (Google's maximum).
const ASSERTION_SECONDS: u64 = 3600;

/// The callout that exchanges a freshly signed assertion for an access token.
pub fn token_request(account: &ServiceAccount, cluster: &str, now_ms: u64) -> Callout {
    let (authority, path) = account.token_endpoint();
    Callout {
        cluster: cluster.to_string(),
        method: "POST",
        path,
        authority,
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: ServiceAccount::token_request_body(&account.assertion(now_ms / 1000)),
        timeout: TOKEN_TIMEOUT,
    }
}

/// The parts of a service-account key file (`type: service_account`) the exchange needs.
pub struct ServiceAccount {
    pub client_email: String,
    pub project_id: Option<String>,
    pub private_key_id: String,
    pub token_uri: String,
    key: PrivateKey,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    #[serde(default)]
    project_id: Option<String>,
    private_key: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default)]
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Parses the JSON key file; errors name the field and never quote the key.
    pub fn parse(json: &str) -> Result<ServiceAccount, String> {
        let file: KeyFile = serde_json::from_str(json).map_err(|e| {
            format!(
                "not a service-account key file: {}",
                e.to_string().split(" at line").next().unwrap_or("")
            )
        })?;
        let der = pem_body(&file.private_key).ok_or("private_key: not a PEM private key")?;
        let key =
            PrivateKey::from_pkcs8_der(&der).ok_or("private_key: not a PKCS#8 RSA private key")?;
        Ok(ServiceAccount {
            client_email: file.client_email,
            project_id: file.project_id,
            private_key_id: file.private_key_id,
            token_uri: file
                .token_uri
                .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
            key,
        })
    }

    /// The signed JWT assertion for a token request at `now` (seconds).
    pub fn assertion(&self, now: u64) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims = serde_json::json!({
            "iss": self.client_email, "scope": SCOPE, "aud": self.token_uri,
            "iat": now, "exp": now + ASSERTION_SECONDS,
        });
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", base64url(&signature))
    }

    /// The form body that exchanges `assertion` for an access token.
    pub fn token_request_body(assertion: &str) -> Vec<u8> {
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}")
            .into_bytes()
    }

    /// (authority, path) of the token endpoint.
    pub fn token_endpoint(&self) -> (String, String) {
        let rest = self
            .token_uri
            .strip_prefix("https://")
            .or_else(|| self.token_uri.strip_prefix("http://"))
            .unwrap_or(&self.token_uri);
        match rest.find('/') {
            Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
            None => (rest.to_string(), "/".to_string()),
        }
    }
}

/// An access token and when it expires (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_at_ms: u64,
}

/// Reads the token endpoint's answer (`{"access_token","expires_in","token_type"}`).
pub fn parse_token_response(body: &[u8], now_ms: u64) -> Result<AccessToken, String> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: String,
        #[serde(default = "an_hour")]
        expires_in: u64,
    }
    fn an_hour() -> u64 {
        3600
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| "the token endpoint's answer has no access_token".to_string())?;
    if answer.access_token.is_empty() || answer.access_token.contains(['\r', '\n']) {
        return Err("the token endpoint answered an unusable access_token".into());
    }
    Ok(AccessToken {
        token: answer.access_token,
        expires_at_ms: now_ms + answer.expires_in * 1000,
    })
}

/// Access tokens by provider id. A token nearing expiry (`refresh_ahead` before it) is
/// replaced by one request while the others keep using it; with no usable token every request
/// asks for one.
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: HashMap<String, AccessToken>,
    /// When a request started replacing a provider's token that is still usable.
    refreshing: HashMap<String, u64>,
}

/// What a request does about its access token.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenPlan {
    /// Use this token.
    Use(String),
    /// Fetch a new token; `stale` is still valid, for use if the fetch fails.
    Fetch { stale: Option<String> },
}

impl TokenCache {
    /// The plan for a request at `now_ms`; a refresh unanswered for `patience_ms` may be
    /// started again.
    pub fn plan(
        &mut self,
        provider: &str,
        now_ms: u64,
        refresh_ahead_ms: u64,
        patience_ms: u64,
    ) -> TokenPlan {
        let Some(token) = self
            .tokens
            .get(provider)
            .filter(|t| t.expires_at_ms > now_ms)
        else {
            return TokenPlan::Fetch { stale: None };
        };
        if token.expires_at_ms > now_ms + refresh_ahead_ms {
            return TokenPlan::Use(token.token.clone());
        }
        match self.refreshing.get(provider) {
            Some(&since) if now_ms < since + patience_ms => TokenPlan::Use(token.token.clone()),
            _ => {
                self.refreshing.insert(provider.to_string(), now_ms);
                TokenPlan::Fetch {
                    stale: Some(token.token.clone()),
                }
            }
        }
    }

    pub fn put(&mut self, provider: &str, token: AccessToken) {
        self.refreshing.remove(provider);
        self.tokens.insert(provider.to_string(), token);
    }
}

/// The DER bytes of a PEM block (`-----BEGIN …-----` … `-----END …-----`).
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN ")?;
    let body_start = start + pem[start..].find('\n')? + 1;
    let body_end = body_start + pem[body_start..].find("-----END ")?;
    base64_decode(&pem[body_start..body_end])
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Unpadded URL-safe base64 (JWT's encoding).
pub fn base64url(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let c = ALPHABET[(n >> (18 - 6 * i) & 63) as usize];
            out.push(match c {
                b'+' => '-',
                b'/' => '_',
                c => c as char,
            });
        }
    }
    out
}

/// Standard base64, whitespace ignored, padding optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 2048-bit RSA key made for these tests only (`openssl genpkey -algorithm RSA`); it
    /// grants nothing anywhere. The e2e Google token mock knows its public half.
    pub const TEST_ONLY_KEY_FILE: &str =
        include_str!("../../../e2e/testdata/test-only-service-account.json");

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64url(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw");
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(
            base64_decode("YW55IGNhcm5h\nbCBwbGVhc3U=").unwrap(),
            b"any carnal pleasu"
        );
        assert_eq!(base64_decode("!!"), None);
    }

    #[test]
    fn assertion_is_a_verifiable_rs256_jwt() {
        let account = ServiceAccount::parse(TEST_ONLY_KEY_FILE).unwrap();
        let jwt = account.assertion(1_700_000_000);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| base64_decode(&s.replace('-', "+").replace('_', "/")).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        assert_eq!(claims["iss"], account.client_email);
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["exp"], 1_700_003_600u64);
        assert_eq!(claims["scope"], SCOPE);
        // Verify with the public half, as the token endpoint does: PKCS#1 v1.5 over SHA-256.
        use rsa::pkcs8::DecodePublicKey;
        let public = rsa::RsaPublicKey::from_public_key_pem(include_str!(
            "../../../e2e/testdata/test-only-service-account.pub.pem"
        ))
        .unwrap();
        let digest = aigw_shared::sign::sha256(format!("{}.{}", parts[0], parts[1]).as_bytes());
        public
            .verify(
                rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha256>(),
                &digest,
                &decode(parts[2]),
            )
            .expect("signature verifies");
        assert_eq!(
            account.token_endpoint(),
            ("oauth2.googleapis.com".into(), "/token".into())
        );
    }

    #[test]
    fn bad_key_files_say_why_without_quoting_the_key() {
        let err = ServiceAccount::parse(r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"}"#).unwrap_err();
        assert_eq!(err, "private_key: not a PKCS#8 RSA private key");
        assert!(ServiceAccount::parse("{}")
            .unwrap_err()
            .contains("client_email"));
    }

    #[test]
    fn tokens_are_cached_and_one_request_replaces_a_token_nearing_expiry() {
        let token = parse_token_response(
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            1_000,
        )
        .unwrap();
        assert_eq!(token.expires_at_ms, 3_600_000);
        let mut cache = TokenCache::default();
        assert_eq!(
            cache.plan("v", 0, 300_000, 10_000),
            TokenPlan::Fetch { stale: None }
        );
        cache.put("v", token);
        assert_eq!(
            cache.plan("v", 1_000, 300_000, 10_000),
            TokenPlan::Use("ya29.x".into())
        );
        // Five minutes before expiry one request refreshes; the others keep the token meanwhile.
        let due = 3_400_000;
        assert_eq!(
            cache.plan("v", due, 300_000, 10_000),
            TokenPlan::Fetch {
                stale: Some("ya29.x".into())
            }
        );
        assert_eq!(
            cache.plan("v", due + 1, 300_000, 10_000),
            TokenPlan::Use("ya29.x".into())
        );
        // A refresh that never answered is tried again after the patience.
        assert!(matches!(
            cache.plan("v", due + 10_000, 300_000, 10_000),
            TokenPlan::Fetch { .. }
        ));
        assert_eq!(
            cache.plan("v", 3_600_000, 300_000, 10_000),
            TokenPlan::Fetch { stale: None },
            "expired"
        );
        assert_eq!(
            cache.plan("other", 1_000, 0, 0),
            TokenPlan::Fetch { stale: None }
        );
        assert!(parse_token_response(br#"{"error":"invalid_grant"}"#, 0).is_err());
    }
}
