//! C2D delivery feedback as IoT Hub produces it, driven by real MQTT devices: `Success` at the
//! device's PUBACK, `Expired` when the time to live passes undelivered, `DeliveryCountExceeded`
//! after 10 deliveries without a PUBACK; `iothub-ack=positive` reports only successes, `negative`
//! only failures, none or no ack nothing. Feedback messages stay queued until accepted, survive a
//! restart, and a released one goes out again. (The AMQP receiver side is in amqp_c2d.rs.)

mod mqtt_support;

use std::time::Duration;

use ironhub_emulator::hub::feedback::{FeedbackMessage, FeedbackRecord, FeedbackStatus, CONTENT_TYPE};
use ironhub_emulator::hub::DeviceBoundMessage;
use ironhub_emulator::{EmulatorConfig, Identity};
use ironhub_protocol::topics::{self, DeviceBound, PropertyBag};
use mqtt_support::{Client, TestHub, WAIT};

fn c2d(message_id: &str, ack: Option<&str>) -> DeviceBoundMessage {
    let properties = PropertyBag { message_id: Some(message_id.into()), ack: ack.map(str::to_owned), ..Default::default() };
    DeviceBoundMessage { body: message_id.to_owned().into(), properties }
}

fn expiring(message_id: &str, ack: &str, in_ms: i64) -> DeviceBoundMessage {
    let mut m = c2d(message_id, Some(ack));
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(in_ms);
    m.properties.expiry_time_utc = Some(at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    m
}

/// A client of `id` that acknowledges nothing unless told to, subscribed to C2D (the session
/// is persistent, so a reconnect is subscribed already and C2D may arrive at once).
async fn manual_ack_client(hub: &TestHub, id: &Identity, key: &str) -> Client {
    let mut client = reconnect(hub, id, key).await;
    client.subscribe(&topics::c2d_filter(&id.device_id)).await;
    client
}

async fn reconnect(hub: &TestHub, id: &Identity, key: &str) -> Client {
    let mut options = hub.options(id, &hub.token(id, key, 3600));
    options.set_manual_acks(true);
    Client::connect(options).await.expect("connect")
}

/// Takes and accepts feedback messages until `count` records arrived (or fails after WAIT).
async fn feedback_records(hub: &TestHub, count: usize) -> Vec<FeedbackRecord> {
    let mut records = Vec::new();
    tokio::time::timeout(WAIT, async {
        while records.len() < count {
            match hub.hub.take_feedback() {
                Some(m) => {
                    assert!(hub.hub.complete_feedback(m.lock_token));
                    records.extend(parse(&m));
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} feedback records: {records:?}", records.len()));
    records
}

fn parse(m: &FeedbackMessage) -> Vec<FeedbackRecord> {
    serde_json::from_slice(&m.body()).expect("a JSON array of records")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_at_the_puback_with_the_iot_hub_record_fields() {
    let hub = TestHub::start().await;
    let id = Identity::device("fb-ok");
    let key = hub.add_identity(&id);
    let generation = hub.hub.get_device("fb-ok").unwrap().generation_id;
    let mut device = manual_ack_client(&hub, &id, &key).await;
    assert!(hub.broker.accept_c2d("fb-ok", c2d("m-1", Some("full"))).unwrap());
    let publish = device.next_publish().await;
    let Some(DeviceBound::C2d { bag, .. }) = topics::parse_device_bound(&publish.topic) else { panic!("{}", publish.topic) };
    assert_eq!(bag.ack.as_deref(), Some("full"), "the device sees iothub-ack as on IoT Hub");
    assert_eq!(bag.to.as_deref(), Some("/devices/fb-ok/messages/devicebound"));
    assert!(hub.hub.take_feedback().is_none(), "no outcome before the PUBACK");
    device.client.ack(&publish).await.unwrap();

    let records = feedback_records(&hub, 1).await;
    let json = serde_json::to_value(&records[0]).unwrap();
    assert_eq!(json["originalMessageId"], "m-1");
    assert_eq!(json["statusCode"], "Success");
    assert_eq!(json["description"], "Success");
    assert_eq!(json["deviceId"], "fb-ok");
    assert_eq!(json["deviceGenerationId"], generation.as_str());
    let at = chrono::DateTime::parse_from_rfc3339(json["enqueuedTimeUtc"].as_str().unwrap()).expect("ISO 8601");
    assert!((chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds() < 10);
    assert_eq!(CONTENT_TYPE, "application/vnd.microsoft.iothub.feedback.json");
    assert_eq!(hub.hub.feedback_count(), 0, "accepted feedback is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positive_reports_only_successes_and_negative_only_failures() {
    let hub = TestHub::start().await;
    let id = Identity::device("fb-modes");
    let key = hub.add_identity(&id);
    // Queued while the device is offline: the short ones expire before it connects.
    for (mid, ack) in [("pos-ok", "positive"), ("neg-ok", "negative"), ("none-ok", "none"), ("full-ok", "full")] {
        hub.broker.accept_c2d("fb-modes", c2d(mid, Some(ack))).unwrap();
    }
    hub.broker.accept_c2d("fb-modes", c2d("no-ack", None)).unwrap();
    for (mid, ack) in [("pos-exp", "positive"), ("neg-exp", "negative"), ("none-exp", "none")] {
        hub.broker.accept_c2d("fb-modes", expiring(mid, ack, 200)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut device = manual_ack_client(&hub, &id, &key).await;
    for _ in 0..5 {
        let publish = device.next_publish().await;
        device.client.ack(&publish).await.unwrap();
    }
    device.assert_no_publish(Duration::from_millis(200)).await;
    let mut got: Vec<(String, FeedbackStatus)> =
        feedback_records(&hub, 3).await.into_iter().map(|r| (r.original_message_id, r.status_code)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("full-ok".into(), FeedbackStatus::Success),
            ("neg-exp".into(), FeedbackStatus::Expired),
            ("pos-ok".into(), FeedbackStatus::Success),
        ]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(hub.hub.take_feedback().is_none(), "nothing else: {:?}", hub.hub.take_feedback().map(|m| parse(&m)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_reported_without_the_device_ever_connecting() {
    let hub = TestHub::start().await;
    hub.add_identity(&Identity::device("fb-exp"));
    hub.broker.accept_c2d("fb-exp", expiring("short-ttl", "full", 300)).unwrap();
    assert!(hub.hub.take_feedback().is_none(), "not expired yet");
    let records = feedback_records(&hub, 1).await;
    assert_eq!(records[0].status_code, FeedbackStatus::Expired);
    assert_eq!(records[0].description, "Message expired");
    assert_eq!(hub.hub.pending_c2d_count("fb-exp"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_deliveries_without_a_puback_is_delivery_count_exceeded() {
    let hub = TestHub::start().await;
    let id = Identity::device("fb-dlq");
    let key = hub.add_identity(&id);
    hub.broker.accept_c2d("fb-dlq", c2d("ignored", Some("negative"))).unwrap();
    for round in 0..10 {
        let mut device = if round == 0 { manual_ack_client(&hub, &id, &key).await } else { reconnect(&hub, &id, &key).await };
        let publish = device.next_publish().await;
        assert_eq!(publish.dup, round > 0);
        assert!(hub.broker.disconnect(&id));
        device.closed().await;
    }
    let mut device = reconnect(&hub, &id, &key).await;
    device.assert_no_publish(Duration::from_millis(300)).await;
    let records = feedback_records(&hub, 1).await;
    assert_eq!((records[0].original_message_id.as_str(), records[0].status_code), ("ignored", FeedbackStatus::DeliveryCountExceeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_waits_for_acceptance_across_a_restart_and_a_release() {
    let dir = std::env::temp_dir().join(format!("ironhub-feedback-{}", rand::random::<u64>()));
    let config = EmulatorConfig { state_dir: Some(dir.clone()), ..Default::default() };
    let hub = TestHub::start_with(config.clone()).await;
    let id = Identity::device("fb-keep");
    let key = hub.add_identity(&id);
    let mut device = manual_ack_client(&hub, &id, &key).await;
    hub.broker.accept_c2d("fb-keep", c2d("kept", Some("full"))).unwrap();
    let publish = device.next_publish().await;
    device.client.ack(&publish).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while hub.hub.feedback_count() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the PUBACK produces feedback");
    // Taken but not accepted when the emulator stops: it is offered again after the restart.
    let taken = hub.hub.take_feedback().unwrap();
    hub.emulator.hub().flushed().await;
    let TestHub { emulator, .. } = hub;
    emulator.shutdown().await;
    device.closed().await;

    let hub = TestHub::start_with(config).await;
    let again = hub.hub.take_feedback().expect("kept across the restart");
    assert_eq!((again.message_id.as_str(), again.delivery_count), (taken.message_id.as_str(), 2));
    hub.hub.release_feedback(again.lock_token);
    let third = hub.hub.take_feedback().expect("released: offered again");
    assert_eq!(parse(&third)[0].original_message_id, "kept");
    assert!(hub.hub.complete_feedback(third.lock_token));
    assert!(hub.hub.take_feedback().is_none());
    drop(hub);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ack_value_is_refused() {
    let hub = TestHub::start().await;
    hub.add_identity(&Identity::device("fb-bad"));
    let err = hub.broker.accept_c2d("fb-bad", c2d("x", Some("always"))).unwrap_err();
    assert_eq!(err.code, 400004);
    assert_eq!(hub.hub.pending_c2d_count("fb-bad"), 0);
}
