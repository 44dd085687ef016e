//! rustls client configuration with the `ring` provider: TLS 1.2 minimum, chain and host name
//! verified against the host connected to, trust roots from `server_verification_cert` (PEM text)
//! or the default roots (`root_store`), optional client certificate (X.509 identities), optional
//! cipher list (which also decides the TLS versions offered: see `parse_cipher_list`).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, ClientConfig, RootCertStore, SupportedCipherSuite};

use crate::error::{Error, Result};
use crate::message::X509;

/// `(OpenSSL name, rustls name, code)`: the rustls name is IANA's (`TLS13_` for TLS 1.3).
macro_rules! suite {
    ($openssl:literal, $rustls:ident) => {
        ($openssl, stringify!($rustls), CipherSuite::$rustls)
    };
}

/// OpenSSL names and rustls's (IANA's, `TLS13_` for TLS 1.3) of the suites the ring provider offers.
/// Names are matched here, and suites by their code: formatting `CipherSuite` with `Debug` would
/// link rustls's names of all ~370 registered suites into every build.
const CIPHER_NAMES: &[(&str, &str, CipherSuite)] = &[
    suite!("ECDHE-ECDSA-AES128-GCM-SHA256", TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    suite!("ECDHE-ECDSA-AES256-GCM-SHA384", TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    suite!("ECDHE-ECDSA-CHACHA20-POLY1305", TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    suite!("ECDHE-RSA-AES128-GCM-SHA256", TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    suite!("ECDHE-RSA-AES256-GCM-SHA384", TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    suite!("ECDHE-RSA-CHACHA20-POLY1305", TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    suite!("TLS_AES_128_GCM_SHA256", TLS13_AES_128_GCM_SHA256),
    suite!("TLS_AES_256_GCM_SHA384", TLS13_AES_256_GCM_SHA384),
    suite!("TLS_CHACHA20_POLY1305_SHA256", TLS13_CHACHA20_POLY1305_SHA256),
];

/// The user's `cipher` option as rustls sees it: the suites, and the TLS versions they allow.
pub struct CipherChoice {
    pub suites: Vec<SupportedCipherSuite>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
}

/// Parses the `cipher` option (OpenSSL or IANA names, separated by `:`, `,` or spaces as OpenSSL
/// accepts them); empty → None (provider defaults, TLS 1.2 and 1.3).
///
/// The list is honoured as given: naming only TLS 1.2 suites means a TLS 1.2-only connection
/// (adding the TLS 1.3 suites behind the user's back would negotiate 1.3 with every modern hub),
/// naming only TLS 1.3 suites means TLS 1.3 only. A name rustls does not offer (unknown, or a
/// real OpenSSL suite such as `AES128-SHA` that ring does not implement) is an error naming it:
/// silently ignoring a security setting would be worse.
pub fn parse_cipher_list(cipher: &str) -> Result<Option<CipherChoice>> {
    let names: Vec<&str> = cipher.split([':', ',', ' ']).map(str::trim).filter(|s| !s.is_empty()).collect();
    if names.is_empty() {
        return Ok(None);
    }
    let all = rustls::crypto::ring::default_provider().cipher_suites;
    let mut suites: Vec<SupportedCipherSuite> = Vec::new();
    for name in names {
        let code = CIPHER_NAMES
            .iter()
            .find(|(openssl, rustls_name, _)| {
                openssl.eq_ignore_ascii_case(name) || rustls_name.eq_ignore_ascii_case(name)
            })
            .map(|(_, _, code)| *code);
        let suite = all.iter().find(|s| Some(s.suite()) == code).ok_or_else(|| {
            let supported: Vec<&str> = CIPHER_NAMES.iter().map(|(openssl, _, _)| *openssl).collect();
            Error::invalid(format!("unknown or unsupported cipher {name:?}: supported are {}", supported.join(", ")))
        })?;
        if !suites.iter().any(|c| c.suite() == suite.suite()) {
            suites.push(*suite);
        }
    }
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12]
        .into_iter()
        .filter(|v| suites.iter().any(|s| s.version() == *v))
        .collect();
    Ok(Some(CipherChoice { suites, versions }))
}

/// The ring provider restricted to the user's suites, and the protocol versions to offer.
fn provider(cipher: &str) -> Result<(CryptoProvider, Vec<&'static rustls::SupportedProtocolVersion>)> {
    let mut p = rustls::crypto::ring::default_provider();
    match parse_cipher_list(cipher)? {
        Some(choice) => {
            p.cipher_suites = choice.suites;
            Ok((p, choice.versions))
        }
        None => Ok((p, vec![&rustls::version::TLS13, &rustls::version::TLS12])),
    }
}

/// Root store from PEM text, or the default roots: the web PKI's (Mozilla's list, feature
/// `webpki-roots`, default on) or, in a build without it, the roots Azure IoT Hub and DPS chain to.
pub fn root_store(server_verification_cert: Option<&str>) -> Result<RootCertStore> {
    match server_verification_cert {
        Some(pem) => store_from_pem(pem),
        None => default_roots(),
    }
}

fn store_from_pem(pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid("server_verification_cert is not valid PEM"))?;
    if certs.is_empty() {
        return Err(Error::invalid("server_verification_cert holds no certificate"));
    }
    for c in certs {
        roots.add(c).map_err(|e| Error::invalid(format!("server_verification_cert: unusable certificate: {e}")))?;
    }
    Ok(roots)
}

#[cfg(feature = "webpki-roots")]
fn default_roots() -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(roots)
}

/// A firmware build leaves Mozilla's ~150 roots out (about 90 KB) and trusts what IoT Hub and
/// DPS present, as azure-iot-sdk-c's `certs.c` does: DigiCert Global Root G2/G3/CA and the
/// Microsoft RSA/ECC 2017 roots (`azure_roots.pem`).
#[cfg(not(feature = "webpki-roots"))]
fn default_roots() -> Result<RootCertStore> {
    store_from_pem(include_str!("azure_roots.pem"))
}

/// Certificate chain and key of an X.509 identity.
pub fn load_client_identity(x509: &X509) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_pem = std::fs::read(&x509.certificate_file)
        .map_err(|e| Error::invalid(format!("cannot read certificate file {:?}: {e}", x509.certificate_file)))?;
    let key_pem = std::fs::read(&x509.key_file)
        .map_err(|e| Error::invalid(format!("cannot read key file {:?}: {e}", x509.key_file)))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid("certificate file is not valid PEM"))?;
    if chain.is_empty() {
        return Err(Error::invalid("certificate file holds no certificate"));
    }
    let origin = x509.key_file.display().to_string();
    let key = crate::auth::private_key::load(&key_pem, x509.pass_phrase.as_deref(), &origin)?;
    Ok((chain, key))
}

/// The client TLS configuration every connection of a client uses.
pub fn client_config(
    server_verification_cert: Option<&str>,
    cipher: &str,
    x509: Option<&X509>,
) -> Result<Arc<ClientConfig>> {
    let roots = root_store(server_verification_cert)?;
    let (provider, versions) = provider(cipher)?;
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| Error::invalid(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots);
    let config = match x509 {
        Some(x) => {
            let (chain, key) = load_client_identity(x)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::invalid(format!("client certificate and key do not match or are unusable: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
