//! The `cipher` option on the wire. A list of TLS 1.2 suites means a TLS 1.2 connection (no TLS
//! 1.3 suite slipped in), a list of TLS 1.3 suites means TLS 1.3, and the list holds for the MQTT
//! link and for the HTTPS calls (the Edge `invoke_method`). The negotiated version and suite are
//! read on the server side: by the emulator's own TLS listener (a handshake with
//! `tls::client_config`), and for a whole client by a TLS-terminating relay in front of the
//! emulator that records each handshake (its own CA, which the client trusts). A module of the
//! `proxies` test binary (one link for the network-path tests).

use std::sync::{Arc, Mutex};

use ironhub::transport::tls::client_config;
use ironhub::{Client, ClientOptions, ErrorKind, Message, MethodResponse};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{CipherSuite, ProtocolVersion};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::common;

const TLS12_ONLY: &str = "ECDHE-ECDSA-AES128-GCM-SHA256";
const TLS13_ONLY: &str = "TLS_AES_256_GCM_SHA384";

type Handshakes = Arc<Mutex<Vec<(ProtocolVersion, CipherSuite)>>>;

/// A TLS relay on loopback: terminates the client's TLS with a certificate of its own CA,
/// records the negotiated version and suite, and forwards over TLS to the emulator's `upstream` port.
struct RecordingRelay {
    port: u16,
    ca_pem: String,
    handshakes: Handshakes,
}

async fn recording_relay(upstream: u16, upstream_ca: &str) -> RecordingRelay {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "relay CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256: the ECDHE-ECDSA suites
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let mut upstream_tls = (*client_config(Some(upstream_ca), "", None).unwrap()).clone();
    upstream_tls.alpn_protocols.clear();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(upstream_tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes: Handshakes = Arc::default();
    let record = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, connector, record) = (acceptor.clone(), connector.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(socket).await else { return };
                let (_, conn) = client.get_ref();
                let negotiated = (conn.protocol_version().unwrap(), conn.negotiated_cipher_suite().unwrap().suite());
                record.lock().unwrap().push(negotiated);
                let tcp = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
                let mut hub = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut hub).await;
            });
        }
    });
    RecordingRelay { port, ca_pem: ca.pem(), handshakes }
}

impl RecordingRelay {
    fn assert_only(&self, version: ProtocolVersion, suite: CipherSuite) {
        let seen = self.handshakes.lock().unwrap().clone();
        assert!(!seen.is_empty(), "no handshake reached the relay");
        assert!(seen.iter().all(|h| *h == (version, suite)), "negotiated {seen:?}, expected only {version:?} {suite:?}");
    }
}

/// One handshake with the emulator's MQTT listener using the client's TLS configuration.
async fn handshake_with_emulator(env: &common::Env, cipher: &str) -> (ProtocolVersion, CipherSuite) {
    let config = client_config(Some(env.emu.ca_pem()), cipher, None).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", env.emu.mqtt_port())).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let (_, conn) = tls.get_ref();
    (conn.protocol_version().unwrap(), conn.negotiated_cipher_suite().unwrap().suite())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cipher_list_decides_the_version_negotiated_with_the_emulator() {
    let env = common::start().await;
    assert_eq!(
        handshake_with_emulator(&env, TLS12_ONLY).await,
        (ProtocolVersion::TLSv1_2, CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
    assert_eq!(
        handshake_with_emulator(&env, "ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-AES256-GCM-SHA384").await,
        (ProtocolVersion::TLSv1_2, CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );
    assert_eq!(handshake_with_emulator(&env, TLS13_ONLY).await, (ProtocolVersion::TLSv1_3, CipherSuite::TLS13_AES_256_GCM_SHA384));
    assert_eq!(handshake_with_emulator(&env, "").await.0, ProtocolVersion::TLSv1_3, "no list: the defaults, TLS 1.3 first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls12_list_means_tls12_on_the_mqtt_link() {
    let env = common::start().await;
    for (id, cipher, expected) in [
        ("cipher12", TLS12_ONLY, (ProtocolVersion::TLSv1_2, CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)),
        ("cipher13", TLS13_ONLY, (ProtocolVersion::TLSv1_3, CipherSuite::TLS13_AES_256_GCM_SHA384)),
    ] {
        let relay = recording_relay(env.emu.mqtt_port(), env.emu.ca_pem()).await;
        let opts = ClientOptions {
            cipher: cipher.into(),
            mqtt_port: relay.port,
            server_verification_cert: Some(relay.ca_pem.clone()),
            ..env.options()
        };
        let client = Client::create_from_connection_string(&env.device(id), opts).unwrap();
        client.send_message(&Message::new("over the chosen suite")).await.unwrap();
        assert_eq!(env.wait_events(id, 1).await.len(), 1);
        relay.assert_only(expected.0, expected.1);
        client.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_the_server_cannot_meet_fails_the_connection() {
    let env = common::start().await;
    // The emulator's certificate is ECDSA: an RSA-only suite list leaves nothing in common.
    let opts = ClientOptions { cipher: "ECDHE-RSA-AES128-GCM-SHA256".into(), connection_retry: false, ..env.options() };
    let client = Client::create_from_connection_string(&env.device("noCommonSuite"), opts).unwrap();
    let e = client.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionFailed, "{e}");
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls12_list_means_tls12_on_the_https_path() {
    let env = common::start().await;
    let target = env.device_client("cipherTarget");
    let responder = target.clone();
    target
        .on_method_request_received(Some(Arc::new(move |request| {
            let c = responder.clone();
            std::thread::spawn(move || {
                let r = MethodResponse::create_from_method_request(&request, 200, Some(request.payload.clone()));
                ironhub::blocking::Client::from_async(c).send_method_response(&r).expect("method response");
            });
        })))
        .await
        .unwrap();
    let relay = recording_relay(env.emu.https_port(), env.emu.ca_pem()).await;
    let opts = ClientOptions {
        cipher: TLS12_ONLY.into(),
        https_port: relay.port,
        server_verification_cert: Some(relay.ca_pem.clone()),
        auto_connect: false,
        ..env.options()
    };
    let cs = format!("{};GatewayHostName=localhost", env.edge_module("edgeDev", "cipherCaller"));
    let caller = Client::create_from_connection_string(&cs, opts).unwrap();
    let params = json!({"methodName": "echo", "payload": 12, "responseTimeoutInSeconds": 10});
    let answer = caller.invoke_method(&params, "cipherTarget", None).await.unwrap();
    assert_eq!(answer, json!({"status": 200, "payload": 12}));
    relay.assert_only(ProtocolVersion::TLSv1_2, CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    for c in [caller, target] {
        c.shutdown().await.unwrap();
    }
}

#[test]
fn an_unknown_or_unsupported_name_is_refused_naming_it() {
    for (list, name) in [("NOT-A-CIPHER", "NOT-A-CIPHER"), (&format!("{TLS12_ONLY}:AES128-SHA")[..], "AES128-SHA")] {
        let opts = ClientOptions { cipher: list.into(), auto_connect: false, ..Default::default() };
        let e = Client::create_from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==", opts)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains(&format!("{name:?}")), "{e}");
    }
}
