//! The control API (`/emulator/...`) and direct-method error paths over real HTTPS: events
//! long-poll, C2D injection and its queue cap, module inputs, routes, disconnects.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use ironhub_emulator::hub::TelemetryRecord;
use ironhub_emulator::Identity;
use ironhub_protocol::topics::PropertyBag;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{start, Api};

fn telemetry(device: &str, module: Option<&str>, body: &'static [u8]) -> TelemetryRecord {
    let properties = PropertyBag {
        message_id: Some("mid-1".into()),
        output_name: module.map(|_| "out1".into()),
        custom: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    TelemetryRecord { device_id: device.into(), module_id: module.map(Into::into), body: Bytes::from_static(body), properties }
}

#[tokio::test]
async fn events_long_poll_and_filters() {
    let emu = start().await;
    let api = Api::new(&emu);
    emu.hub().create_device("d1").unwrap();

    let started = Instant::now();
    let empty = api.get("/emulator/events?deviceId=d1&after=0&timeoutSeconds=1").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body["events"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(900), "waited for the timeout");

    let hub = emu.hub().clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub.record_telemetry(telemetry("other", None, b"x"));
        hub.record_telemetry(telemetry("d1", None, b"hello"))
    });
    let started = Instant::now();
    let polled = api.get("/emulator/events?deviceId=d1&after=0&timeoutSeconds=20").await;
    assert!(started.elapsed() < Duration::from_secs(10), "woken by the event, not the timeout");
    let seq = writer.await.unwrap();
    let events = polled.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["sequenceNumber"], seq);
    assert_eq!((e["deviceId"].clone(), e["moduleId"].clone()), (json!("d1"), json!(null)));
    assert_eq!(e["body"], "aGVsbG8=");
    assert_eq!(e["properties"], json!({"k": "v"}));
    assert_eq!(e["systemProperties"]["messageId"], "mid-1");
    assert!(e["systemProperties"]["enqueuedTimeUtc"].as_str().unwrap().ends_with('Z'));

    emu.hub().record_telemetry(telemetry("d1", Some("m1"), b"out"));
    let after = api.get(&format!("/emulator/events?deviceId=d1&after={seq}")).await;
    assert_eq!(after.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(after.body["events"][0]["outputName"], "out1");
    let by_module = api.get("/emulator/events?deviceId=d1&moduleId=m1").await;
    assert_eq!(by_module.body["events"].as_array().unwrap().len(), 1);
    let all = api.get("/emulator/events").await;
    assert_eq!(all.body["events"].as_array().unwrap().len(), 3);
    let bad = api.get("/emulator/events?after=soon").await;
    assert_eq!((bad.status, bad.error_code()), (StatusCode::BAD_REQUEST, 400004));
}

