//! Telemetry: properties on the wire, outputs, pipelined and callback sends, the size limit.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use futures::FutureExt;
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

/// Back-pressure instead of failure (issue 9): a burst far larger than the in-flight window waits
/// for slots (bounded by `operation_timeout`) instead of failing, goes out in call order, and the
/// hub records each message exactly once. The queue bounds stay: one more is `QueueFull` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_20000_sends_all_succeed_and_each_arrives_once() {
    const N: usize = 20_000;
    let env = common::start().await;
    let opts = ironhub::ClientOptions { max_queued_messages: N, max_queued_bytes: 64 * 1024 * 1024, ..env.options() };
    let client = ironhub::Client::create_from_connection_string(&env.device("burst"), opts).unwrap();
    client.connect().await.unwrap();
    let futs: Vec<_> = (0..N).map(|i| client.send_message_pipelined(&Message::new(i.to_string()))).collect();
    // Every slot of the queue is taken now (some may already be acknowledged, so send until refused).
    let mut refused = None;
    for _ in 0..N {
        if let Err(e) = client.send_message_pipelined(&Message::new("extra")).now_or_never().unwrap_or(Ok(())) {
            refused = Some(e);
            break;
        }
    }
    let results = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(futs)).await.expect("burst ends");
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of {N} sends failed, first: {:?}", failed.len(), failed.first());
    let refused = refused.expect("a send beyond max_queued_messages is refused");
    assert!(matches!(refused, ironhub::Error::QueueFull(_)), "{refused}");
    let filter = ironhub_emulator::hub::EventFilter { device_id: Some("burst".into()), module_id: None };
    let mut seen = std::collections::HashMap::<usize, usize>::new();
    for e in env.emu.hub().events_after(&filter, 0) {
        if let Some(i) = std::str::from_utf8(&e.record.body).ok().and_then(|s| s.parse().ok()) {
            *seen.entry(i).or_default() += 1;
        }
    }
    let missing = (0..N).filter(|i| !seen.contains_key(i)).count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    assert_eq!((missing, duplicated), (0, 0), "every message recorded exactly once");
    client.shutdown().await.unwrap();
}

/// A lone publish is written by its caller's thread; under load the loop batches writes and
/// finishes the ones a full socket cut short. Both share one connection: a burst of large
/// messages (filling the socket) raced by sync sends from another task reaches the hub with each
/// sequence in call order and every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_sends_racing_a_large_burst_keep_call_order_and_arrive_once() {
    const BURST: usize = 100;
    const SYNC: usize = 300;
    let env = common::start().await;
    let opts = ironhub::ClientOptions { max_queued_messages: 1_000, max_queued_bytes: 64 * 1024 * 1024, ..env.options() };
    let client = ironhub::Client::create_from_connection_string(&env.device("race"), opts).unwrap();
    client.connect().await.unwrap();
    let big = "x".repeat(60 * 1024);
    let burst = {
        let c = client.clone();
        tokio::spawn(async move {
            let futs: Vec<_> = (0..BURST).map(|i| c.send_message_pipelined(&Message::new(format!("b{i} {big}")))).collect();
            futures::future::join_all(futs).await
        })
    };
    let syncs = {
        let c = client.clone();
        tokio::spawn(async move {
            for i in 0..SYNC {
                c.send_message(&Message::new(format!("s{i}"))).await.unwrap();
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(120), syncs).await.expect("sync sends end").unwrap();
    let results = tokio::time::timeout(Duration::from_secs(120), burst).await.expect("burst ends").unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "every burst send succeeded");
    let filter = ironhub_emulator::hub::EventFilter { device_id: Some("race".into()), module_id: None };
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for e in env.emu.hub().events_after(&filter, 0) {
        let body = String::from_utf8_lossy(&e.record.body);
        let tag = body.split(' ').next().unwrap_or_default().to_string();
        let n: usize = tag[1..].parse().unwrap();
        if tag.starts_with('b') { b.push(n) } else { s.push(n) }
    }
    assert_eq!(b, (0..BURST).collect::<Vec<_>>(), "the burst in call order, each once");
    assert_eq!(s, (0..SYNC).collect::<Vec<_>>(), "the sync sends in call order, each once");
    client.shutdown().await.unwrap();
}
