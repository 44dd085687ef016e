//! The hub's CONNECT checks, called directly: SAS tokens (keys, policies, expiry, identity,
//! disabled devices) and X.509 (selfSigned thumbprints, certificateAuthority chains from --ca-cert).

mod support;

use ironhub_emulator::hub::ConnectRefusal;
use ironhub_emulator::{EmulatorConfig, Identity};
use ironhub_protocol::sas::{device_resource, generate_token};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;
use support::{start, start_with, unix_now, Api};

fn token(device: &str, module: Option<&str>, key: &str, policy: Option<&str>, expiry: u64) -> String {
    generate_token(&device_resource("localhost", device, module), key, policy, expiry).unwrap()
}

#[tokio::test]
async fn sas_connect_rules() {
    let emu = start().await;
    let hub = emu.hub();
    let dev = hub.create_device("d").unwrap();
    let module = hub.create_module("d", "m").unwrap();
    let later = unix_now() + 600;
    let d = Identity::device("d");

    assert_eq!(hub.authenticate_sas(&d, &token("d", None, dev.primary_key(), None, later)), Ok(later));
    assert!(hub.authenticate_sas(&d, &token("d", None, dev.secondary_key(), None, later)).is_ok());
    assert!(hub.authenticate_sas(&d, &token("d", None, hub.policy_key(), Some("device"), later)).is_ok());
    assert!(hub.authenticate_sas(&Identity::module("d", "m"), &token("d", Some("m"), module.primary_key(), None, later)).is_ok());

    let refused = [
        (d.clone(), token("d", None, module.primary_key(), None, later)),
        (d.clone(), token("d", None, dev.primary_key(), None, unix_now() - 1)),
        (d.clone(), token("d", None, hub.policy_key(), Some("service"), later)),
        (d.clone(), token("d", Some("m"), module.primary_key(), None, later)),
        (Identity::device("ghost"), token("ghost", None, dev.primary_key(), None, later)),
        (Identity::module("d", "ghost"), token("d", Some("ghost"), dev.primary_key(), None, later)),
    ];
    for (id, password) in refused {
        assert_eq!(hub.authenticate_sas(&id, &password), Err(ConnectRefusal::NotAuthorized), "{id}");
    }
    assert_eq!(hub.authenticate_sas(&d, "not a token"), Err(ConnectRefusal::BadUsernameOrPassword));

    let api = Api::new(&emu);
    api.call(reqwest::Method::PUT, "/devices/d", Some(json!({"status": "disabled"})), &[("If-Match", "\"*\"")]).await;
    // A disabled device is refused with CONNACK 3, as IoT Hub does (clients report DEVICE_DISABLED).
    assert_eq!(hub.authenticate_sas(&d, &token("d", None, dev.primary_key(), None, later)), Err(ConnectRefusal::ServerUnavailable));
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (params.self_signed(&key).unwrap(), key)
}

fn leaf(cn: &str, issuer: Option<(&rcgen::Certificate, &KeyPair)>) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = match issuer {
        Some((cert, ca_key)) => params.signed_by(&key, cert, ca_key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    cert.der().to_vec()
}

fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect()
}

#[tokio::test]
async fn x509_self_signed_and_ca() {
    let (trusted, trusted_key) = ca("trusted CA");
    let (other, other_key) = ca("other CA");
    let dir = std::env::temp_dir().join(format!("ironhub-x509-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, trusted.pem()).unwrap();
    let emu = start_with(EmulatorConfig { ca_cert_file: Some(ca_file), ..Default::default() }).await;
    let api = Api::new(&emu);
    let hub = emu.hub();

    let own = leaf("selfie", None);
    let body = json!({"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": sha256_hex(&own)}}});
    assert_eq!(api.put("/devices/selfie", body).await.status, reqwest::StatusCode::OK);
    let selfie = Identity::device("selfie");
    assert_eq!(hub.authenticate_x509(&selfie, std::slice::from_ref(&own)), Ok(()));
    assert_eq!(hub.authenticate_x509(&selfie, &[leaf("selfie", None)]), Err(ConnectRefusal::NotAuthorized));
    assert_eq!(hub.authenticate_x509(&selfie, &[]), Err(ConnectRefusal::NotAuthorized));

    api.put("/devices/cadev", json!({"authentication": {"type": "certificateAuthority"}})).await;
    let cadev = Identity::device("cadev");
    assert_eq!(hub.authenticate_x509(&cadev, &[leaf("cadev", Some((&trusted, &trusted_key)))]), Ok(()));
    assert_eq!(hub.authenticate_x509(&cadev, &[leaf("someone", Some((&trusted, &trusted_key)))]), Err(ConnectRefusal::NotAuthorized));
    assert_eq!(hub.authenticate_x509(&cadev, &[leaf("cadev", Some((&other, &other_key)))]), Err(ConnectRefusal::NotAuthorized));
    // A SAS device cannot use a certificate, and a certificate device has no key to sign with.
    hub.create_device("sasdev").unwrap();
    assert_eq!(hub.authenticate_x509(&Identity::device("sasdev"), &[own]), Err(ConnectRefusal::NotAuthorized));
    std::fs::remove_dir_all(dir).unwrap();
}
