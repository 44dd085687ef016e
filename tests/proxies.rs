//! `proxy_options` through real proxy servers (tinyproxy for HTTP CONNECT, danted for SOCKS4/5,
//! microsocks for SOCKS5 with a password; `common::real_proxies`), on every network path: the
//! TCP connection under the MQTT link (`transport::proxy::connect_tcp`), MQTT over TCP and over
//! WebSockets, and the HTTPS calls (the Edge `invoke_method`, file upload). Each test proves the
//! traffic went through the proxy by the proxy's own log, and each kind of proxy also refuses
//! once: that is `ConnectionFailed` with the proxy's answer and never the proxy password.
//! The `cipher` option's tests are the `cipher` module of this binary.

#[path = "proxies/cipher.rs"]
mod cipher;
mod common;

use std::time::Duration;

use ironhub::transport::proxy::connect_tcp;
use ironhub::{Client, ClientOptions, ErrorKind, Message, ProxyOptions, ProxyType};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::real_proxies::RealProxy;

const PASSWORD: &str = "pr0xy-s3cret";

/// An echo server on loopback: what a tunnel carries comes back.
async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

async fn assert_echoes(host: &str, port: u16, proxy: &ProxyOptions) {
    let mut s = connect_tcp(host, port, Some(proxy)).await.unwrap_or_else(|e| panic!("tunnel through {proxy:?}: {e}"));
    s.write_all(b"through the tunnel").await.unwrap();
    let mut buf = [0u8; 18];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"through the tunnel");
}

/// The error of a refused tunnel: ConnectionFailed, with `answer` in it and no password.
fn assert_refused(e: ironhub::Error, answer: &str) {
    assert_eq!(e.kind(), ErrorKind::ConnectionFailed, "{e}");
    let text = e.to_string();
    assert!(text.contains(answer), "the proxy's answer {answer:?} is not in {text:?}");
    assert!(!text.contains(PASSWORD), "the proxy password leaked: {text}");
}

// ---- connect_tcp: the TCP connection under every MQTT link ----

#[tokio::test]
async fn connect_tcp_through_tinyproxy_with_and_without_basic_auth() {
    let echo = echo_server().await;
    let open = RealProxy::tinyproxy(None, None);
    assert_echoes("localhost", echo, &open.options(None, None)).await;
    open.assert_tunnelled_to(echo);

    let guarded = RealProxy::tinyproxy(Some(("alice", PASSWORD)), None);
    assert_echoes("localhost", echo, &guarded.options(Some("alice"), Some(PASSWORD))).await;
    guarded.assert_tunnelled_to(echo);
    // tinyproxy answers wrong credentials with 401 and missing ones with 407.
    let e = connect_tcp("localhost", echo, Some(&guarded.options(Some("alice"), Some("wrong")))).await.unwrap_err();
    assert_refused(e, "HTTP 401");
    let e = connect_tcp("localhost", echo, Some(&guarded.options(None, None))).await.unwrap_err();
    assert_refused(e, "HTTP 407");
}

#[tokio::test]
async fn connect_tcp_refused_by_tinyproxy_names_its_answer() {
    let echo = echo_server().await;
    let only_another_port = RealProxy::tinyproxy(Some(("alice", PASSWORD)), Some(echo.wrapping_add(1).max(1)));
    let e = connect_tcp("localhost", echo, Some(&only_another_port.options(Some("alice"), Some(PASSWORD)))).await.unwrap_err();
    assert_refused(e, "HTTP 403");
}

#[tokio::test]
async fn connect_tcp_through_danted_socks5_and_socks4() {
    let echo = echo_server().await;
    let socks5 = RealProxy::danted(ProxyType::Socks5, None);
    // A name: SOCKS5 sends it for the proxy to resolve.
    assert_echoes("localhost", echo, &socks5.options(None, None)).await;
    socks5.assert_tunnelled_to(echo);

    // danted speaks SOCKS4 but not 4a, so the target is an address (SOCKS4a is unit-tested in
    // transport::proxy against a SOCKS4a server of the test's own).
    let socks4 = RealProxy::danted(ProxyType::Socks4, None);
    assert_echoes("127.0.0.1", echo, &socks4.options(None, None)).await;
    socks4.assert_tunnelled_to(echo);
}

