//! Owns ETags: how the hub renders them and how an `If-Match` header is matched against one.
//! The official SDK sends ETags quoted (`"AAAAAAAAAAE="`) and the wildcard as `"*"` with quotes.

use base64::Engine;

/// A twin ETag in IoT Hub's shape: base64 of the big-endian 64-bit twin version.
pub fn twin_etag(version: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(version.to_be_bytes())
}

/// A device or module ETag: base64 of a decimal revision counter, as IoT Hub renders them.
pub fn registry_etag(revision: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(revision.to_string())
}

/// Strips one pair of surrounding double quotes and the weak-validator prefix `W/`.
pub fn strip_quotes(value: &str) -> &str {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v)
}

/// True when a write carrying this `If-Match` may proceed: no header, `*`, or the same ETag.
pub fn if_match_allows(if_match: Option<&str>, current: &str) -> bool {
    match if_match.map(strip_quotes) {
        None | Some("") | Some("*") => true,
        Some(tag) => tag == current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_wildcard() {
        let tag = twin_etag(1);
        assert_eq!(tag, "AAAAAAAAAAE=");
        assert!(if_match_allows(Some("\"AAAAAAAAAAE=\""), &tag));
        assert!(if_match_allows(Some("AAAAAAAAAAE="), &tag));
        assert!(if_match_allows(Some("\"*\""), &tag));
        assert!(if_match_allows(Some("*"), &tag));
        assert!(if_match_allows(None, &tag));
        assert!(!if_match_allows(Some("\"AAAAAAAAAAI=\""), &tag));
        assert!(!if_match_allows(Some("\"\"\""), &tag));
    }

    #[test]
    fn registry_etags_change_with_the_revision() {
        assert_ne!(registry_etag(1), registry_etag(2));
        assert_eq!(registry_etag(12), "MTI=");
    }
}
