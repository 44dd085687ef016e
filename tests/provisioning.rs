//! The provisioning client (`ironhub::provisioning`) against the emulator's DPS over real TLS:
//! individual and group enrollments, symmetric keys and X.509, MQTT and WebSockets, errors as
//! azure-iot-device raises them, and the one-call path from a result to a connected hub client.

mod common;

use std::time::{Duration, Instant};


use ironhub::provisioning::{self, ProvisioningClient};
use ironhub::{ClientOptions, Error, Message, X509};
use ironhub_emulator::dps::enrollments::Kind;
use serde_json::json;

/// A fresh random base64 key (the emulator's generator).
fn key() -> String {
    ironhub_emulator::dps::enrollments::generate_key()
}

fn symmetric(primary: &str, secondary: &str) -> serde_json::Value {
    json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}})
}

fn client(env: &common::Env, registration_id: &str, key: &str, options: ClientOptions) -> ProvisioningClient {
    ProvisioningClient::create_from_symmetric_key(env.emu.hostname(), registration_id, &env.emu.id_scope(), key, options)
        .expect("provisioning client")
}

#[tokio::test]
async fn individual_enrollment_registers_polls_and_connects_with_the_initial_twin() {
    let env = common::start().await;
    let device_key = key();
    let twin = json!({"tags": {"site": "lab"}, "properties": {"desired": {"interval": 30}}});
    env.emu
        .dps()
        .put_enrollment(Kind::Individual, "reg-1", &json!({"attestation": symmetric(&device_key, &key()), "deviceId": "dev-1", "initialTwin": twin}), None)
        .unwrap();
    let dps = client(&env, "reg-1", &device_key, env.options());
    dps.set_provisioning_payload(Some(json!({"firmware": "1.0"})));
    let started = Instant::now();
    let result = dps.register().await.expect("registers");
    // The emulator answers 202 with retry-after=1: the client waited for it before polling.
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(result.status.as_deref(), Some("assigned"));
    assert!(result.operation_id.is_some());
    let state = result.registration_state.clone().unwrap();
    assert_eq!(state.device_id.as_deref(), Some("dev-1"));
    assert_eq!(state.assigned_hub.as_deref(), Some(env.emu.hostname()));
    assert_eq!(state.sub_status.as_deref(), Some("initialAssignment"));
    assert_eq!(state.payload, Some(json!({"firmware": "1.0"})));

    let device = result.device_client_from_symmetric_key(&device_key, env.options()).unwrap();
    device.send_message(&Message::new("after provisioning")).await.unwrap();
    assert_eq!(env.wait_events("dev-1", 1).await.len(), 1);
    assert_eq!(device.get_twin().await.unwrap()["desired"]["interval"], 30);
    device.shutdown().await.unwrap();
}

#[tokio::test]
async fn group_enrollment_members_use_derived_keys_over_websockets_too() {
    let env = common::start().await;
    let group_key = key();
    env.emu.dps().put_enrollment(Kind::Group, "group-1", &json!({"attestation": symmetric(&group_key, &key())}), None).unwrap();
    for (registration_id, websockets) in [("member-a", false), ("member-b", true)] {
        let device_key = provisioning::derive_device_key(&group_key, registration_id).unwrap();
        let result = client(&env, registration_id, &device_key, ClientOptions { websockets, ..env.options() })
            .register()
            .await
            .unwrap_or_else(|e| panic!("{registration_id}: {e}"));
        assert_eq!(result.assignment().unwrap(), (env.emu.hostname(), registration_id));
        let device = result.device_client_from_symmetric_key(&device_key, env.options()).unwrap();
        device.connect().await.unwrap();
        device.shutdown().await.unwrap();
    }
    // The group key itself is not a member's key.
    let err = client(&env, "member-c", &group_key, env.options()).register().await.unwrap_err();
    assert!(matches!(err, Error::Credential(_)), "{err:?}");
}