#[tokio::test]
async fn connect_tcp_refused_by_danted_names_its_answer() {
    let echo = echo_server().await;
    let blocking = RealProxy::danted(ProxyType::Socks5, Some(echo));
    let e = connect_tcp("localhost", echo, Some(&blocking.options(None, None))).await.unwrap_err();
    assert_refused(e, "not allowed by ruleset");
    let blocking4 = RealProxy::danted(ProxyType::Socks4, Some(echo));
    let e = connect_tcp("127.0.0.1", echo, Some(&blocking4.options(None, None))).await.unwrap_err();
    assert_refused(e, "SOCKS4 proxy");
}

#[tokio::test]
async fn connect_tcp_through_microsocks_with_a_password() {
    let echo = echo_server().await;
    let proxy = RealProxy::microsocks("bob", PASSWORD);
    assert_echoes("localhost", echo, &proxy.options(Some("bob"), Some(PASSWORD))).await;
    proxy.assert_tunnelled_to(echo);
    let e = connect_tcp("localhost", echo, Some(&proxy.options(Some("bob"), Some("wrong")))).await.unwrap_err();
    assert_refused(e, "auth");
    // Without credentials microsocks offers no method we can use.
    let e = connect_tcp("localhost", echo, Some(&proxy.options(None, None))).await.unwrap_err();
    assert_refused(e, "No acceptable auth methods");
}

// ---- MQTT through the proxy (TCP and WebSockets) ----

fn options_via(env: &common::Env, proxy: ProxyOptions, websockets: bool) -> ClientOptions {
    ClientOptions { proxy_options: Some(proxy), websockets, ..env.options() }
}