#[tokio::test]
async fn c2d_is_queued_while_offline_up_to_50() {
    let emu = start().await;
    let api = Api::new(&emu);
    emu.hub().create_device("c1").unwrap();
    for i in 0..50 {
        let a = api
            .post(
                "/emulator/devices/c1/messages/devicebound",
                json!({"bodyText": format!("m{i}"), "messageId": format!("id{i}"), "properties": {"n": i}}),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        assert_eq!(a.body, json!({"delivered": false, "pendingCount": i + 1}));
    }
    let full = api.post("/emulator/devices/c1/messages/devicebound", json!({"bodyText": "one too many"})).await;
    assert_eq!((full.status, full.error_code()), (StatusCode::FORBIDDEN, 403004));

    let pending: Vec<_> = emu.hub().pending_messages(&Identity::device("c1")).into_iter().map(|p| p.message).collect();
    assert_eq!(pending.len(), 50);
    assert_eq!(pending[0].body, Bytes::from_static(b"m0"));
    assert_eq!(pending[49].properties.message_id.as_deref(), Some("id49"));
    assert_eq!(pending[3].properties.custom, vec![("n".to_string(), "3".to_string())]);
    assert_eq!(pending[0].properties.to.as_deref(), Some("/devices/c1/messages/devicebound"));
    assert_eq!(api.get("/devices/c1").await.body["cloudToDeviceMessageCount"], 50);

    emu.hub().create_device("c2").unwrap();
    let b64 = api.post("/emulator/devices/c2/messages/devicebound", json!({"body": "AAEC"})).await;
    assert_eq!(b64.status, StatusCode::OK);
    assert_eq!(emu.hub().pending_messages(&Identity::device("c2"))[0].message.body, Bytes::from_static(&[0, 1, 2]));

    let too_big = api.post("/emulator/devices/c1/messages/devicebound", json!({"bodyText": "x".repeat(65537)})).await;
    assert_eq!((too_big.status, too_big.error_code()), (StatusCode::PAYLOAD_TOO_LARGE, 413001));
    let both = api.post("/emulator/devices/c1/messages/devicebound", json!({"body": "AA==", "bodyText": "x"})).await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    let unknown = api.post("/emulator/devices/nobody/messages/devicebound", json!({"bodyText": "x"})).await;
    assert_eq!((unknown.status, unknown.error_code()), (StatusCode::NOT_FOUND, 404001));
}

#[tokio::test]
async fn routes_merge_parse_errors_and_lookup() {
    let emu = start().await;
    let api = Api::new(&emu);
    let r1 = r#"FROM /messages/modules/filter/outputs/out1 INTO BrokeredEndpoint("/modules/sink/inputs/in1")"#;
    let put = api.put("/emulator/routes", json!({"routes": {"r1": r1, "up": "FROM /messages/* INTO $upstream"}})).await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.body["routes"]["r1"], r1);
    let merged = api.put("/emulator/routes", json!({"routes": {"up": null, "r2": "FROM /messages/modules/filter/* INTO $upstream"}})).await;
    assert_eq!(merged.body["routes"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["r1", "r2"]);
    assert_eq!(api.get("/emulator/routes").await.body, merged.body);

    let out1 = PropertyBag { output_name: Some("out1".into()), ..Default::default() };
    let targets = emu.hub().route(&Identity::module("edge", "filter"), &out1, b"");
    assert_eq!(targets.len(), 2);

    let bad = api.put("/emulator/routes", json!({"routes": {"x": "FROM /messages/* INTO nowhere"}})).await;
    assert_eq!((bad.status, bad.error_code()), (StatusCode::BAD_REQUEST, 400004));
    let message: serde_json::Value = serde_json::from_str(bad.body["Message"].as_str().unwrap()).unwrap();
    assert!(message["message"].as_str().unwrap().contains("sink"), "{message}");
    assert_eq!(api.get("/emulator/routes").await.body, merged.body, "a bad route changes nothing");
    assert_eq!(api.put("/emulator/routes", json!({"nope": 1})).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn offline_targets_disconnect_and_auth() {
    let emu = start().await;
    let api = Api::new(&emu);
    emu.hub().create_device("edge").unwrap();
    emu.hub().create_module("edge", "m1").unwrap();

    let input = api.post("/emulator/devices/edge/modules/m1/inputs/in1", json!({"bodyText": "x"})).await;
    assert_eq!((input.status, input.error_code()), (StatusCode::NOT_FOUND, 404103));
    let no_module = api.post("/emulator/devices/edge/modules/zz/inputs/in1", json!({"bodyText": "x"})).await;
    assert_eq!(no_module.error_code(), 404010);

    let dropped = api.post("/emulator/devices/edge/disconnect", json!({})).await;
    assert_eq!((dropped.status, dropped.body.clone()), (StatusCode::OK, json!({"disconnected": false})));
    assert_eq!(api.post("/emulator/devices/edge/modules/m1/disconnect", json!({})).await.status, StatusCode::OK);
    assert_eq!(api.post("/emulator/devices/ghost/disconnect", json!({})).await.error_code(), 404001);

    let reader = Api::with_policy(&emu, "registryRead");
    assert_eq!(reader.get("/emulator/routes").await.status, StatusCode::UNAUTHORIZED);
    let mut anon = Api::new(&emu);
    anon.authorization = None;
    assert_eq!(anon.get("/emulator/events").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn direct_method_error_paths() {
    let emu = start().await;
    let api = Api::new(&emu);
    emu.hub().create_device("dev").unwrap();
    emu.hub().create_module("dev", "mod").unwrap();
    let call = json!({"methodName": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 0});

    let offline = api.post("/twins/dev/methods", call.clone()).await;
    assert_eq!((offline.status, offline.error_code()), (StatusCode::NOT_FOUND, 404103));
    assert_eq!(offline.error_code_name.as_deref(), Some("DeviceNotOnline"));
    assert_eq!(api.post("/twins/ghost/methods", call.clone()).await.error_code(), 404001);
    assert_eq!(api.post("/twins/dev/modules/ghost/methods", call.clone()).await.error_code(), 404010);
    assert_eq!(api.post("/twins/dev/modules/mod/methods", call.clone()).await.error_code(), 404103);

    let started = Instant::now();
    let waited = api.post("/twins/dev/methods", json!({"methodName": "m", "connectTimeoutInSeconds": 1})).await;
    assert_eq!(waited.error_code(), 404103);
    assert!(started.elapsed() >= Duration::from_millis(900), "connectTimeout is honoured");

    for bad in [
        json!({"payload": 1}),
        json!({"methodName": "m", "responseTimeoutInSeconds": 4}),
        json!({"methodName": "m", "responseTimeoutInSeconds": 301}),
        json!({"methodName": "m", "connectTimeoutInSeconds": -1}),
    ] {
        let a = api.post("/twins/dev/methods", bad).await;
        assert_eq!((a.status, a.error_code()), (StatusCode::BAD_REQUEST, 400004));
    }
    let huge = api.post("/twins/dev/methods", json!({"methodName": "m", "payload": "x".repeat(131_073)})).await;
    assert_eq!((huge.status, huge.error_code()), (StatusCode::PAYLOAD_TOO_LARGE, 413001));
    assert_eq!(api.call(Method::GET, "/twins/dev/methods", None, &[]).await.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn edge_method_endpoint_takes_a_module_token() {
    let emu = start().await;
    emu.hub().create_edge_device("edge").unwrap();
    let caller = emu.hub().create_module("edge", "caller").unwrap();
    emu.hub().create_device("leaf").unwrap();
    let resource = ironhub_protocol::sas::device_resource("localhost", "edge", Some("caller"));
    let module_token = ironhub_protocol::sas::generate_token(&resource, caller.primary_key(), None, support::unix_now() + 600).unwrap();
    let mut api = Api::new(&emu);
    api.authorization = Some(module_token.clone());
    let call = json!({"methodName": "ping", "responseTimeoutInSeconds": 5});

    let ok_auth = api.call(Method::POST, "/twins/leaf/methods", Some(call.clone()), &[("x-ms-edge-moduleId", "edge/caller")]).await;
    assert_eq!((ok_auth.status, ok_auth.error_code()), (StatusCode::NOT_FOUND, 404103), "authorized, target offline");
    let wrong_header = api.call(Method::POST, "/twins/leaf/methods", Some(call.clone()), &[("x-ms-edge-moduleId", "edge/other")]).await;
    assert_eq!((wrong_header.status, wrong_header.error_code()), (StatusCode::UNAUTHORIZED, 401002));
    let no_header = api.post("/twins/leaf/methods", call.clone()).await;
    assert_eq!(no_header.status, StatusCode::UNAUTHORIZED, "a module token is no service token");

    // A module of a device without the iotEdge capability has no Edge hub to call.
    let plain = emu.hub().create_module("leaf", "caller").unwrap();
    let resource = ironhub_protocol::sas::device_resource("localhost", "leaf", Some("caller"));
    api.authorization =
        Some(ironhub_protocol::sas::generate_token(&resource, plain.primary_key(), None, support::unix_now() + 600).unwrap());
    let not_edge = api.call(Method::POST, "/twins/edge/methods", Some(call), &[("x-ms-edge-moduleId", "leaf/caller")]).await;
    assert_eq!((not_edge.status, not_edge.error_code()), (StatusCode::UNAUTHORIZED, 401002), "not an IoT Edge device");
}