#[tokio::test]
async fn refusals_are_mapped_as_the_official_sdk_raises_them() {
    let env = common::start().await;
    let device_key = key();
    let dps = env.emu.dps();
    dps.put_enrollment(Kind::Individual, "reg-ok", &json!({"attestation": symmetric(&device_key, &key())}), None).unwrap();
    dps.put_enrollment(Kind::Individual, "reg-off", &json!({"attestation": symmetric(&device_key, &key()), "provisioningStatus": "disabled"}), None)
        .unwrap();

    let wrong = key();
    let err = client(&env, "reg-ok", &wrong, env.options()).register().await.unwrap_err();
    assert!(matches!(err, Error::Credential(_)), "{err:?}");
    assert!(!err.to_string().contains(&wrong));

    let err = client(&env, "reg-off", &device_key, env.options()).register().await.unwrap_err();
    assert_eq!(err.service_status(), Some(401), "{err:?}");
    assert_eq!(err.kind(), ironhub::ErrorKind::Client);

    let mut wrong_scope = ProvisioningClient::create_from_symmetric_key(env.emu.hostname(), "reg-ok", "0ne00000000", &device_key, env.options())
        .unwrap()
        .register()
        .await;
    assert!(matches!(wrong_scope, Err(Error::Credential(_))), "{wrong_scope:?}");

    // Nothing listens: a connection failure, not a hang.
    let closed = ClientOptions { mqtt_port: 1, operation_timeout: Duration::from_secs(10), ..env.options() };
    wrong_scope = client(&env, "reg-ok", &device_key, closed).register().await;
    assert!(matches!(wrong_scope, Err(Error::ConnectionFailed(_))), "{wrong_scope:?}");

    for (host, rid, scope, k) in [("", "r", "s", device_key.as_str()), ("h", "", "s", &device_key), ("h", "r", "", &device_key), ("h", "r/x", "s", &device_key), ("h", "r", "s", "not base64!")] {
        let err = ProvisioningClient::create_from_symmetric_key(host, rid, scope, k, env.options()).err().expect("refused");
        assert_eq!(err.kind(), ironhub::ErrorKind::InvalidArgument, "{host:?} {rid:?} {scope:?}");
    }
}

