//! Owns the emulator's TLS material: a CA and a server certificate (hostname, `localhost`,
//! 127.0.0.1) created with rcgen or reused from the state directory, the rustls server config
//! both listeners use, and reading the `--ca-cert` roots for CA-signed devices.
//!
//! The CA is kept across restarts so clients that trusted it once keep working; the server
//! certificate is issued fresh at every start because the hostname may have changed.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

use crate::hub::persist;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> CertError {
    CertError::File { path: path.display().to_string(), message: message.to_string() }
}

/// The emulator's CA (PEM, what clients trust) and its server certificate chain and key.
pub struct ServerIdentity {
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";

fn new_ca() -> Result<(CertificateParams, KeyPair), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "ironhub emulator CA");
    params.distinguished_name.push(DnType::OrganizationName, "ironhub");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok((params, key))
}

/// Loads the CA from the state directory, or creates one (and saves it there when given).
fn load_or_create_ca(state_dir: Option<&Path>) -> Result<(rcgen::Certificate, KeyPair, String), CertError> {
    if let Some(dir) = state_dir {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let cert = persist::read_optional(&cert_path).map_err(|e| file_error(&cert_path, e))?;
        let key = persist::read_optional(&key_path).map_err(|e| file_error(&key_path, e))?;
        if let (Some(cert), Some(key)) = (cert, key) {
            let cert_pem = String::from_utf8(cert).map_err(|e| file_error(&cert_path, e))?;
            let key_pem = String::from_utf8(key).map_err(|e| file_error(&key_path, e))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| file_error(&key_path, e))?;
            let params = CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| file_error(&cert_path, e))?;
            // Re-signing the same params with the same key gives an issuer with the same subject
            // and key, which is all signing needs; clients keep trusting the PEM on disk.
            let issuer = params.self_signed(&key)?;
            return Ok((issuer, key, cert_pem));
        }
    }
    let (params, key) = new_ca()?;
    let cert = params.self_signed(&key)?;
    let pem = cert.pem();
    if let Some(dir) = state_dir {
        persist::write_atomic(&dir.join(CA_KEY_FILE), key.serialize_pem().as_bytes()).map_err(|e| file_error(dir, e))?;
        persist::write_public_atomic(&dir.join(CA_CERT_FILE), pem.as_bytes()).map_err(|e| file_error(dir, e))?;
    }
    Ok((cert, key, pem))
}

/// The CA (reused from `state_dir` when there) and a fresh server certificate for `hostname`,
/// `localhost`, 127.0.0.1 and `extra_names` (the other addresses the listeners bind).
pub fn server_identity(state_dir: Option<&Path>, hostname: &str, extra_names: &[String]) -> Result<ServerIdentity, CertError> {
    let (ca_cert, ca_key, ca_pem) = load_or_create_ca(state_dir)?;
    let mut names: Vec<String> = Vec::new();
    for name in [hostname, "localhost", "127.0.0.1"].into_iter().chain(extra_names.iter().map(String::as_str)) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, hostname);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    let ca_der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| file_error(Path::new(CA_CERT_FILE), "no certificate in the CA PEM"))?;
    Ok(ServerIdentity {
        ca_pem,
        chain: vec![cert.der().clone(), ca_der],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

/// Asks every client for a certificate but accepts any (or none): which identity a certificate
/// proves is the hub's decision at CONNECT (`Hub::authenticate_x509`), not the TLS layer's.
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    // The handshake signature still proves the client holds the certificate's private key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server config both listeners use: TLS 1.2 (azure-iot-device pins it) and 1.3, client
/// certificates requested but optional.
pub fn server_config(identity: &ServerIdentity) -> Result<Arc<ServerConfig>, CertError> {
    let provider = provider();
    let verifier = Arc::new(AnyClientCertificate { algorithms: provider.signature_verification_algorithms });
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    Ok(Arc::new(config))
}

/// The roots `certificateAuthority` device chains may end at, from a PEM file (`--ca-cert`).
/// Each must be a certificate webpki accepts as a trust anchor: a bad file fails at start.
pub fn ca_roots_from_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let mut roots = Vec::new();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| file_error(path, e))?;
        RootCertStore::empty().add(cert.clone()).map_err(|e| file_error(path, e))?;
        roots.push(cert);
    }
    if roots.is_empty() {
        return Err(file_error(path, "no certificate found in the PEM file"));
    }
    Ok(roots)
}
