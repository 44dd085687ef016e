//! Owns the hub's trusted CA certificates and the one chain check every X.509 path uses.
//!
//! Trust comes from two places: the roots given at start (`--ca-cert`) and the certificates
//! registered at runtime through `/certificates/{name}`, as IoT Hub's certificate API has them
//! (PEM or base64 DER in `properties.certificate`, `isVerified`, ETags; only a verified certificate
//! authenticates devices). A certificate is verified at upload (`isVerified: true`) or by proof of
//! possession: `generateVerificationCode`, then `verify` with a certificate whose CN is that code,
//! signed by the registered one. `chain_ends_at` is shared with DPS's X.509 group enrollments.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::thumbprints;
use super::error::{self, HubError};
use super::etag;

/// A certificate as the service APIs accept it: PEM text (the first certificate), or base64 DER.
pub fn certificate_der(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN") {
        return rustls_pemfile::certs(&mut trimmed.as_bytes()).next()?.ok().map(|c| c.as_ref().to_vec());
    }
    let der = base64::engine::general_purpose::STANDARD.decode(trimmed.replace(['\r', '\n'], "")).ok()?;
    x509_parser::parse_x509_certificate(&der).ok()?;
    Some(der)
}

/// Whether `chain` (leaf first, then the intermediates the client sent) verifies up to one of
/// `anchors` now: signatures, validity periods and CA constraints, as webpki checks them.
pub fn chain_ends_at(anchors: &[CertificateDer<'_>], chain: &[Vec<u8>]) -> bool {
    let Some(leaf) = chain.first() else { return false };
    let mut roots = RootCertStore::empty();
    for anchor in anchors {
        // An anchor webpki cannot use (not a certificate it parses) just does not count.
        let _ = roots.add(anchor.clone().into_owned());
    }
    if roots.is_empty() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build() else {
        return false;
    };
    let intermediates: Vec<CertificateDer<'_>> =
        chain[1..].iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    verifier.verify_client_cert(&CertificateDer::from(leaf.as_slice()), &intermediates, UnixTime::now()).is_ok()
}

/// One registered certificate, as the store keeps it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    name: String,
    der: String,
    is_verified: bool,
    etag: String,
    created: String,
    updated: String,
    /// The nonce of a proof of possession in progress.
    #[serde(default)]
    verification_code: Option<String>,
}

impl Registered {
    fn der(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(&self.der).unwrap_or_default()
    }

    /// IoT Hub's `CertificateDescription`.
    fn to_json(&self) -> Value {
        let der = self.der();
        let [sha1, _] = thumbprints(&der);
        let (subject, expiry) = match x509_parser::parse_x509_certificate(&der) {
            Ok((_, cert)) => {
                let expiry = chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
                    .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
                    .unwrap_or_default();
                (cert.subject().to_string(), expiry)
            }
            Err(_) => (String::new(), String::new()),
        };
        let pem = pem_of(&der);
        let mut description = json!({
            "id": format!("/certificates/{}", self.name),
            "name": self.name,
            "etag": self.etag,
            "type": "Microsoft.Devices/IotHubs/Certificates",
            "properties": {
                "subject": subject,
                "expiry": expiry,
                "thumbprint": sha1.to_uppercase(),
                "isVerified": self.is_verified,
                "created": self.created,
                "updated": self.updated,
                "certificate": pem,
            },
        });
        if let Some(code) = &self.verification_code {
            description["properties"]["verificationCode"] = json!(code);
        }
        description
    }
}

fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

fn not_found(name: &str) -> HubError {
    HubError::new(error::NOT_FOUND, format!("Certificate '{name}' not found"))
}

/// The `--ca-cert` roots and the registered certificates.
#[derive(Default)]
pub struct Certificates {
    startup: Vec<CertificateDer<'static>>,
    registered: BTreeMap<String, Registered>,
    revision: u64,
}

/// The store keeps the registered certificates as one JSON document under this meta key.
pub const STORE_KEY: &str = "certificates";

#[derive(Serialize, Deserialize, Default)]
struct Stored {
    revision: u64,
    certificates: Vec<Registered>,
}

impl Certificates {
    /// `startup` roots (from `--ca-cert`) plus what the store kept (`stored`, the `STORE_KEY` document).
    pub fn new(startup: Vec<CertificateDer<'static>>, stored: Option<&str>) -> Result<Certificates, HubError> {
        let stored: Stored = match stored {
            Some(doc) => serde_json::from_str(doc)
                .map_err(|e| HubError::new(error::SERVER_ERROR, format!("the stored certificates are invalid: {e}")))?,
            None => Stored::default(),
        };
        let registered = stored.certificates.into_iter().map(|c| (c.name.clone(), c)).collect();
        Ok(Certificates { startup, registered, revision: stored.revision })
    }

