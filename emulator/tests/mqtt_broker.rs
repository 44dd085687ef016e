//! The device-facing MQTT broker against real rumqttc clients (and raw TLS sockets) over TLS
//! on ephemeral loopback ports.

mod mqtt_support;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use ironhub_emulator::hub::{DeviceBoundMessage, EventFilter};
use ironhub_emulator::mqtt::{MethodError, MethodResult};
use ironhub_emulator::{EmulatorConfig, Identity};
use ironhub_protocol::topics::{self, DeviceBound, PropertyBag};
use mqtt_support::{Client, ConnectFailure, Incoming, TestHub, WAIT};
use rumqttc::mqttbytes::v4::{Connect, Packet, SubscribeReasonCode};
use rumqttc::mqttbytes::QoS;
use rumqttc::ConnectReturnCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn refused(result: Result<Client, ConnectFailure>) -> ConnectReturnCode {
    match result {
        Err(ConnectFailure::Refused(code)) => code,
        Err(ConnectFailure::Other(e)) => panic!("expected a CONNACK refusal, got {e}"),
        Ok(_) => panic!("expected a CONNACK refusal, got a connection"),
    }
}

/// Reads a raw socket until the broker closes it (EOF or reset); panics after `within`.
async fn wait_closed<S: tokio::io::AsyncRead + Unpin>(socket: &mut S, within: Duration) {
    let mut buf = [0u8; 4096];
    let outcome = tokio::time::timeout(within, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "the broker kept the connection open for {within:?}");
}

