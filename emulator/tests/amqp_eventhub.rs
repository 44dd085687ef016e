//! The Event Hub-compatible endpoint over AMQP with a real client: `$management` READs, partition
//! receivers from the start, from a sequence number, from an offset and from now, every IoT Hub
//! annotation and property, consumer groups, and the refusals.

mod amqp_support;

use std::time::Duration;

use amqp_support::*;
use bytes::Bytes;
use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::messaging::{annotations::OwnedKey, AmqpValue, ApplicationProperties, Body, Data, Message, MessageId, Properties};
use fe2o3_amqp_types::primitives::{SimpleValue, Symbol, Value};
use ironhub_emulator::hub::events::partition_of;
use ironhub_emulator::hub::TelemetryRecord;
use ironhub_protocol::topics::PropertyBag;

fn record(device: &str, module: Option<&str>, n: u32) -> TelemetryRecord {
    let properties = PropertyBag {
        message_id: Some(format!("m-{device}-{n}")),
        correlation_id: Some(format!("c-{n}")),
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        custom: vec![("n".into(), n.to_string())],
        ..Default::default()
    };
    TelemetryRecord {
        device_id: device.into(),
        module_id: module.map(Into::into),
        body: Bytes::from(format!("{{\"n\":{n}}}")),
        properties,
    }
}

async fn recv(receiver: &mut Receiver) -> Message<Body<Value>> {
    let delivery = tokio::time::timeout(Duration::from_secs(10), receiver.recv::<Body<Value>>())
        .await
        .expect("an event in time")
        .expect("an event");
    receiver.accept(&delivery).await.unwrap();
    delivery.into_message()
}

fn annotation<'a>(m: &'a Message<Body<Value>>, key: &str) -> &'a Value {
    m.message_annotations.as_ref().unwrap().0.get(&OwnedKey::Symbol(Symbol::from(key))).unwrap_or_else(|| panic!("{key}"))
}

fn body(m: &Message<Body<Value>>) -> Vec<u8> {
    match &m.body {
        Body::Data(batch) => batch.iter().flat_map(|d: &Data| d.0.to_vec()).collect(),
        other => panic!("a data body, not {other:?}"),
    }
}

fn address(emu: &ironhub_emulator::RunningEmulator, group: &str, partition: u32) -> String {
    format!("{}/ConsumerGroups/{group}/Partitions/{partition}", entity(emu))
}

