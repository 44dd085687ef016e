//! Owns the enrollment documents as the DPS service REST API shapes them (`/enrollments/{id}`,
//! `/enrollmentGroups/{id}`): validating and completing a PUT body (generated keys, etag,
//! timestamps, certificate info), and reading back what attestation an enrollment asks for.
//! Pure functions over JSON: the store keeps the documents as the service returns them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::hub::auth::{common_name, thumbprints};
use crate::hub::certificates::certificate_der;
use crate::hub::now_iso;

/// Individual enrollments are keyed by registration id, groups by enrollment group id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Individual,
    Group,
}

impl Kind {
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::Individual => "registrationId",
            Kind::Group => "enrollmentGroupId",
        }
    }

    /// Where the certificate of an X.509 attestation lives.
    fn certificates_field(self) -> &'static str {
        match self {
            Kind::Individual => "clientCertificates",
            Kind::Group => "signingCertificates",
        }
    }
}

/// What a device must prove to register through an enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attestation {
    /// Base64 keys (for a group, the group keys the device keys derive from).
    SymmetricKey { primary: String, secondary: String },
    /// DER of the primary (and secondary) certificate: the device's own for an individual
    /// enrollment, a root or intermediate CA for a group.
    X509 { certificates: Vec<Vec<u8>> },
}

pub fn generate_key() -> String {
    BASE64.encode(rand::random::<[u8; 32]>())
}

fn invalid(message: impl Into<String>) -> (u16, String) {
    (400, message.into())
}

fn certificate_info(der: &[u8]) -> Value {
    let [sha1, sha256] = thumbprints(der);
    let (_, cert) = match x509_parser::parse_x509_certificate(der) {
        Ok(parsed) => parsed,
        Err(_) => return json!({}),
    };
    json!({
        "subjectName": format!("CN={}", common_name(der).unwrap_or_default()),
        "sha1Thumbprint": sha1.to_uppercase(),
        "sha256Thumbprint": sha256.to_uppercase(),
        "issuerName": cert.issuer().to_string(),
        "notBeforeUtc": cert.validity().not_before.to_rfc2822().unwrap_or_default(),
        "notAfterUtc": cert.validity().not_after.to_rfc2822().unwrap_or_default(),
        "serialNumber": cert.raw_serial_as_string(),
        "version": cert.version().0 + 1,
    })
}

/// Completes a PUT body into the stored enrollment, keeping what `previous` had where the body
/// is silent (keys, creation time). Errors are `(status, message)` for the REST layer.
pub fn normalize(kind: Kind, id: &str, body: &Value, previous: Option<&Value>) -> Result<Value, (u16, String)> {
    let body = body.as_object().ok_or_else(|| invalid("The enrollment must be a JSON object"))?;
    if let Some(given) = body.get(kind.id_field()).and_then(Value::as_str) {
        if given != id {
            return Err(invalid(format!("The body's {} '{given}' does not match the URL's '{id}'", kind.id_field())));
        }
    }
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c)) {
        return Err(invalid(format!("'{id}' is not a valid id: up to 128 of a-z, A-Z, 0-9, '-', '.', '_', ':'")));
    }
    let attestation = body.get("attestation").and_then(Value::as_object).ok_or_else(|| invalid("attestation is required"))?;
    let mut out = Map::new();
    out.insert(kind.id_field().into(), json!(id));
    let att = match attestation.get("type").and_then(Value::as_str) {
        Some("symmetricKey") => {
            let old = previous.and_then(|p| p.pointer("/attestation/symmetricKey"));
            let key = |name: &str| -> Result<String, (u16, String)> {
                match attestation.get("symmetricKey").and_then(|k| k.get(name)).and_then(Value::as_str).filter(|k| !k.is_empty()) {
                    Some(k) if BASE64.decode(k).map(|d| !d.is_empty()).unwrap_or(false) => Ok(k.to_owned()),
                    Some(_) => Err(invalid(format!("symmetricKey.{name} is not valid base64"))),
                    None => Ok(old.and_then(|o| o.get(name)).and_then(Value::as_str).map(str::to_owned).unwrap_or_else(generate_key)),
                }
            };
            json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": key("primaryKey")?, "secondaryKey": key("secondaryKey")?}})
        }
        Some("x509") => {
            let x509 = attestation.get("x509").ok_or_else(|| invalid("x509 attestation needs an x509 object"))?;
            let field = kind.certificates_field();
            let mut certs = Map::new();
            for slot in ["primary", "secondary"] {
                let Some(text) = x509.get(field).and_then(|c| c.get(slot)).and_then(|c| c.get("certificate")).and_then(Value::as_str) else {
                    continue;
                };
                let der = certificate_der(text).ok_or_else(|| invalid(format!("x509.{field}.{slot}.certificate is not a certificate")))?;
                certs.insert(slot.into(), json!({"certificate": BASE64.encode(&der), "info": certificate_info(&der)}));
            }
            if !certs.contains_key("primary") {
                return Err(invalid(format!("x509 attestation needs x509.{field}.primary.certificate (CA references are not supported)")));
            }
            json!({"type": "x509", "x509": {field: certs}})
        }
        Some(other) => return Err(invalid(format!("attestation type '{other}' is not supported (symmetricKey, x509)"))),
        None => return Err(invalid("attestation.type is required")),
    };
    out.insert("attestation".into(), att);
    if kind == Kind::Individual {
        if let Some(device_id) = body.get("deviceId").and_then(Value::as_str).filter(|d| !d.is_empty()) {
            out.insert("deviceId".into(), json!(device_id));
        }
    }
    let status = body.get("provisioningStatus").and_then(Value::as_str).unwrap_or("enabled");
    if status != "enabled" && status != "disabled" {
        return Err(invalid("provisioningStatus must be 'enabled' or 'disabled'"));
    }
    out.insert("provisioningStatus".into(), json!(status));
    match body.get("initialTwin") {
        None | Some(Value::Null) => {}
        Some(twin @ Value::Object(_)) => {
            out.insert("initialTwin".into(), twin.clone());
        }
        Some(_) => return Err(invalid("initialTwin must be a JSON object")),
    }
    let capabilities = body.get("capabilities").cloned().unwrap_or_else(|| json!({"iotEdge": false}));
    out.insert("capabilities".into(), capabilities);
    out.insert("allocationPolicy".into(), json!("hashed"));
    let now = now_iso();
    let created = previous.and_then(|p| p.get("createdDateTimeUtc")).cloned().unwrap_or_else(|| json!(now));
    out.insert("createdDateTimeUtc".into(), created);
    out.insert("lastUpdatedDateTimeUtc".into(), json!(now));
    out.insert("etag".into(), json!(format!("{:016x}", rand::random::<u64>())));
    Ok(Value::Object(out))
}

