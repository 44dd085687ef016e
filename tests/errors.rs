//! Bad input and misuse: connection strings, keys, options, credentials, use after shutdown.

mod common;

use std::time::Duration;

use ironhub::{Client, ClientOptions, ErrorKind, Message, ProxyOptions, ProxyType};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn cs_err(cs: &str) -> ironhub::Error {
    Client::create_from_connection_string(cs, ClientOptions::default()).expect_err(cs)
}

#[test]
fn malformed_connection_strings_are_invalid_arguments() {
    for cs in [
        "",
        "HostName=h",
        "HostName=h;DeviceId=d",
        "HostName=h;DeviceId=d;SharedAccessKey",
        "HostName=h;DeviceId=d;SharedAccessKey=a;SharedAccessKey=b",
        "HostName=h;DeviceId=d;Bogus=1;SharedAccessKey=a2V5",
        "HostName=h;DeviceId=d;SharedAccessKey=a2V5;x509=true",
        "HostName=h;DeviceId=d;SharedAccessKey=%%%not base64%%%",
    ] {
        let e = cs_err(cs);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{cs}: {e}");
    }
    let e = cs_err("HostName=h;DeviceId=d;SharedAccessKey=%%%not base64%%%");
    assert!(e.to_string().contains("Invalid Symmetric Key"), "{e}");
    assert!(!e.to_string().contains("not base64"), "the key is never echoed: {e}");
    let e = cs_err("HostName=h;DeviceId=d;x509=true");
    assert!(e.to_string().contains("create_from_x509_certificate"), "{e}");
}

#[test]
fn options_are_validated() {
    let cs = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}");
    for (opts, what) in [
        (ClientOptions { keep_alive: 0, ..Default::default() }, "keep_alive 0"),
        (ClientOptions { keep_alive: 1741, ..Default::default() }, "keep_alive 1741"),
        (ClientOptions { connection_retry_interval: 0, ..Default::default() }, "retry interval 0"),
        (ClientOptions { operation_timeout: Duration::ZERO, ..Default::default() }, "operation_timeout 0"),
        (ClientOptions { cipher: "NOT-A-CIPHER".into(), ..Default::default() }, "cipher"),
        (ClientOptions { server_verification_cert: Some("not pem".into()), ..Default::default() }, "cert"),
        (ClientOptions { gateway_hostname: Some("gw".into()), ..Default::default() }, "gateway with cs"),
        (ClientOptions { sastoken_ttl: Some(0), ..Default::default() }, "ttl 0"),
    ] {
        let e = Client::create_from_connection_string(&cs, opts).expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
    }
    for ka in [1, 60, 1740] {
        Client::create_from_connection_string(&cs, ClientOptions { keep_alive: ka, ..Default::default() }).expect("keep_alive in range");
    }
    let ok = ClientOptions {
        cipher: "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384".into(),
        proxy_options: Some(ProxyOptions {
            proxy_type: ProxyType::parse("http").unwrap(),
            proxy_addr: "127.0.0.1".into(),
            proxy_port: 3128,
            proxy_username: None,
            proxy_password: None,
        }),
        ..Default::default()
    };
    Client::create_from_connection_string(&cs, ok).expect("valid cipher list and proxy");
    assert_eq!(ProxyType::parse("socks9").unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[test]
fn factories_check_their_arguments() {
    let e = Client::create_from_symmetric_key("!!", "h", "d", ClientOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = Client::create_from_symmetric_key(KEY, "", "d", ClientOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let c = Client::create_from_symmetric_key(KEY, "h", "d", ClientOptions::default()).unwrap();
    assert!(!c.is_module());
    let e = Client::create_from_sastoken("SharedAccessSignature sr=x", ClientOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let expired = ironhub_protocol::sas::generate_token("h/devices/d", KEY, None, 1000).unwrap();
    let e = Client::create_from_sastoken(&expired, ClientOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let fresh = ironhub_protocol::sas::generate_token("h/devices/d/modules/m", KEY, None, 4_000_000_000).unwrap();
    let e = Client::create_from_sastoken(&fresh, ClientOptions { sastoken_ttl: Some(3600), ..Default::default() }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let c = Client::create_from_sastoken(&fresh, ClientOptions::default()).unwrap();
    assert!(c.is_module());
    let x = ironhub::X509::new("/nonexistent/cert.pem", "/nonexistent/key.pem", None);
    let e = Client::create_from_x509_certificate(x, "h", "d", None, ClientOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_a_credential_error() {
    let env = common::start().await;
    env.device("e1");
    let cs = format!("HostName=localhost;DeviceId=e1;SharedAccessKey={KEY}");
    let client = Client::create_from_connection_string(&cs, env.options()).unwrap();
    let e = client.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Credential, "{e}");
    assert!(!client.connected());
    let e = client.send_message(&Message::new("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Credential, "auto-connect reports the same: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_ca_is_a_connection_failure() {
    let env = common::start().await;
    let cs = env.device("e2");
    // Web PKI roots do not trust the emulator's CA.
    let opts = ClientOptions { server_verification_cert: None, ..env.options() };
    let client = Client::create_from_connection_string(&cs, opts).unwrap();
    let e = client.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionFailed, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_after_shutdown_fails_with_shut_down() {
    let env = common::start().await;
    let client = env.device_client("e3");
    client.connect().await.unwrap();
    client.shutdown().await.unwrap();
    assert!(!client.connected());
    assert_eq!(client.connect().await.unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(client.send_message(&Message::new("x")).await.unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(client.get_twin().await.unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(client.on_message_received(None).await.unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(client.shutdown().await.unwrap_err().kind(), ErrorKind::ShutDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_connect_operations_need_a_connection() {
    let env = common::start().await;
    let cs = env.device("e4");
    let client = Client::create_from_connection_string(&cs, ClientOptions { auto_connect: false, ..env.options() }).unwrap();
    assert_eq!(client.send_message(&Message::new("x")).await.unwrap_err().kind(), ErrorKind::NoConnection);
    assert_eq!(client.get_twin().await.unwrap_err().kind(), ErrorKind::NoConnection);
    client.connect().await.unwrap();
    client.send_message(&Message::new("x")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_cancels_in_flight_twin_requests() {
    let env = common::start().await;
    let client = env.device_client("e5");
    client.connect().await.unwrap();
    // A burst of twin GETs, then disconnect at once: each ends Ok or OperationCancelled, none hangs.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get_twin().await })
        })
        .collect();
    client.disconnect().await.unwrap();
    for c in calls {
        let r = tokio::time::timeout(Duration::from_secs(30), c).await.expect("no hang").unwrap();
        if let Err(e) = r {
            assert!(
                matches!(e.kind(), ErrorKind::OperationCancelled | ErrorKind::Client | ErrorKind::ConnectionDropped),
                "{e}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_cancels_a_pending_connect() {
    // A listener that accepts TCP but never answers TLS: connect waits for its CONNACK.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let cs = format!("HostName=localhost;DeviceId=d;SharedAccessKey={KEY}");
    let client = Client::create_from_connection_string(&cs, ClientOptions { mqtt_port: port, ..Default::default() }).unwrap();
    let pending = {
        let c = client.clone();
        tokio::spawn(async move { c.connect().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(10), client.disconnect()).await.expect("disconnect does not wait for the CONNACK").unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), pending).await.expect("connect returns").unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::OperationCancelled);
    hold.abort();
}
