//! Shared access signature tokens: building, signing, parsing and verifying them.
//!
//! Token: `SharedAccessSignature sr={urlenc(resource)}&sig={urlenc(base64 hmac)}&se={expiry}[&skn={policy}]`,
//! where the HMAC-SHA256 is keyed with the base64-decoded shared access key over `"{sr}\n{expiry}"` (the
//! *encoded* resource, as the official SDKs sign it).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

use crate::encoding::{percent_decode, percent_encode};
use crate::ProtocolError;

type HmacSha256 = Hmac<Sha256>;

const TOKEN_PREFIX: &str = "SharedAccessSignature ";

/// Seconds before expiry at which a renewable token is replaced (as azure-iot-device does).
pub const RENEWAL_MARGIN_SECS: u64 = 120;
/// Default lifetime of a generated token (`sastoken_ttl`).
pub const DEFAULT_TTL_SECS: u64 = 3600;

/// Decodes a shared access key. The error never contains the key.
pub fn decode_key(key_base64: &str) -> Result<Vec<u8>, ProtocolError> {
    let key = BASE64.decode(key_base64.trim()).map_err(|_| ProtocolError::InvalidSymmetricKey)?;
    if key.is_empty() {
        return Err(ProtocolError::InvalidSymmetricKey);
    }
    Ok(key)
}

/// Percent-encodes a resource URI for `sr` (no safe characters: `/` becomes `%2F`).
pub fn encode_resource(resource: &str) -> String {
    percent_encode(resource)
}

/// The text that is signed: `{encoded resource}\n{expiry}`.
pub fn string_to_sign(encoded_resource: &str, expiry: u64) -> String {
    format!("{encoded_resource}\n{expiry}")
}

/// base64(HMAC-SHA256(base64decode(key), string_to_sign)).
pub fn sign(key_base64: &str, string_to_sign: &str) -> Result<String, ProtocolError> {
    sign_bytes(key_base64, string_to_sign.as_bytes())
}

/// [`sign`] over arbitrary bytes: what the IoT Edge workload API signs for a module.
pub fn sign_bytes(key_base64: &str, data: &[u8]) -> Result<String, ProtocolError> {
    let key = decode_key(key_base64)?;
    Ok(sign_with_key_bytes(&key, data))
}

fn sign_with_key_bytes(key: &[u8], data: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    BASE64.encode(mac.finalize().into_bytes())
}

/// Builds a token whose signature was computed elsewhere (an HSM, the IoT Edge workload API).
pub fn format_token(resource: &str, signature_base64: &str, key_name: Option<&str>, expiry: u64) -> String {
    let mut token = format!(
        "{TOKEN_PREFIX}sr={}&sig={}&se={expiry}",
        encode_resource(resource),
        percent_encode(signature_base64)
    );
    if let Some(name) = key_name {
        token.push_str("&skn=");
        token.push_str(&percent_encode(name));
    }
    token
}

/// Generates a complete token for `resource` (not encoded) valid until `expiry` (unix seconds).
pub fn generate_token(
    resource: &str,
    key_base64: &str,
    key_name: Option<&str>,
    expiry: u64,
) -> Result<String, ProtocolError> {
    // `parse` refuses a token without a resource: never make one.
    if resource.is_empty() {
        return Err(ProtocolError::InvalidSasToken("empty 'sr'"));
    }
    let signature = sign(key_base64, &string_to_sign(&encode_resource(resource), expiry))?;
    Ok(format_token(resource, &signature, key_name, expiry))
}

/// `{host}/devices/{device_id}[/modules/{module_id}]`: the resource a device or module token names.
/// Always the hub host, never a gateway.
pub fn device_resource(host: &str, device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(m) => format!("{host}/devices/{device_id}/modules/{m}"),
        None => format!("{host}/devices/{device_id}"),
    }
}

/// A parsed token. `Debug` hides the signature so a token can be logged as a value safely.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    /// The resource URI, decoded (`host/devices/d`).
    pub resource: String,
    /// The signature, decoded (plain base64).
    pub signature: String,
    /// Unix seconds.
    pub expiry: u64,
    /// `skn`: the policy name for service/policy tokens.
    pub key_name: Option<String>,
    /// `sr` exactly as it appeared in the token: the signature covers this text, and other SDKs may
    /// encode it differently than we would (lower-case hex, say).
    pub encoded_resource: String,
}

