//! The service API driving a real MQTT device (rumqttc over TLS and over WebSockets): desired
//! notifications, C2D delivery, a direct method answered by the device, connection state and
//! the control API's disconnect.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ironhub_emulator::RunningEmulator;
use ironhub_protocol::sas;
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::{json, Value};
use support::{start, unix_now, Api};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn tls(emu: &RunningEmulator) -> TlsConfiguration {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut emu.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConfiguration::Rustls(Arc::new(config))
}

/// A connected device: its client and every packet the hub sent it.
struct Device {
    client: AsyncClient,
    packets: mpsc::UnboundedReceiver<Packet>,
}

impl Device {
    async fn connect(emu: &RunningEmulator, device_id: &str, websocket: bool) -> Device {
        let key = emu.hub().get_device(device_id).unwrap().primary_key().to_owned();
        let token = sas::generate_token(&sas::device_resource("localhost", device_id, None), &key, None, unix_now() + 3600).unwrap();
        let mut options = if websocket {
            let url = format!("wss://localhost:{}/$iothub/websocket", emu.https_port());
            let mut o = MqttOptions::new(device_id, url, emu.https_port());
            o.set_transport(Transport::wss_with_config(tls(emu)));
            o
        } else {
            let mut o = MqttOptions::new(device_id, "localhost", emu.mqtt_port());
            o.set_transport(Transport::tls_with_config(tls(emu)));
            o
        };
        options.set_credentials(format!("localhost/{device_id}/?api-version=2019-10-01"), token);
        options.set_clean_session(false);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, packets) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(p) = event {
                    if tx.send(p).is_err() {
                        break;
                    }
                }
            }
        });
        let mut device = Device { client, packets };
        match device.next().await {
            Packet::ConnAck(ack) => assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        device
    }

    async fn next(&mut self) -> Packet {
        tokio::time::timeout(WAIT, self.packets.recv()).await.expect("a packet in time").expect("connection open")
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Packet::SubAck(_) = self.next().await {
                return;
            }
        }
    }

    async fn next_publish(&mut self) -> rumqttc::Publish {
        loop {
            if let Packet::Publish(p) = self.next().await {
                return p;
            }
        }
    }
}

async fn wait_connection_state(api: &Api, device_id: &str, state: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while api.get(&format!("/devices/{device_id}")).await.body["connectionState"] != state {
        assert!(tokio::time::Instant::now() < deadline, "{device_id} never became {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn service_calls_reach_a_connected_device() {
    let emu = start().await;
    let api = Api::new(&emu);
    emu.hub().create_device("e2e").unwrap();
    let mut device = Device::connect(&emu, "e2e", false).await;
    device.subscribe("$iothub/twin/PATCH/properties/desired/#").await;
    device.subscribe("$iothub/methods/POST/#").await;
    device.subscribe("devices/e2e/messages/devicebound/#").await;
    wait_connection_state(&api, "e2e", "Connected").await;
    assert_eq!(api.get("/statistics/service").await.body["connectedDeviceCount"], 1);

    // Desired write → notification with the patch (nulls kept) and the new $version.
    api.patch("/twins/e2e", json!({"properties": {"desired": {"fan": 1, "gone": null}}})).await;
    let patch = device.next_publish().await;
    assert_eq!(patch.topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    assert_eq!(serde_json::from_slice::<Value>(&patch.payload).unwrap(), json!({"fan": 1, "gone": null, "$version": 2}));
    // Tags-only writes notify nobody; the next notification is the PUT's whole desired.
    api.patch("/twins/e2e", json!({"tags": {"quiet": true}})).await;
    api.put("/twins/e2e", json!({"properties": {"desired": {"only": "this"}}})).await;
    let replaced = device.next_publish().await;
    assert_eq!(serde_json::from_slice::<Value>(&replaced.payload).unwrap(), json!({"only": "this", "$version": 3}));

    // C2D while connected and subscribed is delivered at once.
    let c2d = api.post("/emulator/devices/e2e/messages/devicebound", json!({"bodyText": "hi", "messageId": "c1", "properties": {"a": "b"}})).await;
    assert_eq!(c2d.body["delivered"], true);
    let msg = device.next_publish().await;
    assert!(msg.topic.starts_with("devices/e2e/messages/devicebound/"), "{}", msg.topic);
    assert!(msg.topic.contains("%24.mid=c1") && msg.topic.contains("a=b"), "{}", msg.topic);
    assert_eq!(&msg.payload[..], b"hi");

    // A direct method answered by the device.
    let invoke = {
        let api = Api::new(&emu);
        tokio::spawn(async move {
            api.post("/twins/e2e/methods", json!({"methodName": "reboot", "payload": {"in": 5}, "responseTimeoutInSeconds": 10})).await
        })
    };
    let request = device.next_publish().await;
    assert!(request.topic.starts_with("$iothub/methods/POST/reboot/?$rid="), "{}", request.topic);
    assert_eq!(serde_json::from_slice::<Value>(&request.payload).unwrap(), json!({"in": 5}));
    let rid = request.topic.rsplit("$rid=").next().unwrap().to_owned();
    device.client.publish(format!("$iothub/methods/res/201/?$rid={rid}"), QoS::AtLeastOnce, false, r#"{"done":true}"#).await.unwrap();
    let answer = invoke.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!({"status": 201, "payload": {"done": true}}));

    // Fault injection.
    let dropped = api.post("/emulator/devices/e2e/disconnect", json!({})).await;
    assert_eq!(dropped.body, json!({"disconnected": true}));
    wait_connection_state(&api, "e2e", "Disconnected").await;
}

#[tokio::test]
async fn mqtt_over_websocket_on_the_https_port() {
    let emu = start().await;
    let api = Api::new(&emu);
    emu.hub().create_device("ws").unwrap();
    let mut device = Device::connect(&emu, "ws", true).await;
    wait_connection_state(&api, "ws", "Connected").await;
    device.subscribe("$iothub/twin/PATCH/properties/desired/#").await;
    api.patch("/twins/ws", json!({"properties": {"desired": {"via": "websocket"}}})).await;
    let patch = device.next_publish().await;
    assert_eq!(serde_json::from_slice::<Value>(&patch.payload).unwrap()["via"], "websocket");

    // A plain HTTP request to the WebSocket path without an upgrade is not a service call.
    let plain = api.get("/$iothub/websocket").await;
    assert_eq!(plain.status, StatusCode::NOT_FOUND);

    let handshake = |protocol: &'static str| {
        api.client
            .get(format!("{}/$iothub/websocket", api.base))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Protocol", protocol)
            .send()
    };
    let accepted = handshake("mqtt").await.unwrap();
    assert_eq!(accepted.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(accepted.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(accepted.headers()["sec-websocket-protocol"], "mqtt");
    let refused = handshake("chat").await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn shutdown_drops_live_connections() {
    let emu = start().await;
    emu.hub().create_device("bye").unwrap();
    let mut device = Device::connect(&emu, "bye", false).await;
    let port = emu.https_port();
    emu.shutdown().await;
    let closed = tokio::time::timeout(WAIT, async {
        while device.packets.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the device saw the hub go away");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "HTTPS listener closed");
}
