//! The blocking facade from plain threads (no async runtime in the test), slow handlers that must
//! not stall keep-alives or other clients, connection_retry off, and HTTP proxies.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironhub::blocking::{Client, ServiceClient};
use ironhub::service::ServiceOptions;
use ironhub::{ClientOptions, ErrorKind, Message, ProxyOptions, ProxyType};
use ironhub_emulator::{BackgroundEmulator, EmulatorConfig};
use serde_json::json;

fn background() -> (BackgroundEmulator, ServiceClient, ClientOptions) {
    let emu = BackgroundEmulator::start(EmulatorConfig::default()).expect("emulator");
    let service = ServiceClient::from_connection_string(
        emu.service_connection_string(),
        ServiceOptions { ca_pem: Some(emu.ca_pem().to_string()), ..Default::default() },
    )
    .unwrap();
    let opts = ClientOptions {
        server_verification_cert: Some(emu.ca_pem().to_string()),
        mqtt_port: emu.mqtt_port(),
        https_port: emu.https_port(),
        operation_timeout: Duration::from_secs(20),
        connection_retry_interval: 1,
        ..Default::default()
    };
    (emu, service, opts)
}

fn device(emu: &BackgroundEmulator, id: &str) -> String {
    emu.hub().create_device(id).unwrap();
    emu.hub().device_connection_string(id, None).unwrap()
}

#[test]
fn blocking_client_from_plain_threads() {
    let (emu, service, opts) = background();
    let client = Client::create_from_connection_string(&device(&emu, "b1"), opts).unwrap();
    client.connect().unwrap();
    assert!(client.connected());
    client.send_message(&Message::new("sync")).unwrap();
    client.patch_twin_reported_properties(&json!({"sync": true})).unwrap();
    assert_eq!(client.get_twin().unwrap()["reported"]["sync"], true);
    let fut = client.send_message_pipelined(&Message::new("pipelined"));
    Client::wait_send(fut).unwrap();
    assert!(client.receive_message(Some(Duration::ZERO)).unwrap().is_none());
    let (s, b) = service.request("POST", "/emulator/devices/b1/messages/devicebound", Some(&json!({"bodyText": "to b1"}))).unwrap();
    assert!(s < 300, "{s} {b}");
    let m = client.receive_message(Some(Duration::from_secs(20))).unwrap().expect("c2d");
    assert_eq!(&m.data[..], b"to b1");
    client.shutdown().unwrap();
    assert_eq!(client.send_message(&Message::new("late")).unwrap_err().kind(), ErrorKind::ShutDown);
}

#[test]
fn a_slow_handler_stalls_neither_keep_alive_nor_other_clients() {
    let (emu, service, opts) = background();
    let opts = ClientOptions { keep_alive: 1, ..opts };
    let slow = Client::create_from_connection_string(&device(&emu, "slow"), opts.clone()).unwrap();
    let fast = Client::create_from_connection_string(&device(&emu, "fast"), opts).unwrap();
    let (slow_tx, slow_rx) = mpsc::channel();
    slow.on_message_received(Some(Arc::new(move |_| {
        std::thread::sleep(Duration::from_secs(4));
        let _ = slow_tx.send(());
    })))
    .unwrap();
    let (fast_tx, fast_rx) = mpsc::channel();
    fast.on_message_received(Some(Arc::new(move |m: Message| {
        let _ = fast_tx.send(m);
    })))
    .unwrap();
    service.request("POST", "/emulator/devices/slow/messages/devicebound", Some(&json!({"bodyText": "zzz"}))).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    service.request("POST", "/emulator/devices/fast/messages/devicebound", Some(&json!({"bodyText": "quick"}))).unwrap();
    fast_rx.recv_timeout(Duration::from_secs(3)).expect("the other client's handler ran while the slow one slept");
    assert!(t.elapsed() < Duration::from_secs(3));
    // The slow client keeps its connection (keep-alive 1 s) while its handler sleeps 4 s.
    slow.send_message(&Message::new("during the slow handler")).unwrap();
    slow_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(slow.connected());
}

#[test]
fn without_connection_retry_a_dropped_connection_stays_down_until_the_next_call() {
    let (emu, service, opts) = background();
    let client = Client::create_from_connection_string(&device(&emu, "nr"), ClientOptions { connection_retry: false, ..opts }).unwrap();
    let (tx, rx) = mpsc::channel();
    client.on_connection_state_change(Some(Arc::new(move |c| tx.send(c).unwrap()))).unwrap();
    client.connect().unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().connected);
    service.request("POST", "/emulator/devices/nr/disconnect", Some(&json!({}))).unwrap();
    let down = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(!down.connected);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!client.connected(), "no automatic reconnect");
    client.send_message(&Message::new("auto_connect brings it back")).unwrap();
    assert!(client.connected());
}

/// A minimal HTTP CONNECT proxy on loopback: counts tunnels, then pipes bytes both ways.
fn start_proxy() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tunnels = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = tunnels.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let target = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let upstream = std::net::TcpStream::connect(target.replace("localhost", "127.0.0.1")).unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut c = conn;
                c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap();
                let (mut up_r, mut up_w) = (upstream.try_clone().unwrap(), upstream);
                let mut c_w = c.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_r, &mut c_w);
                });
                let _ = std::io::copy(&mut reader, &mut up_w);
            });
        }
    });
    (port, tunnels)
}

#[test]
fn mqtt_through_an_http_proxy() {
    let (emu, _service, opts) = background();
    let (port, tunnels) = start_proxy();
    let proxy = ProxyOptions {
        proxy_type: ProxyType::Http,
        proxy_addr: "127.0.0.1".into(),
        proxy_port: port,
        proxy_username: None,
        proxy_password: None,
    };
    let client = Client::create_from_connection_string(&device(&emu, "px"), ClientOptions { proxy_options: Some(proxy), ..opts }).unwrap();
    client.send_message(&Message::new("via proxy")).unwrap();
    assert!(tunnels.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the connection went through the proxy");
    let _ = common::Collector::<()>::new();
}