impl SasToken {
    /// Parses `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]`. Fields `sr`, `sig`, `se` are required,
    /// `skn` optional, anything else or a repeated field is refused.
    pub fn parse(token: &str) -> Result<SasToken, ProtocolError> {
        let body = token
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(ProtocolError::InvalidSasToken("must start with 'SharedAccessSignature '"))?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for field in body.split('&') {
            let (name, value) = field
                .split_once('=')
                .ok_or(ProtocolError::InvalidSasToken("a field has no '='"))?;
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => return Err(ProtocolError::InvalidSasToken("unknown field (allowed: sr, sig, se, skn)")),
            };
            if slot.replace(value).is_some() {
                return Err(ProtocolError::InvalidSasToken("a field appears twice"));
            }
        }
        let sr = sr.ok_or(ProtocolError::InvalidSasToken("missing 'sr'"))?;
        let sig = sig.ok_or(ProtocolError::InvalidSasToken("missing 'sig'"))?;
        let se = se.ok_or(ProtocolError::InvalidSasToken("missing 'se'"))?;
        // Whole seconds exactly (an f64 would round expiries past 2^53, and the signature covers
        // the exact digits); a fractional time, as some signers write, is cut to whole seconds.
        let expiry = match se.parse::<u64>() {
            Ok(e) => e,
            Err(_) => se
                .parse::<f64>()
                .ok()
                .filter(|e| e.is_finite() && *e >= 0.0)
                .ok_or(ProtocolError::InvalidSasToken("'se' is not a unix time"))? as u64,
        };
        if sr.is_empty() || sig.is_empty() {
            return Err(ProtocolError::InvalidSasToken("empty 'sr' or 'sig'"));
        }
        Ok(SasToken {
            resource: percent_decode(sr),
            signature: percent_decode(sig),
            expiry,
            key_name: skn.map(percent_decode),
            encoded_resource: sr.to_string(),
        })
    }

    /// True when the signature was made with this key. Compared in constant time. Both the `sr` text as
    /// sent and our canonical encoding are accepted, since the signer signed whichever it put on the wire.
    pub fn verify(&self, key_base64: &str) -> bool {
        let Ok(key) = decode_key(key_base64) else { return false };
        let canonical = encode_resource(&self.resource);
        let mut candidates = vec![self.encoded_resource.as_str()];
        if canonical != self.encoded_resource {
            candidates.push(canonical.as_str());
        }
        candidates.into_iter().any(|sr| {
            let expected = sign_with_key_bytes(&key, string_to_sign(sr, self.expiry).as_bytes());
            constant_time_eq(expected.as_bytes(), self.signature.as_bytes())
        })
    }

    pub fn is_expired_at(&self, unix_now: u64) -> bool {
        self.expiry <= unix_now
    }
}

impl fmt::Display for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}sr={}&sig={}&se={}", self.encoded_resource, percent_encode(&self.signature), self.expiry)?;
        if let Some(name) = &self.key_name {
            write!(f, "&skn={}", percent_encode(name))?;
        }
        Ok(())
    }
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("resource", &self.resource)
            .field("signature", &"<redacted>")
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .finish()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a token's resource names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SasResource {
    /// A service/policy token: `sr` is the hub host.
    Hub { host: String },
    Device { host: String, device_id: String },
    Module { host: String, device_id: String, module_id: String },
}

