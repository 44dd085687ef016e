//! Percent-encoding as IoT Hub uses it: Python's `urllib.parse.quote(s, safe="")`, i.e. every byte except
//! the RFC 3986 unreserved characters `A-Z a-z 0-9 - . _ ~` becomes `%XX` (upper-case hex). `/` is encoded
//! too, and a space is `%20`, never `+`.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The set of characters that are encoded: everything but the unreserved ones.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Decodes `%XX` sequences; invalid UTF-8 in the result is replaced rather than rejected, because a
/// property bag from the network must never make a receive fail. `+` stays a `+`.
pub fn percent_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_python_quote_with_no_safe_chars() {
        assert_eq!(percent_encode("a/b c&d=e$f"), "a%2Fb%20c%26d%3De%24f");
        assert_eq!(percent_encode("Az09-._~"), "Az09-._~");
        assert_eq!(percent_encode("héllo"), "h%C3%A9llo");
        assert_eq!(percent_encode("+"), "%2B");
    }

    #[test]
    fn decode_round_trips_and_keeps_plus() {
        for s in ["a/b c&d=e$f", "héllo ✓", "%", "a+b"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_decode("a+b"), "a+b");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
