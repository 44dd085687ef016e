//! The hub's CONNECT checks, called directly: SAS tokens (keys, policies, expiry, identity,
//! disabled devices) and X.509 (selfSigned thumbprints, certificateAuthority chains from --ca-cert or
//! roots registered through `/certificates/{name}`).

mod support;

use ironhub_emulator::hub::ConnectRefusal;
use ironhub_emulator::{EmulatorConfig, Identity};
use ironhub_protocol::sas::{device_resource, generate_token};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use reqwest::Method;
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

/// `/certificates/{name}` as IoT Hub's certificate API has it: PUT with `properties.certificate`
/// and `isVerified`, ETags on update and delete, a list; a verified root (with the intermediate
/// the device sends) authenticates `certificateAuthority` devices, and it survives a restart.
#[tokio::test]
async fn certificates_api_trusts_registered_roots() {
    let (root, root_key) = ca("registered root");
    let intermediate_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "registered intermediate");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let intermediate = params.signed_by(&intermediate_key, &root, &root_key).unwrap();
    let chain = vec![leaf("chained", Some((&intermediate, &intermediate_key))), intermediate.der().to_vec()];
    let dir = std::env::temp_dir().join(format!("ironhub-certificates-{}", rand::random::<u64>()));
    let config = EmulatorConfig { state_dir: Some(dir.clone()), ..Default::default() };

    let emu = start_with(config.clone()).await;
    let api = Api::new(&emu);
    api.put("/devices/chained", json!({"authentication": {"type": "certificateAuthority"}})).await;
    let chained = Identity::device("chained");
    assert_eq!(emu.hub().authenticate_x509(&chained, &chain), Err(ConnectRefusal::NotAuthorized), "no root yet");

    let unverified = json!({"properties": {"certificate": root.pem(), "isVerified": false}});
    let created = api.put("/certificates/root1", unverified.clone()).await;
    assert_eq!(created.status, reqwest::StatusCode::OK, "{:?}", created.body);
    assert_eq!(created.body["properties"]["subject"], "CN=registered root");
    assert_eq!(created.body["properties"]["thumbprint"].as_str().unwrap().len(), 40);
    let tag = created.etag.clone().expect("an ETag header");
    assert_eq!(tag, format!("\"{}\"", created.body["etag"].as_str().unwrap()));
    assert_eq!(emu.hub().authenticate_x509(&chained, &chain), Err(ConnectRefusal::NotAuthorized), "not verified yet");

    // Updating needs the current ETag.
    let verified = json!({"properties": {"certificate": root.pem(), "isVerified": true}});
    assert_eq!(api.put("/certificates/root1", verified.clone()).await.status, reqwest::StatusCode::PRECONDITION_FAILED);
    let stale = api.call(Method::PUT, "/certificates/root1", Some(verified.clone()), &[("If-Match", "\"AAAA\"")]).await;
    assert_eq!(stale.status, reqwest::StatusCode::PRECONDITION_FAILED);
    let updated = api.call(Method::PUT, "/certificates/root1", Some(verified), &[("If-Match", &tag)]).await;
    assert_eq!(updated.status, reqwest::StatusCode::OK);
    assert_eq!(updated.body["properties"]["isVerified"], true);
    assert_ne!(updated.etag, created.etag);
    assert_eq!(emu.hub().authenticate_x509(&chained, &chain), Ok(()));
    assert_eq!(emu.hub().authenticate_x509(&chained, &chain[..1]), Err(ConnectRefusal::NotAuthorized), "intermediate missing");

    // Proof of possession over HTTPS: a verification code, then a certificate with that CN signed by the CA.
    let (pop, pop_key) = ca("proof of possession root");
    let created = api.put("/certificates/pop", json!({"properties": {"certificate": pop.pem()}})).await;
    let generate = "/certificates/pop/generateVerificationCode";
    let coded = api.call(Method::POST, generate, Some(json!({})), &[("If-Match", created.etag.as_deref().unwrap())]).await;
    assert_eq!(coded.status, reqwest::StatusCode::OK, "{:?}", coded.body);
    let code = coded.body["properties"]["verificationCode"].as_str().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, code);
    let proof_pem = params.signed_by(&key, &pop, &pop_key).unwrap().pem();
    let verify = "/certificates/pop/verify";
    let verified = api.call(Method::POST, verify, Some(json!({"certificate": proof_pem})), &[("If-Match", "*")]).await;
    assert_eq!(verified.status, reqwest::StatusCode::OK, "{:?}", verified.body);
    assert_eq!(verified.body["properties"]["isVerified"], true);
    let tag = verified.etag.unwrap();
    assert_eq!(api.call(Method::DELETE, "/certificates/pop", None, &[("If-Match", &tag)]).await.status, reqwest::StatusCode::NO_CONTENT);

    assert_eq!(api.get("/certificates").await.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/certificates/nope").await.status, reqwest::StatusCode::NOT_FOUND);
    let bad = api.put("/certificates/bad", json!({"properties": {"certificate": "not a certificate"}})).await;
    assert_eq!(bad.status, reqwest::StatusCode::BAD_REQUEST);
    let reader = Api::with_policy(&emu, "registryRead");
    assert_eq!(reader.put("/certificates/r2", json!({"properties": {"certificate": root.pem()}})).await.status, reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(reader.get("/certificates/root1").await.status, reqwest::StatusCode::OK);
    emu.shutdown().await;

    // The registered root survives a restart, and deleting it (If-Match required) ends its trust.
    let emu = start_with(config).await;
    let api = Api::new(&emu);
    assert_eq!(emu.hub().authenticate_x509(&chained, &chain), Ok(()));
    let tag = api.get("/certificates/root1").await.etag.unwrap();
    assert_eq!(api.call(Method::DELETE, "/certificates/root1", None, &[]).await.status, reqwest::StatusCode::PRECONDITION_FAILED);
    assert_eq!(api.call(Method::DELETE, "/certificates/root1", None, &[("If-Match", &tag)]).await.status, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(emu.hub().authenticate_x509(&chained, &chain), Err(ConnectRefusal::NotAuthorized));
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
