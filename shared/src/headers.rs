//! The one allow-list of client request headers a provider receives. Everything else a client
//! sends (cookies, proxy credentials, `openai-organization` / `openai-project`, which would let a
//! client pick what the gateway's key bills, the consumer header, any `x-*`) is removed at the
//! provider edge; the provider's own headers (key, signature, version) are set after that.

/// Client headers every provider receives: what the request body and content negotiation need,
/// Anthropic's API version and beta switches, tracing, and the scheme Envoy itself sets (its
/// route matching needs it: without it, Envoy finds no route when it matches again after a
/// downstream filter changed the headers).
pub const FORWARDED: &[&str] = &[
    "x-forwarded-proto",
    "content-type",
    "content-length",
    "accept",
    "anthropic-version",
    "anthropic-beta",
    "traceparent",
    "tracestate",
    "x-request-id",
    "user-agent",
];

/// [`FORWARDED`] plus the operator's additions: names, or name prefixes ending in `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderAllowList {
    names: Vec<String>,
    prefixes: Vec<String>,
}

impl HeaderAllowList {
    pub fn new(extra: &[String]) -> Result<HeaderAllowList, String> {
        let mut list = HeaderAllowList::default();
        for entry in extra {
            let name = entry.trim().to_ascii_lowercase();
            let (stem, prefix) = match name.strip_suffix('*') {
                Some(stem) => (stem.to_string(), true),
                None => (name.clone(), false),
            };
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b);
            if stem.is_empty() || !stem.bytes().all(token) {
                return Err(format!(
                    "{entry:?} is not a header name or name prefix ending in *"
                ));
            }
            if prefix {
                list.prefixes.push(stem);
            } else {
                list.names.push(stem);
            }
        }
        Ok(list)
    }

    /// Does a provider receive header `name` (lower case) from the client? Pseudo-headers
    /// (`:path`, `:authority`…) are the request itself and always stay.
    pub fn allows(&self, name: &str) -> bool {
        name.starts_with(':')
            || FORWARDED.contains(&name)
            || self.names.iter().any(|n| n == name)
            || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// The names among `headers` a provider must not receive.
    pub fn removed<'a>(&self, headers: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        headers
            .into_iter()
            .filter(|name| !self.allows(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn only_listed_client_headers_stay() {
        let list = HeaderAllowList::default();
        let sent = [
            ":path",
            ":authority",
            "content-type",
            "anthropic-beta",
            "traceparent",
            "cookie",
            "proxy-authorization",
            "openai-organization",
            "openai-project",
            "x-mse-consumer",
            "x-ai-proxy-client-path",
            "x-anything",
        ];
        assert_eq!(
            list.removed(sent),
            [
                "cookie",
                "proxy-authorization",
                "openai-organization",
                "openai-project",
                "x-mse-consumer",
                "x-ai-proxy-client-path",
                "x-anything"
            ]
        );
    }

    #[test]
    fn operators_add_names_and_prefixes() {
        let list = HeaderAllowList::new(&["OpenAI-Beta".into(), "x-team-*".into()]).unwrap();
        assert!(list.allows("openai-beta"));
        assert!(list.allows("x-team-cost-centre"));
        assert!(!list.allows("x-teams"));
        for bad in ["", "*", "x team", "a:b"] {
            assert!(HeaderAllowList::new(&[bad.into()]).is_err(), "{bad:?}");
        }
    }
}
