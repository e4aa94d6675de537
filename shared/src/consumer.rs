//! Who a request is for, as the consumer header (set by the auth filter in front) names it.

/// The scope of requests that name no consumer: they share one quota and one cache scope
/// instead of escaping both.
pub const ANONYMOUS: &str = "anonymous";

/// The consumer a header value names: trimmed, `None` when missing, empty or blank.
pub fn named(header: Option<&str>) -> Option<&str> {
    header.map(str::trim).filter(|v| !v.is_empty())
}

/// The consumer a header value names, or [`ANONYMOUS`].
pub fn or_anonymous(header: Option<&str>) -> &str {
    named(header).unwrap_or(ANONYMOUS)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn missing_empty_and_blank_are_anonymous() {
        for header in [None, Some(""), Some("  "), Some("\t")] {
            assert_eq!(named(header), None);
            assert_eq!(or_anonymous(header), ANONYMOUS);
        }
        assert_eq!(or_anonymous(Some(" alice ")), "alice");
    }
}