    /// The document to store under `STORE_KEY` after a change.
    pub fn to_stored(&self) -> String {
        let stored = Stored { revision: self.revision, certificates: self.registered.values().cloned().collect() };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Every certificate a device chain may end at: the startup roots and the verified registered ones.
    pub fn trust_anchors(&self) -> Vec<CertificateDer<'static>> {
        let registered = self.registered.values().filter(|c| c.is_verified).map(|c| CertificateDer::from(c.der()));
        self.startup.iter().cloned().chain(registered).collect()
    }

    pub fn list(&self) -> Value {
        json!({"value": self.registered.values().map(Registered::to_json).collect::<Vec<_>>()})
    }

    pub fn get(&self, name: &str) -> Result<Value, HubError> {
        self.registered.get(name).map(Registered::to_json).ok_or_else(|| not_found(name))
    }

    /// Creates (no `If-Match`) or updates (`If-Match` with its ETag, or `*`) a certificate.
    pub fn put(&mut self, name: &str, body: &Value, if_match: Option<&str>) -> Result<Value, HubError> {
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
            return Err(HubError::invalid(format!(
                "'{name}' is not a valid certificate name: up to 64 of a-z, A-Z, 0-9, '-', '.', '_'"
            )));
        }
        let properties = body.get("properties").unwrap_or(body);
        let text = properties
            .get("certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| HubError::invalid("properties.certificate (PEM or base64 DER) is required"))?;
        let der = certificate_der(text)
            .ok_or_else(|| HubError::invalid("properties.certificate is not a PEM or base64 DER X.509 certificate"))?;
        let is_verified = match properties.get("isVerified") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(HubError::invalid("properties.isVerified must be a boolean")),
        };
        let now = super::now_iso();
        let created = match (self.registered.get(name), if_match) {
            (Some(existing), Some(tag)) if etag::if_match_allows(Some(tag), &existing.etag) => existing.created.clone(),
            (Some(_), None) => {
                return Err(HubError::new(
                    error::PRECONDITION_FAILED,
                    format!("Certificate '{name}' exists: an If-Match header with its ETag is required to update it"),
                ))
            }
            (Some(_), Some(_)) => return Err(HubError::precondition_failed()),
            (None, Some(tag)) if etag::strip_quotes(tag) != "*" => return Err(not_found(name)),
            (None, _) => now.clone(),
        };
        self.revision += 1;
        let entry = Registered {
            name: name.to_owned(),
            der: base64::engine::general_purpose::STANDARD.encode(&der),
            is_verified,
            etag: etag::registry_etag(self.revision),
            created,
            updated: now,
            verification_code: None,
        };
        let description = entry.to_json();
        self.registered.insert(name.to_owned(), entry);
        Ok(description)
    }

    /// An existing certificate whose ETag `if_match` names (or `*`): IoT Hub requires `If-Match`
    /// on every operation that changes or removes a certificate.
    fn matching(&mut self, name: &str, if_match: Option<&str>, operation: &str) -> Result<&mut Registered, HubError> {
        let existing = self.registered.get_mut(name).ok_or_else(|| not_found(name))?;
        match if_match {
            Some(tag) if etag::if_match_allows(Some(tag), &existing.etag) => Ok(existing),
            Some(_) => Err(HubError::precondition_failed()),
            None => Err(HubError::new(
                error::PRECONDITION_FAILED,
                format!("An If-Match header is required to {operation} a certificate"),
            )),
        }
    }

    /// Gives `entry` the next ETag and a new update time after a change.
    fn touched(revision: &mut u64, entry: &mut Registered) {
        *revision += 1;
        entry.etag = etag::registry_etag(*revision);
        entry.updated = super::now_iso();
    }

    /// Deletes a certificate (`If-Match` required).
    pub fn delete(&mut self, name: &str, if_match: Option<&str>) -> Result<(), HubError> {
        self.matching(name, if_match, "delete")?;
        self.registered.remove(name);
        self.revision += 1;
        Ok(())
    }

    /// `POST /certificates/{name}/generateVerificationCode`: a nonce to prove possession of the
    /// certificate's key with (`If-Match` required).
    pub fn generate_verification_code(&mut self, name: &str, if_match: Option<&str>) -> Result<Value, HubError> {
        let code: String = rand::random::<[u8; 24]>().iter().map(|b| format!("{b:02X}")).collect();
        let mut revision = self.revision;
        let entry = self.matching(name, if_match, "generate a verification code for")?;
        entry.verification_code = Some(code);
        Self::touched(&mut revision, entry);
        let description = entry.to_json();
        self.revision = revision;
        Ok(description)
    }

    /// `POST /certificates/{name}/verify` `{"certificate": PEM}`: a certificate whose CN is the
    /// verification code, signed by the registered certificate, marks it verified.
    pub fn verify(&mut self, name: &str, if_match: Option<&str>, body: &Value) -> Result<Value, HubError> {
        let text = body
            .get("certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| HubError::invalid("certificate (PEM or base64 DER) is required"))?;
        let proof =
            certificate_der(text).ok_or_else(|| HubError::invalid("certificate is not an X.509 certificate"))?;
        let mut revision = self.revision;
        let entry = self.matching(name, if_match, "verify")?;
        let code = entry.verification_code.clone().ok_or_else(|| {
            HubError::invalid(format!("Certificate '{name}' has no verification code: generate one first"))
        })?;
        if super::auth::common_name(&proof).as_deref() != Some(code.as_str()) {
            return Err(HubError::invalid("The verification certificate's CN is not the verification code"));
        }
        if !chain_ends_at(&[CertificateDer::from(entry.der())], &[proof]) {
            return Err(HubError::invalid(
                "The verification certificate is not signed by this certificate, or expired",
            ));
        }
        entry.is_verified = true;
        entry.verification_code = None;
        Self::touched(&mut revision, entry);
        let description = entry.to_json();
        self.revision = revision;
        Ok(description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(cn: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn put_get_delete_with_etags() {
        let (root, _) = ca("root");
        let mut certs = Certificates::default();
        let body = json!({"properties": {"certificate": root.pem(), "isVerified": true}});
        let created = certs.put("root", &body, None).unwrap();
        let tag = created["etag"].as_str().unwrap().to_owned();
        assert_eq!(created["properties"]["subject"], "CN=root");
        assert_eq!(certs.trust_anchors().len(), 1);
        assert_eq!(certs.put("root", &body, None).unwrap_err().code, error::PRECONDITION_FAILED);
        assert_eq!(certs.put("root", &body, Some("\"nope\"")).unwrap_err().code, error::PRECONDITION_FAILED);
        let unverified = json!({"properties": {"certificate": root.pem(), "isVerified": false}});
        let updated = certs.put("root", &unverified, Some(&format!("\"{tag}\""))).unwrap();
        assert_ne!(updated["etag"], created["etag"]);
        assert!(certs.trust_anchors().is_empty(), "an unverified certificate is not trusted");
        assert_eq!(certs.delete("root", None).unwrap_err().code, error::PRECONDITION_FAILED);
        certs.delete("root", Some("*")).unwrap();
        assert_eq!(certs.get("root").unwrap_err().code, error::NOT_FOUND);
        assert_eq!(certs.put("bad name", &body, None).unwrap_err().code, error::ARGUMENT_INVALID);
        assert_eq!(
            certs.put("x", &json!({"properties": {"certificate": "nope"}}), None).unwrap_err().code,
            error::ARGUMENT_INVALID
        );
    }

    fn signed_by(cn: &str, issuer: &rcgen::Certificate, issuer_key: &rcgen::KeyPair) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.signed_by(&key, issuer, issuer_key).unwrap().pem()
    }

    #[test]
    fn proof_of_possession_verifies() {
        let (root, root_key) = ca("root");
        let (other, other_key) = ca("other");
        let mut certs = Certificates::default();
        let created = certs.put("root", &json!({"properties": {"certificate": root.pem()}}), None).unwrap();
        assert_eq!(created["properties"]["isVerified"], false);
        let tag = created["etag"].as_str().unwrap().to_owned();
        let early = certs.verify("root", Some("*"), &json!({"certificate": signed_by("x", &root, &root_key)}));
        assert_eq!(early.unwrap_err().code, error::ARGUMENT_INVALID, "no code generated yet");
        assert_eq!(certs.generate_verification_code("root", None).unwrap_err().code, error::PRECONDITION_FAILED);
        let with_code = certs.generate_verification_code("root", Some(&tag)).unwrap();
        let code = with_code["properties"]["verificationCode"].as_str().unwrap().to_owned();
        let tag = with_code["etag"].as_str().unwrap().to_owned();
        for wrong in [signed_by("not the code", &root, &root_key), signed_by(&code, &other, &other_key)] {
            let err = certs.verify("root", Some(&tag), &json!({"certificate": wrong})).unwrap_err();
            assert_eq!(err.code, error::ARGUMENT_INVALID, "{}", err.message);
        }
        assert!(certs.trust_anchors().is_empty());
        let verified =
            certs.verify("root", Some(&tag), &json!({"certificate": signed_by(&code, &root, &root_key)})).unwrap();
        assert_eq!(verified["properties"]["isVerified"], true);
        assert!(verified["properties"].get("verificationCode").is_none());
        assert_eq!(certs.trust_anchors().len(), 1);
    }

    #[test]
    fn stored_document_round_trips() {
        let (root, _) = ca("root");
        let mut certs = Certificates::default();
        certs.put("root", &json!({"properties": {"certificate": root.pem(), "isVerified": true}}), None).unwrap();
        let again = Certificates::new(Vec::new(), Some(&certs.to_stored())).unwrap();
        assert_eq!(again.get("root").unwrap(), certs.get("root").unwrap());
        assert_eq!(again.trust_anchors(), certs.trust_anchors());
    }
}