impl SasResource {
    /// Parses a decoded resource: `host`, `host/devices/d` or `host/devices/d/modules/m`.
    pub fn parse(resource: &str) -> Result<SasResource, ProtocolError> {
        let parts: Vec<&str> = resource.trim_end_matches('/').split('/').collect();
        let bad = ProtocolError::InvalidSasToken("resource must be 'host', 'host/devices/d' or 'host/devices/d/modules/m'");
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad);
        }
        match parts.as_slice() {
            [host] => Ok(SasResource::Hub { host: host.to_string() }),
            [host, "devices", d] => Ok(SasResource::Device { host: host.to_string(), device_id: d.to_string() }),
            [host, "devices", d, "modules", m] => Ok(SasResource::Module {
                host: host.to_string(),
                device_id: d.to_string(),
                module_id: m.to_string(),
            }),
            _ => Err(bad),
        }
    }

    pub fn host(&self) -> &str {
        match self {
            SasResource::Hub { host } | SasResource::Device { host, .. } | SasResource::Module { host, .. } => host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `sas_token` fuzz target: `se` went through an f64, so an expiry past 2^53 came
    /// back rounded and a correctly signed token failed to verify.
    #[test]
    fn large_expiries_parse_exactly_and_verify() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let expiry = 7_152_108_070_114_519_123;
        let token = generate_token("hub", key, Some("iothubowner"), expiry).unwrap();
        let parsed = SasToken::parse(&token).unwrap();
        assert_eq!(parsed.expiry, expiry);
        assert!(parsed.verify(key));
        assert_eq!(SasToken::parse("SharedAccessSignature sr=hub&sig=x&se=1700000000.75").unwrap().expiry, 1_700_000_000);
    }

    /// Found by the `sas_token` fuzz target: a token generated for an empty resource did not parse.
    #[test]
    fn no_token_is_generated_for_an_empty_resource() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert!(matches!(generate_token("", key, None, 1), Err(ProtocolError::InvalidSasToken(_))));
    }

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // base64 of 32 ASCII bytes

    #[test]
    fn generated_token_has_the_documented_shape() {
        let t = generate_token("hub.example/devices/d1", KEY, None, 1_700_000_000).unwrap();
        assert!(t.starts_with("SharedAccessSignature sr=hub.example%2Fdevices%2Fd1&sig="));
        assert!(t.ends_with("&se=1700000000"));
        let with_policy = generate_token("hub.example", KEY, Some("iothubowner"), 5).unwrap();
        assert!(with_policy.ends_with("&se=5&skn=iothubowner"));
    }

    #[test]
    fn signature_matches_an_independent_hmac_vector() {
        // HMAC-SHA256(key="0123456789abcdef0123456789abcdef", "hub.example%2Fdevices%2Fd1\n1700000000"),
        // computed with Python's hmac module.
        let sig = sign(KEY, &string_to_sign("hub.example%2Fdevices%2Fd1", 1_700_000_000)).unwrap();
        assert_eq!(sig, "TBPoCPSxpViwgqZwAlBCNPZvVPZW1xXQ2LYHtEe2VGM=");
    }

    #[test]
    fn parse_and_verify_round_trip() {
        let t = generate_token("h/devices/d/modules/m", KEY, None, 42).unwrap();
        let parsed = SasToken::parse(&t).unwrap();
        assert_eq!(parsed.resource, "h/devices/d/modules/m");
        assert_eq!(parsed.expiry, 42);
        assert!(parsed.verify(KEY));
        assert!(!parsed.verify("b3RoZXJrZXk="));
        assert!(parsed.is_expired_at(42) && !parsed.is_expired_at(41));
        assert_eq!(parsed.to_string(), t);
        assert_eq!(
            SasResource::parse(&parsed.resource).unwrap(),
            SasResource::Module { host: "h".into(), device_id: "d".into(), module_id: "m".into() }
        );
    }

    #[test]
    fn verify_accepts_lower_case_percent_encoding_of_sr() {
        let t = generate_token("h/devices/d", KEY, None, 42).unwrap();
        let sig_part = t.split("&sig=").nth(1).unwrap().split("&se=").next().unwrap();
        let key = decode_key(KEY).unwrap();
        let lower_sig = percent_encode(&sign_with_key_bytes(&key, b"h%2fdevices%2fd\n42"));
        let lower = format!("SharedAccessSignature sr=h%2fdevices%2fd&sig={lower_sig}&se=42");
        assert_ne!(sig_part, lower_sig);
        assert!(SasToken::parse(&lower).unwrap().verify(KEY));
    }

    #[test]
    fn parse_rejects_malformed_tokens_without_echoing_them() {
        for bad in [
            "sr=a&sig=b&se=1",
            "SharedAccessSignature sr=a&sig=b",
            "SharedAccessSignature sr=a&sig=SECRETSIG&se=1&foo=2",
            "SharedAccessSignature sr=a&sig=b&se=1&se=2",
            "SharedAccessSignature sr=a&sig=b&se=soon",
            "SharedAccessSignature sr=a&sigb&se=1",
            "SharedAccessSignature sr=&sig=b&se=1",
        ] {
            let err = SasToken::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("SECRETSIG"), "{err}");
        }
    }

    #[test]
    fn debug_redacts_the_signature() {
        let t = SasToken::parse(&generate_token("h/devices/d", KEY, None, 42).unwrap()).unwrap();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&t.signature) && dbg.contains("redacted"));
    }

    #[test]
    fn keys_must_be_base64() {
        assert_eq!(decode_key("not base64!"), Err(ProtocolError::InvalidSymmetricKey));
        assert_eq!(decode_key(""), Err(ProtocolError::InvalidSymmetricKey));
        assert!(generate_token("h", "%%%", None, 1).is_err());
    }

    #[test]
    fn resource_shapes() {
        assert_eq!(SasResource::parse("h").unwrap(), SasResource::Hub { host: "h".into() });
        assert!(SasResource::parse("h/devices").is_err());
        assert!(SasResource::parse("h/devices//modules/m").is_err());
        assert!(SasResource::parse("h/things/d").is_err());
        assert_eq!(device_resource("h", "d", Some("m")), "h/devices/d/modules/m");
    }
}
