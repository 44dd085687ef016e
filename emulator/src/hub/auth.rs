//! Owns authentication and authorization: the service SAS policies and their rights, checking a
//! service `Authorization` header, and the device-side checks a CONNECT goes through (SAS token
//! or X.509 certificate). Error texts never contain a key, signature or token.

use ironhub_protocol::sas::{SasResource, SasToken};
use rustls::pki_types::CertificateDer;
use sha1::Digest as _;

use super::error::{HubError, UNAUTHORIZED};
use super::registry::{AuthType, Authentication};

/// Why the hub refuses a CONNECT; the broker maps each to its CONNACK return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// CONNACK 4: the password is not a SAS token at all.
    BadUsernameOrPassword,
    /// CONNACK 5: unknown identity, wrong key, expired token, wrong certificate.
    NotAuthorized,
    /// CONNACK 3: a disabled identity.
    ServerUnavailable,
}

/// A right a shared access policy grants, as IoT Hub names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    RegistryRead,
    RegistryWrite,
    ServiceConnect,
    DeviceConnect,
}

/// The hub's built-in shared access policies. They all sign with the one hub policy key.
pub const POLICIES: &[(&str, &[Right])] = &[
    ("iothubowner", &[Right::RegistryRead, Right::RegistryWrite, Right::ServiceConnect, Right::DeviceConnect]),
    ("service", &[Right::ServiceConnect]),
    ("registryRead", &[Right::RegistryRead]),
    ("registryReadWrite", &[Right::RegistryRead, Right::RegistryWrite]),
    ("device", &[Right::DeviceConnect]),
];

pub fn policy_rights(name: &str) -> Option<&'static [Right]> {
    POLICIES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// Host names compare case-insensitively, and a connection string's `HostName=localhost:8443`
/// signs `localhost:8443`: the port is not part of the hub's identity.
pub fn host_matches(hub_host: &str, token_host: &str) -> bool {
    fn bare(h: &str) -> &str {
        match h.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => h,
        }
    }
    bare(hub_host).eq_ignore_ascii_case(bare(token_host))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn unauthorized(why: &str) -> HubError {
    HubError::new(UNAUTHORIZED, format!("Unauthorized: {why}"))
}

/// Checks a service `Authorization` header against the policy key: a hub-scoped token, a known
/// policy holding at least one of `any_of`, a valid signature, not expired.
pub fn authorize_service(header: Option<&str>, hub_host: &str, policy_key: &str, any_of: &[Right]) -> Result<(), HubError> {
    let header = header.ok_or_else(|| unauthorized("the Authorization header is missing"))?;
    let token = SasToken::parse(header).map_err(|e| unauthorized(&e.to_string()))?;
    let resource = SasResource::parse(&token.resource).map_err(|e| unauthorized(&e.to_string()))?;
    if !host_matches(hub_host, resource.host()) {
        return Err(unauthorized("the token was issued for another hub"));
    }
    let policy = token.key_name.as_deref().ok_or_else(|| unauthorized("the token names no policy (skn)"))?;
    let rights = policy_rights(policy).ok_or_else(|| unauthorized(&format!("unknown policy '{policy}'")))?;
    if !token.verify(policy_key) {
        return Err(unauthorized("the signature does not match the policy key"));
    }
    if token.is_expired_at(unix_now()) {
        return Err(unauthorized("the token has expired"));
    }
    if !any_of.iter().any(|r| rights.contains(r)) {
        return Err(unauthorized(&format!("policy '{policy}' does not grant this operation")));
    }
    Ok(())
}

/// A device or module token, parsed and checked against what it claims to be for. Returns the
/// token for the key check, which needs the registry.
pub fn parse_identity_token(
    password: &str,
    hub_host: &str,
    device_id: &str,
    module_id: Option<&str>,
) -> Result<SasToken, ConnectRefusal> {
    let token = SasToken::parse(password).map_err(|_| ConnectRefusal::BadUsernameOrPassword)?;
    let resource = SasResource::parse(&token.resource).map_err(|_| ConnectRefusal::NotAuthorized)?;
    let (host, d, m) = match &resource {
        SasResource::Device { host, device_id } => (host, device_id, None),
        SasResource::Module { host, device_id, module_id } => (host, device_id, Some(module_id.as_str())),
        SasResource::Hub { .. } => return Err(ConnectRefusal::NotAuthorized),
    };
    if !host_matches(hub_host, host) || d != device_id || m != module_id {
        return Err(ConnectRefusal::NotAuthorized);
    }
    if token.is_expired_at(unix_now()) {
        return Err(ConnectRefusal::NotAuthorized);
    }
    Ok(token)
}

