//! The AMQP listener against a real AMQP 1.0 client over TLS: SASL, `$cbs` put-token with good
//! and bad tokens, links to unknown or unauthorized addresses, and hostile peers (oversized
//! frames, too many links, silence).

mod amqp_support;

use std::time::Duration;

use amqp_support::*;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::{Receiver, Sender};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn cbs_accepts_hub_policy_tokens_and_refuses_bad_ones() {
    let emu = start().await;
    let key = emu.hub().policy_key().to_owned();
    let mut connection = connect(&emu).await;
    let mut session = session(&mut connection).await;
    let mut cbs = Cbs::attach(&mut session).await;
    let good = token(&emu, HOST, "iothubowner", &key, unix_now() + 600);
    assert_eq!(cbs.put_token(HOST, &good).await.0, 200);
    let service = token(&emu, "sb://localhost/localhost", "service", &key, unix_now() + 600);
    assert_eq!(cbs.put_token("sb://localhost/localhost", &service).await.0, 200);

    let other_key = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let bad = [
        token(&emu, HOST, "iothubowner", other_key, unix_now() + 600),
        token(&emu, HOST, "iothubowner", &key, unix_now().saturating_sub(10)),
        token(&emu, HOST, "nobody", &key, unix_now() + 600),
        token(&emu, "otherhub.example", "iothubowner", &key, unix_now() + 600),
        "not a token".to_string(),
    ];
    for t in bad {
        let (status, description) = cbs.put_token(HOST, &t).await;
        assert_eq!(status, 401, "{description}");
        assert!(!description.contains(&key) && !description.contains("sig="), "no secret in: {description}");
    }
    connection.close().await.unwrap();
}

/// Attaches a receiver from `address` and returns the detach error the server answers with.
async fn refused_receive(session: &mut fe2o3_amqp::session::SessionHandle<()>, address: &str) -> String {
    let mut receiver = Receiver::attach(session, format!("r-{}", rand_id()), address).await.expect("attach answered");
    let err = tokio::time::timeout(Duration::from_secs(10), receiver.recv::<fe2o3_amqp_types::messaging::Body<fe2o3_amqp_types::primitives::Value>>())
        .await
        .expect("detached in time")
        .expect_err("the link is refused");
    format!("{err:?}")
}

#[tokio::test]
async fn unknown_and_unauthorized_addresses_are_refused() {
    let emu = start().await;
    let mut connection = connect(&emu).await;
    let mut session = session(&mut connection).await;
    let err = refused_receive(&mut session, "no/such/node").await;
    assert!(err.contains("NotFound"), "{err}");
    let err = refused_receive(&mut session, "localhost/ConsumerGroups/$Default/Partitions/0").await;
    assert!(err.contains("UnauthorizedAccess"), "{err}");
}

#[tokio::test]
async fn sasl_plain_takes_a_policy_key_or_token_and_refuses_others() {
    let emu = start().await;
    let key = emu.hub().policy_key().to_owned();
    let plain = |u: &str, p: &str| SaslProfile::Plain { username: u.into(), password: p.into() };
    assert!(connect_with(&emu, plain("iothubowner@sas.root.localhost", &key)).await.is_ok());
    let tok = token(&emu, HOST, "service", &key, unix_now() + 600);
    assert!(connect_with(&emu, plain("service@sas.root.localhost", &tok)).await.is_ok());
    assert!(connect_with(&emu, plain("iothubowner", "wrong")).await.is_err());
    assert!(connect_with(&emu, plain("nobody", &key)).await.is_err());
}

#[tokio::test]
async fn an_oversized_frame_closes_the_connection() {
    let emu = start().await;
    let mut tls = tls(&emu).await;
    // AMQP header without SASL, then OPEN is expected; a frame claiming 64 MiB instead.
    tls.write_all(b"AMQP\x00\x01\x00\x00").await.unwrap();
    let mut header = [0u8; 8];
    tls.read_exact(&mut header).await.unwrap();
    tls.write_all(&[0x04, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]).await.unwrap();
    tls.write_all(&vec![0u8; 64 * 1024]).await.unwrap_or(());
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed, not left waiting for 64 MiB");
}

#[tokio::test]
async fn links_past_the_session_cap_are_refused() {
    let mut config = ironhub_emulator::EmulatorConfig::default();
    config.amqp_limits.max_links_per_session = 3;
    let emu = ironhub_emulator::Emulator::start(config).await.unwrap();
    let mut connection = connect(&emu).await;
    let mut session = session(&mut connection).await;
    let _cbs = Cbs::attach(&mut session).await;
    let _third = Sender::attach(&mut session, "third", "$cbs").await.unwrap();
    let err = refused_receive(&mut session, "$cbs").await;
    assert!(err.contains("ResourceLimitExceeded"), "{err}");
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let mut config = ironhub_emulator::EmulatorConfig::default();
    config.amqp_limits.handshake_timeout = Duration::from_millis(500);
    let emu = ironhub_emulator::Emulator::start(config).await.unwrap();
    let mut tls = tls(&emu).await;
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a peer that never sends the protocol header is closed");
}

/// The 443 listener hands `/$iothub/websocket` with subprotocol AMQPWSB10 (the service SDKs'
/// AmqpWs) and `/$servicebus/websocket` (the Event Hubs clients) to the AMQP server.
#[tokio::test]
async fn amqp_over_websockets_on_the_https_port() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let emu = start().await;
    for path in ["/$iothub/websocket", "/$servicebus/websocket"] {
        let connector = tokio_rustls::TlsConnector::from(client_config(emu.ca_pem()));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", emu.https_port())).await.unwrap();
        let tls = connector.connect(rustls::pki_types::ServerName::try_from(HOST).unwrap(), tcp).await.unwrap();
        let mut request = format!("wss://{HOST}:{}{path}", emu.https_port()).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "AMQPWSB10".parse().unwrap());
        let (mut ws, response) = tokio_tungstenite::client_async(request, tls).await.expect("upgrade");
        assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "AMQPWSB10");
        ws.send(Message::Binary(b"AMQP\x03\x01\x00\x00".to_vec().into())).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 8 {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer").expect("open").unwrap() {
                Message::Binary(b) => got.extend_from_slice(&b),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(&got[..8], b"AMQP\x03\x01\x00\x00", "the SASL header comes back over {path}");
    }
}