#[tokio::test]
async fn partitions_deliver_in_order_with_every_property_from_the_start_and_from_a_sequence_number() {
    let emu = start().await;
    let devices = ["alpha", "bravo", "charlie", "delta", "echo"];
    for n in 0..4 {
        for d in devices {
            emu.hub().record_telemetry(record(d, None, n));
        }
    }
    emu.hub().record_telemetry(record("alpha", Some("filter"), 9));
    let mut connection = connect(&emu).await;
    let (mut session, _cbs) = eventhub_session(&emu, &mut connection).await;
    let mut total = 0;
    for p in 0..4u32 {
        let expected: Vec<&str> = devices.iter().copied().filter(|d| partition_of(d, 4) == p).collect();
        let mut count = expected.len() * 4;
        if partition_of("alpha", 4) == p {
            count += 1;
        }
        if count == 0 {
            continue;
        }
        let mut rx = partition_receiver(&mut session, &address(&emu, "$Default", p), Some("amqp.annotation.x-opt-offset > '-1'")).await;
        let mut last_offset = 0u64;
        for i in 0..count {
            let m = recv(&mut rx).await;
            assert_eq!(annotation(&m, "x-opt-sequence-number"), &Value::Long(i as i64), "dense, from 0, in order");
            let Value::String(offset) = annotation(&m, "x-opt-offset") else { panic!("offset is a string") };
            let offset: u64 = offset.parse().unwrap();
            assert!(offset > last_offset);
            last_offset = offset;
            assert!(matches!(annotation(&m, "x-opt-enqueued-time"), Value::Timestamp(_)));
            assert!(matches!(annotation(&m, "iothub-enqueuedtime"), Value::Timestamp(_)));
            assert_eq!(annotation(&m, "iothub-message-source"), &Value::String("Telemetry".into()));
            let Value::String(device) = annotation(&m, "iothub-connection-device-id") else { panic!() };
            assert!(expected.contains(&device.as_str()) || device == "alpha");
            let Value::String(auth) = annotation(&m, "iothub-connection-auth-method") else { panic!() };
            assert!(auth.contains("\"type\":\"sas\""));
            let props = m.properties.as_ref().unwrap();
            assert!(matches!(&props.message_id, Some(MessageId::String(id)) if id.starts_with(&format!("m-{device}-"))));
            assert!(matches!(&props.correlation_id, Some(MessageId::String(c)) if c.starts_with("c-")));
            assert_eq!(props.content_type.as_ref().map(|s| s.as_str()), Some("application/json"));
            assert_eq!(props.content_encoding.as_ref().map(|s| s.as_str()), Some("utf-8"));
            let app = &m.application_properties.as_ref().unwrap().0;
            let Some(SimpleValue::String(n)) = app.get("n") else { panic!("application property n") };
            assert_eq!(body(&m), format!("{{\"n\":{n}}}").into_bytes());
            if m.message_annotations.as_ref().unwrap().0.contains_key(&OwnedKey::Symbol(Symbol::from("iothub-connection-module-id"))) {
                assert_eq!(annotation(&m, "iothub-connection-module-id"), &Value::String("filter".into()));
            }
        }
        total += count;
        // Closed, not dropped: fe2o3's client ends the session on a transfer after its own detach.
        rx.close().await.unwrap();
        // From a sequence number: the events after #1 of this partition.
        let mut from = partition_receiver(&mut session, &address(&emu, "$Default", p), Some("amqp.annotation.x-opt-sequence-number > '1'")).await;
        assert_eq!(annotation(&recv(&mut from).await, "x-opt-sequence-number"), &Value::Long(2));
        let mut inclusive = partition_receiver(&mut session, &address(&emu, "$Default", p), Some("amqp.annotation.x-opt-sequence-number >= '1'")).await;
        assert_eq!(annotation(&recv(&mut inclusive).await, "x-opt-sequence-number"), &Value::Long(1));
        from.close().await.unwrap();
        inclusive.close().await.unwrap();
    }
    assert_eq!(total, 21);
}

#[tokio::test]
async fn a_receiver_from_latest_gets_live_events_and_consumer_groups_each_see_them() {
    let emu = start().await;
    emu.hub().record_telemetry(record("alpha", None, 0));
    emu.amqp().eventhub().create_consumer_group("analytics").unwrap();
    let p = partition_of("alpha", 4);
    let mut connection = connect(&emu).await;
    let (mut session, _cbs) = eventhub_session(&emu, &mut connection).await;
    let mut a = partition_receiver(&mut session, &address(&emu, "$Default", p), Some("amqp.annotation.x-opt-offset > '@latest'")).await;
    let mut b = partition_receiver(&mut session, &address(&emu, "analytics", p), Some("amqp.annotation.x-opt-offset > '@latest'")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    emu.hub().record_telemetry(record("alpha", None, 1));
    for rx in [&mut a, &mut b] {
        let m = recv(rx).await;
        assert_eq!(annotation(&m, "x-opt-sequence-number"), &Value::Long(1), "only the live event");
    }
    let err = refused(&mut session, &address(&emu, "nosuchgroup", p)).await;
    assert!(err.contains("NotFound"), "{err}");
    let err = refused(&mut session, &address(&emu, "$Default", 4)).await;
    assert!(err.contains("NotFound"), "{err}");
    let err = refused(&mut session, &format!("otherhub/ConsumerGroups/$Default/Partitions/{p}")).await;
    assert!(err.contains("NotFound") || err.contains("Unauthorized"), "{err}");
}

async fn refused(session: &mut fe2o3_amqp::session::SessionHandle<()>, address: &str) -> String {
    let mut rx = partition_receiver(session, address, None).await;
    let err = tokio::time::timeout(Duration::from_secs(10), rx.recv::<Body<Value>>()).await.expect("detached in time").expect_err("refused");
    format!("{err:?}")
}

/// Sends a `$management` READ and returns the answer's status code and body.
async fn management(session: &mut fe2o3_amqp::session::SessionHandle<()>, props: &[(&str, &str)]) -> (i32, Value) {
    let mut sender = Sender::attach(session, format!("mgmt-{}", rand_id()), "$management").await.unwrap();
    let mut receiver = Receiver::builder().name(format!("mgmt-rx-{}", rand_id())).source("$management").target("mgmt-reply").attach(session).await.unwrap();
    let mut app = ApplicationProperties::default();
    for (k, v) in props {
        app.0.insert((*k).into(), SimpleValue::String((*v).into()));
    }
    let request = Message::builder()
        .properties(Properties { message_id: Some(MessageId::String("req-1".into())), reply_to: Some("mgmt-reply".into()), ..Default::default() })
        .application_properties(app)
        .body(Body::Value(AmqpValue(Value::Null)))
        .build();
    sender.send(request).await.unwrap();
    let answer = recv(&mut receiver).await;
    assert_eq!(answer.properties.as_ref().unwrap().correlation_id, Some(MessageId::String("req-1".into())));
    let Some(SimpleValue::Int(status)) = answer.application_properties.as_ref().unwrap().0.get("status-code").cloned() else { panic!() };
    let body = match answer.body {
        Body::Value(AmqpValue(v)) => v,
        other => panic!("{other:?}"),
    };
    (status, body)
}

fn field<'a>(map: &'a Value, key: &str) -> &'a Value {
    let Value::Map(map) = map else { panic!("a map: {map:?}") };
    map.get(&Value::String(key.into())).unwrap_or_else(|| panic!("{key}"))
}

