//! Hub timing: a twin request's PUBACK comes before its response (as IoT Hub sends them), and the
//! configured latency delays every hub → device answer.

mod mqtt_support;
mod support;

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

/// `--throttle s1`: twin updates over 50/s are answered 429, D2C sends over 100/s wait for their
/// PUBACK (traffic shaping), direct methods over the meter get HTTP 429 from the service API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_throttling_answers_as_iot_hub() {
    use ironhub_emulator::hub::throttle::Tier;
    let hub = TestHub::start_with(EmulatorConfig { throttle: Some(Tier::S1), ..Default::default() }).await;
    let id = Identity::device("busy");
    let mut client = hub.connected(&id).await;
    client.subscribe(topics::TWIN_RESPONSE_FILTER).await;
    for rid in 0..70 {
        client.client.publish(topics::twin_reported_patch_topic(&rid.to_string()), QoS::AtMostOnce, false, r#"{"a":1}"#).await.unwrap();
    }
    let mut statuses = Vec::new();
    while statuses.len() < 70 {
        let response = client.next_publish().await;
        let Some(topics::DeviceBound::TwinResponse { status, .. }) = topics::parse_device_bound(&response.topic) else { continue };
        statuses.push(status);
    }
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled >= 15, "{throttled} of 70 updates throttled: {statuses:?}");

    let started = Instant::now();
    let topic = topics::telemetry_topic("busy", None, &PropertyBag::default());
    for _ in 0..160 {
        client.publish(&topic, "x").await;
    }
    assert!(started.elapsed() >= Duration::from_millis(500), "160 sends at 100/s took {:?}", started.elapsed());

    let api = support::Api::new(&hub.emulator);
    let body = serde_json::json!({"methodName": "m", "responseTimeoutInSeconds": 5});
    let answers = futures::future::join_all((0..80).map(|_| api.post("/twins/busy/methods", body.clone()))).await;
    let mut refused = 0;
    for answer in answers.iter().filter(|a| a.status == 429) {
        assert_eq!(answer.error_code(), 429001);
        assert_eq!(answer.error_code_name.as_deref(), Some("ThrottlingException"));
        refused += 1;
    }
    assert!(refused >= 20, "{refused} of 80 concurrent method calls throttled");
}
