//! Which requests the gateway serves. It translates, meters and checks chat completions,
//! Anthropic messages, embeddings and the model list; every other method and path is refused
//! with a 404, because forwarding it would hand the provider's key to any client, unmetered.
//! Operators who want some other API reach the provider list it in `passthroughPaths`: those
//! requests go to the provider with its key, neither translated, metered nor checked.

use crate::translate::without_query;
use aigw_shared::error::{ApiError, ClientApi};

/// One `passthroughPaths` entry, written `"METHOD /path"`: `METHOD` is a method name or `*`
/// (any method); the path matches exactly, or as a prefix when it ends with `*`. The query
/// string is not part of the match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughPath {
    /// `None` for any method.
    method: Option<String>,
    path: String,
    prefix: bool,
}

impl PassthroughPath {
    pub fn parse(entry: &str) -> Result<PassthroughPath, String> {
        let (method, path) = entry.trim().split_once(' ').ok_or_else(|| {
            format!("{entry:?}: expected \"METHOD /path\", e.g. \"GET /v1/files*\"")
        })?;
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(format!("{entry:?}: the path must start with /"));
        }
        let (path, prefix) = match path.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (path, false),
        };
        if path.contains(['*', '?']) {
            return Err(format!(
                "{entry:?}: only a trailing * is a wildcard, and the query is never matched"
            ));
        }
        let method = match method.trim() {
            "*" => None,
            m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(m.to_ascii_uppercase())
            }
            m => return Err(format!("{entry:?}: {m:?} is not a method name or *")),
        };
        Ok(PassthroughPath {
            method,
            path: path.to_string(),
            prefix,
        })
    }

    /// Does this entry let `method path` through? A path that could mean another one to the
    /// provider (dot segments, encoded slashes or dots) never matches a prefix entry.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let path = without_query(path);
        if self.method.as_deref().is_some_and(|m| m != method) {
            return false;
        }
        if !self.prefix {
            return path == self.path;
        }
        path.starts_with(&self.path) && !is_ambiguous(path)
    }
}

fn is_ambiguous(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
        || ["%2e", "%2f", "%5c", "\\"]
            .iter()
            .any(|s| lower.contains(s))
}

/// Which error shape a client of `path` reads: Anthropic's for the Messages family.
pub fn client_api_of(path: &str) -> ClientApi {
    let path = without_query(path);
    if path.ends_with("/v1/messages") || path.contains("/v1/messages/") {
        ClientApi::Anthropic
    } else {
        ClientApi::OpenAi
    }
}

/// The 404 for a request the gateway does not serve, naming its method and path.
pub fn not_served(method: &str, path: &str) -> ApiError {
    let path = without_query(path);
    let shown: String = path.chars().take(200).collect();
    ApiError::new(
        404,
        "invalid_request_error",
        format!("{method} {shown:?} is not an API this gateway serves"),
    )
    .with_code("unknown_url")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_method_and_exact_or_prefix_path() {
        let files = PassthroughPath::parse("GET /v1/files*").unwrap();
        assert!(files.matches("GET", "/v1/files"));
        assert!(files.matches("GET", "/v1/files/file-abc/content?x=1"));
        assert!(!files.matches("DELETE", "/v1/files/file-abc"));
        assert!(!files.matches("GET", "/v1/fil"));
        let batches = PassthroughPath::parse("post /v1/batches").unwrap();
        assert!(batches.matches("POST", "/v1/batches?limit=1"));
        assert!(!batches.matches("POST", "/v1/batches/b1"));
        let any = PassthroughPath::parse("* /mcp*").unwrap();
        assert!(any.matches("DELETE", "/mcp/session"));
    }

    #[test]
    fn a_prefix_never_lets_another_path_through() {
        let files = PassthroughPath::parse("GET /v1/files*").unwrap();
        for path in [
            "/v1/files/../organization/users",
            "/v1/files/./x",
            "/v1/files/%2e%2e/organization/users",
            "/v1/files%2F..%2Forganization",
            "/v1/files/..\\organization",
        ] {
            assert!(!files.matches("GET", path), "{path}");
        }
    }

    #[test]
    fn malformed_entries_are_refused() {
        for entry in [
            "/v1/files",
            "GET v1/files",
            "GET /v1/*/files",
            "G3T /x",
            "GET /x?y=1",
        ] {
            assert!(PassthroughPath::parse(entry).is_err(), "{entry}");
        }
    }

    #[test]
    fn the_refusal_names_method_and_path_in_the_client_api() {
        let err = not_served("POST", "/v1/responses?stream=true");
        assert_eq!(err.status, 404);
        assert!(
            err.message.contains("POST \"/v1/responses\""),
            "{}",
            err.message
        );
        assert_eq!(client_api_of("/v1/messages/batches"), ClientApi::Anthropic);
        assert_eq!(
            client_api_of("/v1/messages?beta=true"),
            ClientApi::Anthropic
        );
        assert_eq!(client_api_of("/v1/files"), ClientApi::OpenAi);
    }
}