#[tokio::test]
async fn management_reads_the_entity_and_its_partitions() {
    let emu = start().await;
    emu.hub().record_telemetry(record("alpha", None, 0));
    emu.hub().record_telemetry(record("alpha", None, 1));
    let mut connection = connect(&emu).await;
    let (mut session, _cbs) = eventhub_session(&emu, &mut connection).await;
    let name = entity(&emu);
    let (status, body) = management(&mut session, &[("operation", "READ"), ("type", "com.microsoft:eventhub"), ("name", &name)]).await;
    assert_eq!(status, 200);
    assert_eq!(field(&body, "partition_count"), &Value::Int(4));
    let p = partition_of("alpha", 4).to_string();
    let (status, body) =
        management(&mut session, &[("operation", "READ"), ("type", "com.microsoft:partition"), ("name", &name), ("partition", &p)]).await;
    assert_eq!(status, 200);
    assert_eq!(field(&body, "begin_sequence_number"), &Value::Long(0));
    assert_eq!(field(&body, "last_enqueued_sequence_number"), &Value::Long(1));
    assert_eq!(field(&body, "last_enqueued_offset"), &Value::String("2".into()));
    assert_eq!(field(&body, "is_partition_empty"), &Value::Bool(false));
    let (status, _) = management(&mut session, &[("operation", "READ"), ("type", "com.microsoft:eventhub"), ("name", "other")]).await;
    assert_eq!(status, 404);

    // Without a claim: refused.
    let mut bare = connect(&emu).await;
    let mut bare_session = amqp_support::session(&mut bare).await;
    let (status, _) = management(&mut bare_session, &[("operation", "READ"), ("type", "com.microsoft:eventhub"), ("name", &name)]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn twin_changes_reach_the_endpoint_only_while_a_twin_change_route_targets_it() {
    use ironhub_emulator::hub::twin_changes::MessageRoute;
    use ironhub_emulator::hub::EventFilter;
    use ironhub_emulator::Identity;
    let emu = start().await;
    emu.hub().create_device("thermo").unwrap();
    let id = Identity::device("thermo");
    emu.hub().patch_reported(&id, &serde_json::json!({"before": 1})).unwrap();
    let route = MessageRoute {
        source: "TwinChangeEvents".into(),
        condition: "true".into(),
        endpoint_names: vec!["events".into()],
        is_enabled: true,
    };
    emu.hub().put_message_route("twins", route).unwrap();
    emu.hub().patch_reported(&id, &serde_json::json!({"temp": 21})).unwrap();
    emu.hub().update_twin(&id, &serde_json::json!({"properties": {"desired": {"rate": 5}}}), None, false).unwrap();
    emu.hub().update_twin(&id, &serde_json::json!({"properties": {"desired": {"only": true}}}), None, true).unwrap();

    let mut connection = connect(&emu).await;
    let (mut session, _cbs) = eventhub_session(&emu, &mut connection).await;
    let p = partition_of("thermo", 4);
    let mut rx = partition_receiver(&mut session, &address(&emu, "$Default", p), Some("amqp.annotation.x-opt-offset > '-1'")).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let m = recv(&mut rx).await;
        assert_eq!(annotation(&m, "iothub-message-source"), &Value::String("twinChangeEvents".into()));
        assert_eq!(annotation(&m, "iothub-connection-device-id"), &Value::String("thermo".into()));
        let app = &m.application_properties.as_ref().unwrap().0;
        let text = |k: &str| match app.get(k) {
            Some(SimpleValue::String(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(text("hubName"), entity(&emu));
        assert_eq!(text("deviceId"), "thermo");
        assert_eq!(text("iothub-message-schema"), "twinChangeNotification");
        let body: serde_json::Value = serde_json::from_slice(&body(&m)).unwrap();
        seen.push((text("opType"), body));
    }
    assert_eq!(seen[0].0, "updateTwin");
    assert_eq!(seen[0].1["properties"]["reported"]["temp"], 21);
    assert!(seen[0].1["properties"]["reported"]["$version"].is_u64());
    assert!(seen[0].1["properties"]["reported"].get("before").is_none(), "only the change, and none before the route");
    assert_eq!((seen[1].0.as_str(), &seen[1].1["properties"]["desired"]["rate"]), ("updateTwin", &serde_json::json!(5)));
    assert_eq!((seen[2].0.as_str(), &seen[2].1["properties"]["desired"]["only"]), ("replaceTwin", &serde_json::json!(true)));
    assert!(seen[2].1["version"].as_u64().unwrap() > seen[0].1["version"].as_u64().unwrap());
    rx.close().await.unwrap();
    assert!(emu.hub().events_after(&EventFilter::default(), 0).is_empty(), "twin changes are not telemetry");
}

#[tokio::test]
async fn events_older_than_the_in_memory_log_are_read_from_the_store() {
    let dir = std::env::temp_dir().join(format!("ironhub-amqp-store-{}", rand_id()));
    let config = ironhub_emulator::EmulatorConfig { state_dir: Some(dir.clone()), ..Default::default() };
    let emu = ironhub_emulator::Emulator::start(config).await.unwrap();
    // The in-memory log keeps 64 MB of bodies: 70 events of 1 MB push the first ones out of it.
    // (Each is larger than the server's 256 KB frames: split transfers too.)
    // A second device's events are interleaved so the store read skips other partitions' rows.
    let other = ["bravo", "charlie", "delta", "echo"].into_iter().find(|d| partition_of(d, 4) != partition_of("alpha", 4)).unwrap();
    for n in 0..70u32 {
        let mut r = record("alpha", None, n);
        r.body = Bytes::from(vec![b'x'; 1024 * 1024]);
        emu.hub().record_telemetry(r);
        emu.hub().record_telemetry(record(other, None, n));
    }
    assert!(emu.hub().events_after(&ironhub_emulator::hub::EventFilter::default(), 0)[0].sequence_number > 1, "the first ones left memory");
    let mut connection = connect(&emu).await;
    let (mut session, _cbs) = eventhub_session(&emu, &mut connection).await;
    let mut rx = partition_receiver(&mut session, &address(&emu, "$Default", partition_of("alpha", 4)), Some("amqp.annotation.x-opt-offset > '-1'")).await;
    for n in 0..70i64 {
        let m = recv(&mut rx).await;
        assert_eq!(annotation(&m, "x-opt-sequence-number"), &Value::Long(n));
        assert_eq!(body(&m).len(), 1024 * 1024);
    }
    rx.close().await.unwrap();
    drop(connection);
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
