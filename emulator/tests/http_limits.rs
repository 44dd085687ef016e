//! The HTTPS listener's bounds on its peers (issue 12's hardening): a peer that never sends a
//! request head is cut off, one that withholds its body gets a 400, and at the connection cap the
//! listener stops accepting until a connection ends. Limits are shrunk through `EmulatorConfig`
//! so each bound shows within a second or two; the defaults are the same code with larger numbers.

mod support;

use std::time::{Duration, Instant};

use ironhub_emulator::http::HttpLimits;
use ironhub_emulator::{EmulatorConfig, RunningEmulator};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn tls_config(ca_pem: &str) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// A TLS connection to the HTTPS port; `None` when the handshake does not finish within `within`.
async fn connect(emu: &RunningEmulator, within: Duration) -> Option<TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(tls_config(emu.ca_pem()));
    let tcp = TcpStream::connect(("127.0.0.1", emu.https_port())).await.expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(within, connector.connect(name, tcp)).await.ok().map(|r| r.expect("tls handshake"))
}

/// Everything the server writes until it closes the connection (bounded by `within`).
async fn read_until_closed(tls: &mut TlsStream<TcpStream>, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&out).into_owned())
}

async fn start(limits: HttpLimits) -> RunningEmulator {
    support::start_with(EmulatorConfig { http_limits: limits, ..Default::default() }).await
}

#[tokio::test]
async fn a_peer_that_sends_no_request_head_is_cut_off() {
    let limits = HttpLimits { header_read_timeout: Duration::from_millis(500), ..Default::default() };
    let emu = start(limits).await;
    let mut silent = connect(&emu, Duration::from_secs(5)).await.expect("handshake");
    let started = Instant::now();
    let closed = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "the server kept a silent connection open for 10 s");
    assert!(started.elapsed() < Duration::from_secs(5), "cut off after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_peer_that_withholds_its_body_gets_a_400() {
    let limits = HttpLimits { body_read_timeout: Duration::from_millis(500), ..Default::default() };
    let emu = start(limits).await;
    let mut tls = connect(&emu, Duration::from_secs(5)).await.expect("handshake");
    let head = "PUT /devices/slow?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\nConnection: close\r\n\r\n{\"deviceId\":";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let answer = read_until_closed(&mut tls, Duration::from_secs(10)).await.expect("an answer within 10 s");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive"), "{answer}");
    assert!(emu.hub().get_device("slow").is_err(), "nothing was created from a partial body");
}

#[tokio::test]
async fn at_the_connection_cap_the_listener_waits_for_a_free_slot() {
    let limits = HttpLimits { max_connections: 2, ..Default::default() };
    let emu = start(limits).await;
    let first = connect(&emu, Duration::from_secs(5)).await.expect("first connection");
    let _second = connect(&emu, Duration::from_secs(5)).await.expect("second connection");
    // The third gets past TCP (the kernel's backlog) but no TLS handshake while both slots are held.
    let connector = tokio_rustls::TlsConnector::from(tls_config(emu.ca_pem()));
    let tcp = TcpStream::connect(("127.0.0.1", emu.https_port())).await.expect("tcp connect");
    let mut third = Box::pin(connector.connect(ServerName::try_from("localhost").unwrap(), tcp));
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut third).await.is_err(),
        "a third connection was served past the cap of 2"
    );
    // Ending one connection frees its slot: the waiting handshake completes.
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(5), third).await.expect("served once a slot was free");
    assert!(third.is_ok(), "handshake after a slot freed");
}
