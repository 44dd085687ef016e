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

/// Blocking sync senders read their own PUBACKs (`transport/reader.rs`; spinning, in ppoll, parked
/// or adaptive) while the network loop reads everything else from the same connection. Many of
/// them on one client race a pipelined
/// burst, C2D messages, desired-property patches and method calls: every message arrives once and
/// in each sender's order, each sync send returns only once the hub holds its message (the hub
/// acknowledges after recording, so no sender was completed by another's PUBACK), and every C2D
/// message, patch and method call reaches its handler once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_sync_senders_racing_a_burst_and_hub_traffic_each_complete_their_own() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use ironhub::blocking::SyncWait;
    const WAYS: [SyncWait; 4] = [SyncWait::Spin, SyncWait::Poll, SyncWait::Park, SyncWait::Adaptive];
    const THREADS: usize = 8;
    const EACH: usize = 150;
    const BURST: usize = 2_000;
    const C2D: usize = 30;
    const PATCHES: usize = 30;
    const METHODS: usize = 20;
    let env = common::start().await;
    let device = "sync-readers";
    let opts = ironhub::ClientOptions { max_queued_messages: 5_000, ..env.options() };
    let client = ironhub::Client::create_from_connection_string(&env.device(device), opts).unwrap();
    let c2d = common::Collector::<String>::new();
    let patches = common::Collector::<u64>::new();
    let methods = common::Collector::<String>::new();
    let c = c2d.clone();
    client
        .on_message_received(Some(Arc::new(move |m: Message| c.push(String::from_utf8_lossy(&m.data).into_owned()))))
        .await
        .unwrap();
    let p = patches.clone();
    client
        .on_twin_desired_properties_patch_received(Some(Arc::new(move |v: serde_json::Value| {
            p.push(v["n"].as_u64().unwrap_or(u64::MAX))
        })))
        .await
        .unwrap();
    let (m, responder) = (methods.clone(), ironhub::blocking::Client::from_async(client.clone()));
    client
        .on_method_request_received(Some(Arc::new(move |r: ironhub::MethodRequest| {
            m.push(r.name.clone());
            let resp = ironhub::MethodResponse::new(r.request_id, 200, Some(serde_json::json!({"echo": r.name})));
            responder.send_method_response(&resp).expect("method response");
        })))
        .await
        .unwrap();
    client.connect().await.unwrap();

    let failed = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let (bc, hub, failed) = (ironhub::blocking::Client::from_async(client.clone()), env.emu.hub().clone(), failed.clone());
            std::thread::spawn(move || {
                // Every way of waiting at once, each thread its own.
                ironhub::blocking::set_sync_wait(WAYS[t % WAYS.len()]);
                let filter = ironhub_emulator::hub::EventFilter { device_id: Some(device.into()), module_id: None };
                for i in 0..EACH {
                    let body = format!("t{t} {i}");
                    if let Err(e) = bc.send_message(&Message::new(body.clone())) {
                        failed.store(true, Ordering::SeqCst);
                        panic!("{body}: {e}");
                    }
                    let held = hub.events_after(&filter, 0).iter().any(|e| e.record.body.as_ref() == body.as_bytes());
                    assert!(held, "{body}: the send returned before the hub had the message");
                }
            })
        })
        .collect();
    let burst = {
        let c = client.clone();
        tokio::spawn(async move {
            let futs: Vec<_> = (0..BURST).map(|i| c.send_message_pipelined(&Message::new(format!("b {i}")))).collect();
            futures::future::join_all(futs).await
        })
    };
    let svc = ironhub::service::ServiceClient::from_connection_string(
        env.emu.service_connection_string(),
        ironhub::service::ServiceOptions { ca_pem: Some(env.emu.ca_pem().to_string()), timeout: Duration::from_secs(30) },
    )
    .unwrap();
    for i in 0..C2D.max(PATCHES).max(METHODS) {
        if i < C2D {
            env.c2d(device, serde_json::json!({"bodyText": format!("c{i}")})).await;
        }
        if i < PATCHES {
            env.service.update_twin(device, None, &serde_json::json!({"properties": {"desired": {"n": i}}}), None).await.unwrap();
        }
        if i < METHODS {
            let req = ironhub::service::DirectMethodRequest {
                method_name: format!("m{i}"),
                payload: serde_json::json!({}),
                response_timeout_in_seconds: 30,
                connect_timeout_in_seconds: 0,
            };
            let r = svc.invoke_method(device, None, &req).await.expect("method call");
            assert_eq!(r.status, 200, "m{i}");
        }
    }
    let results = tokio::time::timeout(Duration::from_secs(120), burst).await.expect("burst ends").unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "every burst send succeeded");
    let joined = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || senders.into_iter().map(|s| s.join().is_ok()).collect::<Vec<_>>()),
    )
    .await
    .expect("sync senders end")
    .unwrap();
    assert!(joined.iter().all(|ok| *ok) && !failed.load(Ordering::SeqCst), "every sync sender finished cleanly");

    let filter = ironhub_emulator::hub::EventFilter { device_id: Some(device.into()), module_id: None };
    let mut per_thread = vec![Vec::new(); THREADS];
    let mut burst_seen = Vec::new();
    for e in env.emu.hub().events_after(&filter, 0) {
        let body = String::from_utf8_lossy(&e.record.body).into_owned();
        let (tag, n) = body.split_once(' ').unwrap();
        let n: usize = n.parse().unwrap();
        match tag {
            "b" => burst_seen.push(n),
            t => per_thread[t[1..].parse::<usize>().unwrap()].push(n),
        }
    }
    for (t, seen) in per_thread.iter().enumerate() {
        assert_eq!(*seen, (0..EACH).collect::<Vec<_>>(), "thread {t}: in call order, each once");
    }
    assert_eq!(burst_seen, (0..BURST).collect::<Vec<_>>(), "the burst in call order, each once");
    let got = c2d.wait_for(C2D, 30).await;
    let mut want: Vec<String> = (0..C2D).map(|i| format!("c{i}")).collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    want.sort();
    assert_eq!(got_sorted, want, "every C2D message once");
    let seen = patches.wait_for(PATCHES, 30).await;
    assert_eq!(seen, (0..PATCHES as u64).collect::<Vec<_>>(), "every patch once, in order");
    assert_eq!(methods.items().len(), METHODS, "every method call reached its handler once");
    client.shutdown().await.unwrap();
}