/// The key check for an identity token: the identity's primary or secondary key, or a policy
/// with DeviceConnect.
pub fn verify_identity_key(token: &SasToken, auth: &Authentication, policy_key: &str) -> Result<(), ConnectRefusal> {
    let ok = match token.key_name.as_deref() {
        Some(policy) => {
            policy_rights(policy).is_some_and(|r| r.contains(&Right::DeviceConnect)) && token.verify(policy_key)
        }
        None => auth.auth_type == AuthType::Sas && (token.verify(&auth.primary_key) || token.verify(&auth.secondary_key)),
    };
    if ok {
        Ok(())
    } else {
        Err(ConnectRefusal::NotAuthorized)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-1 and SHA-256 thumbprints (lower-case hex) of a DER certificate.
pub fn thumbprints(der: &[u8]) -> [String; 2] {
    [hex(&sha1::Sha1::digest(der)), hex(&sha2::Sha256::digest(der))]
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}

/// Device-side X.509 check for an identity whose registry entry is `auth`: a `selfSigned` leaf by
/// its thumbprint; a `certificateAuthority` chain up to one of `ca_anchors`, its leaf's CN the device id.
pub fn verify_certificate(
    auth: &Authentication,
    expected_cn: &str,
    chain_der: &[Vec<u8>],
    ca_anchors: &[CertificateDer<'_>],
) -> Result<(), ConnectRefusal> {
    let leaf = chain_der.first().ok_or(ConnectRefusal::NotAuthorized)?;
    match auth.auth_type {
        AuthType::SelfSigned => {
            if thumbprints(leaf).iter().any(|t| auth.has_thumbprint(t)) {
                Ok(())
            } else {
                Err(ConnectRefusal::NotAuthorized)
            }
        }
        AuthType::CertificateAuthority => {
            if super::certificates::chain_ends_at(ca_anchors, chain_der) && common_name(leaf).as_deref() == Some(expected_cn) {
                Ok(())
            } else {
                Err(ConnectRefusal::NotAuthorized)
            }
        }
        AuthType::Sas | AuthType::None => Err(ConnectRefusal::NotAuthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironhub_protocol::sas::generate_token;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const OTHER: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    #[test]
    fn hosts_ignore_case_and_port() {
        assert!(host_matches("localhost", "LocalHost:8443"));
        assert!(host_matches("hub.example:443", "hub.example"));
        assert!(!host_matches("localhost", "otherhost"));
    }

    #[test]
    fn service_tokens() {
        let exp = unix_now() + 600;
        let owner = generate_token("localhost", KEY, Some("iothubowner"), exp).unwrap();
        assert!(authorize_service(Some(&owner), "LOCALHOST", KEY, &[Right::RegistryWrite]).is_ok());
        let read = generate_token("localhost:8443", KEY, Some("registryRead"), exp).unwrap();
        assert!(authorize_service(Some(&read), "localhost", KEY, &[Right::RegistryRead]).is_ok());
        let cases = [
            (Some(read.clone()), vec![Right::RegistryWrite]),
            (Some(generate_token("localhost", OTHER, Some("iothubowner"), exp).unwrap()), vec![Right::RegistryRead]),
            (Some(generate_token("localhost", KEY, Some("iothubowner"), 1000).unwrap()), vec![Right::RegistryRead]),
            (Some(generate_token("localhost", KEY, Some("nobody"), exp).unwrap()), vec![Right::RegistryRead]),
            (Some(generate_token("localhost", KEY, None, exp).unwrap()), vec![Right::RegistryRead]),
            (Some(generate_token("elsewhere", KEY, Some("iothubowner"), exp).unwrap()), vec![Right::RegistryRead]),
            (Some("Bearer x".to_string()), vec![Right::RegistryRead]),
            (None, vec![Right::RegistryRead]),
        ];
        for (header, rights) in cases {
            let err = authorize_service(header.as_deref(), "localhost", KEY, &rights).unwrap_err();
            assert_eq!((err.status, err.code), (401, 401002));
            assert!(!err.message.contains(KEY));
        }
    }

    #[test]
    fn identity_tokens() {
        let auth = Authentication { primary_key: KEY.into(), secondary_key: OTHER.into(), ..Default::default() };
        let exp = unix_now() + 600;
        let tok = generate_token("localhost/devices/d1", OTHER, None, exp).unwrap();
        let parsed = parse_identity_token(&tok, "localhost", "d1", None).unwrap();
        assert!(verify_identity_key(&parsed, &auth, "x").is_ok());
        assert_eq!(parse_identity_token(&tok, "localhost", "d2", None).unwrap_err(), ConnectRefusal::NotAuthorized);
        assert_eq!(parse_identity_token(&tok, "localhost", "d1", Some("m")).unwrap_err(), ConnectRefusal::NotAuthorized);
        assert_eq!(parse_identity_token("garbage", "localhost", "d1", None).unwrap_err(), ConnectRefusal::BadUsernameOrPassword);
        let expired = generate_token("localhost/devices/d1", KEY, None, 5).unwrap();
        assert_eq!(parse_identity_token(&expired, "localhost", "d1", None).unwrap_err(), ConnectRefusal::NotAuthorized);
        let policy = generate_token("localhost/devices/d1", KEY, Some("device"), exp).unwrap();
        let parsed = parse_identity_token(&policy, "localhost", "d1", None).unwrap();
        assert!(verify_identity_key(&parsed, &Authentication::default(), KEY).is_ok());
        let svc = generate_token("localhost/devices/d1", KEY, Some("service"), exp).unwrap();
        let parsed = parse_identity_token(&svc, "localhost", "d1", None).unwrap();
        assert!(verify_identity_key(&parsed, &Authentication::default(), KEY).is_err());
    }
}