#[tokio::test]
async fn x509_individual_enrollment_and_blocking_facade() {
    let env = common::start().await;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "x509-reg");
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    let dir = std::env::temp_dir().join(format!("ironhub-dps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("x509-reg.pem"), dir.join("x509-reg-key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key_pair.serialize_pem()).unwrap();
    let x509 = X509 { certificate_file: cert_file.clone(), key_file: key_file.clone(), pass_phrase: None };
    env.emu
        .dps()
        .put_enrollment(
            Kind::Individual,
            "x509-reg",
            &json!({"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": cert.pem()}}}}}),
            None,
        )
        .unwrap();

    let (host, scope, options, x) = (env.emu.hostname().to_owned(), env.emu.id_scope(), env.options(), x509.clone());
    let result = tokio::task::spawn_blocking(move || {
        provisioning::blocking::ProvisioningClient::create_from_x509_certificate(&host, "x509-reg", &scope, x, options)?.register()
    })
    .await
    .unwrap()
    .expect("x509 registration");
    assert_eq!(result.assignment().unwrap().1, "x509-reg");
    let device = result.device_client_from_x509_certificate(x509, env.options()).unwrap();
    device.send_message(&Message::new("x509 after provisioning")).await.unwrap();
    device.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn service_rest_api_enrollments_etags_and_registrations() {
    let env = common::start().await;
    let cs = env.emu.provisioning_service_connection_string();
    let fields: std::collections::HashMap<&str, &str> = cs.split(';').filter_map(|kv| kv.split_once('=')).collect();
    let host = fields["HostName"];
    let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = ironhub_protocol::sas::generate_token(host, fields["SharedAccessKey"], Some("provisioningserviceowner"), expiry).unwrap();
    let wrong = ironhub_protocol::sas::generate_token(host, &key(), Some("provisioningserviceowner"), expiry).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(env.emu.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = |path: &str| format!("https://{host}{path}?api-version=2021-10-01");
    let device_key = key();
    let body = json!({"registrationId": "rest-1", "attestation": symmetric(&device_key, &key())});

    let resp = http.put(url("/enrollments/rest-1")).header("Authorization", &wrong).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let created: serde_json::Value =
        http.put(url("/enrollments/rest-1")).header("Authorization", &token).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(created["attestation"]["symmetricKey"]["primaryKey"], device_key.as_str());
    let etag = created["etag"].as_str().unwrap().to_owned();
    let stale = http.put(url("/enrollments/rest-1")).header("Authorization", &token).header("If-Match", "\"nope\"").json(&body).send().await.unwrap();
    assert_eq!(stale.status(), 412);
    let fresh = http.put(url("/enrollments/rest-1")).header("Authorization", &token).header("If-Match", format!("\"{etag}\"")).json(&body).send().await.unwrap();
    assert_eq!(fresh.status(), 200);

    let resp = http.get(url("/registrations/rest-1")).header("Authorization", &token).send().await.unwrap();
    assert_eq!(resp.status(), 404, "no registration before the device registers");
    client(&env, "rest-1", &device_key, env.options()).register().await.unwrap();
    let record: serde_json::Value = http.get(url("/registrations/rest-1")).header("Authorization", &token).send().await.unwrap().json().await.unwrap();
    assert_eq!((record["deviceId"].as_str(), record["status"].as_str()), (Some("rest-1"), Some("assigned")));

    let deleted = http.delete(url("/enrollments/rest-1")).header("Authorization", &token).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = http.get(url("/enrollments/rest-1")).header("Authorization", &token).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let err = client(&env, "rest-1", &device_key, env.options()).register().await.unwrap_err();
    assert!(matches!(err, Error::Credential(_)), "a deleted enrollment no longer registers: {err:?}");
}

/// DPS over MQTT runs on the hub link's connector, so every proxy type carries it (SOCKS used to
/// be refused: rumqttc's event loop tunnels HTTP CONNECT only), over TCP and WebSockets; each
/// proxy's own log proves the tunnel, and a proxy's refusal is ConnectionFailed without its password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_goes_through_socks_and_http_proxies() {
    use common::real_proxies::RealProxy;
    let env = common::start().await;
    let micro = RealProxy::microsocks("bob", "pr0xy-s3cret");
    let tiny = RealProxy::tinyproxy(Some(("alice", "pr0xy-s3cret")), None);
    let cases = [
        ("reg-socks5", &micro, Some("bob"), false),
        ("reg-socks5-ws", &micro, Some("bob"), true),
        ("reg-http", &tiny, Some("alice"), false),
    ];
    for (registration_id, proxy, user, websockets) in cases {
        let device_key = key();
        env.emu
            .dps()
            .put_enrollment(Kind::Individual, registration_id, &json!({"attestation": symmetric(&device_key, &key())}), None)
            .unwrap();
        let options = ClientOptions {
            proxy_options: Some(proxy.options(user, Some("pr0xy-s3cret"))),
            websockets,
            ..env.options()
        };
        let result = client(&env, registration_id, &device_key, options).register().await;
        let result = result.unwrap_or_else(|e| panic!("{registration_id}: {e}"));
        assert_eq!(result.status.as_deref(), Some("assigned"), "{registration_id}");
        proxy.assert_tunnelled_to(if websockets { env.emu.https_port() } else { env.emu.mqtt_port() });
    }
    let device_key = key();
    env.emu
        .dps()
        .put_enrollment(Kind::Individual, "reg-refused", &json!({"attestation": symmetric(&device_key, &key())}), None)
        .unwrap();
    let options = ClientOptions { proxy_options: Some(micro.options(Some("bob"), Some("wrong-pw"))), ..env.options() };
    let e = client(&env, "reg-refused", &device_key, options).register().await.unwrap_err();
    assert_eq!(e.kind(), ironhub::ErrorKind::ConnectionFailed, "{e}");
    assert!(!e.to_string().contains("wrong-pw"), "{e}");
}
