//! Owns reading an X.509 identity's private key: PEM (or DER) PKCS#1, SEC1 and PKCS#8 keys, PKCS#8
//! `ENCRYPTED PRIVATE KEY` (PBES2/PBKDF2 with AES-CBC or 3DES, what `openssl req -passout` and
//! `openssl genpkey -aes256` write) and the legacy OpenSSL `Proc-Type: 4,ENCRYPTED` PEM (what
//! `openssl rsa -aes128 -traditional` and `openssl ec -des3` write), RSA and EC alike.
//!
//! Decryption is the Cargo feature `encrypted-keys` (default on): without it an encrypted key is
//! refused, naming the feature, before anything is decrypted; plain keys read the same either way.
//!
//! Errors name the file (`origin`) and what is wrong, never the pass phrase or key material:
//! they reach logs, C's last-error message and Python exceptions.

#[cfg(feature = "encrypted-keys")]
use aes::cipher::block_padding::Pkcs7;
#[cfg(feature = "encrypted-keys")]
use aes::cipher::{BlockDecryptMut, KeyIvInit};
#[cfg(feature = "encrypted-keys")]
use md5::{Digest, Md5};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};

use crate::error::{Error, Result};

/// The PEM labels of private keys; any other block (certificates, `EC PARAMETERS`) is skipped.
const PKCS8: &str = "PRIVATE KEY";
const PKCS8_ENCRYPTED: &str = "ENCRYPTED PRIVATE KEY";
const PKCS1_RSA: &str = "RSA PRIVATE KEY";
const SEC1_EC: &str = "EC PRIVATE KEY";

fn invalid(origin: &str, what: &str) -> Error {
    Error::invalid(format!("key file {origin}: {what}"))
}

/// Reads the first private key of `pem` (PEM text, or one DER key), decrypting it with
/// `pass_phrase` when it is encrypted, and checks that TLS can sign with it.
pub fn load(pem: &[u8], pass_phrase: Option<&str>, origin: &str) -> Result<PrivateKeyDer<'static>> {
    let (key, encrypted) = read(pem, pass_phrase, origin)?;
    // CBC has no integrity check: a damaged body may decrypt into well-formed DER holding a broken
    // key. Parsing it as a signing key here names the file instead of failing later in rustls.
    if rustls::crypto::ring::sign::any_supported_type(&key).is_err() {
        let why = if encrypted {
            "cannot use the decrypted private key: wrong pass phrase, a damaged file, or a key type TLS \
             cannot sign with (RSA, ECDSA P-256/P-384 and Ed25519 can)"
        } else {
            "holds a private key that is damaged or of a type TLS cannot sign with (RSA, ECDSA P-256/P-384 \
             and Ed25519 can)"
        };
        return Err(invalid(origin, why));
    }
    Ok(key)
}

/// The key and whether it was encrypted.
fn read(pem: &[u8], pass_phrase: Option<&str>, origin: &str) -> Result<(PrivateKeyDer<'static>, bool)> {
    if pem.first() == Some(&0x30) {
        return from_der(pem, pass_phrase, origin);
    }
    let blocks = pem::parse_many(pem).map_err(|_| invalid(origin, "is not valid PEM"))?;
    let block = blocks
        .into_iter()
        .find(|b| [PKCS8, PKCS8_ENCRYPTED, PKCS1_RSA, SEC1_EC].contains(&b.tag()))
        .ok_or_else(|| invalid(origin, "holds no private key"))?;
    match block.tag().to_owned().as_str() {
        PKCS8_ENCRYPTED => Ok((decrypt_pkcs8(block.contents(), pass_phrase, origin)?, true)),
        PKCS8 => Ok((PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(block.into_contents())), false)),
        tag => {
            let encrypted = block.headers().get("Proc-Type").is_some_and(|p| p.contains("ENCRYPTED"));
            let der = if encrypted {
                let dek_info = block
                    .headers()
                    .get("DEK-Info")
                    .ok_or_else(|| invalid(origin, "is encrypted but has no DEK-Info header"))?;
                decrypt_legacy(block.contents(), dek_info, pass_phrase, origin)?
            } else {
                block.into_contents()
            };
            let key = if tag == PKCS1_RSA {
                PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der))
            } else {
                PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der))
            };
            Ok((key, encrypted))
        }
    }
}

