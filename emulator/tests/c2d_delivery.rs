//! At-least-once delivery of device-bound messages: a C2D message stays pending until the device
//! PUBACKs it, goes out again (DUP) on the next connection, survives an emulator restart, and a
//! routed copy for an offline module waits for that module.

mod mqtt_support;

use std::time::Duration;

use ironhub_emulator::hub::DeviceBoundMessage;
use ironhub_emulator::{EmulatorConfig, Identity};
use ironhub_protocol::topics::{self, DeviceBound, PropertyBag};
use mqtt_support::{Client, TestHub, WAIT};
use rumqttc::mqttbytes::v4::Publish;

fn message(text: &str) -> DeviceBoundMessage {
    let properties =
        PropertyBag { message_id: Some(format!("id-{text}")), custom: vec![("k".into(), "v w".into())], ..Default::default() };
    DeviceBoundMessage { body: text.to_owned().into(), properties }
}

/// A client of `id` that acknowledges nothing unless told to.
async fn manual_ack_client(hub: &TestHub, id: &Identity, key: &str) -> Client {
    let mut options = hub.options(id, &hub.token(id, key, 3600));
    options.set_manual_acks(true);
    Client::connect(options).await.expect("connect")
}

async fn wait_pending(hub: &TestHub, device_id: &str, expected: usize) {
    tokio::time::timeout(WAIT, async {
        while hub.hub.pending_c2d_count(device_id) != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{device_id} never had {expected} pending (has {})", hub.hub.pending_c2d_count(device_id)));
}

fn assert_is(publish: &Publish, text: &str, dup: bool) {
    assert_eq!(&publish.payload[..], text.as_bytes());
    assert_eq!(publish.dup, dup, "DUP on {text}");
    let Some(DeviceBound::C2d { bag, .. }) = topics::parse_device_bound(&publish.topic) else { panic!("{}", publish.topic) };
    assert_eq!(bag.message_id, Some(format!("id-{text}")));
    assert_eq!(bag.custom("k"), Some("v w"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2d_is_redelivered_until_acknowledged_across_reconnects_and_restarts() {
    let dir = std::env::temp_dir().join(format!("ironhub-c2d-{}", rand::random::<u64>()));
    let config = EmulatorConfig { state_dir: Some(dir.clone()), ..Default::default() };
    let hub = TestHub::start_with(config.clone()).await;
    let id = Identity::device("alo");
    let key = hub.add_identity(&id);

    let mut client = manual_ack_client(&hub, &id, &key).await;
    client.subscribe(&topics::c2d_filter("alo")).await;
    assert!(hub.broker.deliver_c2d("alo", message("unacked")).unwrap());
    assert!(hub.broker.deliver_c2d("alo", message("acked")).unwrap());
    assert_is(&client.next_publish().await, "unacked", false);
    let acked = client.next_publish().await;
    assert_is(&acked, "acked", false);
    client.client.ack(&acked).await.unwrap();
    wait_pending(&hub, "alo", 1).await;

    // The connection drops before the PUBACK: the next connection gets it again, without
    // re-subscribing (persistent session), marked DUP.
    assert!(hub.broker.disconnect(&id));
    client.closed().await;
    let mut again = manual_ack_client(&hub, &id, &key).await;
    assert_is(&again.next_publish().await, "unacked", true);
    again.assert_no_publish(Duration::from_millis(200)).await;

    // Still unacknowledged when the emulator stops: it is there after the restart.
    let TestHub { emulator, .. } = hub;
    emulator.shutdown().await;
    again.closed().await;
    let hub = TestHub::start_with(config.clone()).await;
    assert_eq!(hub.hub.pending_c2d_count("alo"), 1);
    let mut after_restart = manual_ack_client(&hub, &id, &key).await;
    after_restart.subscribe(&topics::c2d_filter("alo")).await;
    let publish = after_restart.next_publish().await;
    assert_is(&publish, "unacked", true);
    after_restart.client.ack(&publish).await.unwrap();
    wait_pending(&hub, "alo", 0).await;

    // The acknowledgement was kept too.
    let TestHub { emulator, .. } = hub;
    emulator.shutdown().await;
    let hub = TestHub::start_with(config).await;
    assert_eq!(hub.hub.pending_c2d_count("alo"), 0);
    drop(hub);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2d_expired_before_delivery_is_dropped() {
    let hub = TestHub::start().await;
    let id = Identity::device("late");
    let key = hub.add_identity(&id);
    let mut stale = message("stale");
    stale.properties.expiry_time_utc = Some("2001-01-01T00:00:00.000Z".into());
    assert!(!hub.broker.deliver_c2d("late", stale).unwrap());
    assert!(!hub.broker.deliver_c2d("late", message("fresh")).unwrap());
    assert_eq!(hub.hub.pending_c2d_count("late"), 1, "the expired one is gone");
    let mut client = manual_ack_client(&hub, &id, &key).await;
    client.subscribe(&topics::c2d_filter("late")).await;
    assert_is(&client.next_publish().await, "fresh", false);
    client.assert_no_publish(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_copy_waits_for_an_offline_module() {
    let hub = TestHub::start().await;
    let sender = Identity::module("edge-keep", "producer");
    let receiver = Identity::module("edge-keep", "consumer");
    let mut producer = hub.connected(&sender).await;
    let receiver_key = hub.add_identity(&receiver);
    let route = r#"FROM /messages/modules/producer/outputs/out1 INTO BrokeredEndpoint("/modules/consumer/inputs/in1")"#;
    hub.hub.merge_routes(vec![("r".into(), Some(route.into()))]).unwrap();

    let bag = PropertyBag { output_name: Some("out1".into()), ..Default::default() };
    producer.publish(&topics::telemetry_topic("edge-keep", Some("producer"), &bag), "while offline").await;
    assert_eq!(hub.hub.pending_messages(&receiver).len(), 1);

    let mut consumer = manual_ack_client(&hub, &receiver, &receiver_key).await;
    consumer.subscribe(&topics::input_filter("edge-keep", "consumer")).await;
    let publish = consumer.next_publish().await;
    assert_eq!(&publish.payload[..], b"while offline");
    let Some(DeviceBound::Input { input_name, bag, .. }) = topics::parse_device_bound(&publish.topic) else { panic!() };
    assert_eq!(input_name, "in1");
    assert_eq!(bag.connection_module_id.as_deref(), Some("producer"));
    consumer.client.ack(&publish).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while !hub.hub.pending_messages(&receiver).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the PUBACK completes the routed copy");
}
