//! Connection behaviour: reconnect after an injected disconnect (re-subscribed, handlers still
//! fire, queued sends delivered), SAS renewal without losing work, given SAS tokens and
//! `update_sastoken` / `on_new_sastoken_required`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Collector;
use ironhub::service::DirectMethodRequest;
use ironhub::{Client, ClientOptions, ConnectionReason, ConnectionStateChange, ErrorKind, Message, MethodResponse};
use serde_json::json;

fn key_of(cs: &str) -> String {
    cs.split(';').find_map(|kv| kv.strip_prefix("SharedAccessKey=")).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_an_injected_disconnect_and_resubscribes() {
    let env = common::start().await;
    let client = env.device_client("r1");
    let states = Collector::<ConnectionStateChange>::new();
    let s = states.clone();
    client.on_connection_state_change(Some(Arc::new(move |c| s.push(c)))).unwrap();
    let msgs = Collector::<Message>::new();
    let m = msgs.clone();
    client.on_message_received(Some(Arc::new(move |x| m.push(x)))).await.unwrap();
    let responder = client.clone();
    client
        .on_method_request_received(Some(Arc::new(move |r| {
            let c = responder.clone();
            tokio::runtime::Handle::try_current().ok();
            std::thread::spawn(move || {
                ironhub::blocking::Client::from_async(c)
                    .send_method_response(&MethodResponse::create_from_method_request(&r, 200, Some(json!("pong"))))
                    .unwrap();
            });
        })))
        .await
        .unwrap();

    env.kick("r1", None).await;
    let seen = states.wait_for(3, 20).await;
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(!seen[1].connected, "{seen:?}");
    assert_ne!(seen[1].reason, ConnectionReason::Ok);
    assert_eq!(seen[2], ConnectionStateChange { connected: true, reason: ConnectionReason::Ok });

    // Handlers still fire after the reconnect.
    env.c2d("r1", json!({"bodyText": "after reconnect"})).await;
    let got = msgs.wait_for(1, 20).await;
    assert_eq!(&got[0].data[..], b"after reconnect");
    let mut r = DirectMethodRequest::new("ping", json!(null));
    r.response_timeout_in_seconds = 10;
    let answer = env.service.invoke_method("r1", None, &r).await.unwrap();
    assert_eq!(answer.payload, json!("pong"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_made_while_reconnecting_are_delivered() {
    let env = common::start().await;
    let client = env.device_client("r2");
    client.connect().await.unwrap();
    env.kick("r2", None).await;
    let sends: Vec<_> = (0..10).map(|i| client.send_message_pipelined(&Message::new(format!("{i}")))).collect();
    for s in sends {
        s.await.expect("delivered after reconnect");
    }
    let ev = env.wait_events("r2", 10).await;
    assert!(ev.len() >= 10, "{}", ev.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_based_tokens_renew_without_disturbing_the_application() {
    let env = common::start().await;
    let cs = env.device("r3");
    // 10 s tokens: renewed every ~5 s; the hub drops connections whose token expired.
    let client = Client::create_from_connection_string(&cs, ClientOptions { sastoken_ttl: Some(10), ..env.options() }).unwrap();
    let states = Collector::<ConnectionStateChange>::new();
    let s = states.clone();
    client.on_connection_state_change(Some(Arc::new(move |c| s.push(c)))).unwrap();
    client.connect().await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut n = 0;
    while tokio::time::Instant::now() < end {
        let batch: Vec<_> = (0..5).map(|_| client.send_message_pipelined(&Message::new("tick"))).collect();
        for b in batch {
            b.await.expect("no send fails across renewals");
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(client.connected());
    let ev = env.wait_events("r3", n).await;
    assert_eq!(ev.len(), n);
    assert_eq!(states.items(), vec![ConnectionStateChange { connected: true, reason: ConnectionReason::Ok }], "renewal is invisible");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_tokens_ask_for_renewal_and_update_sastoken_reauthenticates() {
    let env = common::start().await;
    let cs = env.device("r4");
    let key = key_of(&cs);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Expires in 123 s: on_new_sastoken_required fires 120 s before, i.e. in ~3 s.
    let token = ironhub_protocol::sas::generate_token("localhost/devices/r4", &key, None, now + 123).unwrap();
    let client = Client::create_from_sastoken(&token, env.options()).unwrap();
    let asked = Collector::<()>::new();
    let a = asked.clone();
    client.on_new_sastoken_required(Some(Arc::new(move || a.push(())))).unwrap();
    client.connect().await.unwrap();
    assert_eq!(asked.wait_for(1, 15).await.len(), 1, "on_new_sastoken_required fired");

    let wrong = ironhub_protocol::sas::generate_token("localhost/devices/other", &key, None, now + 3600).unwrap();
    assert_eq!(client.update_sastoken(&wrong).await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let expired = ironhub_protocol::sas::generate_token("localhost/devices/r4", &key, None, now - 10).unwrap();
    assert_eq!(client.update_sastoken(&expired).await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let fresh = ironhub_protocol::sas::generate_token("localhost/devices/r4", &key, None, now + 3600).unwrap();
    client.update_sastoken(&fresh).await.expect("update_sastoken");
    assert!(client.connected());
    client.send_message(&Message::new("with the new token")).await.unwrap();

    let keyed = env.device_client("r4");
    assert_eq!(
        keyed.update_sastoken(&fresh).await.unwrap_err().kind(),
        ErrorKind::Client,
        "update_sastoken is only for token clients"
    );
}