/// A DER file: an encrypted PKCS#8 key when it parses as one, else a plain PKCS#8 key. (Without
/// `encrypted-keys` the encrypted form is not even parsed: pkcs5's decoder stays out too.)
fn from_der(der: &[u8], pass_phrase: Option<&str>, origin: &str) -> Result<(PrivateKeyDer<'static>, bool)> {
    #[cfg(feature = "encrypted-keys")]
    if pkcs8::EncryptedPrivateKeyInfo::try_from(der).is_ok() {
        return Ok((decrypt_pkcs8(der, pass_phrase, origin)?, true));
    }
    #[cfg(not(feature = "encrypted-keys"))]
    let _ = pass_phrase;
    pkcs8::PrivateKeyInfo::try_from(der).map_err(|_| invalid(origin, NO_PLAIN_DER_KEY))?;
    Ok((PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())), false))
}

#[cfg(feature = "encrypted-keys")]
fn require<'a>(pass_phrase: Option<&'a str>, origin: &str) -> Result<&'a str> {
    pass_phrase
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid(origin, "the private key is encrypted and no pass phrase was given"))
}

#[cfg(feature = "encrypted-keys")]
fn wrong_pass_phrase(origin: &str) -> Error {
    invalid(origin, "cannot decrypt the private key: wrong pass phrase or corrupted key")
}

#[cfg(feature = "encrypted-keys")]
const NO_PLAIN_DER_KEY: &str = "holds no private key";
#[cfg(not(feature = "encrypted-keys"))]
const NO_PLAIN_DER_KEY: &str =
    "holds no plain private key (an encrypted one needs ironhub built with its `encrypted-keys` Cargo feature)";

/// Without the `encrypted-keys` feature: refused before any decryption.
#[cfg(not(feature = "encrypted-keys"))]
fn decrypt_pkcs8(_: &[u8], _: Option<&str>, origin: &str) -> Result<PrivateKeyDer<'static>> {
    Err(encryption_left_out(origin))
}

#[cfg(not(feature = "encrypted-keys"))]
fn decrypt_legacy(_: &[u8], _: &str, _: Option<&str>, origin: &str) -> Result<Vec<u8>> {
    Err(encryption_left_out(origin))
}

#[cfg(not(feature = "encrypted-keys"))]
fn encryption_left_out(origin: &str) -> Error {
    crate::validate::needs_feature(&format!("key file {origin}: an encrypted private key"), "encrypted-keys")
}

#[cfg(feature = "encrypted-keys")]
fn decrypt_pkcs8(der: &[u8], pass_phrase: Option<&str>, origin: &str) -> Result<PrivateKeyDer<'static>> {
    let pass_phrase = require(pass_phrase, origin)?;
    // pkcs5 does not even parse the PKCS#12 PBE schemes (`openssl pkcs8 -v1 ...`), so a failure
    // here is as likely an unsupported scheme as a damaged file.
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der).map_err(|_| {
        invalid(origin, "the encrypted private key is malformed or uses an unsupported encryption (PBES2 is supported)")
    })?;
    let plain = info.decrypt(pass_phrase).map_err(|e| match e {
        pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::UnsupportedAlgorithm { .. } | pkcs8::pkcs5::Error::NoPbes1CryptSupport,
        ) => invalid(origin, "the private key uses an unsupported encryption (PBES2 is supported)"),
        _ => wrong_pass_phrase(origin),
    })?;
    // A wrong pass phrase may still unpad by chance; the result must be a key, not just DER.
    pkcs8::PrivateKeyInfo::try_from(plain.as_bytes()).map_err(|_| wrong_pass_phrase(origin))?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec())))
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one iteration: the key derivation of the legacy PEM
/// encryption, salted with the first 8 bytes of the IV.
#[cfg(feature = "encrypted-keys")]
fn evp_bytes_to_key(pass_phrase: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(len + 16);
    let mut previous: Vec<u8> = Vec::new();
    while key.len() < len {
        let mut md5 = Md5::new();
        md5.update(&previous);
        md5.update(pass_phrase);
        md5.update(salt);
        previous = md5.finalize().to_vec();
        key.extend_from_slice(&previous);
    }
    key.truncate(len);
    key
}

