//! SAS tokens: parsing any text never panics; a token generated for any resource and expiry
//! parses back to the same resource and expiry and verifies with its key (and not with another).
#![no_main]

use ironhub_protocol::sas::{self, SasResource, SasToken};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OTHER_KEY: &str = "HxwdGhsYGRYXFBUSExAREA8ODQwLCgkIBwYFBAMCAQA=";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(token) = SasToken::parse(text) {
        let _ = token.verify(KEY);
        let _ = token.is_expired_at(u64::MAX);
        if let Ok(resource) = SasResource::parse(&token.resource) {
            let _ = resource.host();
        }
    }
    let _ = sas::decode_key(text);

    if data.len() < 8 {
        return;
    }
    let expiry = u64::from_le_bytes(data[..8].try_into().unwrap());
    let Ok(resource) = std::str::from_utf8(&data[8..]) else { return };
    let key_name = (resource.len() % 2 == 0).then_some("policy");
    let Ok(token) = sas::generate_token(resource, KEY, key_name, expiry) else { return };
    let parsed = SasToken::parse(&token).unwrap_or_else(|e| panic!("a generated token does not parse ({e}): {token:?}"));
    assert_eq!(parsed.resource, resource);
    assert_eq!(parsed.expiry, expiry);
    assert_eq!(parsed.key_name.as_deref(), key_name);
    assert!(parsed.verify(KEY), "a generated token does not verify: {token:?}");
    assert!(!parsed.verify(OTHER_KEY));
});
