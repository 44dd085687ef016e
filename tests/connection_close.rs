//! How the client ends a connection (issue 8): an MQTT DISCONNECT, then the TLS `close_notify`,
//! so the hub sees an orderly close rather than "peer closed connection without sending TLS
//! close_notify". Checked from the server's side by a minimal MQTT-over-TLS server of the test's
//! own (rustls), which reads the raw bytes the real client sends.

use std::sync::Arc;
use std::time::Duration;

use ironhub::{Client, ClientOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// MQTT CONNACK, session not present, accepted.
const CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
/// MQTT DISCONNECT.
const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// What the server saw after the CONNACK: the bytes, and whether the stream ended with a TLS
/// close_notify (`Ok(0)`) or without one (rustls reports `UnexpectedEof`).
struct Seen {
    after_connack: Vec<u8>,
    clean_close: bool,
}

async fn one_connection_server() -> (u16, String, tokio::task::JoinHandle<Seen>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().self_signed(&key).unwrap();
    let ca_pem = cert.pem();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        // CONNECT: fixed header, remaining length (one byte is enough for this client id), body.
        let mut head = [0u8; 2];
        tls.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x10, "CONNECT first");
        let mut len = (head[1] & 0x7f) as usize;
        if head[1] & 0x80 != 0 {
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.unwrap();
            len += (b[0] as usize) << 7;
        }
        let mut body = vec![0u8; len];
        tls.read_exact(&mut body).await.unwrap();
        tls.write_all(&CONNACK).await.unwrap();
        let mut after_connack = Vec::new();
        let mut buf = [0u8; 1024];
        let clean_close = loop {
            match tls.read(&mut buf).await {
                Ok(0) => break true,
                Ok(n) => after_connack.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break false,
                Err(e) => panic!("server read: {e}"),
            }
        };
        Seen { after_connack, clean_close }
    });
    (port, ca_pem, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_sends_mqtt_disconnect_and_tls_close_notify() {
    let (port, ca_pem, server) = one_connection_server().await;
    let cs = "HostName=127.0.0.1;DeviceId=closer;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";
    let opts = ClientOptions {
        server_verification_cert: Some(ca_pem),
        mqtt_port: port,
        operation_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let client = Client::create_from_connection_string(cs, opts).unwrap();
    client.connect().await.expect("connect to the test server");
    client.disconnect().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), server).await.expect("server done").unwrap();
    assert!(seen.after_connack.ends_with(&DISCONNECT), "last packet: {:02x?}", seen.after_connack);
    assert!(seen.clean_close, "the connection ended without a TLS close_notify");
    client.shutdown().await.unwrap();
}
