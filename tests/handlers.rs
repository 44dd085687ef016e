//! Handlers: C2D, module inputs and routes, direct methods (answered later from another thread),
//! desired patches, connection state, clearing, a panicking handler, and the deprecated inboxes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Collector;
use ironhub::service::DirectMethodRequest;
use ironhub::{ConnectionReason, ConnectionStateChange, ErrorKind, Message, MethodRequest, MethodResponse};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2d_messages_reach_the_message_handler_with_properties() {
    let env = common::start().await;
    let client = env.device_client("h1");
    let got = Collector::<Message>::new();
    let g = got.clone();
    client.on_message_received(Some(Arc::new(move |m| g.push(m)))).await.expect("set handler");
    assert!(client.connected(), "setting a receive handler auto-connects");
    env.c2d("h1", json!({"bodyText": "hi there", "messageId": "c2d-1", "properties": {"k": "v w&x"}})).await;
    let items = got.wait_for(1, 20).await;
    assert_eq!(items.len(), 1);
    assert_eq!(&items[0].data[..], b"hi there");
    assert_eq!(items[0].message_id.as_deref(), Some("c2d-1"));
    assert_eq!(items[0].property("k"), Some("v w&x"));
    assert!(items[0].input_name.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_inputs_and_a_module_to_module_route() {
    let env = common::start().await;
    let sender = env.module_client("h2", "producer");
    let receiver = env.module_client("h2", "consumer");
    let got = Collector::<Message>::new();
    let g = got.clone();
    receiver.on_message_received(Some(Arc::new(move |m| g.push(m)))).await.unwrap();
    env.input("h2", "consumer", "direct", json!({"bodyText": "injected"})).await;
    let items = got.wait_for(1, 20).await;
    assert_eq!(items[0].input_name.as_deref(), Some("direct"));
    assert_eq!(&items[0].data[..], b"injected");

    let (s, b) = env
        .service
        .request(
            "PUT",
            "/emulator/routes",
            Some(&json!({"routes": {"r1": "FROM /messages/modules/producer/outputs/temps INTO BrokeredEndpoint(\"/modules/consumer/inputs/fromProducer\")"}})),
        )
        .await
        .unwrap();
    assert!(s < 300, "{s} {b}");
    let mut m = Message::new("21.5");
    m.set_property("unit", "°C");
    sender.send_message_to_output(&m, "temps").await.unwrap();
    let items = got.wait_for(2, 20).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[1].input_name.as_deref(), Some("fromProducer"));
    assert_eq!(items[1].property("unit"), Some("°C"));
    assert_eq!(items[1].property("$.cdid"), Some("h2"));
    assert_eq!(items[1].property("$.cmid"), Some("producer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_requests_can_be_answered_later_from_another_thread() {
    let env = common::start().await;
    let client = env.device_client("h3");
    let got = Collector::<MethodRequest>::new();
    let g = got.clone();
    client.on_method_request_received(Some(Arc::new(move |r| g.push(r)))).await.unwrap();
    let responder = client.clone();
    let answer = tokio::spawn(async move {
        let reqs = got.wait_for(1, 20).await;
        let r = reqs[0].clone();
        assert_eq!(r.name, "reboot");
        assert_eq!(r.payload, json!({"delay": 5}));
        // Answer from a plain thread through the blocking facade, after the handler returned.
        std::thread::spawn(move || {
            let b = ironhub::blocking::Client::from_async(responder);
            b.send_method_response(&MethodResponse::create_from_method_request(&r, 201, Some(json!({"ok": true}))))
        })
        .join()
        .unwrap()
    });
    let result = env
        .service
        .invoke_method("h3", None, &DirectMethodRequest::new("reboot", json!({"delay": 5})))
        .await
        .expect("invoke");
    assert_eq!(result.status, 201);
    assert_eq!(result.payload, json!({"ok": true}));
    answer.await.unwrap().expect("method response sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_patches_reach_the_handler_and_ensure_desired_properties_syncs() {
    let env = common::start().await;
    let cs = env.device("h4");
    env.service.update_twin("h4", None, &json!({"properties": {"desired": {"mode": "eco"}}}), None).await.unwrap();
    let client = ironhub::Client::create_from_connection_string(&cs, env.options()).unwrap();
    let got = Collector::<Value>::new();
    let g = got.clone();
    client.on_twin_desired_properties_patch_received(Some(Arc::new(move |p| g.push(p)))).await.unwrap();
    // ensure_desired_properties: the whole desired document after connecting.
    let items = got.wait_for(1, 20).await;
    assert_eq!(items[0]["mode"], "eco", "{items:?}");
    env.service.update_twin("h4", None, &json!({"properties": {"desired": {"level": 3}}}), None).await.unwrap();
    let items = got.wait_for(2, 20).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[1]["level"], 3);
    assert!(items[1]["$version"].as_u64().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleared_handler_never_runs_again_and_a_panicking_one_does_not_stop_the_client() {
    let env = common::start().await;
    let client = env.device_client("h5");
    let got = Collector::<String>::new();
    let g = got.clone();
    client
        .on_message_received(Some(Arc::new(move |m: Message| {
            let text = String::from_utf8_lossy(&m.data).to_string();
            g.push(text.clone());
            if text == "boom" {
                panic!("handler failure on purpose");
            }
        })))
        .await
        .unwrap();
    env.c2d("h5", json!({"bodyText": "boom"})).await;
    env.c2d("h5", json!({"bodyText": "after"})).await;
    let items = got.wait_for(2, 20).await;
    assert_eq!(items, vec!["boom".to_string(), "after".to_string()]);
    // The client goes on: telemetry still works.
    client.send_message(&Message::new("still alive")).await.unwrap();

    client.on_message_received(None).await.unwrap();
    env.c2d("h5", json!({"bodyText": "late"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(got.items().len(), 2, "cleared handler ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_state_changes_carry_reasons() {
    let env = common::start().await;
    let client = env.device_client("h6");
    let got = Collector::<ConnectionStateChange>::new();
    let g = got.clone();
    client.on_connection_state_change(Some(Arc::new(move |c| g.push(c)))).unwrap();
    client.connect().await.unwrap();
    client.disconnect().await.unwrap();
    assert!(!client.connected());
    let items = got.wait_for(2, 10).await;
    assert_eq!(items[0], ConnectionStateChange { connected: true, reason: ConnectionReason::Ok });
    assert_eq!(items[1], ConnectionStateChange { connected: false, reason: ConnectionReason::ClientClose });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_inboxes_work_and_refuse_mixing_with_handlers() {
    let env = common::start().await;
    let client = env.device_client("h7");
    assert!(client.receive_message(Some(Duration::ZERO)).await.unwrap().is_none(), "non-blocking receive");
    env.c2d("h7", json!({"bodyText": "queued"})).await;
    let m = client.receive_message(Some(Duration::from_secs(20))).await.unwrap().expect("a message");
    assert_eq!(&m.data[..], b"queued");
    let err = client.on_message_received(Some(Arc::new(|_| {}))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Client);

    client.on_method_request_received(Some(Arc::new(|_| {}))).await.unwrap();
    let err = client.receive_method_request(None, Some(Duration::ZERO)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Client);
    client.on_method_request_received(None).await.unwrap();
    let waiter = {
        let c = client.clone();
        tokio::spawn(async move { c.receive_method_request(Some("ping"), Some(Duration::from_secs(20))).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ping = DirectMethodRequest::new("ping", json!(null));
    ping.response_timeout_in_seconds = 5;
    let invoke = env.service.invoke_method("h7", None, &ping);
    let (invoked, received) = tokio::join!(invoke, async {
        let r = waiter.await.unwrap().unwrap().expect("method request in the inbox");
        client.send_method_response(&MethodResponse::new(r.request_id.clone(), 200, None)).await.unwrap();
        r
    });
    assert_eq!(received.name, "ping");
    assert_eq!(invoked.unwrap().status, 200);

    let patch_waiter = {
        let c = client.clone();
        tokio::spawn(async move { c.receive_twin_desired_properties_patch(Some(Duration::from_secs(20))).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.service.update_twin("h7", None, &json!({"properties": {"desired": {"x": 1}}}), None).await.unwrap();
    let p = patch_waiter.await.unwrap().unwrap().expect("a patch");
    assert_eq!(p["x"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_desired_properties_delivers_changes_missed_while_offline_only() {
    let env = common::start().await;
    let client = env.device_client("h8");
    let got = Collector::<Value>::new();
    let g = got.clone();
    client.on_twin_desired_properties_patch_received(Some(Arc::new(move |p| g.push(p)))).await.unwrap();
    assert_eq!(got.wait_for(1, 20).await.len(), 1, "initial desired document");
    // Reconnect with nothing changed: nothing delivered.
    client.disconnect().await.unwrap();
    client.connect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(got.items().len(), 1, "{:?}", got.items());
    // Changed while offline: the whole desired document after the reconnect.
    client.disconnect().await.unwrap();
    env.service.update_twin("h8", None, &json!({"properties": {"desired": {"missed": true}}}), None).await.unwrap();
    client.connect().await.unwrap();
    let items = got.wait_for(2, 20).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[1]["missed"], true);
    assert!(items[1]["$version"].is_u64());

    // Turned off: no resync.
    let off = ironhub::Client::create_from_connection_string(
        &env.device("h9"),
        ironhub::ClientOptions { ensure_desired_properties: false, ..env.options() },
    )
    .unwrap();
    let got_off = Collector::<Value>::new();
    let g = got_off.clone();
    off.on_twin_desired_properties_patch_received(Some(Arc::new(move |p| g.push(p)))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(got_off.items().is_empty());
}

/// Three receive handlers set at once on a client that is not connected: every one of them
/// auto-connects and subscribes while the link is still connecting. Each setter must return once
/// the connect's re-subscription is acknowledged (a subscription counted as sent while offline
/// left all but one waiting out `operation_timeout`), and each feature then receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_handlers_set_together_while_connecting_all_subscribe_promptly() {
    let env = common::start().await;
    for round in 0..5 {
        let id = format!("h-race-{round}");
        let client = env.device_client(&id);
        let got = Collector::<Message>::new();
        let g = got.clone();
        let started = std::time::Instant::now();
        let (a, b, c) = tokio::join!(
            client.on_message_received(Some(Arc::new(move |m| g.push(m)))),
            client.on_method_request_received(Some(Arc::new(|_r: MethodRequest| {}))),
            client.on_twin_desired_properties_patch_received(Some(Arc::new(|_p: Value| {}))),
        );
        a.expect("message handler");
        b.expect("method handler");
        c.expect("patch handler");
        // operation_timeout is far longer: a setter left waiting for a SUBACK that never comes shows here.
        assert!(started.elapsed() < Duration::from_secs(8), "round {round}: setters took {:?}", started.elapsed());
        env.c2d(&id, json!({"bodyText": "after the race"})).await;
        assert_eq!(got.wait_for(1, 20).await.len(), 1, "round {round}: the C2D message arrives");
        client.shutdown().await.unwrap();
    }
}