pub fn is_enabled(enrollment: &Value) -> bool {
    enrollment.get("provisioningStatus").and_then(Value::as_str) != Some("disabled")
}

/// The attestation a stored enrollment asks for.
pub fn attestation(kind: Kind, enrollment: &Value) -> Option<Attestation> {
    let att = enrollment.get("attestation")?;
    match att.get("type")?.as_str()? {
        "symmetricKey" => {
            let key = |name: &str| att.pointer(&format!("/symmetricKey/{name}")).and_then(Value::as_str).map(str::to_owned);
            Some(Attestation::SymmetricKey { primary: key("primaryKey")?, secondary: key("secondaryKey")? })
        }
        "x509" => {
            let certs = att.get("x509")?.get(kind.certificates_field())?;
            let certificates = ["primary", "secondary"]
                .iter()
                .filter_map(|slot| certs.get(slot)?.get("certificate")?.as_str())
                .filter_map(|b64| BASE64.decode(b64).ok())
                .collect();
            Some(Attestation::X509 { certificates })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_keys_are_generated_and_kept() {
        let first = normalize(Kind::Individual, "r1", &json!({"attestation": {"type": "symmetricKey"}}), None).unwrap();
        let Some(Attestation::SymmetricKey { primary, secondary }) = attestation(Kind::Individual, &first) else { panic!() };
        assert_ne!(primary, secondary);
        let again = normalize(Kind::Individual, "r1", &json!({"attestation": {"type": "symmetricKey"}, "provisioningStatus": "disabled"}), Some(&first)).unwrap();
        assert_eq!(attestation(Kind::Individual, &again), attestation(Kind::Individual, &first));
        assert!(!is_enabled(&again));
        assert_eq!(again["createdDateTimeUtc"], first["createdDateTimeUtc"]);
        assert_ne!(again["etag"], first["etag"]);
    }

    #[test]
    fn bad_bodies_are_400() {
        let cases = [
            json!({}),
            json!({"attestation": {"type": "tpm"}}),
            json!({"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "!!"}}}),
            json!({"attestation": {"type": "x509", "x509": {}}}),
            json!({"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "nope"}}}}}),
            json!({"registrationId": "other", "attestation": {"type": "symmetricKey"}}),
            json!({"attestation": {"type": "symmetricKey"}, "provisioningStatus": "maybe"}),
        ];
        for body in cases {
            assert_eq!(normalize(Kind::Individual, "r1", &body, None).unwrap_err().0, 400, "{body}");
        }
        assert!(normalize(Kind::Group, "bad id/", &json!({"attestation": {"type": "symmetricKey"}}), None).is_err());
    }

    #[test]
    fn certificates_are_read_from_pem_or_base64() {
        let cert = rcgen::generate_simple_self_signed(vec!["dev".into()]).unwrap().cert;
        let from_pem = certificate_der(&cert.pem()).unwrap();
        assert_eq!(from_pem, cert.der().to_vec());
        assert_eq!(certificate_der(&BASE64.encode(cert.der())).unwrap(), from_pem);
        let body = json!({"attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": cert.pem()}}}}});
        let group = normalize(Kind::Group, "g", &body, None).unwrap();
        assert_eq!(attestation(Kind::Group, &group), Some(Attestation::X509 { certificates: vec![from_pem] }));
        assert!(group.pointer("/attestation/x509/signingCertificates/primary/info/sha1Thumbprint").is_some());
    }
}
