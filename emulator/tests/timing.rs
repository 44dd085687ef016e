//! Hub timing: a twin request's PUBACK comes before its response (as IoT Hub sends them), and the
//! configured latency delays every hub → device answer.

mod mqtt_support;

use std::time::{Duration, Instant};

use ironhub_emulator::hub::DeviceBoundMessage;
use ironhub_emulator::mqtt::Timing;
use ironhub_emulator::{EmulatorConfig, Identity};
use ironhub_protocol::topics::{self, PropertyBag};
use mqtt_support::{Client, Incoming, TestHub};
use rumqttc::mqttbytes::QoS;

/// The next PUBACK or PUBLISH, as a name.
async fn next_kind(client: &mut Client) -> &'static str {
    loop {
        match client.next().await {
            Incoming::PubAck(_) => return "PUBACK",
            Incoming::Publish(_) => return "PUBLISH",
            Incoming::Closed(why) => panic!("closed: {why}"),
            Incoming::SubAck(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_request_is_acknowledged_before_its_response() {
    let hub = TestHub::start().await;
    let id = Identity::device("twin-order");
    let mut client = hub.connected(&id).await;
    client.subscribe(topics::TWIN_RESPONSE_FILTER).await;
    for rid in ["1", "2", "3"] {
        client.client.publish(topics::twin_get_topic(rid), QoS::AtLeastOnce, false, "").await.unwrap();
        assert_eq!(next_kind(&mut client).await, "PUBACK", "GET {rid}");
        assert_eq!(next_kind(&mut client).await, "PUBLISH", "GET {rid}");
    }
    client.client.publish(topics::twin_reported_patch_topic("4"), QoS::AtLeastOnce, false, r#"{"a":1}"#).await.unwrap();
    assert_eq!(next_kind(&mut client).await, "PUBACK");
    assert_eq!(next_kind(&mut client).await, "PUBLISH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_twin_responses_c2d_and_methods() {
    let latency = Duration::from_millis(300);
    let timing = Timing { latency, jitter: Duration::from_millis(50) };
    let hub = TestHub::start_with(EmulatorConfig { timing, ..Default::default() }).await;
    let id = Identity::device("slow-hub");
    let mut client = hub.connected(&id).await;
    client.subscribe(topics::TWIN_RESPONSE_FILTER).await;
    client.subscribe(&topics::c2d_filter("slow-hub")).await;
    client.subscribe(topics::METHOD_REQUEST_FILTER).await;

    let asked = Instant::now();
    client.client.publish(topics::twin_get_topic("1"), QoS::AtLeastOnce, false, "").await.unwrap();
    assert!(client.next_publish().await.topic.starts_with("$iothub/twin/res/200/"));
    let took = asked.elapsed();
    assert!(took >= latency, "twin response after {took:?}");

    let sent = Instant::now();
    let msg = DeviceBoundMessage { body: "late".into(), properties: PropertyBag::default() };
    assert!(!hub.broker.deliver_c2d("slow-hub", msg).unwrap(), "not out yet: it waits for the latency");
    assert_eq!(&client.next_publish().await.payload[..], b"late");
    assert!(sent.elapsed() >= latency, "C2D after {:?}", sent.elapsed());

    let broker = hub.broker.clone();
    let invoked = Instant::now();
    let call = tokio::spawn(async move {
        let target = Identity::device("slow-hub");
        broker.invoke_method(&target, "m", serde_json::json!(null), Duration::ZERO, Duration::from_secs(5)).await
    });
    let request = client.next_publish().await;
    assert!(invoked.elapsed() >= latency, "method request after {:?}", invoked.elapsed());
    assert!(request.topic.starts_with("$iothub/methods/POST/m/"));
    call.abort();
}