fn raw_connect(id: &Identity, password: &str, keep_alive: u16) -> BytesMut {
    let mut connect = Connect::new(id.client_id());
    connect.keep_alive = keep_alive;
    connect.clean_session = false;
    connect.set_login(format!("localhost/{}/?api-version=2019-10-01", id.client_id()), password);
    let mut buf = BytesMut::new();
    Packet::Connect(connect).write(&mut buf, 1 << 20).expect("encode");
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sas_connect_outcomes() {
    let hub = TestHub::start().await;
    let id = Identity::device("sas-dev");
    let key = hub.add_identity(&id);

    let client = Client::connect(hub.options(&id, &hub.token(&id, &key, 3600))).await.expect("valid token connects");
    assert_eq!(client.connack.code, ConnectReturnCode::Success);
    assert!(!client.connack.session_present);
    assert!(hub.broker.is_connected(&id));
    assert!(hub.hub.get_device("sas-dev").unwrap().presence.connected);

    let wrong_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let code = refused(Client::connect(hub.options(&id, &hub.token(&id, wrong_key, 3600))).await);
    assert_eq!(code, ConnectReturnCode::NotAuthorized);

    let code = refused(Client::connect(hub.options(&id, &hub.token(&id, &key, -60))).await);
    assert_eq!(code, ConnectReturnCode::NotAuthorized, "expired token");

    let unknown = Identity::device("nobody");
    let code = refused(Client::connect(hub.options(&unknown, &hub.token(&unknown, &key, 3600))).await);
    assert_eq!(code, ConnectReturnCode::NotAuthorized, "unknown device");

    // A token for another device does not open this one.
    let other = Identity::device("sas-other");
    let other_key = hub.add_identity(&other);
    let code = refused(Client::connect(hub.options(&id, &hub.token(&other, &other_key, 3600))).await);
    assert_eq!(code, ConnectReturnCode::NotAuthorized, "token of another device");

    // The refused attempts did not disturb the live connection.
    assert!(hub.broker.is_connected(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_username_must_name_the_hub_and_client() {
    let hub = TestHub::start().await;
    let id = Identity::device("user-dev");
    let key = hub.add_identity(&id);
    let mut options = hub.options(&id, &hub.token(&id, &key, 3600));
    options.set_credentials("elsewhere.example/user-dev/?api-version=2019-10-01", hub.token(&id, &key, 3600));
    assert_eq!(refused(Client::connect(options).await), ConnectReturnCode::BadUserNamePassword);

    let mut options = hub.options(&id, &hub.token(&id, &key, 3600));
    options.set_credentials("LOCALHOST:8883/user-dev/?api-version=2019-10-01", hub.token(&id, &key, 3600));
    Client::connect(options).await.expect("host compares case-insensitively and may carry a port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_token_expiry_closes_the_connection() {
    let hub = TestHub::start().await;
    let id = Identity::device("short-lived");
    let key = hub.add_identity(&id);
    let mut client = Client::connect(hub.options(&id, &hub.token(&id, &key, 2))).await.expect("connect");
    let started = Instant::now();
    client.closed().await;
    assert!(started.elapsed() <= Duration::from_secs(4), "closed after {:?}", started.elapsed());
    assert!(!hub.broker.is_connected(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_telemetry_is_recorded_with_properties() {
    let hub = TestHub::start().await;
    let id = Identity::device("tele-dev");
    let mut client = hub.connected(&id).await;
    let bag = PropertyBag {
        message_id: Some("m 1/2".into()),
        correlation_id: Some("c=1&2".into()),
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        custom: vec![
            ("ünï cødé".into(), "välue ✓".into()),
            ("a&b".into(), "1&2=3".into()),
            ("path".into(), "x/y z".into()),
        ],
        ..Default::default()
    };
    let body = "{\"temperature\": 21.5, \"text\": \"héllo\"}";
    client.publish(&topics::telemetry_topic("tele-dev", None, &bag), body).await;

    let events = hub.hub.events_after(&EventFilter { device_id: Some("tele-dev".into()), module_id: None }, 0);
    assert_eq!(events.len(), 1);
    let record = &events[0].record;
    assert_eq!(record.module_id, None);
    assert_eq!(&record.body[..], body.as_bytes());
    assert_eq!(record.properties.message_id.as_deref(), Some("m 1/2"));
    assert_eq!(record.properties.correlation_id.as_deref(), Some("c=1&2"));
    assert_eq!(record.properties.content_type.as_deref(), Some("application/json"));
    assert_eq!(record.properties.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(record.properties.custom("ünï cødé"), Some("välue ✓"));
    assert_eq!(record.properties.custom("a&b"), Some("1&2=3"));
    assert_eq!(record.properties.custom("path"), Some("x/y z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_oversized_telemetry_closes_the_connection() {
    let hub = TestHub::start().await;
    let id = Identity::device("big-dev");
    let mut client = hub.connected(&id).await;
    let topic = topics::telemetry_topic("big-dev", None, &PropertyBag::default());
    client.publish(&topic, vec![b'x'; 262_144]).await;
    client.client.publish(&topic, QoS::AtLeastOnce, false, vec![b'x'; 262_145]).await.expect("queue");
    client.closed().await;
    let events = hub.hub.events_after(&EventFilter::default(), 0);
    assert_eq!(events.len(), 1, "only the message at the limit is recorded");
}

/// With a store (a state directory) the PUBACKs wait for their commit on the connection's PUBACK
/// task while it reads on: telemetry and then a twin GET, pipelined, are acknowledged in PUBLISH
/// order (MQTT 3.1.1 §4.6), the twin GET's PUBACK before its answer, and each acknowledged message
/// is in the event log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_hub_acknowledges_pipelined_publishes_in_order() {
    const N: u16 = 60;
    let dir = std::env::temp_dir().join(format!("ironhub-ordered-{}", rand::random::<u64>()));
    let hub = TestHub::start_with(EmulatorConfig { state_dir: Some(dir.clone()), ..Default::default() }).await;
    let mut client = hub.connected(&Identity::device("ordered")).await;
    let topic = topics::telemetry_topic("ordered", None, &PropertyBag::default());
    for n in 0..N {
        client.client.publish(&topic, QoS::AtLeastOnce, false, n.to_string()).await.unwrap();
    }
    client.client.publish(topics::twin_get_topic("r0"), QoS::AtLeastOnce, false, " ").await.unwrap();
    // rumqttc numbers a fresh connection's PUBLISHes 1, 2, ... in the order they were made.
    let mut seen = Vec::new();
    while seen.len() < usize::from(N) + 2 {
        match client.next().await {
            Incoming::PubAck(pkid) => seen.push(format!("PUBACK {pkid}")),
            Incoming::Publish(p) => seen.push(format!("answer {}", p.topic)),
            Incoming::Closed(why) => panic!("closed: {why}"),
            Incoming::SubAck(_) => {}
        }
    }
    let mut expected: Vec<String> = (1..=N + 1).map(|k| format!("PUBACK {k}")).collect();
    expected.push(format!("answer {}", topics::twin_response_topic(200, "r0", None)));
    assert_eq!(seen, expected);
    let filter = EventFilter { device_id: Some("ordered".into()), module_id: None };
    assert_eq!(hub.hub.events_after(&filter, 0).len(), usize::from(N));
    hub.emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_twin_get_and_reported_patch() {
    let hub = TestHub::start().await;
    let id = Identity::device("twin-dev");
    let mut client = hub.connected(&id).await;

    // Answered even before any subscription to $iothub/twin/res/# (ensure_desired_properties).
    client.client.publish(topics::twin_get_topic("r0"), QoS::AtLeastOnce, false, " ").await.unwrap();
    let response = client.next_publish().await;
    assert_eq!(response.qos, QoS::AtMostOnce);
    assert_eq!(
        topics::parse_device_bound(&response.topic),
        Some(DeviceBound::TwinResponse { status: 200, rid: "r0".into(), version: None })
    );
    let twin: serde_json::Value = serde_json::from_slice(&response.payload).unwrap();
    let reported_version = twin["reported"]["$version"].as_u64().expect("reported $version");
    assert!(twin["desired"]["$version"].is_u64());

    client.subscribe("$iothub/twin/res/#").await;
    let patch = json!({"firmware": "1.2.3", "nested": {"a": 1}});
    client.client.publish(topics::twin_reported_patch_topic("r1"), QoS::AtLeastOnce, false, patch.to_string()).await.unwrap();
    let response = client.next_publish().await;
    assert_eq!(
        topics::parse_device_bound(&response.topic),
        Some(DeviceBound::TwinResponse { status: 204, rid: "r1".into(), version: Some(reported_version + 1) })
    );
    assert!(response.payload.is_empty());

    client.client.publish(topics::twin_reported_patch_topic("r2"), QoS::AtLeastOnce, false, "{not json").await.unwrap();
    let response = client.next_publish().await;
    match topics::parse_device_bound(&response.topic) {
        Some(DeviceBound::TwinResponse { status: 400, rid, version: None }) => assert_eq!(rid, "r2"),
        other => panic!("expected a 400 twin response, got {other:?}"),
    }

    client.client.publish(topics::twin_get_topic("r3"), QoS::AtLeastOnce, false, " ").await.unwrap();
    let twin: serde_json::Value = serde_json::from_slice(&client.next_publish().await.payload).unwrap();
    assert_eq!(twin["reported"]["firmware"], "1.2.3");
    assert_eq!(twin["reported"]["$version"].as_u64(), Some(reported_version + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_desired_patch_is_pushed_to_subscribers() {
    let hub = TestHub::start().await;
    let id = Identity::device("desired-dev");
    let mut client = hub.connected(&id).await;
    client.subscribe("$iothub/twin/PATCH/properties/desired/#").await;

    let body = json!({"properties": {"desired": {"rate": 5, "gone": null}}});
    let (_, notification) = hub.hub.update_twin(&id, &body, None, false).expect("update twin");
    let notification = notification.expect("a desired change notifies");
    hub.broker.notify_desired(&id, &notification.body, notification.version);

    let publish = client.next_publish().await;
    assert_eq!(publish.qos, QoS::AtMostOnce);
    assert_eq!(
        topics::parse_device_bound(&publish.topic),
        Some(DeviceBound::DesiredPatch { version: Some(notification.version) })
    );
    let patch: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap();
    assert_eq!(patch["rate"], 5);
    assert_eq!(patch["$version"].as_u64(), Some(notification.version));

    // Another identity's notification never reaches this client.
    let other = Identity::device("desired-other");
    hub.add_identity(&other);
    hub.broker.notify_desired(&other, &json!({"x": 1, "$version": 2}), 2);
    client.assert_no_publish(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_direct_method_round_trip() {
    let hub = TestHub::start().await;
    let id = Identity::module("method-dev", "method-mod");
    let mut client = hub.connected(&id).await;

    let quick = Duration::from_millis(200);
    let offline = hub.broker.invoke_method(&id, "reboot", json!(null), quick, quick).await;
    assert_eq!(offline, Err(MethodError::NotOnline), "connected but not subscribed to methods");

    client.subscribe("$iothub/methods/POST/#").await;
    let broker = hub.broker.clone();
    let target = id.clone();
    let call = tokio::spawn(async move {
        broker.invoke_method(&target, "reboot now", json!({"delay": 3}), WAIT, WAIT).await
    });
    let request = client.next_publish().await;
    assert_eq!(request.qos, QoS::AtMostOnce);
    let Some(DeviceBound::MethodRequest { name, rid }) = topics::parse_device_bound(&request.topic) else {
        panic!("not a method request: {}", request.topic)
    };
    assert_eq!(name, "reboot now");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&request.payload).unwrap(), json!({"delay": 3}));
    client.publish(&topics::method_response_topic(201, &rid), json!({"done": true}).to_string()).await;
    assert_eq!(call.await.unwrap(), Ok(MethodResult { status: 201, payload: json!({"done": true}) }));

    // No answer → Timeout, and a late answer is ignored without harm.
    let timed_out = hub.broker.invoke_method(&id, "slow", json!(1), WAIT, quick).await;
    assert_eq!(timed_out, Err(MethodError::Timeout));
    let late = client.next_publish().await;
    let Some(DeviceBound::MethodRequest { rid, .. }) = topics::parse_device_bound(&late.topic) else { panic!() };
    client.publish(&topics::method_response_topic(200, &rid), "null").await;

    // A method waits for its target to connect within the connect timeout.
    let later = Identity::device("method-later");
    let key = hub.add_identity(&later);
    let broker = hub.broker.clone();
    let target = later.clone();
    let call = tokio::spawn(async move { broker.invoke_method(&target, "hello", json!("hi"), WAIT, WAIT).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut device = Client::connect(hub.options(&later, &hub.token(&later, &key, 3600))).await.unwrap();
    device.subscribe("$iothub/methods/POST/#").await;
    let request = device.next_publish().await;
    let Some(DeviceBound::MethodRequest { rid, .. }) = topics::parse_device_bound(&request.topic) else { panic!() };
    device.publish(&topics::method_response_topic(200, &rid), "").await;
    assert_eq!(call.await.unwrap(), Ok(MethodResult { status: 200, payload: serde_json::Value::Null }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_c2d_queue_is_drained_on_subscribe() {
    let hub = TestHub::start().await;
    let id = Identity::device("c2d-dev");
    let key = hub.add_identity(&id);
    for i in 0..3 {
        let properties = PropertyBag {
            message_id: Some(format!("msg {i}")),
            custom: vec![("k&ey".into(), format!("v={i}"))],
            ..Default::default()
        };
        let msg = DeviceBoundMessage { body: format!("body {i}").into(), properties };
        assert!(!hub.broker.deliver_c2d("c2d-dev", msg).unwrap(), "offline: queued");
    }
    let mut client = Client::connect(hub.options(&id, &hub.token(&id, &key, 3600))).await.unwrap();
    client.assert_no_publish(Duration::from_millis(200)).await;
    let ack = client.subscribe("devices/c2d-dev/messages/devicebound/#").await;
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    for i in 0..3 {
        let publish = client.next_publish().await;
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        assert_eq!(&publish.payload[..], format!("body {i}").as_bytes());
        let Some(DeviceBound::C2d { device_id, bag }) = topics::parse_device_bound(&publish.topic) else { panic!() };
        assert_eq!(device_id, "c2d-dev");
        assert_eq!(bag.message_id, Some(format!("msg {i}")));
        assert_eq!(bag.custom("k&ey"), Some(format!("v={i}").as_str()));
    }
    // Pending until the client's PUBACKs (rumqttc acks on its own) arrive.
    tokio::time::timeout(WAIT, async {
        while hub.hub.pending_c2d_count("c2d-dev") != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("acknowledged messages leave the queue");

    // Online and subscribed: delivered at once.
    let msg = DeviceBoundMessage { body: "now".into(), properties: PropertyBag::default() };
    assert!(hub.broker.deliver_c2d("c2d-dev", msg).unwrap(), "deliverable");
    assert_eq!(&client.next_publish().await.payload[..], b"now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_module_output_is_routed_to_another_module_input() {
    let hub = TestHub::start().await;
    let sender = Identity::module("edge-dev", "producer");
    let receiver = Identity::module("edge-dev", "consumer");
    let mut producer = hub.connected(&sender).await;
    let mut consumer = hub.connected(&receiver).await;
    hub.hub
        .merge_routes(vec![(
            "r1".into(),
            Some(r#"FROM /messages/modules/producer/outputs/out1 INTO BrokeredEndpoint("/modules/consumer/inputs/in1")"#.into()),
        )])
        .expect("route");
    consumer.subscribe("devices/edge-dev/modules/consumer/inputs/#").await;

    let bag = PropertyBag {
        output_name: Some("out1".into()),
        message_id: Some("routed-1".into()),
        custom: vec![("colour".into(), "grün & blau".into())],
        ..Default::default()
    };
    producer.publish(&topics::telemetry_topic("edge-dev", Some("producer"), &bag), "payload").await;

    let publish = consumer.next_publish().await;
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_eq!(&publish.payload[..], b"payload");
    let Some(DeviceBound::Input { device_id, module_id, input_name, bag }) = topics::parse_device_bound(&publish.topic) else {
        panic!("not an input topic: {}", publish.topic)
    };
    assert_eq!((device_id.as_str(), module_id.as_str(), input_name.as_str()), ("edge-dev", "consumer", "in1"));
    assert_eq!(bag.message_id.as_deref(), Some("routed-1"));
    assert_eq!(bag.custom("colour"), Some("grün & blau"));
    assert_eq!(bag.connection_device_id.as_deref(), Some("edge-dev"));
    assert_eq!(bag.connection_module_id.as_deref(), Some("producer"));

    // Another output matches no route: recorded, not delivered.
    let other = PropertyBag { output_name: Some("out2".into()), ..Default::default() };
    producer.publish(&topics::telemetry_topic("edge-dev", Some("producer"), &other), "x").await;
    consumer.assert_no_publish(Duration::from_millis(300)).await;
    assert_eq!(hub.hub.events_after(&EventFilter::default(), 0).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_malformed_packet_closes_only_that_connection() {
    let hub = TestHub::start().await;
    let bystander_id = Identity::device("bystander");
    let mut bystander = hub.connected(&bystander_id).await;

    // Garbage instead of CONNECT.
    let mut raw = hub.raw().await;
    raw.write_all(b"\x10\xff\xff\xff\xff\x7fGARBAGE").await.unwrap();
    wait_closed(&mut raw, WAIT).await;

    // A valid session, then a packet whose body contradicts its header.
    let id = Identity::device("garbler");
    let key = hub.add_identity(&id);
    let mut raw = hub.raw().await;
    raw.write_all(&raw_connect(&id, &hub.token(&id, &key, 3600), 60)).await.unwrap();
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    assert!(hub.broker.is_connected(&id));
    raw.write_all(&[0x82, 0x03, 0x00, 0x01, 0xff]).await.unwrap(); // SUBSCRIBE with a truncated filter
    wait_closed(&mut raw, WAIT).await;
    assert!(!hub.broker.is_connected(&id));

    // The other client never noticed.
    bystander.publish(&topics::telemetry_topic("bystander", None, &PropertyBag::default()), "still here").await;
    assert!(hub.broker.is_connected(&bystander_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_foreign_subscription_is_refused_and_gets_nothing() {
    let hub = TestHub::start().await;
    let victim = Identity::device("victim");
    let spy = Identity::device("spy");
    let mut victim_client = hub.connected(&victim).await;
    let mut spy_client = hub.connected(&spy).await;

    for filter in ["devices/victim/messages/devicebound/#", "devices/+/messages/devicebound/#", "#", "devices/victim/modules/m/inputs/#"] {
        let ack = spy_client.subscribe(filter).await;
        assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Failure], "{filter}");
    }
    victim_client.subscribe("devices/victim/messages/devicebound/#").await;
    let msg = DeviceBoundMessage { body: "secret".into(), properties: PropertyBag::default() };
    assert!(hub.broker.deliver_c2d("victim", msg).unwrap(), "victim is subscribed");
    assert_eq!(&victim_client.next_publish().await.payload[..], b"secret");
    spy_client.assert_no_publish(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_foreign_publish_closes_the_connection() {
    let hub = TestHub::start().await;
    hub.add_identity(&Identity::device("target"));
    for topic in ["devices/target/messages/events/", "devices/target/messages/devicebound/x", "random/topic"] {
        let mut client = hub.connected(&Identity::device("intruder")).await;
        client.client.publish(topic, QoS::AtLeastOnce, false, "x").await.unwrap();
        client.closed().await;
    }
    assert!(hub.hub.events_after(&EventFilter::default(), 0).is_empty(), "nothing recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_second_connection_closes_the_first() {
    let hub = TestHub::start().await;
    let id = Identity::device("twice");
    let mut first = hub.connected(&id).await;
    let mut second = hub.connected(&id).await;
    first.closed().await;
    // The newer connection stays and works; the older one's cleanup did not mark it offline.
    second.publish(&topics::telemetry_topic("twice", None, &PropertyBag::default()), "hi").await;
    assert!(hub.broker.is_connected(&id));
    assert!(hub.hub.get_device("twice").unwrap().presence.connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_persistent_session_keeps_subscriptions() {
    let hub = TestHub::start().await;
    let id = Identity::device("sticky");
    let mut client = hub.connected(&id).await;
    client.subscribe("devices/sticky/messages/devicebound/#").await;
    client.client.disconnect().await.unwrap();
    client.closed().await;
    tokio::time::timeout(WAIT, async {
        while hub.broker.is_connected(&id) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("disconnect noticed");

    // Queued while offline, delivered on reconnect without a new SUBSCRIBE.
    let msg = DeviceBoundMessage { body: "while away".into(), properties: PropertyBag::default() };
    assert!(!hub.broker.deliver_c2d("sticky", msg).unwrap(), "offline");
    let mut again = hub.connected(&id).await;
    assert!(again.connack.session_present);
    assert_eq!(&again.next_publish().await.payload[..], b"while away");

    // A clean session forgets them.
    let key = hub.add_identity(&Identity::device("sticky"));
    let mut options = hub.options(&id, &hub.token(&id, &key, 3600));
    options.set_clean_session(true);
    let clean = Client::connect(options).await.unwrap();
    assert!(!clean.connack.session_present);
    let msg = DeviceBoundMessage { body: "x".into(), properties: PropertyBag::default() };
    assert!(!hub.broker.deliver_c2d("sticky", msg).unwrap(), "no subscription after a clean session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_keep_alive_is_enforced() {
    let hub = TestHub::start().await;
    let id = Identity::device("sleepy");
    let key = hub.add_identity(&id);
    let mut raw = hub.raw().await;
    raw.write_all(&raw_connect(&id, &hub.token(&id, &key, 3600), 1)).await.unwrap();
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack[3], 0);
    let started = Instant::now();
    wait_closed(&mut raw, Duration::from_secs(5)).await;
    let silent = started.elapsed();
    assert!(silent >= Duration::from_millis(1400), "closed after only {silent:?}");
    assert!(!hub.broker.is_connected(&id));

    // PINGREQs keep a connection alive past the limit.
    let mut raw = hub.raw().await;
    raw.write_all(&raw_connect(&id, &hub.token(&id, &key, 3600), 1)).await.unwrap();
    raw.read_exact(&mut connack).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        raw.write_all(&[0xc0, 0x00]).await.unwrap();
        let mut pingresp = [0u8; 2];
        raw.read_exact(&mut pingresp).await.unwrap();
        assert_eq!(pingresp, [0xd0, 0x00]);
    }
    assert!(hub.broker.is_connected(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_disconnect_drops_the_live_connection() {
    let hub = TestHub::start().await;
    let id = Identity::device("faulty");
    let mut client = hub.connected(&id).await;
    assert!(hub.broker.disconnect(&id));
    client.closed().await;
    assert!(!hub.broker.disconnect(&Identity::device("never-connected")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket() {
    let hub = TestHub::start().await;
    let id = Identity::device("ws-dev");
    let key = hub.add_identity(&id);
    let mut client = Client::connect(hub.websocket_options(&id, &hub.token(&id, &key, 3600))).await.expect("wss connect");
    assert!(hub.broker.is_connected(&id));

    // Bigger than one TLS record and than rumqttc's read buffer: packets span frames.
    let bag = PropertyBag { message_id: Some("over ws".into()), ..Default::default() };
    let body = vec![b'w'; 100_000];
    client.publish(&topics::telemetry_topic("ws-dev", None, &bag), body.clone()).await;
    let events = hub.hub.events_after(&EventFilter::default(), 0);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].record.body.len(), body.len());
    assert_eq!(events[0].record.properties.message_id.as_deref(), Some("over ws"));

    client.subscribe("devices/ws-dev/messages/devicebound/#").await;
    let msg = DeviceBoundMessage { body: "to ws".into(), properties: PropertyBag::default() };
    assert!(hub.broker.deliver_c2d("ws-dev", msg).unwrap(), "deliverable");
    assert_eq!(&client.next_publish().await.payload[..], b"to ws");

    let code = refused(Client::connect(hub.websocket_options(&id, &hub.token(&id, "AAAA", 3600))).await);
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_slow_client_is_dropped_without_blocking_others() {
    let hub = TestHub::start().await;
    let bystander_id = Identity::device("busy-bystander");
    let mut bystander = hub.connected(&bystander_id).await;

    // A device that subscribes to C2D and then never reads again.
    let id = Identity::device("stalled");
    let key = hub.add_identity(&id);
    let mut raw = hub.raw().await;
    raw.write_all(&raw_connect(&id, &hub.token(&id, &key, 3600), 0)).await.unwrap();
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.unwrap();
    let mut subscribe = BytesMut::new();
    let filter = rumqttc::mqttbytes::v4::Subscribe::new(topics::DESIRED_PATCH_FILTER, QoS::AtLeastOnce);
    Packet::Subscribe(rumqttc::mqttbytes::v4::Subscribe { pkid: 1, ..filter }).write(&mut subscribe, 1 << 20).unwrap();
    raw.write_all(&subscribe).await.unwrap();
    let mut suback = [0u8; 5];
    raw.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback[0], 0x90);

    // Deliveries never wait on it: once its socket and queue are full, it is dropped.
    // Desired-property patches (QoS 0): C2D would stop at the 50 unacknowledged messages first.
    let body = serde_json::json!({"blob": "c".repeat(8_000)});
    let started = Instant::now();
    let mut delivered = 0;
    while hub.broker.notify_desired(&id, &body, 1) {
        delivered += 1;
        assert!(delivered < 100_000, "the stalled connection was never dropped");
        if delivered % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(started.elapsed() < WAIT, "deliveries were held up for {:?}", started.elapsed());
    // Its whole queue was used before it was given up on.
    assert!(delivered >= 4096, "dropped after only {delivered} deliveries");
    tokio::time::timeout(WAIT, async {
        while hub.broker.is_connected(&id) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stalled connection is dropped");

    bystander.publish(&topics::telemetry_topic("busy-bystander", None, &PropertyBag::default()), "unaffected").await;
}

/// MQTT packets and WebSocket frames are independent: a packet may span frames and a frame may
/// carry several packets. Driven by hand over the real HTTPS listener's upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_websocket_frames_split_and_merge_packets() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let hub = TestHub::start().await;
    let id = Identity::device("ws-frames");
    let key = hub.add_identity(&id);

    let mut ws = open_websocket(&hub).await;

    let connect = raw_connect(&id, &hub.token(&id, &key, 3600), 60).freeze();
    ws.send(Message::Binary(connect.slice(..7))).await.unwrap();
    ws.send(Message::Binary(connect.slice(7..))).await.unwrap();
    let mut merged = BytesMut::new();
    let filter = rumqttc::mqttbytes::v4::Subscribe::new("$iothub/methods/POST/#", QoS::AtLeastOnce);
    Packet::Subscribe(rumqttc::mqttbytes::v4::Subscribe { pkid: 7, ..filter }).write(&mut merged, 1 << 20).unwrap();
    Packet::PingReq.write(&mut merged, 1 << 20).unwrap();
    ws.send(Message::Binary(merged.freeze())).await.unwrap();

    let mut inbox = BytesMut::new();
    let mut answers = Vec::new();
    while answers.len() < 3 {
        match Packet::read(&mut inbox, 1 << 20) {
            Ok(packet) => answers.push(packet),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                match tokio::time::timeout(WAIT, ws.next()).await.expect("an answer").expect("open").unwrap() {
                    Message::Binary(data) => inbox.extend_from_slice(&data),
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            Err(e) => panic!("bad packet from the broker: {e}"),
        }
    }
    assert!(matches!(&answers[0], Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success));
    assert!(matches!(&answers[1], Packet::SubAck(ack) if ack.pkid == 7 && ack.return_codes == vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]));
    assert_eq!(answers[2], Packet::PingResp);
    assert!(hub.broker.is_connected(&id));
}

/// A WebSocket (subprotocol mqtt) to the HTTPS listener, upgraded by hand, without a frame limit
/// on our side.
async fn open_websocket(
    hub: &TestHub,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    let connector = tokio_rustls::TlsConnector::from(hub.client_config());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", hub.https_port)).await.unwrap();
    let mut tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    tls.write_all(
        b"GET /$iothub/websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let unbounded = WebSocketConfig::default().max_frame_size(None).max_message_size(None);
    tokio_tungstenite::WebSocketStream::from_raw_socket(tls, Role::Client, Some(unbounded)).await
}

/// A WebSocket frame larger than any MQTT packet is refused before CONNECT: the hub closes the
/// connection instead of buffering it (here: a CONNECT followed by 200 000 PINGREQs in one frame,
/// which an unbounded hub would answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_websocket_frames_are_bounded_before_connect() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let hub = TestHub::start().await;
    let id = Identity::device("ws-big");
    let key = hub.add_identity(&id);
    let mut ws = open_websocket(&hub).await;
    let mut frame = raw_connect(&id, &hub.token(&id, &key, 3600), 60);
    for _ in 0..200_000 {
        Packet::PingReq.write(&mut frame, 1 << 20).unwrap();
    }
    assert!(frame.len() > 400_000);
    let _ = ws.send(Message::Binary(frame.freeze())).await;
    let answer = tokio::time::timeout(WAIT, ws.next()).await.expect("the hub answers or closes");
    if let Some(Ok(Message::Binary(data))) = answer {
        panic!("the hub read an oversized frame and answered {} bytes", data.len());
    }
    assert!(!hub.broker.is_connected(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_subscriptions_per_session_are_capped() {
    let hub = TestHub::start().await;
    let mut client = hub.connected(&Identity::device("greedy")).await;
    for i in 0..32 {
        let ack = client.subscribe(&format!("$iothub/twin/res/{i}/#")).await;
        assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)], "filter {i}");
    }
    let refused = client.subscribe("$iothub/methods/POST/#").await;
    assert_eq!(refused.return_codes, vec![SubscribeReasonCode::Failure]);
    let again = client.subscribe("$iothub/twin/res/0/#").await;
    assert_eq!(again.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)], "a filter it holds is fine");
}