/// A device client through `proxy` sends one message that the hub records; the proxy's log shows
/// the tunnel to the port the link uses.
async fn telemetry_through(env: &common::Env, id: &str, proxy: &RealProxy, options: ProxyOptions, websockets: bool) {
    let client = Client::create_from_connection_string(&env.device(id), options_via(env, options, websockets)).unwrap();
    client.send_message(&Message::new(format!("via {id}"))).await.unwrap_or_else(|e| panic!("{id}: {e}"));
    let events = env.wait_events(id, 1).await;
    assert!(events.iter().any(|e| e["deviceId"] == id), "{events:?}");
    proxy.assert_tunnelled_to(if websockets { env.emu.https_port() } else { env.emu.mqtt_port() });
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_through_tinyproxy_over_tcp_and_websockets() {
    let env = common::start().await;
    let proxy = RealProxy::tinyproxy(Some(("alice", PASSWORD)), None);
    telemetry_through(&env, "viaHttpTcp", &proxy, proxy.options(Some("alice"), Some(PASSWORD)), false).await;
    telemetry_through(&env, "viaHttpWs", &proxy, proxy.options(Some("alice"), Some(PASSWORD)), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_connect_through_a_refusing_proxy_is_connection_failed() {
    let env = common::start().await;
    let proxy = RealProxy::tinyproxy(Some(("alice", PASSWORD)), None);
    let opts = ClientOptions { connection_retry: false, ..options_via(&env, proxy.options(Some("alice"), Some("wrong")), false) };
    let client = Client::create_from_connection_string(&env.device("refusedHttp"), opts).unwrap();
    let e = client.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionFailed, "{e}");
    assert!(!e.to_string().contains(PASSWORD), "{e}");
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_through_socks_proxies_over_tcp_and_websockets() {
    let env = common::start().await;
    let danted5 = RealProxy::danted(ProxyType::Socks5, None);
    telemetry_through(&env, "viaSocks5Tcp", &danted5, danted5.options(None, None), false).await;
    telemetry_through(&env, "viaSocks5Ws", &danted5, danted5.options(None, None), true).await;
    let micro = RealProxy::microsocks("bob", PASSWORD);
    telemetry_through(&env, "viaSocks5Auth", &micro, micro.options(Some("bob"), Some(PASSWORD)), false).await;
    // danted has no SOCKS4a: connect to the address (the emulator's certificate names 127.0.0.1).
    let danted4 = RealProxy::danted(ProxyType::Socks4, None);
    let cs = format!("{};GatewayHostName=127.0.0.1", env.device("viaSocks4"));
    let client = Client::create_from_connection_string(&cs, options_via(&env, danted4.options(None, None), false)).unwrap();
    client.send_message(&Message::new("via socks4")).await.unwrap();
    danted4.assert_tunnelled_to(env.emu.mqtt_port());
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_connect_through_a_refusing_socks_proxy_is_connection_failed() {
    let env = common::start().await;
    let micro = RealProxy::microsocks("bob", PASSWORD);
    let opts = ClientOptions { connection_retry: false, ..options_via(&env, micro.options(Some("bob"), Some("wrong")), false) };
    let client = Client::create_from_connection_string(&env.device("refusedSocks"), opts).unwrap();
    let e = client.connect().await.unwrap_err();
    assert_refused(e, "auth");
    client.shutdown().await.unwrap();
}

// ---- HTTPS through the proxy: the Edge invoke_method, file upload ----

/// A module of an Edge device calling through its gateway (`GatewayHostName`), via `proxy`; no
/// MQTT connection (auto_connect off), so the only traffic is the HTTPS call.
fn edge_caller(env: &common::Env, proxy: ProxyOptions) -> Client {
    let opts = ClientOptions { auto_connect: false, proxy_options: Some(proxy), ..env.options() };
    let cs = format!("{};GatewayHostName=localhost", env.edge_module("edgeDev", "caller"));
    Client::create_from_connection_string(&cs, opts).unwrap()
}

/// A device that answers every method with 200 and the request's payload (direct connection).
async fn echo_device(env: &common::Env, id: &str) -> Client {
    let device = env.device_client(id);
    let responder = device.clone();
    device
        .on_method_request_received(Some(std::sync::Arc::new(move |request| {
            let c = responder.clone();
            std::thread::spawn(move || {
                let echo = Some(request.payload.clone());
                let r = ironhub::MethodResponse::create_from_method_request(&request, 200, echo);
                ironhub::blocking::Client::from_async(c).send_method_response(&r).expect("method response");
            });
        })))
        .await
        .unwrap();
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_method_goes_through_http_and_socks_proxies() {
    let env = common::start().await;
    let target = echo_device(&env, "methodTarget").await;
    let params = json!({"methodName": "echo", "payload": {"n": 1}, "responseTimeoutInSeconds": 10});
    let tiny = RealProxy::tinyproxy(Some(("alice", PASSWORD)), None);
    let danted = RealProxy::danted(ProxyType::Socks5, None);
    let micro = RealProxy::microsocks("bob", PASSWORD);
    let danted4 = RealProxy::danted(ProxyType::Socks4, None);
    for (proxy, options) in [
        (&tiny, tiny.options(Some("alice"), Some(PASSWORD))),
        (&danted, danted.options(None, None)),
        (&micro, micro.options(Some("bob"), Some(PASSWORD))),
    ] {
        let caller = edge_caller(&env, options);
        let answer = caller.invoke_method(&params, "methodTarget", None).await.unwrap_or_else(|e| panic!("{proxy:?}: {e}"));
        assert_eq!(answer, json!({"status": 200, "payload": {"n": 1}}));
        proxy.assert_tunnelled_to(env.emu.https_port());
        caller.shutdown().await.unwrap();
    }
    // A host name goes to SOCKS4 proxies as 4a (the proxy resolves it), which danted refuses: the refusal is reported.
    let caller = edge_caller(&env, danted4.options(None, None));
    let e = caller.invoke_method(&params, "methodTarget", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionFailed, "{e}");
    caller.shutdown().await.unwrap();
    target.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_method_through_a_refusing_proxy_is_connection_failed() {
    let env = common::start().await;
    let params = json!({"methodName": "echo", "responseTimeoutInSeconds": 5});
    let tiny = RealProxy::tinyproxy(Some(("alice", PASSWORD)), None);
    let micro = RealProxy::microsocks("bob", PASSWORD);
    // The proxy's own answer, as the MQTT link reports it (transport::proxy): tinyproxy's status
    // line, tokio-socks' name for the SOCKS5 failure.
    for (options, answer) in [(tiny.options(Some("alice"), Some("wrong")), "HTTP 401"), (micro.options(Some("bob"), Some("wrong")), "auth")] {
        let caller = edge_caller(&env, options);
        let e = caller.invoke_method(&params, "anyone", None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionFailed, "{e}");
        assert!(!e.to_string().contains(PASSWORD) && !e.to_string().contains("wrong"), "{e}");
        assert!(e.to_string().contains(answer), "{e}");
        caller.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_upload_goes_through_the_proxy() {
    let env = common::start().await;
    let proxy = RealProxy::tinyproxy(None, None);
    let opts = ClientOptions { auto_connect: false, ..options_via(&env, proxy.options(None, None), false) };
    let client = Client::create_from_connection_string(&env.device("uploader"), opts).unwrap();
    let info = client
        .upload_blob_from_bytes("via-proxy.txt", &b"uploaded through tinyproxy"[..], Default::default())
        .await
        .expect("upload through the proxy");
    assert!(!info.correlation_id.is_empty());
    proxy.assert_tunnelled_to(env.emu.https_port());
    client.shutdown().await.unwrap();
}
