//! Telemetry: properties on the wire, outputs, pipelined and callback sends, the size limit.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use ironhub::{ErrorKind, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_with_system_and_custom_properties_is_recorded() {
    let env = common::start().await;
    let client = env.device_client("tele1");
    client.connect().await.expect("connect");
    assert!(client.connected());
    let mut m = Message::new(&b"{\"t\": 21.5}"[..]);
    m.message_id = Some("m 1/2".into());
    m.correlation_id = Some("c-1".into());
    m.content_type = Some("application/json".into());
    m.content_encoding = Some("utf-8".into());
    m.set_property("a", "1&2=3");
    m.set_property("b", "x y/ü");
    client.send_message(&m).await.expect("send");
    let ev = env.wait_events("tele1", 1).await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    let e = &ev[0];
    let body = base64::engine::general_purpose::STANDARD.decode(e["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, b"{\"t\": 21.5}");
    assert_eq!(e["systemProperties"]["messageId"], "m 1/2");
    assert_eq!(e["systemProperties"]["correlationId"], "c-1");
    assert_eq!(e["systemProperties"]["contentType"], "application/json");
    assert_eq!(e["systemProperties"]["contentEncoding"], "utf-8");
    assert_eq!(e["properties"]["a"], "1&2=3");
    assert_eq!(e["properties"]["b"], "x y/ü");
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_auto_connects_and_module_output_carries_its_name() {
    let env = common::start().await;
    let client = env.module_client("tele2", "modA");
    assert!(!client.connected());
    client.send_message_to_output(&Message::new("hello"), "out 1").await.expect("send to output");
    assert!(client.connected(), "auto_connect connected the client");
    let ev = env.wait_events("tele2", 1).await;
    assert_eq!(ev[0]["moduleId"], "modA");
    assert_eq!(ev[0]["outputName"], "out 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_refused_before_anything_is_sent() {
    let env = common::start().await;
    let client = env.device_client("tele3");
    let big = Message::new(vec![b'x'; 262_145]);
    let err = client.send_message(&big).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
    assert!(!client.connected(), "nothing was sent, not even a CONNECT");
    let exact = Message::new(vec![b'x'; 262_144]);
    client.send_message(&exact).await.expect("exactly 256 KB is allowed");
    let ev = env.wait_events("tele3", 1).await;
    assert_eq!(ev.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_complete_in_order_and_all_arrive() {
    let env = common::start().await;
    let client = env.device_client("tele4");
    client.connect().await.unwrap();
    let futs: Vec<_> = (0..200)
        .map(|i| {
            let mut m = Message::new(format!("{i}"));
            m.message_id = Some(format!("{i}"));
            client.send_message_pipelined(&m)
        })
        .collect();
    for f in futs {
        f.await.expect("pipelined send");
    }
    let ev = env.wait_events("tele4", 200).await;
    let ids: Vec<String> = ev.iter().map(|e| e["systemProperties"]["messageId"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, (0..200).map(|i| i.to_string()).collect::<Vec<_>>(), "wire order is call order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_sends_complete_exactly_once_also_when_dropped() {
    let env = common::start().await;
    let client = env.device_client("tele5");
    client.connect().await.unwrap();
    let (tx, rx) = mpsc::channel();
    for _ in 0..20 {
        let tx = tx.clone();
        client.send_message_with_callback(&Message::new("x"), None, Box::new(move |r| tx.send(r.map_err(|e| e.kind())).unwrap()));
    }
    for _ in 0..20 {
        rx.recv_timeout(Duration::from_secs(20)).unwrap().expect("acknowledged");
    }
    // Now drop the client with sends queued: every callback still runs once, with OperationCancelled or Ok.
    for _ in 0..20 {
        let tx = tx.clone();
        client.send_message_with_callback(&Message::new("y"), None, Box::new(move |r| tx.send(r.map_err(|e| e.kind())).unwrap()));
    }
    drop(client);
    drop(tx);
    let mut n = 0;
    while let Ok(r) = rx.recv_timeout(Duration::from_secs(20)) {
        assert!(matches!(r, Ok(()) | Err(ErrorKind::OperationCancelled)), "{r:?}");
        n += 1;
    }
    assert_eq!(n, 20, "each callback ran exactly once");
}