/// Decrypts the body of a `Proc-Type: 4,ENCRYPTED` block whose `DEK-Info` is `CIPHER,HEXIV`.
#[cfg(feature = "encrypted-keys")]
fn decrypt_legacy(body: &[u8], dek_info: &str, pass_phrase: Option<&str>, origin: &str) -> Result<Vec<u8>> {
    let (cipher, iv_hex) =
        dek_info.split_once(',').ok_or_else(|| invalid(origin, "has a malformed DEK-Info header"))?;
    let iv = decode_hex(iv_hex.trim()).ok_or_else(|| invalid(origin, "has a malformed DEK-Info IV"))?;
    let cipher = cipher.trim().to_ascii_uppercase();
    let (key_len, iv_len) = match cipher.as_str() {
        "AES-128-CBC" => (16, 16),
        "AES-192-CBC" => (24, 16),
        "AES-256-CBC" => (32, 16),
        "DES-EDE3-CBC" => (24, 8),
        _ => return Err(invalid(origin, &format!("the private key is encrypted with unsupported cipher {cipher}"))),
    };
    if iv.len() != iv_len {
        return Err(invalid(origin, "has a DEK-Info IV of the wrong length"));
    }
    let pass_phrase = require(pass_phrase, origin)?;
    let key = evp_bytes_to_key(pass_phrase.as_bytes(), &iv[..8], key_len);
    let plain = match cipher.as_str() {
        "AES-128-CBC" => cbc_decrypt::<aes::Aes128>(&key, &iv, body),
        "AES-192-CBC" => cbc_decrypt::<aes::Aes192>(&key, &iv, body),
        "AES-256-CBC" => cbc_decrypt::<aes::Aes256>(&key, &iv, body),
        _ => cbc_decrypt::<des::TdesEde3>(&key, &iv, body),
    }
    .ok_or_else(|| wrong_pass_phrase(origin))?;
    // A wrong pass phrase unpads by chance about once in 256 tries: the result must be one DER SEQUENCE.
    if !is_one_der_sequence(&plain) {
        return Err(wrong_pass_phrase(origin));
    }
    Ok(plain)
}

#[cfg(feature = "encrypted-keys")]
fn cbc_decrypt<C>(key: &[u8], iv: &[u8], body: &[u8]) -> Option<Vec<u8>>
where
    C: aes::cipher::BlockDecrypt + aes::cipher::BlockCipher + aes::cipher::KeyInit,
{
    cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?.decrypt_padded_vec_mut::<Pkcs7>(body).ok()
}

#[cfg(feature = "encrypted-keys")]
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Whether `der` is exactly one DER SEQUENCE (tag, definite length covering the rest).
#[cfg(feature = "encrypted-keys")]
fn is_one_der_sequence(der: &[u8]) -> bool {
    let (Some(&0x30), Some(&first)) = (der.first(), der.get(1)) else { return false };
    let (len, header) = match first {
        n if n < 0x80 => (n as usize, 2),
        n @ 0x81..=0x84 => {
            let count = (n & 0x7f) as usize;
            let Some(bytes) = der.get(2..2 + count) else { return false };
            (bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), 2 + count)
        }
        _ => return false,
    };
    header + len == der.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evp_bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -pass pass:secret -S 0102030405060708 -md md5 -P` prints this key
        // (and the IV as the next 16 bytes of the same derivation).
        let derived = evp_bytes_to_key(b"secret", &[1, 2, 3, 4, 5, 6, 7, 8], 48);
        let hex: String = derived.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            hex,
            "C9E5A1BD216DBE1317E230CEF48F38EE7F0E17AD64022144BCCEC4A1AA2879ABE24B32BBBC4EF02ECBCB6576523AD893"
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for input in
            [&b"not a key"[..], b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"\x30\x03abc"]
        {
            let err = load(input, Some("pw"), "k.pem").unwrap_err().to_string();
            assert!(err.contains("k.pem"), "{err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn der_sequence_check() {
        assert!(is_one_der_sequence(&[0x30, 0x01, 0x05]));
        assert!(!is_one_der_sequence(&[0x30, 0x02, 0x05]));
        assert!(!is_one_der_sequence(&[0x04, 0x01, 0x05]));
        let mut long = vec![0x30, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(0u8, 256));
        assert!(is_one_der_sequence(&long));
    }
}
